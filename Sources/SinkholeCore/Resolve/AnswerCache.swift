import Dispatch
import Glibc
import Synchronization

/// Forwarded answers kept for their TTL (RFC 1035 §7.4, RFC 2308 for negative answers), so a
/// repeated question is answered without going upstream.
///
/// - Key: the name case-folded, type, class and the DO bit (answers with and without DNSSEC
///   records differ).
/// - TTL: the smallest TTL of its records (but OPT; the additional ones too), clamped to
///   [`minTTL`, `maxTTL`]; for NXDOMAIN and NODATA, the SOA's min(TTL, MINIMUM), capped at
///   `maxNegativeTTL`. SERVFAIL, truncated and other rcodes are not cached.
/// - Served with every TTL counted down by the time spent in the cache.
/// - Bounded by `budget` bytes (wire size plus bookkeeping), least recently used evicted first
///   (CLOCK: a used entry gets one second chance at the tail; see `Shard.touch`); split in 16
///   shards, each with its own lock, list and share of the budget.
/// - Admission when full: a shard at its budget takes a new name's answer only if that name's
///   answer was turned away once before, recently (`Doorkeeper`), or if its least recently used
///   entry has expired. A flood of names asked once (a random-subdomain attack, a scan) then
///   cannot push the answers clients keep asking for out of the cache, and costs no eviction.
///   A name asked again is cached on its second answer, as before it was on its first.
/// - Serve-stale (RFC 8767): an expired answer is kept up to `staleWindow` more seconds and
///   can be served, with TTL 30, when every upstream failed.
///
/// The blocking stage runs before the cache, so a name blocked after its answer was cached is
/// never served from it; and cached answers go through response inspection again when served.
public final class AnswerCache: Sendable {
    public struct Key: Hashable, Sendable {
        // Fixed once made (the digest covers them); only `subnet` may change, and it redoes it.
        let name: [UInt8]
        let type: UInt16
        let qclass: UInt16
        let dnssecOK: Bool
        /// The query's CD bit: an answer a validating upstream gave with checking disabled may
        /// be one it would have refused (SERVFAIL) with checking on, so the two are never
        /// served for each other (RFC 4035 3.2.2), nor coalesced into one upstream query.
        let checkingDisabled: Bool
        /// The ECS option sent upstream with `--forward-ecs` (answers may differ per subnet).
        public var subnet: [UInt8] = [] {
            didSet { digest = Key.digest(name, type, qclass, dnssecOK, checkingDisabled, subnet) }
        }
        /// A hash of every field, made once. The shard's table hashes and compares keys often
        /// (every lookup, and every entry that moves when another is evicted), and the name's
        /// bytes are then usually out of the CPU cache: a profile of the cache-miss path spent
        /// most of the eviction in re-hashing names. With this, only a match reads the name.
        private(set) var digest: Int

        init(name: [UInt8], type: UInt16, qclass: UInt16, dnssecOK: Bool, checkingDisabled: Bool) {
            self.name = name
            self.type = type
            self.qclass = qclass
            self.dnssecOK = dnssecOK
            self.checkingDisabled = checkingDisabled
            digest = Key.digest(name, type, qclass, dnssecOK, checkingDisabled, subnet)
        }

        public init(_ question: Question, dnssecOK: Bool, checkingDisabled: Bool) {
            name = WireName.lowercased(question.name)
            type = question.type
            qclass = question.qclass
            self.dnssecOK = dnssecOK
            self.checkingDisabled = checkingDisabled
            digest = Key.digest(name, type, qclass, dnssecOK, checkingDisabled, subnet)
        }

        /// The same with the digest already taken from the packet (`digest(lowercased:...)`): a
        /// forwarded query's key costs no second hashing of its name.
        init(_ question: Question, dnssecOK: Bool, checkingDisabled: Bool, digest: Int) {
            name = WireName.lowercased(question.name)
            type = question.type
            qclass = question.qclass
            self.dnssecOK = dnssecOK
            self.checkingDisabled = checkingDisabled
            self.digest = digest
            assert(digest == Key.digest(name, type, qclass, dnssecOK, checkingDisabled, subnet), "a key's digest is that of its fields")
        }

