import Dispatch
import Synchronization

/// Per-client token buckets (`--rate-limit QPS`, `--rate-limit-burst`), with clients aggregated
/// per /24 (IPv4) and /56 (IPv6) so one host cannot dodge the limit by hopping addresses in its
/// own network. State is a fixed table of 65,536 buckets (about 1.5 MiB) whatever the number of
/// sources: a prefix that lands on a slot held by another starts a fresh bucket there, so a
/// spoofed-source flood costs memory only once. The table is split in 64 locked shards.
public final class RateLimiter: Sendable {
    public let queriesPerSecond: Double
    public let burst: Double
    static let slots = 1 << 16
    static let shards = 64

    struct Bucket {
        var key: UInt64 = 0
        var tokens: Double = 0
        var updated: UInt64 = 0
    }

    final class Shard: Sendable {
        let buckets = Mutex([Bucket](repeating: Bucket(), count: RateLimiter.slots / RateLimiter.shards))
    }

    private let table: [Shard]

    public init(queriesPerSecond: Double, burst: Double) {
        self.queriesPerSecond = queriesPerSecond
        self.burst = max(1, burst)
        table = (0..<RateLimiter.shards).map { _ in Shard() }
    }

    /// The aggregation key of an address: its /24 or /56, tagged with the family.
    static func key<A: Collection>(_ address: A) -> UInt64 where A.Element == UInt8 {
        var key: UInt64 = 0
        for byte in address.prefix(address.count == 4 ? 3 : 7) { key = key << 8 | UInt64(byte) }
        return key | (address.count == 4 ? 4 << 60 : 6 << 60)
    }

    /// Takes one token for the client's prefix; false when it is over the limit.
    public func allow<A: Collection>(_ address: A, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool where A.Element == UInt8 {
        let key = RateLimiter.key(address)
        var h = key &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        let slot = Int(truncatingIfNeeded: h) & (RateLimiter.slots - 1)
        let shard = slot % RateLimiter.shards
        let index = slot / RateLimiter.shards
        return table[shard].buckets.withLock { buckets in
            var b = buckets[index]
            if b.key != key {
                b = Bucket(key: key, tokens: burst, updated: now)
            } else if now > b.updated {
                b.tokens = min(burst, b.tokens + Double(now - b.updated) / 1e9 * queriesPerSecond)
                b.updated = now
            }
            let allowed = b.tokens >= 1
            if allowed { b.tokens -= 1 }
            buckets[index] = b
            return allowed
        }
    }
}

/// What UDP clients over the rate limit get (`--rate-limit-action`).
public enum RateLimitAction: String, Sendable, CaseIterable {
    /// An empty reply with TC=1: a real client retries over TCP, which is not limited; a spoofed
    /// victim receives a reply no larger than the query.
    case truncate
    /// Nothing.
    case drop
}
