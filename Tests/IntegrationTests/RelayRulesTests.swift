import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// The header rules of a relayed or cached answer, the cache's separation of what a validating
/// upstream answers with checking disabled, error replies without a question, and truncation.
@Suite struct RelayRulesTests {
    /// A UDP query with CD and AD as given, answered and decoded.
    static func ask(_ h: TestHarness, _ name: String, type: UInt16 = RRType.a, cd: Bool = false, ad: Bool = false,
                    edns: EDNS? = nil) throws -> Message {
        var query = DNSTestClient.query(name, type: type, edns: edns)
        if cd { query[3] |= 0x10 }
        if ad { query[3] |= 0x20 }
        return try #require(DNSTestClient.udp(query, to: h.address).flatMap { Message(wire: $0) }, "\(name) answered")
    }

    @Test(arguments: [true, false])
    func anAnswerGivenWithCheckingDisabledIsNeverServedToAClientThatWantsValidation(fastPath: Bool) throws {
        let h = try TestHarness(records: ["bogus.example.org. 300 IN A 192.0.2.66"]) {
            $0.cacheBytes = 1 << 20
            $0.fastPath = fastPath
        }
        defer { h.stop() }
        h.upstream.set(.bogusUnlessCD, for: "bogus.example.org")
        let unchecked = try Self.ask(h, "bogus.example.org", cd: true)
        #expect(unchecked.rcode == Rcode.noError && unchecked.checkingDisabled)
        #expect(unchecked.records(.answer).map(\.rdata) == [[192, 0, 2, 66]])
        #expect(h.upstream.received.last?.checkingDisabled == true, "CD is passed upstream")
        // RFC 4035 3.2.2: with CD clear, data that failed validation is SERVFAIL, not the
        // answer cached for the CD=1 client.
        let checked = try Self.ask(h, "bogus.example.org")
        #expect(checked.rcode == Rcode.servFail)
        #expect(!checked.checkingDisabled)
        #expect(h.upstream.received.count == 2, "the CD=0 question went upstream")
        // The unchecked answer is still cached for CD=1 clients.
        let again = try Self.ask(h, "bogus.example.org", cd: true)
        #expect(again.rcode == Rcode.noError && again.answerCount == 1 && again.checkingDisabled)
        #expect(h.upstream.received.count == 2, "served from the cache")
    }