        /// The digest of the key of a question with no ECS option whose name, in lower case, is
        /// `name` (wire form, from `withLowercased`).
        static func digest(lowercased name: UnsafeRawBufferPointer, type: UInt16, qclass: UInt16, dnssecOK: Bool,
                           checkingDisabled: Bool) -> Int {
            digest(name, type, qclass, dnssecOK, checkingDisabled, UnsafeRawBufferPointer(start: nil, count: 0))
        }

        /// `body` given `name` (a packet's bytes) with its ASCII letters lowered, in scratch memory.
        static func withLowercased<R>(_ name: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R) -> R {
            withUnsafeTemporaryAllocation(byteCount: max(1, name.count), alignment: 1) { scratch in
                for i in 0..<name.count { scratch[i] = WireName.lower(name[i]) }
                return body(UnsafeRawBufferPointer(rebasing: scratch[0..<name.count]))
            }
        }

        private static func digest(_ name: [UInt8], _ type: UInt16, _ qclass: UInt16, _ dnssecOK: Bool, _ checkingDisabled: Bool,
                                   _ subnet: [UInt8]) -> Int {
            name.withUnsafeBytes { name in subnet.withUnsafeBytes { digest(name, type, qclass, dnssecOK, checkingDisabled, $0) } }
        }

        /// The digest of the key with these fields, `name` in lower case: one definition for a key
        /// made and for a question looked up in a packet's bytes (`preparedLookup(name:...)`).
        static func digest(_ name: UnsafeRawBufferPointer, _ type: UInt16, _ qclass: UInt16, _ dnssecOK: Bool,
                           _ checkingDisabled: Bool, _ subnet: UnsafeRawBufferPointer) -> Int {
            var hasher = Hasher()
            // The name's bytes in one call: an array's own hashing feeds the hasher byte by byte.
            hasher.combine(bytes: name)
            hasher.combine(type)
            hasher.combine(qclass)
            hasher.combine(dnssecOK)
            hasher.combine(checkingDisabled)
            hasher.combine(bytes: subnet)
            return hasher.finalize()
        }

        /// True when this is the key of a question with no ECS option whose lowercase name is `name`.
        func matches(_ name: UnsafeRawBufferPointer, _ type: UInt16, _ qclass: UInt16, _ dnssecOK: Bool,
                     _ checkingDisabled: Bool) -> Bool {
            self.type == type && self.qclass == qclass && self.dnssecOK == dnssecOK
                && self.checkingDisabled == checkingDisabled && subnet.isEmpty
                && self.name.withUnsafeBytes { $0.count == name.count && ($0.count == 0 || memcmp($0.baseAddress!, name.baseAddress!, name.count) == 0) }
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(digest)
        }

        public static func == (a: Key, b: Key) -> Bool {
            a.digest == b.digest && a.type == b.type && a.qclass == b.qclass && a.dnssecOK == b.dnssecOK
                && a.checkingDisabled == b.checkingDisabled
                && a.name == b.name && a.subnet == b.subnet
        }

        /// Which of `count` shards holds this key.
        func shard(of count: Int) -> Int { Key.shard(digest: digest, of: count) }
        static func shard(digest: Int, of count: Int) -> Int { Int(UInt(bitPattern: digest) % UInt(count)) }
    }

    /// A cached answer: the upstream's bytes and when it expires.
    public struct Hit: Sendable {
        public var wire: [UInt8]
        /// The answer laid out for serving from its bytes (nil: ldns decodes it).
        public var reply: CachedReply?
        /// Which stored answer this is, for `markInspected`.
        public var serial: UInt64
        /// Whole seconds since it was stored: what to take off every TTL.
        public var age: UInt32
        public var stale: Bool
    }

