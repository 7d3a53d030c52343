import Synchronization
import Testing
@testable import SinkholeCore

/// What the fast path's parser accepts, and that everything unusual goes to the full path.
@Suite struct WireQueryTests {
    func query(_ name: String, type: UInt16 = RRType.a, edns: EDNS? = nil, options: [UInt8] = []) -> [UInt8] {
        guard let m = Message.empty(), let wire = WireName.fromText(name) else { return [] }
        m.id = 0x1234
        m.recursionDesired = true
        m.setQuestion(Question(name: wire, type: type, qclass: RRType.classIN))
        m.edns = edns
        if !options.isEmpty { m.setEDNSOptions(options) }
        return m.wire() ?? []
    }

    @Test func plainQueriesAreRead() throws {
        let q = try #require(WireQuery.parse(query("Www.Example.ORG", type: RRType.aaaa)))
        #expect(q.id == 0x1234 && q.recursionDesired && q.qtype == RRType.aaaa && q.qclass == 1)
        #expect(q.nameEnd == 12 + 17)
        #expect(q.edns == nil && !q.hasOptions && Query.udpLimit(client: q.edns?.udpPayloadSize, ours: 1232) == 512)
        let e = try #require(WireQuery.parse(query("example.org", edns: EDNS(udpPayloadSize: 4096, dnssecOK: true))))
        #expect(e.edns?.dnssecOK == true && e.edns?.udpPayloadSize == 4096 && !e.hasOptions)
        #expect(Query.udpLimit(client: e.edns?.udpPayloadSize, ours: 4096) == 4096)
        // Never more than sinkhole's own size: a small query must not draw a huge datagram.
        #expect(Query.udpLimit(client: e.edns?.udpPayloadSize, ours: 1232) == 1232)
        #expect(Query.udpLimit(client: 65_535, ours: 1232) == 1232)
        let small = try #require(WireQuery.parse(query("example.org", edns: EDNS(udpPayloadSize: 100))))
        #expect(Query.udpLimit(client: small.edns?.udpPayloadSize, ours: 1232) == 512)
        let cookie: [UInt8] = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]
        let c = try #require(WireQuery.parse(query("example.org", edns: EDNS(udpPayloadSize: 1232), options: cookie)))
        #expect(c.hasOptions)
    }

    @Test func everythingUnusualTakesTheFullPath() {
        let good = query("example.org", edns: EDNS(udpPayloadSize: 1232))
        #expect(WireQuery.parse(good) != nil)
        #expect(WireQuery.parse(good + [0]) == nil, "trailing byte")
        #expect(WireQuery.parse(Array(good.dropLast())) == nil, "OPT cut short")
        var version = good
        version[version.count - 5] = 1                      // EDNS version 1: BADVERS
        #expect(WireQuery.parse(version) == nil)
        var badOption = query("example.org", edns: EDNS(udpPayloadSize: 1232), options: [0, 10, 0, 2, 1, 2])
        badOption[badOption.count - 3] = 9                  // option length past the OPT data
        #expect(WireQuery.parse(badOption) == nil)
        var response = good
        response[2] |= 0x80
        #expect(WireQuery.parse(response) == nil, "QR=1")
        var notify = good
        notify[2] |= 4 << 3
        #expect(WireQuery.parse(notify) == nil, "opcode NOTIFY")
        var twoQuestions = good
        twoQuestions[5] = 2
        #expect(WireQuery.parse(twoQuestions) == nil)
        var answer = good
        answer[7] = 1
        #expect(WireQuery.parse(answer) == nil, "ANCOUNT 1")
        #expect(WireQuery.parse(query("example.org", type: 252)) == nil, "AXFR")
        #expect(WireQuery.parse(query("example.org", type: RRType.opt)) == nil)
        // A compressed question name.
        let compressed: [UInt8] = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]
        #expect(WireQuery.parse(compressed) == nil)
        let runt: [UInt8] = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x61]
        #expect(WireQuery.parse(runt) == nil)
        // A non-OPT additional record.
        var m = query("example.org")
        m[11] = 1
        m += [0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        #expect(WireQuery.parse(m) == nil)
    }

    @Test func cachedRepliesArePreparedOnlyWhenTheirShapeIsPlain() throws {
        guard let m = Message.empty(), let name = WireName.fromText("www.example.org") else { return }
        m.id = 7
        m.isResponse = true
        m.setQuestion(Question(name: name, type: RRType.a, qclass: 1))
        m.append(.answer, presentation: "www.example.org. 300 IN A 192.0.2.1")
        m.append(.authority, presentation: "example.org. 3600 IN NS ns.example.org.")
        m.edns = EDNS(udpPayloadSize: 4096)
        let wire = try #require(m.wire())
        let prepared = try #require(CachedReply(wire))
        #expect(prepared.ttlOffsets.count == 2)
        #expect(prepared.opt != nil)
        let q = try #require(WireQuery.parse(query("WWW.example.org")))
        let reply = query("WWW.example.org").withUnsafeBytes { prepared.reply(to: q, packet: $0, age: 100, payloadSize: 1232) }
        let decoded = try #require(Message(wire: reply))
        #expect(decoded.id == 0x1234 && decoded.isResponse && decoded.recursionDesired && decoded.recursionAvailable)
        #expect(decoded.question?.name == WireName.fromText("WWW.example.org"))
        #expect(decoded.records(.answer).map(\.ttl) == [200])
        #expect(decoded.records(.authority).map(\.ttl) == [3500])
        #expect(decoded.edns == nil, "no OPT to a client that sent none")
        #expect(CachedReply(Array(wire.dropLast())) == nil)
        #expect(CachedReply(wire + [0]) == nil)
    }
}

