import CLdns

/// Builds reply bytes for a query from a `Resolution`, applying the rules every reply follows:
/// ID, opcode, RD, CD and the question copied exactly as asked; QR and RA set; Z clear;
/// exactly one OPT (version 0, our payload size, the client's DO bit, no options) when the query
/// had one and none otherwise; over UDP, a reply larger than the client takes loses its
/// additional records, then (when it has answers) its authority records, and when its answer
/// still does not fit is sent with TC=1 and empty sections so that the client retries over TCP.
public struct ReplyBuilder: Sendable {
    /// Our UDP payload size, advertised in every OPT record we send (default 1232).
    public var payloadSize: UInt16
    /// With `--forward-ecs`: a reply to a query with an ECS option carries it back (RFC 7871
    /// 7.2.2), with the upstream's SCOPE PREFIX-LENGTH (0 for a block or an upstream that sent
    /// none). Without it, a subnet cache in front (dnsdist, Unbound) took a tailored answer for
    /// one good for every client.
    public var echoesClientSubnet = false

    public init(payloadSize: UInt16, echoesClientSubnet: Bool = false) {
        self.payloadSize = payloadSize
        self.echoesClientSubnet = echoesClientSubnet
    }

    /// The ECS option for a reply to `query`, or nothing (see `echoesClientSubnet`).
    func clientSubnetEcho(for query: Query, scope: UInt8) -> [UInt8] {
        guard echoesClientSubnet, query.edns != nil, let subnet = query.clientSubnet else { return [] }
        return subnet.echo(scope: scope)
    }

    /// SOA names of block answers: under `.invalid` (RFC 6761), so they can never resolve.
    static let soaMname = WireName.fromText("sinkhole.invalid")!
    static let soaRname = WireName.fromText("blocked.sinkhole.invalid")!

    public func reply(to query: Query, _ resolution: Resolution) -> [UInt8] {
        let message: Message?
        switch resolution {
        case .blocked(let answer):
            message = blockReply(to: query, answer)
        case .upstream(let upstream, _):
            message = upstream.message().map { relay($0, to: query) }
        case .failure(let rcode, _):
            message = base(for: query)
            message?.rcode = rcode
        case .badVersion:
            message = base(for: query)
            message?.rcode = 0
            message?.edns = EDNS(udpPayloadSize: payloadSize, version: 0, extendedRcode: UInt8(Rcode.badVers >> 4),
                                 dnssecOK: query.edns?.dnssecOK ?? false)
        }
        guard let message, var wire = message.wire() else {
            return HeaderGate.headerOnlyReply(to: query.header, rcode: Rcode.servFail)
        }
        let limit = query.replySizeLimit(payloadSize: payloadSize)
        if wire.count > limit, case .blocked(let answer) = resolution, query.edns != nil {
            // The Extended DNS Error's text is a courtesy (RFC 8914 2: EXTRA-TEXT is optional):
            // a long listed name's text must not cost the client the SOA it caches the answer
            // by, with TC=1. The code alone first.
            message.setEDNSOptions(ReplyBuilder.extendedError(for: answer, withText: false) + clientSubnetEcho(for: query, scope: 0))
            if let smaller = message.wire() {
                wire = smaller
                if wire.count <= limit { return wire }
            }
        }
        if wire.count > limit {
            // TC=1 only when what was asked for does not fit (RFC 2181 9; RFC 4035 3.1.1 for
            // RRSIGs of additional data): the additional section goes first. The authority
            // section goes too only from a plain positive answer, as Unbound leaves it out:
            // NOERROR with records of the type asked and no NSEC or NSEC3 proof (a wildcard
            // answer's, which a validator needs, RFC 4035 3.1.3.3). A negative answer keeps its
            // SOA (what a cache needs, RFC 2308 5) and is truncated rather than sent without it.
            message.clear([.additional])
            if let smaller = message.wire(), smaller.count <= limit { return smaller }
            if ReplyBuilder.isPlainPositive(message, asked: query.question.type) {
                message.clear([.authority])
                if let smaller = message.wire(), smaller.count <= limit { return smaller }
            }
            message.clearRecords()
            message.truncated = true
            wire = message.wire() ?? HeaderGate.headerOnlyReply(to: query.header, rcode: Rcode.servFail)
        }
        return wire
    }