    @Test(arguments: [true, false])
    func relayedAndCachedAnswersAreNotAuthoritativeAndTakeCDAndADFromTheClient(fastPath: Bool) throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.1"]) {
            $0.cacheBytes = 1 << 20
            $0.fastPath = fastPath
        }
        defer { h.stop() }
        // An authoritative upstream that also claims AD.
        h.upstream.set(.answerExtra(setFlags: 0x0400 | 0x0020, authority: [], additional: []), for: "www.example.org")
        for round in ["forwarded", "cached"] {
            let plain = try Self.ask(h, "www.example.org")
            #expect(plain.answerCount == 1, "\(round)")
            #expect(!plain.authoritative, "\(round): relayed data is not authoritative")
            #expect(!plain.authenticData, "\(round): AD only for a client that asks with AD or DO")
            #expect(!plain.checkingDisabled, "\(round)")
        }
        #expect(h.upstream.received.count == 1)
        #expect(h.upstream.received.first?.authenticData == true, "AD is always asked of the upstream")
        #expect(try Self.ask(h, "www.example.org", ad: true).authenticData, "AD=1 in the query, served from the cache")
        #expect(h.upstream.received.count == 1)
        #expect(try Self.ask(h, "www.example.org", edns: EDNS(udpPayloadSize: 1232, dnssecOK: true)).authenticData, "DO=1")
        // The upstream's replies never set CD: the client's bit is the one in the reply.
        let cd = try Self.ask(h, "www.example.org", cd: true)
        #expect(cd.checkingDisabled && !cd.authoritative)
    }

    /// An error reply of the header alone (no question) moves on to the next upstream at once
    /// (not a try that timed out after 1 s). It is not held against the upstream when no other
    /// upstream answers the question either; when another does, it is, as a SERVFAIL is, and
    /// three in a row mark it down (a REFUSED upstream was asked first for good).
    @Test func anErrorReplyWithoutTheQuestionMovesOnAndCountsOnlyWhenAnotherAnswers() throws {
        let second = try FakeUpstream(records: ["refused.example.org. 300 IN A 192.0.2.70"])
        defer { second.stop() }
        let h = try TestHarness() { $0.upstreams.append(second.address) }
        defer { h.stop() }
        h.upstream.set(.headerOnly(Rcode.refused), for: "refused.example.org")
        h.upstream.set(.headerOnly(Rcode.formErr), for: "formerr.example.org")
        second.set(.headerOnly(Rcode.notImp), for: "formerr.example.org")
        for _ in 0..<4 {
            // No upstream takes it: SERVFAIL, not the FORMERR that would blame the client's query.
            #expect(try Self.ask(h, "formerr.example.org").rcode == Rcode.servFail)
        }
        #expect(!h.server.chain.forwarder.health.isDown(0), "no upstream answered: held against none")
        // A FORMERR is first taken for an upstream without EDNS: asked again without OPT.
        #expect(h.upstream.received(for: "formerr.example.org").map(\.hadOPT) == [true, false, true, false, true, false, true, false])
        for round in 0..<UpstreamHealth.downAfter {
            let refused = try Self.ask(h, "refused.example.org")
            #expect(refused.rcode == Rcode.noError && refused.answerCount == 1, "the next upstream's answer")
            #expect(refused.question?.name == WireName.fromText("refused.example.org"), "the question as asked")
            #expect(h.server.chain.forwarder.health.isDown(0) == (round == UpstreamHealth.downAfter - 1))
        }
        #expect(h.upstream.received.count == 11)
        #expect(second.received.count == 7)
        let text = h.server.metrics.exposition()
        #expect(text.contains(#"sinkhole_upstream_errors_total{upstream="\#(h.upstream.address)",reason="bad_reply"} 7"#), "\(text)")
    }

    /// The OPT record is hop-by-hop (RFC 6891 6.1.1): an extended rcode in the upstream's
    /// (BADCOOKIE, BADVERS) speaks of sinkhole's query, not the client's. It was passed on: a
    /// client without EDNS saw BADCOOKIE's low bits as YXRRSET, and BADVERS as an empty NOERROR.
    /// A client's RD=0 is not passed on: the upstream would answer from its own cache only (a
    /// CNAME without its target, a referral), and that answer is cached for every client. The
    /// client's reply keeps its RD=0. Both paths.
    @Test(arguments: [true, false])
    func upstreamQueriesAlwaysAskForRecursion(fastPath: Bool) throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.fastPath = fastPath }
        defer { h.stop() }
        let bytes = try #require(DNSTestClient.udp(DNSTestClient.query("www.example.org", rd: false), to: h.address))
        let reply = try #require(Message(wire: bytes))
        #expect(!reply.recursionDesired && reply.answerCount == 1)
        #expect(h.upstream.received.map(\.recursionDesired) == [true])
    }

    @Test func anExtendedRcodeFromTheUpstreamIsNotRelayed() throws {
        let second = try FakeUpstream(records: ["cookie.example.org. 300 IN A 192.0.2.71"])
        defer { second.stop() }
        let h = try TestHarness(records: ["cookie.example.org. 300 IN A 192.0.2.71"]) { $0.upstreams.append(second.address) }
        defer { h.stop() }
        h.upstream.set(.extendedRcode(23), for: "cookie.example.org")    // BADCOOKIE
        h.upstream.set(.extendedRcode(16), for: "vers.example.org")      // BADVERS
        second.set(.extendedRcode(16), for: "vers.example.org")
        for edns in [nil, EDNS(udpPayloadSize: 1232)] {
            let moved = try #require(DNSTestClient.ask("cookie.example.org", edns: edns, server: h.address))
            #expect(moved.rcode == Rcode.noError && moved.answerCount == 1, "the next upstream's answer")
            #expect((moved.edns?.extendedRcode ?? 0) == 0)
            let none = try #require(DNSTestClient.ask("vers.example.org", edns: edns, server: h.address))
            #expect(none.rcode == Rcode.servFail && (none.edns?.extendedRcode ?? 0) == 0)
        }
        #expect(!h.server.chain.forwarder.health.isDown(0), "not held against the upstream's health")
    }

    /// From a DNSSEC trial: a validating upstream's SERVFAIL for bogus data (EDE 6-12) is its
    /// verdict, not its failure. Three queries for a bogus domain marked every validating
    /// upstream down, each was asked in turn, --serve-stale then served the old data as
    /// authentic, and the EDE that says why was dropped, so the failure looked like an outage.
    @Test(arguments: [true, false])
    func aValidatingUpstreamsBogusVerdictIsRelayedWithItsReason(fastPath: Bool) throws {
        let second = try FakeUpstream(records: [])
        defer { second.stop() }
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12", "v.example.org. 1 IN A 192.0.2.13"]) { c in
            c.upstreams.append(second.address)
            c.cacheBytes = 1 << 20
            c.serveStale = true
            c.fastPath = fastPath
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("v.example.org", server: h.address)?.answerCount == 1)
        for i in 0..<4 { h.upstream.set(.servfailWithEDE(6, text: "signature crypto failed"), for: "x\(i).bogus.example") }
        h.upstream.set(.servfailWithEDE(7, text: "expired"), for: "v.example.org")
        for i in 0..<4 {
            let r = try #require(DNSTestClient.ask("x\(i).bogus.example", edns: EDNS(udpPayloadSize: 1232), server: h.address))
            #expect(r.rcode == Rcode.servFail)
            #expect(r.ednsOptions == [0, 15, 0, 25, 0, 6] + Array("signature crypto failed".utf8), "the upstream's EDE relayed")
        }
        let plain = try #require(DNSTestClient.ask("x0.bogus.example", server: h.address))
        #expect(plain.rcode == Rcode.servFail && plain.edns == nil, "no OPT for a client without EDNS")
        #expect(second.received.isEmpty, "a verdict: the other upstream is not asked")
        #expect(!h.server.chain.forwarder.health.isDown(0), "not held against the upstream's health")
        // No stale answer over the verdict: the upstream has just found the data forged.
        var reply: Message?
        let deadline = Date().addingTimeInterval(6)
        while Date() < deadline, h.upstream.received(for: "v.example.org").count < 2 {
            reply = DNSTestClient.ask("v.example.org", server: h.address)
            _ = h.upstream.waitForQueries(h.upstream.received.count + 1, timeout: 0.2)
        }
        #expect(h.upstream.received(for: "v.example.org").count == 2, "expired and asked again")
        if reply?.rcode != Rcode.servFail { reply = DNSTestClient.ask("v.example.org", server: h.address) }
        #expect(reply?.rcode == Rcode.servFail && reply?.answerCount == 0)
        // Nor after it, when the upstream then fails (a DNSSEC trial found the bogus data served
        // stale with AD once the upstream went silent): the verdict dropped the kept answer.
        h.upstream.set(.rcode(Rcode.servFail), for: "v.example.org")
        second.set(.rcode(Rcode.servFail), for: "v.example.org")
        let after = try #require(DNSTestClient.ask("v.example.org", server: h.address))
        #expect(after.rcode == Rcode.servFail && after.answerCount == 0, "no stale answer over the verdict")
    }

    /// From an upstream-failure trial: a reply of another opcode (STATUS) was relayed and cached,
    /// and an OPT record in the answer section relayed there; clients refused both. Both are
    /// broken replies now: the next upstream answers.
    @Test func repliesOfAnotherOpcodeOrWithOPTInTheAnswerAreNotRelayed() throws {
        let records = ["status.example.org. 300 IN A 192.0.2.81", "opt.example.org. 300 IN A 192.0.2.82"]
        let second = try FakeUpstream(records: records)
        defer { second.stop() }
        let h = try TestHarness(records: records) { $0.upstreams.append(second.address) }
        defer { h.stop() }
        h.upstream.set(.answerExtra(setFlags: 2 << 11, authority: [], additional: []), for: "status.example.org")
        h.upstream.set(.optInAnswer, for: "opt.example.org")
        for name in ["status.example.org", "opt.example.org"] {
            let r = try #require(DNSTestClient.udp(DNSTestClient.query(name), to: h.address, timeout: 4))
            #expect(r[2] & 0x78 == 0, "\(name): opcode QUERY")
            let m = try #require(Message(wire: r), "\(name): a message clients can read")
            #expect(m.rcode == Rcode.noError && m.records(.answer).map(\.type) == [RRType.a], "\(name): the next upstream's answer")
            #expect(second.received(for: name).count == 1)
        }
    }

    @Test(arguments: [true, false])
    func extraRecordsAreDroppedBeforeAnAnswerIsTruncated(fastPath: Bool) throws {
        let addresses = (1...20).map { "big.example.org. 300 IN A 192.0.2.\($0)" }
        let wildcard = (1...20).map { "wild.example.org. 300 IN A 192.0.2.\($0)" }
        let h = try TestHarness(records: addresses + wildcard) { $0.fastPath = fastPath }
        defer { h.stop() }
        let servers = (1...12).map { "example.org. 300 IN NS ns\($0).a-rather-long-name-server-host.example.net." }
        let glue = (1...12).map { "ns\($0).a-rather-long-name-server-host.example.net. 300 IN A 198.51.100.\($0)" }
        h.upstream.set(.answerExtra(setFlags: 0, authority: servers, additional: glue), for: "big.example.org")
        let moreGlue = (1...40).map { "ns\($0).a-rather-long-name-server-host.example.net. 300 IN A 198.51.100.\($0)" }
        h.upstream.set(.answerExtra(setFlags: 0, authority: ["example.org. 300 IN SOA ns1.example.org. h.example.org. 1 2 3 4 300"],
                                    additional: moreGlue), for: "missing.example.org")
        // No EDNS: 512 bytes. The 20 addresses fit (about 350 bytes); with the NS records and
        // glue the reply is over 1,300. RFC 2181 9: TC only when the answer itself does not fit.
        let big = try Self.ask(h, "big.example.org")
        #expect(!big.truncated)
        #expect(big.answerCount == 20)
        #expect(big.additionalCount == 0)
        let full = try #require(DNSTestClient.tcp(DNSTestClient.query("big.example.org"), to: h.address).flatMap { Message(wire: $0) })
        #expect(full.answerCount == 20 && full.authorityCount == 12 && full.additionalCount == 12, "TCP: every section")
        // A wildcard answer's NSEC proof is part of it (RFC 4035 3.1.3.3): truncated, not cut.
        h.upstream.set(.answerExtra(setFlags: 0, authority: servers + ["*.example.org. 300 IN NSEC z.example.org. A RRSIG NSEC"],
                                    additional: glue), for: "wild.example.org")
        let wild = try Self.ask(h, "wild.example.org")
        #expect(wild.truncated && wild.answerCount == 0)
        // A negative answer keeps its SOA (what a cache needs to cache it) and loses the 40
        // glue records (about 850 bytes).
        let missing = try Self.ask(h, "missing.example.org")
        #expect(missing.rcode == Rcode.nxDomain && !missing.truncated)
        #expect(missing.records(.authority).map(\.type) == [RRType.soa])
        #expect(missing.additionalCount == 0)
    }

    @Test func anUnreadableReplyFailsTheTryAsABadReplyNotATimeout() throws {
        let h = try TestHarness()
        defer { h.stop() }
        h.upstream.set(.garbage, for: "garbled.example.org")
        let r = try Self.ask(h, "garbled.example.org")
        #expect(r.rcode == Rcode.servFail)
        let text = h.server.metrics.exposition()
        let upstream = h.upstream.address.description
        #expect(text.contains(#"sinkhole_upstream_errors_total{upstream="\#(upstream)",reason="bad_reply"} 1"#), "\(text)")
        #expect(!text.contains(#"sinkhole_upstream_errors_total{upstream="\#(upstream)",reason="timeout"} 1"#), "\(text)")
    }
}