    final class Node {
        let key: Key
        let wire: [UInt8]
        var stored: UInt64
        var expires: UInt64
        let serial: UInt64
        /// The answer prepared for the fast path (nil: full path only).
        let reply: CachedReply?
        /// The blocklist generation against which response inspection last found this answer
        /// clean; the fast path serves it only while that generation is in force.
        var inspectedGeneration = -1
        var prev: Node?
        var next: Node?
        /// Hit since it was stored or last given a second chance (`Shard.touch`).
        var used = false
        /// Until when this expired answer is served stale at once, without asking the upstreams
        /// (RFC 8767's failure recheck timer; `recheckLater`). 0: not held.
        var staleUntil: UInt64 = 0
        init(key: Key, wire: [UInt8], reply: CachedReply?, stored: UInt64, expires: UInt64, serial: UInt64) {
            self.key = key
            self.wire = wire
            self.stored = stored
            self.expires = expires
            self.serial = serial
            self.reply = reply
            cost = Node.cost(key: key, wire: wire, reply: reply)
        }
        static func cost(key: Key, wire: [UInt8], reply: CachedReply?) -> Int {
            wire.count + key.name.count + key.subnet.count + 2 * (reply?.ttlOffsets.count ?? 0) + overhead
        }
        /// What the entry holds in memory, counted against `--cache-size`: the bytes of its
        /// arrays (the answer, the name, the ECS option, the TTL offsets) and `overhead`. Kept,
        /// so that evicting an entry reads none of its arrays.
        let cost: Int

        /// Everything else an entry costs: this object and the answer's layout (`CachedReply`,
        /// a typical answer's TTL offsets inline; about 220 bytes of fields together), the array
        /// headers of its name and answer (32 bytes each), malloc's overhead on those four
        /// allocations, and its slots in the shard's table (16 bytes each, at most half full).
        /// (160 counted only the fields: a full 64 MiB cache grew the process by about 130 MiB.)
        static let overhead = 400
    }

    /// Which new names a full shard admits: a Bloom filter of the keys it turned away, two bits
    /// a key, cleared after as many keys as the shard holds entries, so "asked before" means
    /// recently. Sized at 8 bits per entry: about 5% of first-time names pass by chance.
    /// (The idea is TinyLFU's doorkeeper: Einziger, Friedman and Manes, 2017.)
    struct Doorkeeper {
        private var words: [UInt64]
        private let shift: UInt64
        private let window: Int
        private var added = 0

        init(entries: Int) {
            var bits = 512
            while bits < entries * 8 { bits <<= 1 }
            words = Array(repeating: 0, count: bits / 64)
            shift = UInt64(64 - bits.trailingZeroBitCount)
            window = max(64, entries)
        }

        /// True when `digest` was turned away before in this window; otherwise notes it and
        /// returns false.
        mutating func seenBefore(_ digest: Int) -> Bool {
            // Keys in one shard share their low digest bits (they pick the shard): mix first.
            let h = UInt64(bitPattern: Int64(digest))
            let a = Int((h &* 0x9E37_79B9_7F4A_7C15) >> shift)
            let b = Int(((h ^ (h >> 31)) &* 0xBF58_476D_1CE4_E5B9) >> shift)
            let maskA: UInt64 = 1 << UInt64(a & 63), maskB: UInt64 = 1 << UInt64(b & 63)
            if words[a >> 6] & maskA != 0 && words[b >> 6] & maskB != 0 { return true }
            if added >= window {
                for i in words.indices { words[i] = 0 }
                added = 0
            }
            words[a >> 6] |= maskA
            words[b >> 6] |= maskB
            added += 1
            return false
        }
    }

    /// A shard's entries by key digest: open addressing with linear probing over slots of a
    /// digest and an entry, at most half full, removal shifting later entries back (no
    /// tombstones). An entry is found by its digest and then a match of its key, so the fast
    /// path looks up a question in the packet's bytes without making a key: no name copied and
    /// no hashing but the digest's. The digest is the seeded `Hasher`'s, so no client can choose
    /// names that collide. A slot's digest is read before its entry: a probe past other keys
    /// reads no entry.
    struct NodeTable {
        private struct Slot {
            var digest: Int
            var node: Node?
        }
        private var slots = [Slot](repeating: Slot(digest: 0, node: nil), count: 16)
        private(set) var count = 0

