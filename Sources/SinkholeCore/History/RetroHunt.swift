import Dispatch
import Foundation
import Glibc
import GRDB
import Logging
import Synchronization

/// A client that resolved a name which a list now blocks, found in the query history.
public struct RetroHit: Sendable, Equatable {
    /// The client's IP address as text.
    public var client: String
    /// The name it resolved, lowercase, without the trailing dot.
    public var name: String
    /// The rule that blocks the name now: rule text, list file and line.
    public var rule: RuleMatch
    /// First and last time seen within the window searched (ms since the epoch), and how often.
    public var firstSeen: Int64
    public var lastSeen: Int64
    public var count: Int
    /// Query types seen, in the order first asked, e.g. `["AAAA", "A"]`.
    public var types: [String]
    var clientID: Int64
    var nameID: Int64
}

/// Checks the query history against blocking rules: every distinct name in the history is put
/// through the same matcher that blocks queries (so subdomains, `*.name` wildcards, RPZ
/// triggers and allowlists behave exactly as they do for a live query), and each matching name
/// is expanded into its clients with first and last seen and a count.
///
/// Scanning names rather than looking up list entries makes the cost depend on the history's
/// distinct names, not on the list's size: a 1,000,000-entry feed costs the same as 20 names.
public enum RetroHunt {
    /// Hits for every (client, name) in the history since `since` (ms since the epoch) whose name
    /// `rule` maps to a block rule. Sorted by client, then name.
    public static func hunt(_ db: any DatabaseReader, since: Int64,
                            rule: (_ wireName: [UInt8]) -> RuleMatch?) throws -> [RetroHit] {
        try db.read { db in
            var matched: [(id: Int64, name: String, rule: RuleMatch)] = []
            let names = try Row.fetchCursor(db, sql: "SELECT id, name FROM names")
            while let row = try names.next() {
                let name: String = row[1]
                guard let wire = WireName.fromPresentation(name), let match = rule(wire), !match.allowed else { continue }
                matched.append((row[0], name, match))
            }
            var hits: [RetroHit] = []
            let sinceHour = since / 3_600_000
            // One row per client and type, each type's first sighting first: the hit's types
            // are in the order first asked (AAAA before A for a client that asked so), and its
            // event's `dns.question.type` is the first of them.
            let byClientAndType = try db.cachedStatement(sql: """
                SELECT h.client_id, c.address, min(h.first_seen) AS first, max(h.last_seen), sum(h.count), h.qtype
                FROM history h JOIN clients c ON c.id = h.client_id
                WHERE h.name_id = ? AND h.hour >= ? AND h.last_seen >= ?
                GROUP BY h.client_id, h.qtype
                ORDER BY h.client_id, first, h.qtype
                """)
            for name in matched {
                let rows = try Row.fetchCursor(byClientAndType, arguments: [name.id, sinceHour, since])
                var current: RetroHit?
                while let row = try rows.next() {
                    let clientID: Int64 = row[0], firstSeen: Int64 = row[2], lastSeen: Int64 = row[3], count: Int = row[4]
                    let type = RRType.name(UInt16(clamping: row[5] as Int64))
                    if var hit = current, hit.clientID == clientID {
                        hit.lastSeen = max(hit.lastSeen, lastSeen)
                        hit.count += count
                        hit.types.append(type)
                        current = hit
                        continue
                    }
                    if let hit = current { hits.append(hit) }
                    current = RetroHit(client: row[1], name: name.name, rule: name.rule, firstSeen: firstSeen,
                                       lastSeen: lastSeen, count: count, types: [type], clientID: clientID, nameID: name.id)
                }
                if let hit = current { hits.append(hit) }
            }
            return hits.sorted { ($0.client, $0.name) < ($1.client, $1.name) }
        }
    }

    /// The same hunt against a history file, opened read-only (it may be in use by a running
    /// sinkhole). Throws a readable error when the file is missing or not a history database.
    public static func hunt(historyFile path: String, since: Int64,
                            rule: (_ wireName: [UInt8]) -> RuleMatch?) throws -> [RetroHit] {
        guard access(path, R_OK) == 0 else {
            throw QueryHistory.HistoryError("\(path): cannot be read (\(String(cString: strerror(errno))))")
        }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        do {
            let db = try DatabaseQueue(path: path, configuration: configuration)
            return try hunt(db, since: since, rule: rule)
        } catch let error as DatabaseError {
            throw QueryHistory.HistoryError("\(path): not a sinkhole query history (\(error.message ?? "\(error.resultCode)"))")
        }
    }

