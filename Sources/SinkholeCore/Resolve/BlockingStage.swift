/// Answers queries for listed names (and every name below them) with the block answer, and
/// records one `BlockEvent` for each. Runs before anything that could send the name off the host.
public struct BlockingStage: Sendable {
    public let store: BlocklistStore
    public let policy: BlockPolicy
    public let log: BlockLog?

    public init(store: BlocklistStore, policy: BlockPolicy, log: BlockLog?) {
        self.store = store
        self.policy = policy
        self.log = log
    }

    public func process(_ query: Query) -> Resolution? {
        guard let match = store.snapshot.blockingRule(for: query.question.name) else { return nil }
        let answer = policy.answer(for: query.question, match: match)
        log?.record(query.event(answer: answer))
        return .blocked(answer)
    }
}
