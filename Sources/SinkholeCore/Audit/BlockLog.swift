import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization

/// The blocked-query log: one JSON line per blocked query, appended to a file.
///
/// `record` only appends the event to an in-memory queue under a short lock, the calling
/// thread's shard of the queue (`ThreadShards`), so the cores answering blocked queries do not
/// meet on one lock. A writer on its own thread takes every shard's events, merges them into
/// time order, and encodes and writes whole lines every 200 ms, in chunks with a yield of the CPU
/// between them (so at most the last fraction of a
/// second is in memory), at `close()`, and reopens the file on `reopen()` (SIGHUP, for
/// logrotate). If the queue ever holds `maxPendingBytes` of events the writer is not keeping up:
/// further events are dropped, counted, and the count is logged, never silently.
public final class BlockLog: @unchecked Sendable {
    /// The file, or nil when events only go to `forward` (syslog without a file).
    public let path: String?
    /// What the events not yet written may take in memory (`BlockEvent.queuedCost`), those the
    /// writer holds included: about 600,000 events, several seconds of a flood of blocked
    /// queries faster than the writer. A bound in bytes, so the log cannot push the process past
    /// its memory limit (512 MiB in the shipped Kubernetes manifest) whatever the names' lengths.
    /// When only the queue was bounded, the events being written came on top: compare.sh's
    /// block-log row peaked at 390 MiB with a 256 MiB queue. With this bound, a 15 s flood of
    /// blocked queries on one shared core peaked at 277 MiB.
    public static let defaultMaxPendingBytes = 256 << 20
    public let maxPendingBytes: Int
    public static let flushInterval = 0.2

    /// Events in chunks of `chunk`: the writer takes whole chunks and lets each go as soon as
    /// it is written, so freeing them is spread out too.
    private struct Queue {
        var full: [[BlockEvent]] = []
        var current: [BlockEvent] = []
    }

    private struct WriterState {
        var fd: Int32
        var written = 0
        var size = 0
        /// Events that could not be written (a full disk, an I/O error), and the failure's
        /// state: since when, when last said, what was lost since; whether the file ends inside
        /// a line that a failed write cut short.
        var lost = 0
        var failingSince: DispatchTime?
        var failurePace = LogPace()
        var lostSinceLogged = 0
        var midLine = false
    }

    private let queues = ThreadShards { Queue() }
    /// Over every shard: what the events queued or being written take (`queuedCost`), and the
    /// events dropped because that reached `maxPendingBytes`.
    private let pendingBytes = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    /// The drop total last said in the operator's log, and when (uptime nanoseconds), by either
    /// the writer or `record`.
    private let droppedSaid = Atomic<Int>(0)
    /// The writer's `written` and `lost`, as of its last write: read by `counts` (the metrics
    /// endpoint) without the writer's lock, which a write stuck on a hung disk holds. /metrics
    /// hung then, the drop counter that says so with it.
    private let writtenSoFar = Atomic<Int>(0)
    private let lostSoFar = Atomic<Int>(0)
    private let droppedSaidAt = Atomic<UInt64>(0)
    private let writer: Mutex<WriterState>
    private let wake = NSCondition()
    private let stopping = Atomic<Bool>(false)
    private let logger: Logger
    private let rotation: LogRotation?
    /// Every event also goes here (syslog delivery), if set.
    private let forward: (@Sendable ([BlockEvent]) -> Void)?

    /// Opens (creating if needed, mode 0640) for appending; throws a readable error.
    public init(path: String?, rotation: LogRotation? = nil, logger: Logger,
                forward: (@Sendable ([BlockEvent]) -> Void)? = nil,
                maxPendingBytes: Int = BlockLog.defaultMaxPendingBytes,
                flushInterval: Double = BlockLog.flushInterval) throws {
        self.path = path
        self.maxPendingBytes = maxPendingBytes
        self.logger = logger
        self.rotation = rotation.flatMap { $0.maxSize > 0 ? $0 : nil }
        self.forward = forward
        let fd = try path.map { try BlockLog.open($0) } ?? -1
        var st = stat()
        if fd >= 0 { fstat(fd, &st) }
        writer = Mutex(WriterState(fd: fd, size: Int(st.st_size), midLine: path.map(BlockLog.endsMidLine) ?? false))
        // Its own thread, which gives the core up after every chunk of lines: encoding a flush's
        // worth of events takes milliseconds at a high block rate, and in one piece on a core
        // shared with the DNS threads it held queries up (p99 4.5 ms at 5,000 qps on one core).
        // Not at a lower priority: it frees the events the query threads allocated, which takes
        // their malloc arena's lock, and a low-priority thread preempted while holding it would
        // stall them for longer.
        Thread.detachNewThread { [weak self, wake] in
            while true {
                wake.lock()
                _ = wake.wait(until: Date().addingTimeInterval(flushInterval))
                wake.unlock()
                guard let self, !self.stopping.load(ordering: .relaxed) else { return }
                self.flush()
            }
        }
    }

