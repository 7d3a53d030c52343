/// Looks inside forwarded answers: a CNAME or DNAME in the answer section whose target is a
/// blocked name (CNAME cloaking) blocks the whole answer with the configured block mode, as if
/// the query name had been listed, and logs `sinkhole.match: cname` with the target and its
/// position in the chain. Without it, upstream data for a listed name would reach the client
/// through an unlisted alias. Then IP indicators: an A/AAAA record whose address is in a listed
/// range (IP lists, RPZ rpz-ip) blocks the answer too, logged as `sinkhole.match: response-ip`.
public struct ResponseInspection: Sendable {
    public let blocking: BlockingStage

    public init(blocking: BlockingStage) {
        self.blocking = blocking
    }

    /// Inspects against `snapshot`, the lists the caller took (and whose generation it records).
    public func process(_ query: Query, _ resolution: Resolution, lists snapshot: Blocklist) -> Resolution {
        guard case .upstream(let upstream, _) = resolution else { return resolution }
        var position = 0
        for target in upstream.aliasTargets {
            position += 1
            guard var match = snapshot.blockingRule(for: target) else { continue }
            // The negative answer's SOA must own a zone that holds the name asked, not the target.
            match.zone = WireName.lowercased(query.question.name)
            match.responseBased = true
            let answer = blocking.policy.answer(for: query.question, match: match)
            blocking.log?.record(query.event(answer: answer, matchedOn: "cname",
                                            matchedName: target, chainPosition: position))
            return .blocked(answer)
        }
        // IP indicators: an A or AAAA in the answer inside a listed range blocks the answer.
        guard snapshot.hasAddressRules else { return resolution }
        for address in upstream.answerAddresses {
            guard let rule = snapshot.decideAddress(address), rule.action != .allow else { continue }
            var match = rule
            match.zone = WireName.lowercased(query.question.name)
            match.responseBased = true
            // Plain IP-list entries answer with the block mode; RPZ rpz-ip actions are honoured.
            let answer = blocking.policy.answer(for: query.question, match: match)
            blocking.log?.record(query.event(answer: answer, matchedOn: "response-ip",
                                            matchedAddress: address))
            return .blocked(answer)
        }
        return resolution
    }
}
