import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// EDNS Client Subnet: the client behind a trusted forwarder is the one logged; ECS is not
/// passed upstream unless asked for.
@Suite struct ClientSubnetTests {
    /// A query for `name` with an ECS option for 10.1.2.0/24.
    func query(_ name: String, id: UInt16) -> [UInt8] {
        var q = DNSTestClient.query(name, id: id)
        q[11] = 1
        let ecs: [UInt8] = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2]
        q += [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, UInt8(ecs.count)] + ecs
        return q
    }

    @Test func trustedForwarderECSIsLoggedAsTheClient() throws {
        let collector = try SyslogTests.UDPCollector()
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"]) { c in
            c.trustECSFrom = ["127.0.0.1/32"]
            c.syslog = .udp(collector.address)
        }
        defer { h.stop() }
        #expect(DNSTestClient.udp(query("evil.example", id: 1), to: h.address).flatMap(Header.init)?.rcode == Rcode.nxDomain)
        // Syslog names the same client as the block log: the one behind the forwarder.
        let message = try #require(collector.receive())
        #expect(message.contains("source.ip=\"10.1.2.0\" source.subnet=\"10.1.2.0/24\" network.forwarded_ip=\"127.0.0.1\""), "\(message)")
        #expect(!message.contains("source.port="))
        #expect(message.contains("from 10.1.2.0 (via 127.0.0.1)"), "\(message)")
        // From an untrusted address the same option is ignored for logging.
        #expect(DNSTestClient.udp(query("evil.example", id: 2), to: h.address,
                                  from: SocketAddress(address: [127, 0, 0, 3], port: 0)) != nil)
        let lines = try h.blockLogLines()
        let trusted = try #require(lines.first { ($0.at("dns.id") as? Int) == 1 })
        #expect(trusted.at("source.ip") as? String == "10.1.2.0")
        #expect(trusted.at("source.subnet") as? String == "10.1.2.0/24")
        #expect(trusted.at("network.forwarded_ip") as? String == "127.0.0.1")
        let untrusted = try #require(lines.first { ($0.at("dns.id") as? Int) == 2 })
        #expect(untrusted.at("source.ip") as? String == "127.0.0.3")
        #expect(untrusted.at("network.forwarded_ip") == nil)
    }

    /// A source prefix of 0 is the client declining to be named (RFC 7871): the forwarder is the
    /// client recorded, not 0.0.0.0 (which would lump every such machine together in a report).
    @Test func aZeroPrefixNamesTheForwarder() throws {
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"]) { $0.trustECSFrom = ["127.0.0.1/32"] }
        defer { h.stop() }
        var q = DNSTestClient.query("evil.example", id: 5)
        q[11] = 1
        let ecs: [UInt8] = [0, 8, 0, 4, 0, 1, 0, 0]
        q += [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, UInt8(ecs.count)] + ecs
        #expect(DNSTestClient.udp(q, to: h.address).flatMap(Header.init)?.rcode == Rcode.nxDomain)
        let line = try #require(try h.blockLogLines().first { ($0.at("dns.id") as? Int) == 5 })
        #expect(line.at("source.ip") as? String == "127.0.0.1")
        #expect(line.at("source.subnet") == nil && line.at("network.forwarded_ip") == nil)
    }

    @Test func ecsIsForwardedOnlyWhenAskedFor() throws {
        let plain = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.trustECSFrom = ["127.0.0.1/32"] }
        defer { plain.stop() }
        #expect(DNSTestClient.udp(query("www.example.org", id: 3), to: plain.address) != nil)
        #expect(plain.upstream.received.first?.options == [], "ECS not sent upstream by default")

        let forwarding = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.forwardECS = true }
        defer { forwarding.stop() }
        #expect(DNSTestClient.udp(query("www.example.org", id: 4), to: forwarding.address) != nil)
        #expect(forwarding.upstream.received.first?.options == [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2])
    }

    /// With --forward-ecs the reply carries the client's ECS option back with the upstream's
    /// scope (RFC 7871 7.2.2), from the cache too, and a block's with scope 0: without it a
    /// subnet cache in front took a tailored answer for one good for all (a review).
    @Test func forwardedECSIsEchoedWithTheUpstreamsScope() throws {
        func ecsOption(_ reply: [UInt8]) -> [UInt8]? {
            guard let m = Message(wire: reply), m.edns != nil else { return nil }
            let options = m.ednsOptions
            var i = 0
            while i + 4 <= options.count {
                let length = Int(options[i + 2]) << 8 | Int(options[i + 3])
                if options[i] == 0, options[i + 1] == 8 { return Array(options[i..<min(options.count, i + 4 + length)]) }
                i += 4 + length
            }
            return nil
        }
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"], records: ["www.example.org. 300 IN A 192.0.2.12"]) {
            $0.forwardECS = true
            $0.cacheBytes = 1 << 20
        }
        defer { h.stop() }
        h.upstream.set(.echoClientSubnet(scope: 20), for: "www.example.org")
        let fresh = try #require(DNSTestClient.udp(query("www.example.org", id: 6), to: h.address))
        #expect(ecsOption(fresh) == [0, 8, 0, 7, 0, 1, 24, 20, 10, 1, 2], "the upstream's scope")
        let cached = try #require(DNSTestClient.udp(query("www.example.org", id: 7), to: h.address))
        #expect(h.upstream.received.count == 1, "from the cache")
        #expect(ecsOption(cached) == [0, 8, 0, 7, 0, 1, 24, 20, 10, 1, 2])
        let blocked = try #require(DNSTestClient.udp(query("evil.example", id: 8), to: h.address))
        #expect(ecsOption(blocked) == [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2], "a block is the same for every subnet")
        // Without --forward-ecs, no ECS option back.
        let plain = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.trustECSFrom = ["127.0.0.1/32"] }
        defer { plain.stop() }
        #expect(ecsOption(try #require(DNSTestClient.udp(query("www.example.org", id: 9), to: plain.address))) == nil)
    }

    /// A malformed ECS option (RFC 7871 6: address bits past the prefix, too many octets, an
    /// unknown family) is FORMERR where ECS is used, and not forwarded: `10.1.2.3/24` went
    /// upstream with the host's address in it, and was logged as the client (a review).
    @Test func aMalformedECSOptionIsFORMERRWhereECSIsUsed() throws {
        func ecsQuery(_ name: String, id: UInt16, _ ecs: [UInt8]) -> [UInt8] {
            var q = DNSTestClient.query(name, id: id)
            q[11] = 1
            return q + [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, UInt8(ecs.count)] + ecs
        }
        let bad: [[UInt8]] = [
            [0, 8, 0, 8, 0, 1, 24, 0, 10, 1, 2, 3],   // 4 octets for a /24
            [0, 8, 0, 7, 0, 1, 23, 0, 10, 1, 3],      // a bit set past /23
            [0, 8, 0, 4, 0, 9, 0, 0],                 // unknown family
            [0, 8, 0, 5, 0, 1, 33, 0, 10],            // /33 for IPv4
        ]
        let forwarding = try TestHarness(lists: ["intel.txt": "evil.example\n"], records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.forwardECS = true }
        defer { forwarding.stop() }
        let trusting = try TestHarness(lists: ["intel.txt": "evil.example\n"], records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.trustECSFrom = ["127.0.0.1/32"] }
        defer { trusting.stop() }
        let ignoring = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"])
        defer { ignoring.stop() }
        for (i, ecs) in bad.enumerated() {
            for (h, name) in [(forwarding, "www.example.org"), (trusting, "evil.example")] {
                let reply = try #require(DNSTestClient.udp(ecsQuery(name, id: UInt16(10 + i), ecs), to: h.address))
                #expect(Header(reply)?.rcode == Rcode.formErr, "\(ecs) for \(name)")
            }
            let ignored = try #require(DNSTestClient.udp(ecsQuery("www.example.org", id: UInt16(20 + i), ecs), to: ignoring.address))
            #expect(Header(ignored)?.rcode == Rcode.noError, "ECS unused: the option is ignored")
        }
        #expect(forwarding.upstream.received.isEmpty)
        #expect(try trusting.blockLogLines().isEmpty)
    }

    @Test func malformedIsTheSameWithoutAllocating() {
        for options: [UInt8] in [
            [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2], [0, 8, 0, 8, 0, 1, 24, 0, 10, 1, 2, 3], [0, 8, 0, 7, 0, 1, 23, 0, 10, 1, 3],
            [0, 8, 0, 4, 0, 9, 0, 0], [0, 8, 0, 5, 0, 1, 33, 0, 10], [0, 8, 0, 2, 0, 1], [0, 10, 0, 2, 1, 2], [],
            [0, 10, 0, 2, 1, 2, 0, 8, 0, 8, 0, 2, 32, 0, 0x20, 0x01, 0x0D, 0xB8],
        ] {
            let malformed = options.withUnsafeBytes { ClientSubnet.isMalformed(options: $0) }
            #expect(malformed == (ClientSubnet.read(options: options) == .malformed), "\(options)")
        }
    }

    @Test func optionParsing() {
        #expect(ClientSubnet.parse(options: [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2])?.text == "10.1.2.0/24")
        #expect(ClientSubnet.parse(options: [0, 8, 0, 4, 0, 1, 0, 0]).map { ($0.text, $0.namesAClient) } ?? ("", true) == ("0.0.0.0/0", false))
        #expect(ClientSubnet.parse(options: [0, 10, 0, 2, 1, 2, 0, 8, 0, 8, 0, 2, 32, 0, 0x20, 0x01, 0x0D, 0xB8])?.text == "2001:db8::/32", "after another option")
        #expect(ClientSubnet.parse(options: [0, 8, 0, 7, 0, 1, 24, 0, 10, 1]) == nil, "length past the end")
        #expect(ClientSubnet.parse(options: [0, 8, 0, 6, 0, 1, 24, 0, 10, 1]) == nil, "address shorter than the prefix says")
        #expect(ClientSubnet.parse(options: [0, 8, 0, 4, 0, 9, 0, 0]) == nil, "unknown family")
    }
}
