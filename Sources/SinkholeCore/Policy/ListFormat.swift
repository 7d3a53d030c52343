/// The format of a list file, detected per file from its name and first lines.
public enum ListFormat: String, Sendable {
    /// Line-oriented: plain domains, hosts-file lines, `*.name` wildcards, Adblock `||name^` rules
    /// (mixed freely, one rule per line).
    case lines
    /// An RPZ zone file (`.rpz` or `.zone`, or text that starts like a zone: `$ORIGIN`, `$TTL`, an SOA).
    case rpz

    public static func detect(name: String, bytes: [UInt8]) -> ListFormat {
        if name.hasSuffix(".rpz") || name.hasSuffix(".zone") { return .rpz }
        var seen = 0
        for line in bytes.prefix(65_536).split(separator: UInt8(ascii: "\n")) {
            let text = String(decoding: line, as: UTF8.self).trimmingSpace
            if text.isEmpty || text.hasPrefix("#") || text.hasPrefix(";") || text.hasPrefix("!") { continue }
            if text.hasPrefix("$ORIGIN") || text.hasPrefix("$TTL") { return .rpz }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.contains("SOA") && fields.contains("IN") { return .rpz }
            seen += 1
            if seen >= 20 { break }
        }
        return .lines
    }
}

extension String {
    var trimmingSpace: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
