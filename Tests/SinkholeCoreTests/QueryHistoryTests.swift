import Glibc
import Foundation
import Logging
@testable import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// A clock the test moves by hand, in ms since the epoch.
final class ManualClock: Sendable {
    private let value: Mutex<Int64>
    init(_ start: Int64) { value = Mutex(start) }
    var now: Int64 { value.withLock { $0 } }
    func set(_ ms: Int64) { value.withLock { $0 = ms } }
    func advance(_ ms: Int64) { value.withLock { $0 += ms } }
}

/// A temporary folder with a history file and list files, removed at the end.
final class HistoryFixture {
    let directory: URL
    let clock: ManualClock
    let history: QueryHistory
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    /// 2026-11-26T10:00:00Z
    static let start: Int64 = 1_795_687_200_000

    init(capacity: Int = 10_000, retention: Double = 30 * 86_400, flushInterval: Double = 3600,
         space: (@Sendable (String) -> (free: Int, total: Int)?)? = nil, logger: Logger = HistoryFixture.logger) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-history-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("lists"), withIntermediateDirectories: true)
        let clock = ManualClock(HistoryFixture.start)
        self.clock = clock
        var options = QueryHistory.Options()
        options.capacity = capacity
        options.retention = retention
        options.flushInterval = flushInterval   // tests flush by hand
        options.pruneInterval = 1e9
        options.now = { clock.now }
        if let space { options.space = space }
        history = try QueryHistory(path: directory.appendingPathComponent("history.db").path, options: options,
                                   logger: logger)
    }

    var listDirectory: String { directory.appendingPathComponent("lists").path }

    func record(_ client: String, _ name: String, _ type: UInt16 = RRType.a) {
        history.record(client: IPAddress.parse(client) ?? [], name: WireName.fromText(name) ?? [0], qtype: type)
    }

    func writeList(_ file: String, _ text: String) throws {
        try text.write(toFile: listDirectory + "/" + file, atomically: true, encoding: .utf8)
    }

    deinit {
        history.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite struct QueryHistoryTests {
    @Test func sightingsAreAggregatedPerClientNameTypeAndHour() throws {
        let f = try HistoryFixture()
        f.record("192.0.2.10", "WWW.Example.org")
        f.clock.advance(60_000)
        f.record("192.0.2.10", "www.example.org")
        f.clock.advance(60_000)
        f.record("192.0.2.10", "www.example.org")
        f.record("192.0.2.10", "www.example.org", RRType.aaaa)
        f.record("2001:db8::7", "www.example.org")
        f.clock.advance(3_600_000)   // the next hour
        f.record("192.0.2.10", "www.example.org")
        f.history.flush()
        let rows = try f.history.entries()
        let hour = HistoryFixture.start / 3_600_000
        #expect(rows.count == 4)
        let first = try #require(rows.first { $0.client == "192.0.2.10" && $0.qtype == RRType.a && $0.hour == hour })
        #expect(first.name == "www.example.org", "names are stored lowercase")
        #expect(first.count == 3)
        #expect(first.firstSeen == HistoryFixture.start)
        #expect(first.lastSeen == HistoryFixture.start + 120_000)
        #expect(rows.contains { $0.client == "192.0.2.10" && $0.qtype == RRType.aaaa && $0.count == 1 })
        #expect(rows.contains { $0.client == "2001:db8::7" && $0.count == 1 })
        #expect(rows.contains { $0.hour == hour + 1 && $0.count == 1 })
        // A second flush of the same hour adds to the row rather than adding a row.
        f.record("192.0.2.10", "www.example.org")
        f.history.flush()
        #expect(try f.history.entries().first { $0.hour == hour + 1 }?.count == 2)
        #expect(try f.history.entries().count == 4)
        #expect(f.history.counts.written == 7)
        #expect(try f.history.storedCounts() == (1, 2))
    }

    @Test func rowsPastTheRetentionArePrunedWithTheirNamesAndClients() throws {
        let f = try HistoryFixture(retention: 7 * 86_400)
        f.record("192.0.2.1", "old.example")
        f.record("192.0.2.2", "kept.example")
        f.history.flush()
        f.clock.advance(6 * 86_400_000)
        f.record("192.0.2.2", "kept.example")
        f.record("192.0.2.3", "new.example")
        f.history.flush()
        f.clock.advance(2 * 86_400_000)   // day 8: the first hour is past a 7-day retention
        f.history.pruneNow()
        let rows = try f.history.entries()
        #expect(rows.map(\.name).sorted() == ["kept.example", "new.example"])
        #expect(!rows.contains { $0.hour == HistoryFixture.start / 3_600_000 })
        #expect(f.history.counts.pruned == 2)
        #expect(try f.history.storedCounts() == (2, 2), "old.example and 192.0.2.1 are gone")
        // Pruning again removes nothing more.
        f.history.pruneNow()
        #expect(try f.history.entries().count == 2)
    }

    @Test func aWriterThatFallsBehindDropsAndCounts() throws {
        let f = try HistoryFixture(capacity: 8)   // one sighting per buffer; nothing flushes meanwhile
        for _ in 0..<50 { f.record("192.0.2.1", "busy.example") }
        let counts = f.history.counts
        #expect(counts.recorded + counts.dropped == 50)
        #expect(counts.dropped >= 42)
        f.history.flush()
        #expect(f.history.counts.written == counts.recorded)
        // With room again, sightings are kept.
        f.record("192.0.2.1", "busy.example")
        #expect(f.history.counts.recorded == counts.recorded + 1)
    }

    /// From a failure-mode trial: another process cutting the -shm file short crashed the whole
    /// resolver with SIGBUS at the next write (SQLite maps that file). The history is switched
    /// off instead, said once, and what it would have written is counted as dropped.
    @Test func aCutShortShmFileSwitchesTheHistoryOffInsteadOfCrashing() throws {
        let recorder = LogRecorder()
        let f = try HistoryFixture(logger: recorder.logger)
        f.record("192.0.2.1", "before.example")
        f.history.flush()
        let shm = f.directory.appendingPathComponent("history.db-shm").path
        #expect(truncate(shm, 0) == 0)
        f.record("192.0.2.1", "after.example")
        f.history.flush()
        #expect(f.history.database == nil)
        #expect(recorder.events("query history switched off: its -shm file was cut short or made unwritable by another process; restart sinkhole to record again (DNS unaffected)").count == 1)
        #expect(f.history.counts.dropped == 1 && f.history.counts.written == 1)
        f.record("192.0.2.1", "later.example")
        f.history.flush()
        #expect(f.history.counts.dropped == 2)
    }

    /// From a failure-mode trial: the file removed while running took every later sighting into
    /// the deleted file, lost at the stop, with nothing said. A new file is started at the path.
    @Test func aRemovedHistoryFileIsStartedAnew() throws {
        let recorder = LogRecorder()
        let f = try HistoryFixture(logger: recorder.logger)
        f.record("192.0.2.1", "before.example")
        f.history.flush()
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: f.directory.appendingPathComponent("history.db" + suffix).path)
        }
        f.record("192.0.2.1", "after.example")
        f.history.flush()
        #expect(FileManager.default.fileExists(atPath: f.history.path))
        #expect(try f.history.entries().map(\.name) == ["after.example"])
        #expect(recorder.events("query history file removed or replaced while running: a new one is started at the path (what was recorded since then is in the old file only)").count == 1)
    }

    /// A database renamed over the history file while it runs is opened as it is: the old
    /// database's -wal file, still at the path, is not replayed onto it (a review: the
    /// replacement's tables vanished under the old pages).
    @Test func aDatabaseRenamedOverTheHistoryKeepsItsOwnPages() throws {
        let f = try HistoryFixture()
        for i in 0..<50 { f.record("192.0.2.\(i)", "before\(i).example") }
        f.history.flush()
        let other = f.directory.appendingPathComponent("other.db").path
        _ = try runTool("sqlite3", [other, "CREATE TABLE keep(x); INSERT INTO keep VALUES (42);"])
        #expect(rename(other, f.history.path) == 0)
        f.record("192.0.2.1", "after.example")
        f.history.flush()
        #expect(try f.history.entries().map(\.name) == ["after.example"])
        #expect(try runTool("sqlite3", [f.history.path, "SELECT x FROM keep;"]).trimmingCharacters(in: .whitespacesAndNewlines) == "42")
    }

    /// A write that fails (the database locked by another process past the 5 s wait) loses its
    /// sightings: counted as dropped (they were in no counter), said at most once a minute.
    @Test func aFailedWriteCountsItsSightingsAsDropped() throws {
        let recorder = LogRecorder()
        let f = try HistoryFixture(logger: recorder.logger)
        f.record("192.0.2.1", "locked.example")
        f.record("192.0.2.2", "locked.example")
        try f.history.holdWriteLock { f.history.flush() }
        #expect(f.history.counts.dropped == 2 && f.history.counts.written == 0)
        #expect(recorder.events("query history: write failed; sightings lost (said at most once a minute)").count == 1)
        #expect(recorder.events("query history writer fell behind; sightings dropped (DNS unaffected)").isEmpty, "said once, by the write failure")
    }

    /// A file system nearly full pauses the recording (sightings dropped and counted, one error
    /// line, the gauge at 1) before the history fills the disk; it goes on, with one notice,
    /// once free space is 1% above the floor again.
    @Test func aNearlyFullDiskPausesRecording() throws {
        let gib = 1 << 30
        let free = ManualClock(Int64(10 * gib))   // of 100 GiB: pause under 5 GiB, go on from 6 GiB
        let recorder = LogRecorder()
        let f = try HistoryFixture(space: { _ in (Int(free.now), 100 * gib) }, logger: recorder.logger)
        f.record("192.0.2.1", "before.example")
        f.history.flush()
        #expect(try f.history.entries().map(\.name) == ["before.example"])

        free.set(Int64(4 * gib))
        for _ in 0..<3 { f.record("192.0.2.1", "during.example") }
        f.history.flush()
        free.set(Int64(gib * 11 / 2))   // above the floor, not yet 1% above it
        f.record("192.0.2.1", "during.example")
        f.history.flush()
        #expect(try f.history.entries().map(\.name) == ["before.example"])
        #expect(f.history.counts.dropped == 4)
        #expect(f.history.counts.paused)
        let paused = recorder.events.withLock { $0 }.filter { $0.message.hasPrefix("query history paused") }
        #expect(paused.map(\.level) == [.error])
        #expect(paused.first?.metadata["free_mib"] == "4096")
        #expect(paused.first?.metadata["floor_mib"] == "5120")

        free.set(Int64(7 * gib))
        f.record("192.0.2.1", "after.example")
        f.history.flush()
        #expect(try f.history.entries().map(\.name).sorted() == ["after.example", "before.example"])
        #expect(!f.history.counts.paused)
        #expect(recorder.events.withLock { $0 }.filter { $0.message.hasPrefix("query history recording again") }.map(\.level) == [.notice])
        // The floor: 5% of the file system, at least 512 MiB, at most half of a small one.
        #expect(QueryHistory.spaceFloor(total: 100 * gib) == (5 * gib, 6 * gib))
        #expect(QueryHistory.spaceFloor(total: 8 * gib).pause == 512 << 20)
        #expect(QueryHistory.spaceFloor(total: 600 << 20).pause == 300 << 20)
    }

    @Test func roomIsTakenAChunkAtATimeAndTheBoundStillHolds() throws {
        // 640 sightings: each buffer takes room 10 at a time from the shared count.
        let f = try HistoryFixture(capacity: 640)
        for _ in 0..<2000 { f.record("192.0.2.1", "busy.example") }
        let counts = f.history.counts
        #expect(counts.recorded + counts.dropped == 2000)
        #expect(counts.recorded <= 640 && counts.recorded > 640 - 8 * 10, "bounded, and at most a chunk per buffer short")
        f.history.flush()
        #expect(f.history.counts.written == counts.recorded)
        // The flush gave the room back: sightings are kept again.
        for _ in 0..<20 { f.record("192.0.2.2", "again.example") }
        #expect(f.history.counts.recorded == counts.recorded + 20)
    }
}

