import CSinkholeNet
import Foundation
import Glibc
import Synchronization

/// The UDP side of forwarding: pools of connected sockets to each upstream, one set per core,
/// each core's sockets watched on that core's serial Dispatch queue (`EventLoop`), so that a
/// query to an upstream costs a share of one `sendmmsg` and its reply one turn of a queue that holds the
/// client's socket too: not a socket, a connect, a Dispatch source and a timer per query (what
/// made a cache miss cost four times a cache hit). Queries forwarded while a batch of client
/// datagrams is handled are sent together at the end of it (`flushSends`).
///
/// Spoofing defence (RFC 5452 §9.2: unpredictable ID and source port). Each shard keeps up to
/// `socketsPerUpstream` sockets per upstream, each on a port the kernel picks at random, and
/// picks one of them at random per batch of queries (the queries forwarded in one turn of the
/// loop share a socket, so that they go out with one sendmmsg: a system call per batch instead
/// of one per query); a socket carries at most `queriesPerSocket` queries
/// and is then retired (closed once its last reply is in or timed out), so the ports in use
/// keep changing. A forged reply must hit the right port (one of up to 32 × shards, changing
/// every few dozen queries), the random 16-bit ID and the exact question; the socket is
/// connected, so the kernel drops datagrams from any other address or port, and every reply
/// is checked again here (ID, QR, one question equal to ours) or ignored while the wait goes on.
///
/// A loop's state (sockets, waiting queries, their deadlines) is under one lock, held only for
/// table updates: queries are sent and replies received and parsed outside it. A query sent
/// from a loop's own thread (a UDP listener on that loop) uses that loop, so its reply comes
/// back on the thread that holds the client's socket and joins that thread's send batch.
final class UpstreamSockets: Sendable {

    /// Sockets per upstream in one shard, each on its own random port.
    static let socketsPerUpstream = 32
    /// Queries one socket carries before it is retired for a new one on a new port.
    static let queriesPerSocket = 64

    let upstreams: [SocketAddress]
    /// One per usable core (at most 8); the UDP listeners run on them too.
    let loops: [EventLoop]

    init(upstreams: [SocketAddress], loops: Int = min(8, CPUs.usable), tcpRetries: TCPRetries = .shared) {
        self.upstreams = upstreams
        self.loops = (0..<max(1, loops)).map { _ in EventLoop(upstreams: upstreams, tcpRetries: tcpRetries) }
    }

    /// Sends `job`'s message (its ID is replaced by a fresh random one) to upstream `index` and calls
    /// `job.finished` once: with the validated reply, at the timeout, or on a network error
    /// (an ICMP port unreachable comes back as one within a round trip). A truncated reply is
    /// retried over TCP within the same timeout.
    /// `now` is the caller's reading of the uptime clock (nanoseconds), which it has at hand.
    func exchange(upstream index: Int, try job: UpstreamTry, timeout: Double, now: UInt64) {
        let me = EventLoop.currentThread
        let loop = loops.first { $0.runs(on: me) }
            ?? loops[Int(((UInt64(me) &* 0x9E37_79B9_7F4A_7C15) >> 32) % UInt64(loops.count))]
        loop.submit(upstream: index, try: job, timeout: timeout, now: now)
    }

    /// Stops the loops; queries still waiting fail. Call once nothing is being forwarded.
    func stop() {
        loops.forEach { $0.stop() }
    }

    /// Sockets open now, over all loops (for tests).
    var openSockets: Int { loops.reduce(0) { $0 + $1.openSockets } }
}

/// One connected UDP socket of the pool. Its descriptor is closed when the last reference goes
/// (which also takes it out of the loop's epoll set), so a thread still sending on it never
/// meets a descriptor number reused by something else.
private final class PooledSocket: @unchecked Sendable {
    let fd: Int32
    let token: UInt64
    let upstream: Int
    // Under the shard's lock:
    var used = 0
    var retired = false
    var waiting: [UInt16: Waiting] = [:]

    init(fd: Int32, token: UInt64, upstream: Int) {
        self.fd = fd
        self.token = token
        self.upstream = upstream
    }

    deinit { Glibc.close(fd) }
}

/// The caller of an upstream try: the message to send (kept for the TCP retry after a truncated
/// reply), its question (replies are checked against it) and `finished`, called once per try.
/// A class, so that a waiting try is one reference in the socket's table.
class UpstreamTry: @unchecked Sendable {
    let question: Question
    /// The message as given, when it was given as bytes; nil when `writeQuery` makes it.
    private let given: [UInt8]?

    init(wire: [UInt8], question: Question) {
        given = wire
        self.question = question
    }