        /// The first slot to look in. Keys of one shard share the digest's low bits (they chose
        /// the shard): multiplied and taken from the high half, they spread.
        @inline(__always)
        private static func home(_ digest: Int, _ mask: Int) -> Int {
            Int(truncatingIfNeeded: (UInt64(bitPattern: Int64(digest)) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
        }

        /// The entry with `digest` for which `matches` holds.
        func find(_ digest: Int, _ matches: (Node) -> Bool) -> Node? {
            slots.withUnsafeBufferPointer { slots in
                let mask = slots.count - 1
                var i = NodeTable.home(digest, mask)
                // The digest first, and the entry taken (its reference counted) only when it
                // agrees: a probe past other keys touches no entry's memory.
                while slots[i].node != nil {
                    if slots[i].digest == digest, let node = slots[i].node, matches(node) { return node }
                    i = (i + 1) & mask
                }
                return nil
            }
        }

        subscript(key: Key) -> Node? {
            find(key.digest) { $0.key == key }
        }

        /// Adds `node`, whose key is not in the table.
        mutating func insert(_ node: Node) {
            if (count + 1) * 2 > slots.count { grow() }
            place(Slot(digest: node.key.digest, node: node))
            count += 1
        }

        private mutating func place(_ slot: Slot) {
            let mask = slots.count - 1
            var i = NodeTable.home(slot.digest, mask)
            while slots[i].node != nil { i = (i + 1) & mask }
            slots[i] = slot
        }

        private mutating func grow() {
            let old = slots
            slots = [Slot](repeating: Slot(digest: 0, node: nil), count: old.count * 2)
            for slot in old where slot.node != nil { place(slot) }
        }

        /// Takes `node` out (nothing happens when it is not in).
        mutating func remove(_ node: Node) {
            let mask = slots.count - 1
            let digest = node.key.digest
            var i = NodeTable.home(digest, mask)
            while slots[i].node != nil && slots[i].node !== node { i = (i + 1) & mask }
            guard slots[i].node === node else { return }
            // Each later entry of the run that may sit in the hole (its home is not between
            // the hole and it) moves back into it, leaving a hole where it was.
            var hole = i
            var j = (i + 1) & mask
            while slots[j].node != nil {
                let distance = (j - NodeTable.home(slots[j].digest, mask)) & mask
                if distance >= (j - hole) & mask {
                    slots[hole] = slots[j]
                    hole = j
                }
                j = (j + 1) & mask
            }
            slots[hole] = Slot(digest: 0, node: nil)
            count -= 1
        }
    }

    final class Shard: @unchecked Sendable {
        let lock = Mutex(())
        var map = NodeTable()
        var head: Node?   // most recently used
        var tail: Node?
        var bytes = 0
        var doorkeeper: Doorkeeper
        /// Since start: entries evicted for room, and new names a full shard turned away.
        var evicted = 0
        var turnedAway = 0
        /// The last serial given to an answer stored here. Per shard, not one counter for the
        /// whole cache: a serial is only ever compared for the same key, which is always in the
        /// same shard, and a shared counter would be a line every core's stores pull over.
        var lastSerial: UInt64 = 0

        init(limit: Int) {
            // A typical entry costs about 500 bytes (`Node.overhead` and a short answer).
            doorkeeper = Doorkeeper(entries: limit / 512)
        }

        func unlink(_ n: Node) {
            n.prev?.next = n.next
            n.next?.prev = n.prev
            if head === n { head = n.next }
            if tail === n { tail = n.prev }
            n.prev = nil
            n.next = nil
        }

        /// Takes `n` out of the table, the recency list and the byte count.
        func drop(_ n: Node) {
            unlink(n)
            map.remove(n)
            bytes -= n.cost
        }

        func pushFront(_ n: Node) {
            n.next = head
            head?.prev = n
            head = n
            if tail == nil { tail = n }
        }

        /// A hit: the entry is marked used, and stays where it is. Eviction, from the tail, gives
        /// a marked entry a second chance (unmarked, to the front) instead of evicting it: the
        /// CLOCK approximation of least-recently-used. A hit then writes one flag of its own
        /// entry, where moving it to the front wrote its neighbours' links and the head's, lines
        /// no cache holds in a large cache: that was most of what a cache hit spent in the cache.
        func touch(_ n: Node) {
            if !n.used { n.used = true }
        }

        /// Second chances one eviction may give before it takes the tail as it is: bounds the
        /// work of a store into a shard whose entries were all used.
        static let maxSecondChances = 64

        /// Takes entries off the tail until the shard is within `limit` bytes. `stored`, the entry
        /// just stored, is not taken while others are left: when the second chances have brought
        /// it to the tail, it goes back to the front and the next entry goes, used or not.
        func evict(toFit limit: Int, stored: Node) {
            var chances = 0
            while bytes > limit, let victim = tail {
                if victim === stored && victim !== head {
                    unlink(victim)
                    pushFront(victim)
                    chances = Shard.maxSecondChances
                    continue
                }
                if victim.used && chances < Shard.maxSecondChances {
                    victim.used = false
                    unlink(victim)
                    pushFront(victim)
                    chances += 1
                    continue
                }
                drop(victim)
                evicted += 1
            }
        }
    }

    /// The `from` of a resolution served from the cache.
    public static let origin = SocketAddress(address: [0, 0, 0, 0], port: 0)

    public let budget: Int
    public let minTTL: UInt32
    public let maxTTL: UInt32
    public let maxNegativeTTL: UInt32
    public let serveStale: Bool
    public let staleWindow: UInt64 = 86_400
    private let shards: [Shard]
    private let clock: @Sendable () -> UInt64

    /// Whole seconds of the monotonic clock, read from its coarse variant (updated every tick,
    /// a few milliseconds): TTLs count in seconds, and the coarse clock is read without the
    /// hardware time source that the precise one consults (two to three reads per cache miss).
    @Sendable public static func monotonicSeconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt64(ts.tv_sec)
    }

