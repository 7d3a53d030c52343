import Glibc

/// Dropping root after the listening sockets are bound (`--user`, `--group`), before any query
/// is handled: supplementary groups cleared, then the group, then the user, and a check that
/// root cannot be regained. (The alternative, running unprivileged with CAP_NET_BIND_SERVICE,
/// needs nothing here: see the systemd unit in deploy/.)
public enum Privileges {
    public struct Identity: Sendable, Equatable {
        public var uid: uid_t
        public var gid: gid_t
    }

    /// Looks the user (and group, else the user's primary group) up; throws a readable error.
    public static func resolve(user: String, group: String?) throws -> Identity {
        guard let pw = getpwnam(user) else { throw ConfigurationError("--user \(user): no such user") }
        var gid = pw.pointee.pw_gid
        if let group {
            guard let gr = getgrnam(group) else { throw ConfigurationError("--group \(group): no such group") }
            gid = gr.pointee.gr_gid
        }
        return Identity(uid: pw.pointee.pw_uid, gid: gid)
    }

    /// What to do about a start-up error that is a bind refused for want of privilege (EACCES:
    /// a port below 1024 bound by a user without root or CAP_NET_BIND_SERVICE), said after the
    /// error; nil for any other error. `Permission denied` alone gave no way forward.
    public static func hint(for error: Error) -> String? {
        guard let error = error as? SystemError, error.code == EACCES, error.operation.hasPrefix("bind ") else { return nil }
        return "ports below 1024 need privileges: start sinkhole as root with --user USER (it drops to USER once bound), "
            + "or give it CAP_NET_BIND_SERVICE as deploy/sinkhole.service does (AmbientCapabilities=CAP_NET_BIND_SERVICE)"
    }

    public static func drop(to identity: Identity) throws {
        guard geteuid() == 0 else {
            if geteuid() == identity.uid { return }
            throw ConfigurationError("--user needs sinkhole to be started as root")
        }
        guard setgroups(0, nil) == 0 else { throw SystemError("setgroups") }
        guard setgid(identity.gid) == 0 else { throw SystemError("setgid \(identity.gid)") }
        guard setuid(identity.uid) == 0 else { throw SystemError("setuid \(identity.uid)") }
        if identity.uid != 0 && setuid(0) == 0 {
            throw ConfigurationError("privileges could not be dropped: root could be regained")
        }
    }
}
