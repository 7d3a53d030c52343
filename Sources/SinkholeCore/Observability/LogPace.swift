import Dispatch

/// When a condition that recurs may be said again in the operator's log: at most once a minute,
/// however often it recurs (a descriptor shortage, a full disk, a flapping syslog collector,
/// max-inflight), so that the log reports a condition rather than floods with it.
struct LogPace {
    static let interval: UInt64 = 60_000_000_000
    /// Uptime in nanoseconds when last said; nil before the first time.
    private var last: UInt64?

    /// True, and taken as said, when a minute has passed since it was last said (or it never was).
    mutating func due(_ now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool {
        if let last, now &- last < LogPace.interval { return false }
        last = now
        return true
    }

    /// Takes it as said now, whether or not it was due (the start of a condition is always said).
    mutating func said(_ now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        last = now
    }
}