    public init(budgetBytes: Int, minTTL: UInt32 = 0, maxTTL: UInt32 = 86_400, maxNegativeTTL: UInt32 = 3600,
                serveStale: Bool = false, clock: @escaping @Sendable () -> UInt64 = AnswerCache.monotonicSeconds) {
        budget = budgetBytes
        self.minTTL = minTTL
        self.maxTTL = max(minTTL, maxTTL)
        self.maxNegativeTTL = maxNegativeTTL
        self.serveStale = serveStale
        self.clock = clock
        shards = (0..<16).map { _ in Shard(limit: budgetBytes / 16) }
    }

    private func shard(_ key: Key) -> Shard {
        shards[key.shard(of: shards.count)]
    }

    public var count: Int { shards.reduce(0) { total, s in total + s.lock.withLock { _ in s.map.count } } }
    public var bytes: Int { shards.reduce(0) { total, s in total + s.lock.withLock { _ in s.bytes } } }

    /// For the metrics endpoint: entries and bytes now; since start, entries evicted to make
    /// room and new names a full cache did not take (a rise says a flood of one-off names).
    public struct Stats: Sendable, Equatable {
        public var entries = 0, bytes = 0, evicted = 0, turnedAway = 0
    }

    public var stats: Stats {
        shards.reduce(into: Stats()) { total, s in
            s.lock.withLock { _ in
                total.entries += s.map.count
                total.bytes += s.bytes
                total.evicted += s.evicted
                total.turnedAway += s.turnedAway
            }
        }
    }

    /// How long an answer with these facts may be cached, or nil when it must not be.
    func ttl(of facts: ReplyFacts) -> UInt32? {
        guard !facts.truncated else { return nil }
        // The negative part of an answer lasts min(SOA TTL, SOA MINIMUM) (RFC 2308 5), and every
        // record in it no longer than its own TTL: a CNAME ending in NXDOMAIN, or in no data of
        // the type asked, lasted as long as the SOA said and was served past its own TTL.
        let negative = facts.soa.map { min($0.ttl, $0.minimum) }
        switch facts.rcode {
        case Rcode.noError where facts.answerCount > 0:
            let lowest = min(facts.lowestTTL ?? 0, negative.map { min($0, maxNegativeTTL) } ?? .max)
            return min(maxTTL, max(minTTL, lowest))
        case Rcode.noError, Rcode.nxDomain:
            guard let negative else { return nil }
            // --cache-max-ttl bounds these too ("at most this long").
            return min(maxTTL, maxNegativeTTL, max(minTTL, min(negative, facts.lowestTTL ?? negative)))
        default:
            return nil
        }
    }

