/// The EDNS Client Subnet option (RFC 7871, option code 8) of a query: the address of the
/// client behind a forwarder, truncated to `sourcePrefix` bits.
public struct ClientSubnet: Sendable, Equatable {
    /// 4 or 16 bytes, the bits past the prefix zero.
    public var address: [UInt8]
    public var sourcePrefix: Int
    /// The option as received (code, length, data), for `--forward-ecs`.
    public var option: [UInt8]

    /// Whether it says who the client is: a SOURCE PREFIX-LENGTH of 0 is the client (or its
    /// forwarder) declining to (RFC 7871 §7.1.2), and then the forwarder is the client to record.
    public var namesAClient: Bool { sourcePrefix > 0 }

    /// Finds and parses option 8 in raw OPT option bytes; nil when absent or malformed.
    public static func parse(options: [UInt8]) -> ClientSubnet? {
        options.withUnsafeBytes { parse(options: $0) }
    }

    /// The same for option bytes in memory the caller holds (a packet's, on the fast path).
    public static func parse(options: UnsafeRawBufferPointer) -> ClientSubnet? {
        if case .valid(let subnet) = read(options: options) { return subnet }
        return nil
    }

    /// What the options hold of ECS.
    public enum Reading: Equatable, Sendable {
        case absent
        /// RFC 7871 6 and 7.2.1: an unknown FAMILY, a SOURCE PREFIX-LENGTH past the family's
        /// bits, too few or too many ADDRESS octets, or ADDRESS bits set past the prefix. Such a
        /// query is answered FORMERR where ECS is used: before, `10.1.2.3/24` was forwarded
        /// with the host's address in it, and recorded as the client.
        case malformed
        case valid(ClientSubnet)
    }

    public static func read(options: [UInt8]) -> Reading {
        options.withUnsafeBytes { read(options: $0) }
    }

    public static func read(options: UnsafeRawBufferPointer) -> Reading {
        guard let (start, length) = find(options) else { return .absent }
        guard isWellFormed(options, start: start, length: length) else { return .malformed }
        let family = Int(options[start + 4]) << 8 | Int(options[start + 5])
        let bytes = Array(options[(start + 8)..<(start + 4 + length)])
        let address = bytes + [UInt8](repeating: 0, count: (family == 1 ? 4 : 16) - bytes.count)
        return .valid(ClientSubnet(address: address, sourcePrefix: Int(options[start + 6]),
                                   option: Array(options[start..<(start + 4 + length)])))
    }

    /// Whether the options hold a malformed ECS option (see `Reading.malformed`), without
    /// making anything: the fast path asks it of every query from a trusted forwarder.
    public static func isMalformed(options: UnsafeRawBufferPointer) -> Bool {
        find(options).map { !isWellFormed(options, start: $0.start, length: $0.length) } ?? false
    }

    /// The first ECS option (code 8) among raw OPT options: where it starts and its data's
    /// length; nil when there is none, or the options run past their end before it.
    private static func find(_ options: UnsafeRawBufferPointer) -> (start: Int, length: Int)? {
        var i = 0
        while i + 4 <= options.count {
            let code = Int(options[i]) << 8 | Int(options[i + 1])
            let length = Int(options[i + 2]) << 8 | Int(options[i + 3])
            guard i + 4 + length <= options.count else { return nil }
            if code == 8 { return (i, length) }
            i += 4 + length
        }
        return nil
    }

    /// Whether the ECS option at `start`, with `length` bytes of data, is well formed (RFC 7871
    /// 6): a known FAMILY, a prefix within its bits, as many ADDRESS octets as the prefix needs,
    /// and no bit set past it.
    private static func isWellFormed(_ options: UnsafeRawBufferPointer, start: Int, length: Int) -> Bool {
        guard length >= 4 else { return false }
        let family = Int(options[start + 4]) << 8 | Int(options[start + 5])
        let prefix = Int(options[start + 6])
        let size = family == 1 ? 4 : family == 2 ? 16 : 0
        guard size > 0, prefix <= size * 8, length - 4 == (prefix + 7) / 8 else { return false }
        return prefix % 8 == 0 || options[start + 4 + length - 1] & (0xFF >> UInt8(prefix % 8)) == 0
    }

    /// The option for a reply to this query (RFC 7871 7.2.2): FAMILY, SOURCE PREFIX-LENGTH and
    /// ADDRESS as asked, with `scope` as SCOPE PREFIX-LENGTH.
    public func echo(scope: UInt8) -> [UInt8] {
        var out = option
        if out.count >= 8 { out[7] = scope }
        return out
    }

    /// The SCOPE PREFIX-LENGTH of the ECS option among raw OPT options (an upstream's reply);
    /// nil when there is none.
    static func scope(in options: UnsafeRawBufferPointer) -> UInt8? {
        guard let (start, length) = find(options), length >= 4 else { return nil }
        return options[start + 7]
    }

    /// `10.1.2.0/24`.
    public var text: String { "\(IPAddress.text(address))/\(sourcePrefix)" }
}
