/// `--client`: one address (exact match) or a CIDR block. IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`) are treated as the IPv4 address they carry, on both sides.
public struct ClientPattern: Sendable, Equatable, CustomStringConvertible {
    /// The network's address bytes (4 or 16), host bits cleared.
    public let network: [UInt8]
    public let prefixLength: Int
    public let description: String

    /// Parses `10.20.31.7`, `10.0.0.0/8`, `fd00::/8`, `2001:db8::7`; nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, var bytes = IPAddress.parse(String(first)) else { return nil }
        var prefix = bytes.count * 8
        if parts.count == 2 {
            guard parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(parts[1]), p <= prefix else { return nil }
            prefix = p
        }
        if bytes.count == 16, prefix >= 96, IPAddress.unmapped(bytes).count == 4 {
            bytes = IPAddress.unmapped(bytes)
            prefix -= 96
        }
        network = ClientPattern.masked(bytes, prefix)
        prefixLength = prefix
        description = text
    }

    /// Whether the address `text` (as in `source.ip`) is inside this pattern.
    public func matches(_ text: String) -> Bool {
        guard let bytes = IPAddress.parse(text) else { return false }
        return matches(address: bytes)
    }

    public func matches(address: [UInt8]) -> Bool {
        let bytes = IPAddress.unmapped(address)
        guard bytes.count == network.count else { return false }
        return ClientPattern.masked(bytes, prefixLength) == network
    }

    static func masked(_ bytes: [UInt8], _ prefix: Int) -> [UInt8] {
        var out = bytes
        for k in out.indices {
            let bitsHere = max(0, min(8, prefix - k * 8))
            out[k] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
        return out
    }
}

/// `--domain NAME`: that name and every name below it, on label boundaries, ignoring ASCII case.
/// `--domain example.com` matches `example.com` and `www.EXAMPLE.com`, not `badexample.com`.
public struct DomainPattern: Sendable, Equatable, CustomStringConvertible {
    /// Lowercase, no trailing dot.
    public let name: String
    private let bytes: [UInt8]
    public var description: String { name }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case notAName(String)
        case wildcard(String)
        public var description: String {
            switch self {
            case .notAName(let text): return "'\(text)' is not a domain name"
            case .wildcard(let text):
                return "'\(text)': give the name without '*.'; --domain \(text.dropFirst(2)) matches that name and every name below it"
            }
        }
    }

    public init(_ text: String) throws(ParseError) {
        if text.hasPrefix("*.") { throw .wildcard(text) }
        guard text != ".", let wire = WireName.fromPresentation(text), !text.contains(where: { $0 == " " || $0 == "\t" }) else {
            throw .notAName(text)
        }
        // In the block log's own spelling (`WireName.text`): `a\046b.example` and `a\.b.example`
        // are one name, as `explain` and `hunt` read them.
        let lowered = Array(WireName.text(WireName.lowercased(wire)).utf8)
        bytes = lowered
        name = String(decoding: lowered, as: UTF8.self)
    }

    /// `domain` must already be lowercase (as `BlockLogRecord.domain` is).
    public func matches(_ domain: String) -> Bool {
        if let result = domain.utf8.withContiguousStorageIfAvailable({ matches(bytes: $0) }) { return result }
        return Array(domain.utf8).withUnsafeBufferPointer { matches(bytes: $0) }
    }

    func matches(bytes d: UnsafeBufferPointer<UInt8>) -> Bool {
        let p = bytes
        guard d.count >= p.count else { return false }
        let offset = d.count - p.count
        for k in 0..<p.count where d[offset + k] != p[k] { return false }
        if offset == 0 { return true }
        guard d[offset - 1] == UInt8(ascii: ".") else { return false }
        // The dot must separate labels, not be an escaped dot inside one (`a\.example.com`).
        var backslashes = 0
        var k = offset - 2
        while k >= 0, d[k] == UInt8(ascii: "\\") {
            backslashes += 1
            k -= 1
        }
        return backslashes % 2 == 0
    }
}
