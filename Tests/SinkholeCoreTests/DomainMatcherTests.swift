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
}
