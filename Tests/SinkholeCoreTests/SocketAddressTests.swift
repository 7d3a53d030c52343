import Glibc
@testable import SinkholeCore
import Testing

/// Client addresses are held inline (`IPBytes`); they must still compare, hash, print and go
/// to and from the kernel's sockaddr exactly as the byte arrays they replace.
@Suite struct SocketAddressTests {
    @Test func inlineBytesBehaveAsTheArray() throws {
        let v4 = try SocketAddress.parse("192.0.2.7:53")
        #expect(v4.address == [192, 0, 2, 7])
        #expect(Array(v4.ip) == [192, 0, 2, 7] && v4.ip.count == 4 && !v4.isIPv6)
        let v6 = try SocketAddress.parse("[2001:db8::1]:5353")
        #expect(v6.ip.count == 16 && v6.isIPv6 && v6.ip[0] == 0x20 && v6.ip[15] == 1)
        #expect(v6.description == "[2001:db8::1]:5353")
        // IPv4 0.0.0.0 and the first 4 bytes of :: are the same bytes, but not the same address.
        #expect(IPBytes([0, 0, 0, 0]) != IPBytes([UInt8](repeating: 0, count: 16)))
        #expect(Set([v4, try SocketAddress.parse("192.0.2.7:53"), v6]).count == 2)
        var changed = v4
        changed.address = [198, 51, 100, 1]
        #expect(changed.description == "198.51.100.1:53")
    }

    @Test func sockaddrRoundTrip() throws {
        for text in ["127.0.0.1:25399", "[::1]:53", "[fe80::1:2:3:4]:65535", "255.255.255.255:1"] {
            let a = try SocketAddress.parse(text)
            var storage = sockaddr_storage()
            let length = a.fill(&storage)
            #expect(length == socklen_t(a.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size))
            #expect(SocketAddress(storage: &storage) == a, "\(text)")
        }
    }

    @Test func policiesTakeTheInlineBytes() throws {
        let access = try AccessPolicy(allow: ["10.0.0.0/8"], deny: ["10.9.0.0/16"])
        #expect(access.allows(try SocketAddress.parse("10.1.2.3:1").ip))
        #expect(!access.allows(try SocketAddress.parse("10.9.2.3:1").ip))
        #expect(!access.allows(try SocketAddress.parse("[::1]:1").ip))
        #expect(access.allows(try SocketAddress.parse("10.1.2.3:1").ip) == access.allows([10, 1, 2, 3]))
        #expect(RateLimiter.key(try SocketAddress.parse("10.1.2.3:1").ip) == RateLimiter.key([10, 1, 2, 99]))
    }
}