    /// Whether the file at `path` ends inside a line (a write cut short by a full disk or a
    /// crash): the next write then starts with a newline, so that it does not join that line.
    static func endsMidLine(_ path: String) -> Bool {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0 else { return false }
        var last: UInt8 = 0
        return pread(fd, &last, 1, st.st_size - 1) == 1 && last != 0x0A
    }

    static func open(_ path: String) throws -> Int32 {
        // O_NOFOLLOW: whoever can write the log directory cannot point the log at another file.
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
        guard fd >= 0 else { throw SystemError("cannot open block log \(path)") }
        return fd
    }

    /// Queues one event. Cheap: no encoding, no I/O.
    public func record(_ event: BlockEvent) {
        let cost = event.queuedCost
        guard pendingBytes.add(cost, ordering: .relaxed).newValue <= maxPendingBytes else {
            pendingBytes.subtract(cost, ordering: .relaxed)
            let total = dropped.add(1, ordering: .relaxed).newValue
            // Said here too, at most once a minute: the writer says it after its next write,
            // and a write stuck on a hung disk or NFS mount held the word back until it ended
            // (a minute of drops with nothing in the log but the metric).
            let said = droppedSaidAt.load(ordering: .relaxed)
            let now = DispatchTime.now().uptimeNanoseconds   // after the load: never before `said`
            if said == 0 || (now > said && now - said >= 60_000_000_000),
               droppedSaidAt.compareExchange(expected: said, desired: now, ordering: .relaxed).exchanged {
                sayDropped(total)
            }
            return
        }
        queues.mine.value.withLock { q in
            if q.current.count == BlockLog.chunk {
                q.full.append(q.current)
                q.current = []
            }
            if q.current.isEmpty { q.current.reserveCapacity(BlockLog.chunk) }
            q.current.append(event)
        }
    }

    /// Events written to the file so far, and events dropped: because the writer fell behind,
    /// or because the file could not be written (a full disk).
    public var counts: (written: Int, dropped: Int) {
        let dropped = self.dropped.load(ordering: .relaxed)
        return (writtenSoFar.load(ordering: .relaxed), dropped + lostSoFar.load(ordering: .relaxed))
    }

    /// Says the drop total in the operator's log, and keeps it as said: never lowered below a
    /// later total said meanwhile (by `record` or the writer).
    private func sayDropped(_ total: Int) {
        var kept = droppedSaid.load(ordering: .relaxed)
        while kept < total {
            let (exchanged, now) = droppedSaid.compareExchange(expected: kept, desired: total, ordering: .relaxed)
            if exchanged { break }
            kept = now
        }
        logger.error("block log writer fell behind; events dropped", metadata: [
            "dropped.total": "\(total)", "path": "\(path ?? "-")",
        ])
    }

    /// Says the drops not said yet, if any (the writer, after taking the queues; a stop).
    private func sayUnsaidDrops() {
        let total = dropped.load(ordering: .relaxed)
        guard total > droppedSaid.load(ordering: .relaxed) else { return }
        sayDropped(total)
        droppedSaidAt.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
    }

    /// Whether the writer holds its lock now (in a write, for tests).
    var writerIsBusy: Bool { writer.withLockIfAvailable { _ in false } ?? true }

    /// Makes the writer's counts readable by `counts`.
    private func publish(_ state: WriterState) {
        writtenSoFar.store(state.written, ordering: .relaxed)
        lostSoFar.store(state.lost, ordering: .relaxed)
    }

