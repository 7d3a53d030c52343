/// Validation of a domain name as written in a list file, with the reason when it is refused.
public enum DomainName {
    public enum Problem: Error, Equatable, CustomStringConvertible {
        case empty
        case ipAddress
        case nonASCII
        case badCharacter(Character)
        case emptyLabel
        case labelTooLong(Int)
        case nameTooLong(Int)
        case hyphenAtLabelEdge

        public var description: String {
            switch self {
            case .empty: return "empty name"
            case .ipAddress: return "an IP address where a domain name is expected"
            case .nonASCII: return "non-ASCII name (write it in its IDNA xn-- form)"
            case .badCharacter(let c): return "character '\(c)' is not allowed in a domain name"
            case .emptyLabel: return "empty label (two dots in a row, or a leading dot)"
            case .labelTooLong(let n): return "label of \(n) bytes (at most 63)"
            case .nameTooLong(let n): return "name of \(n) bytes (at most 253)"
            case .hyphenAtLabelEdge: return "label starts or ends with a hyphen"
            }
        }
    }

    /// Lowercase wire form (with root byte) of a hostname-like name: letters, digits, hyphens
    /// and underscores (used by SRV and DKIM names), labels of 1–63 bytes, at most 253 characters.
    /// A single trailing dot is accepted.
    public static func parse(_ text: Substring) -> Result<[UInt8], Problem> {
        var s = text
        if s.hasSuffix(".") { s = s.dropLast() }
        if s.isEmpty { return .failure(.empty) }
        if IPAddress.isAddress(String(s)) { return .failure(.ipAddress) }
        if s.utf8.contains(where: { $0 >= 0x80 }) { return .failure(.nonASCII) }
        if s.utf8.count > 253 { return .failure(.nameTooLong(s.utf8.count)) }
        var wire: [UInt8] = []
        wire.reserveCapacity(s.utf8.count + 2)
        for label in s.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            if label.isEmpty { return .failure(.emptyLabel) }
            if label.count > 63 { return .failure(.labelTooLong(label.count)) }
            if label.first == UInt8(ascii: "-") || label.last == UInt8(ascii: "-") {
                return .failure(.hyphenAtLabelEdge)
            }
            wire.append(UInt8(label.count))
            for byte in label {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                     UInt8(ascii: "-"), UInt8(ascii: "_"):
                    wire.append(byte)
                case UInt8(ascii: "A")...UInt8(ascii: "Z"):
                    wire.append(byte | 0x20)
                default:
                    return .failure(.badCharacter(Character(Unicode.Scalar(byte))))
                }
            }
        }
        wire.append(0)
        return .success(wire)
    }
}
