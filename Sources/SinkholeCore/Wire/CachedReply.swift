/// What the cache and the forwarder need to know of an upstream's reply, read from its bytes:
/// the rcode and TC bit, the lowest TTL of its records, and the SOA that
/// decides how long a negative answer is kept (RFC 2308 §5).
public struct ReplyFacts: Sendable, Equatable {
    /// The 4-bit header RCODE.
    public var rcode: UInt8
    public var truncated: Bool
    public var answerCount: Int
    /// The lowest TTL of every record but OPT, additional ones too (an answer is kept no longer
    /// than its shortest record: an MX answer's address records, shorter-lived than the MX,
    /// were served at TTL 0 after they ran out); nil when there are none.
    public var lowestTTL: UInt32?
    /// The first SOA in the authority section: its TTL and its MINIMUM field.
    public var soa: (ttl: UInt32, minimum: UInt32)?
    /// The upper 8 bits of the rcode, from the OPT record (RFC 6891 6.1.3); 0 without one.
    public var extendedRcode: UInt8 = 0

    public init(rcode: UInt8, truncated: Bool, answerCount: Int, lowestTTL: UInt32?, soa: (ttl: UInt32, minimum: UInt32)?,
                extendedRcode: UInt8 = 0) {
        self.extendedRcode = extendedRcode
        self.rcode = rcode
        self.truncated = truncated
        self.answerCount = answerCount
        self.lowestTTL = lowestTTL
        self.soa = soa
    }

    /// The same facts from an ldns-decoded message (for replies `CachedReply` does not lay out).
    public init(_ message: Message) {
        let answers = message.records(.answer)
        let authority = message.records(.authority)
        rcode = message.rcode
        extendedRcode = message.edns?.extendedRcode ?? 0
        truncated = message.truncated
        answerCount = answers.count
        lowestTTL = (answers + authority + message.records(.additional).filter { $0.type != RRType.opt }).map(\.ttl).min()
        soa = authority.first { $0.type == RRType.soa && $0.rdata.count >= 4 }.map { record in
            (record.ttl, record.rdata.suffix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
    }

    public static func == (a: ReplyFacts, b: ReplyFacts) -> Bool {
        a.rcode == b.rcode && a.truncated == b.truncated && a.answerCount == b.answerCount
            && a.lowestTTL == b.lowestTTL && a.soa?.ttl == b.soa?.ttl && a.soa?.minimum == b.soa?.minimum
    }
}

/// Where the TTL fields of an answer are: the first few inline (most answers have a handful of
/// records), the rest in an array, so that laying out a typical answer allocates nothing.
struct TTLOffsets: Sequence, Sendable {
    static let inlineCapacity = 6
    private var inline: (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) = (0, 0, 0, 0, 0, 0)
    private var extra: [UInt16] = []
    private(set) var count = 0

    mutating func append(_ offset: UInt16) {
        let index = count
        if index < TTLOffsets.inlineCapacity {
            withUnsafeMutableBytes(of: &inline) { $0.storeBytes(of: offset, toByteOffset: index * 2, as: UInt16.self) }
        } else {
            extra.append(offset)
        }
        count += 1
    }

    subscript(index: Int) -> UInt16 {
        if index < TTLOffsets.inlineCapacity {
            return withUnsafeBytes(of: inline) { $0.load(fromByteOffset: index * 2, as: UInt16.self) }
        }
        return extra[index - TTLOffsets.inlineCapacity]
    }

    struct Iterator: IteratorProtocol {
        let offsets: TTLOffsets
        var index = 0
        mutating func next() -> UInt16? {
            guard index < offsets.count else { return nil }
            defer { index += 1 }
            return offsets[index]
        }
    }

    func makeIterator() -> Iterator { Iterator(offsets: self) }

    /// True when a TTL field (4 bytes from an offset; the offsets ascend) shares a byte with `bytes`.
    func overlaps(_ bytes: Range<Int>) -> Bool {
        // The first offset whose field ends after the range starts.
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if Int(self[mid]) + 4 <= bytes.lowerBound { low = mid + 1 } else { high = mid }
        }
        return low < count && Int(self[low]) < bytes.upperBound
    }
}

/// An upstream answer laid out once, when it arrives, so that it can be relayed, cached and
/// served again from its bytes: where its question ends, where every TTL is, its OPT record
/// (which is replaced by ours), and its `ReplyFacts`. Nil from `init` for anything unusual;
/// that answer is then decoded by ldns (`UpstreamAnswer`) and encoded again when relayed.
public final class CachedReply: Sendable {
    public let wire: [UInt8]
    let questionEnd: Int
    /// Offsets of the TTL field of every record except OPT.
    let ttlOffsets: TTLOffsets
    /// The upstream's OPT record, removed when serving.
    let opt: Range<Int>?
    let counts: (answer: UInt16, authority: UInt16, additional: UInt16)
    let extendedRcode: UInt8
    public let facts: ReplyFacts
    /// A record's TTL has the top bit set (RFC 2181 8: to be taken as 0).
    let hasTopBitTTL: Bool
    /// The upstream's Extended DNS Errors, relayed in our OPT record (`ExtendedErrors`).
    public let extendedErrors: [UInt8]
    /// The SCOPE PREFIX-LENGTH of the upstream's ECS option (0 without one), for the ECS option
    /// echoed to a client with `--forward-ecs`.
    let clientSubnetScope: UInt8