    /// `answer` with every TTL brought within --cache-min-ttl and --cache-max-ttl, as it is
    /// kept and served (as Unbound serves them): a client was told 300 s for an answer sinkhole
    /// itself refetched after a max-ttl of 25, so downstream caches kept it past the bound the
    /// operator set. The same answer when every TTL is within them (the usual case: a scan).
    /// A negative answer's SOA is also served with min(SOA TTL, MINIMUM) (RFC 2308 3), as
    /// Unbound serves it, not with the SOA's own TTL, and no longer than sinkhole keeps it.
    public func clamped(_ answer: UpstreamAnswer) -> UpstreamAnswer {
        let range = minTTL...max(minTTL, maxTTL)
        func clamp(_ ttl: UInt32) -> UInt32 { min(max(ttl, range.lowerBound), range.upperBound) }
        let negativeCap = min(maxNegativeTTL, maxTTL)
        let capSOA = answer.facts.soa.map { $0.ttl > min($0.minimum, negativeCap) } ?? false
        // Laid out without ldns: patched in its bytes.
        if let prepared = answer.prepared {
            if capSOA { return UpstreamAnswer(wire: prepared.withTTLs(soaCappedAt: negativeCap, clamp)) ?? answer }
            guard prepared.hasTTL(outside: range) else { return answer }
            return UpstreamAnswer(wire: prepared.withTTLs(clamp)) ?? answer
        }
        // Otherwise decoded once for both.
        guard let message = answer.message() else { return answer }
        let capped = capSOA && message.capAuthoritySOATTLs(at: negativeCap)
        guard message.changeTTLs(clamp) || capped else { return answer }
        return UpstreamAnswer(message: message) ?? answer
    }

    /// Stores the upstream's answer to `key` (its bytes as received); returns its serial, nil
    /// when it is not cached (not cacheable, or turned away by a full shard). `inspectedGeneration`: as for `markInspected`, when response
    /// inspection already found it clean (-1: not yet).
    @discardableResult
    public func store(_ key: Key, answer: UpstreamAnswer, inspectedGeneration: Int = -1) -> UInt64? {
        guard budget > 0, let ttl = ttl(of: answer.facts), ttl > 0 else { return nil }
        let now = clock()
        let s = shard(key)
        let cost = Node.cost(key: key, wire: answer.wire, reply: answer.prepared)
        let limit = budget / shards.count
        return s.lock.withLock { _ -> UInt64? in
            // Full, and its oldest entry still fresh: only a name seen before, or one already
            // here (a refresh), gets in. (The lookup for the latter only when full.)
            if s.bytes + cost > limit, let lru = s.tail, now < lru.expires, s.map[key] == nil,
               !s.doorkeeper.seenBefore(key.digest) {
                s.turnedAway += 1
                return nil
            }
            s.lastSerial += 1
            let serial = s.lastSerial
            let node = Node(key: key, wire: answer.wire, reply: answer.prepared, stored: now, expires: now + UInt64(ttl), serial: serial)
            node.inspectedGeneration = inspectedGeneration
            if let old = s.map[key] {
                s.drop(old)
            }
            s.map.insert(node)
            s.pushFront(node)
            s.bytes += node.cost
            s.evict(toFit: limit, stored: node)
            return serial
        }
    }

    /// Drops the answers kept for `key`'s question, fresh or expired, whatever their DO and CD
    /// bits (sinkhole asks with AD set, so a DO=0 answer may hold validated data too).
    public func discard(_ key: Key) {
        for dnssecOK in [false, true] {
            for checkingDisabled in [false, true] {
                var variant = Key(name: key.name, type: key.type, qclass: key.qclass, dnssecOK: dnssecOK,
                                  checkingDisabled: checkingDisabled)
                if !key.subnet.isEmpty { variant.subnet = key.subnet }
                let s = shard(variant)
                s.lock.withLock { _ in
                    guard let node = s.map[variant] else { return }
                    s.drop(node)
                }
            }
        }
    }

    /// Records that response inspection found the stored answer `serial` clean with the lists
    /// of `generation` in force (nothing happens if that answer has been replaced since).
    public func markInspected(_ key: Key, serial: UInt64, generation: Int) {
        let s = shard(key)
        s.lock.withLock { _ in
            if let node = s.map[key], node.serial == serial { node.inspectedGeneration = generation }
        }
    }

    /// What the fast path found in the cache.
    public enum FastLookup {
        /// A fresh answer already inspected against the lists in force was served.
        case served
        /// An answer is there but must take the full path (not inspected against these lists,
        /// expired, not preparable, or it did not fit where it was to be written).
        case present
        /// Nothing for this key.
        case absent
    }

