import Dispatch
import Foundation
import Glibc

/// Runs the TCP retries of truncated UDP replies (`TCPExchange`, a blocking exchange with a
/// deadline) on a bounded set of threads of their own.
///
/// Why bounded: each retry used to start a thread. A client can make them common, by asking
/// for names whose answers are large; against an upstream whose TCP port accepts and never
/// answers, a flood of such names held one thread per query (2,000 threads, 2,000 descriptors),
/// and under a limit on threads (a container's pids limit, systemd TasksMax) the thread that
/// could not start left its query waiting for ever: its in-flight slot, its name (every later
/// query for it joined the wait) and any TCP connection asking it, stuck until a restart.
///
/// Here at most `maxWorkers` threads run retries; a retry waits in a queue of at most
/// `maxQueued`, and one past it, or one whose deadline passes while it waits, ends at once with
/// a failure, as does every waiting retry when no thread can be started at all. Every retry
/// handed in ends, one way or the other. Threads idle for `idleExit` end, so a burst does not
/// leave them behind.
final class TCPRetries: @unchecked Sendable {
    struct Job {
        /// Uptime ns after which the retry is pointless (its try's deadline).
        let deadline: UInt64
        /// The exchange, given the seconds left.
        let run: (Double) -> Void
        /// Ends the retry without running it, with why.
        let fail: (String) -> Void
    }

    let maxWorkers: Int
    let maxQueued: Int
    let idleExit: Double
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var head = 0
    private var workers = 0
    private var idle = 0
    /// For tests: make starting a thread fail.
    var failToStart = false

    static let shared = TCPRetries()

    init(maxWorkers: Int = 32, maxQueued: Int = 256, idleExit: Double = 30) {
        self.maxWorkers = maxWorkers
        self.maxQueued = maxQueued
        self.idleExit = idleExit
    }

    /// Threads running or waiting for retries now (for tests and the threat model's figures).
    var threads: Int { condition.withLock { workers } }
    /// Threads waiting for a retry now (for tests).
    var idleThreads: Int { condition.withLock { idle } }

    func submit(_ job: Job) {
        condition.lock()
        guard queue.count - head < maxQueued else {
            condition.unlock()
            return job.fail("too many TCP retries waiting (\(maxQueued))")
        }
        queue.append(job)
        // Idle threads take one waiting retry each: signalled while there are as many of them
        // as retries waiting. Beyond that, a thread is started (up to the bound). Before, any
        // idle thread was signalled: a burst of retries met one idle thread, which took them
        // one after another while no other thread was started, and the last ones timed out
        // waiting (a review).
        if queue.count - head <= idle {
            condition.signal()
            condition.unlock()
            return
        }
        guard workers < maxWorkers else {
            condition.unlock()
            return
        }
        workers += 1
        condition.unlock()
        guard startThread() else {
            // No thread: the retries that no running thread will take end now.
            condition.lock()
            workers -= 1
            var orphans: [Job] = []
            if workers == 0 {
                orphans = Array(queue[head...])
                queue.removeAll()
                head = 0
            }
            condition.unlock()
            for orphan in orphans { orphan.fail("cannot start a thread for the TCP retry") }
            return
        }
    }

    private func startThread() -> Bool {
        if failToStart { return false }
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { argument in
            let pool = Unmanaged<TCPRetries>.fromOpaque(argument!).takeRetainedValue()
            pool.work()
            return nil
        }, context)
        guard started == 0 else {
            Unmanaged<TCPRetries>.fromOpaque(context).release()
            return false
        }
        pthread_detach(thread)
        return true
    }

    private func work() {
        while let job = next() {
            let left = Double(Int64(job.deadline) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9
            if left <= 0.001 {
                job.fail("timed out waiting for a TCP retry thread")
            } else {
                job.run(left)
            }
        }
    }

    /// The next retry, or nil when none came for `idleExit` seconds (the thread then ends).
    private func next() -> Job? {
        condition.lock()
        defer { condition.unlock() }
        while head == queue.count {
            idle += 1
            let woken = condition.wait(until: Date().addingTimeInterval(idleExit))
            idle -= 1
            if !woken && head == queue.count {
                workers -= 1
                return nil
            }
        }
        let job = queue[head]
        head += 1
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        }
        return job
    }
}
