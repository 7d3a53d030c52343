@testable import SinkholeCore
import Testing

/// The reader of upstream replies (`CachedReply`, `UpstreamAnswer`): what the cache, the
/// forwarder and response inspection use instead of an ldns decode. Each case is checked
/// against what ldns reads from the same bytes.
@Suite struct UpstreamAnswerTests {
    let question: [UInt8] = [3] + Array("www".utf8) + [7] + Array("example".utf8) + [3] + Array("org".utf8) + [0, 0, 1, 0, 1]

    func header(rcode: UInt8 = 0, an: UInt8, ns: UInt8 = 0, ar: UInt8 = 0, tc: Bool = false) -> [UInt8] {
        [0x12, 0x34, 0x81 | (tc ? 0x02 : 0), 0x80 | rcode, 0, 1, 0, an, 0, ns, 0, ar]
    }

    /// The facts and targets ldns reads from the same bytes.
    func ldnsReading(_ wire: [UInt8]) throws -> (ReplyFacts, [[UInt8]], [[UInt8]]) {
        let m = try #require(Message(wire: wire))
        let answer = m.records(.answer)
        return (ReplyFacts(m), answer.filter { $0.type == RRType.cname || $0.type == RRType.dname }.map(\.rdata),
                answer.filter { $0.type == RRType.a || $0.type == RRType.aaaa }.map(\.rdata))
    }

    /// A stale answer's EDE 3 joins the upstream's OPT record, or comes in one of its own when
    /// the upstream sent none (one asked without EDNS); ldns reads both as the reader does.
    @Test func staleAnswerEDEIsAddedWithOrWithoutAnOPTRecord() throws {
        let record: [UInt8] = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        let bare = header(an: 1) + question + record
        let withEDE6 = header(an: 1, ar: 1) + question + record + [0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 6]
        for (wire, expected) in [(bare, ExtendedErrors.staleAnswer), (withEDE6, [0, 15, 0, 2, 0, 6] + ExtendedErrors.staleAnswer)] {
            let prepared = try #require(CachedReply(wire))
            let stale = ExtendedErrors.adding(ExtendedErrors.staleAnswer, to: wire, opt: prepared.opt)
            let laidOut = try #require(CachedReply(stale))
            #expect(laidOut.extendedErrors == expected)
            #expect(laidOut.answerAddresses == [[192, 0, 2, 1]])
            let m = try #require(Message(wire: stale))
            #expect(m.ednsOptions == expected && m.records(.answer).count == 1)
        }
    }

    /// Options set after the message's options were read are the ones written: ldns kept the
    /// list the read parsed and wrote it instead (a review: a stale answer on the ldns path lost
    /// its EDE 3).
    @Test func optionsSetAfterAReadAreTheOnesWritten() throws {
        let record: [UInt8] = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        let wire = header(an: 1, ar: 1) + question + record + [0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 6]
        let m = try #require(Message(wire: wire))
        #expect(m.ednsOptions == [0, 15, 0, 2, 0, 6])
        m.setEDNSOptions([0, 15, 0, 2, 0, 6] + ExtendedErrors.staleAnswer)
        let written = try #require(m.wire().flatMap { Message(wire: $0) })
        #expect(written.ednsOptions == [0, 15, 0, 2, 0, 6] + ExtendedErrors.staleAnswer)
    }

