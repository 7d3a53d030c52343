/// A set of IPv4 and IPv6 prefixes (CIDRs) with a rule attached to each, answering "which
/// listed range holds this address?" with one hash probe per prefix length in use: the cost
/// does not grow with the number of ranges.
public struct IPPrefixSet: Sendable {
    /// A listed range: its text as written (normalised), the action, where it came from.
    public struct Rule: Sendable, Equatable {
        public var text: String
        public var action: DomainMatcher.Action
        public var line: Int
    }

    /// Address bits above the prefix, as two 64-bit words (IPv4 uses the first).
    struct Key: Hashable {
        var high: UInt64
        var low: UInt64
    }

    private var v4: [Int: [Key: Rule]] = [:]
    private var v6: [Int: [Key: Rule]] = [:]
    private var v4Lengths: [Int] = []   // longest first
    private var v6Lengths: [Int] = []

    public init() {}

    public var count: Int { v4.values.reduce(0) { $0 + $1.count } + v6.values.reduce(0) { $0 + $1.count } }
    /// Of those, the ranges that block (not allowlist ranges).
    public var blockingCount: Int {
        (Array(v4.values) + Array(v6.values)).reduce(0) { sum, rules in sum + rules.values.filter { $0.action != .allow }.count }
    }
    public var isEmpty: Bool { v4.isEmpty && v6.isEmpty }

    static func key(_ address: [UInt8], prefix: Int) -> Key {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (i, byte) in address.enumerated() {
            if i < 8 { high |= UInt64(byte) << (56 - 8 * UInt64(i)) } else { low |= UInt64(byte) << (56 - 8 * UInt64(i - 8)) }
        }
        let bits = prefix
        if bits <= 0 { return Key(high: 0, low: 0) }
        if bits < 64 { return Key(high: high & ~(UInt64.max >> UInt64(bits)), low: 0) }
        if bits == 64 { return Key(high: high, low: 0) }
        if bits < 128 { return Key(high: high, low: low & ~(UInt64.max >> UInt64(bits - 64))) }
        return Key(high: high, low: low)
    }

    /// The IPv4 address carried in an IPv6 one that reaches it: IPv4-mapped (`::ffff:a.b.c.d`,
    /// which a dual-stack socket connects to over IPv4) or in NAT64's well-known prefix
    /// (`64:ff9b::a.b.c.d`, RFC 6052, what DNS64 makes of an IPv4-only name's A record). Nil
    /// for any other address.
    public static func embeddedIPv4(_ address: [UInt8]) -> [UInt8]? {
        guard address.count == 16 else { return nil }
        let nat64 = address[0] == 0 && address[1] == 0x64 && address[2] == 0xFF && address[3] == 0x9B
            && address[4..<12].allSatisfy { $0 == 0 }
        return nat64 ? Array(address[12...]) : mappedIPv4(address)
    }

    /// The IPv4 address of an IPv4-mapped one (`::ffff:a.b.c.d`), or nil.
    static func mappedIPv4(_ address: [UInt8]) -> [UInt8]? {
        let v4 = IPAddress.unmapped(address)
        return address.count == 16 && v4.count == 4 ? v4 : nil
    }

    /// Adds a range; the first rule for the same range wins. An IPv4-mapped range
    /// (`::ffff:a.b.c.d`, /96 or longer) is its IPv4 range, so that it also holds the A records of
    /// that address. An allow range wider than IPv4's /8 stays as written, for mapped addresses
    /// only: widened, an allowlist's `::ffff:0:0/96` became IPv4's /0 and lifted every IPv4
    /// indicator.
    public mutating func insert(address: [UInt8], prefix: Int, rule: Rule) {
        if prefix >= 96, rule.action != .allow || prefix >= 104, let v4 = IPPrefixSet.mappedIPv4(address) {
            return insert(address: v4, prefix: prefix - 96, rule: rule)
        }
        let k = IPPrefixSet.key(address, prefix: prefix)
        if address.count == 4 {
            if v4[prefix]?[k] == nil { v4[prefix, default: [:]][k] = rule }
            v4Lengths = v4.keys.sorted(by: >)
        } else {
            if v6[prefix]?[k] == nil { v6[prefix, default: [:]][k] = rule }
            v6Lengths = v6.keys.sorted(by: >)
        }
    }

