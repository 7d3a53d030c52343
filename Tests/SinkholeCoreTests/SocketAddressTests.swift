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
        let limiter = RateLimiter(queriesPerSecond: 1, burst: 1)
        #expect(limiter.key(try SocketAddress.parse("10.1.2.3:1").ip) == limiter.key([10, 1, 2, 99]))
    }

    /// From an abuse trial: a flooding client sent one packet from a prefix whose slot collided
    /// with its own, which replaced its drained bucket with a full one (2,000 answers of 2,000
    /// at 50 per second). A colliding prefix now takes the other slot, or shares a bucket being
    /// drained; it never resets one. The hash is keyed per instance.
    @Test func aCollidingPrefixDoesNotRefillAnotherClientsBucket() {
        let limiter = RateLimiter(queriesPerSecond: 1, burst: 3, seed: (1, 2))
        let t0: UInt64 = 1_000_000_000
        func prefix(_ i: Int) -> [UInt8] { [10, UInt8(i >> 8 & 0xFF), UInt8(i & 0xFF), 1] }
        let flooder = prefix(0)
        let slots = limiter.slots(of: limiter.key(flooder))
        // Two more prefixes with the same two slots (found with the test's own seed).
        let colliding = (1..<65_536).filter { limiter.slots(of: limiter.key(prefix($0))) == slots }.prefix(2).map(prefix)
        #expect(colliding.count == 2)
        for _ in 0..<3 { #expect(limiter.allow(flooder, now: t0)) }
        #expect(!limiter.allow(flooder, now: t0), "drained")
        #expect(limiter.allow(colliding[0], now: t0), "the second slot is free")
        #expect(!limiter.allow(flooder, now: t0), "still drained: its bucket was not replaced")
        for _ in 0..<2 { #expect(limiter.allow(colliding[0], now: t0)) }
        #expect(!limiter.allow(colliding[0], now: t0))
        // Both slots held by clients being limited: a third prefix shares one, unreset.
        #expect(!limiter.allow(colliding[1], now: t0))
        #expect(!limiter.allow(flooder, now: t0) && !limiter.allow(colliding[0], now: t0))
        // Quiet long enough to be back at its burst, a slot is free again.
        #expect(limiter.allow(colliding[1], now: t0 + 10_000_000_000))
        #expect(limiter.allow(flooder, now: t0 + 10_000_000_000))
        // Another instance draws another key: the same prefixes are spread differently.
        let other = RateLimiter(queriesPerSecond: 1, burst: 3, seed: (3, 4))
        #expect((0..<64).contains { other.slots(of: other.key(prefix($0))) != limiter.slots(of: limiter.key(prefix($0))) })
    }

    /// Which addresses share a bucket, for each prefix setting; IPv4 and its mapped IPv6 form
    /// are one client.
    @Test func prefixesDecideWhoSharesABudget() {
        let wide = RateLimiter(queriesPerSecond: 1, burst: 1)
        let narrow = RateLimiter(queriesPerSecond: 1, burst: 1, ipv4Prefix: 32, ipv6Prefix: 128)
        let mid = RateLimiter(queriesPerSecond: 1, burst: 1, ipv4Prefix: 20, ipv6Prefix: 64)
        let a = IPAddress.parse("2001:db8:0:1::1")!, b = IPAddress.parse("2001:db8:0:1::2")!
        let c = IPAddress.parse("2001:db8:0:2::1")!
        #expect(wide.key([192, 0, 2, 1]) == wide.key([192, 0, 2, 200]))
        #expect(wide.key([192, 0, 2, 1]) != wide.key([192, 0, 3, 1]))
        #expect(wide.key(a) == wide.key(c), "one /56")
        #expect(narrow.key([192, 0, 2, 1]) != narrow.key([192, 0, 2, 2]))
        #expect(narrow.key(a) != narrow.key(b))
        #expect(mid.key([192, 0, 2, 1]) == mid.key([192, 0, 15, 9]), "one /20")
        #expect(mid.key([192, 0, 2, 1]) != mid.key([192, 0, 16, 1]))
        #expect(mid.key(a) == mid.key(b) && mid.key(a) != mid.key(c), "one /64 each")
        let mapped = IPAddress.parse("::ffff:192.0.2.1")!
        #expect(narrow.key(mapped) == narrow.key([192, 0, 2, 1]))
        #expect(wide.key([0, 0, 0, 0]) != wide.key(IPAddress.parse("::")!), "0.0.0.0 is not ::")
    }

    /// A client's address is checked by the rules' masks: the same verdict as the rules read
    /// byte by byte, for prefixes ending inside a byte, on a byte, at /0 and at full length,
    /// ties between allow and deny, and both families.
    @Test func theMaskedCheckAgreesWithTheRules() throws {
        let access = try AccessPolicy(allow: ["10.0.0.0/8", "172.16.0.0/12", "192.168.1.77/32", "fe80::/10", "2001:db8::/33", "0.0.0.0/0"],
                                      deny: ["10.9.0.0/16", "10.9.8.0/21", "172.16.0.0/12", "2001:db8:0:1::/64", "::/0"])
        var generator = SystemRandomNumberGenerator()
        var addresses: [[UInt8]] = [[10, 9, 15, 1], [10, 9, 16, 1], [172, 31, 255, 255], [172, 32, 0, 0], [192, 168, 1, 77],
                                    [192, 168, 1, 78], [8, 8, 8, 8], [0xfe, 0x80] + [UInt8](repeating: 0, count: 14),
                                    [0x20, 0x01, 0x0d, 0xb8, 0x7f] + [UInt8](repeating: 0, count: 11),
                                    [0x20, 0x01, 0x0d, 0xb8, 0x80] + [UInt8](repeating: 0, count: 11)]
        for _ in 0..<2000 {
            let count = Bool.random(using: &generator) ? 4 : 16
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Mostly near the rules, so that every one is hit.
            if count == 4 { bytes[0] = [10, 172, 192, 8].randomElement(using: &generator)! }
            else { bytes[0...1] = [[0xfe, 0x80], [0x20, 0x01], [0xfe, 0xbf]].randomElement(using: &generator)![...] }
            addresses.append(bytes)
        }
        var allowed = 0
        for bytes in addresses {
            let verdict = access.allows(IPBytes(bytes))
            #expect(verdict == access.allows(bytes), "\(IPAddress.text(bytes))")
            if verdict { allowed += 1 }
        }
        #expect(allowed > 100 && allowed < addresses.count - 100, "both verdicts were reached (\(allowed) allowed)")
        #expect(access.allows(IPBytes([192, 168, 1, 77])) && !access.allows(IPBytes([172, 16, 0, 1])), "deny wins the tie")
        #expect(!access.allows(IPBytes([10, 9, 8, 1])) && access.allows(IPBytes([10, 8, 0, 1])))
    }
}
