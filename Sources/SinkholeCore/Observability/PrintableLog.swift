import Glibc
import Logging

/// Text from outside (list files, their names, query names, peers' messages) as it goes into the
/// operational log: every control character written as an escape, so that a feed's line cannot
/// move the operator's terminal (an ANSI escape sequence) or forge a log line of its own (a
/// newline), whatever reads the log: a terminal, journalctl, a SIEM's line splitter.
public enum LogText {
    /// `s` with C0 controls, DEL, C1 controls, the line and paragraph separators and the
    /// bidirectional overrides escaped (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`, `\u{2028}`,
    /// `\u{202e}`), and a backslash doubled so that an escape in the text reads differently from
    /// one made here. Other characters, non-ASCII letters included, are kept.
    ///
    /// `doublingBackslash: false` leaves backslashes as they are, for a field that must read the
    /// same as in the block log (a query name's presentation text, `a\.b.example`, which holds
    /// no control character of its own) at the cost of a text `\n` reading like an escaped one.
    public static func printable(_ s: String, doublingBackslash: Bool = true) -> String {
        guard s.unicodeScalars.contains(where: needsEscape) else { return s }
        var out = String.UnicodeScalarView()
        for scalar in s.unicodeScalars {
            guard needsEscape(scalar), doublingBackslash || scalar != "\\" else {
                out.append(scalar)
                continue
            }
            let escape: String
            switch scalar {
            case "\\": escape = "\\\\"
            case "\n": escape = "\\n"
            case "\r": escape = "\\r"
            case "\t": escape = "\\t"
            default:
                let hex = String(scalar.value, radix: 16)
                escape = scalar.value < 0x80 ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{\(hex)}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    /// `printable(s)`, cut after `limit` bytes of the original (at a character's end) with the
    /// count of what was left out: one bad line of a feed (up to 4 MiB) is quoted, not copied.
    public static func quoted(_ s: String, limit: Int = 200) -> String { printable(cut(s, limit: limit)) }

    /// `s` cut after `limit` bytes (at a character's end) with the count of what was left out,
    /// not escaped.
    public static func cut(_ s: String, limit: Int = 200) -> String {
        let kept = head(s, limit: limit)
        let rest = s.utf8.count - kept.utf8.count
        return rest == 0 ? s : String(kept) + "... (\(rest) more bytes)"
    }

    /// `n` and the noun, plural unless `n` is 1: "1 line", "0 lines", "3 lines".
    public static func count(_ n: Int, _ noun: String, plural: String? = nil) -> String {
        n == 1 ? "1 \(noun)" : "\(n) \(plural ?? noun + "s")"
    }

    /// The longest run of whole characters from the start of `s` within `limit` bytes.
    public static func head(_ s: String, limit: Int) -> Substring {
        guard s.utf8.count > limit else { return s[...] }
        var end = s.startIndex
        for index in s.indices {
            if s.utf8.distance(from: s.startIndex, to: index) > limit { break }
            end = index
        }
        return s[..<end]
    }

    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        return v < 0x20 || (v >= 0x7F && v <= 0x9F) || v == 0x5C
            || v == 0x2028 || v == 0x2029            // line and paragraph separators: line breaks to some viewers
            || (v >= 0x202A && v <= 0x202E)          // bidirectional embeddings and overrides
            || (v >= 0x2066 && v <= 0x2069)          // bidirectional isolates
    }

    /// A metadata value as the stderr log writes it after `key=`: printable, and in double
    /// quotes (a quote inside escaped) when it is empty or holds a space, `=` or `"`, so that
    /// every line reads as logfmt (`cache-size="64 MiB, ttl 0-86400s"`). Lists and dictionaries
    /// keep their own form.
    static func logfmt(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .string, .stringConvertible:
            guard case .string(let s) = printable(value) else { return printable(value) }
            let plain = !s.isEmpty && !s.contains { $0 == " " || $0 == "=" || $0 == "\"" }
            return .string(plain ? s : "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"")
        case .array, .dictionary:
            return printable(value)
        }
    }

    static func printable(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .string(let s): return .string(printable(s))
        case .stringConvertible(let c): return .string(printable(c.description))
        case .array(let values): return .array(values.map(printable))
        case .dictionary(let values): return .dictionary(values.mapValues(printable))
        }
    }
}

/// Wraps the operational log's handler: messages are written through `LogText.printable`, and
/// metadata values through `LogText.logfmt`.
public struct PrintableLogHandler: LogHandler {
    private var inner: any LogHandler

    public init(_ inner: any LogHandler) { self.inner = inner }

    public func log(event: LogEvent) {
        var event = event
        event.message = "\(LogText.printable(event.message.description))"
        event.metadata = event.metadata?.mapValues(LogText.logfmt)
        inner.log(event: event)
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }
}

/// The operational log's handler (stderr): one line per event, written whole with one write(2),
///
///     2026-12-07T23:37:09.123Z info sinkhole: key=value ... [module] message
///
/// in swift-log's stream layout, but timed as the block log is: UTC, RFC 3339, milliseconds.
/// swift-log's own handler wrote local time to the second with a `+0000`-style offset that
/// followed TZ, so the two logs could not be lined up closer than a second, nor parsed as one.
/// Messages and metadata go through `PrintableLogHandler`'s rules.
public struct OperationalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let fd: Int32

    public init(label: String, fd: Int32 = STDERR_FILENO, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.fd = fd
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let explicit = event.metadata { all.merge(explicit) { $1 } }
        if let error = event.error {
            all["error.message"] = "\(error)"
            all["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var line = BlockEvent.rfc3339(time) + " \(event.level) \(label):"
        for (key, value) in all.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(LogText.logfmt(value))" }
        line += " [\(event.source)] \(LogText.printable(event.message.description))\n"
        var bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return }   // stderr gone: nothing more to do
            offset += n
        }
        bytes.removeAll()
    }
}
