import Dispatch
import Synchronization

/// How the forwarder orders upstreams for each query (`--upstream-strategy`).
public enum UpstreamStrategy: String, Sendable, CaseIterable {
    /// In the order given; the next one only when the one before failed.
    case first
    /// A random order for each query, spreading load.
    case random
    /// Lowest smoothed round-trip time first (untried upstreams count as fastest, so each is measured).
    case fastest
}

/// Health of each upstream, learned from real queries: an upstream that fails
/// `downAfter` times in a row (timeouts, network errors, SERVFAIL) is marked down and tried
/// only after every healthy one, until its back-off passes (5 s, doubling to 60 s); the next
/// query then probes it, and one success marks it up again. So an upstream that goes away and
/// comes back is used again without a restart.
public final class UpstreamHealth: Sendable {
    public static let downAfter = 3
    public static let firstBackoff: Double = 5
    static let maxBackoff: Double = 60

    public struct State: Sendable {
        public var consecutiveFailures = 0
        public var down = false
        /// Uptime nanoseconds before which a down upstream is not probed.
        var retryAt: UInt64 = 0
        var backoff: Double = UpstreamHealth.firstBackoff
        /// Smoothed round-trip time in seconds (EWMA, 1/8 weight); nil until measured.
        public var rtt: Double?
        public var queries = 0
        public var failures = 0
    }

    /// One upstream's figures. Every query reads and updates them, so they are atomics, not
    /// one lock that every core would queue on; only marking down and up takes `transitions`.
    private final class Slot: Sendable {
        let consecutiveFailures = Atomic<Int>(0)
        let down = Atomic<Bool>(false)
        let retryAt = Atomic<UInt64>(0)
        /// Smoothed RTT in nanoseconds; 0 until measured.
        let rtt = Atomic<UInt64>(0)
        /// Uptime nanoseconds of the last sample folded into `rtt` (or of the query that went
        /// to measure it again, `order`).
        let measuredAt = Atomic<UInt64>(0)
        /// The next sample replaces `rtt` instead of joining it (an expired one was claimed).
        let remeasure = Atomic<Bool>(false)
        let queries = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
    }

    public let upstreams: [SocketAddress]
    private let slots: [Slot]
    /// Back-off per upstream, changed only with the lock (failures and recoveries, both rare).
    private let transitions: Mutex<[Double]>
    /// How many upstreams are marked down: while none is, the order needs no look at them.
    private let downCount = Atomic<Int>(0)
    private let inOrder: [Int]
    private let firstBackoff: Double

    public init(upstreams: [SocketAddress], firstBackoff: Double = UpstreamHealth.firstBackoff) {
        self.upstreams = upstreams
        self.firstBackoff = firstBackoff
        slots = upstreams.map { _ in Slot() }
        transitions = Mutex([Double](repeating: firstBackoff, count: upstreams.count))
        inOrder = Array(upstreams.indices)
    }

    public var snapshot: [State] {
        let backoffs = transitions.withLock { $0 }
        return slots.enumerated().map { i, slot in
            let rtt = slot.rtt.load(ordering: .relaxed)
            return State(consecutiveFailures: slot.consecutiveFailures.load(ordering: .relaxed),
                         down: slot.down.load(ordering: .relaxed), retryAt: slot.retryAt.load(ordering: .relaxed),
                         backoff: backoffs[i], rtt: rtt == 0 ? nil : Double(rtt) / 1e9,
                         queries: slot.queries.load(ordering: .relaxed), failures: slot.failures.load(ordering: .relaxed))
        }
    }

    private func rtt(_ i: Int) -> UInt64 { slots[i].rtt.load(ordering: .relaxed) }

    /// How long a smoothed RTT stands without a new sample. Past it, under `fastest`, one query
    /// (the one that claims it) tries that upstream first, and its sample starts the smoothing
    /// afresh: one lost packet made the fastest upstream's RTT 2 s / 8 and, with no query
    /// reaching it again, kept it out of use for good (Unbound likewise lets timings expire).
    /// One query, not every query until the first answer: a standby that died unnoticed would
    /// have held every query for a timeout.
    public static let rttLifetime: UInt64 = 60_000_000_000

    /// Claims upstream `i` for re-measuring when its RTT is older than `rttLifetime`.
    private func claimRemeasure(_ i: Int, now: UInt64) -> Bool {
        let slot = slots[i]
        let at = slot.measuredAt.load(ordering: .relaxed)
        // Another core may have stored a later time than our `now`: fresh.
        guard at != 0, now > at, now - at > UpstreamHealth.rttLifetime,
              slot.measuredAt.compareExchange(expected: at, desired: now, ordering: .relaxed).exchanged else { return false }
        slot.remeasure.store(true, ordering: .relaxed)
        return true
    }

