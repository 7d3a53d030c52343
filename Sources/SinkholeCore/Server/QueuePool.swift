import CSinkholeNet
import Dispatch
import Foundation
import Synchronization

/// A fixed set of serial Dispatch queues handed out round-robin.
///
/// Why not one concurrent queue: on Linux a concurrent queue draws from libdispatch's
/// width-limited pool (one thread per core), so any blocking work there starves every queue
/// that targets it. Serial queues get their own threads as needed, and a fixed number of them
/// bounds how many there can be.
public final class QueuePool: Sendable {
    private let queues: [DispatchQueue]
    private let next = Atomic<Int>(0)

    public init(label: String, count: Int = max(4, 2 * CPUs.usable)) {
        queues = (0..<max(1, count)).map { DispatchQueue(label: "\(label).\($0)") }
    }

    public func queue() -> DispatchQueue {
        queues[abs(next.add(1, ordering: .relaxed).oldValue % queues.count)]
    }
}

/// How many CPUs sinkhole may run on: the affinity mask (taskset, systemd CPUAffinity=, a
/// container's cpuset), not every CPU of the machine. Threads and sockets per core are sized by
/// it, so a process confined to one core does not split its work over threads that would only
/// take turns on that core.
public enum CPUs {
    public static let usable = max(1, Int(sinkhole_usable_cpus()))
}
