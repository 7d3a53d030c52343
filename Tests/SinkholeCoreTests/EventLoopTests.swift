import Dispatch
import Glibc
@testable import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// The per-core loop keeps its thread while its sockets stay busy (it waits on its own epoll set
/// instead of going back to Dispatch after each turn), but only for a bounded time per call, so
/// the deadline timer on the same queue still runs.
/// A UDP socket bound to 127.0.0.1 on a port the kernel picks, and its address: an upstream
/// the test reads from (or leaves silent).
func loopbackUDP() throws -> (fd: Int32, address: SocketAddress) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    let loopback = SocketAddress(address: [127, 0, 0, 1], port: 0)
    guard fd >= 0, loopback.withSockAddr({ bind(fd, $0, $1) }) == 0, let address = SocketAddress.local(of: fd) else {
        if fd >= 0 { close(fd) }
        throw SystemError("bind 127.0.0.1:0")
    }
    return (fd, address)
}

/// An upstream try whose outcome goes to a closure: the tests' way to submit a query.
final class ClosureTry: UpstreamTry, @unchecked Sendable {
    let completion: @Sendable (Result<UpstreamAnswer, UpstreamFailure>) -> Void

    init(wire: [UInt8], question: Question, completion: @escaping @Sendable (Result<UpstreamAnswer, UpstreamFailure>) -> Void) {
        self.completion = completion
        super.init(wire: wire, question: question)
    }

    override func finished(_ result: Result<UpstreamAnswer, UpstreamFailure>) { completion(result) }
}

extension EventLoop {
    func submit(upstream index: Int, query: [UInt8], question: Question, timeout: Double,
                completion: @escaping @Sendable (Result<UpstreamAnswer, UpstreamFailure>) -> Void) {
        submit(upstream: index, try: ClosureTry(wire: query, question: question, completion: completion), timeout: timeout)
    }
}

@Suite struct EventLoopTests {
    /// A watched descriptor that is always readable (a pipe with a byte its hook never reads) keeps the
    /// loop busy for good. A query to an upstream that never answers must still time out.
    /// With no bound on the lingering, the timer never runs and this fails after 5 s.
    @Test func aLoopThatIsAlwaysBusyStillTimesOutItsQueries() throws {
        let (silent, upstream) = try loopbackUDP()
        defer { close(silent) }

        let loop = EventLoop(upstreams: [upstream])
        defer { loop.stop() }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        #expect(write(ends[1], "x", 1) == 1)
        let busy = ends[0]
        let turns = Atomic<Int>(0)
        let token = try loop.watch(busy, readable: { turns.add(1, ordering: .relaxed) }, flush: {})
        defer { loop.unwatch(token) }

        let question = Question(name: try #require(WireName.fromText("slow.example.org")), type: RRType.a, qclass: RRType.classIN)
        let failure = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        loop.submit(upstream: 0, query: DNSTestClient.query("slow.example.org"), question: question, timeout: 0.05) { result in
            if case .failure(let f) = result { failure.withLock { $0 = f.kind } }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 5) == .success, "the query did not time out while the loop was busy")
        #expect(failure.withLock { $0 } == "timeout")
        #expect(turns.load(ordering: .relaxed) > 100, "the busy descriptor was served: \(turns.load(ordering: .relaxed)) turns")
    }
}

/// Queries forwarded during one turn of the loop (one batch of client datagrams) are sent
/// together when the turn ends: one sendmmsg per upstream socket, not one sendmsg each.
@Suite struct EventLoopSendBatchTests {
    /// 100 queries submitted from one turn go out on two sockets: 64 on the first (its quota
    /// before it is retired), the rest on the next. Sent one by one, each query up to the pool's
    /// 32 sockets would open a socket of its own.
    @Test func queriesOfOneTurnShareASocketAndAllArrive() throws {
        let (upstreamFD, upstream) = try loopbackUDP()
        defer { close(upstreamFD) }
        Socket.setOption(upstreamFD, SOL_SOCKET, SO_RCVBUF, 1 << 20)

        let loop = EventLoop(upstreams: [upstream])
        defer { loop.stop() }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let count = 100
        let submitted = DispatchSemaphore(value: 0)
        let question = Question(name: try #require(WireName.fromText("batch.example.org")), type: RRType.a, qclass: RRType.classIN)
        let query = DNSTestClient.query("batch.example.org")
        let readEnd = ends[0]
        let token = try loop.watch(readEnd, readable: {
            var byte: UInt8 = 0
            guard read(readEnd, &byte, 1) == 1 else { return }
            for _ in 0..<count {
                loop.submit(upstream: 0, query: query, question: question, timeout: 5) { _ in }
            }
            submitted.signal()
        }, flush: {})
        defer { loop.unwatch(token) }
        #expect(write(ends[1], "x", 1) == 1)
        #expect(submitted.wait(timeout: .now() + 5) == .success)

        var ports: [UInt16: Set<UInt16>] = [:]   // source port → query IDs seen on it
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 512)
        while received < count {
            var poller = pollfd(fd: upstreamFD, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 5000) == 1 else { break }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(upstreamFD, raw.baseAddress, raw.count, 0, $0, &length) }
                }
            }
            guard n == query.count, let from = SocketAddress(storage: &storage) else { continue }
            #expect(Array(buffer[2..<n]) == Array(query[2...]), "the query is sent as submitted, with a new ID")
            ports[from.port, default: []].insert(UInt16(buffer[0]) << 8 | UInt16(buffer[1]))
            received += 1
        }
        #expect(received == count, "every queued query was sent")
        #expect(ports.count == 2, "one socket until its quota, then the next: \(ports.mapValues(\.count))")
        #expect(ports.values.map(\.count).sorted() == [count - UpstreamSockets.queriesPerSocket, UpstreamSockets.queriesPerSocket],
                "distinct IDs on each socket")
    }
}
