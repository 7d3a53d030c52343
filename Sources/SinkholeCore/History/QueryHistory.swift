import CSinkholeNet
import Dispatch
import Foundation
import GRDB
import Glibc
import Logging
import Synchronization

/// Query history for retro-hunts: who resolved which name, of which type, and when, for every
/// answered query that was not blocked, kept in a SQLite file (`--query-history`).
///
/// The query path only appends a sighting to one of a few in-memory buffers under a short lock
/// (no encoding, no I/O, never the database). A writer on its own queue takes the buffers every
/// `flushInterval`, aggregates them per (name, client, type, hour) and upserts the result in one
/// transaction. When the buffers hold `capacity` sightings the writer is behind: further
/// sightings are dropped and counted, the count is logged and exported, and DNS goes on.
/// Rows older than the retention are pruned in small batches on the writer queue, so pruning
/// delays only the writer, never a query.
public final class QueryHistory: Sendable {
    /// Tunables, with the defaults the server uses.
    public struct Options: Sendable {
        /// Rows whose hour ended longer ago than this are pruned (seconds). Default 30 days.
        public var retention: Double = 30 * 86_400
        /// Sightings held in memory at most, waiting for the writer.
        public var capacity = 500_000
        public var flushInterval = 1.0
        public var pruneInterval = 600.0
        /// Rows deleted per pruning step.
        public var pruneBatch = 5_000
        /// The clock, in milliseconds since the Unix epoch (injected by tests). The coarse clock
        /// (a few ms of resolution) is read once per recorded query and costs a few nanoseconds.
        public var now: @Sendable () -> Int64 = { QueryHistory.coarseNow() }
        /// Free and total bytes of the file system holding `path` (injected by tests).
        public var space: @Sendable (String) -> (free: Int, total: Int)? = { QueryHistory.fileSystemSpace(of: $0) }
        public init() {}
    }

    /// The free space under which recording pauses: 5% of the file system, at least 512 MiB, but
    /// never more than half of a small one. Recording goes on at 1% of the file system above it.
    static func spaceFloor(total: Int) -> (pause: Int, resume: Int) {
        let pause = min(max(total / 20, 512 << 20), total / 2)
        return (pause, pause + total / 100)
    }

