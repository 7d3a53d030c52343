import CSinkholeNet
import Foundation
import Glibc
import Synchronization

/// The UDP side of forwarding: pools of connected sockets to each upstream, watched by event
/// loops of our own (epoll), one per shard, so that a query to an upstream costs one `send` and
/// its reply one turn of a loop that is already awake, not a socket, a connect, a Dispatch
/// source and a timer each (what made a cache miss cost four times a cache hit).
///
/// Spoofing defence (RFC 5452 §9.2: unpredictable ID and source port). Each shard keeps up to
/// `socketsPerUpstream` sockets per upstream, each on a port the kernel picks at random, and
/// picks one of them at random per query; a socket carries at most `queriesPerSocket` queries
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
    typealias Completion = @Sendable (Result<Message, UpstreamFailure>) -> Void

    /// Sockets per upstream in one shard, each on its own random port.
    static let socketsPerUpstream = 32
    /// Queries one socket carries before it is retired for a new one on a new port.
    static let queriesPerSocket = 64

    let upstreams: [SocketAddress]
    /// One per usable core (at most 8); the UDP listeners run on them too.
    let loops: [EventLoop]

    init(upstreams: [SocketAddress], loops: Int = min(8, CPUs.usable)) {
        self.upstreams = upstreams
        self.loops = (0..<max(1, loops)).map { _ in EventLoop(upstreams: upstreams) }
    }

    /// Sends `query` (its ID is replaced by a fresh random one) to upstream `index` and calls
    /// `completion` once: with the validated reply, at the timeout, or on a network error
    /// (an ICMP port unreachable comes back as one within a round trip). A truncated reply is
    /// retried over TCP within the same timeout.
    func exchange(upstream index: Int, query: [UInt8], question: Question, timeout: Double,
                  completion: @escaping Completion) {
        let me = EventLoop.currentThread
        let loop = loops.first { $0.runs(on: me) }
            ?? loops[Int(((UInt64(me) &* 0x9E37_79B9_7F4A_7C15) >> 32) % UInt64(loops.count))]
        loop.submit(upstream: index, query: query, question: question, timeout: timeout, completion: completion)
    }

    /// Stops the loops; queries still waiting fail. Call once nothing is being forwarded.
    func stop() {
        loops.forEach { $0.stop() }
    }

    /// Sockets open now, over all loops (for tests).
    var openSockets: Int { loops.reduce(0) { $0 + $1.openSockets } }
}

/// One connected UDP socket of the pool. Its descriptor is closed when the last reference goes,
/// so a thread still sending on it never meets a descriptor number reused by something else.
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

private struct Waiting {
    let serial: UInt64
    /// What was sent (for the TCP retry after a truncated reply).
    let query: [UInt8]
    let question: Question
    let deadline: UInt64
    let completion: UpstreamSockets.Completion
}

/// Deadlines of waiting queries, earliest first (a binary heap). An entry whose query was
/// already answered stays until its deadline and is then skipped: its serial no longer matches.
private struct DeadlineHeap {
    struct Entry {
        let deadline: UInt64
        let token: UInt64
        let id: UInt16
        let serial: UInt64
    }
    private var items: [Entry] = []

    var earliest: UInt64? { items.first?.deadline }
    var count: Int { items.count }

