import Glibc
import Logging
import SinkholeCore

/// SIGTERM/SIGINT stop gracefully and exit 0; SIGHUP reopens the block log and reloads lists.
///
/// The signals are blocked in every thread (`block()`, called before the first thread starts,
/// so every thread inherits the mask) and taken synchronously with `sigwait` on the main
/// thread (`serve(...)`). A signal that arrives at any moment after `block()` stays pending
/// until it is taken, so none is lost.
///
/// Why not Dispatch signal sources: on Linux, libdispatch sets the signal's disposition and
/// its signalfd up asynchronously on its manager thread, and leaves the signal unblocked in
/// threads it did not create (the main thread, which `dispatchMain` parks in `sigsuspend` with
/// an empty mask, and the block-log writer). A SIGTERM that came during that set-up, or that one
/// of those threads took, was dropped: in about one start in 25 under load, the server never
/// heard its SIGTERM and had to be killed.
enum Signals {
    static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    private static var set: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in handled { sigaddset(&set, sig) }
        return set
    }

    /// Blocks the handled signals in the calling thread and so in every thread it starts
    /// afterwards. Call it first in the command, before anything starts a thread.
    ///
    /// SIGPIPE and SIGXFSZ are ignored: a stderr pipe whose reader went away, or a file-size
    /// limit (ulimit -f, LimitFSIZE=) reached by the block log, are then write errors that the
    /// server reports and outlives, as daemons do, rather than signals that end it. SIGUSR1 and
    /// SIGUSR2 mean nothing to sinkhole and are ignored too: a stray `kill -USR1` (meant for
    /// another daemon's statistics) must not take the network's resolver down.
    static func block() {
        var set = set
        pthread_sigmask(SIG_BLOCK, &set, nil)
        for sig in [SIGPIPE, SIGXFSZ, SIGUSR1, SIGUSR2] { signal(sig, SIG_IGN) }
    }

    /// Takes signals on the calling thread until SIGTERM or SIGINT, then stops the server and
    /// exits 0. A reload runs here too, so a stop never overlaps a reload: a SIGTERM that comes
    /// during one is taken when it ends (a second or two for a million-entry list).
    static func serve(_ server: SinkholeServer, logger: Logger) -> Never {
        var set = set
        while true {
            var sig: Int32 = 0
            guard sigwait(&set, &sig) == 0 else { continue }
            if sig == SIGHUP {
                // sigwait takes the lowest-numbered signal first, SIGHUP (1) before SIGTERM (15):
                // a stop already asked for goes first, so reloads cannot keep putting it off.
                var pending = sigset_t()
                sigpending(&pending)
                if sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1 { continue }
                logger.info("SIGHUP: reopening block log and reloading lists")
                server.reload()
            } else {
                logger.info("signal \(sig): stopping")
                server.stop()
                exit(0)
            }
        }
    }
}
