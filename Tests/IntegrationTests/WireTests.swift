import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

@Suite struct WireTests {
    @Test func malformedPacketsGetFormErrOrNothingAndServiceContinues() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"])
        defer { h.stop() }
        let good = DNSTestClient.query("www.example.org", id: 0x1111)
        let cases: [[UInt8]] = [
            Array(good.prefix(12)) + [0x3F],                                   // label length past the end
            Array(good.prefix(12)) + [0xC0, 0x0C, 0, 1, 0, 1],                 // pointer loop onto itself
            Array(good.prefix(good.count - 2)),                                // question cut short
            [0x11, 0x11, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],                  // QDCOUNT 0
            [0x11, 0x11, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0] + Array(good.dropFirst(12)), // QDCOUNT 2, one question
        ]
        for packet in cases {
            let reply = try #require(DNSTestClient.udp(packet, to: h.address, timeout: 2), "no reply to \(packet)")
            let header = try #require(Header(reply))
            #expect(header.rcode == Rcode.formErr)
            #expect(header.id == 0x1111)
            #expect(header.isResponse)
            #expect(header.recursionDesired)
        }
        // Nothing comes back for runts and responses; the next good query is still answered.
        #expect(DNSTestClient.udp([0x11, 0x11, 0x01], to: h.address, timeout: 0.3) == nil)
        var response = good
        response[2] |= 0x80
        #expect(DNSTestClient.udp(response, to: h.address, timeout: 0.3) == nil)
        let r = try #require(DNSTestClient.ask("www.example.org", server: h.address))
        #expect(r.records(.answer).map(\.rdata) == [[192, 0, 2, 12]])
    }

    @Test func otherOpcodesGetNotImp() throws {
        let h = try TestHarness()
        defer { h.stop() }
        var notify = DNSTestClient.query("evil.example", id: 0x2222)
        notify[2] = (notify[2] & 0x87) | (4 << 3)
        let reply = try #require(DNSTestClient.udp(notify, to: h.address))
        #expect(Header(reply)?.rcode == Rcode.notImp)
        #expect(Header(reply)?.opcode == 4)
        #expect(h.upstream.received.isEmpty)
    }

    @Test func notImpAndFormErrCopyQuestionAndOPTWhenParseable() throws {
        let h = try TestHarness()
        defer { h.stop() }
        var notify = DNSTestClient.query("WwW.Example.TEST", id: 0x7101, edns: EDNS(udpPayloadSize: 4096))
        notify[2] = (notify[2] & 0x87) | (4 << 3)
        let reply = try #require(DNSTestClient.udp(notify, to: h.address).flatMap { Message(wire: $0) })
        #expect(reply.rcode == Rcode.notImp)
        #expect(reply.opcode == 4)
        #expect(reply.question?.name == WireName.fromText("WwW.Example.TEST"))
        #expect(reply.edns == EDNS(udpPayloadSize: 1232))

        // QDCOUNT 2 with a valid OPT: FORMERR, no question copied, one OPT.
        let q1 = DNSTestClient.query("a.example.test", id: 0x7102)
        let q2 = DNSTestClient.query("b.example.test")
        var two = Array(q1.prefix(12)) + Array(q1.dropFirst(12)) + Array(q2.dropFirst(12))
        two[5] = 2
        two[11] = 1
        two += [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        let formerr = try #require(DNSTestClient.udp(two, to: h.address))
        #expect(Header(formerr)?.rcode == Rcode.formErr)
        #expect(Header(formerr)?.qdcount == 0)
        #expect(Message(wire: formerr)?.edns?.udpPayloadSize == 1232)
    }

    /// A query for www.example.org with `additional` as its additional section (ARCOUNT set).
    static func query(id: UInt16, additional: [[UInt8]]) -> [UInt8] {
        var packet = DNSTestClient.query("www.example.org", id: id)
        packet[11] = UInt8(additional.count)
        for record in additional { packet += record }
        return packet
    }

    @Test func malformedOPTGetsFormErr() throws {
        let h = try TestHarness()
        defer { h.stop() }
        let opt: [UInt8] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        let twoOPT = WireTests.query(id: 0x7103, additional: [opt, opt])
        let namedOPT = WireTests.query(id: 0x7104, additional: [[1, 0x61] + opt])
        // An option whose length (50) runs past the OPT's data (6 bytes), and one cut short.
        let longOption = WireTests.query(id: 0x7105, additional: [[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 6, 0, 10, 0, 50, 1, 2]])
        let shortOption = WireTests.query(id: 0x7106, additional: [[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 3, 0, 10, 0]])
        for packet in [twoOPT, namedOPT, longOption, shortOption] {
            let reply = try #require(DNSTestClient.udp(packet, to: h.address))
            #expect(Header(reply)?.rcode == Rcode.formErr)
        }
        #expect(h.upstream.received.isEmpty)
    }

    /// A query signed with TSIG: sinkhole holds no key, so NOTAUTH with an unsigned TSIG whose
    /// error is BADKEY (RFC 8945 5.2.1), after the OPT. It was answered unsigned, which the
    /// client discards (Unbound answers FORMERR).
    @Test func aSignedQueryGetsBadKey() throws {
        let h = try TestHarness()
        defer { h.stop() }
        let key = WireName.fromText("key1")!, algorithm = WireName.fromText("hmac-sha256")!
        let rdata = algorithm + [0, 0, 0x67, 0x45, 0x23, 0x01, 0x01, 0x2C]     // time signed, fudge 300
            + [0, 32] + [UInt8](repeating: 0xAB, count: 32) + [0x73, 0x01, 0, 0, 0, 0]   // MAC, original ID, error, other
        let tsig = key + [0, 250, 0, 255, 0, 0, 0, 0, UInt8(rdata.count >> 8), UInt8(rdata.count & 0xFF)] + rdata
        let opt: [UInt8] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        for name in ["www.example.org", "evil.example"] {
            var packet = DNSTestClient.query(name, id: 0x7301)
            packet[11] = 2
            packet += opt + tsig
            let reply = try #require(DNSTestClient.udp(packet, to: h.address))
            #expect(Header(reply)?.rcode == Rcode.notAuth, "\(name)")
            #expect(Header(reply)?.arcount == 2)
            // The TSIG is last: key name, type 250, class ANY, TTL 0, then the RDATA.
            let expected = key + [0, 250, 0, 255, 0, 0, 0, 0, 0, UInt8(algorithm.count + 16)]
                + algorithm + [0, 0, 0x67, 0x45, 0x23, 0x01, 0x01, 0x2C, 0, 0, 0x73, 0x01, 0, 17, 0, 0]
            #expect(Array(reply.suffix(expected.count)) == expected, "\(reply)")
            #expect(Message(wire: reply)?.edns != nil, "the OPT, before the TSIG")
        }
        #expect(h.upstream.received.isEmpty)
        // Without EDNS, long key and algorithm names would make it 800 bytes: past 512, it is
        // TC=1 with the question, for TCP (a review: it went out whole).
        let label = String(repeating: "k", count: 60)
        let longKey = WireName.fromText([label, label, label, label].joined(separator: "."))!
        let longAlgorithm = WireName.fromText([label, label, label, "alg"].joined(separator: "."))!
        let longData = longAlgorithm + [0, 0, 0x67, 0x45, 0x23, 0x01, 0x01, 0x2C] + [0, 0] + [0x73, 0x02, 0, 0, 0, 0]
        var big = DNSTestClient.query([label, label, label, "example"].joined(separator: "."), id: 0x7302)
        big[11] = 1
        big += longKey + [0, 250, 0, 255, 0, 0, 0, 0, UInt8(longData.count >> 8), UInt8(longData.count & 0xFF)] + longData
        let truncated = try #require(DNSTestClient.udp(big, to: h.address))
        #expect(truncated.count <= 512)
        #expect(Header(truncated)?.rcode == Rcode.notAuth && (Header(truncated)?.flags ?? 0) & 0x0200 != 0, "\(truncated)")
        let overTCP = try #require(DNSTestClient.tcp(big, to: h.address))
        #expect(overTCP.count > 512 && (Header(overTCP)?.flags ?? 0) & 0x0200 == 0)
    }

    /// RFC 8945 §5.1: a TSIG record anywhere but last, or a second one, is FORMERR. (ldns would
    /// keep one and re-encode a different message; the packet fuzzer found it.) A single TSIG
    /// at the end still decodes.
    @Test func misplacedOrRepeatedTSIGGetsFormErr() throws {
        let h = try TestHarness()
        defer { h.stop() }
        let tsig: [UInt8] = [0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0]   // root owner, TSIG, class ANY, empty
        let opt: [UInt8] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        let twoTSIG = WireTests.query(id: 0x7201, additional: [tsig, tsig])
        let tsigThenOPT = WireTests.query(id: 0x7202, additional: [tsig, opt])
        for packet in [twoTSIG, tsigThenOPT] {
            #expect(Message(wire: packet) == nil)
            let reply = try #require(DNSTestClient.udp(packet, to: h.address))
            #expect(Header(reply)?.rcode == Rcode.formErr)
        }
        let lastTSIG = WireTests.query(id: 0x7203, additional: [opt, tsig])
        #expect(lastTSIG.withUnsafeBytes { TSIGPlacement.isValid($0) })
        #expect(!twoTSIG.withUnsafeBytes { TSIGPlacement.isValid($0) } && !tsigThenOPT.withUnsafeBytes { TSIGPlacement.isValid($0) })
        #expect(h.upstream.received.isEmpty)
    }

    @Test func ednsVersionAboveZeroGetsBadVers() throws {
        let h = try TestHarness()
        defer { h.stop() }
        let r = try #require(DNSTestClient.ask("www.example.org", edns: EDNS(udpPayloadSize: 1232, version: 1), server: h.address))
        #expect(r.edns?.extendedRcode == 1)
        #expect(r.edns?.version == 0)
        #expect(h.upstream.received.isEmpty)
    }

    /// A later EDNS version's options need not follow version 0's layout: BADVERS, not FORMERR
    /// (RFC 6891 6.1.3). A version-0 OPT whose option overruns its data is still FORMERR.
    @Test func aLaterVersionsOddOptionsStillGetBadVers() throws {
        let h = try TestHarness()
        defer { h.stop() }
        for (version, rcode) in [(UInt8(1), Rcode.noError), (0, Rcode.formErr)] {
            var q = DNSTestClient.query("www.example.org", id: 0x3334)
            q[11] = 1
            // Option 10 claiming 16 bytes with 3 after it.
            q += [0, 0, 41, 0x04, 0xD0, 0, version, 0, 0, 0, 7, 0, 10, 0, 16, 0x61, 0x62, 0x63]
            let reply = try #require(DNSTestClient.udp(q, to: h.address))
            #expect(Header(reply)?.rcode == rcode, "version \(version)")
            if version == 1 { #expect(Message(wire: reply)?.edns?.extendedRcode == 1) }
        }
        #expect(h.upstream.received.isEmpty)
    }

    @Test func unknownEDNSOptionsAreNotEchoed() throws {
        let h = try TestHarness()
        defer { h.stop() }
        // A query whose OPT carries option 65001 with 4 bytes, and an unknown flag bit set.
        var q = DNSTestClient.query("www.example.org", id: 0x3333)
        q[11] = 1
        q += [0, 0, 41, 0x04, 0xD0, 0, 0, 0x40, 0x01, 0, 8, 0xFD, 0xE9, 0, 4, 1, 2, 3, 4]
        let reply = try #require(DNSTestClient.udp(q, to: h.address))
        let m = try #require(Message(wire: reply))
        #expect(m.edns == EDNS(udpPayloadSize: 1232, version: 0, extendedRcode: 0, dnssecOK: false))
        #expect(Header(reply)?.arcount == 1)
        // The OPT record is the last 11 bytes: root, type 41, class 1232, TTL 0, RDLENGTH 0.
        #expect(Array(reply.suffix(11)) == [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0])
    }

    @Test func tcpHandlesPipelinedAndSplitMessages() throws {
        let h = try TestHarness(records: ["a.example.org. 300 IN A 192.0.2.1", "b.example.org. 300 IN A 192.0.2.2"])
        defer { h.stop() }
        let c = try #require(DNSTestClient.TCPConnection(to: h.address))
        // Three queries in one write: two forwarded, one blocked.
        let queries = [DNSTestClient.query("a.example.org", id: 1), DNSTestClient.query("evil.example", id: 2),
                       DNSTestClient.query("b.example.org", id: 3)]
        #expect(c.write(queries.flatMap(DNSTestClient.TCPConnection.framed)))
        var ids: Set<UInt16> = []
        for _ in 0..<3 {
            let reply = try #require(c.receive())
            ids.insert(Header(reply)?.id ?? 0)
        }
        #expect(ids == [1, 2, 3])
        // One message written a byte at a time.
        for byte in DNSTestClient.TCPConnection.framed(DNSTestClient.query("evil.example", id: 4)) {
            #expect(c.write([byte]))
        }
        let reply = try #require(c.receive())
        #expect(Header(reply)?.id == 4)
        #expect(Header(reply)?.rcode == Rcode.nxDomain)
    }

    @Test func idleTCPClientIsClosedAndDoesNotStallOthers() throws {
        let h = try TestHarness { $0.tcpIdleTimeout = 0.3 }
        defer { h.stop() }
        let idle = try #require(DNSTestClient.TCPConnection(to: h.address, timeout: 5))
        let slow = try #require(DNSTestClient.TCPConnection(to: h.address, timeout: 5))
        #expect(slow.write([0, 40, 0x12]))   // a message that never completes
        // Others are answered meanwhile, over both transports.
        #expect(DNSTestClient.ask("evil.example", server: h.address)?.rcode == Rcode.nxDomain)
        #expect(DNSTestClient.tcp(DNSTestClient.query("evil.example"), to: h.address) != nil)
        #expect(idle.closedByServer())
        #expect(slow.closedByServer())
    }

    /// At the cap, the connection idle the longest makes room for the new one: clients that
    /// connect and send nothing, from more addresses than the per-client cap stops, held every
    /// slot until the idle timeout. Connections with queries in flight are never closed so.
    @Test func aNewConnectionAtTheCapClosesTheLongestIdleOne() throws {
        let h = try TestHarness { $0.tcpMaxConnections = 2 }
        defer { h.stop() }
        let first = try #require(DNSTestClient.TCPConnection(to: h.address))
        let second = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(first.send(DNSTestClient.query("evil.example")))
        #expect(first.receive() != nil)
        #expect(second.send(DNSTestClient.query("evil.example")))
        #expect(second.receive() != nil)
        let third = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(third.send(DNSTestClient.query("evil.example")))
        #expect(third.receive() != nil, "the new client is answered")
        #expect(first.closedByServer(), "the longest idle made room")
        #expect(second.send(DNSTestClient.query("evil.example")))
        #expect(second.receive() != nil, "the other keeps working")
    }

    /// With every connection busy, the one whose client sent no query for the longest makes
    /// room, whatever it waits for (an abuse trial: 256 connections each holding a query for a
    /// name whose upstream never answered shut a real client out of TCP, 9 times out of 12).
    @Test func withEveryConnectionBusyTheOneQuietLongestMakesRoom() throws {
        let h = try TestHarness(records: ["slow1.example.org. 300 IN A 192.0.2.31", "slow2.example.org. 300 IN A 192.0.2.32"]) {
            $0.tcpMaxConnections = 2
        }
        defer { h.stop() }
        h.upstream.set(.held, for: "slow1.example.org")
        h.upstream.set(.held, for: "slow2.example.org")
        let first = try #require(DNSTestClient.TCPConnection(to: h.address))
        let second = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(first.send(DNSTestClient.query("slow1.example.org", id: 1)))
        #expect(h.upstream.waitForQueries(1, timeout: 5))
        #expect(second.send(DNSTestClient.query("slow2.example.org", id: 2)))
        #expect(h.upstream.waitForQueries(2, timeout: 5))   // both in flight, the first's query older
        let third = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(third.send(DNSTestClient.query("evil.example", id: 3)))
        #expect(third.receive().flatMap(Header.init)?.id == 3, "the new client is answered")
        #expect(first.closedByServer(), "the connection quiet the longest made room")
        h.upstream.release()
        #expect(second.receive().flatMap(Header.init)?.id == 2, "the other keeps its query")
    }
}

@Suite struct AccessControlTests {
    @Test func clientsOutsideTheAllowListAreRefusedAndNeverForwarded() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.access = try! AccessPolicy(allow: ["127.0.0.1/32"], deny: [])
        }
        defer { h.stop() }
        let q = DNSTestClient.query("www.example.org", id: 0x5151, edns: EDNS(udpPayloadSize: 1232))
        let allowed = try #require(DNSTestClient.udp(q, to: h.address, from: SocketAddress(address: [127, 0, 0, 1], port: 0)))
        #expect(Header(allowed)?.rcode == 0)
        let refused = try #require(DNSTestClient.udp(q, to: h.address, from: SocketAddress(address: [127, 0, 0, 2], port: 0)))
        let m = try #require(Message(wire: refused))
        #expect(m.rcode == Rcode.refused)
        #expect(m.answerCount == 0)
        #expect(m.question?.name == WireName.fromText("www.example.org"))
        #expect(refused.count <= q.count + 11, "never an amplified answer")
        // Blocked names are refused too: a stranger learns nothing, and nothing is logged.
        let blocked = DNSTestClient.udp(DNSTestClient.query("evil.example"), to: h.address, from: SocketAddress(address: [127, 0, 0, 2], port: 0))
        #expect(blocked.flatMap(Header.init)?.rcode == Rcode.refused)
        var notify = DNSTestClient.query("www.example.org", id: 0x5152)
        notify[2] = (notify[2] & 0x87) | (4 << 3)
        let refusedNotify = DNSTestClient.udp(notify, to: h.address, from: SocketAddress(address: [127, 0, 0, 2], port: 0))
        #expect(refusedNotify.flatMap(Header.init)?.rcode == Rcode.refused, "a stranger gets REFUSED, not NOTIMP")
        #expect(h.upstream.received.count == 1, "refused queries are never forwarded")
        #expect(try h.blockLogLines().isEmpty)
        #expect(h.server.chain.counters.refused == 3)
    }

    @Test func dropActionSendsNothing() throws {
        let h = try TestHarness { c in
            c.access = try! AccessPolicy(allow: ["127.0.0.1/32"], deny: [])
            c.refuseAction = .drop
        }
        defer { h.stop() }
        let q = DNSTestClient.query("www.example.org")
        #expect(DNSTestClient.udp(q, to: h.address, timeout: 0.3, from: SocketAddress(address: [127, 0, 0, 3], port: 0)) == nil)
        #expect(DNSTestClient.udp(DNSTestClient.query("evil.example"), to: h.address) != nil)
    }
}