/// A CNAME whose RDLENGTH covers more than its name (found by the chain fuzzer): ldns reads the
/// name and goes on from there, so the upstream's bytes must not be relayed as they are.
@Suite struct CachedReplyShapeTests {
    @Test func recordDataThatIsNotExactlyItsFieldsIsNotRelayedRaw() throws {
        let question: [UInt8] = [7] + Array("example".utf8) + [3] + Array("com".utf8) + [0, 0, 1, 0, 1]
        let header: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        let cname: [UInt8] = [0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 60]
        let exact = header + question + cname + [0, 6, 4, 0x64, 1, 0, 0, 0]
        #expect(CachedReply(exact) != nil)
        let longer = header + question + cname + [0, 18, 4, 0x64, 1, 0, 0, 0, 0, 0, 0, 0x28, 0x6C, 0x64, 4, 0x74, 0x65, 0x73, 0x74, 0]
        #expect(Message(wire: longer) != nil, "ldns accepts it")
        #expect(CachedReply(longer) == nil)
        #expect(CachedReply.rdataIsExact(type: RRType.a, [1, 2, 3, 4], from: 0, to: 4))
        #expect(!CachedReply.rdataIsExact(type: RRType.a, [1, 2, 3], from: 0, to: 3))
        let mx: [UInt8] = [0, 10, 4] + Array("mail".utf8) + [0]
        #expect(CachedReply.rdataIsExact(type: 15, mx, from: 0, to: mx.count))
        #expect(!CachedReply.rdataIsExact(type: 15, mx + [0], from: 0, to: mx.count + 1))
        let txt: [UInt8] = [3, 0x61, 0x62, 0x63, 1, 0x64]
        #expect(CachedReply.rdataIsExact(type: 16, txt, from: 0, to: 6))
        #expect(!CachedReply.rdataIsExact(type: 16, txt, from: 0, to: 5))
        #expect(!CachedReply.rdataIsExact(type: 46, [1, 2, 3], from: 0, to: 3), "RRSIG: not prepared")
    }
}

extension CachedReplyShapeTests {
    @Test func namesPointingIntoTheHeaderOrForwardAreNotRelayedRaw() {
        let question: [UInt8] = [7] + Array("version".utf8) + [4] + Array("bind".utf8) + [0, 0, 16, 0, 3]
        let header: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        let txt: [UInt8] = [0, 16, 0, 3, 0, 0, 0, 60, 0, 2, 1, 0x61]
        #expect(CachedReply(header + question + [0xC0, 0x0C] + txt) != nil)
        // Offset 11 is ARCOUNT's low byte: zero (the root) in the upstream's header, one once we add our OPT.
        #expect(CachedReply(header + question + [0xC0, 0x0B] + txt) == nil)
        #expect(CachedReply(header + question + [0xC0, 0x40] + txt) == nil, "a pointer forward")
    }
}