    @Test func compressedCNAMETargetIsExpandedAsLdnsReadsIt() throws {
        // www.example.org CNAME cdn.<pointer to example.org>; cdn.example.org A 192.0.2.1.
        var wire = header(an: 2) + question
        let rdataStart = wire.count + 12
        wire += [0xC0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, 6, 3] + Array("cdn".utf8) + [0xC0, 16]
        wire += [0xC0, UInt8(rdataStart), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        let prepared = try #require(CachedReply(wire))
        #expect(prepared.aliasTargets == [WireName.fromText("cdn.example.org")!])
        #expect(prepared.answerAddresses == [[192, 0, 2, 1]])
        #expect(prepared.facts == ReplyFacts(rcode: 0, truncated: false, answerCount: 2, lowestTTL: 60, soa: nil))
        let (facts, aliases, addresses) = try ldnsReading(wire)
        #expect(prepared.facts == facts && prepared.aliasTargets == aliases && prepared.answerAddresses == addresses)
    }

    /// An additional record shorter-lived than the answer bounds how long the answer is kept
    /// (it was served counted down to TTL 0 and kept so); the OPT record's TTL field (extended
    /// rcode and flags) does not count.
    @Test func additionalRecordsBoundTheTTLButOPTDoesNot() throws {
        var wire = header(an: 1, ar: 2) + question
        wire += [0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]          // www A, TTL 300
        wire += [0xC0, 16, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 192, 0, 2, 2]           // example.org A, TTL 5
        wire += [0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 0]                         // OPT, DO (TTL field 32768)
        let prepared = try #require(CachedReply(wire))
        #expect(prepared.facts.lowestTTL == 5)
        #expect(try ldnsReading(wire).0 == prepared.facts)
        #expect(AnswerCache(budgetBytes: 1 << 20).ttl(of: prepared.facts) == 5)
        // Without the additional address, the OPT record alone leaves the answer's 300.
        let bare = header(an: 1, ar: 1) + question + [0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]
            + [0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 0]
        #expect(try #require(CachedReply(bare)).facts.lowestTTL == 300)
        #expect(try ldnsReading(bare).0.lowestTTL == 300)
    }

    @Test func negativeAnswerCarriesTheSOAFields() throws {
        // NXDOMAIN; authority: example.org SOA (TTL 900, MINIMUM 120).
        var wire = header(rcode: 3, an: 0, ns: 1) + question
        let soa: [UInt8] = [2] + Array("ns".utf8) + [0xC0, 16, 1] + Array("h".utf8) + [0xC0, 16]
            + [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 120]
        wire += [0xC0, 16, 0, 6, 0, 1, 0, 0, 3, 132, 0, UInt8(soa.count)] + soa
        let prepared = try #require(CachedReply(wire))
        #expect(prepared.facts.rcode == Rcode.nxDomain)
        #expect(prepared.facts.soa?.ttl == 900 && prepared.facts.soa?.minimum == 120)
        #expect(prepared.facts.lowestTTL == 900)
        #expect(try ldnsReading(wire).0 == prepared.facts)
        let cache = AnswerCache(budgetBytes: 1 << 20)
        let answer = try #require(UpstreamAnswer(wire: wire))
        #expect(cache.store(AnswerCache.Key(Question(name: Array(question.dropLast(4)), type: 1, qclass: 1), dnssecOK: false, checkingDisabled: false),
                            answer: answer) != nil, "cached for min(900, 120) s")
    }

    @Test func truncatedAndServfailFactsComeFromTheHeader() throws {
        let wire = header(rcode: 2, an: 0, tc: true) + question
        let answer = try #require(UpstreamAnswer(wire: wire))
        #expect(answer.facts.truncated && answer.rcode == Rcode.servFail)
        #expect(try ldnsReading(wire).0 == answer.facts)
    }

    @Test func recordsTheReaderDoesNotCheckAreReadByLdns() throws {
        // A HINFO record: its data is not laid out (CachedReply gives up), ldns reads the reply.
        var wire = header(an: 2) + question
        wire += [0xC0, 12, 0, 13, 0, 1, 0, 0, 0, 30, 0, 6, 2] + Array("pc".utf8) + [2] + Array("os".utf8)
        wire += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 40, 0, 2, 0xC0, 16]
        #expect(CachedReply(wire) == nil)
        let answer = try #require(UpstreamAnswer(wire: wire))
        #expect(answer.prepared == nil)
        #expect(answer.facts == ReplyFacts(rcode: 0, truncated: false, answerCount: 2, lowestTTL: 30, soa: nil))
        #expect(answer.aliasTargets == [WireName.fromText("example.org")!])
        #expect(answer.message()?.records(.answer).count == 2)
    }

    @Test func onlyReadableRepliesToTheQuestionAskedAreAccepted() throws {
        var wire = header(an: 1) + question
        wire += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        let asked = Question(name: WireName.fromText("WWW.Example.ORG")!, type: 1, qclass: 1)
        #expect(UpstreamAnswer.validated(wire, id: 0x1234, question: asked) != nil, "case does not matter")
        #expect(UpstreamAnswer.validated(wire, id: 0x1235, question: asked) == nil, "another ID")
        var aaaa = asked
        aaaa.type = RRType.aaaa
        #expect(UpstreamAnswer.validated(wire, id: 0x1234, question: aaaa) == nil, "another type")
        var other = asked
        other.name = WireName.fromText("www.example.net")!
        #expect(UpstreamAnswer.validated(wire, id: 0x1234, question: other) == nil, "another name")
        var query = wire
        query[2] &= 0x7F
        #expect(UpstreamAnswer.validated(query, id: 0x1234, question: asked) == nil, "QR clear: not a reply")
        #expect(UpstreamAnswer(wire: Array(wire.dropLast(3))) == nil, "cut short: neither reader takes it")
        #expect(UpstreamAnswer(wire: [0x12, 0x34, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 0]) == nil, "no question")
    }

    /// Shapes ldns refuses must not be laid out either (both found by the fuzzers' comparison).
    @Test func namesLdnsRefusesAreNotLaidOut() throws {
        // A question name of four 63-byte labels: 257 bytes with the root, over the 255 limit.
        let label = [UInt8(63)] + [UInt8](repeating: 0x61, count: 63)
        let long = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0] + label + label + label + label + [0, 0, 1, 0, 1]
        #expect(Message(wire: long) == nil)
        #expect(CachedReply(long) == nil)
        // An owner name pointing at the last byte of the question's class: no name there.
        var wire = header(an: 2) + question
        wire += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 12]
        wire += [0xC0, UInt8(Header.size + question.count - 1), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]
        #expect(Message(wire: wire) == nil)
        #expect(CachedReply(wire) == nil)
        #expect(UpstreamAnswer(wire: wire) == nil, "neither reader takes it: the datagram is ignored")
    }

    /// A name that points into a TTL field would change when the cached answer is aged or
    /// served stale, after it was inspected (found in review): such replies go to ldns, whose
    /// message is aged field by field.
    @Test func namesPointingIntoATTLAreNotLaidOut() throws {
        // www CNAME with TTL bytes 03 'a' 'd' 't' and the RDLENGTH's high byte 00 as the root:
        // the target, a pointer to that TTL, reads "adt." until the TTL is aged.
        var wire = header(an: 1) + question
        let ttlAt = wire.count + 6
        wire += [0xC0, 12, 0, 5, 0, 1, 3, 0x61, 0x64, 0x74, 0, 2, 0xC0, UInt8(ttlAt)]
        #expect(try ldnsReading(wire).1 == [WireName.fromText("adt")!])
        #expect(CachedReply(wire) == nil)
        let answer = try #require(UpstreamAnswer(wire: wire))
        #expect(answer.prepared == nil && answer.aliasTargets == [WireName.fromText("adt")!])
        // An earlier record's TTL is off limits too.
        var two = header(an: 2) + question
        let firstTTL = two.count + 6
        two += [0xC0, 12, 0, 1, 0, 1, 3, 0x61, 0x64, 0x74, 0, 4, 192, 0, 2, 1]
        two += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, UInt8(firstTTL)]
        #expect(CachedReply(two) == nil)
    }

    @Test func negativeAnswersExpireAtTheSOAMinimum() throws {
        var wire = header(rcode: 3, an: 0, ns: 1) + question
        let soa: [UInt8] = [2] + Array("ns".utf8) + [0xC0, 16, 1] + Array("h".utf8) + [0xC0, 16]
            + [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 120]
        wire += [0xC0, 16, 0, 6, 0, 1, 0, 0, 3, 132, 0, UInt8(soa.count)] + soa
        final class Clock: @unchecked Sendable { var now: UInt64 = 1000 }
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, clock: { clock.now })
        let key = AnswerCache.Key(Question(name: Array(question.dropLast(4)), type: 1, qclass: 1), dnssecOK: false, checkingDisabled: false)
        cache.store(key, answer: try #require(UpstreamAnswer(wire: wire)))
        clock.now += 119
        #expect(cache.lookup(key) != nil)
        clock.now += 1
        #expect(cache.lookup(key) == nil, "min(SOA TTL 900, MINIMUM 120)")
    }

    @Test func answersWithMoreRecordsThanKeptInlineAreAgedWhole() throws {
        // Nine A records: six TTL offsets inline, three in the overflow array.
        var wire = header(an: 9) + question
        for i in 0..<9 { wire += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, UInt8(100 + i), 0, 4, 192, 0, 2, UInt8(i + 1)] }
        let prepared = try #require(CachedReply(wire))
        #expect(prepared.ttlOffsets.count == 9)
        let aged = try #require(Message(wire: prepared.withTTLs { $0 - 50 }))
        #expect(aged.records(.answer).map(\.ttl) == (0..<9).map { UInt32(50 + $0) })
        let asked = Question(name: Array(question.dropLast(4)), type: 1, qclass: 1)
        let relayed = try #require(Message(wire: prepared.reply(id: 9, flags: 0x0100, question: asked, edns: nil, payloadSize: 1232)))
        #expect(relayed.records(.answer).map(\.ttl) == (0..<9).map { UInt32(100 + $0) }, "relayed fresh: TTLs as received")
    }

    @Test func cachedAnswersAreAgedFromTheirBytes() throws {
        var wire = header(an: 1) + question
        wire += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        let prepared = try #require(CachedReply(wire))
        let aged = try #require(Message(wire: prepared.withTTLs { $0 > 25 ? $0 - 25 : 0 }))
        #expect(aged.records(.answer).map(\.ttl) == [35])
    }
}

/// The "upstream still down" line's pace and figures.
@Suite struct OutageTests {
    /// From an operator's trial: a clock read on one core before another core stored a later
    /// time wrapped around (`down_seconds=18446744073`) and let lines through twice a second.
    @Test func aClockReadBeforeTheTimesKeptGivesNoLineAndNoWrap() {
        let second: UInt64 = 1_000_000_000
        var o = Forwarder.Outage(since: 100 * second, lastLine: 100 * second)
        #expect(o.failedAgain(at: 99 * second, interval: 60 * second) == nil, "earlier than the last line: none")
        #expect(o.failedAgain(at: 130 * second, interval: 60 * second) == nil, "within the minute: none")
        let line = o.failedAgain(at: 161 * second, interval: 60 * second)
        #expect(line?.failures == 3 && line?.down == 61 * second)
        #expect(o.failedAgain(at: 162 * second, interval: 60 * second) == nil, "one a minute")
        #expect(o.failures == 4 && o.failuresSinceLine == 1)
        var unset = Forwarder.Outage()
        #expect(unset.failedAgain(at: 500 * second, interval: 60 * second) == nil, "not yet marked down: no line")
    }
}
