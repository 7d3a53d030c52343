import Glibc

/// IPv4 and IPv6 address literals, parsed with inet_pton.
public enum IPAddress {
    /// The 4 or 16 address bytes, or nil when `text` is not an address literal.
    public static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    public static func isAddress(_ text: String) -> Bool { parse(text) != nil }

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it stands for; any
    /// other address unchanged.
    public static func unmapped(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return bytes }
        return Array(bytes[12...])
    }

    /// 0.0.0.0 or :: (mapped or not): no host's address; Linux delivers what is sent to it to
    /// the sending host itself.
    public static func isUnspecified(_ bytes: [UInt8]) -> Bool { unmapped(bytes).allSatisfy { $0 == 0 } }

    /// 127.0.0.0/8 or ::1 (mapped or not).
    public static func isLoopback(_ bytes: [UInt8]) -> Bool {
        let a = unmapped(bytes)
        return (a.count == 4 && a[0] == 127) || a == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// Text form of 4 or 16 address bytes ("?" for any other count).
    public static func text(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        bytes.withUnsafeBytes { appendText($0, to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The same, appended as bytes, with nothing allocated on the way (the block log's writer
    /// writes one per line): IPv4 in decimal here, IPv6 by inet_ntop into stack memory.
    static func appendText(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        switch bytes.count {
        case 4:
            for i in 0..<4 {
                if i > 0 { out.append(UInt8(ascii: ".")) }
                JSONObjectWriter.appendDecimal(UInt(bytes[i]), width: 1, to: &out)
            }
        case 16:
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN) + 1) { buffer in
                guard let text = inet_ntop(AF_INET6, bytes.baseAddress, buffer.baseAddress, socklen_t(buffer.count)) else {
                    out.append(UInt8(ascii: "?"))
                    return
                }
                out.append(contentsOf: UnsafeRawBufferPointer(start: text, count: strlen(text)))
            }
        default:
            out.append(UInt8(ascii: "?"))
        }
    }
}