    /// The rule for a history name when the changed lists block it and their previous versions
    /// did not: the deciding rule of the whole `snapshot` (so an allowlist elsewhere still wins).
    public static func newlyBlocked(by changed: [LoadedList], previous: [String: LoadedList],
                                    in snapshot: Blocklist) -> ([UInt8]) -> RuleMatch? {
        { wire in
            let newly = changed.contains { list in
                guard let hit = list.matcher.decide(wire), hit.kind.action != .allow else { return false }
                if let old = previous[list.path]?.matcher.decide(wire), old.kind.action != .allow { return false }
                return true
            }
            return newly ? snapshot.blockingRule(for: wire) : nil
        }
    }
}

/// Runs a retro-hunt in the background whenever lists change (and once at start-up), after the
/// new lists are already enforced, and reports each (client, name) once: a pair is reported again
/// only when the history shows it resolved the name after the last report (for example after the
/// list was removed and added again). The reported pairs are kept in the database, so a restart
/// does not repeat them.
public final class RetroHunter: Sendable {
    public let history: QueryHistory
    private let onHits: @Sendable ([RetroHit]) -> Void
    private let queue = DispatchQueue(label: "sinkhole.retrohunt")
    private let logger: Logger
    private let hunts = Atomic<Int>(0)
    private let found = Atomic<Int>(0)
    private let finished = NSCondition()

    public init(history: QueryHistory, logger: Logger, onHits: @escaping @Sendable ([RetroHit]) -> Void) {
        self.history = history
        self.logger = logger
        self.onHits = onHits
    }

    /// Hunts finished and retro-hits reported so far.
    public var counts: (hunts: Int, hits: Int) { (hunts.load(ordering: .relaxed), found.load(ordering: .relaxed)) }

    /// Queues a hunt for names that `changed` lists block and their `previous` versions did not.
    /// Returns at once; the hunt reads the current snapshot when it runs.
    public func listsChanged(_ changed: [LoadedList], previous: [String: LoadedList], store: BlocklistStore) {
        guard changed.contains(where: { $0.matcher.count > 0 }) else { return }
        queue.async { [self] in
            let started = DispatchTime.now()
            history.flush()   // queries answered up to now are part of the history searched
            let snapshot = store.snapshot
            let since = history.options.now() - Int64(history.options.retention * 1000)
            do {
                guard let database = history.database else { throw QueryHistory.HistoryError("the query history is switched off") }
                let candidates = try RetroHunt.hunt(database, since: since,
                                                    rule: RetroHunt.newlyBlocked(by: changed, previous: previous, in: snapshot))
                let fresh = try unreported(candidates)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
                logger.info("retro-hunt done", metadata: [
                    "lists": "\(changed.map(\.name).joined(separator: ","))", "hits": "\(fresh.count)",
                    "already_reported": "\(candidates.count - fresh.count)", "seconds": "\(String(format: "%.3f", seconds))",
                ])
                if !fresh.isEmpty {
                    found.add(fresh.count, ordering: .relaxed)
                    onHits(fresh)
                }
            } catch {
                logger.error("retro-hunt failed", metadata: ["error": "\(QueryHistory.describe(error))"])
            }
            finished.lock()
            hunts.add(1, ordering: .relaxed)
            finished.broadcast()
            finished.unlock()
        }
    }

    /// Waits until more than `count` hunts have finished; false on timeout.
    public func waitForHunts(after count: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        finished.lock()
        defer { finished.unlock() }
        while hunts.load(ordering: .relaxed) <= count {
            if !finished.wait(until: deadline) { return hunts.load(ordering: .relaxed) > count }
        }
        return true
    }

    /// The hits not reported yet (or seen again since), recorded as reported.
    private func unreported(_ hits: [RetroHit]) throws -> [RetroHit] {
        guard !hits.isEmpty else { return [] }
        let now = history.options.now()
        guard let database = history.database else { return [] }
        return try database.write { db in
            let select = try db.cachedStatement(sql: "SELECT last_seen FROM retro_reported WHERE client_id = ? AND name_id = ?")
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO retro_reported(client_id, name_id, last_seen, reported_at) VALUES (?, ?, ?, ?)
                ON CONFLICT(client_id, name_id) DO UPDATE SET last_seen = excluded.last_seen, reported_at = excluded.reported_at
                """)
            var fresh: [RetroHit] = []
            for hit in hits {
                if let reported = try Int64.fetchOne(select, arguments: [hit.clientID, hit.nameID]), reported >= hit.lastSeen {
                    continue
                }
                try upsert.execute(arguments: [hit.clientID, hit.nameID, hit.lastSeen, now])
                fresh.append(hit)
            }
            return fresh
        }
    }
}