    public init?(_ wire: [UInt8]) {
        guard wire.count <= Int(UInt16.max), let header = Header(wire), header.qdcount == 1,
              let nameEnd = CachedReply.name(wire, at: 12, end: wire.count), nameEnd + 4 <= wire.count else { return nil }
        var offset = nameEnd + 4
        questionEnd = offset
        var ttls = TTLOffsets()
        var opt: Range<Int>?
        var extended: UInt8 = 0
        var errors: [UInt8] = []
        var scope: UInt8 = 0
        var lowest: UInt32?
        var soa: (ttl: UInt32, minimum: UInt32)?
        var topBit = false
        let answerEnd = Int(header.ancount), authorityEnd = answerEnd + Int(header.nscount)
        let total = authorityEnd + Int(header.arcount)
        for index in 0..<total {
            let start = offset
            guard let end = CachedReply.name(wire, at: offset, end: wire.count, ttls: ttls), end + 10 <= wire.count else { return nil }
            let type = UInt16(wire[end]) << 8 | UInt16(wire[end + 1])
            let rdlength = Int(wire[end + 8]) << 8 | Int(wire[end + 9])
            offset = end + 10 + rdlength
            guard offset <= wire.count else { return nil }
            if type == RRType.opt {
                guard opt == nil, index >= authorityEnd else { return nil }
                opt = start..<offset
                extended = wire[end + 4]
                if rdlength > 0 {
                    errors = ExtendedErrors.options(wire, in: (end + 10)..<offset)
                    scope = wire.withUnsafeBytes { ClientSubnet.scope(in: UnsafeRawBufferPointer(rebasing: $0[(end + 10)..<offset])) } ?? 0
                }
                continue
            }
            // Before the record data is read: a name in it must not point into this TTL either.
            ttls.append(UInt16(end + 4))
            if wire[end + 4] & 0x80 != 0 { topBit = true }
            // For CNAME and DNAME this also checks that the target expands (`name` and
            // `expandedName` take the same names), so response inspection can read it.
            guard CachedReply.rdataIsExact(type: type, wire, from: end + 10, to: offset, ttls: ttls) else { return nil }
            let ttl = CachedReply.read32(wire, end + 4)
            lowest = min(lowest ?? ttl, ttl)
            if index >= answerEnd, index < authorityEnd, type == RRType.soa, soa == nil {
                soa = (ttl, CachedReply.read32(wire, offset - 4))
            }
        }
        // The OPT record must be the last one (ldns writes it there), so removing it moves no
        // name that a compression pointer could refer to.
        guard offset == wire.count, opt == nil || opt?.upperBound == wire.count else { return nil }
        self.wire = wire
        self.ttlOffsets = ttls
        self.opt = opt
        self.extendedRcode = extended
        extendedErrors = errors
        clientSubnetScope = scope
        hasTopBitTTL = topBit
        counts = (header.ancount, header.nscount, header.arcount - (opt == nil ? 0 : 1))
        facts = ReplyFacts(rcode: UInt8(header.flags & 0x000F), truncated: header.flags & 0x0200 != 0,
                           answerCount: Int(header.ancount), lowestTTL: lowest, soa: soa, extendedRcode: extended)
    }