@Suite struct WireNameCaseTests {
    @Test func lowercasingFoldsOnlyASCIILetters() throws {
        let mixed = try #require(WireName.fromText("MiXeD.Example.ORG"))
        #expect(WireName.lowercased(mixed) == WireName.fromText("mixed.example.org"))
        // '@' (0x40) and '[' (0x5B) border the capitals; they and other bytes stay as they are.
        let edges: [UInt8] = [4, 0x40, 0x5B, 0x41, 0x5A, 3, 0xC1, 0x7A, 0x61, 0]
        #expect(WireName.lowercased(edges) == [4, 0x40, 0x5B, 0x61, 0x7A, 3, 0xC1, 0x7A, 0x61, 0])
        let lower = try #require(WireName.fromText("already.lower.example"))
        #expect(WireName.lowercased(lower) == lower)
    }
}

/// Replies written in place (the UDP send batch's slot): the same bytes as the arrays, and a
/// reply that does not fit is reported, never cut.
@Suite struct WireWriterTests {
    @Test func writesBigEndianAndReportsWhatDoesNotFit() {
        let bytes = WireWriter.makeArray(capacity: 9) { w in
            w.put8(1); w.put16(0x0203); w.put32(0x0405_0607); w.append([8, 9])
        }
        #expect(bytes == [1, 2, 3, 4, 5, 6, 7, 8, 9])
        var storage = [UInt8](repeating: 0xEE, count: 4)
        storage.withUnsafeMutableBytes { buffer in
            var w = WireWriter(buffer)
            w.put16(0x0102)
            w.put32(0x0304_0506)   // two bytes short
            #expect(w.overflowed && w.written == nil)
            w.rewind(to: 0)
            #expect(w.count == 0)
        }
        #expect(storage == [1, 2, 0xEE, 0xEE], "nothing written past the end")
        #expect(WireWriter.makeArray(capacity: 3) { $0.put32(1) } == [], "an array that did not fit is empty")
    }

    @Test func cachedRepliesInPlaceEqualTheArraysAndNeedNoMoreThanTheirCapacity() throws {
        let tests = WireQueryTests()
        guard let m = Message.empty(), let name = WireName.fromText("www.example.org") else { return }
        m.id = 7
        m.isResponse = true
        m.setQuestion(Question(name: name, type: RRType.a, qclass: 1))
        m.append(.answer, presentation: "www.example.org. 300 IN A 192.0.2.1")
        m.edns = EDNS(udpPayloadSize: 4096)
        let wire = try #require(m.wire())
        let prepared = try #require(CachedReply(wire))
        let packet = tests.query("WWW.example.org", edns: EDNS(udpPayloadSize: 1232))
        let q = try #require(WireQuery.parse(packet))
        let array = packet.withUnsafeBytes { prepared.reply(to: q, packet: $0, age: 10, payloadSize: 1232) }
        #expect(!array.isEmpty && array.count <= prepared.replyCapacity)
        // Written after other bytes (a slot's offset): the TTLs aged are this reply's.
        var buffer = [UInt8](repeating: 0, count: 3 + array.count)
        let written = buffer.withUnsafeMutableBytes { raw -> Int? in
            var w = WireWriter(raw)
            w.put8(0xAA); w.put16(0xBBCC)
            packet.withUnsafeBytes { prepared.reply(into: &w, to: q, packet: $0, age: 10, payloadSize: 1232) }
            return w.written
        }
        #expect(written == buffer.count)
        #expect(Array(buffer.dropFirst(3)) == array)
        let decoded = try #require(Message(wire: array))
        #expect(decoded.records(.answer).map(\.ttl) == [290])
        // One byte short: nothing to send, rather than a cut reply.
        var short = [UInt8](repeating: 0, count: array.count - 1)
        let shortWritten = short.withUnsafeMutableBytes { raw -> Int? in
            var w = WireWriter(raw)
            packet.withUnsafeBytes { prepared.reply(into: &w, to: q, packet: $0, age: 10, payloadSize: 1232) }
            return w.written
        }
        #expect(shortWritten == nil)
        // Another question of another length: not this answer's, nothing written.
        let other = tests.query("www.example.info")
        let otherQuery = try #require(WireQuery.parse(other))
        let none = WireWriter.makeArray(capacity: 512) { w in
            other.withUnsafeBytes { prepared.reply(into: &w, to: otherQuery, packet: $0, age: 0, payloadSize: 1232) }
        }
        #expect(none.isEmpty)
    }