    /// The reply to a query the header gate rejected (NOTIMP, FORMERR for QDCOUNT≠1). When ldns
    /// can parse the message, the reply copies its single question (if it had exactly one) and
    /// carries an OPT when the query did; otherwise it is the bare header.
    public func rejection(to header: Header, packet: [UInt8], rcode: UInt8, truncated: Bool = false) -> [UInt8] {
        guard let query = Message(wire: packet), OPTCheck.isValid(packet), let m = Message.empty() else {
            return HeaderGate.headerOnlyReply(to: header, rcode: rcode)
        }
        m.id = header.id
        m.isResponse = true
        m.opcode = header.opcode
        m.recursionDesired = header.recursionDesired
        m.checkingDisabled = header.checkingDisabled
        m.recursionAvailable = true
        m.rcode = rcode
        m.truncated = truncated
        if header.qdcount == 1, let question = query.question { m.setQuestion(question) }
        if let edns = query.edns {
            m.edns = EDNS(udpPayloadSize: payloadSize, version: 0, extendedRcode: 0, dnssecOK: edns.dnssecOK)
        }
        return m.wire() ?? HeaderGate.headerOnlyReply(to: header, rcode: rcode)
    }

    /// The reply to a query signed with TSIG: sinkhole holds no key, so NOTAUTH with an unsigned
    /// TSIG record whose error is BADKEY (RFC 8945 5.2.1), echoing the key and algorithm names,
    /// the time signed and fudge, with no MAC. Answering it unsigned, as before, left the client
    /// to discard the reply and time out.
    public func badKey(to query: Query, key: [UInt8], algorithm: [UInt8], timeAndFudge: [UInt8]) -> [UInt8] {
        guard let m = base(for: query) else { return HeaderGate.headerOnlyReply(to: query.header, rcode: Rcode.notAuth) }
        m.rcode = Rcode.notAuth
        m.setTSIG(owner: key, rdata: [
            (LDNS_RDF_TYPE_DNAME, algorithm),
            (LDNS_RDF_TYPE_TSIGTIME, Array(timeAndFudge.prefix(6))),
            (LDNS_RDF_TYPE_INT16, Array(timeAndFudge.suffix(2))),
            (LDNS_RDF_TYPE_INT16_DATA, [0, 0]),                                   // MAC size 0
            (LDNS_RDF_TYPE_INT16, [UInt8(query.header.id >> 8), UInt8(query.header.id & 0xFF)]),   // original ID
            (LDNS_RDF_TYPE_INT16, [0, 17]),                                       // error BADKEY
            (LDNS_RDF_TYPE_INT16_DATA, [0, 0]),                                   // other len 0
        ])
        return m.wire() ?? HeaderGate.headerOnlyReply(to: query.header, rcode: Rcode.notAuth)
    }

    /// A reply with the header, question and OPT rules applied and no records.
    func base(for query: Query) -> Message? {
        guard let m = Message.empty() else { return nil }
        m.id = query.header.id
        m.isResponse = true
        m.opcode = query.header.opcode
        m.recursionDesired = query.header.recursionDesired
        m.checkingDisabled = query.header.checkingDisabled
        m.recursionAvailable = true
        m.setQuestion(query.question)
        m.edns = ednsReply(for: query)
        return m
    }

    func ednsReply(for query: Query) -> EDNS? {
        guard let edns = query.edns else { return nil }
        return EDNS(udpPayloadSize: payloadSize, version: 0, extendedRcode: 0, dnssecOK: edns.dnssecOK)
    }