    @inline(__always) static func read32(_ wire: [UInt8], _ at: Int) -> UInt32 {
        UInt32(wire[at]) << 24 | UInt32(wire[at + 1]) << 16 | UInt32(wire[at + 2]) << 8 | UInt32(wire[at + 3])
    }

    /// The question name's bytes as the upstream wrote it (bytes 12 ..< questionEnd - 4).
    var questionName: Range<Int> { 12..<(questionEnd - 4) }

    /// True when this answers `question`: the same name ignoring ASCII case, type and class.
    func answers(_ question: Question) -> Bool {
        let name = questionName
        guard name.count == question.name.count,
              UInt16(wire[questionEnd - 4]) << 8 | UInt16(wire[questionEnd - 3]) == question.type,
              UInt16(wire[questionEnd - 2]) << 8 | UInt16(wire[questionEnd - 1]) == question.qclass else { return false }
        return wire.withUnsafeBytes { FastReply.equalIgnoringCase($0, from: name.lowerBound, question.name[...]) }
    }

    /// Calls `body` with the type and record data of each answer-section record, in order.
    func eachAnswer(_ body: (UInt16, Range<Int>) -> Void) {
        var offset = questionEnd
        for _ in 0..<Int(counts.answer) {
            guard let end = CachedReply.name(wire, at: offset, end: wire.count) else { return }   // checked in init
            let type = UInt16(wire[end]) << 8 | UInt16(wire[end + 1])
            let rdlength = Int(wire[end + 8]) << 8 | Int(wire[end + 9])
            offset = end + 10 + rdlength
            body(type, (end + 10)..<offset)
        }
    }

    /// The targets of the answer section's CNAME and DNAME records, expanded, in order.
    public var aliasTargets: [[UInt8]] {
        var out: [[UInt8]] = []
        eachAnswer { type, rdata in
            if type == RRType.cname || type == RRType.dname, let name = CachedReply.expandedName(wire, at: rdata.lowerBound) {
                out.append(name)
            }
        }
        return out
    }

    /// The addresses of the answer section's A and AAAA records (4 or 16 bytes each), in order.
    public var answerAddresses: [[UInt8]] {
        var out: [[UInt8]] = []
        eachAnswer { type, rdata in
            if type == RRType.a || type == RRType.aaaa { out.append(Array(wire[rdata])) }
        }
        return out
    }

    /// The bytes with every TTL (OPT aside) passed through `change`: a cached answer aged, or
    /// a stale one served with TTL 30 (RFC 8767).
    public func withTTLs(_ change: (UInt32) -> UInt32) -> [UInt8] {
        var out = wire
        out.withUnsafeMutableBytes { patchTTLs($0, change) }
        return out
    }

    /// The same after each authority-section SOA's TTL is lowered to at most its MINIMUM field
    /// and `cap` (RFC 2308 3, as `Message.capAuthoritySOATTLs` does for an ldns message): a
    /// negative answer relayed without being decoded and encoded again.
    func withTTLs(soaCappedAt cap: UInt32, _ change: (UInt32) -> UInt32) -> [UInt8] {
        var out = wire
        out.withUnsafeMutableBytes { o in
            var offset = questionEnd
            let answerEnd = Int(counts.answer)
            for index in 0..<(answerEnd + Int(counts.authority)) {
                guard let end = CachedReply.name(wire, at: offset, end: wire.count) else { return }   // checked in init
                let type = UInt16(wire[end]) << 8 | UInt16(wire[end + 1])
                offset = end + 10 + (Int(wire[end + 8]) << 8 | Int(wire[end + 9]))
                if index >= answerEnd, type == RRType.soa {
                    let most = min(CachedReply.read32(wire, offset - 4), cap)
                    if CachedReply.read32(wire, end + 4) > most { CachedReply.write32(o, end + 4, most) }
                }
            }
            patchTTLs(o, change)
        }
        return out
    }

    /// Whether a record's TTL (OPT aside) is outside `range`.
    func hasTTL(outside range: ClosedRange<UInt32>) -> Bool {
        ttlOffsets.contains { !range.contains(CachedReply.read32(wire, Int($0))) }
    }

    /// Passes every TTL (OPT aside) of the bytes `o`, laid out as this answer, through `change`.
    private func patchTTLs(_ o: UnsafeMutableRawBufferPointer, _ change: (UInt32) -> UInt32) {
        for t in ttlOffsets {
            let at = Int(t)
            CachedReply.write32(o, at, change(UInt32(o[at]) << 24 | UInt32(o[at + 1]) << 16 | UInt32(o[at + 2]) << 8 | UInt32(o[at + 3])))
        }
    }

