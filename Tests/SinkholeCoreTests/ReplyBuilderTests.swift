import Foundation
import SinkholeTestSupport
import Testing
@testable import SinkholeCore

@Suite struct ReplyBuilderTests {
    let builder = ReplyBuilder(payloadSize: 1232)
    let client = SocketAddress(address: [127, 0, 0, 1], port: 5353)

    func query(_ name: String, type: UInt16 = RRType.a, edns: EDNS? = nil, transport: Transport = .udp,
               id: UInt16 = 0x4242) -> Query {
        let bytes = DNSTestClient.query(name, type: type, id: id, edns: edns)
        let m = Message(wire: bytes)!
        return Query(header: Header(bytes)!, question: m.question!, edns: m.edns, client: client, transport: transport)
    }

    func match(_ zone: String) -> RuleMatch {
        RuleMatch(rule: zone, list: "test.txt", line: 1, zone: WireName.fromText(zone)!)
    }

    func decode(_ bytes: [UInt8]) -> Message { Message(wire: bytes)! }

    @Test func nxdomainBlockHasSOAAndCopiesHeaderAndQuestion() {
        let q = query("A.Evil.Example")
        let answer = BlockPolicy(mode: .nxdomain, ttl: 60).answer(for: q.question, match: match("evil.example"))
        let r = decode(builder.reply(to: q, .blocked(answer)))
        #expect(r.id == 0x4242)
        #expect(r.isResponse && r.recursionAvailable && r.recursionDesired)
        #expect(r.rcode == Rcode.nxDomain)
        #expect(r.question?.name == WireName.fromText("A.Evil.Example"))
        #expect(r.answerCount == 0)
        let soa = r.records(.authority)
        #expect(soa.count == 1)
        #expect(soa.first?.type == RRType.soa)
        #expect(soa.first?.ttl == 60)
        #expect(WireName.equalIgnoringCase(soa.first?.owner ?? [], WireName.fromText("evil.example")!))
        #expect(Array(soa.first?.rdata.suffix(4) ?? []) == [0, 0, 0, 60], "SOA minimum is the block TTL")
        #expect(r.edns == nil, "no OPT in, none out")
    }

    @Test func sinkholeModeAnswersAAndAAAAAndNodataOtherwise() {
        let policy = BlockPolicy(mode: .sinkhole, sinkholeIPv4: [192, 0, 2, 1],
                                 sinkholeIPv6: IPAddress.parse("2001:db8::1")!, ttl: 30)
        let a = query("evil.example", type: RRType.a)
        let ra = decode(builder.reply(to: a, .blocked(policy.answer(for: a.question, match: match("evil.example")))))
        #expect(ra.rcode == 0)
        #expect(ra.records(.answer).map(\.rdata) == [[192, 0, 2, 1]])
        #expect(ra.records(.answer).first?.ttl == 30)

        let aaaa = query("x.evil.example", type: RRType.aaaa)
        let raaaa = decode(builder.reply(to: aaaa, .blocked(policy.answer(for: aaaa.question, match: match("evil.example")))))
        #expect(raaaa.records(.answer).map(\.rdata) == [IPAddress.parse("2001:db8::1")!])
        #expect(raaaa.records(.answer).first?.owner == WireName.fromText("x.evil.example"))

        for type: UInt16 in [16, 15, 255, 65, 65280] {
            let q = query("evil.example", type: type)
            let answer = policy.answer(for: q.question, match: match("evil.example"))
            #expect(answer.action == .nodata)
            let r = decode(builder.reply(to: q, .blocked(answer)))
            #expect(r.rcode == 0)
            #expect(r.answerCount == 0)
            #expect(r.records(.authority).first?.type == RRType.soa)
        }
    }

    @Test func ednsQueryGetsExactlyOneOPTWithOurSizeAndItsDOBit() {
        let q = query("evil.example", edns: EDNS(udpPayloadSize: 4096, dnssecOK: true))
        let answer = BlockPolicy(mode: .nxdomain).answer(for: q.question, match: match("evil.example"))
        let bytes = builder.reply(to: q, .blocked(answer))
        let r = decode(bytes)
        #expect(r.edns == EDNS(udpPayloadSize: 1232, version: 0, extendedRcode: 0, dnssecOK: true))
        #expect(Header(bytes)?.arcount == 1)
    }

