import Synchronization

/// Holds the blocklist snapshot in force. Readers take the current snapshot (a reference copy
/// under a lock held for nanoseconds); a reload builds a whole new snapshot elsewhere and
/// `replace`s it in one step, so no query ever sees a half-built list.
public final class BlocklistStore: Sendable {
    private let current: Mutex<Blocklist>

    public init(_ initial: Blocklist = .empty) {
        current = Mutex(initial)
    }

    public var snapshot: Blocklist { current.withLock { $0 } }

    public func replace(_ blocklist: Blocklist) {
        current.withLock { $0 = blocklist }
    }
}