    /// `statvfs` of the directory holding `path`: bytes free to unprivileged users, and the size.
    public static func fileSystemSpace(of path: String) -> (free: Int, total: Int)? {
        let directory = (path as NSString).deletingLastPathComponent
        var s = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &s) == 0 else { return nil }
        return (Int(s.f_bavail) * Int(s.f_frsize), Int(s.f_blocks) * Int(s.f_frsize))
    }

    /// One answered query, as the query path hands it over.
    /// One sighting in a buffer: its client and name are bytes of the buffer's `bytes`.
    struct Sighting {
        var start: Int32
        var clientLength: UInt8
        var nameLength: UInt8
        var qtype: UInt16
        var time: Int64
    }

    /// Sightings with their bytes copied in, back to back. The query path allocates nothing
    /// that the writer then frees one by one: a free from another thread takes the lock of the
    /// malloc arena the bytes came from, and the writer runs at nice 10, so a query thread
    /// could wait on that lock for as long as the writer waited for the core (milliseconds).
    private struct Buffer {
        var sightings: [Sighting] = []
        var bytes: [UInt8] = []
        /// Room this buffer has taken from `pendingCount` and not filled yet (kept across
        /// flushes), so that the shared count is touched once per `reserveChunk` sightings.
        var reserved = 0
        /// Sightings recorded here since start.
        var recorded = 0
    }

    /// Counts for metrics and tests.
    public struct Counts: Sendable, Equatable {
        public var recorded = 0
        public var dropped = 0
        /// Sightings written to the database.
        public var written = 0
        /// History rows pruned for age.
        public var pruned = 0
        /// Whether recording is paused for want of disk space.
        public var paused = false
    }

    public let path: String
    public let options: Options
    /// The open database; swapped for a new file when the path was removed or replaced, and
    /// gone when the history was switched off (`checkFiles`).
    private let pool: Mutex<DatabasePool?>
    /// The database, or nil once the history was switched off.
    var database: DatabasePool? { pool.withLock { $0 } }
    /// The device and inode of the file opened, to tell when the path names another.
    private let opened = Mutex<(device: UInt64, inode: UInt64)?>(nil)
    /// The device and inode of the -wal file last seen beside the open database.
    private let ownWAL = Mutex<(device: UInt64, inode: UInt64)?>(nil)
    /// Switched off for good (its -shm file damaged by another process).
    private let switchedOff = Atomic<Bool>(false)
    /// A pool given up with a damaged -shm file: kept, never closed, since closing it would
    /// touch the mapping whose file was cut short (SIGBUS).
    private let abandoned = Mutex<[DatabasePool]>([])
    /// The pace of the write failure and drop lines (writer queue only).
    private let writeFailurePace = Mutex(LogPace()), dropPace = Mutex(LogPace())
    /// The buffers, one per thread shard, so that queries on different cores rarely meet on one lock.
    private let buffers = ThreadShards(count: 8) { Buffer() }
    /// Sightings in the buffers and the room they have reserved, bounded by `options.capacity`.
    private let pendingCount = Atomic<Int>(0)
    /// Room a buffer takes at once: the bound is then at most 8 × 64 sightings loose, and an
    /// answered query on a core writes no line that the other cores write too (1 with a small
    /// capacity: the bound exact).
    private var reserveChunk: Int { max(1, min(64, options.capacity / 64)) }
    private let dropped = Atomic<Int>(0)
    private let written = Atomic<Int>(0)
    private let pruned = Atomic<Int>(0)
    private let droppedReported = Atomic<Int>(0)
    /// Whether recording is paused for want of disk space (writer queue only).
    private let paused = Atomic<Bool>(false)
    private let queue = DispatchQueue(label: "sinkhole.history")
    /// Signalled to stop the writer thread.
    private let stopping = Atomic<Bool>(false)
    private let wake = NSCondition()
    private let lastPrune = Atomic<Int64>(0)
    private let ids = Mutex(IDCache())
    private let logger: Logger

    /// Opens (creating if needed) the database and its tables; throws a readable error.
    public init(path: String, options: Options = Options(), logger: Logger) throws {
        self.path = path
        self.options = options
        self.logger = logger
        var configuration = Configuration()
        configuration.label = "sinkhole.history"
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        // Created 0640 like the block log (SQLite gives its -wal and -shm files the same mode):
        // the history says what the network resolved. O_NOFOLLOW: not through a planted link.
        let (database, identity) = try QueryHistory.open(path, configuration: configuration)
        pool = Mutex(database)
        opened.withLock { $0 = identity }
        self.configuration = configuration
        // The writer runs on its own thread under SCHED_IDLE: it uses only CPU time the DNS
        // threads leave, and a query arriving on its core preempts it at once. (At nice 10 a
        // second of new names to insert still held queries up for its time slice: p99 2.6 ms at
        // 5,000 qps on one core.) On a core saturated by queries it may fall behind; then
        // sightings are dropped and counted, and DNS goes on, as the history promises.
        let interval = options.flushInterval
        Thread.detachNewThread { [weak self, wake] in
            if sinkhole_sched_idle() != 0 {
                _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)   // this thread only, on Linux
            }
            while true {
                wake.lock()
                _ = wake.wait(until: Date().addingTimeInterval(interval))
                wake.unlock()
                guard let self, !self.stopping.load(ordering: .relaxed) else { return }
                self.queue.sync { self.tick() }   // runs here, on the low-priority thread
            }
        }
    }

    /// GRDB's settings, for a reopen.
    private let configuration: Configuration

    /// Opens (creating if needed) the database at `path` and its tables: the pool and the file's
    /// device and inode.
    private static func open(_ path: String, configuration: Configuration) throws -> (DatabasePool, (device: UInt64, inode: UInt64)) {
        // Created 0640 like the block log (SQLite gives its -wal and -shm files the same mode):
        // the history says what the network resolved. O_NOFOLLOW: not through a planted link.
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
        guard fd >= 0 else {
            throw HistoryError("cannot open query history \(path): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        fstat(fd, &st)
        Glibc.close(fd)
        do {
            let database = try DatabasePool(path: path, configuration: configuration)
            try database.write { try HistorySchema.create($0) }
            return (database, (UInt64(st.st_dev), UInt64(st.st_ino)))
        } catch {
            let code = (error as? DatabaseError)?.resultCode
            throw HistoryError("cannot open query history \(path): \(QueryHistory.describe(error))",
                               notADatabase: code == .SQLITE_NOTADB || code == .SQLITE_CORRUPT)
        }
    }

    /// Whether the files are still the ones open and whole, before the writer touches them
    /// (writer queue only). From a failure-mode trial:
    /// - Another process cutting the -shm file short (or making it immutable) crashed the whole
    ///   resolver with SIGBUS at the next write: SQLite maps that file. The history is switched
    ///   off instead, its pool left unclosed, and DNS goes on.
    /// - The file removed or replaced while running: sightings went on into the deleted file,
    ///   lost at the stop, with nothing said, and `hunt` read another file. A new file is started
    ///   at the path, and it is said.
    private func checkFiles() -> Bool {
        guard !switchedOff.load(ordering: .relaxed) else { return false }
        var st = stat()
        let shm = path + "-shm"
        if stat(shm, &st) == 0, st.st_size < 32_768 || access(shm, W_OK) != 0 {
            switchedOff.store(true, ordering: .relaxed)
            if let gone = pool.withLock({ p -> DatabasePool? in defer { p = nil }; return p }) {
                abandoned.withLock { $0.append(gone) }
            }
            logger.error("query history switched off: its -shm file was cut short or made unwritable by another process; restart sinkhole to record again (DNS unaffected)", metadata: [
                "path": "\(path)", "shm_bytes": "\(st.st_size)",
            ])
            return false
        }
        let now = stat(path, &st) == 0 ? (device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) : nil
        let was = opened.withLock { $0 }
        let wal = stat(path + "-wal", &st) == 0 ? (device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) : nil
        if let now, let was, now == was {
            ownWAL.withLock { $0 = wal }
            return true
        }
        // The old pool is closed first (one still in use elsewhere is left open, never used
        // again). Its -wal and -shm files, still at the path when only the database was renamed
        // over, would otherwise be taken by the new one as its own: SQLite replays that WAL onto
        // the new file (a review found). They are moved aside below.
        if let old = pool.withLock({ p -> DatabasePool? in defer { p = nil }; return p }) {
            do { try old.close() } catch { abandoned.withLock { $0.append(old) } }
        }
        // SQLite does not checkpoint a database that moved, so its -wal and -shm stay at the
        // path: the old file's, moved aside (as .replaced) when the -wal is the one seen in use.
        if let wal, let own = ownWAL.withLock({ $0 }), wal == own {
            for suffix in ["-wal", "-shm"] { _ = rename(path + suffix, path + suffix + ".replaced") }
        }
        ownWAL.withLock { $0 = nil }
        do {
            let (database, identity) = try QueryHistory.open(path, configuration: configuration)
            pool.withLock { $0 = database }
            opened.withLock { $0 = identity }
            ids.withLock { $0 = IDCache() }
            logger.error("query history file removed or replaced while running: a new one is started at the path (what was recorded since then is in the old file only)", metadata: [
                "path": "\(path)",
            ])
            return true
        } catch {
            if writeFailurePace.withLock({ $0.due() }) {
                logger.error("query history file removed or replaced, and a new one cannot be opened; sightings are dropped until it can (DNS unaffected)", metadata: [
                    "path": "\(path)", "error": "\(error)",
                ])
            }
            return false
        }
    }

    static func coarseNow() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec / 1_000_000)
    }

    /// A readable problem with the history file.
    public struct HistoryError: Error, CustomStringConvertible {
        public var description: String
        /// The file is not an SQLite database, or a damaged one (SQLITE_NOTADB, SQLITE_CORRUPT).
        public var notADatabase = false
        public init(_ description: String, notADatabase: Bool = false) {
            self.description = description
            self.notADatabase = notADatabase
        }
    }

    static func describe(_ error: Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "\(e.resultCode)" }
        return "\(error)"
    }

    /// Records one answered query. Cheap: a clock read and an append under a short lock.
    /// `client` is the IP address (4 or 16 bytes), `name` the question name in wire form.
    public func record<C: Collection, N: Collection>(client: C, name: N, qtype: UInt16) where C.Element == UInt8, N.Element == UInt8 {
        // One count over all buffers bounds the memory, taken a chunk of room at a time; the
        // buffer is picked by thread, so that queries answered on different cores rarely meet
        // on one lock.
        let time = options.now()
        let chunk = reserveChunk
        let kept = buffers.mine.value.withLock { b -> Bool in
            if b.reserved == 0 {
                guard pendingCount.add(chunk, ordering: .relaxed).newValue <= options.capacity else {
                    pendingCount.subtract(chunk, ordering: .relaxed)
                    return false
                }
                b.reserved = chunk
            }
            b.reserved -= 1
            b.sightings.append(Sighting(start: Int32(b.bytes.count), clientLength: UInt8(client.count),
                                        nameLength: UInt8(name.count), qtype: qtype, time: time))
            b.bytes.append(contentsOf: client)
            b.bytes.append(contentsOf: name)
            b.recorded += 1
            return true
        }
        if !kept { dropped.add(1, ordering: .relaxed) }
    }

    public var counts: Counts {
        Counts(recorded: buffers.shards.reduce(0) { $0 + $1.value.withLock { $0.recorded } },
               dropped: dropped.load(ordering: .relaxed),
               written: written.load(ordering: .relaxed), pruned: pruned.load(ordering: .relaxed),
               paused: paused.load(ordering: .relaxed))
    }

    /// Writes every buffered sighting now and waits for it. Safe from any thread except the writer's.
    public func flush() {
        queue.sync { writeOrDiscard() }
    }

    private func writeOrDiscard() {
        if !checkFiles() || spaceIsShort() {
            discardPending()
        } else {
            writePending()
        }
    }

    /// Prunes rows past the retention now (all batches) and waits.
    public func pruneNow() {
        queue.sync {
            guard checkFiles() else { return }
            var total = 0
            while true {
                let (more, deleted) = pruneStep()
                total += deleted
                if !more { break }
            }
            if total > 0 { cleanOrphans() }
        }
    }

    /// Stops the writer thread and writes what is buffered.
    public func close() {
        stopping.store(true, ordering: .relaxed)
        wake.lock()
        wake.broadcast()
        wake.unlock()
        flush()
    }

    private func tick() {
        writeOrDiscard()
        let now = options.now()
        if now - lastPrune.load(ordering: .relaxed) >= Int64(options.pruneInterval * 1000) {
            lastPrune.store(now, ordering: .relaxed)
            prune()
        }
    }

    /// One pruning step now, the next ones queued behind the writes in between; names and
    /// clients are cleaned up at the end only when rows were deleted.
    private func prune(deletedSoFar: Int = 0) {
        guard checkFiles() else { return }
        let (more, deleted) = pruneStep()
        if more {
            queue.async { [weak self] in self?.prune(deletedSoFar: deletedSoFar + deleted) }
        } else if deletedSoFar + deleted > 0 {
            cleanOrphans()
        }
    }

    /// The first hour still kept.
    public var oldestKeptHour: Int64 {
        (options.now() - Int64(options.retention * 1000)) / 3_600_000
    }

    /// Deletes up to `pruneBatch` rows older than the retention: whether there may be more, and
    /// how many went.
    private func pruneStep() -> (more: Bool, deleted: Int) {
        let cutoff = oldestKeptHour
        do {
            guard let database else { return (false, 0) }
            let deleted = try database.write { db -> Int in
                try db.execute(sql: """
                    DELETE FROM history WHERE (name_id, client_id, qtype, hour) IN (
                        SELECT name_id, client_id, qtype, hour FROM history WHERE hour < ? LIMIT ?)
                    """, arguments: [cutoff, options.pruneBatch])
                return db.changesCount
            }
            pruned.add(deleted, ordering: .relaxed)
            return (deleted >= options.pruneBatch, deleted)
        } catch {
            logger.error("query history: pruning failed", metadata: ["error": "\(QueryHistory.describe(error))"])
            return (false, 0)
        }
    }

    /// Names and clients no row refers to any more, and retro-hunt bookkeeping past the retention.
    /// Names are found through the primary key (one probe each); clients, which the key does not
    /// lead with, through one scan of the distinct client ids. Writer queue only.
    private func cleanOrphans() {
        let cutoffMs = options.now() - Int64(options.retention * 1000)
        do {
            guard let database else { return }
            try database.write { db in
                try db.execute(sql: "DELETE FROM retro_reported WHERE last_seen < ?", arguments: [cutoffMs])
                try db.execute(sql: "DELETE FROM names WHERE NOT EXISTS (SELECT 1 FROM history WHERE name_id = names.id)")
                try db.execute(sql: """
                    DELETE FROM clients WHERE id NOT IN (SELECT DISTINCT client_id FROM history)
                        AND id NOT IN (SELECT client_id FROM retro_reported)
                    """)
            }
            ids.withLock { $0 = IDCache() }
        } catch {
            logger.error("query history: cleaning up failed", metadata: ["error": "\(QueryHistory.describe(error))"])
        }
    }

    /// One stored row, as the `query_history` view shows it (for tests and tools).
    public struct Entry: Sendable, Equatable {
        public var client: String
        public var name: String
        public var qtype: UInt16
        public var hour: Int64
        public var count: Int
        public var firstSeen: Int64
        public var lastSeen: Int64
    }

    /// Every stored row, oldest hour first, then by client and name.
    public func entries() throws -> [Entry] {
        guard let database else { return [] }
        return try database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT c.address, n.name, h.qtype, h.hour, h.count, h.first_seen, h.last_seen
                FROM history h JOIN names n ON n.id = h.name_id JOIN clients c ON c.id = h.client_id
                ORDER BY h.hour, c.address, n.name, h.qtype
                """).map { Entry(client: $0[0], name: $0[1], qtype: UInt16(truncatingIfNeeded: $0[2] as Int), hour: $0[3],
                                 count: $0[4], firstSeen: $0[5], lastSeen: $0[6]) }
        }
    }

    /// Runs `body` while another connection holds the database's write lock, as a slow disk or
    /// a long pruning would: for tests and benchmarks that show DNS does not wait on the writer.
    public func holdWriteLock<T>(_ body: () throws -> T) throws -> T {
        let other = try DatabaseQueue(path: path)
        return try other.inDatabase { db in
            try db.execute(sql: "BEGIN IMMEDIATE")
            defer { try? db.execute(sql: "ROLLBACK") }
            return try body()
        }
    }

    /// Distinct names and clients stored (orphans are removed by pruning).
    public func storedCounts() throws -> (names: Int, clients: Int) {
        guard let database else { return (0, 0) }
        return try database.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM names") ?? 0,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM clients") ?? 0)
        }
    }

    /// Aggregated sightings of one (name, client, type, hour).
    struct Aggregate {
        var count = 0
        var first = Int64.max
        var last = Int64.min
    }

    struct Key: Hashable {
        var name: [UInt8]
        var client: [UInt8]
        var qtype: UInt16
        var hour: Int64

        func hash(into hasher: inout Hasher) {
            name.withUnsafeBytes { hasher.combine(bytes: $0) }
            client.withUnsafeBytes { hasher.combine(bytes: $0) }
            hasher.combine(qtype)
            hasher.combine(hour)
        }
    }

    /// Ids of names and clients already in the database, so most sightings need no lookup.
    struct IDCache {
        var names: [String: Int64] = [:]
        var clients: [String: Int64] = [:]
        static let limit = 200_000
    }

    /// Whether the file system holding the history is too full to write to. A flood of new
    /// names (a random-subdomain attack) can grow the file by gigabytes an hour within the
    /// retention; recording pauses before it fills the disk that the block log, the journal and
    /// the rest of the host may share. Logged once when it pauses and once when it goes on.
    private func spaceIsShort() -> Bool {
        guard let (diskFree, total) = options.space(path), total > 0 else { return false }
        let floor = QueryHistory.spaceFloor(total: total)
        let wasPaused = paused.load(ordering: .relaxed)
        // Pages pruning freed inside the file are room too: new rows take them before the file
        // grows. (Looked at only when the disk is short; the file itself never shrinks.)
        var free = diskFree
        if diskFree < floor.resume { free += freePagesBytes() }
        let short = wasPaused ? free < floor.resume : free < floor.pause
        if short != wasPaused {
            paused.store(short, ordering: .relaxed)
            let metadata: Logger.Metadata = [
                "path": "\(path)", "free_mib": "\(free >> 20)", "floor_mib": "\((short ? floor.pause : floor.resume) >> 20)",
            ]
            if short {
                logger.error("query history paused: its file system is nearly full; sightings are dropped until space is freed (DNS unaffected)", metadata: metadata)
            } else {
                logger.notice("query history recording again: space was freed", metadata: metadata)
            }
        }
        return short
    }

    /// Bytes of the database's free pages (what pruning freed and new rows will reuse).
    private func freePagesBytes() -> Int {
        (try? database?.read { db -> Int in
            let pages = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
            let size = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0
            return pages * size
        }) ?? 0
    }

    /// Empties the buffers without writing them, counting what they held as dropped.
    private func discardPending() {
        reportDrops()   // what the writer dropped before, if not said yet
        for shard in buffers.shards {
            let count = shard.value.withLock { buffer -> Int in
                let count = buffer.sightings.count
                buffer.sightings.removeAll(keepingCapacity: true)
                buffer.bytes.removeAll(keepingCapacity: true)
                return count
            }
            pendingCount.subtract(count, ordering: .relaxed)
            dropped.add(count, ordering: .relaxed)
        }
        droppedReported.store(dropped.load(ordering: .relaxed), ordering: .relaxed)   // said by the pause line
    }

    /// Aggregates the buffered sightings; writer queue only.
    private func writePending() {
        var batch: [Key: Aggregate] = [:]
        var taken = 0
        for shard in buffers.shards {
            let buffer = shard.value.withLock { buffer -> Buffer in
                let taken = buffer
                buffer.sightings.removeAll(keepingCapacity: true)
                buffer.bytes.removeAll(keepingCapacity: true)
                return taken
            }
            taken += buffer.sightings.count
            pendingCount.subtract(buffer.sightings.count, ordering: .relaxed)
            for s in buffer.sightings {
                let start = Int(s.start), clientEnd = start + Int(s.clientLength)
                let client = Array(buffer.bytes[start..<clientEnd])
                let name = WireName.lowercased(Array(buffer.bytes[clientEnd..<(clientEnd + Int(s.nameLength))]))
                let key = Key(name: name, client: client, qtype: s.qtype, hour: s.time / 3_600_000)
                var a = batch[key] ?? Aggregate()
                a.count += 1
                a.first = min(a.first, s.time)
                a.last = max(a.last, s.time)
                batch[key] = a
            }
        }
        reportDrops()
        guard !batch.isEmpty else { return }
        do {
            guard let database else { throw HistoryError("switched off") }
            try ids.withLock { cache in
                try database.write { db in
                    let upsert = try db.cachedStatement(sql: """
                        INSERT INTO history(name_id, client_id, qtype, hour, count, first_seen, last_seen)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(name_id, client_id, qtype, hour) DO UPDATE SET
                            count = count + excluded.count,
                            first_seen = min(first_seen, excluded.first_seen),
                            last_seen = max(last_seen, excluded.last_seen)
                        """)
                    for (key, a) in batch {
                        let nameID = try QueryHistory.id(db, &cache.names, table: "names", column: "name",
                                                         value: WireName.text(key.name))
                        let clientID = try QueryHistory.id(db, &cache.clients, table: "clients", column: "address",
                                                           value: IPAddress.text(key.client))
                        try upsert.execute(arguments: [nameID, clientID, Int(key.qtype), key.hour, a.count, a.first, a.last])
                    }
                }
            }
            written.add(taken, ordering: .relaxed)
        } catch {
            ids.withLock { $0 = IDCache() }   // a rolled-back transaction may have taken new ids with it
            // Counted as dropped (they were missing from every counter), and said at most once a
            // minute: an immutable -wal file said it every second, for as long as it lasted.
            dropped.add(taken, ordering: .relaxed)
            droppedReported.store(dropped.load(ordering: .relaxed), ordering: .relaxed)   // said here
            if writeFailurePace.withLock({ $0.due() }) {
                logger.error("query history: write failed; sightings lost (said at most once a minute)", metadata: [
                    "error": "\(QueryHistory.describe(error))", "sightings": "\(taken)", "dropped.total": "\(dropped.load(ordering: .relaxed))",
                    "path": "\(path)",
                ])
            }
        }
    }

    private func reportDrops() {
        let total = dropped.load(ordering: .relaxed)
        if total > droppedReported.load(ordering: .relaxed), dropPace.withLock({ $0.due() }) {
            droppedReported.store(total, ordering: .relaxed)
            logger.error("query history writer fell behind; sightings dropped (DNS unaffected)", metadata: [
                "dropped.total": "\(total)", "path": "\(path)",
            ])
        }
    }

    /// The id of `value` in `table`, inserting it when new.
    static func id(_ db: Database, _ cache: inout [String: Int64], table: String, column: String, value: String) throws -> Int64 {
        if let id = cache[value] { return id }
        let insert = try db.cachedStatement(sql: "INSERT INTO \(table)(\(column)) VALUES (?) ON CONFLICT(\(column)) DO NOTHING")
        try insert.execute(arguments: [value])
        let id: Int64
        if db.changesCount > 0 {
            id = db.lastInsertedRowID
        } else {
            let select = try db.cachedStatement(sql: "SELECT id FROM \(table) WHERE \(column) = ?")
            id = try Int64.fetchOne(select, arguments: [value]) ?? 0
        }
        if cache.count >= IDCache.limit { cache.removeAll(keepingCapacity: true) }
        cache[value] = id
        return id
    }
}