    @Test func blockAnswersCarryExtendedDNSErrorWhenTheClientSentEDNS() {
        let q = query("evil.example", edns: EDNS(udpPayloadSize: 1232))
        let answer = BlockPolicy(mode: .nxdomain).answer(for: q.question, match: RuleMatch(
            rule: "evil.example", list: "intel.txt", line: 3, zone: WireName.fromText("evil.example")!))
        let r = decode(builder.reply(to: q, .blocked(answer)))
        let text = Array("blocked by intel.txt: evil.example".utf8)
        #expect(r.ednsOptions == [0, 15, 0, UInt8(2 + text.count), 0, 15] + text, "INFO-CODE 15 Blocked")

        var filtered = answer
        filtered.match.responseBased = true
        let rf = decode(builder.reply(to: q, .blocked(filtered)))
        #expect(Array(rf.ednsOptions.prefix(6)) == [0, 15, 0, UInt8(2 + text.count), 0, 17], "INFO-CODE 17 Filtered")

        let plain = query("evil.example")
        let rp = decode(builder.reply(to: plain, .blocked(answer)))
        #expect(rp.edns == nil && rp.ednsOptions.isEmpty, "no OPT, no EDE without EDNS")
    }

    @Test func badVersionAnswersWithExtendedRcodeAndVersionZero() {
        let q = query("example.org", edns: EDNS(udpPayloadSize: 1232, version: 1))
        let bytes = builder.reply(to: q, .badVersion)
        let r = decode(bytes)
        #expect(r.rcode == 0)
        #expect(r.edns?.extendedRcode == 1, "BADVERS = 16 = extended 1, header 0")
        #expect(r.edns?.version == 0)
        #expect(r.question?.name == WireName.fromText("example.org"))
    }

    func bigUpstreamReply(for q: Query, records: Int) -> Message {
        let m = Message.empty()!
        m.id = 999
        m.isResponse = true
        m.setQuestion(q.question)
        for i in 0..<records {
            m.append(.answer, presentation: "big.example. 300 IN TXT \"\(String(repeating: "x", count: 200))\(i)\"")
        }
        return m
    }

    @Test func udpReplyOverTheClientLimitIsTruncated() {
        // No EDNS: 512 bytes.
        let q = query("big.example", type: 16)
        let bytes = builder.reply(to: q, .upstream(UpstreamAnswer(message: bigUpstreamReply(for: q, records: 4))!, from: client))
        #expect(bytes.count <= 512)
        let r = decode(bytes)
        #expect(r.truncated)
        #expect(r.answerCount == 0)
        #expect(r.question?.name == WireName.fromText("big.example"))

        // EDNS 4096 takes it whole; EDNS 100 means 512.
        let q2 = query("big.example", type: 16, edns: EDNS(udpPayloadSize: 4096))
        let r2 = decode(builder.reply(to: q2, .upstream(UpstreamAnswer(message: bigUpstreamReply(for: q2, records: 4))!, from: client)))
        #expect(!r2.truncated && r2.answerCount == 4)
        let q3 = query("big.example", type: 16, edns: EDNS(udpPayloadSize: 100))
        let r3 = decode(builder.reply(to: q3, .upstream(UpstreamAnswer(message: bigUpstreamReply(for: q3, records: 4))!, from: client)))
        #expect(r3.truncated)
        #expect(r3.edns?.udpPayloadSize == 1232)

        // TCP always whole.
        let q4 = query("big.example", type: 16, transport: .tcp)
        let r4 = decode(builder.reply(to: q4, .upstream(UpstreamAnswer(message: bigUpstreamReply(for: q4, records: 20))!, from: client)))
        #expect(!r4.truncated && r4.answerCount == 20)
    }

    @Test func relayRestoresIDAndQuestionCaseAndDropsUpstreamOPTWhenClientHadNone() {
        let q = query("WwW.Example.ORG")
        let upstream = Message.empty()!
        upstream.id = 7
        upstream.isResponse = true
        upstream.authoritative = true
        upstream.rcode = Rcode.nxDomain
        upstream.setQuestion(Question(name: WireName.fromText("www.example.org")!, type: 1, qclass: 1))
        upstream.append(.authority, presentation: "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 5")
        upstream.edns = EDNS(udpPayloadSize: 4096, dnssecOK: true)
        let r = decode(builder.reply(to: q, .upstream(UpstreamAnswer(message: upstream)!, from: client)))
        #expect(r.id == 0x4242)
        #expect(r.question?.name == WireName.fromText("WwW.Example.ORG"))
        #expect(r.rcode == Rcode.nxDomain)
        #expect(!r.authoritative, "a relayed answer is not ours: AA clear")
        #expect(r.authorityCount == 1)
        #expect(r.edns == nil)
    }

    @Test func failureReplyCarriesQuestionAndRcode() {
        let q = query("example.org", edns: EDNS(udpPayloadSize: 1232))
        let r = decode(builder.reply(to: q, .failure(rcode: Rcode.servFail, reason: "test")))
        #expect(r.rcode == Rcode.servFail)
        #expect(r.question != nil)
        #expect(r.edns?.udpPayloadSize == 1232)
    }
}