    func blockReply(to query: Query, _ answer: BlockAnswer) -> Message? {
        guard let m = base(for: query) else { return nil }
        m.rcode = answer.rcode
        m.authoritative = true
        if query.edns != nil { m.setEDNSOptions(ReplyBuilder.extendedError(for: answer) + clientSubnetEcho(for: query, scope: 0)) }
        if !answer.addresses.isEmpty {
            for address in answer.addresses {
                m.append(.answer, owner: query.question.name, type: query.question.type, qclass: RRType.recordClass(asked: query.question.qclass),
                         ttl: answer.ttl, rdata: [(address.count == 4 ? LDNS_RDF_TYPE_A : LDNS_RDF_TYPE_AAAA, address)])
            }
        } else {
            m.append(.authority, owner: answer.match.zone, type: RRType.soa, qclass: RRType.recordClass(asked: query.question.qclass), ttl: answer.ttl,
                     rdata: [(LDNS_RDF_TYPE_DNAME, ReplyBuilder.soaMname), (LDNS_RDF_TYPE_DNAME, ReplyBuilder.soaRname),
                             (LDNS_RDF_TYPE_INT32, be32(1)), (LDNS_RDF_TYPE_PERIOD, be32(3600)),
                             (LDNS_RDF_TYPE_PERIOD, be32(600)), (LDNS_RDF_TYPE_PERIOD, be32(86_400)),
                             (LDNS_RDF_TYPE_PERIOD, be32(answer.ttl))])
        }
        return m
    }

    /// The upstream's message made into our reply: every section and its rcode kept; ID,
    /// question case, RA and OPT set as for any reply. The upstream's own OPT options are dropped.
    /// AA is cleared (the answer is relayed or cached, not ours: RFC 1035 4.1.1, RFC 2181 5.4.1),
    /// CD is the client's (RFC 4035 3.2.2), and AD is kept only for a client that asked for it
    /// with AD or DO (RFC 6840 5.7, 5.8): a cached answer may have been fetched for another.
    func relay(_ upstream: Message, to query: Query) -> Message {
        upstream.id = query.header.id
        upstream.isResponse = true
        upstream.recursionDesired = query.header.recursionDesired
        upstream.recursionAvailable = true
        upstream.truncated = false
        upstream.authoritative = false
        upstream.checkingDisabled = query.header.checkingDisabled
        if !ReplyBuilder.wantsAuthenticData(flags: query.header.flags, dnssecOK: query.edns?.dnssecOK ?? false) {
            upstream.authenticData = false
        }
        upstream.setQuestion(query.question)
        let extended = upstream.edns?.extendedRcode ?? 0
        // The upstream's Extended DNS Errors are relayed (why it failed: DNSSEC Bogus, ...);
        // its other options are hop-by-hop.
        var errors: [UInt8] = []
        var scope: UInt8 = 0
        if query.edns != nil, upstream.edns != nil {
            let options = upstream.ednsOptions
            errors = ExtendedErrors.options(options)
            scope = options.withUnsafeBytes { ClientSubnet.scope(in: $0) } ?? 0
        }
        errors += clientSubnetEcho(for: query, scope: scope)
        var edns = ednsReply(for: query)
        edns?.extendedRcode = extended
        upstream.edns = edns
        if !errors.isEmpty { upstream.setEDNSOptions(errors) }
        return upstream
    }
}

extension ReplyBuilder {
    /// NOERROR, an answer record of the type asked (any, for ANY), and no NSEC or NSEC3 record
    /// in the authority section: the answer stands without its authority records.
    static func isPlainPositive(_ message: Message, asked type: UInt16) -> Bool {
        guard message.rcode == Rcode.noError else { return false }
        let answers = message.records(.answer)
        guard answers.contains(where: { $0.type == type || type == 255 }) else { return false }
        return !message.records(.authority).contains { $0.type == 47 || $0.type == 50 }
    }

