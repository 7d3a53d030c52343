/// How a query was resolved. DNS outcomes are values, not errors: each case says how the
/// answer was produced, and the reply encoder turns it into bytes.
public enum Resolution: Sendable {
    /// A listed name: the synthesized block answer.
    case blocked(BlockAnswer)
    /// The upstream's answer, relayed.
    case upstream(Message, from: SocketAddress)
    /// Answered with only a header, question and OPT: SERVFAIL when no upstream answered, and the like.
    case failure(rcode: UInt8, reason: String)
    /// The client asked with an EDNS version we do not speak (RFC 6891 §6.1.3).
    case badVersion
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
}

/// A synthesized answer for a blocked name.
public struct BlockAnswer: Sendable {
    public var match: RuleMatch
    public var action: BlockAction
    public var rcode: UInt8
    /// The address answered (4 or 16 bytes) for `sinkhole`, nil otherwise.
    public var address: [UInt8]?
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

    public func answer(for question: Question, match: RuleMatch) -> BlockAnswer {
        switch mode {
        case .nxdomain:
            return BlockAnswer(match: match, action: .nxdomain, rcode: Rcode.nxDomain, address: nil, ttl: ttl)
        case .sinkhole:
            let isIN = question.qclass == RRType.classIN
            if isIN && question.type == RRType.a {
                return BlockAnswer(match: match, action: .sinkhole, rcode: Rcode.noError, address: sinkholeIPv4, ttl: ttl)
            }
            if isIN && question.type == RRType.aaaa {
                return BlockAnswer(match: match, action: .sinkhole, rcode: Rcode.noError, address: sinkholeIPv6, ttl: ttl)
            }
            return BlockAnswer(match: match, action: .nodata, rcode: Rcode.noError, address: nil, ttl: ttl)
        }
    }
}