@Suite struct RetroHuntTests {
    /// The rules the server would enforce for the lists in `f`'s directory.
    func store(_ f: HistoryFixture) throws -> BlocklistStore {
        let store = BlocklistStore()
        try store.refresh(directory: f.listDirectory)
        return store
    }

    @Test func huntMatchesAsBlockingDoesSubdomainsWildcardsRPZAndAllowlists() throws {
        let f = try HistoryFixture()
        for name in ["bad.test", "c2.bad.test", "allowed.bad.test", "wild.test", "x.wild.test",
                     "rpz.test", "below.rpz.test", "exact.test", "below.exact.test", "benign.test", "notbad.test"] {
            f.record("192.0.2.5", name)
        }
        f.history.flush()
        try f.writeList("plain.txt", "bad.test\n*.wild.test\n")
        try f.writeList("zone.rpz", """
            $TTL 60
            @ SOA localhost. root.localhost. 1 3600 600 86400 60
            @ NS localhost.
            rpz.test CNAME .
            *.rpz.test CNAME .
            exact.test CNAME *.

            """)
        try f.writeList("ok.allow", "allowed.bad.test\n")
        let snapshot = try store(f).snapshot
        let hits = try RetroHunt.hunt(try #require(f.history.database), since: 0) { snapshot.blockingRule(for: $0) }
        #expect(hits.map(\.name) == ["bad.test", "below.rpz.test", "c2.bad.test", "exact.test", "rpz.test", "wild.test", "x.wild.test"])
        let c2 = try #require(hits.first { $0.name == "c2.bad.test" })
        #expect(c2.rule.rule == "bad.test")
        #expect(c2.rule.list == "plain.txt")
        #expect(c2.rule.line == 1)
        #expect(hits.first { $0.name == "x.wild.test" }?.rule.rule == "*.wild.test")
        #expect(hits.first { $0.name == "wild.test" }?.rule.rule == "*.wild.test", "a list's *.name covers name, named as written")
        #expect(hits.first { $0.name == "below.rpz.test" }?.rule.list == "zone.rpz")
    }

    /// The history keeps names as presentation text (`\200`, `\.` escaped); the hunt read them
    /// back with the plain dotted reader, so a label holding a byte like 0x80 was too long and
    /// skipped (a missed client), and `evil\.late4.example`, one label under `example`, read as
    /// a name below late4.example (a false alert). The event's name was escaped twice.
    @Test func huntReadsEscapedNamesAsTheQueriesAsked() throws {
        let f = try HistoryFixture()
        let binary = [16] + [UInt8](repeating: 0x80, count: 16) + WireName.fromText("late6.example")!
        let dotted = [10] + Array("evil.late4".utf8) + WireName.fromText("example")!
        for name in [binary, dotted, WireName.fromText("ok.late6.example")!] {
            f.history.record(client: [192, 0, 2, 12], name: name, qtype: RRType.a)
        }
        f.history.flush()
        try f.writeList("late.txt", "late6.example\nlate4.example\n")
        let snapshot = try store(f).snapshot
        let hits = try RetroHunt.hunt(try #require(f.history.database), since: 0) { snapshot.blockingRule(for: $0) }
        let escaped = String(repeating: "\\128", count: 16) + ".late6.example"
        #expect(hits.map(\.name).sorted() == [escaped, "ok.late6.example"].sorted())
        let event = BlockEvent.retroHit(try #require(hits.first { $0.name == escaped }))
        #expect(event.qname == binary, "the event names the name asked, not its escaped text")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(event.jsonLine().utf8)) as? [String: Any])
        #expect(object.at("dns.question.name") as? String == escaped)
        // The reader is the inverse of the writer.
        for name in [binary, dotted, [3, 0x5C, 0x22, 0x20, 0], [0]] {
            #expect(WireName.fromPresentation(WireName.text(name)) == name, "\(WireName.text(name))")
        }
        #expect(WireName.fromPresentation("a\\") == nil && WireName.fromPresentation("a..b") == nil
                && WireName.fromPresentation("\\256.x") == nil && WireName.fromPresentation("") == nil)
        #expect(WireName.fromPresentation("Www.Example.ORG.") == WireName.fromText("Www.Example.ORG"))
    }

    @Test func huntHonoursTheWindowAndSumsAcrossHours() throws {
        let f = try HistoryFixture()
        f.record("192.0.2.5", "bad.test")
        f.clock.advance(3 * 86_400_000)
        f.record("192.0.2.5", "bad.test", RRType.aaaa)
        f.record("192.0.2.5", "www.bad.test")
        f.clock.advance(3_600_000)
        f.record("192.0.2.5", "bad.test")
        f.history.flush()
        try f.writeList("plain.txt", "bad.test\n")
        let snapshot = try store(f).snapshot
        let all = try RetroHunt.hunt(try #require(f.history.database), since: 0) { snapshot.blockingRule(for: $0) }
        let bad = try #require(all.first { $0.name == "bad.test" })
        #expect(bad.count == 3)
        #expect(bad.types == ["A", "AAAA"])
        #expect(bad.firstSeen == HistoryFixture.start)
        #expect(bad.lastSeen == HistoryFixture.start + 3 * 86_400_000 + 3_600_000)
        let recent = try RetroHunt.hunt(try #require(f.history.database), since: HistoryFixture.start + 86_400_000) { snapshot.blockingRule(for: $0) }
        #expect(recent.first { $0.name == "bad.test" }?.count == 2, "the sighting before --since is left out")
        #expect(recent.count == 2)
        #expect(recent.first { $0.name == "bad.test" }?.types == ["AAAA", "A"], "in the order first asked in the window")
        // From a SOC trial: the event's type is the first type asked, not the lowest-numbered.
        let event = BlockEvent.retroHit(try #require(recent.first { $0.name == "bad.test" }))
        #expect(event.qtype == RRType.aaaa)
    }

    @Test func aListChangeReportsEachClientAndNameOnce() throws {
        let f = try HistoryFixture()
        let found = Mutex<[RetroHit]>([])
        let hunter = RetroHunter(history: f.history, logger: HistoryFixture.logger) { hits in
            found.withLock { $0 += hits }
        }
        for _ in 0..<3 { f.record("192.0.2.1", "c2.example") }
        f.record("192.0.2.1", "c2.example", RRType.aaaa)
        f.record("192.0.2.2", "c2.example")
        f.record("192.0.2.2", "update.c2.example")
        f.record("192.0.2.3", "benign.example")
        // Not flushed: the hunt itself takes the queries answered up to the change.
        try f.writeList("intel.txt", "c2.example\n")
        let store = try store(f)
        hunter.listsChanged(store.snapshot.loaded, previous: [:], store: store)
        #expect(hunter.waitForHunts(after: 0, timeout: 10))
        let first = found.withLock { $0 }.map { "\($0.client) \($0.name) \($0.count)" }.sorted()
        #expect(first == ["192.0.2.1 c2.example 4", "192.0.2.2 c2.example 1", "192.0.2.2 update.c2.example 1"])

        // The file changes again (a new entry): only what is new is hunted, nothing is repeated.
        f.record("192.0.2.3", "other.example")
        try f.writeList("intel.txt", "c2.example\nother.example\n")
        let report = try store.refresh(directory: f.listDirectory)
        #expect(report.previous.count == 1)
        hunter.listsChanged(report.loaded, previous: report.previous, store: store)
        #expect(hunter.waitForHunts(after: 1, timeout: 10))
        let second = found.withLock { $0 }.map { "\($0.client) \($0.name)" }.sorted()
        #expect(second == ["192.0.2.1 c2.example", "192.0.2.2 c2.example", "192.0.2.2 update.c2.example",
                           "192.0.2.3 other.example"])

        // A restart hunts every list again: the pairs already reported stay reported.
        hunter.listsChanged(store.snapshot.loaded, previous: [:], store: store)
        #expect(hunter.waitForHunts(after: 2, timeout: 10))
        #expect(found.withLock { $0 }.count == 4)
        #expect(hunter.counts.hits == 4)
    }

    @Test func retroHitEventUsesTheBlockLogSchema() throws {
        let hit = RetroHit(client: "192.0.2.9", name: "c2.example", rule: RuleMatch(rule: "c2.example", list: "intel.txt",
                           line: 3, zone: WireName.fromText("c2.example") ?? []), firstSeen: HistoryFixture.start,
                           lastSeen: HistoryFixture.start + 5_000, count: 4, types: ["A", "AAAA"], clientID: 1, nameID: 1)
        let line = BlockEvent.retroHit(hit).jsonLine()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let event = try #require(object["event"] as? [String: Any])
        #expect(event["action"] as? String == "retro-hit")
        #expect(event["start"] as? String == "2026-11-26T10:00:00.000Z")
        #expect(event["end"] as? String == "2026-11-26T10:00:05.000Z")
        #expect((object["source"] as? [String: Any])?["ip"] as? String == "192.0.2.9")
        let question = try #require((object["dns"] as? [String: Any])?["question"] as? [String: Any])
        #expect(question["name"] as? String == "c2.example")
        #expect((object["rule"] as? [String: Any])?["ruleset"] as? String == "intel.txt")
        let sinkhole = try #require(object["sinkhole"] as? [String: Any])
        #expect(sinkhole["rule_line"] as? Int == 3)
        #expect(sinkhole["match"] as? String == "history")
        let history = try #require(sinkhole["history"] as? [String: Any])
        #expect(history["count"] as? Int == 4)
        #expect(history["types"] as? [String] == ["A", "AAAA"])
        let syslog = SyslogSink.message(BlockEvent.retroHit(hit), hostname: "h", pid: 1)
        #expect(syslog.contains(" retro-hit [sinkhole@32473 "))
        #expect(syslog.contains("sinkhole.history.count=\"4\""))
        #expect(syslog.contains("sinkhole.rule_line=\"3\""))
    }
}
