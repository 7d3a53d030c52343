import Dispatch
import Foundation
@testable import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

@Suite struct ForwardingTests {
    /// A graceful stop answers the UDP queries already in flight: the upstream's answer comes
    /// only once the stop has closed the listeners, and still reaches the client. (It used to
    /// wait in the listener's send batch, which nothing flushed any more, and was lost.)
    @Test func aGracefulStopStillAnswersTheUDPQueriesInFlight() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.upstreamTimeout = 5 }
        defer {
            h.upstream.stop()
            try? FileManager.default.removeItem(at: h.directory)
        }
        h.upstream.set(.held, for: "www.example.org")
        let client = try #require(DNSTestClient.UDPSocket(to: h.address, timeout: 5))
        #expect(client.send(DNSTestClient.query("www.example.org", id: 0x5107)))
        #expect(h.upstream.waitForQueries(1, timeout: 5))
        let stopped = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            h.server.stop()
            stopped.signal()
        }
        #expect(h.server.waitUntilDraining(timeout: 5))
        h.upstream.release()
        let reply = try #require(client.receive().flatMap { Message(wire: $0) }, "no answer after the stop began")
        #expect(reply.id == 0x5107 && reply.answerCount == 1)
        #expect(stopped.wait(timeout: .now() + 10) == .success)
    }

    @Test func answersAreRelayedWithClientIDAndQuestionCase() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12", "www.example.org. 300 IN A 192.0.2.13"])
        defer { h.stop() }
        let bytes = try #require(DNSTestClient.udp(DNSTestClient.query("WWW.Example.Org", id: 0xBEEF), to: h.address))
        let r = try #require(Message(wire: bytes))
        #expect(r.id == 0xBEEF)
        #expect(r.question?.name == WireName.fromText("WWW.Example.Org"))
        #expect(r.recursionAvailable)
        #expect(Set(r.records(.answer).map(\.rdata)) == [[192, 0, 2, 12], [192, 0, 2, 13]])
        #expect(r.records(.answer).first?.ttl == 300)
        #expect(h.upstream.received.count == 1)
    }

    @Test func upstreamRcodesAndDNSSECRecordsAreRelayed() throws {
        let h = try TestHarness(records: [
            "signed.example.org. 300 IN A 192.0.2.20",
            "signed.example.org. 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 12345 example.org. dGVzdHNpZ25hdHVyZQ==",
        ])
        defer { h.stop() }
        h.upstream.set(.rcode(Rcode.refused), for: "refused.example.org")
        h.upstream.set(.rcode(Rcode.servFail), for: "broken.example.org")
        #expect(DNSTestClient.ask("missing.example.org", server: h.address)?.rcode == Rcode.nxDomain)
        // A REFUSED is the upstream not taking our query (an access list): with no other
        // upstream to try, SERVFAIL, as Unbound answers (see the failover test below).
        #expect(DNSTestClient.ask("refused.example.org", server: h.address)?.rcode == Rcode.servFail)
        #expect(DNSTestClient.ask("broken.example.org", server: h.address)?.rcode == Rcode.servFail)
        let withDO = try #require(DNSTestClient.ask("signed.example.org", edns: EDNS(udpPayloadSize: 1232, dnssecOK: true), server: h.address))
        #expect(withDO.records(.answer).map(\.type).sorted() == [1, 46])
        #expect(withDO.edns?.dnssecOK == true)
        #expect(h.upstream.received(for: "signed.example.org").last?.dnssecOK == true)
    }

    /// From an upstream-failure trial: an upstream that does not know EDNS answers FORMERR to our
    /// OPT record; it is asked again without one (RFC 6891 7), as Unbound does. Its FORMERR went
    /// to the client. A REFUSED, FORMERR or NOTIMP that repeats the question (BIND's access list
    /// refuses so) moves on to the next upstream, as the header-only ones do; it was relayed,
    /// and the healthy second upstream never asked.
    @Test func noEDNSFallbackAndRefusalsFailOver() throws {
        let records = ["old.example.org. 300 IN A 192.0.2.91", "acl.example.org. 300 IN A 192.0.2.92", "ni.example.org. 300 IN A 192.0.2.93"]
        let second = try FakeUpstream(records: records)
        defer { second.stop() }
        let h = try TestHarness(records: records) { $0.upstreams.append(second.address) }
        defer { h.stop() }
        h.upstream.set(.formerrToEDNS, for: "old.example.org")
        h.upstream.set(.rcode(Rcode.refused), for: "acl.example.org")
        h.upstream.set(.rcode(Rcode.notImp), for: "ni.example.org")
        for name in ["acl.example.org", "ni.example.org"] {
            let r = try #require(DNSTestClient.ask(name, server: h.address))
            #expect(r.rcode == Rcode.noError && r.answerCount == 1, "\(name): the second upstream's answer")
            #expect(second.received(for: name).count == 1)
        }
        #expect(!h.server.chain.forwarder.health.isDown(0), "two in a row: not yet marked down")
        // Each was held against it, as the second answered; an answer of its own resets the count.
        #expect(DNSTestClient.ask("fine.example.org", server: h.address)?.rcode == Rcode.nxDomain)
        // A FORMERR with an OPT record of its own comes from a server that knows EDNS: not asked
        // again without it (RFC 6891 7), the next upstream is.
        h.upstream.set(.extendedRcode(UInt16(Rcode.formErr)), for: "ni.example.org")
        #expect(DNSTestClient.ask("ni.example.org", server: h.address)?.answerCount == 1)
        #expect(h.upstream.received(for: "ni.example.org").map(\.hadOPT) == [true, true], "one query each time, with OPT")
        #expect(second.received(for: "ni.example.org").count == 2)
        // (Last: the upstream is then known to answer without EDNS, and asked so.)
        let first = try #require(DNSTestClient.ask("old.example.org", edns: EDNS(udpPayloadSize: 1232), server: h.address))
        #expect(first.rcode == Rcode.noError && first.answerCount == 1)
        #expect(first.edns != nil, "the client's EDNS answered with sinkhole's own OPT")
        #expect(h.upstream.received(for: "old.example.org").map(\.hadOPT) == [true, false], "asked again without OPT")
        #expect(second.received(for: "old.example.org").isEmpty)
    }

    /// An upstream that answered only without EDNS is asked so from then on (for 15 minutes, as
    /// Unbound's infra cache keeps it): every name cost it two queries, the first a FORMERR.
    @Test func anUpstreamWithoutEDNSIsRememberedAsSuch() throws {
        let names = ["a.old.example.org", "b.old.example.org", "c.old.example.org"]
        let recorder = LogRecorder()
        let h = try TestHarness(records: names.enumerated().map { "\($1). 300 IN A 192.0.2.\(100 + $0)" }, logger: recorder.logger)
        defer { h.stop() }
        for name in names { h.upstream.set(.formerrToEDNS, for: name) }
        for (i, edns) in [EDNS(udpPayloadSize: 1232), nil, EDNS(udpPayloadSize: 1232, dnssecOK: true)].enumerated() {
            let r = try #require(DNSTestClient.ask(names[i], edns: edns, server: h.address))
            #expect(r.rcode == Rcode.noError && r.answerCount == 1, "\(names[i])")
            #expect((r.edns != nil) == (edns != nil), "the client's own EDNS answered in kind")
        }
        #expect(h.upstream.received(for: names[0]).map(\.hadOPT) == [true, false])
        #expect(h.upstream.received(for: names[1]).map(\.hadOPT) == [false], "known to answer without EDNS: asked so at once")
        #expect(h.upstream.received(for: names[2]).map(\.hadOPT) == [false])
        #expect(recorder.events("upstream answers only without EDNS: asked without it for 15 minutes").count == 1, "said once")
        // From a code review: a query asked plain because of the memory, answered after it
        // ran out, renewed it, so under load the upstream was never asked with EDNS again.
        let forwarder = h.server.chain.forwarder
        #expect(forwarder.asksWithoutEDNS(0))
        h.upstream.add(["late.old.example.org. 300 IN A 192.0.2.110", "next.old.example.org. 300 IN A 192.0.2.111"])
        h.upstream.set(.held, for: "late.old.example.org")
        let address = h.address
        let before = h.upstream.received.count
        let done = DispatchSemaphore(value: 0)
        let answers = Mutex(0)
        Thread.detachNewThread {
            let r = DNSTestClient.ask("late.old.example.org", edns: EDNS(udpPayloadSize: 1232), server: address)
            answers.withLock { $0 = r?.answerCount ?? -1 }
            done.signal()
        }
        #expect(h.upstream.waitForQueries(before + 1, timeout: 2))
        #expect(h.upstream.received(for: "late.old.example.org").map(\.hadOPT) == [false], "asked plain: known so")
        forwarder.expirePlainDNSMemory()
        h.upstream.release()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(answers.withLock { $0 } == 1, "answered by the upstream, after the memory ran out")
        #expect(!forwarder.asksWithoutEDNS(0), "not renewed by a query asked plain because of it")
        #expect(DNSTestClient.ask("next.old.example.org", edns: EDNS(udpPayloadSize: 1232), server: h.address)?.answerCount == 1)
        #expect(h.upstream.received(for: "next.old.example.org").map(\.hadOPT) == [true], "asked with EDNS again")
    }

    /// A FORMERR of the header alone, which needs only the ID and port to forge, gets its query
    /// asked again without EDNS but is not remembered: it switched the upstream to plain DNS
    /// for everyone for 15 minutes (a review).
    @Test func aFORMERRWithoutTheQuestionIsNotRemembered() throws {
        let h = try TestHarness(records: ["h.old.example.org. 300 IN A 192.0.2.120", "i.old.example.org. 300 IN A 192.0.2.121"])
        defer { h.stop() }
        h.upstream.set(.headerOnlyFormerrToEDNS, for: "h.old.example.org")
        #expect(DNSTestClient.ask("h.old.example.org", edns: EDNS(udpPayloadSize: 1232), server: h.address)?.answerCount == 1)
        #expect(h.upstream.received(for: "h.old.example.org").map(\.hadOPT) == [true, false], "this query asked again without OPT")
        #expect(!h.server.chain.forwarder.asksWithoutEDNS(0))
        #expect(DNSTestClient.ask("i.old.example.org", edns: EDNS(udpPayloadSize: 1232), server: h.address)?.answerCount == 1)
        #expect(h.upstream.received(for: "i.old.example.org").map(\.hadOPT) == [true], "the next asked with EDNS")
    }

    /// From an upstream-failure trial: the last upstream waits for the rest of the deadline, so
    /// a longer --upstream-deadline lets a slow upstream answer. Its answer after the 2 s timeout
    /// was dropped and SERVFAIL answered, with seconds of deadline left.
    @Test func theLastUpstreamWaitsForTheRestOfTheDeadline() throws {
        let h = try TestHarness(records: ["slow.example.org. 300 IN A 192.0.2.95"]) { c in
            c.upstreamTimeout = 0.3
            c.upstreamDeadline = 3
        }
        defer { h.stop() }
        h.upstream.set(.held, for: "slow.example.org")
        let reply = Mutex<[UInt8]?>(nil)
        let done = DispatchSemaphore(value: 0)
        let address = h.address
        Thread.detachNewThread {
            reply.withLock { $0 = DNSTestClient.udp(DNSTestClient.query("slow.example.org"), to: address, timeout: 4) }
            done.signal()
        }
        #expect(h.upstream.waitForQueries(1, timeout: 2))
        // Past the 0.3 s timeout (a bounded wait for a query that does not come), then answered.
        #expect(!h.upstream.waitForQueries(2, timeout: 0.8))
        h.upstream.release()
        #expect(done.wait(timeout: .now() + 5) == .success)
        let m = try #require(reply.withLock { $0 }.flatMap { Message(wire: $0) })
        #expect(m.rcode == Rcode.noError && m.answerCount == 1, "the slow upstream's answer, not SERVFAIL at its timeout")
    }

    @Test func upstreamIDsAreRandomAndSourcePortsKeepChanging() throws {
        // RFC 5452: a random ID per try, and source ports drawn from a pool of random ports in
        // which each socket carries at most UpstreamSockets.queriesPerSocket queries.
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"])
        defer { h.stop() }
        let total = 300
        for i in 0..<total {
            // Distinct names, so that the answer cache does not answer them.
            #expect(DNSTestClient.udp(DNSTestClient.query("n\(i).www.example.org", id: 7), to: h.address) != nil)
        }
        let seen = h.upstream.received
        #expect(seen.count == total)
        #expect(Set(seen.map(\.id)).count >= total - 10, "IDs are random, not the client's")
        let perPort = Dictionary(grouping: seen, by: \.sourcePort).mapValues(\.count)
        #expect(perPort.count >= 20, "queries spread over many ports: \(perPort.count)")
        #expect(perPort.values.allSatisfy { $0 <= 64 }, "no port carries more than 64 queries: \(perPort.values.max() ?? 0)")
        #expect(seen.allSatisfy { $0.hadOPT })
    }

    @Test func spoofedRepliesAreIgnored() throws {
        let h = try TestHarness(records: ["target.example.org. 300 IN A 192.0.2.30"])
        defer { h.stop() }
        h.upstream.set(.spoofFirst(spoofAddress: "203.0.113.66"), for: "target.example.org")
        let r = try #require(DNSTestClient.ask("target.example.org", server: h.address))
        #expect(r.records(.answer).map(\.rdata) == [[192, 0, 2, 30]])
    }

    @Test func truncatedUpstreamReplyIsRetriedOverTCP() throws {
        let h = try TestHarness(records: ["tc.example.org. 300 IN A 192.0.2.40"])
        defer { h.stop() }
        h.upstream.set(.truncateUDP, for: "tc.example.org")
        let r = try #require(DNSTestClient.ask("tc.example.org", server: h.address))
        #expect(!r.truncated)
        #expect(r.records(.answer).map(\.rdata) == [[192, 0, 2, 40]])
        #expect(h.upstream.received(for: "tc.example.org").map(\.transport) == [.udp, .tcp])
    }

    @Test func largeAnswerIsTruncatedForUDPClientAndWholeOverTCP() throws {
        let txt = (0..<6).map { "big.example.org. 300 IN TXT \"\(String(repeating: "y", count: 200))\($0)\"" }
        let h = try TestHarness(records: txt)
        defer { h.stop() }
        let udp = try #require(DNSTestClient.ask("big.example.org", type: 16, server: h.address))
        #expect(udp.truncated)
        #expect(udp.answerCount == 0)
        // About 1,300 bytes: over sinkhole's own 1,232 (--edns-buffer-size), so a client that
        // advertises 4,096 or 65,535 still gets TC=1 over UDP: the smaller size rules.
        for advertised: UInt16 in [4096, 65_535] {
            let capped = try #require(DNSTestClient.ask("big.example.org", type: 16, edns: EDNS(udpPayloadSize: advertised), server: h.address))
            #expect(capped.truncated && capped.answerCount == 0, "\(advertised)")
        }
        let roomy = try TestHarness(records: txt) { $0.ednsPayloadSize = 4096 }
        defer { roomy.stop() }
        let bigEDNS = try #require(DNSTestClient.ask("big.example.org", type: 16, edns: EDNS(udpPayloadSize: 4096), server: roomy.address))
        #expect(!bigEDNS.truncated && bigEDNS.answerCount == 6)
        let tcp = try #require(DNSTestClient.tcp(DNSTestClient.query("big.example.org", type: 16), to: h.address).flatMap { Message(wire: $0) })
        #expect(!tcp.truncated)
        #expect(tcp.answerCount == 6)
    }

    @Test func silentUpstreamMovesToTheNextThenSERVFAIL() throws {
        let silent = try FakeUpstream()
        defer { silent.stop() }
        silent.set(.silent, for: "www.example.org")
        silent.set(.silent, for: "gone.example.org")
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.upstreams = [silent.address, c.upstreams[0]]
            c.upstreamTimeout = 0.2
        }
        defer { h.stop() }
        let r = try #require(DNSTestClient.ask("www.example.org", server: h.address))
        #expect(r.records(.answer).map(\.rdata) == [[192, 0, 2, 12]])
        #expect(silent.received(for: "www.example.org").count == 1)

        h.upstream.set(.silent, for: "gone.example.org")
        let failed = try #require(DNSTestClient.ask("gone.example.org", server: h.address))
        #expect(failed.rcode == Rcode.servFail)
        #expect(failed.question?.name == WireName.fromText("gone.example.org"))
    }
}
