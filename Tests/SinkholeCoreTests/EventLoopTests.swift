import Dispatch
import Glibc
@testable import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// The per-core loop keeps its thread while its sockets stay busy (it waits on its own epoll set
/// instead of going back to Dispatch after each turn), but only for a bounded time per call, so
/// the deadline timer on the same queue still runs.
@Suite struct EventLoopTests {
    /// A watched descriptor that is always readable (a pipe with a byte its hook never reads) keeps the
    /// loop busy for good. A query to an upstream that never answers must still time out.
    /// With no bound on the lingering, the timer never runs and this fails after 5 s.
    @Test func aLoopThatIsAlwaysBusyStillTimesOutItsQueries() throws {
        let silent = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(silent) }
        let loopback = SocketAddress(address: [127, 0, 0, 1], port: 0)
        #expect(loopback.withSockAddr { bind(silent, $0, $1) } == 0)
        let upstream = try #require(SocketAddress.local(of: silent))

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
