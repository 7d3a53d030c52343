import Testing
@testable import SinkholeCore

/// Groupings and filters of `sinkhole report`, with known answers over `ReportFixture.lines`.
@Suite struct ReportQueryTests {
    let ms = ReportFixture.ms

    @Test func byClientCountsAttemptsDistinctDomainsFirstLastAndTopDomains() {
        let a = ReportFixture.aggregate(ReportQuery(grouping: .client))
        #expect(a.lines == 8)
        #expect(a.malformed == 0)
        #expect(a.matched == 8)
        let t = a.table()
        #expect(t.columns.map(\.name) == ["client", "attempts", "domains", "first_seen", "last_seen", "top_domains"])
        // Most attempts first; ties in address order, IPv4 before IPv6.
        #expect(t.keys == ["10.20.31.7", "10.20.31.9", "10.20.31.10", "192.168.1.5", "2001:db8::7"])
        #expect(t.value(0, "attempts") == .count(3))
        #expect(t.value(0, "domains") == .count(3))   // the WWW. name is lowercased, still a name of its own
        #expect(t.value(0, "first_seen") == .time(ms("2026-11-26T10:00:00Z")))
        #expect(t.value(0, "last_seen") == .time(ms("2026-11-26T12:00:00Z")))
        #expect(t.value(0, "top_domains") == .counts([
            NamedCount(name: "msstorageboxes.com", count: 1), NamedCount(name: "sbmsa.wiki", count: 1),
            NamedCount(name: "www.msstorageboxes.com", count: 1),
        ]))
        #expect(t.value(1, "attempts") == .count(2))
        #expect(t.value(1, "first_seen") == .time(ms("2026-11-26T11:00:00Z")))
        #expect(t.value(1, "last_seen") == .time(ms("2026-11-26T13:30:00Z")))
        // The line of a later schema, with an action this version does not write, counts like any other attempt.
        #expect(t.value(2, "top_domains") == .counts([NamedCount(name: "cdn.msstorageboxes.com", count: 1)]))
        #expect(t.totalRows == 5)
    }

    /// `--domain` also takes attempts whose rule is in the domain: a name blocked because its
    /// CNAME pointed into a listed domain is a client reaching for that domain.
    @Test func domainFilterTakesCNAMEBlocksByTheirRule() throws {
        let query = ReportQuery(grouping: .client, domains: [try DomainPattern("msstorageboxes.com")])
        #expect(query.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "cloaked.example.org",
                                             rule: "msstorageboxes.com", action: "nxdomain")))
        #expect(query.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "www.msstorageboxes.com",
                                             rule: "msstorageboxes.com", action: "nxdomain")))
        #expect(!query.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "other.example",
                                              rule: "other.example", action: "nxdomain")))
        let narrow = ReportQuery(grouping: .client, domains: [try DomainPattern("cdn.msstorageboxes.com")])
        #expect(!narrow.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "cloaked.example.org",
                                               rule: "msstorageboxes.com", action: "nxdomain")), "the rule is above the name asked for")
        // The same through the line reader `sinkhole report` uses.
        let lines = [
            ReportFixture.line("2026-11-26T10:00:00.000Z", "10.20.31.7", "cloaked.example.org", rule: "msstorageboxes.com",
                               list: "crowdstrike-3cx.txt", matchedOn: "cname"),
            ReportFixture.line("2026-11-26T10:01:00.000Z", "10.20.31.8", "other.example", rule: "other.example", list: "x.txt"),
        ]
        let t = ReportFixture.table(ReportQuery(grouping: .domain, domains: [try DomainPattern("msstorageboxes.com")]), lines)
        #expect(t.totalRows == 1 && t.value(0, "domain") == .text("cloaked.example.org"), "\(t)")
    }

    @Test func retroHitLinesAreNotCountedAsBlockedAttempts() {
        let query = ReportQuery(grouping: .client)
        #expect(query.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "c2.example", action: "nxdomain")))
        #expect(!query.accepts(BlockLogRecord(time: 1, client: "192.0.2.1", domain: "c2.example", action: "retro-hit")))
    }

    @Test func retroHitLinesAreSkippedWhenReadAsLinesToo() {
        // What `sinkhole report` reads from files: the retro-hunt's findings written before and
        // among the attempts, for listed names, known clients and new ones. None is an attempt.
        let retroHits = [
            ReportFixture.retroHit("2026-11-26T09:00:00.000Z", "10.20.31.7", "msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            ReportFixture.retroHit("2026-11-26T09:00:00.001Z", "10.20.31.44", "update.msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            ReportFixture.retroHit("2026-11-26T11:30:00.000Z", "10.20.31.9", "sbmsa.wiki", rule: "sbmsa.wiki", list: "new-feed.txt"),
            // The same action with a JSON escape in it: still a retro-hit.
            #"{"@timestamp":"2026-11-26T09:30:00.000Z","event":{"action":"retro\u002dhit"},"source":{"ip":"10.20.31.45"},"dns":{"question":{"name":"sbmsa.wiki"}},"rule":{"name":"sbmsa.wiki","ruleset":"new-feed.txt"}}"#,
        ]
        #expect(retroHits.allSatisfy { BlockLogRecord.parse($0)?.action == "retro-hit" })
        for grouping in ReportGrouping.allCases {
            let plain = ReportFixture.aggregate(ReportQuery(grouping: grouping))
            let mixed = ReportFixture.aggregate(ReportQuery(grouping: grouping), retroHits + ReportFixture.lines)
            #expect(mixed.table().rows == plain.table().rows, "\(grouping)")
            #expect(mixed.lines == plain.lines + retroHits.count)   // read, well-formed, not counted
            #expect(mixed.malformed == 0)
            #expect(mixed.matched == plain.matched)
        }
        let onlyHits = ReportFixture.aggregate(ReportQuery(grouping: .domain), retroHits)
        #expect(onlyHits.table().rows.isEmpty)
        #expect(onlyHits.matched == 0)
    }

    /// Retro-hits are not attempts, but they are listed apart, with the same client and domain
    /// filters, and in the time window when their resolutions may fall in it.
    @Test func retroHitsAreListedApartWithTheFilters() throws {
        let hits = [
            ReportFixture.retroHit("2026-11-26T09:00:00.000Z", "10.20.31.7", "msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            ReportFixture.retroHit("2026-11-26T11:30:00.000Z", "10.20.31.9", "sbmsa.wiki", rule: "sbmsa.wiki", list: "new-feed.txt"),
        ]
        let all = ReportFixture.aggregate(ReportQuery(grouping: .client), hits + ReportFixture.lines)
        #expect(all.retroHits.map(\.client) == ["10.20.31.7", "10.20.31.9"])
        let first = try #require(all.retroHits.first)
        // Resolved from a day before the hunt to an hour before it, 14 times (the fixture's history).
        #expect(first.firstSeen == ReportFixture.ms("2026-11-25T09:00:00.000Z"))
        #expect(first.lastSeen == ReportFixture.ms("2026-11-26T08:00:00.000Z"))
        #expect(first.count == 14 && first.list == "crowdstrike-3cx.txt" && first.name == "msstorageboxes.com")
        var byClient = ReportQuery(grouping: .domain)
        byClient.clients = [try #require(ClientPattern("10.20.31.9"))]
        #expect(ReportFixture.aggregate(byClient, hits).retroHits.map(\.name) == ["sbmsa.wiki"])
        var byDomain = ReportQuery(grouping: .list)
        byDomain.domains = [try DomainPattern("msstorageboxes.com")]
        #expect(ReportFixture.aggregate(byDomain, hits).retroHits.map(\.client) == ["10.20.31.7"])
        // The first one's resolutions ended 2026-11-26T08:00, the second's 10:30.
        var window = ReportQuery(grouping: .client)
        window.since = ReportFixture.ms("2026-11-26T09:00:00.000Z")
        #expect(ReportFixture.aggregate(window, hits).retroHits.map(\.client) == ["10.20.31.9"])
        window.since = nil
        window.until = ReportFixture.ms("2026-11-25T09:00:00.000Z")
        #expect(ReportFixture.aggregate(window, hits).retroHits.isEmpty, "until excludes its own instant")
        let table = ReportFormatter.text(LoggedRetroHit.table(all.retroHits))
        #expect(table.hasPrefix("CLIENT      NAME"), "\(table)")
        #expect(table.contains("10.20.31.7  msstorageboxes.com  2026-11-25T09:00:00.000Z  2026-11-26T08:00:00.000Z     14  crowdstrike-3cx.txt"), "\(table)")
    }

    @Test func topDomainsAreOrderedByAttemptsAndCut() {
        let lines = (0..<3).map { _ in ReportFixture.line("2026-11-26T10:00:00Z", "10.0.0.1", "b.example", rule: "b.example", list: "l") }
            + [ReportFixture.line("2026-11-26T10:00:00Z", "10.0.0.1", "a.example", rule: "a.example", list: "l")]
            + (0..<2).map { _ in ReportFixture.line("2026-11-26T10:00:00Z", "10.0.0.1", "c.example", rule: "c.example", list: "l") }
        let t = ReportFixture.table(ReportQuery(grouping: .client, topDomains: 2), lines)
        #expect(t.value(0, "top_domains") == .counts([NamedCount(name: "b.example", count: 3), NamedCount(name: "c.example", count: 2)]))
        #expect(t.value(0, "domains") == .count(3))
    }

    @Test func clientsWithEqualAttemptsSortNumericallyNotAsText() {
        let lines = ["10.0.0.10", "10.0.0.9", "fd00::1", "10.0.0.100", "::1"].map {
            ReportFixture.line("2026-11-26T10:00:00Z", $0, "x.example", rule: "x.example", list: "l")
        }
        #expect(ReportFixture.table(ReportQuery(grouping: .client), lines).keys == ["10.0.0.9", "10.0.0.10", "10.0.0.100", "::1", "fd00::1"])
    }

    @Test func byDomainLowercasesAndCountsClientsRuleAndList() {
        let t = ReportFixture.table(ReportQuery(grouping: .domain))
        #expect(t.columns.map(\.name) == ["domain", "attempts", "clients", "first_seen", "last_seen", "rule", "list"])
        #expect(t.keys == ["sbmsa.wiki", "ads.example.net", "cdn.msstorageboxes.com", "msstorageboxes.com",
                           "notmsstorageboxes.com", "www.cloaked.example.com", "www.msstorageboxes.com"])
        #expect(t.value(0, "attempts") == .count(2))
        #expect(t.value(0, "clients") == .count(2))
        #expect(t.value(0, "first_seen") == .time(ms("2026-11-26T11:00:00Z")))
        #expect(t.value(0, "last_seen") == .time(ms("2026-11-26T12:00:00Z")))
        #expect(t.value(0, "rule") == .texts(["sbmsa.wiki"]))
        #expect(t.value(0, "list") == .texts(["crowdstrike-3cx.txt"]))
        // CNAME cloaking: the name asked, blocked by the rule of the name it pointed to.
        #expect(t.value(5, "rule") == .texts(["msstorageboxes.com"]))
    }

    @Test func byDomainNamesEveryRuleThatBlockedAName() {
        let lines = [
            ReportFixture.line("2026-11-26T10:00:00Z", "10.0.0.1", "a.evil.example", rule: "evil.example", list: "one.txt"),
            ReportFixture.line("2026-11-26T10:00:01Z", "10.0.0.1", "a.evil.example", rule: "a.evil.example", list: "two.txt"),
            ReportFixture.line("2026-11-26T10:00:02Z", "10.0.0.2", "A.evil.example", rule: "a.evil.example", list: "two.txt"),
        ]
        let t = ReportFixture.table(ReportQuery(grouping: .domain), lines)
        #expect(t.keys == ["a.evil.example"])
        #expect(t.value(0, "clients") == .count(2))
        #expect(t.value(0, "rule") == .texts(["a.evil.example", "evil.example"]))
        #expect(t.value(0, "list") == .texts(["two.txt", "one.txt"]))
    }

    @Test func byListCountsAttemptsClientsAndDomains() {
        let t = ReportFixture.table(ReportQuery(grouping: .list))
        #expect(t.columns.map(\.name) == ["list", "attempts", "clients", "domains", "first_seen", "last_seen"])
        #expect(t.keys == ["crowdstrike-3cx.txt", "ads.txt"])
        #expect(t.rows[0] == [.text("crowdstrike-3cx.txt"), .count(6), .count(3), .count(5),
                              .time(ms("2026-11-26T10:00:00Z")), .time(ms("2026-11-26T13:30:00Z"))])
        #expect(t.rows[1] == [.text("ads.txt"), .count(2), .count(2), .count(2),
                              .time(ms("2026-11-25T23:59:59.999Z")), .time(ms("2026-11-27T00:00:00Z"))])
    }

    @Test func domainFilterAnswersWhichClientsTriedThePublishedDomainsAndWhenFirst() throws {
        let query = ReportQuery(grouping: .client, domains: [try DomainPattern("msstorageboxes.com"), try DomainPattern("sbmsa.wiki")])
        let t = ReportFixture.table(query)
        // Not notmsstorageboxes.com (no label boundary), not the CNAME-cloaked name.
        #expect(t.keys == ["10.20.31.7", "10.20.31.9", "10.20.31.10"])
        #expect(t.value(0, "attempts") == .count(3))
        #expect(t.value(0, "first_seen") == .time(ms("2026-11-26T10:00:00Z")))
        #expect(t.value(1, "first_seen") == .time(ms("2026-11-26T11:00:00Z")))
        #expect(t.value(2, "first_seen") == .time(ms("2026-11-26T13:00:00Z")))
        let upper = ReportFixture.table(ReportQuery(grouping: .client, domains: [try DomainPattern("MSStorageBoxes.COM."), try DomainPattern("SBMSA.wiki")]))
        #expect(upper.rows == t.rows)
    }

    @Test func clientFilterTakesAddressesAndCIDRBlocks() throws {
        func keys(_ patterns: [String], _ grouping: ReportGrouping = .client) throws -> [String] {
            let clients = try patterns.map { try #require(ClientPattern($0)) }
            return ReportFixture.table(ReportQuery(grouping: grouping, clients: clients)).keys
        }
        #expect(try keys(["10.20.31.9"]) == ["10.20.31.9"])
        #expect(try keys(["10.20.31.9"], .domain) == ["sbmsa.wiki", "www.cloaked.example.com"])
        #expect(try keys(["10.0.0.0/8"]) == ["10.20.31.7", "10.20.31.9", "10.20.31.10"])
        #expect(try keys(["2001:db8::/32"]) == ["2001:db8::7"])
        #expect(try keys(["2001:DB8:0::7"]) == ["2001:db8::7"])
        #expect(try keys(["192.168.1.5", "10.20.31.10"]) == ["10.20.31.10", "192.168.1.5"])
        #expect(try keys(["10.20.31.1"]) == [])
    }

    @Test func timeFiltersSinceInclusiveUntilExclusiveDatesCoverWholeDays() throws {
        let now = ms("2026-11-26T13:15:00Z")
        func keys(since: String?, until: String?) throws -> [String] {
            let query = ReportQuery(grouping: .domain,
                                    since: try since.map { try ReportTime.bound($0, now: now, upper: false) },
                                    until: try until.map { try ReportTime.bound($0, now: now, upper: true) })
            return ReportFixture.table(query).keys.sorted()
        }
        let day26 = ["cdn.msstorageboxes.com", "msstorageboxes.com", "sbmsa.wiki", "www.cloaked.example.com", "www.msstorageboxes.com"]
        #expect(try keys(since: "2026-11-26", until: "2026-11-26") == day26)
        #expect(try keys(since: "2026-11-26T00:00:00Z", until: "2026-11-27T00:00:00Z") == day26)
        #expect(try keys(since: "2026-11-26T11:00:00Z", until: nil)
            == ["cdn.msstorageboxes.com", "notmsstorageboxes.com", "sbmsa.wiki", "www.cloaked.example.com"])
        #expect(try keys(since: nil, until: "2026-11-26T11:00:00Z") == ["ads.example.net", "msstorageboxes.com", "www.msstorageboxes.com"])
        #expect(try keys(since: nil, until: "2026-11-26T11:00:00+01:00") == ["ads.example.net"])
        // 2h before 13:15 is 11:15: the 12:00, 13:00 and 13:30 attempts and the next day's.
        #expect(try keys(since: "2h", until: nil)
            == ["cdn.msstorageboxes.com", "notmsstorageboxes.com", "sbmsa.wiki", "www.cloaked.example.com"])
        #expect(try keys(since: "120m", until: "15m") == ["sbmsa.wiki"])   // 11:15 to 13:00, 13:00 itself excluded
        #expect(try keys(since: "120m", until: "14m") == ["cdn.msstorageboxes.com", "sbmsa.wiki"])
        #expect(try keys(since: "7d", until: "1d") == [])
    }

    @Test func filtersCombineAndLimitCutsRowsAfterSorting() throws {
        let query = ReportQuery(grouping: .client, since: ms("2026-11-26T00:00:00Z"),
                                clients: [try #require(ClientPattern("10.20.31.0/24"))],
                                domains: [try DomainPattern("sbmsa.wiki")])
        #expect(ReportFixture.table(query).keys == ["10.20.31.7", "10.20.31.9"])
        let limited = ReportFixture.table(ReportQuery(grouping: .client, limit: 2))
        #expect(limited.keys == ["10.20.31.7", "10.20.31.9"])
        #expect(limited.totalRows == 5)
    }

    @Test func decodedRecordsGoThroughTheSameFiltersAndGroups() throws {
        let a = ReportAggregator(query: ReportQuery(grouping: .list, domains: [try DomainPattern("example.com")]))
        a.add(BlockLogRecord(time: 0, client: "10.0.0.1", domain: "www.example.com", rule: "example.com", list: "l.txt"))
        a.add(BlockLogRecord(time: 5, client: "10.0.0.2", domain: "example.org", rule: "example.org", list: "l.txt"))
        #expect(a.table().rows == [[.text("l.txt"), .count(1), .count(1), .count(1), .time(0), .time(0)]])
    }
}

