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
    private let buffers: [ReceiveBuffer]
    private let next = Atomic<Int>(0)

    public init(label: String, count: Int = max(4, 2 * CPUs.usable)) {
        queues = (0..<max(1, count)).map { DispatchQueue(label: "\(label).\($0)") }
        buffers = queues.map { _ in ReceiveBuffer() }
    }

    public func queue() -> DispatchQueue {
        lane().queue
    }

    /// A queue and the receive buffer that belongs to it: work on that queue may use the buffer
    /// without a lock, since the queue runs one block at a time.
    public func lane() -> (queue: DispatchQueue, buffer: ReceiveBuffer) {
        let i = abs(next.add(1, ordering: .relaxed).oldValue % queues.count)
        return (queues[i], buffers[i])
    }
}

/// 64 KiB, the largest datagram, allocated once: a fresh zeroed buffer per upstream reply cost a
/// large malloc (and a consolidation of malloc's free lists) and a memset on every cache miss.
public final class ReceiveBuffer: @unchecked Sendable {
    public static let size = 65_536
    public let bytes = UnsafeMutableRawPointer.allocate(byteCount: ReceiveBuffer.size, alignment: 16)
    deinit { bytes.deallocate() }
}

/// How many CPUs sinkhole may run on: the affinity mask (taskset, systemd CPUAffinity=, a
/// container's cpuset), not every CPU of the machine. Threads and sockets per core are sized by
/// it, so a process confined to one core does not split its work over threads that would only
/// take turns on that core.
public enum CPUs {
    public static let usable = max(1, Int(sinkhole_usable_cpus()))
}
