import Dispatch
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
