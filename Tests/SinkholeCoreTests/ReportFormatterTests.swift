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
        10.20.31.9          1        1  2026-11-26T11:00:00.000Z  2026-11-26T11:00:00.000Z  sbmsa.wiki (1)
        10.20.31.10         1        1  2026-11-26T13:00:00.000Z  2026-11-26T13:00:00.000Z  cdn.msstorageboxes.com (1)

        """)
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
}
