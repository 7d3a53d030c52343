import Dispatch
import Synchronization

/// Per-client token buckets (`--rate-limit QPS`, `--rate-limit-burst`), with clients aggregated
/// per prefix: by default /24 (IPv4) and /56 (IPv6), as BIND's response rate limiting does, so
/// one host cannot dodge the limit by hopping addresses in its own network;
/// `--rate-limit-ipv4-prefix 32` and `--rate-limit-ipv6-prefix` narrow it to each address (on a
/// LAN where the hosts of one subnet must not share a budget). State is a fixed table of 65,536
/// buckets (2 MiB) whatever the number of sources, so a spoofed-source flood costs memory only
/// once; the table is split in 64 locked shards.
///
/// A prefix has two slots to choose from, picked by a hash keyed with a secret drawn at start.
/// A new prefix takes one whose bucket has refilled (its client quiet long enough to be back at
/// its burst: no state is lost); when both are in use by clients being limited, it is charged
/// to the fuller one, never given a fresh bucket. Before, one table slot per prefix by a fixed
/// hash: a flooding client sent one packet from a prefix that collided with its own (computed
/// offline from the source), its drained bucket was replaced by a full one, and it got 2,000
/// answers of 2,000 at a limit of 50 per second (an abuse trial).
public final class RateLimiter: Sendable {
    public let queriesPerSecond: Double
    public let burst: Double
    public let ipv4Prefix: Int
    public let ipv6Prefix: Int
    static let slots = 1 << 16
    static let shards = 64

    /// A client prefix as a 128-bit IPv6 address, IPv4 in its mapped form (::ffff:a.b.c.d), so
    /// the two families never share a key.
    struct Key: Equatable {
        var high: UInt64
        var low: UInt64
    }

    struct Bucket {
        var key = Key(high: 0, low: 0)
        var tokens: Double = 0
        var updated: UInt64 = 0
    }

    final class Shard: Sendable {
        let buckets = Mutex([Bucket](repeating: Bucket(), count: RateLimiter.slots / RateLimiter.shards))
    }

    private let table: [Shard]
    private let masks: (v4: Key, v6: Key)
    /// The hash's secret key.
    private let seed: (UInt64, UInt64)

    public convenience init(queriesPerSecond: Double, burst: Double, ipv4Prefix: Int = 24, ipv6Prefix: Int = 56) {
        var random = SystemRandomNumberGenerator()
        self.init(queriesPerSecond: queriesPerSecond, burst: burst, ipv4Prefix: ipv4Prefix, ipv6Prefix: ipv6Prefix,
                  seed: (random.next(), random.next()))
    }

    init(queriesPerSecond: Double, burst: Double, ipv4Prefix: Int = 24, ipv6Prefix: Int = 56, seed: (UInt64, UInt64)) {
        self.seed = seed
        self.queriesPerSecond = queriesPerSecond
        self.burst = max(1, burst)
        self.ipv4Prefix = min(32, max(0, ipv4Prefix))
        self.ipv6Prefix = min(128, max(0, ipv6Prefix))
        masks = (RateLimiter.mask(96 + self.ipv4Prefix), RateLimiter.mask(self.ipv6Prefix))
        table = (0..<RateLimiter.shards).map { _ in Shard() }
    }

    /// The first `bits` bits set.
    static func mask(_ bits: Int) -> Key {
        func ones(_ n: Int) -> UInt64 { n <= 0 ? 0 : n >= 64 ? ~0 : ~0 << UInt64(64 - n) }
        return Key(high: ones(bits), low: ones(bits - 64))
    }

    /// The aggregation key of an address: its prefix (IPv4 mapped into IPv6).
    func key<A: Collection>(_ address: A) -> Key where A.Element == UInt8 {
        var high: UInt64 = 0, low: UInt64 = 0
        if address.count == 4 {
            for byte in address { low = low << 8 | UInt64(byte) }
            return Key(high: 0, low: (0xFFFF << 32 | low) & masks.v4.low)
        }
        for (i, byte) in address.prefix(16).enumerated() {
            if i < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        return Key(high: high & masks.v6.high, low: low & masks.v6.low)
    }

    /// Takes one token for the client's prefix; false when it is over the limit.
    public func allow<A: Collection>(_ address: A, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool where A.Element == UInt8 {
        let key = key(address)
        let (shard, first) = slots(of: key)
        return table[shard].buckets.withLock { buckets in
            // The prefix's own bucket, in either of its two slots.
            var index = buckets[first].key == key ? first : buckets[first ^ 1].key == key ? first ^ 1 : -1
            if index < 0 {
                // A new prefix: a slot whose bucket has refilled is free (its state is its burst,
                // which a fresh bucket restores); else it shares the fuller bucket, unreset.
                let a = refilled(buckets[first], now), b = refilled(buckets[first ^ 1], now)
                let aFree = buckets[first].updated == 0 || a.tokens >= burst
                let bFree = buckets[first ^ 1].updated == 0 || b.tokens >= burst
                if aFree || bFree {
                    index = aFree && (!bFree || buckets[first].updated <= buckets[first ^ 1].updated) ? first : first ^ 1
                    buckets[index] = Bucket(key: key, tokens: burst, updated: now)
                } else {
                    index = a.tokens >= b.tokens ? first : first ^ 1
                }
            }
            var bucket = refilled(buckets[index], now)
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[index] = bucket
            return allowed
        }
    }

    /// `bucket` with the tokens it has earned since it was last used, at `now`.
    @inline(__always) private func refilled(_ bucket: Bucket, _ now: UInt64) -> Bucket {
        guard now > bucket.updated else { return bucket }
        var b = bucket
        b.tokens = min(burst, b.tokens + Double(now - b.updated) / 1e9 * queriesPerSecond)
        b.updated = now
        return b
    }

    /// The shard of `key`'s two slots and the first slot's index in it (the other is its
    /// neighbour, `^ 1`), by a hash keyed with `seed`.
    func slots(of key: Key) -> (shard: Int, index: Int) {
        var h = (key.high ^ seed.0) &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ (h >> 32) ^ key.low ^ seed.1) &* 0xC2B2_AE3D_27D4_EB4F
        h ^= h >> 29
        h = (h ^ seed.0) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
        let slot = Int(truncatingIfNeeded: h) & (RateLimiter.slots - 1)
        return (slot % RateLimiter.shards, (slot / RateLimiter.shards) & ~1)
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
