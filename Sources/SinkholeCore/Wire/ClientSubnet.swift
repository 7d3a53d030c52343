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
        var i = 0
        while i + 4 <= options.count {
            let code = Int(options[i]) << 8 | Int(options[i + 1])
            let length = Int(options[i + 2]) << 8 | Int(options[i + 3])
            guard i + 4 + length <= options.count else { return nil }
            if code == 8, length >= 4 {
                let data = options[(i + 4)..<(i + 4 + length)]
                let family = Int(data[data.startIndex]) << 8 | Int(data[data.startIndex + 1])
                let prefix = Int(data[data.startIndex + 2])
                let size = family == 1 ? 4 : family == 2 ? 16 : 0
                let bytes = Array(data.dropFirst(4))
                guard size > 0, prefix <= size * 8, bytes.count == (prefix + 7) / 8 else { return nil }
                let address = bytes + [UInt8](repeating: 0, count: size - bytes.count)
                return ClientSubnet(address: address, sourcePrefix: prefix, option: Array(options[i..<(i + 4 + length)]))
            }
            i += 4 + length
        }
        return nil
    }

    /// `10.1.2.0/24`.
    public var text: String { "\(IPAddress.text(address))/\(sourcePrefix)" }
}