    @Test func aRespondersWriteSendsTheBytesOrReportsTheyDidNotFit() {
        let sent = Mutex<[[UInt8]]>([])
        let respond = Responder { reply in sent.withLock { $0.append(reply) } }
        #expect(respond.write(limit: 4) { $0.put32(0x0102_0304) })
        #expect(!respond.write(limit: 3) { $0.put32(0x0102_0304) }, "longer than the limit")
        #expect(!respond.write(limit: 512) { _ in }, "empty")
        // A reply longer than a send-batch slot, within what the client takes.
        let big = [UInt8](repeating: 7, count: 5000)
        #expect(respond.write(limit: 8192) { $0.append(big) })
        #expect(sent.withLock { $0 } == [[1, 2, 3, 4], big])
        // What must happen before the reply can reach the client (the block log's record) runs
        // once it is made, before it is sent; not at all when nothing is sent.
        let order = Mutex<[String]>([])
        let ordered = Responder { _ in order.withLock { $0.append("sent") } }
        #expect(ordered.write(limit: 512, { $0.put16(1) }, beforeSending: { order.withLock { $0.append("recorded") } }))
        #expect(!ordered.write(limit: 1, { $0.put16(1) }, beforeSending: { order.withLock { $0.append("never") } }))
        #expect(order.withLock { $0 } == ["recorded", "sent"])
    }

    @Test func blockRepliesAreMadeInTheRoomTheyAreGiven() throws {
        let tests = WireQueryTests()
        for edns in [nil, EDNS(udpPayloadSize: 1232)] as [EDNS?] {
            let packet = tests.query("x.Evil.example", edns: edns)
            let q = try #require(WireQuery.parse(packet))
            let match = RuleMatch(rule: "evil.example", list: "intel-with-a-long-file-name.txt", line: 7,
                                  zone: WireName.fromText("evil.example")!)
            for answer in [BlockPolicy(mode: .nxdomain).answer(for: Question(name: Array(packet[12..<q.nameEnd]), type: RRType.a, qclass: 1), match: match),
                           BlockPolicy(mode: .sinkhole).answer(for: Question(name: Array(packet[12..<q.nameEnd]), type: RRType.a, qclass: 1), match: match)] {
                let reply = packet.withUnsafeBytes { FastReply.block(q, packet: $0, answer: answer, payloadSize: 1232) }
                let roomy = WireWriter.makeArray(capacity: 65_535) { w in
                    packet.withUnsafeBytes { FastReply.block(into: &w, q, packet: $0, answer: answer, payloadSize: 1232) }
                }
                #expect(!reply.isEmpty && reply == roomy, "the array's exact room suffices")
                #expect(reply.count <= FastReply.blockCapacity(q, answer: answer))
                let decoded = try #require(Message(wire: reply))
                #expect(decoded.rcode == answer.rcode && (decoded.edns != nil) == (edns != nil))
            }
        }
    }

    @Test func namesAreWrittenAsTextWithTheirSpecialBytesEscaped() {
        #expect(WireName.text([0]) == ".")
        #expect(WireName.text(WireName.fromText("www.Example.org")!) == "www.Example.org")
        // A dot, a backslash and a quote inside a label; a space, a control byte and a high byte.
        let odd: [UInt8] = [7, 0x61, 0x2E, 0x5C, 0x22, 0x20, 0x07, 0xFF, 3, 0x63, 0x6F, 0x6D, 0]
        #expect(WireName.text(odd) == #"a\.\\\"\032\007\255.com"#)
        var bytes: [UInt8] = []
        odd.withUnsafeBufferPointer { WireName.writeText($0) { bytes.append($0) } }
        #expect(String(decoding: bytes, as: UTF8.self) == WireName.text(odd))
        #expect(WireName.text([3, 0x61]) == "a", "a label cut short keeps what there is")
    }