    @inline(__always) static func write32(_ o: UnsafeMutableRawBufferPointer, _ at: Int, _ value: UInt32) {
        o[at] = UInt8(value >> 24)
        o[at + 1] = UInt8((value >> 16) & 0xFF)
        o[at + 2] = UInt8((value >> 8) & 0xFF)
        o[at + 3] = UInt8(value & 0xFF)
    }

    /// Compression pointers followed in one name, at most (a name of 255 bytes has at most 127
    /// labels; this also bounds the walk through a chain of pointers to pointers).
    static let maxPointers = 127

    /// The uncompressed name at `start` (compression pointers followed), with its root label;
    /// nil when it runs off the end, loops, or is longer than 255 bytes (RFC 1035 §3.1).
    static func expandedName(_ wire: [UInt8], at start: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var i = start
        var hops = 0
        while i < wire.count {
            let length = Int(wire[i])
            if length == 0 {
                out.append(0)
                return out.count <= 255 ? out : nil
            }
            if length & 0xC0 == 0xC0 {
                guard i + 1 < wire.count, hops < CachedReply.maxPointers else { return nil }
                hops += 1
                i = (length & 0x3F) << 8 | Int(wire[i + 1])
                continue
            }
            guard length <= 63, i + 1 + length <= wire.count, out.count + 1 + length < 255 else { return nil }
            out.append(contentsOf: wire[i...(i + length)])
            i += 1 + length
        }
        return nil
    }

    /// The offset just past a name at `at`, nil unless the name is one ldns reads the same way:
    /// its labels end within `end`, each is at most 63 bytes, the whole name is at most 255
    /// (RFC 1035 §3.1), and every compression pointer points back, past the header, to labels
    /// that end before the pointer (so the walk ends). The header is rewritten when the bytes are
    /// relayed, and the TTL fields (`ttls`) when a cached answer is served: labels reached
    /// through a pointer must lie in neither, or the name would change after it was inspected.
    static func name(_ wire: [UInt8], at: Int, end: Int, ttls: TTLOffsets = TTLOffsets()) -> Int? {
        var i = at
        var limit = end
        var length = 0
        var hops = 0
        var pastName: Int?
        while i < limit {
            let label = Int(wire[i])
            // The bytes this step reads: a root label, a pointer, or a label and its length byte.
            let read = label == 0 ? 1 : label & 0xC0 == 0xC0 ? 2 : 1 + label
            if pastName != nil, ttls.overlaps(i..<(i + read)) { return nil }
            if label == 0 { return pastName ?? i + 1 }
            if label & 0xC0 == 0xC0 {
                guard i + 2 <= limit else { return nil }
                let target = (label & 0x3F) << 8 | Int(wire[i + 1])
                guard target >= Header.size, target < i, hops < CachedReply.maxPointers else { return nil }
                hops += 1
                if pastName == nil { pastName = i + 2 }
                limit = i
                i = target
                continue
            }
            length += 1 + label
            guard label <= 63, length < 255 else { return nil }
            i += 1 + label
        }
        return nil
    }

    /// True when the record data of one of the common types is exactly what its fields take.
    /// ldns reads record data field by field and, for some types, does not stop at RDLENGTH, so
    /// a record with bytes left over parses differently in ldns than by RDLENGTH; relaying such
    /// bytes could hand the client a message that does not decode. Other types (DNSSEC, SVCB,
    /// ...) are not prepared: those answers are encoded by ldns instead.
    static func rdataIsExact(type: UInt16, _ wire: [UInt8], from start: Int, to end: Int,
                             ttls: TTLOffsets = TTLOffsets()) -> Bool {
        func name(_ at: Int) -> Int? { CachedReply.name(wire, at: at, end: end, ttls: ttls) }
        switch type {
        case RRType.a: return end - start == 4
        case RRType.aaaa: return end - start == 16
        case RRType.cname, RRType.dname, 2, 12:               // CNAME, DNAME, NS, PTR
            return name(start) == end
        case 15:                                              // MX
            return end - start > 2 && name(start + 2) == end
        case 33:                                              // SRV
            return end - start > 6 && name(start + 6) == end
        case RRType.soa:
            guard let m = name(start), let r = name(m) else { return false }
            return r + 20 == end
        case 16:                                              // TXT: character-strings
            var i = start
            while i < end { i += 1 + Int(wire[i]) }
            return i == end && end > start
        default:
            return false
        }
    }

