import Glibc

/// The fields of one block log line that `sinkhole report` uses, decoded.
public struct BlockLogRecord: Sendable, Equatable {
    /// `@timestamp`, milliseconds since the Unix epoch.
    public var time: Int64
    /// `source.ip`.
    public var client: String
    /// `dns.question.name`, ASCII-lowercased.
    public var domain: String
    /// `rule.name`; empty when absent.
    public var rule: String
    /// `rule.ruleset`; empty when absent.
    public var list: String
    /// `event.action`; empty when absent.
    public var action: String

    public init(time: Int64, client: String, domain: String, rule: String = "", list: String = "", action: String = "") {
        self.time = time
        self.client = client
        self.domain = domain
        self.rule = rule
        self.list = list
        self.action = action
    }

    /// `event.action` of the retro-hunt's findings: a client that resolved a name before a list
    /// blocked it (docs/query-history.md). They share the block log but are not blocked attempts.
    public static let retroHitAction = BlockAction.retroHit.rawValue

    /// Whether this is a retro-hunt finding rather than a blocked attempt.
    public var isRetroHit: Bool { action == BlockLogRecord.retroHitAction }

    /// Parses one line; nil when it is not a block log line (see `BlockLogLine.scan`).
    public static func parse(_ line: String) -> BlockLogRecord? {
        var line = line
        return line.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            guard let fields = BlockLogLine.scan(raw), let time = fields.time(in: raw) else { return nil }
            return BlockLogRecord(time: time, client: fields.string(fields.client, in: raw),
                                  domain: fields.string(fields.domain, in: raw, lowercase: true),
                                  rule: fields.string(fields.rule, in: raw), list: fields.string(fields.list, in: raw),
                                  action: fields.string(fields.action, in: raw))
        }
    }
}

/// A targeted scanner for block log lines. It checks that the whole line is one well-formed JSON
/// object (so a line cut short or with garbage appended is rejected), and notes where the few
/// string fields the report needs are, without building any value for the rest. It allocates
/// nothing. Measured on block log lines (benchmarks/report-scale.sh, release build):
/// JSONSerialization took about 15 µs a line; a whole `sinkhole report` over a 1,000,000-line
/// log, reading and counting included, takes about 1.4 µs a line.
public struct BlockLogLine {
    /// Where a string value lies in the line: the bytes between the quotes.
    public struct Span: Sendable {
        public var start: Int = -1
        public var end: Int = -1
        /// The value contains backslash escapes and must be unescaped.
        public var escaped = false
        public var isPresent: Bool { start >= 0 }
    }

    public var timestamp = Span()
    public var client = Span()
    public var domain = Span()
    public var rule = Span()
    public var list = Span()
    public var action = Span()

    /// The spans of the report's fields in `line`, or nil when the line is not a JSON object or
    /// lacks `@timestamp`, `source.ip` or `dns.question.name` as strings.
    public static func scan(_ line: UnsafeRawBufferPointer) -> BlockLogLine? {
        guard line.count > 0, let base = line.baseAddress else { return nil }
        var scanner = Scanner(p: base.assumingMemoryBound(to: UInt8.self), n: line.count)
        scanner.skipWhitespace()
        guard scanner.object(.top, depth: 0) else { return nil }
        scanner.skipWhitespace()
        guard scanner.i == scanner.n else { return nil }
        let f = scanner.fields
        guard f.timestamp.isPresent, f.client.isPresent, f.domain.isPresent else { return nil }
        return f
    }

    /// `@timestamp` as milliseconds, or nil when it is not an RFC 3339 time.
    public func time(in line: UnsafeRawBufferPointer) -> Int64? {
        guard timestamp.isPresent else { return nil }
        if timestamp.escaped { return ReportTime.parse(string(timestamp, in: line)) }
        return ReportTime.parse(UnsafeRawBufferPointer(rebasing: line[timestamp.start..<timestamp.end]))
    }

    /// Whether `event.action` is `retro-hit` (`BlockLogRecord.isRetroHit` without building the
    /// String: compared in place unless it holds escapes).
    public func isRetroHit(in line: UnsafeRawBufferPointer) -> Bool {
        guard action.isPresent else { return false }
        if action.escaped { return string(action, in: line) == BlockLogRecord.retroHitAction }
        return UnsafeRawBufferPointer(rebasing: line[action.start..<action.end]).elementsEqual(BlockLogRecord.retroHitAction.utf8)
    }

