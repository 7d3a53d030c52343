import Testing
@testable import SinkholeCore

@Suite struct DomainMatcherTests {
    func wire(_ s: String) -> [UInt8] { WireName.fromText(s)! }

    func matcher(_ entries: [(String, DomainMatcher.Kind)]) -> DomainMatcher {
        var b = DomainMatcher.Builder()
        for (i, (name, kind)) in entries.enumerated() {
            b.add(name: WireName.lowercased(wire(name)), kind: kind, list: 0, line: i + 1)
        }
        return b.build()
    }

    @Test func listedNameAndEveryNameBelowMatchOnLabelBoundaries() {
        let m = matcher([("evil.example", .block)])
        #expect(m.decide(wire("evil.example"))?.kind == .block)
        #expect(m.decide(wire("a.evil.example")) != nil)
        #expect(m.decide(wire("a.b.c.evil.example")) != nil)
        #expect(m.decide(wire("notevil.example")) == nil)
        #expect(m.decide(wire("evil.example.com")) == nil)
        #expect(m.decide(wire("example")) == nil)
        #expect(m.decide(wire("evilexample")) == nil)
    }

    @Test func aMatchMakesItsRuleTextFromTheZoneAndKeepsItWhenTheZoneIsReplaced() {
        var m = RuleMatch(zone: wire("wild.test")[...], below: true, list: "l.txt", line: 3, action: .block, localData: [])
        #expect(m.rule == "*.wild.test")
        #expect(m == RuleMatch(rule: "*.wild.test", list: "l.txt", line: 3, zone: wire("wild.test")))
        #expect(RuleMatch(zone: wire("wild.test")[...], below: false, list: "l.txt", line: 3, action: .block, localData: []).rule == "wild.test")
        m.zone = wire("alias.example.org")   // what a CNAME match does
        #expect(m.rule == "*.wild.test", "the rule is still the listed one")
        let hit = matcher([("evil.example", .block)]).decide(wire("a.Evil.example"))
        #expect(hit.map { Array($0.zone) } == wire("evil.example") && hit?.name == Array(wire("evil.example").dropLast()))
    }

