import Glibc

/// One blocked attempt, as the SOC reviews it. Captured on the query path as plain values and
/// encoded to JSON by the log writer, off the query path.
public struct BlockEvent: Sendable {
    /// Version of the JSON line schema documented in the README (`sinkhole.schema_version`).
    public static let schemaVersion = 1
    /// ECS version the field names follow.
    public static let ecsVersion = "\(ecsVersionLiteral)"
    static let ecsVersionLiteral: StaticString = "8.11.0"

    public var time: timespec
    public var client: SocketAddress
    public var transport: Transport
    public var id: UInt16
    /// The name exactly as asked, wire form.
    public var qname: [UInt8]
    public var qtype: UInt16
    public var qclass: UInt16
    public var answer: BlockAnswer
    /// What matched: `qname` for the query name itself or a parent of it, `cname` for a CNAME
    /// or DNAME target in the upstream's answer.
    public var matchedOn: String
    /// For `cname`: the target that matched (wire form) and its 1-based position in the chain.
    public var matchedName: [UInt8]?
    public var chainPosition: Int?
    /// For `response-ip`: the address in the upstream's answer that matched.
    public var matchedAddress: [UInt8]?
    /// The client behind a trusted forwarder (EDNS Client Subnet); `client` is then the forwarder.
    public var subnet: ClientSubnet?
    /// For a retro-hit (`answer.action == .retroHit`): what the query history shows.
    public var sighting: Sighting?

    /// Resolutions of a name by a client found in the query history (retro-hunt).
    public struct Sighting: Sendable, Equatable {
        /// First and last time seen, ms since the epoch.
        public var firstSeen: Int64
        public var lastSeen: Int64
        public var count: Int
        /// Query types seen, e.g. `["A", "AAAA"]`.
        public var types: [String]
    }

    /// The retro-hit event for a history hit: `event.action: retro-hit`, `source.ip` the client,
    /// `dns.question.name` the name it resolved, `rule.*` the rule that blocks it now.
    public static func retroHit(_ hit: RetroHit, time: timespec = BlockEvent.now()) -> BlockEvent {
        let address = IPAddress.parse(hit.client) ?? [0, 0, 0, 0]
        let answer = BlockAnswer(match: hit.rule, action: .retroHit, rcode: 0, addresses: [], ttl: 0)
        var e = BlockEvent(time: time, client: SocketAddress(address: address, port: 0), transport: .udp, id: 0,
                           qname: WireName.fromPresentation(hit.name) ?? [0], qtype: RRType.value(hit.types.first ?? "A") ?? 1,
                           qclass: 1, answer: answer, matchedOn: "history")
        e.sighting = Sighting(firstSeen: hit.firstSeen, lastSeen: hit.lastSeen, count: hit.count, types: hit.types)
        return e
    }

    public init(time: timespec = BlockEvent.now(), client: SocketAddress, transport: Transport, id: UInt16,
                qname: [UInt8], qtype: UInt16, qclass: UInt16, answer: BlockAnswer, matchedOn: String = "qname",
                matchedName: [UInt8]? = nil, chainPosition: Int? = nil, matchedAddress: [UInt8]? = nil) {
        self.matchedAddress = matchedAddress
        self.time = time
        self.client = client
        self.transport = transport
        self.id = id
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.answer = answer
        self.matchedOn = matchedOn
        self.matchedName = matchedName
        self.chainPosition = chainPosition
    }

    /// About what this event holds in memory while it waits for the block-log writer: the
    /// struct, its name and address arrays (a 32-byte header each, malloc's rounding), its slot
    /// in the writer's chunk, and malloc's own overhead.
    var queuedCost: Int {
        MemoryLayout<BlockEvent>.stride + 160 + qname.count + client.ip.count
            + (matchedName.map { 48 + $0.count } ?? 0) + (matchedAddress == nil ? 0 : 64)
    }

