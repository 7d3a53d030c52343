import Dispatch
import SinkholeTestSupport
import Foundation
@testable import SinkholeCore
import Synchronization
import Testing

/// The TCP retries' bounded threads: every retry handed in ends, run or failed, whatever the
/// load and even when no thread can be started.
@Suite struct TCPRetriesTests {
    final class Outcomes: @unchecked Sendable {
        let ran = Mutex(0)
        let failed = Mutex<[String]>([])
        let ended = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
    }

    func job(_ o: Outcomes, gate: DispatchSemaphore? = nil, seconds: Double = 5) -> TCPRetries.Job {
        TCPRetries.Job(deadline: DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9), run: { _ in
            o.started.signal()
            _ = gate?.wait(timeout: .now() + 5)
            o.ran.withLock { $0 += 1 }
            o.ended.signal()
        }, fail: { why in
            o.failed.withLock { $0.append(why) }
            o.ended.signal()
        })
    }

    @Test func retriesPastTheThreadsAndTheQueueFailAtOnceAndTheRestRun() {
        let pool = TCPRetries(maxWorkers: 2, maxQueued: 2, idleExit: 0.2)
        let o = Outcomes()
        let gate = DispatchSemaphore(value: 0)
        // Two run (blocked on the gate), two wait, the fifth and sixth are turned away at once.
        for _ in 0..<2 { pool.submit(job(o, gate: gate)) }
        for _ in 0..<2 { #expect(o.started.wait(timeout: .now() + 5) == .success) }
        for _ in 0..<4 { pool.submit(job(o, gate: gate)) }
        for _ in 0..<2 { #expect(o.ended.wait(timeout: .now() + 5) == .success) }
        #expect(o.failed.withLock { $0 }.count == 2)
        #expect(o.failed.withLock { $0 }.allSatisfy { $0.contains("too many TCP retries waiting") })
        #expect(pool.threads == 2, "never more threads than the bound")
        for _ in 0..<4 { gate.signal() }
        for _ in 0..<4 { #expect(o.ended.wait(timeout: .now() + 5) == .success) }
        #expect(o.ran.withLock { $0 } == 4)
    }

    /// A burst of retries that meets one idle thread starts more threads: each waiting retry
    /// has an idle thread of its own or a new one (a review: the one idle thread was signalled
    /// for each, took them in turn, and the last timed out waiting while 31 threads could run).
    @Test func aBurstMeetingOneIdleThreadStartsMoreThreads() {
        let pool = TCPRetries(maxWorkers: 4, maxQueued: 8, idleExit: 30)
        let o = Outcomes()
        pool.submit(job(o))
        #expect(o.started.wait(timeout: .now() + 5) == .success && o.ended.wait(timeout: .now() + 5) == .success)
        let waitUntil = DispatchTime.now().uptimeNanoseconds + 5_000_000_000
        while pool.idleThreads < 1 && DispatchTime.now().uptimeNanoseconds < waitUntil { usleep(1000) }
        #expect(pool.idleThreads == 1)
        let gate = DispatchSemaphore(value: 0)
        for _ in 0..<3 { pool.submit(job(o, gate: gate)) }
        for _ in 0..<3 { #expect(o.started.wait(timeout: .now() + 5) == .success, "every retry of the burst runs at once") }
        #expect(pool.threads == 3)
        for _ in 0..<3 { gate.signal() }
        for _ in 0..<3 { #expect(o.ended.wait(timeout: .now() + 5) == .success) }
        #expect(o.ran.withLock { $0 } == 4)
    }

    @Test func aRetryWhoseDeadlinePassedWhileItWaitedFailsWithoutRunning() {
        let pool = TCPRetries(maxWorkers: 1, maxQueued: 4, idleExit: 0.2)
        let o = Outcomes()
        let gate = DispatchSemaphore(value: 0)
        pool.submit(job(o, gate: gate))
        pool.submit(job(o, seconds: 0))   // already late when a thread takes it
        gate.signal()
        for _ in 0..<2 { #expect(o.ended.wait(timeout: .now() + 5) == .success) }
        #expect(o.ran.withLock { $0 } == 1)
        #expect(o.failed.withLock { $0 } == ["timed out waiting for a TCP retry thread"])
    }

    @Test func whenNoThreadCanStartEveryRetryEndsAtOnce() {
        let pool = TCPRetries(maxWorkers: 4, maxQueued: 4, idleExit: 0.2)
        pool.failToStart = true
        let o = Outcomes()
        for _ in 0..<3 { pool.submit(job(o)) }
        for _ in 0..<3 { #expect(o.ended.wait(timeout: .now() + 5) == .success) }
        #expect(o.failed.withLock { $0 } == Array(repeating: "cannot start a thread for the TCP retry", count: 3))
        #expect(pool.threads == 0)
    }
}

/// From an upstream-failure trial: an upstream that truncates, with a TCP side that never
/// answers, filled the retry threads, and the queries whose retry could not be made got SERVFAIL
/// at once while a healthy second upstream had time left. Such a query now moves on to it.
@Suite struct TCPRetryLimitTests {
    @Test func aRetryThatCannotBeMadeMovesOnToTheNextUpstream() throws {
        let records = ["big.example.org. 300 IN A 192.0.2.94"]
        let truncating = try FakeUpstream(records: records)
        defer { truncating.stop() }
        truncating.set(.truncateUDP, for: "big.example.org")
        let second = try FakeUpstream(records: records)
        defer { second.stop() }
        // No room for a single TCP retry: every one fails at once, as when all are busy.
        let forwarder = Forwarder(upstreams: [truncating.address, second.address], zones: [], privateReverse: .auto, timeout: 2,
                                  payloadSize: 1232, strategy: .first, deadline: nil, retryBackoff: 5, metrics: nil, forwardECS: false,
                                  stillDownInterval: 60, tcpRetries: TCPRetries(maxWorkers: 1, maxQueued: 0, idleExit: 0.2),
                                  logger: TestHarness.quietLogger)
        defer { forwarder.stop() }
        let bytes = DNSTestClient.query("big.example.org")
        let m = try #require(Message(wire: bytes))
        let query = Query(header: Header(bytes)!, question: m.question!, edns: m.edns,
                          client: SocketAddress(address: [127, 0, 0, 1], port: 5353), transport: .udp)
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Resolution?>(nil)
        forwarder.forward(Chase(query: query, notAfter: .max) { resolution in
            outcome.withLock { $0 = resolution }
            done.signal()
        })
        #expect(done.wait(timeout: .now() + 5) == .success)
        guard case .upstream(let answer, let from) = outcome.withLock({ $0 }) else {
            Issue.record("no answer: \(String(describing: outcome.withLock { $0 }))")
            return
        }
        #expect(answer.rcode == Rcode.noError && from == second.address, "the second upstream's answer")
        #expect(!forwarder.health.isDown(0), "our own limit, not held against the upstream")
    }
}
