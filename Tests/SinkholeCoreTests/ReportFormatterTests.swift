import Foundation
import Testing
@testable import SinkholeCore

/// Table, JSON and CSV output of `sinkhole report`.
@Suite struct ReportFormatterTests {
    @Test func tableAlignsColumnsAndRightAlignsCounts() throws {
        let query = ReportQuery(grouping: .client, domains: [try DomainPattern("msstorageboxes.com"), try DomainPattern("sbmsa.wiki")])
        let text = ReportFormatter.render(ReportFixture.table(query), as: .table)
        #expect(text == """
        CLIENT       ATTEMPTS  DOMAINS  FIRST SEEN                LAST SEEN                 TOP DOMAINS
        10.20.31.7          3        3  2026-11-26T10:00:00.000Z  2026-11-26T12:00:00.000Z  msstorageboxes.com (1), sbmsa.wiki (1), www.msstorageboxes.com (1)
        10.20.31.9          2        2  2026-11-26T11:00:00.000Z  2026-11-26T13:30:00.000Z  sbmsa.wiki (1), www.cloaked.example.com (1)
        10.20.31.10         1        1  2026-11-26T13:00:00.000Z  2026-11-26T13:00:00.000Z  cdn.msstorageboxes.com (1)

        """, "www.cloaked.example.com was blocked by the msstorageboxes.com rule (its CNAME)")
    }

    @Test func tableSaysWhenRowsWereLeftOutOrNothingMatched() {
        let limited = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .list, limit: 1)), as: .table)
        #expect(limited.hasSuffix("\n… and 1 more list (2 in all)\n"))
        #expect(ReportFormatter.render(ReportFixture.table(ReportQuery(since: 0, until: 0)), as: .table) == "no blocked attempts match\n")
    }

    @Test func tableNeverSendsControlCharactersToTheTerminal() throws {
        let line = #"{"@timestamp":"2026-11-26T10:00:00Z","source":{"ip":"10.0.0.1"},"dns":{"question":{"name":"x"}},"rule":{"ruleset":"evil\u001b[2J.txt"}}"#
        let text = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .list), [line]), as: .table)
        #expect(!text.contains("\u{1B}"))
        #expect(text.contains(#"evil\027[2J.txt"#))
    }

    @Test func jsonIsAnArrayOfObjectsWithSnakeCaseKeysAndTypedValues() throws {
        let text = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .client, limit: 2)), as: .json)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        #expect(rows.count == 2)
        #expect(Set(rows[0].keys) == ["client", "attempts", "domains", "first_seen", "last_seen", "top_domains"])
        #expect(rows[0]["client"] as? String == "10.20.31.7")
        #expect(rows[0]["attempts"] as? Int == 3)
        #expect(rows[0]["first_seen"] as? String == "2026-11-26T10:00:00.000Z")
        let top = try #require(rows[0]["top_domains"] as? [[String: Any]])
        #expect(top.first?["domain"] as? String == "msstorageboxes.com")
        #expect(top.first?["attempts"] as? Int == 1)
        // Keys in column order, one object per line.
        #expect(text.hasPrefix("[\n  {\"client\":\"10.20.31.7\",\"attempts\":3,\"domains\":3,\"first_seen\":"))

        let domains = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .domain)), as: .json)
        let first = try #require((try JSONSerialization.jsonObject(with: Data(domains.utf8)) as? [[String: Any]])?.first)
        #expect(first["domain"] as? String == "sbmsa.wiki")
        #expect(first["clients"] as? Int == 2)
        #expect(first["rule"] as? [String] == ["sbmsa.wiki"])
        #expect(first["list"] as? [String] == ["crowdstrike-3cx.txt"])
        #expect(ReportFormatter.render(ReportFixture.table(ReportQuery(since: 0, until: 0)), as: .json) == "[]\n")
    }

    @Test func jsonEscapesWhatNamesMayHold() throws {
        let line = #"{"@timestamp":"2026-11-26T10:00:00Z","source":{"ip":"10.0.0.1"},"dns":{"question":{"name":"a\\\"b\u0001"}}}"#
        let text = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .domain), [line]), as: .json)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        #expect(rows.first?["domain"] as? String == "a\\\"b\u{01}")
    }

    @Test func csvHasAHeaderRowAndQuotesPerRFC4180() throws {
        let lines = [
            ReportFixture.line("2026-11-26T10:00:00Z", "10.0.0.1", "x.example", rule: "x.example", list: "odd, \"quoted\" list.txt"),
            ReportFixture.line("2026-11-26T10:00:01Z", "10.0.0.2", "x.example", rule: "x.example", list: "plain.txt"),
            ReportFixture.line("2026-11-26T10:00:02Z", "10.0.0.2", "x.example", rule: "x.example", list: "plain.txt"),
        ]
        let text = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .list), lines), as: .csv)
        #expect(text == "list,attempts,clients,domains,first_seen,last_seen\r\n"
            + "plain.txt,2,1,1,2026-11-26T10:00:01.000Z,2026-11-26T10:00:02.000Z\r\n"
            + "\"odd, \"\"quoted\"\" list.txt\",1,1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z\r\n")
        let byClient = ReportFormatter.render(ReportFixture.table(ReportQuery(grouping: .client, limit: 1)), as: .csv)
        #expect(byClient == "client,attempts,domains,first_seen,last_seen,top_domains\r\n"
            + "10.20.31.7,3,3,2026-11-26T10:00:00.000Z,2026-11-26T12:00:00.000Z,"
            + "\"msstorageboxes.com (1), sbmsa.wiki (1), www.msstorageboxes.com (1)\"\r\n")
        #expect(ReportFormatter.render(ReportFixture.table(ReportQuery(since: 0, until: 0)), as: .csv)
            == "client,attempts,domains,first_seen,last_seen,top_domains\r\n")
    }

    @Test func csvCellsFromTheLogThatASpreadsheetWouldTakeForAFormulaArePrefixed() throws {
        // Names are chosen by the machine asking: `=1+2.msstorageboxes.com` must reach the
        // spreadsheet as text. Each way a formula can begin, in each column that carries log text.
        let t = ReportFixture.ms("2026-11-26T10:00:00Z")
        let byDomain = ReportTable(grouping: .domain, columns: ReportTable.columns(for: .domain), rows: [
            [.text("=1+2.msstorageboxes.com"), .count(3), .count(2), .time(t), .time(t), .texts(["msstorageboxes.com"]), .texts(["crowdstrike-3cx.txt"])],
            [.text("+x.example"), .count(1), .count(1), .time(t), .time(t), .texts(["-x.example"]), .texts(["@list.txt"])],
            [.text("\tx.example"), .count(1), .count(1), .time(t), .time(t), .texts(["\rx.example"]), .texts(["=SUM(1,2)", "plain.txt"])],
            [.text("=HYPERLINK(\"http://evil.example\")"), .count(1), .count(1), .time(t), .time(t), .texts(["x"]), .texts(["l.txt"])],
            // Ordinary names, and formula characters anywhere but first: unchanged.
            [.text("a=b.example"), .count(1), .count(1), .time(t), .time(t), .texts(["x-y.example"]), .texts(["plain.txt", "=evil.txt"])],
        ], totalRows: 5)
        #expect(ReportFormatter.render(byDomain, as: .csv) == "domain,attempts,clients,first_seen,last_seen,rule,list\r\n"
            + "\"'=1+2.msstorageboxes.com\",3,2,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n"
            + "\"'+x.example\",1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,\"'-x.example\",\"'@list.txt\"\r\n"
            + "\"'\tx.example\",1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,\"'\rx.example\",\"'=SUM(1,2), plain.txt\"\r\n"
            + "\"'=HYPERLINK(\"\"http://evil.example\"\")\",1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,x,l.txt\r\n"
            + "a=b.example,1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,x-y.example,\"plain.txt, =evil.txt\"\r\n")

        let byClient = ReportTable(grouping: .client, columns: ReportTable.columns(for: .client), rows: [
            [.text("@10.0.0.1"), .count(2), .count(1), .time(t), .time(t), .counts([NamedCount(name: "-2+3.example", count: 2)])],
            [.text("10.0.0.2"), .count(1), .count(1), .time(t), .time(t), .counts([NamedCount(name: "x.example", count: 1)])],
        ], totalRows: 2)
        #expect(ReportFormatter.render(byClient, as: .csv) == "client,attempts,domains,first_seen,last_seen,top_domains\r\n"
            + "\"'@10.0.0.1\",2,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,\"'-2+3.example (2)\"\r\n"
            + "10.0.0.2,1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,x.example (1)\r\n")
    }

    @Test func formulaLikeNamesFromALogArePrefixedInCSVOnly() throws {
        // From block log lines, as `report` reads them: the name asked, the rule and the list.
        let lines = [
            ReportFixture.line("2026-11-26T10:00:00Z", "10.20.31.7", "=1+2.msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            ReportFixture.line("2026-11-26T10:00:01Z", "10.20.31.7", "msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            ReportFixture.line("2026-11-26T10:00:02Z", "10.20.31.9", "-cmd.example", rule: "-cmd.example", list: "+feed.txt"),
        ]
        let byDomain = ReportFixture.table(ReportQuery(grouping: .domain), lines)
        #expect(ReportFormatter.render(byDomain, as: .csv) == "domain,attempts,clients,first_seen,last_seen,rule,list\r\n"
            + "\"'-cmd.example\",1,1,2026-11-26T10:00:02.000Z,2026-11-26T10:00:02.000Z,\"'-cmd.example\",\"'+feed.txt\"\r\n"
            + "\"'=1+2.msstorageboxes.com\",1,1,2026-11-26T10:00:00.000Z,2026-11-26T10:00:00.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n"
            + "msstorageboxes.com,1,1,2026-11-26T10:00:01.000Z,2026-11-26T10:00:01.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n")
        let byList = ReportFixture.table(ReportQuery(grouping: .list), lines)
        #expect(ReportFormatter.render(byList, as: .csv) == "list,attempts,clients,domains,first_seen,last_seen\r\n"
            + "crowdstrike-3cx.txt,2,1,2,2026-11-26T10:00:00.000Z,2026-11-26T10:00:01.000Z\r\n"
            + "\"'+feed.txt\",1,1,1,2026-11-26T10:00:02.000Z,2026-11-26T10:00:02.000Z\r\n")

        // JSON and the table show the names as they are: no spreadsheet reads them.
        let json = ReportFormatter.render(byDomain, as: .json)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        #expect(rows.map { $0["domain"] as? String } == ["-cmd.example", "=1+2.msstorageboxes.com", "msstorageboxes.com"])
        #expect(rows.first?["list"] as? [String] == ["+feed.txt"])
        #expect(!json.contains("'"))
        let text = ReportFormatter.render(byDomain, as: .table)
        #expect(text.contains("\n-cmd.example  "))
        #expect(text.contains("\n=1+2.msstorageboxes.com  "))
        #expect(text.contains("  +feed.txt\n"))
        #expect(!text.contains("'"))
    }
}