    /// Writes every queued event now. Safe from any thread; writes are serialised.
    public func flush() {
        writer.withLock { state in
            // `pendingBytes` still counts these until they are written and freed: the bound
            // covers the events being written as well as those queued meanwhile.
            var taken: [[[BlockEvent]]] = []
            for shard in queues.shards {
                let chunks = shard.value.withLock { q -> [[BlockEvent]] in
                    var chunks = q.full
                    if !q.current.isEmpty { chunks.append(q.current) }
                    q.full = []
                    q.current = []
                    return chunks
                }
                if !chunks.isEmpty { taken.append(chunks) }
            }
            var chunks = taken.count > 1 ? BlockLog.merged(&taken) : taken.first ?? []
            taken = []
            sayUnsaidDrops()
            guard !chunks.isEmpty else { return }
            if let forward { forward(chunks.flatMap { $0 }) }
            defer { publish(state) }
            guard let path, state.fd >= 0 else {
                state.written += chunks.reduce(0) { $0 + $1.count }
                let cost = chunks.reduce(0) { total, chunk in chunk.reduce(total) { $0 + $1.queuedCost } }
                pendingBytes.subtract(cost, ordering: .relaxed)
                return
            }
            for i in chunks.indices {
                let cost = chunks[i].reduce(0) { $0 + $1.queuedCost }
                writeChunk(chunks[i][...], to: path, &state)
                publish(state)
                chunks[i] = []   // freed now, not all at the end
                pendingBytes.subtract(cost, ordering: .relaxed)
                if i < chunks.count - 1 { sched_yield() }
            }
        }
    }

    /// Lines per write; the writer yields the core between chunks.
    static let chunk = 32

