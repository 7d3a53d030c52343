/// How a query was resolved. DNS outcomes are values, not errors: each case says how the
/// answer was produced, and the reply encoder turns it into bytes.
public enum Resolution: Sendable {
    /// A listed name: the synthesized block answer.
    case blocked(BlockAnswer)
    /// The upstream's answer, relayed (or the cache's, from `AnswerCache.origin`).
    case upstream(UpstreamAnswer, from: SocketAddress)
    /// Answered with only a header, question and OPT: SERVFAIL when no upstream answered, and the like.
    case failure(rcode: UInt8, reason: String)
    /// The client asked with an EDNS version we do not speak (RFC 6891 §6.1.3).
    case badVersion

    /// True for an answer that went to the upstreams (relayed, cached, or failed there): what
    /// the query history records. False for blocked and malformed queries.
    public var reachedUpstream: Bool {
        switch self {
        case .upstream, .failure: return true
        case .blocked, .badVersion: return false
        }
    }
}

/// The operator's choice of block answer (`--block-mode`).
public enum BlockMode: String, Sendable, CaseIterable {
    /// NXDOMAIN with an SOA in the authority section, for every type.
    case nxdomain
    /// A and AAAA answered with the sinkhole addresses; other types NODATA.
    case sinkhole
}

/// What a block answer did, logged as `event.action`.
public enum BlockAction: String, Sendable {
    case nxdomain
    case sinkhole
    case nodata
    /// RPZ `rpz-drop`: no reply at all.
    case drop
    /// RPZ local data: the list's own addresses.
    case localData = "local-data"
    /// Not an answer: a client found in the query history resolving a name before a list blocked
    /// it (retro-hunt). Only in the block log, never on the wire.
    case retroHit = "retro-hit"
}

/// A synthesized answer for a blocked name.
public struct BlockAnswer: Sendable {
    public var match: RuleMatch
    public var action: BlockAction
    public var rcode: UInt8
    /// The addresses answered (4 or 16 bytes each) for `sinkhole` and `local-data`.
    public var addresses: [[UInt8]]
    /// TTL of the answer record and of the SOA (and the SOA's negative-caching minimum).
    public var ttl: UInt32
}

/// How to answer a blocked name: the block mode and its parameters.
public struct BlockPolicy: Sendable {
    public var mode: BlockMode
    public var sinkholeIPv4: [UInt8]
    public var sinkholeIPv6: [UInt8]
    public var ttl: UInt32

    public init(mode: BlockMode, sinkholeIPv4: [UInt8] = [0, 0, 0, 0],
                sinkholeIPv6: [UInt8] = [UInt8](repeating: 0, count: 16), ttl: UInt32 = 60) {
        self.mode = mode
        self.sinkholeIPv4 = sinkholeIPv4
        self.sinkholeIPv6 = sinkholeIPv6
        self.ttl = ttl
    }

    /// The answer for `question` under `match`, which it takes (moved in, not copied: this runs
    /// for every blocked query).
    public func answer(for question: Question, match: consuming RuleMatch) -> BlockAnswer {
        let (action, rcode, addresses) = outcome(type: question.type, qclass: question.qclass, match: match)
        return BlockAnswer(match: match, action: action, rcode: rcode, addresses: addresses, ttl: ttl)
    }

    private func outcome(type: UInt16, qclass: UInt16, match: borrowing RuleMatch) -> (BlockAction, UInt8, [[UInt8]]) {
        switch match.action {
        case .drop:
            return (.drop, Rcode.noError, [])
        case .localData:
            let records = qclass == RRType.classIN ? match.localData.filter { $0.type == type } : []
            return records.isEmpty ? (.nodata, Rcode.noError, []) : (.localData, Rcode.noError, records.map(\.rdata))
        case .block, .allow, .nxdomain, .nodata:
            let plain = plainAnswer(type: type, qclass: qclass, action: match.action)!
            return (plain.action, plain.rcode, plain.address.map { [$0] } ?? [])
        }
    }

    /// The answer to a name blocked by a rule doing `action`, when it is made of the rule alone
    /// (not dropped, no local data): its rcode and the address answered, if any.
    func plainAnswer(type: UInt16, qclass: UInt16, action: DomainMatcher.Action) -> (action: BlockAction, rcode: UInt8, address: [UInt8]?)? {
        switch action {
        case .nxdomain:
            return (.nxdomain, Rcode.nxDomain, nil)
        case .nodata:
            return (.nodata, Rcode.noError, nil)
        case .drop, .localData:
            return nil
        case .block, .allow:
            break
        }
        let isIN = qclass == RRType.classIN
        switch mode {
        case .nxdomain:
            return (.nxdomain, Rcode.nxDomain, nil)
        case .sinkhole:
            if isIN && type == RRType.a { return (.sinkhole, Rcode.noError, sinkholeIPv4) }
            if isIN && type == RRType.aaaa { return (.sinkhole, Rcode.noError, sinkholeIPv6) }
            return (.nodata, Rcode.noError, nil)
        }
    }
}
