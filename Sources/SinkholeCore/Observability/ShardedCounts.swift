import CSinkholeNet

/// Counters that every query bumps, kept once per thread shard so that cores counting at the
/// same time never write the same cache line: a counter is the sum of its shards, read when
/// /metrics is scraped (or a test asks). A shared atomic would be exact too, but each increment
/// from another core first pulls the line over; a histogram behind one lock (the Prometheus
/// library's) would be a lock every forwarded query takes.
///
/// Each shard is `slots` 64-bit counters in an allocation of its own, rounded up to and aligned
/// on a cache line. A thread always uses the same shard (`ThreadShards.index`); two threads that
/// share one still count right, since every add is atomic (relaxed: a count orders nothing).
final class ShardedCounts: @unchecked Sendable {
    let slots: Int
    private let shards: [UnsafeMutablePointer<UInt64>]

    init(slots: Int, shards count: Int = ThreadShards<Int>.defaultCount) {
        precondition(slots > 0)
        self.slots = slots
        shards = (0..<max(1, count)).map { _ in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: (slots + 7) / 8 * 64, alignment: 64)
            return raw.initializeMemory(as: UInt64.self, repeating: 0, count: (slots + 7) / 8 * 8)
        }
    }

    deinit {
        for shard in shards { shard.deallocate() }
    }

    /// Adds `n` to counter `slot`, in the calling thread's shard.
    @inline(__always)
    func add(_ slot: Int, _ n: UInt64 = 1) {
        precondition(slot >= 0 && slot < slots, "counter slot out of range")
        sinkhole_counter_add(shards[ThreadShards<Int>.index(count: shards.count)] + slot, n)
    }

    /// Adds to two counters of the calling thread's shard (a histogram's bucket and its sum),
    /// finding the shard once.
    @inline(__always)
    func add(_ slot: Int, _ n: UInt64, and other: Int, _ m: UInt64) {
        precondition(slot >= 0 && slot < slots && other >= 0 && other < slots, "counter slot out of range")
        let shard = shards[ThreadShards<Int>.index(count: shards.count)]
        sinkhole_counter_add(shard + slot, n)
        sinkhole_counter_add(shard + other, m)
    }

    /// Counter `slot`: the sum over every shard.
    func total(_ slot: Int) -> UInt64 {
        precondition(slot >= 0 && slot < slots, "counter slot out of range")
        var sum: UInt64 = 0
        for shard in shards { sum &+= sinkhole_counter_load(shard + slot) }
        return sum
    }
}