    @Test func theExtendedErrorNamesTheListAndRuleAndIsCutAt200Bytes() throws {
        let zone = WireName.fromText("evil.example")!
        let short = BlockPolicy(mode: .nxdomain).answer(for: Question(name: zone, type: RRType.a, qclass: 1),
                                                        match: RuleMatch(rule: "*.evil.example", list: "intel.txt", line: 3, zone: zone))
        let option = ReplyBuilder.extendedError(for: short)
        #expect(Array(option[0..<6]) == [0, 15, 0, UInt8(2 + 36), 0, 15])
        #expect(String(decoding: option[6...], as: UTF8.self) == "blocked by intel.txt: *.evil.example")
        let long = BlockPolicy(mode: .nxdomain).answer(for: Question(name: zone, type: RRType.a, qclass: 1),
                                                       match: RuleMatch(rule: "evil.example", list: String(repeating: "l", count: 250), line: 3, zone: zone))
        let cut = ReplyBuilder.extendedError(for: long)
        #expect(cut.count == 6 + 200 && Array(cut[2..<4]) == [0, 202])
        #expect(String(decoding: cut[6...], as: UTF8.self) == "blocked by " + String(repeating: "l", count: 189))
        // The writer form with the rule written from the listed bytes gives the same option.
        let written = WireWriter.makeArray(capacity: 300) { out in
            ReplyBuilder.writeExtendedError(&out, responseBased: false, list: "intel.txt") { text in
                text.put(UInt8(ascii: "*")); text.put(UInt8(ascii: "."))
                zone.withUnsafeBufferPointer { WireName.writeText($0) { text.put($0) } }
            }
        }
        #expect(written == option)
        // A cut inside a character drops that character: EXTRA-TEXT is UTF-8 (a review).
        let cyrillic = BlockPolicy(mode: .nxdomain).answer(for: Question(name: zone, type: RRType.a, qclass: 1),
                                                           match: RuleMatch(rule: "evil.example", list: String(repeating: "ж", count: 120), line: 3, zone: zone))
        let utf = ReplyBuilder.extendedError(for: cyrillic)
        #expect(utf.count == 6 + 199, "189 bytes of text after the prefix: 94 characters, not 94 and a half")
        #expect(String(validating: utf[6...], as: UTF8.self) == "blocked by " + String(repeating: "ж", count: 94))
    }

    @Test func theRawLookupPointsIntoTheQueriedName() throws {
        var builder = DomainMatcher.Builder()
        builder.add(name: WireName.fromText("evil.example")!, kind: .block, list: 0, line: 4)
        builder.add(name: WireName.fromText("wild.example")!, kind: .blockBelow, list: 0, line: 5)
        builder.add(name: WireName.fromText("ok.evil.example")!, kind: .allow, list: 0, line: 6)
        let matcher = builder.build()
        func raw(_ name: String) -> DomainMatcher.RawHit? {
            WireName.fromText(name)!.withUnsafeBufferPointer { matcher.decide($0) }
        }
        let lower = try #require(raw("a.b.evil.example"))
        #expect(lower.suffixStart == 4 && lower.sameBytes && lower.line == 4 && lower.kind == .block)
        #expect(Array(lower.listed) == Array(WireName.fromText("evil.example")!.dropLast()))
        let mixed = try #require(raw("a.b.EVIL.example"))
        #expect(mixed.suffixStart == 4 && !mixed.sameBytes)
        let hit = matcher.hit(mixed, in: WireName.fromText("a.b.EVIL.example")!)
        #expect(Array(hit.zone) == WireName.fromText("evil.example")!, "a copy of the listed bytes when the case differs")
        #expect(raw("wild.example") == nil, "a `*.` rule does not cover the name itself")
        #expect(raw("x.wild.example")?.suffixStart == 2)
        #expect(raw("x.ok.evil.example")?.kind == .allow, "the allow rule wins")
        #expect(raw("example") == nil)
        #expect([UInt8](repeating: 1, count: 300).withUnsafeBufferPointer { matcher.decide($0) } == nil)
    }
}