/// `--client` and `--domain` patterns.
@Suite struct ReportFilterTests {
    @Test func domainPatternMatchesTheNameAndNamesBelowOnLabelBoundaries() throws {
        let p = try DomainPattern("MSStorageBoxes.com.")
        #expect(p.name == "msstorageboxes.com")
        #expect(p.matches("msstorageboxes.com"))
        #expect(p.matches("www.msstorageboxes.com"))
        #expect(p.matches("a.b.msstorageboxes.com"))
        #expect(!p.matches("notmsstorageboxes.com"))
        #expect(!p.matches("msstorageboxes.com.evil"))
        #expect(!p.matches("storageboxes.com"))
        // An escaped dot is inside a label, not between labels; an escaped backslash is not.
        #expect(!p.matches(#"a\.msstorageboxes.com"#))
        #expect(p.matches(#"a\\.msstorageboxes.com"#))
        // Spelled with a decimal escape, the same name as the block log's `a\.b`, as explain and
        // hunt read it.
        let escaped = try DomainPattern(#"A\046B.msstorageboxes.com"#)
        #expect(escaped.name == #"a\.b.msstorageboxes.com"#)
        #expect(escaped.matches(#"a\.b.msstorageboxes.com"#) && escaped.matches(#"x.a\.b.msstorageboxes.com"#))
        #expect(!escaped.matches("a.b.msstorageboxes.com"))
    }

    @Test func domainPatternRejectsWhatIsNotAName() {
        #expect(throws: DomainPattern.ParseError.wildcard("*.example.com")) { try DomainPattern("*.example.com") }
        #expect(throws: DomainPattern.ParseError.notAName("")) { try DomainPattern("") }
        #expect(throws: DomainPattern.ParseError.notAName(".")) { try DomainPattern(".") }
        #expect(throws: DomainPattern.ParseError.notAName("a..b")) { try DomainPattern("a..b") }
        #expect(throws: DomainPattern.ParseError.notAName("a b")) { try DomainPattern("a b") }
    }

    @Test func clientPatternParsesAddressesAndBlocks() throws {
        let block = try #require(ClientPattern("10.1.2.3/8"))
        #expect(block.network == [10, 0, 0, 0])
        #expect(block.prefixLength == 8)
        #expect(block.matches("10.255.0.1"))
        #expect(!block.matches("11.0.0.1"))
        #expect(!block.matches("not an address"))
        #expect(!block.matches("::a01:203"))
        let odd = try #require(ClientPattern("192.168.1.128/25"))
        #expect(odd.matches("192.168.1.200"))
        #expect(!odd.matches("192.168.1.127"))
        #expect(try #require(ClientPattern("0.0.0.0/0")).matches("203.0.113.9"))
        #expect(try #require(ClientPattern("fd00::/8")).matches("fd00:20::31:7"))
        // IPv4-mapped IPv6 is the IPv4 address, both ways.
        #expect(block.matches("::ffff:10.20.31.7"))
        #expect(try #require(ClientPattern("::ffff:10.20.31.7")).matches("10.20.31.7"))
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8", "fd00::/129", "example.com", "10.0.0"] {
            #expect(ClientPattern(bad) == nil, "\(bad)")
        }
    }
}