    /// A try whose message `writeQuery` writes (a subclass overrides it): on a loop's thread
    /// straight into the send batch, so that a forwarded query needs no array for it.
    init(question: Question) {
        given = nil
        self.question = question
    }

    /// Writes the message (any ID: each try replaces it) by `out`.
    func writeQuery(into out: inout WireWriter) {
        if let given { out.append(given) }
    }

    /// The message as bytes (a send off the batch, the TCP retry).
    var wire: [UInt8] {
        given ?? WireWriter.makeArray(capacity: 1024) { writeQuery(into: &$0) }
    }

    func finished(_ result: Result<UpstreamAnswer, UpstreamFailure>) {
        preconditionFailure("UpstreamTry.finished must be overridden")
    }
}

private struct Waiting {
    let serial: UInt64
    let deadline: UInt64
    let job: UpstreamTry
    /// A datagram with this query's ID came that is no readable DNS message: at its timeout the
    /// try fails as a bad reply, not as one that heard nothing.
    var garbled = false
}

/// Deadlines of waiting queries, earliest first. An entry whose query was already answered
/// stays until its deadline and is then skipped: its serial no longer matches.
///
/// Nearly every try waits the same timeout, so deadlines arrive in the order they fall due: those
/// go on a FIFO (a push and a pop cost O(1), and a busy loop's hundred thousand entries are read
/// in order instead of sifted through a heap); the few that fall due before the newest one on it
/// (a retry with less time left, a shorter timeout) go on a binary heap beside it.
struct DeadlineQueue {
    struct Entry {
        let deadline: UInt64
        let token: UInt64
        let id: UInt16
        let serial: UInt64
    }
    private var fifo: [Entry] = []
    private var head = 0
    private var heap: [Entry] = []

    var earliest: UInt64? {
        count == 0 ? nil : min(head < fifo.count ? fifo[head].deadline : .max, heap.first?.deadline ?? .max)
    }
    var count: Int { fifo.count - head + heap.count }