    mutating func push(_ entry: Entry) {
        items.append(entry)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[parent].deadline > items[i].deadline else { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func popDue(_ now: UInt64) -> Entry? {
        guard let first = items.first, first.deadline <= now else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < items.count, items[l].deadline < items[smallest].deadline { smallest = l }
            if r < items.count, items[r].deadline < items[smallest].deadline { smallest = r }
            if smallest == i { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return first
    }

    mutating func removeAll() { items.removeAll() }
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

/// One thread waiting in epoll for everything of one core: the upstream sockets above, and the
/// UDP listener sockets watched on it (`watch`). Blocked names, cache hits and forwarded
/// answers are all handled on it, so a query costs no hand-off between threads; listeners
/// flush their send batches after each turn (`flush` hooks), so forwarded replies go out by
/// sendmmsg as well.
final class EventLoop: @unchecked Sendable {
    struct Watcher {
        let token: UInt64
        let fd: Int32
        let readable: @Sendable () -> Void
        let flush: @Sendable () -> Void
    }

    fileprivate struct State {
        var watchers: [Watcher] = []
        var tasks: [@Sendable () -> Void] = []
        var nextWatch: UInt64 = 1 << 63
        var sockets: [UInt64: PooledSocket] = [:]
        /// Per upstream, the sockets new queries may use.
        var active: [[PooledSocket]]
        var deadlines = DeadlineHeap()
        var nextToken: UInt64 = 1   // 0 is the wake-up descriptor
        var nextSerial: UInt64 = 0
        var stopped = false
        var ids = RandomIDs()
    }

    private let upstreams: [SocketAddress]
    private let epoll: Int32
    private let wake: Int32
    private let state: Mutex<State>
    /// When the loop will next wake by itself (uptime ns); a query due earlier wakes it.
    private let plannedWake = Atomic<UInt64>(0)
    private let started = Atomic<Bool>(false)
    /// The loop's thread (0 until it runs, and again after it has returned).
    private let thread = Atomic<UInt>(0)

    static var currentThread: UInt { UInt(bitPattern: Int(pthread_self())) }

    func runs(on thread: UInt) -> Bool { self.thread.load(ordering: .relaxed) == thread }
    var isCurrent: Bool { runs(on: EventLoop.currentThread) }

    // Used only by the loop thread.
    static let batch = 16
    private let buffers: UnsafeMutableRawPointer
    private let vectors: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<MultiMessageHeader>

    init(upstreams: [SocketAddress]) {
        self.upstreams = upstreams
        state = Mutex(State(active: upstreams.map { _ in [] }))
        epoll = sinkhole_epoll_create()
        wake = sinkhole_eventfd()
        if epoll >= 0, wake >= 0 { _ = sinkhole_epoll_add(epoll, wake, 0) }
        buffers = .allocate(byteCount: EventLoop.batch * ReceiveBuffer.size, alignment: 16)
        vectors = .allocate(capacity: EventLoop.batch)
        headers = .allocate(capacity: EventLoop.batch)
        for i in 0..<EventLoop.batch {
            vectors[i] = iovec(iov_base: buffers + i * ReceiveBuffer.size, iov_len: ReceiveBuffer.size)
        }
    }

    deinit {
        buffers.deallocate()
        vectors.deallocate()
        headers.deallocate()
    }

    var openSockets: Int { state.withLock { $0.sockets.count } }

    private static var now: UInt64 { DispatchTime.now().uptimeNanoseconds }

    private func startIfNeeded() {
        if !started.load(ordering: .acquiring), started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            let ready = DispatchSemaphore(value: 0)
            let thread = Thread { [self] in
                self.thread.store(EventLoop.currentThread, ordering: .relaxed)
                ready.signal()
                run()
            }
            thread.name = "sinkhole.loop"
            thread.start()
            ready.wait()
        }
    }

    /// Calls `readable` on the loop's thread whenever `fd` has data (level-triggered: until
    /// it is drained), and `flush` after every turn of the loop.
    func watch(_ fd: Int32, readable: @escaping @Sendable () -> Void, flush: @escaping @Sendable () -> Void) throws -> UInt64 {
        startIfNeeded()
        return try state.withLock { s in
            let token = s.nextWatch
            s.nextWatch += 1
            guard sinkhole_epoll_add(epoll, fd, token) == 0 else { throw SystemError("epoll_ctl") }
            s.watchers.append(Watcher(token: token, fd: fd, readable: readable, flush: flush))
            return token
        }
    }

    /// Stops watching; when it returns, neither hook is running or will run again.
    func unwatch(_ token: UInt64) {
        performAndWait { [self] in
            state.withLock { s in
                if let i = s.watchers.firstIndex(where: { $0.token == token }) {
                    _ = sinkhole_epoll_remove(epoll, s.watchers[i].fd)
                    s.watchers.remove(at: i)
                }
            }
        }
    }

    /// Runs `block` on the loop's thread between two turns and waits for it (at once when
    /// called on that thread, or when the loop is not running).
    func performAndWait(_ block: @escaping @Sendable () -> Void) {
        if isCurrent { return block() }
        let done = DispatchSemaphore(value: 0)
        let queued = state.withLock { s -> Bool in
            guard !s.stopped, thread.load(ordering: .relaxed) != 0 else { return false }
            s.tasks.append { block(); done.signal() }
            return true
        }
        guard queued else { return block() }
        poke()
        done.wait()
    }

    func submit(upstream index: Int, query: [UInt8], question: Question, timeout: Double,
                completion: @escaping UpstreamSockets.Completion) {
        startIfNeeded()
        let deadline = EventLoop.now + UInt64(max(0.001, timeout) * 1e9)
        let picked: Result<(PooledSocket, UInt16, UInt64), UpstreamFailure> = state.withLock { s in
            if s.stopped { return .failure(.network("stopping")) }
            let socket: PooledSocket
            if s.active[index].count < UpstreamSockets.socketsPerUpstream {
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
            var id = s.ids.next()
            while socket.waiting[id] != nil { id = s.ids.next() }
            s.nextSerial += 1
            socket.waiting[id] = Waiting(serial: s.nextSerial, query: query, question: question, deadline: deadline, completion: completion)
            socket.used += 1
            if socket.used >= UpstreamSockets.queriesPerSocket {
                socket.retired = true
                s.active[index].removeAll { $0 === socket }
            }
            s.deadlines.push(.init(deadline: deadline, token: socket.token, id: id, serial: s.nextSerial))
            return .success((socket, id, s.nextSerial))
        }
        guard case .success(let (socket, id, serial)) = picked else {
            if case .failure(let failure) = picked { completion(.failure(failure)) }
            return
        }
        var wire = query
        wire[0] = UInt8(id >> 8)
        wire[1] = UInt8(id & 0xFF)
        let sent = wire.withUnsafeBytes { Glibc.send(socket.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if sent != wire.count {
            let error = SystemError("send to \(upstreams[index])")
            let mine = state.withLock { s -> Bool in
                guard socket.waiting[id]?.serial == serial else { return false }
                socket.waiting[id] = nil
                retire(socket, &s)
                return true
            }
            if mine { completion(.failure(.network(error.description))) }
            return
        }
        if deadline < plannedWake.load(ordering: .sequentiallyConsistent) { poke() }
    }

    /// A new socket connected to upstream `index`, on a kernel-chosen random port.
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

    private func poke() {
        var one: UInt64 = 1
        _ = Glibc.write(wake, &one, 8)
    }

    func stop() {
        let waiting: [Waiting] = state.withLock { s in
            s.stopped = true
            let all = s.sockets.values.flatMap { $0.waiting.values }
            s.sockets.removeAll()
            s.active = upstreams.map { _ in [] }
            s.deadlines.removeAll()
            s.watchers.removeAll()
            return all
        }
        for w in waiting { w.completion(.failure(.network("stopping"))) }
        if started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            closeDescriptors()   // the loop never ran
        } else {
            poke()               // the loop sees `stopped` and closes them
        }
    }

    private func closeDescriptors() {
        Glibc.close(epoll)
        Glibc.close(wake)
    }

    // MARK: the loop

    private func run() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        let errorMask = sinkhole_epoll_error_mask()
        while true {
            // Submissions meanwhile poke the loop (at worst once in vain), so none that is due
            // before the wake computed here is missed.
            plannedWake.store(UInt64.max, ordering: .sequentiallyConsistent)
            let (stopped, next) = state.withLock { ($0.stopped, $0.deadlines.earliest) }
            if stopped { break }
            let now = EventLoop.now
            // At most a second asleep; a query due sooner than planned pokes the loop.
            let wait = min(1_000_000_000, next.map { $0 > now ? $0 - now : 0 } ?? 1_000_000_000)
            let milliseconds = Int32((wait + 999_999) / 1_000_000)
            plannedWake.store(now + UInt64(milliseconds) * 1_000_000, ordering: .sequentiallyConsistent)
            let n = tokens.withUnsafeMutableBufferPointer { t in
                events.withUnsafeMutableBufferPointer { e in
                    sinkhole_epoll_wait(epoll, t.baseAddress, e.baseAddress, 64, milliseconds)
                }
            }
            // Awake: what is submitted now is seen at the top of the loop, no poke needed.
            plannedWake.store(0, ordering: .sequentiallyConsistent)
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = tokens[i]
                    if token == 0 {
                        var value: UInt64 = 0
                        _ = Glibc.read(wake, &value, 8)
                    } else if token >= 1 << 63 {
                        state.withLock { s in s.watchers.first { $0.token == token } }?.readable()
                    } else {
                        receive(token: token, error: events[i] & errorMask != 0)
                    }
                }
            }
            expire()
            let (tasks, watchers) = state.withLock { s -> ([@Sendable () -> Void], [Watcher]) in
                defer { s.tasks.removeAll() }
                return (s.tasks, s.watchers)
            }
            tasks.forEach { $0() }
            watchers.forEach { $0.flush() }
        }
        thread.store(0, ordering: .relaxed)
        // Anyone still waiting in performAndWait is let go.
        state.withLock { s in defer { s.tasks.removeAll() }; return s.tasks }.forEach { $0() }
        closeDescriptors()
    }

    /// Reads what arrived on one socket and completes the queries it answers.
    private func receive(token: UInt64, error: Bool) {
        guard let socket = state.withLock({ $0.sockets[token] }) else { return }
        var replies: [(UInt16, Message)] = []
        var failure: UpstreamFailure?
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
                let bytes = Array(UnsafeRawBufferPointer(start: buffers + i * ReceiveBuffer.size, count: Int(headers[i].msg_len)))
                guard bytes.count >= Header.size, bytes[2] & 0x80 != 0, let message = Message(wire: bytes),
                      message.questionCount == 1, message.question != nil else { continue }
                message.receivedWire = bytes
                replies.append((UInt16(bytes[0]) << 8 | UInt16(bytes[1]), message))
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
        var done: [(Waiting, Message)] = []
        var failed: [Waiting] = []
        state.withLock { s in
            for (id, message) in replies {
                guard let waiting = socket.waiting[id], let q = message.question, q.matches(waiting.question) else { continue }
                socket.waiting[id] = nil
                done.append((waiting, message))
            }
            if failure != nil {
                failed = Array(socket.waiting.values)
                socket.waiting.removeAll()
                retire(socket, &s)
            } else if socket.retired, socket.waiting.isEmpty {
                s.sockets[socket.token] = nil
            }
        }
        for (waiting, message) in done {
            if message.truncated {
                retryOverTCP(socket.upstream, waiting)
            } else {
                waiting.completion(.success(message))
            }
        }
        if let failure { for w in failed { w.completion(.failure(failure)) } }
    }

    /// Completes the queries whose deadline has passed.
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
            return late
        }
        for w in late { w.completion(.failure(.timeout)) }
    }

    /// A truncated reply: the same question over TCP, on a thread of its own (rare, blocking).
    private func retryOverTCP(_ index: Int, _ waiting: Waiting) {
        let upstream = upstreams[index]
        let remaining = max(0.05, Double(Int64(waiting.deadline) - Int64(EventLoop.now)) / 1e9)
        Thread.detachNewThread {
            var query = waiting.query
            let id = UInt16.random(in: 0...UInt16.max)
            query[0] = UInt8(id >> 8)
            query[1] = UInt8(id & 0xFF)
            switch TCPExchange.run(upstream: upstream, query: query, timeout: remaining) {
            case .success(let bytes):
                if let message = UpstreamReply.validated(bytes, id: id, question: waiting.question) {
                    waiting.completion(.success(message))
                } else {
                    waiting.completion(.failure(.badReply("TCP reply does not match the query")))
                }
            case .failure(let failure):
                waiting.completion(.failure(failure))
            }
        }
    }
}