    /// The rule of the longest listed prefix holding `address`, or nil. An IPv6 address that
    /// reaches an IPv4 one (`embeddedIPv4`) and is not listed as such is looked up as that IPv4
    /// address: an AAAA record `::ffff:203.0.113.5` went around the indicator 203.0.113.0/24.
    public func lookup(_ address: [UInt8]) -> Rule? {
        let (tables, lengths) = address.count == 4 ? (v4, v4Lengths) : (v6, v6Lengths)
        for length in lengths {
            if let rule = tables[length]?[IPPrefixSet.key(address, prefix: length)] { return rule }
        }
        if !v4.isEmpty, let v4Address = IPPrefixSet.embeddedIPv4(address) { return lookup(v4Address) }
        return nil
    }

    /// Parses `ADDR` or `ADDR/LEN` (host bits may be set; they are ignored).
    public static func parseCIDR(_ text: Substring) -> (address: [UInt8], prefix: Int)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress.parse(String(parts[0])) else { return nil }
        let maxBits = address.count * 8
        guard parts.count == 2 else { return (address, maxBits) }
        guard let length = Int(parts[1]), (0...maxBits).contains(length) else { return nil }
        return (address, length)
    }

    /// Why a blocklist's IP indicator is refused, or nil: a range wider than /8 (IPv4) or /16
    /// (IPv6) would block answers across a large part of the internet, far more often a typo
    /// (`/0`, `/1`) than an indicator. An allowlist may hold any range.
    public static func refusedIndicator(_ address: [UInt8], _ prefix: Int) -> String? {
        // An IPv4-mapped range is judged as the IPv4 range it is stored as (`insert`).
        if prefix >= 96, let v4 = mappedIPv4(address) { return refusedIndicator(v4, prefix - 96) }
        let least = address.count == 4 ? 8 : 16
        if prefix < least {
            return "a /\(prefix) range, which would block answers across a large part of the internet (an indicator range is /\(least) or narrower)"
        }
        // 0.0.0.0/8, 127.0.0.0/8, :: and ::1: what hosts files and filtering resolvers answer for
        // the names they block, and what local names resolve to. A stray `127.0.0.1` or `0.0.0.0`
        // line (a hosts-file line missing its names) blocked every such answer.
        let local = address.count == 4 ? address[0] == 0 || address[0] == 127
            : prefix >= 127 && address[0..<15].allSatisfy { $0 == 0 } && address[15] <= 1
        guard local else { return nil }
        return "a loopback or unspecified address, what blocking resolvers and hosts files answer: not an indicator (a hosts-file line missing its names?)"
    }

    /// The address of an RPZ `rpz-ip` trigger name's labels (without `rpz-ip` and the origin):
    /// `32.1.2.0.192` → 192.0.2.1/32; `128.1.zz.db8.2001` → 2001:db8::1/128 (RFC draft-vixie-dnsop-dns-rpz).
    public static func parseRPZTrigger(_ labels: [Substring]) -> (address: [UInt8], prefix: Int)? {
        guard let first = labels.first, let prefix = Int(first) else { return nil }
        let parts = labels.dropFirst().reversed().map(String.init)
        if parts.count == 4, let address = IPAddress.parse(parts.joined(separator: ".")), address.count == 4 {
            return prefix <= 32 ? (address, prefix) : nil
        }
        let text = parts.map { $0 == "zz" ? "" : $0 }.joined(separator: ":")
        let normalised = text.hasPrefix(":") ? ":" + text : (text.hasSuffix(":") ? text + ":" : text)
        guard let address = IPAddress.parse(normalised), address.count == 16, prefix <= 128 else { return nil }
        return (address, prefix)
    }
}
