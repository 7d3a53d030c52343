import CSinkholeNet
import Glibc

/// The process's limit on open descriptors (RLIMIT_NOFILE). Each TCP connection, upstream
/// socket and open file takes one; most systems start a process with a soft limit of 1024,
/// which a TCP flood can reach, while the hard limit is far higher. As systemd's documentation
/// asks of programs that need more (and as Go's runtime does), serve raises its soft limit to
/// the hard one at start-up; the unit file sets both (LimitNOFILE).
public enum OpenFilesLimit {
    /// The soft and hard limits now.
    public static var current: (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises the soft limit to the hard one; the soft limit before and after.
    @discardableResult
    public static func raise() -> (before: UInt64, after: UInt64) {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        let before = UInt64(limit.rlim_cur)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        return (before, current.soft)
    }
}

extension ServerConfiguration {
    /// The most TCP connections per listen address that `openFiles` descriptors leave room for,
    /// after what the rest of the server takes: per core up to 32 sockets for each upstream, the
    /// TCP retries' 32, and 64 for lists, logs, listeners and the metrics server. From a
    /// failure-mode trial: under a limit of 64, TCP clients took every descriptor, and forwarded
    /// queries got SERVFAIL (no upstream socket could be opened) while list reloads and the
    /// block log's reopening failed. Unbound likewise sizes its TCP slots to its descriptors.
    public func tcpConnectionsFitting(openFiles: UInt64, cpus: Int = Int(sinkhole_usable_cpus())) -> Int {
        let upstreamCount = Set(upstreams + forwardZones.flatMap(\.upstreams)).count
        let reserve = 64 + 32 * (max(1, cpus) * upstreamCount + 1) + 2 * listen.count * max(1, cpus)
        let room = (Int(clamping: openFiles) - reserve) / max(1, listen.count)
        return max(16, room)
    }
}
