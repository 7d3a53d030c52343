/// Which clients may use the resolver (no open resolver): `--allow` / `--deny` CIDR rules,
/// longest prefix wins, deny wins a tie; a client no rule covers is refused.
///
/// Default (no `--allow` given): loopback, RFC 1918, RFC 6598 (carrier-grade NAT), IPv6 ULA
/// and link-local, as Unbound's and dnsdist's defaults. Giving `--allow` replaces that set.
public struct AccessPolicy: Sendable {
    public struct Rule: Sendable, Equatable, CustomStringConvertible {
        public var network: [UInt8]
        public var prefixLength: Int
        public var allow: Bool

        public var description: String {
            "\(allow ? "allow" : "deny") \(IPAddress.text(network))/\(prefixLength)"
        }

        func covers<A: RandomAccessCollection>(_ address: A) -> Bool where A.Element == UInt8, A.Index == Int {
            guard address.count == network.count else { return false }
            var bits = prefixLength
            var i = 0
            while bits >= 8 {
                if address[i] != network[i] { return false }
                bits -= 8
                i += 1
            }
            if bits == 0 { return true }
            let mask = UInt8(0xFF) << (8 - bits)
            return address[i] & mask == network[i] & mask
        }
    }

    public let rules: [Rule]
    /// The rules as masks over an address's two words (`IPBytes.words`): what a query's client
    /// is checked against, two ANDs and two compares a rule.
    private let masked: [Masked]

    private struct Masked {
        var count: Int
        var mask: (UInt64, UInt64)
        var value: (UInt64, UInt64)
        var prefixLength: Int
        var allow: Bool

        init(_ rule: Rule) {
            count = rule.network.count
            let bits = min(rule.prefixLength, count * 8)
            let maskBytes = (0..<count).map { i -> UInt8 in
                let inByte = min(8, max(0, bits - 8 * i))
                return inByte == 0 ? 0 : UInt8(0xFF) << (8 - inByte)
            }
            mask = IPBytes(maskBytes).words
            let network = IPBytes(rule.network).words
            value = (network.0 & mask.0, network.1 & mask.1)
            prefixLength = rule.prefixLength
            allow = rule.allow
        }
    }

    public static let defaultAllowed = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                        "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"]

    public init(rules: [Rule]) {
        self.rules = rules
        masked = rules.filter { $0.network.count <= 16 }.map(Masked.init)
    }

    /// Builds the policy from CIDR texts; throws naming the bad entry.
    public init(allow: [String], deny: [String]) throws {
        let allowed = try (allow.isEmpty ? AccessPolicy.defaultAllowed : allow).map { try AccessPolicy.parse($0, allow: true) }
        self.init(rules: allowed + (try deny.map { try AccessPolicy.parse($0, allow: false) }))
    }

    /// Everyone allowed: for tests and for operators who put their own ACL in front.
    public static let allowAll = AccessPolicy(rules: [Rule(network: [0, 0, 0, 0], prefixLength: 0, allow: true),
                                                      Rule(network: [UInt8](repeating: 0, count: 16), prefixLength: 0, allow: true)])

    public struct ParseError: Error, CustomStringConvertible {
        public var text: String
        public var description: String { "'\(text)': not an address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32)" }
    }

    /// `ADDR/LEN` or a bare address (a /32 or /128).
    public static func parse(_ text: String, allow: Bool) throws -> Rule {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress.parse(String(parts[0])) else { throw ParseError(text: text) }
        let maxBits = address.count * 8
        var length = maxBits
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxBits).contains(l) else { throw ParseError(text: text) }
            length = l
        }
        return Rule(network: address, prefixLength: length, allow: allow)
    }

    /// The same for a client's address, by the masks.
    public func allows(_ address: IPBytes) -> Bool {
        let (a0, a1) = address.words
        var bestLength = -1
        var allowed = false
        for rule in masked where rule.count == address.count && a0 & rule.mask.0 == rule.value.0 && a1 & rule.mask.1 == rule.value.1 {
            if rule.prefixLength > bestLength || (rule.prefixLength == bestLength && !rule.allow) {
                bestLength = rule.prefixLength
                allowed = rule.allow
            }
        }
        return allowed
    }

    /// True when the longest matching rule allows the address (deny on a tie, refuse when none).
    public func allows<A: RandomAccessCollection>(_ address: A) -> Bool where A.Element == UInt8, A.Index == Int {
        var best: Rule?
        for rule in rules where rule.covers(address) {
            if let b = best, b.prefixLength > rule.prefixLength || (b.prefixLength == rule.prefixLength && !b.allow) {
                continue
            }
            best = rule
        }
        return best?.allow ?? false
    }
}

/// What refused clients get (`--refuse-action`).
public enum RefuseAction: String, Sendable, CaseIterable {
    /// A REFUSED reply (header, question and OPT; never an amplified answer).
    case refuse
    /// Nothing.
    case drop
}