    /// The value at `span` as a String (empty when absent), optionally ASCII-lowercased.
    public func string(_ span: Span, in line: UnsafeRawBufferPointer, lowercase: Bool = false) -> String {
        guard span.isPresent else { return "" }
        let raw = UnsafeRawBufferPointer(rebasing: line[span.start..<span.end])
        if span.escaped {
            var bytes = BlockLogLine.unescape(raw)
            if lowercase { for k in bytes.indices { bytes[k] = WireName.lower(bytes[k]) } }
            return String(decoding: bytes, as: UTF8.self)
        }
        guard lowercase, raw.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) else {
            return String(decoding: raw, as: UTF8.self)
        }
        return String(unsafeUninitializedCapacity: raw.count) { out in
            for k in 0..<raw.count { out[k] = WireName.lower(raw[k]) }
            return raw.count
        }
    }

    /// The bytes of a JSON string body (between the quotes, already validated) with its escapes
    /// resolved. Lone surrogates become U+FFFD.
    static func unescape(_ raw: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= raw.count else { return nil }
            var v: UInt32 = 0
            for k in at..<(at + 4) {
                guard let d = hexValue(raw[k]) else { return nil }
                v = v << 4 | UInt32(d)
            }
            return v
        }
        func appendScalar(_ v: UInt32) {
            let scalar = Unicode.Scalar(v) ?? "\u{FFFD}"
            out.append(contentsOf: String(Character(scalar)).utf8)
        }
        while i < raw.count {
            let c = raw[i]
            guard c == 0x5C, i + 1 < raw.count else {
                out.append(c)
                i += 1
                continue
            }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let high = hex4(i) else { appendScalar(0xFFFD); continue }
                i += 4
                if high >= 0xD800, high <= 0xDBFF, i + 6 <= raw.count, raw[i] == 0x5C, raw[i + 1] == UInt8(ascii: "u"),
                   let low = hex4(i + 2), low >= 0xDC00, low <= 0xDFFF {
                    i += 6
                    appendScalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                } else {
                    appendScalar(high)
                }
            default: out.append(e)   // \" \\ \/
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// Which object the scanner is in, so that it knows which keys are wanted.
    enum Context { case top, source, dns, question, rule, event, other }

    /// Which field a string value fills.
    enum Slot { case none, timestamp, client, domain, rule, list, action }

    struct Scanner {
        let p: UnsafePointer<UInt8>
        let n: Int
        var i = 0
        var fields = BlockLogLine()
        static let maxDepth = 32

        @inline(__always) mutating func skipWhitespace() {
            while i < n {
                let c = p[i]
                guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
                i += 1
            }
        }

        @inline(__always) func peek() -> UInt8? { i < n ? p[i] : nil }

        /// Parses an object starting at `{`.
        mutating func object(_ context: Context, depth: Int) -> Bool {
            guard depth < Scanner.maxDepth, peek() == 0x7B else { return false }
            i += 1
            skipWhitespace()
            if peek() == 0x7D { i += 1; return true }
            while true {
                guard peek() == 0x22, let key = string() else { return false }
                skipWhitespace()
                guard peek() == 0x3A else { return false }
                i += 1
                skipWhitespace()
                let (child, slot) = route(context, key)
                guard let c = peek() else { return false }
                if c == 0x7B, child != .other {
                    guard object(child, depth: depth + 1) else { return false }
                } else if c == 0x22, slot != .none {
                    guard let span = string() else { return false }
                    switch slot {
                    case .timestamp: fields.timestamp = span
                    case .client: fields.client = span
                    case .domain: fields.domain = span
                    case .rule: fields.rule = span
                    case .list: fields.list = span
                    case .action: fields.action = span
                    case .none: break
                    }
                } else {
                    guard value(depth: depth + 1) else { return false }
                }
                skipWhitespace()
                guard let next = peek() else { return false }
                i += 1
                if next == 0x7D { return true }
                guard next == 0x2C else { return false }
                skipWhitespace()
            }
        }

        /// The object context and string slot a key leads to.
        func route(_ context: Context, _ key: Span) -> (Context, Slot) {
            switch context {
            case .top:
                if keyIs(key, "@timestamp") { return (.other, .timestamp) }
                if keyIs(key, "source") { return (.source, .none) }
                if keyIs(key, "dns") { return (.dns, .none) }
                if keyIs(key, "rule") { return (.rule, .none) }
                if keyIs(key, "event") { return (.event, .none) }
            case .source:
                if keyIs(key, "ip") { return (.other, .client) }
            case .dns:
                if keyIs(key, "question") { return (.question, .none) }
            case .question:
                if keyIs(key, "name") { return (.other, .domain) }
            case .rule:
                if keyIs(key, "name") { return (.other, .rule) }
                if keyIs(key, "ruleset") { return (.other, .list) }
            case .event:
                if keyIs(key, "action") { return (.other, .action) }
            case .other:
                break
            }
            return (.other, .none)
        }

        func keyIs(_ key: Span, _ name: StaticString) -> Bool {
            if key.escaped {
                let bytes = BlockLogLine.unescape(UnsafeRawBufferPointer(start: p + key.start, count: key.end - key.start))
                return bytes.elementsEqual(UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            }
            let count = name.utf8CodeUnitCount
            guard key.end - key.start == count else { return false }
            return Scanner.equal(p + key.start, name.utf8Start, count)
        }

        /// Byte comparison for short keys; inlined, cheaper than a call to memcmp.
        @inline(__always) static func equal(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
            for k in 0..<count where a[k] != b[k] { return false }
            return true
        }

        /// Any JSON value.
        mutating func value(depth: Int) -> Bool {
            guard depth < Scanner.maxDepth, let c = peek() else { return false }
            switch c {
            case 0x7B: return object(.other, depth: depth)
            case 0x5B: return array(depth: depth)
            case 0x22: return string() != nil
            case 0x74: return literal("true")
            case 0x66: return literal("false")
            case 0x6E: return literal("null")
            default: return number()
            }
        }

        mutating func array(depth: Int) -> Bool {
            i += 1   // [
            skipWhitespace()
            if peek() == 0x5D { i += 1; return true }
            while true {
                guard value(depth: depth + 1) else { return false }
                skipWhitespace()
                guard let next = peek() else { return false }
                i += 1
                if next == 0x5D { return true }
                guard next == 0x2C else { return false }
                skipWhitespace()
            }
        }

        /// A string starting at its opening quote; the span of its body.
        mutating func string() -> Span? {
            i += 1   // "
            var span = Span()
            span.start = i
            while i < n {
                let c = p[i]
                if c == 0x22 {
                    span.end = i
                    i += 1
                    return span
                }
                if c < 0x20 { return nil }
                if c == 0x5C {
                    span.escaped = true
                    guard i + 1 < n else { return nil }
                    switch p[i + 1] {
                    case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:
                        i += 2
                    case 0x75:
                        guard i + 6 <= n else { return nil }
                        for k in (i + 2)..<(i + 6) where BlockLogLine.hexValue(p[k]) == nil { return nil }
                        i += 6
                    default:
                        return nil
                    }
                    continue
                }
                i += 1
            }
            return nil
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard i + count <= n, Scanner.equal(p + i, word.utf8Start, count) else { return false }
            i += count
            return true
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and within a double's range:
        /// a number too large for one (`4e708`, 400 digits) is refused, as JSONSerialization and
        /// most SIEM parsers refuse it (RFC 8259 section 6 lets a parser limit the range). Only
        /// a number with an exponent or 309 or more integer digits can be that large, so the
        /// numbers of a block log line (port, id, rule line, TTL) are never converted.
        mutating func number() -> Bool {
            let start = i
            if peek() == 0x2D { i += 1 }
            func digits(_ s: inout Scanner) -> Int {
                let from = s.i
                while s.i < s.n, s.p[s.i] >= 0x30, s.p[s.i] <= 0x39 { s.i += 1 }
                return s.i - from
            }
            let first = peek()
            let intDigits = digits(&self)
            guard intDigits > 0, !(first == 0x30 && intDigits > 1) else { return false }
            if peek() == 0x2E {
                i += 1
                guard digits(&self) > 0 else { return false }
            }
            var exponent = false
            if peek() == 0x65 || peek() == 0x45 {
                i += 1
                if peek() == 0x2B || peek() == 0x2D { i += 1 }
                guard digits(&self) > 0 else { return false }
                exponent = true
            }
            guard exponent || intDigits >= 309 else { return true }
            return Scanner.fitsDouble(UnsafeRawBufferPointer(start: p + start, count: i - start))
        }

        /// Whether the number text (already checked against the grammar) converts to a finite
        /// double; strtod's rounding is the one JSONSerialization's conversion follows.
        static func fitsDouble(_ text: UnsafeRawBufferPointer) -> Bool {
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: text.count + 1) { buffer in
                for k in 0..<text.count { buffer[k] = CChar(bitPattern: text[k]) }
                buffer[text.count] = 0
                return strtod(buffer.baseAddress!, nil).isFinite
            }
        }
    }
}
