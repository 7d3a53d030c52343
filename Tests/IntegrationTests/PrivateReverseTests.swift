import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `--private-reverse`: reverse lookups of private addresses (RFC 6303 zones) never go to a
/// public upstream; sinkhole answers them itself when no upstream of the network's own is given.
@Suite struct PrivateReverseTests {
    @Test func localModeAnswersNXDOMAINWithTheZonesSOAAndSendsNothing() throws {
        let h = try TestHarness(records: ["8.8.8.8.in-addr.arpa. 300 IN PTR dns.google."]) { $0.privateReverse = .local }
        defer { h.stop() }
        let below = try #require(DNSTestClient.ask("4.3.2.10.IN-ADDR.arpa", type: 12, edns: EDNS(udpPayloadSize: 1232), server: h.address))
        #expect(below.rcode == Rcode.nxDomain)
        #expect(below.question?.name == WireName.fromText("4.3.2.10.IN-ADDR.arpa"), "the question as asked")
        let soa = try #require(below.records(.authority).first)
        #expect(soa.type == RRType.soa && WireName.equalIgnoringCase(soa.owner, WireName.fromText("10.in-addr.arpa")!), "\(soa.owner)")
        #expect(below.answerCount == 0 && below.recursionAvailable)
        // 172.16/12 is sixteen zones, each its own.
        #expect(DNSTestClient.ask("9.9.31.172.in-addr.arpa", type: 12, server: h.address)?.records(.authority).first?.owner
            == WireName.fromText("31.172.in-addr.arpa"))
        // A zone's own name exists: its SOA, or NODATA.
        let apex = try #require(DNSTestClient.ask("168.192.in-addr.arpa", type: RRType.soa, server: h.address))
        #expect(apex.rcode == Rcode.noError && apex.records(.answer).map(\.type) == [RRType.soa])
        let apexNS = try #require(DNSTestClient.ask("168.192.in-addr.arpa", type: RRType.ns, server: h.address))
        #expect(apexNS.rcode == Rcode.noError && apexNS.records(.answer).map(\.type) == [RRType.ns], "RFC 6303: @ NS @")
        let apexTXT = try #require(DNSTestClient.ask("168.192.in-addr.arpa", type: 16, server: h.address))
        #expect(apexTXT.rcode == Rcode.noError && apexTXT.answerCount == 0 && apexTXT.records(.authority).map(\.type) == [RRType.soa])
        // 127.0.0.1 and ::1 are localhost (RFC 6761 6.3).
        for name in ["1.0.0.127.in-addr.arpa", "1." + Array(repeating: "0", count: 31).joined(separator: ".") + ".ip6.arpa"] {
            let localhost = try #require(DNSTestClient.ask(name, type: RRType.ptr, server: h.address))
            #expect(localhost.rcode == Rcode.noError && localhost.records(.answer).map(\.rdata) == [WireName.fromText("localhost")!], "\(name)")
        }
        #expect(DNSTestClient.ask("2.0.0.127.in-addr.arpa", type: RRType.ptr, server: h.address)?.rcode == Rcode.nxDomain)
        // The names on the way down to it exist (RFC 8020: NXDOMAIN would deny what is below).
        for parent in ["0.0.127.in-addr.arpa", "0.127.in-addr.arpa"] {
            let r = try #require(DNSTestClient.ask(parent, type: RRType.ptr, server: h.address))
            #expect(r.rcode == Rcode.noError && r.answerCount == 0, "\(parent)")
        }
        // IPv6: unique-local (fd00::/8 in fc00::/7) and link-local.
        #expect(DNSTestClient.ask("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", type: 12, server: h.address)?.rcode == Rcode.nxDomain)
        #expect(DNSTestClient.ask("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa", type: 12, server: h.address)?.rcode == Rcode.nxDomain)
        // A class-ANY question gets an IN record (no record has class ANY).
        let anyClass = try #require(DNSTestClient.udp(DNSTestClient.query("5.3.2.10.in-addr.arpa", type: 12, qclass: 255), to: h.address)
            .flatMap { Message(wire: $0) })
        #expect(anyClass.rcode == Rcode.nxDomain && anyClass.text.contains("\tIN\tSOA\t"), "\(anyClass.text)")
        #expect(h.upstream.received.isEmpty, "a private reverse name left the host: \(h.upstream.received.map(\.name))")
        // A public address's reverse name, and a name that only looks like one, go upstream.
        #expect(DNSTestClient.ask("8.8.8.8.in-addr.arpa", type: 12, server: h.address)?.answerCount == 1)
        #expect(DNSTestClient.ask("4.3.2.110.in-addr.arpa", type: 12, server: h.address)?.rcode == Rcode.nxDomain)
        #expect(DNSTestClient.ask("10.in-addr.arpa.example", type: 12, server: h.address)?.rcode == Rcode.nxDomain)
        #expect(Set(h.upstream.received.map { FakeUpstream.key($0.name) })
            == ["8.8.8.8.in-addr.arpa.", "4.3.2.110.in-addr.arpa.", "10.in-addr.arpa.example."])
    }

    /// A forward zone always wins; `forward` sends them as any name. `auto` with the harness's
    /// loopback upstream answers them here: what listens on loopback is most often a proxy to a
    /// public resolver.
    @Test func autoSendsThemToPrivateUpstreamsAndForwardZonesWin() throws {
        let dc = try FakeUpstream(records: ["5.0.0.10.in-addr.arpa. 300 IN PTR dc1.corp.example."])
        defer { dc.stop() }
        let h = try TestHarness(records: ["4.3.2.10.in-addr.arpa. 300 IN PTR printer.lan."]) {
            $0.privateReverse = .local
            $0.forwardZones = [try! ForwardZone.parse("0.0.10.in-addr.arpa=\(dc.address)").get()]
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("5.0.0.10.in-addr.arpa", type: 12, server: h.address)?.answerCount == 1, "the forward zone wins over local")
        #expect(DNSTestClient.ask("4.3.2.10.in-addr.arpa", type: 12, server: h.address)?.rcode == Rcode.nxDomain)
        #expect(h.upstream.received.isEmpty && dc.received.count == 1)

        for mode in [PrivateReverseMode.auto, .forward] {
            let h = try TestHarness(records: ["4.3.2.10.in-addr.arpa. 300 IN PTR printer.lan."]) { $0.privateReverse = mode }
            defer { h.stop() }
            let answered = try #require(DNSTestClient.ask("4.3.2.10.in-addr.arpa", type: 12, server: h.address))
            #expect(answered.answerCount == (mode == .forward ? 1 : 0), "\(mode)")
            #expect(h.upstream.received.count == (mode == .forward ? 1 : 0), "\(mode)")
        }
    }

    /// Which upstreams `auto` counts as the network's own.
    @Test func autoPicksTheUpstreamsWithPrivateAddresses() throws {
        func group(_ upstreams: [String], _ mode: PrivateReverseMode = .auto) throws -> [Int] {
            let forwarder = Forwarder(upstreams: try upstreams.map { try SocketAddress.parse($0, defaultPort: 53) },
                                      privateReverse: mode, timeout: 1, payloadSize: 1232, logger: TestHarness.quietLogger)
            defer { forwarder.stop() }
            return forwarder.privateGroup
        }
        #expect(try group(["9.9.9.9", "10.0.0.53", "[fd00::53]:53", "127.0.0.1:5353", "192.0.2.1", "[::ffff:192.168.1.1]:53", "[::1]:53"])
            == [1, 2, 5], "private addresses, an IPv4-mapped one as its IPv4 address; not loopback")
        #expect(try group(["9.9.9.9", "[2620:fe::fe]:53"]) == [], "none: answered here")
        #expect(try group(["10.0.0.53"], .local) == [])
    }
}