    /// Indexes of the upstreams to try, in order: usable ones by the strategy, then the ones
    /// that are down (so that a query is still tried when every upstream is marked down).
    /// `among`: the upstreams of the query's route, in the order given (nil: all of them).
    public func order(_ strategy: UpstreamStrategy, among group: [Int]? = nil,
                      now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> [Int] {
        var usable = group ?? inOrder
        var down: [Int] = []
        if downCount.load(ordering: .relaxed) > 0 {
            usable = []
            for i in group ?? inOrder {
                let slot = slots[i]
                if slot.down.load(ordering: .relaxed) && now < slot.retryAt.load(ordering: .relaxed) {
                    down.append(i)
                } else {
                    usable.append(i)
                }
            }
            down.sort { slots[$0].retryAt.load(ordering: .relaxed) < slots[$1].retryAt.load(ordering: .relaxed) }
        }
        if usable.count > 1 {
            switch strategy {
            case .first: break
            case .random: usable.shuffle()
            case .fastest:
                usable.sort { rtt($0) < rtt($1) }
                if let stale = usable.dropFirst().first(where: { claimRemeasure($0, now: now) }),
                   let at = usable.firstIndex(of: stale) {
                    usable.remove(at: at)
                    usable.insert(stale, at: 0)
                }
            }
        }
        return down.isEmpty ? usable : usable + down
    }

    /// The upstreams among `group` that are marked down and whose back-off has passed, each
    /// claimed for one probe: its next try time moves a first back-off on (a failed probe then
    /// doubles the back-off as any failure does), so that one query, not every query, probes it,
    /// and the order leaves it last meanwhile.
    func claimProbes(among group: [Int], now: UInt64, hold: Double = 0) -> [Int] {
        guard downCount.load(ordering: .relaxed) > 0 else { return [] }
        // With no upstream of the group up, the query itself tries the due ones (in the order),
        // and is their probe: a probe beside it would send its question twice to the same
        // upstream and count its failure twice.
        guard group.contains(where: { !slots[$0].down.load(ordering: .relaxed) }) else { return [] }
        var claimed: [Int] = []
        for i in group {
            let slot = slots[i]
            guard slot.down.load(ordering: .relaxed) else { continue }
            let at = slot.retryAt.load(ordering: .relaxed)
            guard now >= at else { continue }
            // Held at least as long as the probe may take, so that probes never overlap.
            let until = now + UInt64(max(firstBackoff, hold) * 1e9)
            if slot.retryAt.compareExchange(expected: at, desired: until, ordering: .relaxed).exchanged { claimed.append(i) }
        }
        return claimed
    }

    /// Whether the upstream is marked down now.
    public func isDown(_ index: Int) -> Bool { slots[index].down.load(ordering: .relaxed) }

    /// Records a success; returns true when the upstream had been marked down.
    @discardableResult
    public func success(_ index: Int, rtt: Double) -> Bool {
        let slot = slots[index]
        slot.queries.add(1, ordering: .relaxed)
        if slot.consecutiveFailures.load(ordering: .relaxed) != 0 { slot.consecutiveFailures.store(0, ordering: .relaxed) }
        UpstreamHealth.smooth(slot, rtt)
        guard slot.down.load(ordering: .relaxed) else { return false }
        return transitions.withLock { backoffs in
            guard slot.down.load(ordering: .relaxed) else { return false }
            slot.down.store(false, ordering: .relaxed)
            downCount.subtract(1, ordering: .relaxed)
            backoffs[index] = firstBackoff
            return true
        }
    }

    /// Folds a round-trip sample (seconds) into the smoothed RTT (1/8 weight). The smoothing
    /// races with other cores' updates; a lost sample does not matter.
    private static func smooth(_ slot: Slot, _ seconds: Double) {
        let sample = UInt64(max(1, seconds * 1e9))
        let now = DispatchTime.now().uptimeNanoseconds
        let old = slot.rtt.load(ordering: .relaxed)
        let fresh = old == 0 || slot.remeasure.exchange(false, ordering: .relaxed)
        slot.rtt.store(fresh ? sample : UInt64(Int64(old) + (Int64(sample) - Int64(old)) / 8), ordering: .relaxed)
        slot.measuredAt.store(now, ordering: .relaxed)
    }

    /// Records a failure; returns true when this failure marked the upstream down. `waited`: the
    /// seconds a try that timed out waited, counted in the smoothed RTT as if answered then, as
    /// Unbound counts a timeout: an upstream that drops every other query and answers the rest at
    /// once stayed the `fastest` (its timeouts never counted), and half the queries waited 2 s.
    @discardableResult
    public func failure(_ index: Int, waited: Double? = nil, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool {
        let slot = slots[index]
        if let waited { UpstreamHealth.smooth(slot, waited) }
        return transitions.withLock { backoffs in
            slot.queries.add(1, ordering: .relaxed)
            slot.failures.add(1, ordering: .relaxed)
            let failures = slot.consecutiveFailures.add(1, ordering: .relaxed).newValue
            guard failures >= UpstreamHealth.downAfter else { return false }
            var markedDown = false
            if !slot.down.load(ordering: .relaxed) {
                markedDown = true
                slot.down.store(true, ordering: .relaxed)
                downCount.add(1, ordering: .relaxed)
            } else {
                backoffs[index] = min(UpstreamHealth.maxBackoff, backoffs[index] * 2)
            }
            slot.retryAt.store(now + UInt64(backoffs[index] * 1e9), ordering: .relaxed)
            return markedDown
        }
    }
}