    /// The zone of a hit is the listed name, lower case, whatever the case asked; for a lower-case
    /// query it is a slice of the queried name itself (no copy per blocked query).
    @Test func theZoneOfAHitIsTheListedNameAndSharesALowerCaseQuery() {
        let m = matcher([("evil.example", .block)])
        for asked in ["a.b.evil.example", "evil.example", "a.EVIL.Example", "EVIL.EXAMPLE"] {
            let name = wire(asked)
            let hit = m.decide(name)
            #expect(hit.map { Array($0.zone) } == wire("evil.example"), "\(asked)")
            #expect(RuleMatch(zone: hit!.zone, below: false, list: "l", line: 1, action: .block, localData: []).rule == "evil.example")
        }
        let name = wire("x.evil.example")
        let zone = m.decide(name)!.zone
        #expect(zone.startIndex == 2 && zone.endIndex == name.count)
        name.withUnsafeBufferPointer { n in
            zone.withUnsafeBufferPointer { z in #expect(z.baseAddress == n.baseAddress! + 2, "shares the name's storage") }
        }
    }

    @Test func matchingIgnoresLetterCase() {
        let m = matcher([("evil.example", .block)])
        #expect(m.decide(wire("EVIL.Example")) != nil)
        #expect(m.decide(wire("wWw.EvIl.eXaMpLe")) != nil)
    }

    @Test func hitReportsTheMostSpecificBlockRule() {
        let m = matcher([("example", .block), ("evil.example", .block)])
        let hit = m.decide(wire("a.evil.example"))
        #expect(hit?.name == Array(wire("evil.example").dropLast()))
        #expect(hit?.line == 2)
        #expect(hit?.suffixStart == 2)
    }

    @Test func wildcardBlocksBelowButNotTheApex() {
        let m = matcher([("ads.example", .blockBelow)])
        #expect(m.decide(wire("ads.example")) == nil)
        #expect(m.decide(wire("x.ads.example"))?.kind == .blockBelow)
    }

    @Test func allowWinsOverBlockForTheNameAndBelow() {
        let m = matcher([("example", .block), ("good.example", .allow)])
        #expect(m.decide(wire("good.example"))?.kind == .allow)
        #expect(m.decide(wire("x.good.example"))?.kind == .allow)
        #expect(m.decide(wire("bad.example"))?.kind == .block)
        let m2 = matcher([("evil.good.example", .block), ("good.example", .allow)])
        #expect(m2.decide(wire("evil.good.example"))?.kind == .allow)
    }

    @Test func duplicatesKeepTheFirstOccurrence() {
        let m = matcher([("evil.example", .block), ("EVIL.example", .block)])
        #expect(m.count == 1)
        #expect(m.decide(wire("evil.example"))?.line == 1)
    }

    @Test func emptyMatcherAndRootQuery() {
        #expect(DomainMatcher.empty.decide(wire("evil.example")) == nil)
        let m = matcher([("evil.example", .block)])
        #expect(m.decide([0]) == nil)
    }

    @Test func malformedWireNamesNeverMatch() {
        let m = matcher([("evil.example", .block)])
        #expect(m.decide([4, 0x65, 0x76]) == nil)         // label runs past the end
        #expect(m.decide([]) == nil)
        // Longer than 255 bytes: 150 one-letter labels below a listed name (more labels than a
        // legal name has) never match, and are never read past what a legal name could hold.
        let tooLong = Array(repeating: [1, 0x61] as [UInt8], count: 150).flatMap { $0 } + wire("evil.example")
        #expect(tooLong.count > 255)
        #expect(m.decide(tooLong) == nil)
        #expect(m.decide(Array(tooLong.suffix(254))) != nil, "the same cut to 254 bytes (whole labels) matches")
    }

    @Test func manyEntriesAllFound() {
        var b = DomainMatcher.Builder()
        for i in 0..<20_000 {
            b.add(name: WireName.fromText("host\(i).example.test")!, kind: .block, list: 0, line: i + 1)
        }
        let m = b.build()
        #expect(m.count == 20_000)
        for i in stride(from: 0, to: 20_000, by: 997) {
            #expect(m.decide(wire("x.host\(i).example.test"))?.line == i + 1)
        }
        #expect(m.decide(wire("host20000.example.test")) == nil)
    }

    @Test func slotTagsTakeOnlyTheBitsNoReferenceNeeds() {
        // One segment: references 1...4096 need 13 bits; the other 19 are the tag.
        #expect(DomainMatcher.referenceMask(segmentCount: 1) == 0x1FFF)
        #expect(DomainMatcher.referenceMask(segmentCount: 2) == 0x3FFF)
        for segments in [3, 4, 5, 255, 256, 257, 4_000, 1 << 19, (1 << 19) + 1] {
            let mask = UInt64(DomainMatcher.referenceMask(segmentCount: segments))
            let largest = UInt64(segments - 1) << UInt64(DomainMatcher.entryBits) | UInt64(DomainMatcher.maxSegmentEntries - 1)
            #expect(largest + 1 <= mask, "segments \(segments)")        // every reference fits
            #expect(mask < 2 * (largest + 1), "segments \(segments)")   // in the fewest bits
        }
        // The most segments a table can hold leave no tag bit; lookups then compare every entry.
        #expect(DomainMatcher.referenceMask(segmentCount: DomainMatcher.maxSegments) == .max)
        #expect(DomainMatcher.tag(0xDEAD_BEEF, ~UInt32.max) == 0)
    }

    @Test func tagsNeverHideANameNorAdmitAnUnlistedOne() {
        // Enough names for many segments and a table of 2 MiB (the huge-page path).
        var b = DomainMatcher.Builder()
        let n = 300_000
        for i in 0..<n { b.add(name: WireName.fromText("n\(i).t")!, kind: .block, list: 0, line: i + 1) }
        let m = b.build()
        #expect(m.count == n)
        #expect(m.segmentCount > 100)
        var found = 0, wrong = 0
        for i in 0..<n where m.decide(wire("n\(i).t"))?.line == i + 1 { found += 1 }
        for i in n..<(2 * n) where m.decide(wire("n\(i).t")) != nil { wrong += 1 }
        #expect(found == n)
        #expect(wrong == 0)
    }

    // MARK: sharing between versions

    /// Names as (name, line) pairs, added in order.
    func build(_ names: [(String, Int)], reusing previous: DomainMatcher? = nil, kind: DomainMatcher.Kind = .block) -> DomainMatcher {
        var b = DomainMatcher.Builder(reusing: previous)
        for (name, line) in names { b.add(name: WireName.fromText(name)!, kind: kind, list: 0, line: line) }
        return b.build()
    }

    @Test func reloadWithHalfTheNamesChangedSharesTheUnchangedHalf() {
        let n = 20_000
        let v1 = build((0..<n).map { ("h\($0)-a.example.test", $0 + 2) })
        let v2 = build((0..<n).map { ("h\($0)-\($0 < n / 2 ? "a" : "b").example.test", $0 + 2) }, reusing: v1)
        #expect(v2.count == n)
        let shared = v2.sharedSegments(with: v1)
        // The first half is shared except near the midpoint; nothing past it can be.
        #expect(shared > v1.segmentCount / 2 - 3)
        #expect(shared <= v1.segmentCount / 2 + 1)
        for i in stride(from: 0, to: n, by: 7) {
            let unchanged = i < n / 2
            #expect(v2.decide(wire("x.h\(i)-a.example.test"))?.line == (unchanged ? i + 2 : nil))   // kept / removed
            #expect(v2.decide(wire("h\(i)-b.example.test"))?.line == (unchanged ? nil : i + 2))     // added
            // The version in force is untouched by the build of the next one.
            #expect(v1.decide(wire("h\(i)-a.example.test"))?.line == i + 2)
            #expect(v1.decide(wire("h\(i)-b.example.test")) == nil)
        }
    }

    @Test func unchangedNamesOnShiftedLinesAreSharedAndReportTheNewLine() {
        let n = 10_000
        let v1 = build((0..<n).map { ("n\($0).example.test", $0 + 1) })
        // Three lines inserted at the top, one blank line in the middle: every name moves.
        let v2 = build((0..<n).map { ("n\($0).example.test", $0 + 4 + ($0 >= n / 2 ? 1 : 0)) }, reusing: v1)
        #expect(v2.sharedSegments(with: v1) >= v1.segmentCount - 2)
        for i in stride(from: 0, to: n, by: 3) {
            #expect(v2.decide(wire("n\(i).example.test"))?.line == i + 4 + (i >= n / 2 ? 1 : 0))
            #expect(v1.decide(wire("n\(i).example.test"))?.line == i + 1)
        }
    }

    @Test func changedLineWithinARunIsNotSharedWrongly() {
        let n = 5_000
        let v1 = build((0..<n).map { ("m\($0).example.test", $0 + 1) })
        // One name's line moves relative to its neighbours (a comment inserted just before it).
        let v2 = build((0..<n).map { ("m\($0).example.test", $0 + 1 + ($0 == 2_500 ? 1 : 0) + ($0 > 2_500 ? 1 : 0)) },
                       reusing: v1)
        #expect(v2.decide(wire("m2499.example.test"))?.line == 2_500)
        #expect(v2.decide(wire("m2500.example.test"))?.line == 2_502)
        #expect(v2.decide(wire("m2501.example.test"))?.line == 2_503)
        #expect(v2.decide(wire("m4999.example.test"))?.line == 5_001)
        #expect(v2.sharedSegments(with: v1) >= v1.segmentCount - 2)
        // A kind change for the same name and line is a change too.
        let v3 = build((0..<n).map { ("m\($0).example.test", $0 + 1) }, reusing: v1, kind: .blockBelow)
        #expect(v3.sharedSegments(with: v1) == 0)
        #expect(v3.decide(wire("m7.example.test")) == nil)
        #expect(v3.decide(wire("a.m7.example.test"))?.kind == .blockBelow)
    }

    @Test func duplicatesAcrossSharedSegmentsKeepTheFirstOccurrenceOfEachVersion() {
        let n = 4_000
        var names = (0..<n).map { ("d\($0).example.test", $0 + 1) }
        names.append(("d5.example.test", n + 1))           // a duplicate of line 6, at the end
        let v1 = build(names)
        #expect(v1.count == n)
        #expect(v1.decide(wire("d5.example.test"))?.line == 6)
        names.remove(at: 5)                                   // the first occurrence goes
        let v2 = build(names, reusing: v1)
        #expect(v2.count == n)
        #expect(v2.decide(wire("d5.example.test"))?.line == n + 1)
        #expect(v2.decide(wire("d6.example.test"))?.line == 7)
        #expect(v2.sharedSegments(with: v1) >= 1)
    }

    @Test func segmentsRespectTheirLimits() {
        // Long names fill a segment's arena before its entry limit; lists of names by list index.
        var b = DomainMatcher.Builder()
        let label = String(repeating: "a", count: 60)
        for i in 0..<3_000 {
            b.add(name: WireName.fromText("\(label).\(label).\(label).n\(i).test")!, kind: .block, list: i % 3, line: i + 1)
        }
        let m = b.build()
        #expect(m.count == 3_000)
        for i in stride(from: 0, to: 3_000, by: 11) {
            let hit = m.decide(wire("\(label).\(label).\(label).n\(i).test"))
            #expect(hit?.line == i + 1)
            #expect(hit?.list == i % 3)
        }
    }
}
