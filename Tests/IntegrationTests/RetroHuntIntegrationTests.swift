import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

/// The query history and the retro-hunt through the running server: queries from several
/// loopback clients, then a list dropped into the watched directory.
@Suite struct RetroHuntIntegrationTests {
    static let records = ["c2.example. 300 IN A 192.0.2.66", "www.c2.example. 300 IN A 192.0.2.67",
                          "benign.example. 300 IN A 192.0.2.68", "evil.example. 300 IN A 192.0.2.69"]

    func ask(_ name: String, from client: String, _ h: TestHarness, type: UInt16 = RRType.a) -> Message? {
        let source = SocketAddress(address: IPAddress.parse(client) ?? [], port: 0)
        return DNSTestClient.udp(DNSTestClient.query(name, type: type), to: h.address, from: source).flatMap { Message(wire: $0) }
    }

    func retroHits(_ h: TestHarness) throws -> [[String: Any]] {
        try h.blockLogLines().filter { $0.at("event.action") as? String == "retro-hit" }
    }

    @Test func droppingAListReportsEachClientThatResolvedItOnce() throws {
        let h = try TestHarness(lists: ["test.txt": "evil.example\n"], records: RetroHuntIntegrationTests.records) {
            $0.queryHistoryPath = NSTemporaryDirectory() + "sinkhole-history-\(UUID().uuidString).db"
        }
        defer {
            let path = h.server.configuration.queryHistoryPath ?? ""
            h.stop()
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        let hunter = try #require(h.server.hunter)
        #expect(hunter.waitForHunts(after: 0, timeout: 10), "the start-up hunt")
        // Three clients resolve c2.example (one also www.c2.example); a fourth only a benign
        // name; a fifth asks for evil.example, which is already blocked.
        for client in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            #expect(ask("c2.example", from: client, h)?.rcode == Rcode.noError)
        }
        #expect(ask("C2.example", from: "127.0.0.2", h, type: RRType.aaaa) != nil)
        #expect(ask("www.c2.example", from: "127.0.0.3", h)?.rcode == Rcode.noError)
        #expect(ask("benign.example", from: "127.0.0.5", h)?.rcode == Rcode.noError)
        #expect(ask("evil.example", from: "127.0.0.6", h)?.rcode == Rcode.nxDomain)

        let hunts = hunter.counts.hunts
        let g = h.server.store.generation
        try "c2.example\nevil.example\n".write(toFile: h.directory.appendingPathComponent("lists/intel.txt").path,
                                               atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1))
        #expect(ask("c2.example", from: "127.0.0.2", h)?.rcode == Rcode.nxDomain, "enforced before the hunt")
        #expect(hunter.waitForHunts(after: hunts, timeout: 10))

        let hits = try retroHits(h)
        let pairs = hits.map { "\($0.at("source.ip") as? String ?? "?") \($0.at("dns.question.name") as? String ?? "?")" }.sorted()
        #expect(pairs == ["127.0.0.2 c2.example", "127.0.0.3 c2.example", "127.0.0.3 www.c2.example", "127.0.0.4 c2.example"])
        let two = try #require(hits.first { $0.at("source.ip") as? String == "127.0.0.2" })
        #expect(two.at("sinkhole.history.count") as? Int == 2)
        #expect(two.at("sinkhole.history.types") as? [String] == ["A", "AAAA"])
        #expect(two.at("rule.ruleset") as? String == "intel.txt")
        #expect(two.at("rule.name") as? String == "c2.example")
        #expect(two.at("sinkhole.rule_line") as? Int == 1)
        #expect(h.server.metrics.exposition().contains("sinkhole_retro_hits_total 4"))

        // The list is rewritten with one more name: the pairs already reported are not repeated.
        let again = hunter.counts.hunts
        let g2 = h.server.store.generation
        try "c2.example\nevil.example\nbenign.example\n".write(
            toFile: h.directory.appendingPathComponent("lists/intel.txt").path, atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g2, timeout: 1))
        #expect(hunter.waitForHunts(after: again, timeout: 10))
        let after = try retroHits(h).map { "\($0.at("source.ip") as? String ?? "?") \($0.at("dns.question.name") as? String ?? "?")" }
        #expect(after.sorted() == (pairs + ["127.0.0.5 benign.example"]).sorted())
        // Blocked queries never enter the history.
        let stored = try #require(h.server.history).entries()
        #expect(!stored.contains { $0.name == "evil.example" })
        #expect(!stored.contains { $0.client == "127.0.0.6" })
    }

    @Test func aStalledHistoryWriterNeverDelaysOrFailsAnswers() throws {
        let h = try TestHarness(lists: ["test.txt": "evil.example\n"], records: RetroHuntIntegrationTests.records) {
            $0.queryHistoryPath = NSTemporaryDirectory() + "sinkhole-history-\(UUID().uuidString).db"
            $0.historyCapacity = 8
        }
        defer {
            let path = h.server.configuration.queryHistoryPath ?? ""
            h.stop()
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        let history = try #require(h.server.history)
        // Hold the database's write lock from outside, as a long pruning or a slow disk would.
        try history.holdWriteLock {
            for i in 0..<200 {
                #expect(ask("benign.example", from: "127.0.0.\(2 + i % 3)", h)?.rcode == Rcode.noError)
            }
        }
        let counts = history.counts
        #expect(counts.recorded + counts.dropped == 200)
        #expect(counts.dropped > 0)
        #expect(h.server.metrics.exposition().contains("sinkhole_history_queries_dropped"))
    }
}