    /// For the fast path: a fresh answer already inspected against `generation`, prepared for
    /// serving, is given to `serve` with its age in seconds, in place (under the shard's lock,
    /// read where it is stored: nothing of it is copied out or reference-counted); `serve`
    /// returns false when it could not use it. Anything else sends the query down the full
    /// path (which inspects it again), unless there is nothing at all.
    /// The key is that of a question with no ECS option, its name (wire form, any case) in the
    /// packet's bytes: lowered into scratch memory and looked up there, no key made.
    /// `name` is the question's name already in lower case (`Key.withLowercased`) and `digest`
    /// the key's digest made from it (`Key.digest(lowercased:...)`), which the caller keeps for
    /// the key of a query it then forwards.
    public func preparedLookup(lowercased name: UnsafeRawBufferPointer, type: UInt16, qclass: UInt16, dnssecOK: Bool,
                               checkingDisabled: Bool, digest: Int, generation: Int, serve: (borrowing CachedReply, UInt32) -> Bool) -> FastLookup {
        guard budget > 0, name.count <= 255 else { return .absent }
        return prepared(shards[Key.shard(digest: digest, of: shards.count)], digest, generation: generation, serve: serve) {
            $0.key.matches(name, type, qclass, dnssecOK, checkingDisabled)
        }
    }

    @inline(__always)
    private func prepared(_ s: Shard, _ digest: Int, generation: Int, serve: (borrowing CachedReply, UInt32) -> Bool,
                          matches: (Node) -> Bool) -> FastLookup {
        let now = clock()
        return s.lock.withLock { _ -> FastLookup in
            guard let node = s.map.find(digest, matches) else { return .absent }
            guard now < node.expires, node.inspectedGeneration == generation, node.reply != nil else { return .present }
            guard serve(node.reply!, UInt32(clamping: now - node.stored)) else { return .present }
            s.touch(node)
            return .served
        }
    }

    /// RFC 8767's failure recheck timer: the expired answer for `key` was just served stale
    /// because every upstream failed, so for the next `seconds` (30, the RFC's suggestion) it is
    /// served stale at once rather than each query waiting for the upstreams to fail again.
    public func recheckLater(_ key: Key, seconds: UInt64 = 30) {
        let now = clock()
        let s = shard(key)
        s.lock.withLock { _ in
            if let node = s.map[key], now >= node.expires { node.staleUntil = now + seconds }
        }
    }

    /// A fresh answer for `key`, or, with `allowStale`, an expired one still inside the stale
    /// window (without it, too, while held after a failed refresh: `recheckLater`).
    public func lookup(_ key: Key, allowStale: Bool = false) -> Hit? {
        guard budget > 0 else { return nil }
        let now = clock()
        let s = shard(key)
        return s.lock.withLock { _ -> Hit? in
            guard let node = s.map[key] else { return nil }
            if now >= node.expires {
                if now >= node.expires + staleWindow || !serveStale {
                    s.drop(node)
                    return nil
                }
                // Held after a failed refresh: served stale at once, not asked again yet.
                guard allowStale || now < node.staleUntil else { return nil }
            }
            s.touch(node)
            return Hit(wire: node.wire, reply: node.reply, serial: node.serial, age: UInt32(clamping: now - node.stored), stale: now >= node.expires)
        }
    }

    /// The cached answer ready for relaying: TTLs counted down (stale answers get 30 s).
    /// A stale answer also carries Extended DNS Error 3, Stale Answer (RFC 8914 4.4), as
    /// Unbound's does: the client, and whoever reads its capture, can tell it from a fresh one.
    public static func answer(from hit: Hit) -> UpstreamAnswer? {
        let age = hit.age
        let change: (UInt32) -> UInt32 = hit.stale ? { _ in 30 } : { $0 > age ? $0 - age : 0 }
        if let reply = hit.reply {
            let wire = reply.withTTLs(change)
            return UpstreamAnswer(wire: hit.stale ? ExtendedErrors.adding(ExtendedErrors.staleAnswer, to: wire, opt: reply.opt) : wire)
        }
        guard let m = Message(wire: hit.wire) else { return nil }
        if hit.stale {
            m.ageTTLs(by: UInt32.max)
            m.raiseTTLs(to: 30)
            let options = m.edns == nil ? [] : m.ednsOptions
            if m.edns == nil { m.edns = EDNS(udpPayloadSize: 1232) }
            m.setEDNSOptions(options + ExtendedErrors.staleAnswer)
        } else {
            m.ageTTLs(by: hit.age)
        }
        return UpstreamAnswer(message: m)
    }
}