    /// Several shards' events (each shard's chunks in the order queued) in one time order, in
    /// chunks of `chunk`. Each input chunk is let go as soon as it is used up. Within a shard the
    /// events are in the order they were queued, their times taken just before: as close to
    /// sorted as one queue for all was.
    static func merged(_ shards: inout [[[BlockEvent]]]) -> [[BlockEvent]] {
        shards = shards.map { $0.filter { !$0.isEmpty } }
        var position = [(chunk: Int, index: Int)](repeating: (0, 0), count: shards.count)
        var out: [[BlockEvent]] = []
        var current: [BlockEvent] = []
        current.reserveCapacity(chunk)
        func earlier(_ a: timespec, _ b: timespec) -> Bool {
            a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec
        }
        while true {
            var best = -1
            for s in shards.indices where position[s].chunk < shards[s].count {
                if best < 0 || earlier(shards[s][position[s].chunk][position[s].index].time,
                                       shards[best][position[best].chunk][position[best].index].time) {
                    best = s
                }
            }
            guard best >= 0 else { break }
            let (c, i) = position[best]
            current.append(shards[best][c][i])
            if i + 1 < shards[best][c].count {
                position[best].index = i + 1
            } else {
                shards[best][c] = []
                position[best] = (c + 1, 0)
            }
            if current.count == chunk {
                out.append(current)
                current = []
                current.reserveCapacity(chunk)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    private func writeChunk(_ events: ArraySlice<BlockEvent>, to path: String, _ state: inout WriterState) {
        // After a write that stopped inside a line, a newline first: the cut line stays the only
        // bad one, rather than running into the first line of this chunk.
        let prefix = state.midLine ? 1 : 0
        var bytes: [UInt8] = state.midLine ? [0x0A] : []
        bytes.reserveCapacity(events.count * 600)
        for event in events {
            event.appendJSONLine(to: &bytes)
            bytes.append(0x0A)
        }
        let (done, error) = writeAll(state.fd, bytes)
        state.size += done
        if done > 0 { state.midLine = bytes[done - 1] != 0x0A }
        guard done == bytes.count else {
            let whole = done > prefix ? bytes[prefix..<done].reduce(0) { $1 == 0x0A ? $0 + 1 : $0 } : 0
            writeFailed(error, whole: whole, of: events.count, to: path, &state)
            // A file that reached a size limit (EFBIG: ulimit -f, LimitFSIZE=) or the rotation size
            // is rotated all the same: a new file can take the events a full one cannot.
            if let rotation, error == EFBIG || state.size >= rotation.maxSize { rotate(path, rotation, &state) }
            return
        }
        state.written += events.count
        if let since = state.failingSince {
            logger.notice("block log written again", metadata: [
                "path": "\(path)", "events.lost": "\(state.lostSinceLogged)", "events.lost_total": "\(state.lost)",
                "failing_seconds": "\((DispatchTime.now().uptimeNanoseconds - since.uptimeNanoseconds) / 1_000_000_000)",
            ])
            state.failingSince = nil
            state.lostSinceLogged = 0
        }
        if let rotation, state.size >= rotation.maxSize { rotate(path, rotation, &state) }
    }

    private func rotate(_ path: String, _ rotation: LogRotation, _ state: inout WriterState) {
        let logger = self.logger
        rotation.rotate(path) { file, reason in
            logger.error("cannot compress the rotated block log; it is kept uncompressed and moves up with the others", metadata: [
                "file.path": "\(file)", "error": "\(reason)",
            ])
        }
        do {
            let fd = try BlockLog.open(path)
            Glibc.close(state.fd)
            state.fd = fd
            state.size = 0
            state.midLine = false
            logger.info("block log rotated", metadata: ["path": "\(path)"])
        } catch {
            logger.error("cannot open a new block log after rotating; still writing the rotated file",
                         metadata: ["error": "\(error)"])
        }
    }

    /// A chunk not wholly written (`whole` of its `events` lines were): the others are counted
    /// as dropped. The operator's log says so when it starts, then at most once a minute while
    /// it lasts, and once more when writing works again.
    private func writeFailed(_ error: Int32, whole: Int, of events: Int, to path: String, _ state: inout WriterState) {
        state.written += whole
        state.lost += events - whole
        state.lostSinceLogged += events - whole
        let now = DispatchTime.now()
        let reason = String(cString: strerror(error))
        if state.failingSince == nil {
            state.failingSince = now
            state.failurePace.said(now.uptimeNanoseconds)
            logger.error("cannot write to block log; blocked queries are still answered but their events are lost until it can be written", metadata: [
                "path": "\(path)", "error": "\(reason)", "events.lost": "\(state.lostSinceLogged)",
            ])
            state.lostSinceLogged = 0
        } else if state.failurePace.due(now.uptimeNanoseconds) {
            logger.error("block log still cannot be written", metadata: [
                "path": "\(path)", "error": "\(reason)", "events.lost": "\(state.lostSinceLogged)",
                "events.lost_total": "\(state.lost)",
            ])
            state.lostSinceLogged = 0
        }
    }

    /// Writes `utf8` whole, or as much as the file takes before an error: the bytes written and
    /// the error (0 when all were).
    private func writeAll(_ fd: Int32, _ utf8: [UInt8]) -> (Int, Int32) {
        var offset = 0
        while offset < utf8.count {
            let n = utf8.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                return (offset, errno)
            }
            if n == 0 { return (offset, EIO) }
            offset += n
        }
        return (offset, 0)
    }

    /// Gives the open file to the identity sinkhole drops to, so it can keep writing it.
    public func chown(to identity: Privileges.Identity) {
        writer.withLock { _ = fchown($0.fd, identity.uid, identity.gid) }
    }

    /// Flushes, then closes and reopens the path (after logrotate moved the file away).
    public func reopen() {
        flush()
        guard let path else { return }
        writer.withLock { state in
            do {
                let fd = try BlockLog.open(path)
                Glibc.close(state.fd)
                state.fd = fd
                var st = stat()
                fstat(fd, &st)
                state.size = Int(st.st_size)
                state.midLine = BlockLog.endsMidLine(path)
                logger.info("block log reopened", metadata: ["path": "\(path)"])
            } catch {
                logger.error("cannot reopen block log; still writing to the old file", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stops the writer thread, writes everything queued and closes the file.
    public func close() {
        stopping.store(true, ordering: .relaxed)
        wake.lock()
        wake.broadcast()
        wake.unlock()
        flush()
        // Drops made while that flush ran: their total, last.
        sayUnsaidDrops()
        writer.withLock { state in
            if state.fd >= 0 {
                fsync(state.fd)
                Glibc.close(state.fd)
            }
            state.fd = -1
        }
    }
}