    /// Our reply to `q` from this answer, every TTL less `age`: the relay rules of
    /// `ReplyBuilder` (the upstream's sections and rcode; the header flags of
    /// `ReplyBuilder.relayedFlags`; ID and the question as asked; our OPT with the upstream's
    /// extended rcode).
    public func reply(to q: WireQuery, packet: UnsafeRawBufferPointer, age: UInt32, payloadSize: UInt16) -> [UInt8] {
        WireWriter.makeArray(capacity: replyCapacity) { reply(into: &$0, to: q, packet: packet, age: age, payloadSize: payloadSize) }
    }

    /// The same, written by `out` (the send batch's slot on the UDP fast path); `out.written`
    /// is nil when it did not fit, 0 when it is not this answer's question.
    public func reply(into out: inout WireWriter, to q: WireQuery, packet: UnsafeRawBufferPointer, age: UInt32,
                      payloadSize: UInt16) {
        reply(into: &out, id: q.id, flags: q.flags, age: age, edns: q.edns, payloadSize: payloadSize) { out in
            out.append(UnsafeRawBufferPointer(rebasing: packet[12..<(q.nameEnd + 4)]))
        }
    }

    /// The same for a decoded query (a forwarded answer relayed as received).
    public func reply(id: UInt16, flags: UInt16, question: Question, edns: EDNS?, payloadSize: UInt16) -> [UInt8] {
        WireWriter.makeArray(capacity: replyCapacity) {
            reply(into: &$0, id: id, flags: flags, question: question, edns: edns, payloadSize: payloadSize)
        }
    }

    public func reply(into out: inout WireWriter, id: UInt16, flags: UInt16, question: Question, edns: EDNS?,
                      payloadSize: UInt16, clientSubnet: ClientSubnet? = nil) {
        reply(into: &out, id: id, flags: flags, age: 0, edns: edns, payloadSize: payloadSize, clientSubnet: clientSubnet) { out in
            out.append(question.name)
            out.put16(question.type)
            out.put16(question.qclass)
        }
    }

    /// The most a reply made from this answer takes: the upstream's bytes less its OPT, and ours
    /// (with the upstream's Extended DNS Errors).
    var replyCapacity: Int { wire.count - (opt?.count ?? 0) + 11 + extendedErrors.count + 24 }

    private func reply(into out: inout WireWriter, id: UInt16, flags queryFlags: UInt16, age: UInt32, edns: EDNS?,
                       payloadSize: UInt16, clientSubnet: ClientSubnet? = nil, question: (inout WireWriter) -> Void) {
        let start = out.count
        let upstreamFlags = UInt16(wire[2]) << 8 | UInt16(wire[3])
        out.put16(id)
        out.put16(ReplyBuilder.relayedFlags(upstream: upstreamFlags, query: queryFlags, dnssecOK: edns?.dnssecOK ?? false))
        out.put16(1)
        out.put16(counts.answer)
        out.put16(counts.authority)
        out.put16(counts.additional + (edns == nil ? 0 : 1))
        // The question as asked: the same name in the client's letter case, so every compression
        // pointer into it still lands on the same labels.
        question(&out)
        guard out.count - start == questionEnd else {   // not the same question: never served
            out.rewind(to: start)
            return
        }
        // The question has the same length as the upstream's, so every offset still holds.
        out.append(wire[questionEnd..<(opt?.lowerBound ?? wire.count)])
        if age > 0, !out.overflowed {
            out.withWritten(from: start) { patchTTLs($0) { $0 > age ? $0 - age : 0 } }
        }
        if let edns {
            if let clientSubnet {
                FastReply.appendOPT(&out, payloadSize: payloadSize, extendedRcode: extendedRcode,
                                    dnssecOK: edns.dnssecOK, options: extendedErrors + clientSubnet.echo(scope: clientSubnetScope))
            } else {
                FastReply.appendOPT(&out, payloadSize: payloadSize, extendedRcode: extendedRcode,
                                    dnssecOK: edns.dnssecOK, options: extendedErrors)
            }
        }
    }
}
