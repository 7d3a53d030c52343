import Dispatch
import Glibc
import Synchronization

/// When accept fails for want of a descriptor or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the
/// waiting connection stays in the backlog and the listening socket stays readable: accepting
/// again at once would spin a core for as long as the shortage lasts. This suspends the
/// listener's read source for `interval` instead; the connection is taken when it can be.
final class AcceptPause: @unchecked Sendable {
    static let interval = 0.1
    private let source: DispatchSourceRead
    private let queue: DispatchQueue
    /// Whether the source is suspended for a shortage, and whether the listener has stopped.
    private let state = Mutex((paused: false, stopped: false))

    init(source: DispatchSourceRead, queue: DispatchQueue) {
        self.source = source
        self.queue = queue
    }

    /// Whether pausing is the answer to an accept that failed with `error`.
    static func isShortage(_ error: Int32) -> Bool {
        error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM
    }

    /// Suspends the source and resumes it after `interval` (unless stopped meanwhile).
    func pause() {
        let suspended = state.withLock { s -> Bool in
            guard !s.stopped, !s.paused else { return false }
            s.paused = true
            source.suspend()
            return true
        }
        guard suspended else { return }
        queue.asyncAfter(deadline: .now() + AcceptPause.interval) { [self] in
            state.withLock { s in
                if s.paused { s.paused = false; source.resume() }
            }
        }
    }

    /// No more pauses; a paused source is resumed, so that cancelling it completes.
    func stop() {
        state.withLock { s in
            s.stopped = true
            if s.paused { s.paused = false; source.resume() }
        }
    }
}