/// The "done when" of the retro-hunt, through the built binary with dig from several loopback
/// clients, `sinkhole hunt`, and the history file read with the sqlite3 tool.
@Suite struct RetroHuntBinaryTests {
    @Test func binaryReportsRetroHitsAndHuntPrintsTheSame() throws {
        let upstream = try FakeUpstream(records: RetroHuntIntegrationTests.records)
        defer { upstream.stop() }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-hunt-\(UUID().uuidString)")
        let lists = work.appendingPathComponent("lists")
        try FileManager.default.createDirectory(at: lists, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        try "evil.example\n".write(to: lists.appendingPathComponent("base.txt"), atomically: true, encoding: .utf8)
        let log = work.appendingPathComponent("block.log").path
        let db = work.appendingPathComponent("history.db").path
        let sinkhole = SinkholeProcess(arguments: [
            "serve", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description,
            "--blocklist-dir", lists.path, "--block-log", log, "--query-history", db,
        ])
        #expect(try sinkhole.start(), "\(sinkhole.stderr)")
        let port = String(sinkhole.port)
        #expect(sinkhole.waitForLog("retro-hunt done", count: 1), "start-up hunt: \(sinkhole.stderr)")
        for client in ["127.0.0.2", "127.0.0.3"] {
            let answer = try runTool("dig", ["-p", port, "-b", client, "@127.0.0.1", "+short", "c2.example"])
            #expect(answer.contains("192.0.2.66"), "\(answer)")
        }
        _ = try runTool("dig", ["-p", port, "-b", "127.0.0.4", "@127.0.0.1", "+short", "benign.example"])
        _ = try runTool("dig", ["-p", port, "-b", "127.0.0.5", "@127.0.0.1", "evil.example"])

        let intel = lists.appendingPathComponent("intel.txt")
        try "c2.example\nevil.example\n".write(to: intel, atomically: true, encoding: .utf8)
        #expect(sinkhole.waitForLog("retro-hunt done", count: 2), "\(sinkhole.stderr)")
        let blocked = try runTool("dig", ["-p", port, "-b", "127.0.0.2", "@127.0.0.1", "c2.example"])
        #expect(blocked.contains("status: NXDOMAIN"))
        #expect(sinkhole.stop(signal: SIGTERM) == 0)

        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let retro = lines.filter { $0.at("event.action") as? String == "retro-hit" }
        let logged = retro.map { "\($0.at("source.ip") as? String ?? "") \($0.at("dns.question.name") as? String ?? "")" }.sorted()
        #expect(logged == ["127.0.0.2 c2.example", "127.0.0.3 c2.example"])

        // `sinkhole report` on the same log counts the blocked queries only, not the findings.
        let attempts = lines.filter { $0.at("event.action") as? String != "retro-hit" }
        let c2Blocked = try #require(attempts.first { $0.at("dns.question.name") as? String == "c2.example" })
        let report = try runSinkhole(["report", "--by", "domain", "--format", "json", log])
        #expect(report.status == 0, "\(report.output)")
        // stdout's JSON, then stderr's word on the retro-hits it leaves out (the output holds both).
        let parts = report.output.components(separatedBy: "report: 2 retro-hits (2 clients that resolved a name before a list blocked it) not in this output")
        #expect(parts.count == 2, "\(report.output)")
        let byDomain = try #require(try JSONSerialization.jsonObject(with: Data(parts[0].utf8)) as? [[String: Any]])
        #expect(byDomain.map { $0["domain"] as? String } == ["c2.example", "evil.example"])
        #expect(byDomain.map { $0["attempts"] as? Int } == [1, 1])
        #expect(byDomain.first?["clients"] as? Int == 1)
        #expect(byDomain.first?["first_seen"] as? String == c2Blocked["@timestamp"] as? String)

        let hunt = try runSinkhole(["hunt", "--query-history", db, "--format", "json", intel.path])
        #expect(hunt.status == 0, "\(hunt.output)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(hunt.output.utf8)) as? [[String: Any]])
        #expect(rows.map { "\($0["client"] as? String ?? "") \($0["name"] as? String ?? "")" }.sorted() == logged)
        #expect(rows.allSatisfy { $0["list"] as? String == "intel.txt" && $0["count"] as? Int == 1 })

        let table = try runSinkhole(["hunt", "--query-history", db, "--since", "1h", intel.path])
        #expect(table.output.contains("CLIENT") && table.output.contains("127.0.0.3") && table.output.contains("c2.example"))
        let none = try runSinkhole(["hunt", "--query-history", db, lists.appendingPathComponent("base.txt").path])
        #expect(none.status == 1, "evil.example was blocked all along: nobody resolved it")
        #expect(none.output.contains("these lists block (1 name entry in \(lists.appendingPathComponent("base.txt").path))"), "names the lists it read: \(none.output)")
        // An address list cannot be hunted (the history holds names, not answers): said so.
        let ips = work.appendingPathComponent("c2.ips").path
        try "203.0.113.66\n198.51.100.0/24\n".write(toFile: ips, atomically: true, encoding: .utf8)
        let addresses = try runSinkhole(["hunt", "--query-history", db, ips])
        #expect(addresses.status == 1)
        #expect(addresses.output.contains("2 address entries (IP indicators) not hunted"), "\(addresses.output)")
        // Allowlist ranges are no indicators: they are not counted as left out.
        let exempt = work.appendingPathComponent("ok.ips.allow").path
        try "198.51.100.7\n".write(toFile: exempt, atomically: true, encoding: .utf8)
        let withExempt = try runSinkhole(["hunt", "--query-history", db, ips, exempt])
        #expect(withExempt.output.contains("2 address entries (IP indicators) not hunted"), "\(withExempt.output)")
        let onlyExempt = try runSinkhole(["hunt", "--query-history", db, exempt])
        #expect(!onlyExempt.output.contains("not hunted"), "\(onlyExempt.output)")
        let missing = try runSinkhole(["hunt", "--query-history", work.appendingPathComponent("nope.db").path, intel.path])
        #expect(missing.status == 2 && missing.output.contains("nope.db"), "\(missing.output)")

        let sqlite = try runTool("sqlite3", [db, "SELECT client, name, qtype, count FROM query_history ORDER BY client, name"])
        #expect(sqlite.contains("127.0.0.2|c2.example|A|1"), "\(sqlite)")
        #expect(sqlite.contains("127.0.0.4|benign.example|A|1"))
        #expect(!sqlite.contains("evil.example"))
    }

    /// A history path whose directory is missing is a configuration error: the start fails with
    /// its reason. A file that is not a database is data gone bad: it is moved aside (kept as it
    /// was), a new history is started, and DNS is served.
    @Test func anUnusableHistoryPathFailsStartUpAndAGarbledFileIsMovedAside() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-hunt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work.appendingPathComponent("lists"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        try "evil.example\n".write(to: work.appendingPathComponent("lists/a.txt"), atomically: true, encoding: .utf8)
        let base = ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--blocklist-dir", work.path + "/lists"]
        let missing = try SinkholeProcess.run(base + ["--query-history", "/nonexistent/dir/history.db"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("cannot open query history /nonexistent/dir/history.db"), "\(missing.stderr)")

        let garbage = work.appendingPathComponent("garbage.db").path
        let junk = String(repeating: "not a database\n", count: 400)
        try junk.write(toFile: garbage, atomically: true, encoding: .utf8)
        let s = SinkholeProcess(arguments: base + ["--query-history", garbage])
        #expect(try s.start(), "\(s.stderr)")
        defer { _ = s.stop() }
        #expect(DNSTestClient.ask("evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: s.port))?.rcode == Rcode.nxDomain)
        #expect(s.stderr.contains("query history is not a readable database: moved aside, a new one started"), "\(s.stderr)")
        let aside = try FileManager.default.contentsOfDirectory(atPath: work.path).filter { $0.hasPrefix("garbage.db.unreadable-") }
        #expect(aside.count == 1)
        #expect(try aside.first.map { try String(contentsOfFile: work.path + "/" + $0, encoding: .utf8) } == junk, "kept as it was")
        let tables = try runTool("sqlite3", [garbage, ".tables"])
        #expect(tables.contains("query_history"), "a new history: \(tables)")
    }
}
