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
