import Glibc
import Synchronization

/// A value kept once per shard, each behind its own lock, a thread always using the same shard.
///
/// What every query touches (the lists in force, the block log's queue, the blocked counter of
/// a list) is kept this way, so that the per-core loops do not all take one lock: no global lock
/// on the query path. Each shard is its own allocation, padded past a cache line, so that two
/// shards' locks never share one and a core's lock stays in its own cache.
final class ThreadShards<Value: Sendable>: @unchecked Sendable {
    final class Shard: @unchecked Sendable {
        let value: Mutex<Value>
        private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)

        init(_ value: consuming Value) { self.value = Mutex(value) }
    }

    let shards: [Shard]

    /// `count` shards, each starting as `make()`.
    init(count: Int = ThreadShards.defaultCount, _ make: () -> Value) {
        shards = (0..<max(1, count)).map { _ in Shard(make()) }
    }

    /// More than the cores a loop runs on, so that two loop threads rarely share a shard.
    static var defaultCount: Int { 16 }

    /// The calling thread's shard.
    var mine: Shard { shards[ThreadShards.index(count: shards.count)] }

    /// The shard of the calling thread among `count`: a multiplicative hash of its pthread_t.
    /// Every query asks (the list snapshot, the counters): a power-of-two count, the default,
    /// takes the hash's low bits instead of a division.
    @inline(__always)
    static func index(count: Int) -> Int {
        let thread = UInt64(UInt(bitPattern: Int(pthread_self())))
        let hash = Int(truncatingIfNeeded: (thread &* 0x9E37_79B9_7F4A_7C15) >> 32)
        return count & (count - 1) == 0 ? hash & (count - 1) : hash % count
    }
}