    mutating func push(_ entry: Entry) {
        if head == fifo.count || fifo[fifo.count - 1].deadline <= entry.deadline {
            fifo.append(entry)
            return
        }
        heap.append(entry)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[parent].deadline > heap[i].deadline else { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    mutating func popDue(_ now: UInt64) -> Entry? {
        let fromFIFO = head < fifo.count ? fifo[head].deadline : UInt64.max
        let fromHeap = heap.first?.deadline ?? UInt64.max
        if fromFIFO <= fromHeap {
            guard fromFIFO <= now, head < fifo.count else { return nil }
            let entry = fifo[head]
            head += 1
            if head == fifo.count {
                fifo.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 4096 && head * 2 >= fifo.count {
                fifo.removeFirst(head)   // amortised: at most once per `head` pops
                head = 0
            }
            return entry
        }
        guard fromHeap <= now else { return nil }
        let first = heap[0]
        let last = heap.removeLast()
        if heap.isEmpty { return first }
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < heap.count, heap[l].deadline < heap[smallest].deadline { smallest = l }
            if r < heap.count, heap[r].deadline < heap[smallest].deadline { smallest = r }
            if smallest == i { break }
            heap.swapAt(i, smallest)
            i = smallest
        }
        return first
    }

    mutating func removeAll() {
        fifo.removeAll()
        head = 0
        heap.removeAll()
    }
}

/// Query IDs (and socket choices) from the kernel's cryptographic generator (getrandom), 256
/// at a time: one system call per 128 queries instead of two per query, just as unpredictable.
private struct RandomIDs {
    private var pool = [UInt16](repeating: 0, count: 256)
    private var used = 256

    mutating func next() -> UInt16 {
        if used == pool.count {
            let filled = pool.withUnsafeMutableBytes { sinkhole_random($0.baseAddress, UInt($0.count)) }
            if filled != pool.count * 2 {
                // Not expected (getrandom blocks only before the pool is seeded at boot).
                var generator = SystemRandomNumberGenerator()
                for i in pool.indices { pool[i] = UInt16.random(in: 0...UInt16.max, using: &generator) }
            }
            used = 0
        }
        used += 1
        return pool[used - 1]
    }
}

/// Everything of one core on one serial Dispatch queue. The UDP listener socket watched on it
/// (`watch`) and the upstream sockets above are kept in an epoll set of the loop's own, whose
/// descriptor has the loop's one Dispatch read source: when any of them has data, one turn
/// collects every ready socket (epoll_wait) and handles them all. So Dispatch drives
/// all the I/O, yet a core's 32 sockets per upstream and its listener cost it one source, not
/// one each (a source per socket was measured 25% dearer per cache miss: each wake-up is a
/// hand-off from Dispatch's manager thread and a re-arm through it); and epoll reports an ICMP
/// error on a socket (EPOLLERR), which a Dispatch read source does not. One Dispatch timer per
/// loop keeps the deadlines, firing at most every 10 ms. A turn that found work waits up to 10 ms
/// on the epoll set for more before the thread goes back to Dispatch, for at most 20 ms per
/// wake-up (`serveReady`): a busy loop keeps its thread without a hand-off per batch.
///
/// Blocked names, cache hits and forwarded answers are all handled on that queue, so a
/// forwarded query's reply comes back where its client's socket is drained, with no hand-off to
/// another queue; after each turn the listeners flush their send batches, so forwarded replies
/// go out by sendmmsg too.
final class EventLoop: @unchecked Sendable {
    struct Watcher: @unchecked Sendable {
        let token: UInt64
        let fd: Int32
        let readable: @Sendable () -> Void
        let flush: @Sendable () -> Void
    }

    fileprivate struct State {
        var watchers: [Watcher] = []
        var nextWatch: UInt64 = 1 << 63
        var sockets: [UInt64: PooledSocket] = [:]
        /// Per upstream, the sockets new queries may use.
        var active: [[PooledSocket]]
        var deadlines = DeadlineQueue()
        var nextToken: UInt64 = 1
        var nextSerial: UInt64 = 0
        var stopped = false
        var ids = RandomIDs()
        /// When the timer fires next (uptime ns; UInt64.max: not set).
        var timerAt = UInt64.max
        /// Per upstream, the socket this turn's queued queries go on (see `flushSends`).
        var batchSocket: [PooledSocket?]
    }

    private let upstreams: [SocketAddress]
    /// The threads that retry truncated answers over TCP.
    private let tcpRetries: TCPRetries
    let queue: DispatchQueue
    private let timer: DispatchSourceTimer
    /// The upstream sockets' epoll set, and its Dispatch source.
    private let epoll: Int32
    private let upstreamSource: DispatchSourceRead
    private let state: Mutex<State>
    /// The thread running one of this loop's blocks now (0 when none).
    private let running = Atomic<UInt>(0)
    /// Threads waiting in `queue.sync` for the loop (unwatch, performAndWait): a lingering turn
    /// gives the thread back to Dispatch at once, so they wait one turn, not the whole budget.
    private let syncWaiters = Atomic<Int>(0)

    static var currentThread: UInt { UInt(bitPattern: Int(pthread_self())) }

    func runs(on thread: UInt) -> Bool { running.load(ordering: .relaxed) == thread }
    var isCurrent: Bool { runs(on: EventLoop.currentThread) }

    // Used only on the queue.
    static let batch = 16
    /// 64 KiB, the largest datagram: each of the batch's receive buffers is that big (pages
    /// never written stay unmapped).
    static let datagramSize = 65_536
    private let buffers: UnsafeMutableRawPointer
    private let vectors: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<MultiMessageHeader>
    private let readyTokens = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
    private let readyEvents = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
    /// Lists `receive` fills and empties on every call, kept so their storage is reused.
    private var receivedScratch: [UpstreamAnswer] = []
    private var doneScratch: [(Waiting, UpstreamAnswer)] = []

    /// Upstream queries made during a turn, sent together at its end (`flushSends`); used only on
    /// the queue. Each is copied, with its ID, into a slot of `sendBuffers`.
    private struct QueuedSend {
        let socket: PooledSocket
        let id: UInt16
        let serial: UInt64
        let length: Int
    }
    /// Queries per send batch, and the largest one queued (a larger one is sent at once).
    static let sendBatch = 64
    static let sendSlot = 512
    private var queuedSends: [QueuedSend] = []
    /// The other list of the pair `flushSends` swaps, so that neither is copied (only a flush
    /// nested in a failure's retry starts a fresh one).
    private var sparedSends: [QueuedSend] = []
    /// Per queued query: which socket batch took it (scratch for `flushSends`).
    private let sendMembers: UnsafeMutablePointer<Int>
    private let sendTaken: UnsafeMutablePointer<Bool>
    private let sendBuffers: UnsafeMutableRawPointer
    private let sendVectors: UnsafeMutablePointer<iovec>
    private let sendHeaders: UnsafeMutablePointer<MultiMessageHeader>

    init(upstreams: [SocketAddress], label: String = "sinkhole.loop", tcpRetries: TCPRetries = .shared) {
        self.upstreams = upstreams
        self.tcpRetries = tcpRetries
        state = Mutex(State(active: upstreams.map { _ in [] }, batchSocket: upstreams.map { _ in nil }))
        queue = DispatchQueue(label: label)
        timer = DispatchSource.makeTimerSource(queue: queue)
        buffers = .allocate(byteCount: EventLoop.batch * EventLoop.datagramSize, alignment: 16)
        vectors = .allocate(capacity: EventLoop.batch)
        headers = .allocate(capacity: EventLoop.batch)
        sendBuffers = .allocate(byteCount: EventLoop.sendBatch * EventLoop.sendSlot, alignment: 16)
        sendVectors = .allocate(capacity: EventLoop.sendBatch)
        sendHeaders = .allocate(capacity: EventLoop.sendBatch)
        queuedSends.reserveCapacity(EventLoop.sendBatch)
        sparedSends.reserveCapacity(EventLoop.sendBatch)
        sendMembers = .allocate(capacity: EventLoop.sendBatch)
        sendTaken = .allocate(capacity: EventLoop.sendBatch)
        for i in 0..<EventLoop.batch {
            vectors[i] = iovec(iov_base: buffers + i * EventLoop.datagramSize, iov_len: EventLoop.datagramSize)
        }
        let epoll = sinkhole_epoll_create()
        self.epoll = epoll
        upstreamSource = DispatchSource.makeReadSource(fileDescriptor: epoll, queue: queue)
        timer.setEventHandler { [weak self] in self?.turn { $0.expire() } }
        timer.resume()
        upstreamSource.setEventHandler { [weak self] in self?.serveReady() }
        upstreamSource.setCancelHandler { [epoll] in Glibc.close(epoll) }
        upstreamSource.resume()
    }

    deinit {
        timer.cancel()
        upstreamSource.cancel()
        buffers.deallocate()
        vectors.deallocate()
        headers.deallocate()
        sendBuffers.deallocate()
        sendVectors.deallocate()
        sendHeaders.deallocate()
        sendMembers.deallocate()
        sendTaken.deallocate()
        readyTokens.deallocate()
        readyEvents.deallocate()
    }

    var openSockets: Int { state.withLock { $0.sockets.count } }

    static var now: UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// One turn on the queue: `body`, then the queries it forwarded go upstream, then every
    /// listener's send batch goes out.
    private func turn(_ body: (EventLoop) -> Void) {
        running.store(EventLoop.currentThread, ordering: .relaxed)
        body(self)
        flushSends()
        let watchers = state.withLock { $0.watchers }
        for w in watchers { w.flush() }
        running.store(0, ordering: .relaxed)
    }

    /// Calls `readable` on the loop's queue whenever `fd` has data (level-triggered: until it
    /// is drained), and `flush` after every turn of the loop. The descriptor joins the loop's
    /// epoll set, beside the upstream sockets: one Dispatch source per core for everything.
    func watch(_ fd: Int32, readable: @escaping @Sendable () -> Void, flush: @escaping @Sendable () -> Void) throws -> UInt64 {
        try state.withLock { s -> UInt64 in
            guard !s.stopped else { throw SystemError("watch", ECANCELED) }
            let token = s.nextWatch
            guard sinkhole_epoll_add(epoll, fd, token) == 0 else { throw SystemError("epoll_ctl") }
            s.nextWatch += 1
            s.watchers.append(Watcher(token: token, fd: fd, readable: readable, flush: flush))
            return token
        }
    }

    /// Stops watching; when it returns (off the loop's queue), neither hook is running or will
    /// run again, and the descriptor may be closed.
    func unwatch(_ token: UInt64) {
        state.withLock { s in
            guard let i = s.watchers.firstIndex(where: { $0.token == token }) else { return }
            _ = sinkhole_epoll_remove(epoll, s.watchers[i].fd)
            s.watchers.remove(at: i)
        }
        if !isCurrent { waitForQueue {} }   // a turn still using it ends first
    }

    /// Runs `block` on the loop's queue and waits for it (at once when already on it).
    func performAndWait(_ block: @escaping @Sendable () -> Void) {
        if isCurrent { return block() }
        waitForQueue(block)
    }

    /// `queue.sync`, telling a lingering turn to end first.
    private func waitForQueue(_ block: () -> Void) {
        syncWaiters.add(1, ordering: .relaxed)
        defer { syncWaiters.subtract(1, ordering: .relaxed) }
        queue.sync { block() }
    }

    func submit(upstream index: Int, try job: UpstreamTry, timeout: Double, now: UInt64 = EventLoop.now) {
        let deadline = now + UInt64(max(0.001, timeout) * 1e9)
        // On the loop's own thread (a turn is running), the query joins the turn's send batch:
        // written straight into its next slot (taken only once the query is queued).
        var queuedLength = 0
        if isCurrent {
            if queuedSends.count == EventLoop.sendBatch { flushSends() }
            var writer = WireWriter(UnsafeMutableRawBufferPointer(start: sendBuffers + queuedSends.count * EventLoop.sendSlot,
                                                                  count: EventLoop.sendSlot))
            job.writeQuery(into: &writer)
            queuedLength = writer.written ?? 0
        }
        let queue = queuedLength > 2
        let picked: Result<(PooledSocket, UInt16, UInt64), UpstreamFailure> = state.withLock { s in
            if s.stopped { return .failure(.network("stopping")) }
            let socket: PooledSocket
            if queue, let current = s.batchSocket[index], !current.retired {
                // One socket per upstream per batch, so the batch is one sendmmsg per socket. Each
                // socket's port is as random as before, and it still carries at most 64 queries.
                socket = current
            } else if s.active[index].count < UpstreamSockets.socketsPerUpstream {
                switch open(index, token: s.nextToken) {
                case .failure(let failure): return .failure(failure)
                case .success(let fresh):
                    s.nextToken += 1
                    s.sockets[fresh.token] = fresh
                    s.active[index].append(fresh)
                    socket = fresh
                }
            } else {
                let pool = s.active[index]
                socket = pool[Int(s.ids.next()) % pool.count]   // 32 divides 65,536: unbiased
            }
            if queue { s.batchSocket[index] = socket }
            var id = s.ids.next()
            while socket.waiting[id] != nil { id = s.ids.next() }
            s.nextSerial += 1
            socket.waiting[id] = Waiting(serial: s.nextSerial, deadline: deadline, job: job)
            socket.used += 1
            if socket.used >= UpstreamSockets.queriesPerSocket {
                socket.retired = true
                s.active[index].removeAll { $0 === socket }
            }
            s.deadlines.push(.init(deadline: deadline, token: socket.token, id: id, serial: s.nextSerial))
            schedule(deadline, &s)
            return .success((socket, id, s.nextSerial))
        }
        guard case .success(let (socket, id, serial)) = picked else {
            if case .failure(let failure) = picked { job.finished(.failure(failure)) }
            return
        }
        if queue {
            let slot = sendBuffers + queuedSends.count * EventLoop.sendSlot
            slot.storeBytes(of: UInt8(id >> 8), toByteOffset: 0, as: UInt8.self)
            slot.storeBytes(of: UInt8(id & 0xFF), toByteOffset: 1, as: UInt8.self)
            queuedSends.append(QueuedSend(socket: socket, id: id, serial: serial, length: queuedLength))
            return
        }
        let query = job.wire
        let sent = EventLoop.send(socket.fd, id: id, query)
        if sent != query.count { sendFailed(socket, id: id, serial: serial, SystemError("send to \(upstreams[index])")) }
    }

    /// Sends the queries queued in this turn: one sendmmsg per socket. Queries that fail on the
    /// way are completed with the failure here (and may queue new tries, which go out too).
    /// Only on the loop's thread, in a turn (the listeners call it after each batch they drain).
    ///
    /// The turn's queries to an upstream share a socket, so an ICMP error on it (the upstream's
    /// port closed) fails all of them at once, each counting against the upstream's health: it is
    /// marked down sooner than when they were spread, and each of them goes on to the next
    /// upstream, as it would have at its timeout.
    func flushSends() {
        assert(isCurrent, "flushSends off the loop's thread")
        while !queuedSends.isEmpty {
            // The lists are swapped, not copied: a try queued by a failure below goes in the other.
            var sends = queuedSends
            queuedSends = sparedSends
            sparedSends = []
            defer {
                sends.removeAll(keepingCapacity: true)
                sparedSends = sends
            }
            state.withLock { s in for i in s.batchSocket.indices { s.batchSocket[i] = nil } }
            let count = sends.count
            for i in 0..<count {
                sendVectors[i] = iovec(iov_base: sendBuffers + i * EventLoop.sendSlot, iov_len: sends[i].length)
                sendTaken[i] = false
            }
            // The queries on one socket go in one sendmmsg; a batch holds few sockets (one per
            // upstream, and the next when one is retired).
            var failures: [(Int, Int32)] = []
            for first in 0..<count where !sendTaken[first] {
                let socket = sends[first].socket
                var members = 0
                for j in first..<count where !sendTaken[j] && sends[j].socket === socket {
                    sendTaken[j] = true
                    sendHeaders[members] = MultiMessageHeader(
                        msg_hdr: msghdr(msg_name: nil, msg_namelen: 0, msg_iov: sendVectors + j, msg_iovlen: 1,
                                        msg_control: nil, msg_controllen: 0, msg_flags: 0),
                        msg_len: 0)
                    sendMembers[members] = j
                    members += 1
                }
                var sent = 0
                while sent < members {
                    let r = Int(sinkhole_sendmmsg(socket.fd, sendHeaders + sent, UInt32(members - sent), Int32(MSG_DONTWAIT)))
                    if r > 0 {
                        for k in sent..<sent + r where Int(sendHeaders[k].msg_len) != sends[sendMembers[k]].length {
                            failures.append((sendMembers[k], EMSGSIZE))
                        }
                        sent += r
                    } else {
                        failures.append((sendMembers[sent], errno))
                        sent += 1
                    }
                }
            }
            for (i, code) in failures {
                let send = sends[i]
                sendFailed(send.socket, id: send.id, serial: send.serial,
                           SystemError("send to \(upstreams[send.socket.upstream])", code))
            }
        }
    }

    /// A query could not be sent: it fails now (not at its timeout), and its socket is retired.
    private func sendFailed(_ socket: PooledSocket, id: UInt16, serial: UInt64, _ error: SystemError) {
        let waiting = state.withLock { s -> Waiting? in
            guard let w = socket.waiting[id], w.serial == serial else { return nil }
            socket.waiting[id] = nil
            retire(socket, &s)
            return w
        }
        waiting?.job.finished(.failure(.network(error.description)))
    }

    /// Sends `query` with its first two bytes replaced by `id`, from two pieces (sendmsg), so
    /// the query shared by every try is not copied for each.
    private static func send(_ fd: Int32, id: UInt16, _ query: [UInt8]) -> Int {
        guard query.count > 2 else { return -1 }
        var idBytes = (UInt8(id >> 8), UInt8(id & 0xFF))
        return withUnsafeMutableBytes(of: &idBytes) { idRaw in
            query.withUnsafeBytes { q in
                var pieces = (iovec(iov_base: idRaw.baseAddress, iov_len: 2),
                              iovec(iov_base: UnsafeMutableRawPointer(mutating: q.baseAddress! + 2), iov_len: q.count - 2))
                return withUnsafeMutablePointer(to: &pieces) { pair in
                    pair.withMemoryRebound(to: iovec.self, capacity: 2) { iov in
                        var message = msghdr(msg_name: nil, msg_namelen: 0, msg_iov: iov, msg_iovlen: 2,
                                             msg_control: nil, msg_controllen: 0, msg_flags: 0)
                        return Glibc.sendmsg(fd, &message, Int32(MSG_DONTWAIT))
                    }
                }
            }
        }
    }

    /// Under the lock: the timer fires at `at` unless it is set to fire sooner already.
    private func schedule(_ at: UInt64, _ s: inout State) {
        guard at < s.timerAt else { return }
        s.timerAt = at
        timer.schedule(deadline: DispatchTime(uptimeNanoseconds: at), leeway: .milliseconds(5))
    }

    /// The timer fires at most this often: deadlines are seconds long, and a wake-up per
    /// answered query's stale deadline would cost more than the few milliseconds of lateness.
    static let timerGranularity: UInt64 = 10_000_000

    /// How long a turn that found work waits on the epoll set for more, in milliseconds, and
    /// how long one call from Dispatch may keep the thread so (ns), so that the loop's timer and
    /// the blocks queued on it still run (at most budget + linger late, 30 ms: upstream
    /// deadlines are seconds long and the timer is 10 ms coarse anyway); a thread waiting for
    /// the queue (`performAndWait`, `unwatch`) ends the lingering after the current wait.
    ///
    /// Why 10 ms, not less: a wait shorter than the kernel's tick (4 ms at HZ=250) arms a timer
    /// that is the CPU's next one, so every wait reprograms the timer hardware, a trap to the
    /// hypervisor on a virtual machine. At 5,000 qps, where each query is a wait of its own, that
    /// was a quarter of what a query cost: blocked names 35.6 → 28.5 µs per query and forwarded
    /// ones 70 → 48 (sinkhole at 1 ms against 10 ms, alternating runs); a bare echo server that
    /// waits in epoll_wait with a 1 ms timeout costs as much more than one that waits at 10 ms.
    static let lingerMilliseconds: Int32 = 10
    static let lingerBudget: UInt64 = 20_000_000

    /// The Dispatch source's handler: every ready socket, then, while more keeps coming within
    /// `lingerMilliseconds`, the next ones, on this same thread (for at most `lingerBudget`).
    ///
    /// Why linger: each time the source fires, Dispatch's manager thread wakes from its epoll,
    /// re-arms the source, pokes a worker and switches to it. Measured on the blocked path, that
    /// was 7 system calls and 2 context switches per wake-up, every 20 queries at full speed and
    /// on every query at a moderate rate. Waiting on our own epoll set a little longer takes the
    /// next datagram with one epoll_wait and no hand-off. The wait costs no CPU; a thread idle for
    /// `lingerMilliseconds` goes back to Dispatch.
    private func serveReady() {
        var found = false
        turn { found = $0.drainReady(wait: 0) }
        guard found, EventLoop.lingerMilliseconds > 0 else { return }
        let end = EventLoop.now + EventLoop.lingerBudget
        while EventLoop.now < end && syncWaiters.load(ordering: .relaxed) == 0 {
            turn { found = $0.drainReady(wait: EventLoop.lingerMilliseconds) }
            if !found { return }
        }
    }

    /// Every socket that is ready, listeners and upstream sockets, in one turn; false when none
    /// was ready within `wait` ms.
    @discardableResult
    private func drainReady(wait: Int32) -> Bool {
        let errorMask = sinkhole_epoll_error_mask()
        for round in 0..<4 {
            let n = Int(sinkhole_epoll_wait(epoll, readyTokens, readyEvents, 64, round == 0 ? wait : 0))
            guard n > 0 else { return round > 0 }
            for i in 0..<n {
                let token = readyTokens[i]
                if token >= 1 << 63 {
                    state.withLock { s in s.watchers.first { $0.token == token } }?.readable()
                } else {
                    receive(token: token, error: readyEvents[i] & errorMask != 0)
                }
            }
            if n < 64 { return true }
        }
        return true
    }

    /// A new socket connected to upstream `index`, on a kernel-chosen random port, in the
    /// loop's epoll set.
    private func open(_ index: Int, token: UInt64) -> Result<PooledSocket, UpstreamFailure> {
        let upstream = upstreams[index]
        let fd = socket(upstream.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .failure(.network(SystemError("socket").description)) }
        guard upstream.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
            let error = SystemError("connect \(upstream)")
            Glibc.close(fd)
            return .failure(.network(error.description))
        }
        guard sinkhole_epoll_add(epoll, fd, token) == 0 else {
            let error = SystemError("epoll_ctl")
            Glibc.close(fd)
            return .failure(.network(error.description))
        }
        return .success(PooledSocket(fd: fd, token: token, upstream: index))
    }

    /// Under the lock: no new queries on `socket`; dropped from the table once none wait on it.
    private func retire(_ socket: PooledSocket, _ s: inout State) {
        if !socket.retired {
            socket.retired = true
            s.active[socket.upstream].removeAll { $0 === socket }
        }
        if socket.waiting.isEmpty { s.sockets[socket.token] = nil }
    }

    /// Stops the loop: queries still waiting fail, the sockets close, watchers are cancelled.
    func stop() {
        let (waiting, watchers): ([Waiting], [Watcher]) = state.withLock { s in
            s.stopped = true
            let all = s.sockets.values.flatMap { $0.waiting.values }
            s.sockets.removeAll()
            s.active = upstreams.map { _ in [] }
            s.deadlines.removeAll()
            defer { s.watchers.removeAll() }
            return (all, s.watchers)
        }
        for w in watchers { _ = sinkhole_epoll_remove(epoll, w.fd) }
        timer.cancel()
        upstreamSource.cancel()
        for w in waiting { w.job.finished(.failure(.network("stopping"))) }
    }

    /// Reads what arrived on one socket and completes the queries it answers.
    private func receive(token: UInt64, error: Bool) {
        guard let socket = state.withLock({ $0.sockets[token] }) else { return }
        // The scratch lists are taken (and given back at the end), so that a nested call, were
        // there one, would only allocate lists of its own.
        var replies = receivedScratch
        receivedScratch = []
        var done = doneScratch
        doneScratch = []
        defer {
            replies.removeAll(keepingCapacity: true)
            receivedScratch = replies
            done.removeAll(keepingCapacity: true)
            doneScratch = done
        }
        var failure: UpstreamFailure?
        // IDs of datagrams that are no DNS reply we can read, and whether TC was set. The query
        // with that ID keeps waiting (a spoofer who knows the port could otherwise end tries,
        // and mark an upstream down, with two bytes), but fails as a bad reply at its timeout
        // rather than as a try that heard nothing; one cut short with TC set goes to TCP.
        var unreadable: [(id: UInt16, truncated: Bool)] = []
        for _ in 0..<4 {
            for i in 0..<EventLoop.batch {
                headers[i] = MultiMessageHeader(
                    msg_hdr: msghdr(msg_name: nil, msg_namelen: 0, msg_iov: vectors + i, msg_iovlen: 1,
                                    msg_control: nil, msg_controllen: 0, msg_flags: 0),
                    msg_len: 0)
            }
            let received = Int(sinkhole_recvmmsg(socket.fd, headers, UInt32(EventLoop.batch), Int32(MSG_DONTWAIT)))
            if received < 0 {
                if errno != EAGAIN && errno != EINTR {
                    // ICMP port unreachable and the like: this upstream is not answering.
                    failure = .network(SystemError("receive from \(upstreams[socket.upstream])").description)
                }
                break
            }
            for i in 0..<received {
                let bytes = Array(UnsafeRawBufferPointer(start: buffers + i * EventLoop.datagramSize, count: Int(headers[i].msg_len)))
                guard let reply = UpstreamAnswer.received(bytes) else {
                    if bytes.count >= 2 {
                        unreadable.append((UInt16(bytes[0]) << 8 | UInt16(bytes[1]), bytes.count >= 3 && bytes[2] & 0x02 != 0))
                    }
                    continue
                }
                replies.append(reply)
            }
            if received < EventLoop.batch { break }
        }
        if error && failure == nil {
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(socket.fd, SOL_SOCKET, SO_ERROR, &code, &length) == 0, code != 0 {
                failure = .network(SystemError("receive from \(upstreams[socket.upstream])", code).description)
            }
        }
        var failed: [Waiting] = []
        var cutShort: [Waiting] = []
        state.withLock { s in
            for reply in replies {
                guard let waiting = socket.waiting[reply.id], reply.answers(waiting.job.question) else { continue }
                socket.waiting[reply.id] = nil
                done.append((waiting, reply))
            }
            for (id, truncated) in unreadable where socket.waiting[id] != nil {
                if truncated {
                    cutShort.append(socket.waiting.removeValue(forKey: id)!)
                } else {
                    socket.waiting[id]!.garbled = true
                }
            }
            if failure != nil {
                failed = Array(socket.waiting.values)
                socket.waiting.removeAll()
                retire(socket, &s)
            } else if socket.retired, socket.waiting.isEmpty {
                s.sockets[socket.token] = nil
            }
        }
        for (waiting, reply) in done {
            if reply.facts.truncated {
                retryOverTCP(socket.upstream, waiting)
            } else {
                waiting.job.finished(.success(reply))
            }
        }
        for w in cutShort { retryOverTCP(socket.upstream, w) }
        if let failure { for w in failed { w.job.finished(.failure(failure)) } }
    }

    /// The timer: completes the queries whose deadline has passed.
    private func expire() {
        let now = EventLoop.now
        let late: [Waiting] = state.withLock { s in
            var late: [Waiting] = []
            while let entry = s.deadlines.popDue(now) {
                guard let socket = s.sockets[entry.token], let w = socket.waiting[entry.id], w.serial == entry.serial else { continue }
                socket.waiting[entry.id] = nil
                late.append(w)
                if socket.retired, socket.waiting.isEmpty { s.sockets[socket.token] = nil }
            }
            // The timer fired: set it again for the next deadline, if any query still waits.
            s.timerAt = UInt64.max
            if let next = s.deadlines.earliest { schedule(max(next, now + EventLoop.timerGranularity), &s) }
            return late
        }
        for w in late {
            w.job.finished(.failure(w.garbled ? .badReply("no readable reply: a datagram with its ID was no DNS message") : .timeout))
        }
    }

    /// A truncated reply: the same question over TCP, a blocking exchange on one of the bounded
    /// retry threads (`TCPRetries`), within the time left of the try.
    private func retryOverTCP(_ index: Int, _ waiting: Waiting) {
        let upstream = upstreams[index]
        tcpRetries.submit(TCPRetries.Job(deadline: waiting.deadline, run: { remaining in
            var query = waiting.job.wire
            let id = UInt16.random(in: 0...UInt16.max)
            query[0] = UInt8(id >> 8)
            query[1] = UInt8(id & 0xFF)
            switch TCPExchange.run(upstream: upstream, query: query, timeout: max(0.05, remaining)) {
            case .success(let bytes):
                if let reply = UpstreamAnswer.validated(bytes, id: id, question: waiting.job.question) {
                    waiting.job.finished(.success(reply))
                } else {
                    waiting.job.finished(.failure(.badReply("TCP reply does not match the query")))
                }
            case .failure(let failure):
                waiting.job.finished(.failure(failure))
            }
        }, fail: { why in
            waiting.job.finished(.failure(.local(why)))
        }))
    }
}
