/// The format of a list file, detected per file from its name and first lines.
public enum ListFormat: String, Sendable {
    /// Line-oriented: plain domains, hosts-file lines, `*.name` wildcards, Adblock `||name^` rules
    /// (mixed freely, one rule per line).
    case lines
    /// An RPZ zone file (`.rpz` or `.zone`, or text that starts like a zone: `$ORIGIN`, `$TTL`, an SOA).
    case rpz
    /// IP indicators: one address or CIDR per line (`.ips`, `.ip`, `.cidr`; a line-format file
    /// that holds addresses alone is reported so too). Upstream answers with an address in a
    /// listed range are blocked.
    case ips

    /// `.rpz`/`.zone` names and zone-like text are RPZ; `.ips`/`.ip`/`.cidr` names are address
    /// lists (where a domain line is an error); everything else is line-oriented, where domain
    /// rules and lone addresses or CIDRs can be mixed freely. (The format is not guessed from
    /// the first lines being addresses: an IOC export that lists its addresses first would then
    /// lose its domains.)
    public static func detect(name: String, bytes: [UInt8]) -> ListFormat {
        if name.hasSuffix(".rpz") || name.hasSuffix(".zone") { return .rpz }
        let base = name.hasSuffix(".allow") ? String(name.dropLast(6)) : name
        if base.hasSuffix(".ips") || base.hasSuffix(".ip") || base.hasSuffix(".cidr") { return .ips }
        var seen = 0
        for line in bytes.prefix(65_536).split(separator: UInt8(ascii: "\n")) where seen < 20 {
            let text = String(decoding: line, as: UTF8.self).trimmingSpace
            if text.isEmpty || text.hasPrefix("#") || text.hasPrefix(";") || text.hasPrefix("!") { continue }
            if text.hasPrefix("$ORIGIN") || text.hasPrefix("$TTL") { return .rpz }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.contains("SOA") && fields.contains("IN") { return .rpz }
            seen += 1
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
