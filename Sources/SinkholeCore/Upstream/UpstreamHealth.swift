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

    public let upstreams: [SocketAddress]
    private let states: Mutex<[State]>
    private let firstBackoff: Double

    public init(upstreams: [SocketAddress], firstBackoff: Double = UpstreamHealth.firstBackoff) {
        self.upstreams = upstreams
        self.firstBackoff = firstBackoff
        var initial = State()
        initial.backoff = firstBackoff
        states = Mutex([State](repeating: initial, count: upstreams.count))
    }

    public var snapshot: [State] { states.withLock { $0 } }

    /// Indexes of the upstreams to try, in order: usable ones by the strategy, then the ones
    /// that are down (so that a query is still tried when every upstream is marked down).
    public func order(_ strategy: UpstreamStrategy, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> [Int] {
        states.withLock { states in
            var usable: [Int] = []
            var down: [Int] = []
            for (i, s) in states.enumerated() {
                if s.down && now < s.retryAt { down.append(i) } else { usable.append(i) }
            }
            switch strategy {
            case .first: break
            case .random: usable.shuffle()
            case .fastest: usable.sort { (states[$0].rtt ?? 0) < (states[$1].rtt ?? 0) }
            }
            return usable + down.sorted { states[$0].retryAt < states[$1].retryAt }
        }
    }

    /// Records a success; returns true when the upstream had been marked down.
    @discardableResult
    public func success(_ index: Int, rtt: Double) -> Bool {
        states.withLock { states in
            var s = states[index]
            let wasDown = s.down
            s.queries += 1
            s.consecutiveFailures = 0
            s.down = false
            s.backoff = firstBackoff
            s.rtt = s.rtt.map { $0 + (rtt - $0) / 8 } ?? rtt
            states[index] = s
            return wasDown
        }
    }

    /// Records a failure; returns true when this failure marked the upstream down.
    @discardableResult
    public func failure(_ index: Int, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool {
        states.withLock { states in
            var s = states[index]
            s.queries += 1
            s.failures += 1
            s.consecutiveFailures += 1
            var markedDown = false
            if s.consecutiveFailures >= UpstreamHealth.downAfter {
                if !s.down { markedDown = true } else { s.backoff = min(UpstreamHealth.maxBackoff, s.backoff * 2) }
                s.down = true
                s.retryAt = now + UInt64(s.backoff * 1e9)
            }
            states[index] = s
            return markedDown
        }
    }
}
