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
        #expect(p.entries.map(\.1) == [.blockStarred, .block, .allow], "*.name blocks the name too, as Blocky reads it")
        #expect(p.errors.map(\.line) == [4, 5])
        // In an allowlist, `*.name` lifts only the names below it.
        #expect(ListParserTests.parseAllow("*.cdn.example\n").map(\.1) == [.blockBelow])
    }

    /// From a migration trial: a Blocky or wildcard-format feed's `*.evil.example` left
    /// `evil.example` resolving; AdGuard's anchors `|name^` (the name alone), `||*.name^` (the
    /// names below) and `^|` were refused.
    @Test func wildcardLinesAndAdblockAnchors() {
        let p = parse("*.evil.example\n|exact.example^\n@@|ok.exact.example^\n||*.below.example^\n||end.example^|\n")
        #expect(p.errors.isEmpty, "\(p.errors)")
        #expect(p.entries.map(\.0) == ["evil.example", "exact.example", "ok.exact.example", "below.example", "end.example"])
        #expect(p.entries.map(\.1) == [.blockStarred, DomainMatcher.Kind(.exact, .block), DomainMatcher.Kind(.exact, .allow),
                                        .blockBelow, .block])
    }

    /// Regular expressions (Pi-hole's regex lists, Adblock's `/.../`) and AdGuard Home's own
    /// modifiers are refused with a reason that says what they are (it said "character '(' is not
    /// allowed" and "which a DNS resolver cannot apply", of modifiers AdGuard Home applies).
    @Test func patternsAndAdGuardHomeModifiersAreRefusedForWhatTheyAre() {
        let p = parse(#"""
            (\.|^)doubleclick\.net$
            ^ads?[0-9]*\.
            .*\.xyz$
            /banner[0-9]+\.example/
            @@/ok[0-9]\.example/
            ads*.example.com
            ||lan.example^$client=192.168.1.5
            ||x.example^$dnsrewrite=0.0.0.0
            ||y.example^$important,denyallow=z.example
            ||z.example^$third-party
            """#)
        #expect(p.entries.isEmpty)
        #expect(p.errors.map(\.line) == Array(1...10))
        for error in p.errors[0..<3] { #expect(error.reason.hasPrefix("a regular expression"), "\(error)") }
        for error in p.errors[3..<5] { #expect(error.reason.hasPrefix("an Adblock regular-expression rule"), "\(error)") }
        #expect(p.errors[5].reason.hasPrefix("a wildcard inside a name"))
        for error in p.errors[6..<9] { #expect(error.reason.contains("AdGuard Home's modifier"), "\(error)") }
        #expect(p.errors[9].reason.contains("a browser's"))
    }

    /// dnsmasq rules as its feeds write them block each name and below; a forwarding rule is
    /// refused with the flag that does it; a rule for every name is refused.
    @Test func dnsmasqRules() {
        var mapped: [ListParser.MappedLine] = []
        var p = Parsed()
        ListParser.parse(Array("""
            address=/a.example/0.0.0.0
            address=/b.example/c.example/
            local=/d.example/
            server=/e.example/
            address=/f.example/#
            address=/.g.example/::
            server=/corp/10.0.0.1
            address=/#/0.0.0.0
            address=/nas.example/192.168.1.10
            address=/h.example/not-an-ip
            address=oops
            """.utf8)[...], file: "d.conf", add: { wire, kind, line in p.entries.append((WireName.text(wire), kind, line)) },
            mapped: { mapped.append($0) }, reject: { p.errors.append($0) })
        #expect(p.entries.map(\.0) == ["a.example", "b.example", "c.example", "d.example", "e.example", "f.example", "g.example", "nas.example"])
        #expect(p.entries.allSatisfy { $0.1 == .block })
        #expect(p.errors.map(\.line) == [7, 8, 10, 11])
        #expect(p.errors.first?.reason.contains("--forward-zone corp=10.0.0.1") == true)
        #expect(mapped == [ListParser.MappedLine(line: 9, text: "address=/nas.example/192.168.1.10")])
    }

    /// From a re-trial: `server=/name/#` is dnsmasq's "use the usual servers", not a block (the
    /// `#` was read as a comment); a forwarding rule's hint keeps its port and names every zone;
    /// Adblock path and non-domain rules are not called regular expressions.
    @Test func dnsmasqHashesAndAdblockPatternReasons() {
        let p = parse(#"""
            server=/www.corp.example/#
            server=/consul/127.0.0.1#8600
            server=/a.example/b.example/fd00::53#5353
            address=/c.example/#   # a comment after a space
            @@-ds.metric.example^|
            /^https?:\/\/ads\./$script,third-party
            /adserver/*
            """#)
        #expect(p.entries.map(\.0) == ["c.example"])
        #expect(p.errors.map(\.line) == [1, 2, 3, 5, 6, 7])
        #expect(p.errors[0].reason.contains("use the usual servers"))
        #expect(p.errors[1].reason.contains("--forward-zone consul=127.0.0.1:8600"), "\(p.errors[1])")
        #expect(p.errors[2].reason.contains("--forward-zone a.example=[fd00::53]:5353 --forward-zone b.example=[fd00::53]:5353"), "\(p.errors[2])")
        #expect(p.errors[3].reason.hasPrefix("an Adblock rule that is not a domain rule"), "\(p.errors[3])")
        #expect(p.errors[4].reason.hasPrefix("an Adblock rule for a path"), "\(p.errors[4])")
        #expect(p.errors[5].reason.hasPrefix("an Adblock rule for a path"), "\(p.errors[5])")
    }

    /// From a migration trial: Pi-hole's custom.list (local records) dropped in as a list. Its
    /// names are blocked, as any hosts line's, but reported (`mapped`); a host's short name
    /// beside a real address is an alias, skipped, not "a whole top-level domain".
    @Test func hostsLinesWithRealAddressesAreReported() {
        var mapped: [ListParser.MappedLine] = []
        var p = Parsed()
        let text = "192.168.1.10 nas.home.lan\n192.168.1.20 printer.home.lan printer\n192.168.1.21 scanner\n0.0.0.0 ads.example\n"
            + "127.0.0.1 t.example\n::1 u.example\n:: v.example\nfd00::5 w.home.lan\n"
        ListParser.parse(Array(text.utf8)[...], file: "custom.list", add: { wire, kind, line in p.entries.append((WireName.text(wire), kind, line)) },
                         mapped: { mapped.append($0) }, reject: { p.errors.append($0) })
        #expect(p.entries.map(\.0) == ["nas.home.lan", "printer.home.lan", "ads.example", "t.example", "u.example", "v.example", "w.home.lan"])
        #expect(p.errors.map(\.line) == [3])
        #expect(p.errors.first?.reason.contains("short name") == true)
        #expect(mapped.map(\.line) == [1, 2, 8])
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