/// Questions sinkhole answers itself rather than pass on: meta types, a compressed question
/// name, and CHAOS-class server identification.
@Suite struct QuestionRulesTests {
    @Test(arguments: [true, false])
    func metaTypesAndACompressedQuestionNameAreFormatErrorsAndChaosIsRefused(fastPath: Bool) throws {
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"]) { $0.fastPath = fastPath }
        defer { h.stop() }
        for type: UInt16 in [41, 128, 200, 249, 250, 253, 254] {
            let r = try #require(DNSTestClient.ask("www.example.org", type: type, server: h.address))
            #expect(r.rcode == Rcode.formErr, "type \(type)")
            #expect(r.question?.type == type, "the question is echoed")
        }
        // A pointer in the question's name: to the header (offset 4), then to its own start.
        for pointer: [UInt8] in [[0xC0, 0x04], [0x03, 0x77, 0x77, 0x77, 0xC0, 0x0C]] {
            let packet: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0] + pointer + [0, 1, 0, 1]
            let reply = try #require(DNSTestClient.udp(packet, to: h.address))
            #expect(reply.count >= 12 && reply[3] & 0x0F == Rcode.formErr, "\(pointer)")
        }
        let version = try #require(DNSTestClient.udp(DNSTestClient.query("version.bind", type: 16, qclass: RRType.classCH), to: h.address)
            .flatMap { Message(wire: $0) })
        #expect(version.rcode == Rcode.refused)
        #expect(version.question?.qclass == RRType.classCH)
        // A listed name is blocked in any class, CHAOS too.
        let listed = try #require(DNSTestClient.udp(DNSTestClient.query("evil.example", type: 16, qclass: RRType.classCH), to: h.address)
            .flatMap { Message(wire: $0) })
        #expect(listed.rcode == Rcode.nxDomain)
        #expect(h.upstream.received.isEmpty, "none of these went upstream")
    }

    /// From a protocol trial: zone transfers are refused, as Unbound refuses them. An AXFR drew
    /// SERVFAIL after two upstream tries; an IXFR lost its SOA on the way upstream and its reply
    /// was cached for every serial.
    @Test func zoneTransfersAreRefused() throws {
        let h = try TestHarness(records: ["example.org. 300 IN A 192.0.2.1"])
        defer { h.stop() }
        var ixfr = DNSTestClient.query("example.org", type: RRType.ixfr)
        ixfr[9] = 1   // NSCOUNT 1: the client's SOA (RFC 1995 3)
        ixfr += [0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0] + [UInt8](repeating: 0, count: 19) + [7]
        for packet in [DNSTestClient.query("example.org", type: RRType.axfr), ixfr] {
            for reply in [DNSTestClient.udp(packet, to: h.address), DNSTestClient.tcp(packet, to: h.address)] {
                let m = try #require(reply.flatMap { Message(wire: $0) })
                #expect(m.rcode == Rcode.refused && m.answerCount == 0)
                #expect(m.question?.type == (packet.count > 40 ? RRType.ixfr : RRType.axfr))
            }
        }
        #expect(h.upstream.received.isEmpty, "nothing went upstream")
    }
}
