import Testing
@testable import SinkholeCore

@Suite struct ListParserTests {
    struct Parsed {
        var entries: [(String, DomainMatcher.Kind, Int)] = []
        var errors: [ListLineError] = []
    }

    func parse(_ text: String, file: String = "intel.txt") -> Parsed {
        var p = Parsed()
        ListParser.parse(Array(text.utf8), file: file, add: { wire, kind, line in
            p.entries.append((WireName.text(wire), kind, line))
        }, reject: { p.errors.append($0) })
        return p
    }

    @Test func plainDomainsCommentsAndBlankLines() {
        let p = parse("# header\n\nEvil.Example\n  spaced.example  \ninline.example # why\nfqdn.example.\n")
        #expect(p.entries.map(\.0) == ["evil.example", "spaced.example", "inline.example", "fqdn.example"])
        #expect(p.entries.map(\.2) == [3, 4, 5, 6])
        #expect(p.errors.isEmpty)
    }

    @Test func hostsFileLinesWithSeveralNamesAndSelfNamesIgnored() {
        let p = parse("127.0.0.1 localhost\n0.0.0.0 a.example b.example\n::1 ip6-localhost\n127.0.0.1\tc.example\n0.0.0.0 0.0.0.0\n")
        #expect(p.entries.map(\.0) == ["a.example", "b.example", "c.example"])
        #expect(p.entries.map(\.2) == [2, 2, 4])
        #expect(p.errors.isEmpty)
        // Self-names with the final dot, and macOS's zoned link-local line (from a list trial).
        let more = parse("127.0.0.1 localhost.localdomain. localhost.\nfe80::1%lo0 localhost\n::1 localhost6.localdomain6. d.example\n")
        #expect(more.entries.map(\.0) == ["d.example"])
        #expect(more.errors.isEmpty, "\(more.errors)")
    }

    /// A lone loopback or unspecified address (a hosts-file line missing its names) is not an IP
    /// indicator: it blocked every answer of 127.0.0.1 or 0.0.0.0 (from a list trial).
    @Test func aLoneLoopbackOrUnspecifiedAddressIsNoIndicator() {
        var addresses: [String] = []
        var errors: [ListLineError] = []
        ListParser.parse(Array("127.0.0.1\n0.0.0.0\n::1\n::\n127.0.0.0/8\n203.0.113.9\n2001:db8::1\n".utf8)[...], file: "ioc.txt", add: { _, _, _ in },
                         addAddress: { address, prefix, _ in addresses.append("\(IPAddress.text(address))/\(prefix)") },
                         reject: { errors.append($0) })
        #expect(addresses == ["203.0.113.9/32", "2001:db8::1/128"])
        #expect(errors.map(\.line) == [1, 2, 3, 4, 5])
        #expect(errors.first?.reason.contains("loopback or unspecified") == true)
    }

    @Test func windowsLineEndingsAndNoFinalNewline() {
        let p = parse("a.example\r\nb.example")
        #expect(p.entries.map(\.0) == ["a.example", "b.example"])
    }

    @Test func badLinesAreReportedWithFileLineAndReason() {
        let long = String(repeating: "a", count: 64)
        let tooLong = (0..<60).map { _ in "abcd" }.joined(separator: ".")
        let text = """
        ok.example
        exa mple.com
        192.0.2.1
        \(long).example
        \(tooLong)
        bad!name.example
        a..example
        bücher.example
        -lead.example
        0.0.0.0
        """
        let p = parse(text)
        #expect(p.entries.map(\.0) == ["ok.example"])
        #expect(p.errors.map(\.line) == [2, 3, 4, 5, 6, 7, 8, 9, 10])
        #expect(p.errors[0].description == "intel.txt:2: unexpected text after the name: 'exa mple.com'")
        #expect(p.errors[1].reason.contains("IP address"))
        #expect(p.errors[2].reason.contains("label of 64 bytes"))
        #expect(p.errors[3].reason.contains("at most 253"))
        #expect(p.errors[4].reason.contains("'!'"))
        #expect(p.errors[5].reason.contains("empty label"))
        #expect(p.errors[6].reason.contains("non-ASCII"))
        #expect(p.errors[7].reason.contains("hyphen"))
        #expect(p.errors[8].reason.contains("IP address"))
    }

    @Test func wildcardAndAdblockRules() {
        let p = parse("*.ads.example\n||tracker.example^\n@@||good.example^\n||path.example/x^\n||nocaret.example\n! comment\n[Adblock Plus 2.0]\n")
        #expect(p.entries.map(\.0) == ["ads.example", "tracker.example", "good.example"])
        #expect(p.entries.map(\.1) == [.blockBelow, .block, .allow])
        #expect(p.errors.map(\.line) == [4, 5])
    }

    /// From a list maintainer's trial with an EasyList excerpt: cosmetic rules are skipped (read
    /// as a domain and a comment, `site##.ad` blocked the whole site); rules with a browser's
    /// modifiers are not applied (`@@||c2^$elemhide` allowed a listed C2 domain over every
    /// list); `$important` blocks; an exception for a whole TLD in a feed is refused.
    @Test func adblockCosmeticRulesAndModifiers() {
        let p = parse("""
            youtube.example##.ytd-ad-slot-renderer
            news.example#@#.ad-banner
            shop.example#?#div:has(> .ad)
            site.example#$#body { padding: 0 }
            ##.generic-ad
            hosts.example #a comment after a space
            @@||msstorageboxes.com^$elemhide,domain=foo.example
            ||ads.example^$third-party
            ||bad.example^$badfilter
            ||imp.example^$important
            @@||com^
            ||zip^
            site.example$$script[data-src="ads"]
            """)
        #expect(p.entries.map(\.0) == ["hosts.example", "imp.example", "zip"])
        #expect(p.entries.map(\.1) == [.block, DomainMatcher.Kind(.subtree, .block, important: true), .block])
        #expect(p.errors.map(\.line) == [7, 8, 9, 11])
        #expect(p.errors[0].reason.contains("$elemhide") && p.errors[2].reason.contains("$badfilter"))
        #expect(p.errors[3].reason.contains(".allow file"))
        let allowList = ListParserTests.parseAllow("@@||lan^\n")
        #expect(allowList.map(\.1) == [.allow], "a whole TLD in an allowlist, said so")
    }

    static func parseAllow(_ text: String) -> [(String, DomainMatcher.Kind)] {
        var out: [(String, DomainMatcher.Kind)] = []
        ListParser.parse(Array(text.utf8)[...], file: "x.allow", allowList: true, add: { wire, kind, _ in
            out.append((WireName.text(wire), kind))
        }, reject: { _ in })
        return out
    }
}