    /// True when a relayed answer may keep the upstream's AD bit: the query set AD or DO.
    @inline(__always)
    static func wantsAuthenticData(flags: UInt16, dnssecOK: Bool) -> Bool {
        flags & 0x0020 != 0 || dnssecOK
    }

    /// The header flags of a relayed answer (`relay`, and `CachedReply`, which writes them
    /// itself): the upstream's opcode, AD (see `wantsAuthenticData`) and rcode; QR and RA set; the
    /// client's RD and CD; AA, TC and Z clear.
    @inline(__always)
    static func relayedFlags(upstream: UInt16, query: UInt16, dnssecOK: Bool) -> UInt16 {
        var flags = upstream & (0x7800 | 0x0020 | 0x000F)   // opcode, AD, rcode
        if !wantsAuthenticData(flags: query, dnssecOK: dnssecOK) { flags &= ~UInt16(0x0020) }
        return flags | 0x8000 | 0x0080 | (query & (0x0100 | 0x0010))   // QR, RA, the client's RD and CD
    }

    /// Extended DNS Error (RFC 8914, option 15) for a block answer: INFO-CODE 15 "Blocked" when
    /// the name asked was listed, 17 "Filtered" when the upstream's answer was (a CNAME target),
    /// with EXTRA-TEXT naming the list and rule, so the person at the client can tell a block
    /// from an outage.
    static func extendedError(for answer: BlockAnswer, withText: Bool = true) -> [UInt8] {
        guard withText else {
            return [0, 15, 0, 2, 0, answer.match.responseBased ? 17 : 15]
        }
        return WireWriter.makeArray(capacity: 6 + extendedErrorTextLimit) { out in
            writeExtendedError(&out, responseBased: answer.match.responseBased, list: answer.match.list) { text in
                for byte in answer.match.rule.utf8 { text.put(byte) }
            }
        }
    }

    /// EXTRA-TEXT is cut at this many bytes.
    static let extendedErrorTextLimit = 200

    /// The same option written by `out`: "blocked by " + `list` + ": " + what `rule` puts.
    static func writeExtendedError(_ out: inout WireWriter, responseBased: Bool, list: String,
                                   rule: (inout TruncatingText) -> Void) {
        withUnsafeTemporaryAllocation(byteCount: extendedErrorTextLimit, alignment: 1) { buffer in
            var text = TruncatingText(buffer)
            for byte in "blocked by ".utf8 { text.put(byte) }
            var list = list
            list.withUTF8 { for byte in $0 { text.put(byte) } }
            text.put(UInt8(ascii: ":"))
            text.put(UInt8(ascii: " "))
            rule(&text)
            // EXTRA-TEXT is UTF-8 (RFC 8914 2): a cut is made between characters, not inside one
            // (a list named in Cyrillic ended in a lone lead byte, a review found).
            text.dropPartialCharacter()
            let code: UInt16 = responseBased ? 17 : 15
            out.put16(15)
            out.put16(UInt16(2 + text.count))
            out.put16(code)
            out.append(UnsafeRawBufferPointer(rebasing: buffer[0..<text.count]))
        }
    }
}

/// Bytes put into a fixed buffer, those past its end dropped: the Extended DNS Error's text.
struct TruncatingText {
    private let buffer: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    /// Some bytes did not fit.
    private(set) var cut = false

    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

    @inline(__always) mutating func put(_ byte: UInt8) {
        guard count < buffer.count else { cut = true; return }
        buffer[count] = byte
        count += 1
    }

    /// After a cut: the last UTF-8 character dropped if the cut left it incomplete.
    mutating func dropPartialCharacter() {
        guard cut, count > 0 else { return }
        var start = count - 1
        while start > 0, count - start < 4, buffer[start] & 0xC0 == 0x80 { start -= 1 }
        let lead = buffer[start]
        let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        if start + length > count { count = start }
    }
}

@inline(__always)
func be32(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
}