    public static func now() -> timespec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts
    }

    /// One JSON object, no trailing newline. Field names follow ECS; see the README's schema.
    public func jsonLine() -> String {
        var bytes: [UInt8] = []
        appendJSONLine(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The same, appended to `bytes` (the block-log writer's chunk buffer): built as bytes, not
    /// as a String, since a flood of blocked queries makes the writer's encoding most of what a
    /// logged block costs.
    public func appendJSONLine(to bytes: inout [UInt8]) {
        var j = JSONObjectWriter(appendingTo: &bytes)
        defer { j.finish(into: &bytes) }
        if let sighting { return retroHitLine(sighting, &j) }
        head(kind: "event", type: "denied", &j) { _ in }
        j.object("source") {
            if let subnet {
                // The client behind a trusted forwarder; the forwarder is network.forwarded_ip.
                $0.ip("ip", subnet.address)
                $0.string("subnet", subnet.text)
            } else {
                $0.ip("ip", client.ip)
                $0.number("port", Int(client.port))
            }
        }
        j.object("network") {
            $0.string("transport", transport.rawValue)
            $0.literal("protocol", "dns")
            if subnet != nil {
                $0.ip("forwarded_ip", client.ip)
                $0.number("forwarded_port", Int(client.port))
            }
        }
        j.object("dns") {
            $0.literal("type", "answer")
            $0.number("id", Int(id))
            $0.object("question") {
                $0.name("name", qname)
                $0.string("type", RRType.name(qtype))
                $0.string("class", RRType.className(qclass))
            }
            if answer.action != .drop {   // rpz-drop sends no response at all
                $0.string("response_code", Rcode.name(UInt16(answer.rcode)))
            }
            if !answer.addresses.isEmpty {
                $0.stringArray("resolved_ip", answer.addresses.map(IPAddress.text))
            }
        }
        rule(&j)
        j.object("sinkhole") {
            $0.number("schema_version", BlockEvent.schemaVersion)
            $0.string("match", matchedOn)
            if let matchedName { $0.name("matched_name", matchedName) }
            if let chainPosition { $0.number("chain_position", chainPosition) }
            if let matchedAddress { $0.ip("matched_ip", matchedAddress) }
            $0.number("rule_line", answer.match.line)
            $0.number("ttl", Int(answer.ttl))
        }
    }

    /// `@timestamp`, `ecs` and `event`, the same for every kind of line.
    private func head(kind: StaticString, type: StaticString, _ j: inout JSONObjectWriter, _ more: (inout JSONObjectWriter) -> Void) {
        j.timestamp("@timestamp", time)
        j.object("ecs") { $0.literal("version", BlockEvent.ecsVersionLiteral) }
        j.object("event") {
            $0.literal("kind", kind)
            $0.literal("category", "network")
            $0.literal("type", type)
            $0.string("action", answer.action.rawValue)
            $0.literal("dataset", "sinkhole.block")
            more(&$0)
        }
    }

    /// `rule.name` and `rule.ruleset`, the same for every kind of line.
    private func rule(_ j: inout JSONObjectWriter) {
        j.object("rule") {
            $0.string("name", answer.match.rule)
            $0.string("ruleset", answer.match.list)
        }
    }

    /// A retro-hit in the same schema: no port, transport, ID or response (no query was answered);
    /// `event.start`/`event.end` and `sinkhole.history` say when and how often the client resolved it.
    private func retroHitLine(_ s: Sighting, _ j: inout JSONObjectWriter) {
        head(kind: "alert", type: "info", &j) {
            $0.string("start", ReportTime.format(s.firstSeen))
            $0.string("end", ReportTime.format(s.lastSeen))
        }
        j.object("source") { $0.ip("ip", client.ip) }
        j.object("network") { $0.literal("protocol", "dns") }
        j.object("dns") {
            $0.literal("type", "query")
            $0.object("question") {
                $0.name("name", qname)
                $0.string("type", RRType.name(qtype))
                $0.string("class", RRType.className(qclass))
            }
        }
        rule(&j)
        j.object("sinkhole") {
            $0.number("schema_version", BlockEvent.schemaVersion)
            $0.string("match", matchedOn)
            $0.number("rule_line", answer.match.line)
            $0.object("history") {
                $0.string("first_seen", ReportTime.format(s.firstSeen))
                $0.string("last_seen", ReportTime.format(s.lastSeen))
                $0.number("count", s.count)
                $0.stringArray("types", s.types)
            }
        }
    }

    /// `2026-11-26T20:31:02.123Z`: UTC, RFC 3339, milliseconds.
    public static func rfc3339(_ ts: timespec) -> String {
        var bytes: [UInt8] = []
        appendRFC3339(ts, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The same, appended as bytes (24 of them).
    static func appendRFC3339(_ ts: timespec, to out: inout [UInt8]) {
        let date: (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int)
        if ts.tv_sec >= 0, ts.tv_sec < 253_402_300_800 {
            // Years 1970-9999 (every time a clock gives) by arithmetic: gmtime_r takes glibc's
            // time-zone lock for each call, and the writer formats one time per line.
            let seconds = Int(ts.tv_sec)
            let (year, month, day) = civilDate(daysSinceEpoch: seconds / 86_400)
            let inDay = seconds % 86_400
            date = (year, month, day, inDay / 3600, inDay / 60 % 60, inDay % 60)
        } else {
            var seconds = ts.tv_sec
            var tm = Glibc.tm()
            gmtime_r(&seconds, &tm)
            date = (Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
        }
        func digits(_ v: Int, _ width: Int) {
            guard v >= 0 else {
                // Only for a time out of range (a negative year or nanosecond count): as the
                // String version wrote it, the sign inside the zero padding.
                let text = String(v)
                out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: max(0, width - text.utf8.count)))
                out.append(contentsOf: text.utf8)
                return
            }
            JSONObjectWriter.appendDecimal(UInt(v), width: width, to: &out)
        }
        digits(date.year, 4); out.append(UInt8(ascii: "-"))
        digits(date.month, 2); out.append(UInt8(ascii: "-"))
        digits(date.day, 2); out.append(UInt8(ascii: "T"))
        digits(date.hour, 2); out.append(UInt8(ascii: ":"))
        digits(date.minute, 2); out.append(UInt8(ascii: ":"))
        digits(date.second, 2); out.append(UInt8(ascii: "."))
        digits(Int(ts.tv_nsec / 1_000_000), 3); out.append(UInt8(ascii: "Z"))
    }

    /// The proleptic Gregorian date of a day counted from 1970-01-01 (day 0), for days >= 0:
    /// the days are counted from 0000-03-01 instead, so that a leap day ends its year, and split
    /// into 400-year eras of 146,097 days, each era into years of 365 days plus a leap day every
    /// 4th year except every 100th but the 400th.
    static func civilDate(daysSinceEpoch days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468                 // days from 0000-03-01 to 1970-01-01
        let era = z / 146_097
        let dayOfEra = z - era * 146_097                                              // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365   // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0...365, from March 1
        let shiftedMonth = (5 * dayOfYear + 2) / 153                                  // 0 = March ... 11 = February
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}

/// A minimal streaming JSON object writer: keys in the order written, strings escaped per RFC 8259.
struct JSONObjectWriter {
    private var out: [UInt8]
    private var first = true

    /// A writer that appends one object to `buffer` (which it takes over: `finish()` gives it
    /// back, object closed), so that a chunk of lines is one growing array.
    init(appendingTo buffer: inout [UInt8]) {
        out = buffer
        buffer = []
        out.append(UInt8(ascii: "{"))
    }

    /// Keys are the schema's own names, literals that need no escaping: copied as they are.
    private mutating func key(_ k: StaticString) {
        if !first { out.append(UInt8(ascii: ",")) }
        first = false
        out.append(UInt8(ascii: "\""))
        k.withUTF8Buffer { key in
            assert(!key.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }, "a key needing escapes")
            out.append(contentsOf: key)
        }
        out.append(UInt8(ascii: "\""))
        out.append(UInt8(ascii: ":"))
    }

    mutating func string(_ k: StaticString, _ v: String) {
        key(k)
        JSONObjectWriter.appendString(v, to: &out)
    }

    /// A constant value of the schema (`"network"`, `"sinkhole.block"`), escaped like any other.
    mutating func literal(_ k: StaticString, _ v: StaticString) {
        key(k)
        out.append(UInt8(ascii: "\""))
        v.withUTF8Buffer { JSONObjectWriter.appendEscaped($0, to: &out) }
        out.append(UInt8(ascii: "\""))
    }

    /// A wire name in its text form (`WireName.text`), written straight in, no String made.
    mutating func name(_ k: StaticString, _ wire: [UInt8]) {
        key(k)
        out.append(UInt8(ascii: "\""))
        wire.withUnsafeBufferPointer { name in
            WireName.writeText(name) { byte in
                // The text form is printable ASCII: only its quotes and backslashes need escapes.
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// An IPv4 or IPv6 address in text form (`IPAddress.text`), written straight in.
    mutating func ip(_ k: StaticString, _ address: IPBytes) {
        address.withBytes { ip(k, $0) }
    }

    mutating func ip(_ k: StaticString, _ address: [UInt8]) {
        address.withUnsafeBytes { ip(k, $0) }
    }

    private mutating func ip(_ k: StaticString, _ bytes: UnsafeRawBufferPointer) {
        key(k)
        out.append(UInt8(ascii: "\""))
        IPAddress.appendText(bytes, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    mutating func number(_ k: StaticString, _ v: Int) {
        key(k)
        if v < 0 { out.append(UInt8(ascii: "-")) }
        JSONObjectWriter.appendDecimal(v.magnitude, width: 1, to: &out)
    }

    /// `v` in decimal, zero-padded to at least `width` digits, never cut.
    static func appendDecimal(_ v: UInt, width: Int, to out: inout [UInt8]) {
        var divisor: UInt = 1
        var places = 1
        while places < width || v / divisor >= 10 {
            divisor *= 10
            places += 1
        }
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(v / divisor % 10))
            divisor /= 10
        }
    }

    /// An RFC 3339 time (`BlockEvent.rfc3339`) as a string value.
    mutating func timestamp(_ k: StaticString, _ ts: timespec) {
        key(k)
        out.append(UInt8(ascii: "\""))
        BlockEvent.appendRFC3339(ts, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    mutating func stringArray(_ k: StaticString, _ values: [String]) {
        key(k)
        out.append(UInt8(ascii: "["))
        for (i, v) in values.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONObjectWriter.appendString(v, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    /// A nested object, written in place.
    mutating func object(_ k: StaticString, _ body: (inout JSONObjectWriter) -> Void) {
        key(k)
        out.append(UInt8(ascii: "{"))
        first = true
        body(&self)
        out.append(UInt8(ascii: "}"))
        first = false
    }

    /// Closes the object and gives the bytes back to `buffer` (swapped, not copied: a copy
    /// of the writer here would copy the whole chunk for every line).
    mutating func finish(into buffer: inout [UInt8]) {
        out.append(UInt8(ascii: "}"))
        swap(&buffer, &out)
        out = []
    }

    /// `s` as a JSON string: quotes, backslashes and control characters escaped, everything
    /// else as its UTF-8 bytes.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        // Runs of bytes that need no escape (nearly all of them) go in at once, not byte by byte.
        s.withUTF8 { appendEscaped($0, to: &out) }
        out.append(UInt8(ascii: "\""))
    }

    /// UTF-8 bytes as the inside of a JSON string.
    static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var run = 0
        for i in 0..<bytes.count {
            let byte = bytes[i]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            if i > run { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<i])) }
            appendEscape(byte, to: &out)
            run = i + 1
        }
        if bytes.count > run { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run...])) }
    }

    private static func appendEscape(_ byte: UInt8, to out: inout [UInt8]) {
        switch byte {
        case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\\"))
        case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
        case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
        case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
        default:
            func hex(_ nibble: UInt8) -> UInt8 { nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10 }
            out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                    hex(byte >> 4), hex(byte & 0xF)])
        }
    }

    /// The same for a String (the report formatter's JSON): the bytes above, as text.
    static func appendString(_ s: String, to out: inout String) {
        var bytes: [UInt8] = []
        appendString(s, to: &bytes)
        out += String(decoding: bytes, as: UTF8.self)
    }
}
