/// A plain query read straight from its bytes, without ldns: the common case that the fast path
/// (blocked names and cache hits) answers without decoding a `Message`.
///
/// Only the simplest well-formed shape is accepted: one question with an uncompressed name, no
/// answer or authority records, and at most one additional record, which must be an EDNS
/// version 0 OPT with the root owner and well-formed options, and nothing after it. Anything
/// else (including every malformed packet) returns nil and takes the full path, which decodes
/// with ldns and applies every rule; so the fast path never decides anything the full path would
/// decide differently.
public struct WireQuery: Sendable, Equatable {
    public var id: UInt16
    public var flags: UInt16
    /// Offset just past the question name's root label; the question is bytes 12 ..< nameEnd + 4.
    public var nameEnd: Int
    public var qtype: UInt16
    public var qclass: UInt16
    /// The client's OPT record (version 0), nil without one.
    public var edns: EDNS?
    /// Where the OPT record's options are in the packet (empty without any).
    public var options: Range<Int> = 0..<0
    /// True when the OPT record carried any option (ECS, cookies, ...).
    public var hasOptions: Bool { !options.isEmpty }

    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var checkingDisabled: Bool { flags & 0x0010 != 0 }

    public static func parse(_ b: UnsafeRawBufferPointer) -> WireQuery? {
        let n = b.count
        guard n >= 17 else { return nil }
        @inline(__always) func u16(_ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
        let flags = u16(2)
        // QR=0, opcode QUERY; one question, no answer or authority records, at most one more.
        guard flags & 0xF800 == 0, u16(4) == 1, u16(6) == 0, u16(8) == 0 else { return nil }
        let arcount = u16(10)
        guard arcount <= 1 else { return nil }
        var i = 12
        while true {
            guard i < n else { return nil }
            let length = Int(b[i])
            if length == 0 { break }
            guard length <= 63 else { return nil }   // compression or an extended label type
            i += 1 + length
            guard i - 12 < 255 else { return nil }
        }
        let nameEnd = i + 1
        guard nameEnd + 4 <= n else { return nil }
        let qtype = u16(nameEnd), qclass = u16(nameEnd + 2)
        // OPT as a question, zone transfers, and the other meta types: the full path.
        guard qtype != RRType.opt, !(128...254).contains(qtype) else { return nil }
        var end = nameEnd + 4
        var edns: EDNS?
        var options = 0..<0
        if arcount == 1 {
            // Root owner, type OPT, class = payload size, TTL = extended rcode, version, flags.
            guard end + 11 <= n, b[end] == 0, u16(end + 1) == RRType.opt else { return nil }
            let version = b[end + 6]
            guard version == 0 else { return nil }   // BADVERS is the full path's answer
            let dnssecOK = b[end + 7] & 0x80 != 0
            let rdlength = Int(u16(end + 9))
            let optEnd = end + 11 + rdlength
            guard optEnd <= n, OPTCheck.optionsFill(b, from: end + 11, to: optEnd) else { return nil }
            options = end + 11..<optEnd
            edns = EDNS(udpPayloadSize: u16(end + 3), version: 0, extendedRcode: b[end + 5], dnssecOK: dnssecOK)
            end = optEnd
        }
        guard end == n else { return nil }   // trailing bytes: the full path decides
        return WireQuery(id: u16(0), flags: flags, nameEnd: nameEnd, qtype: qtype, qclass: qclass,
                         edns: edns, options: options)
    }

    public static func parse(_ bytes: [UInt8]) -> WireQuery? {
        bytes.withUnsafeBytes { parse($0) }
    }
}

/// Reply bytes built without ldns for the fast path. Each follows the same rules as
/// `ReplyBuilder` (checked against it by tests): ID, opcode 0, RD and CD copied, the question
/// exactly as asked, QR and RA set, one OPT (version 0, our payload size, the client's DO bit)
/// when the query had one.
public enum FastReply {
    /// The reply to a blocked query: NXDOMAIN or NODATA with the SOA of the listed zone in the
    /// authority section, or the sinkhole / local-data addresses; AA set; the Extended DNS Error
    /// naming the list and rule when the client speaks EDNS.
    public static func block(_ q: WireQuery, packet: UnsafeRawBufferPointer, answer: BlockAnswer,
                             payloadSize: UInt16) -> [UInt8] {
        WireWriter.makeArray(capacity: blockCapacity(q, answer: answer)) {
            block(into: &$0, q, packet: packet, answer: answer, payloadSize: payloadSize)
        }
    }

    /// The most `block` writes for `q` and `answer`: header and question, the address records or
    /// the SOA (its owner in full at most), and the OPT with the Extended DNS Error.
    static func blockCapacity(_ q: WireQuery, answer: BlockAnswer) -> Int {
        let records = answer.addresses.isEmpty
            ? answer.match.zoneBytes.count + 10 + soaNames.count + 20
            : answer.addresses.reduce(0) { $0 + 12 + $1.count }
        let opt = q.edns == nil ? 0 : 11 + ReplyBuilder.extendedError(for: answer).count
        return q.nameEnd + 4 + records + opt
    }

    /// The same, written by `out` (the send batch's slot on the UDP fast path).
    public static func block(into out: inout WireWriter, _ q: WireQuery, packet: UnsafeRawBufferPointer,
                             answer: BlockAnswer, payloadSize: UInt16) {
        blockHeader(&out, q, packet: packet, rcode: answer.rcode, answers: answer.addresses.count)
        if answer.addresses.isEmpty {
            appendName(&out, answer.match.zoneBytes, question: packet, nameEnd: q.nameEnd)
            blockSOA(&out, q, ttl: answer.ttl)
        } else {
            for address in answer.addresses { blockAddress(&out, q, address, ttl: answer.ttl) }
        }
        if let edns = q.edns {
            appendOPT(&out, payloadSize: payloadSize, extendedRcode: 0, dnssecOK: edns.dnssecOK,
                      options: ReplyBuilder.extendedError(for: answer))
        }
    }

    /// The same for a name listed as a suffix of the question name, at `zoneOffset` in the
    /// packet, made with nothing copied out of the query first (no `BlockAnswer`): `address` is
    /// the sinkhole address answered, or nil for a negative answer; `rule` writes the rule's
    /// text for the Extended DNS Error.
    static func block(into out: inout WireWriter, _ q: WireQuery, packet: UnsafeRawBufferPointer, rcode: UInt8,
                      address: [UInt8]?, ttl: UInt32, zoneOffset: Int, list: String, payloadSize: UInt16,
                      rule: (inout TruncatingText) -> Void) {
        blockHeader(&out, q, packet: packet, rcode: rcode, answers: address == nil ? 0 : 1)
        if let address {
            blockAddress(&out, q, address, ttl: ttl)
        } else {
            out.put16(0xC000 | UInt16(zoneOffset))   // the listed zone, within the question name
            blockSOA(&out, q, ttl: ttl)
        }
        if let edns = q.edns {
            appendOPT(&out, payloadSize: payloadSize, extendedRcode: 0, dnssecOK: edns.dnssecOK) {
                ReplyBuilder.writeExtendedError(&$0, responseBased: false, list: list, rule: rule)
            }
        }
    }

    /// A block reply's header and question: QR, AA and RA set, RD and CD copied, one SOA in the
    /// authority section when no address is answered, one OPT when the query had one.
    private static func blockHeader(_ out: inout WireWriter, _ q: WireQuery, packet: UnsafeRawBufferPointer,
                                    rcode: UInt8, answers: Int) {
        var flags: UInt16 = 0x8000 | 0x0400 | 0x0080 | UInt16(rcode & 0xF)   // QR, AA, RA
        flags |= q.flags & 0x0110                                            // RD, CD
        out.put16(q.id)
        out.put16(flags)
        out.put16(1)
        out.put16(UInt16(answers))
        out.put16(answers == 0 ? 1 : 0)
        out.put16(q.edns == nil ? 0 : 1)
        out.append(UnsafeRawBufferPointer(rebasing: packet[12..<(q.nameEnd + 4)]))
    }

    private static func blockAddress(_ out: inout WireWriter, _ q: WireQuery, _ address: [UInt8], ttl: UInt32) {
        out.put16(0xC00C)   // the question name
        out.put16(q.qtype)
        out.put16(RRType.recordClass(asked: q.qclass))
        out.put32(ttl)
        out.put16(UInt16(address.count))
        out.append(address)
    }

    /// The block SOA after its owner name.
    private static func blockSOA(_ out: inout WireWriter, _ q: WireQuery, ttl: UInt32) {
        out.put16(RRType.soa)
        out.put16(RRType.recordClass(asked: q.qclass))
        out.put32(ttl)
        out.put16(UInt16(FastReply.soaNames.count + 20))
        out.append(FastReply.soaNames)
        out.put32(1)
        out.put32(3600)
        out.put32(600)
        out.put32(86_400)
        out.put32(ttl)
    }

    /// The block SOA's MNAME and RNAME, uncompressed.
    static let soaNames = ReplyBuilder.soaMname + ReplyBuilder.soaRname

    /// `name` (lowercase wire form) as a pointer into the question when it is a suffix of the
    /// question name (the listed zone always is, for a name-based block), else in full.
    static func appendName(_ out: inout WireWriter, _ name: ArraySlice<UInt8>, question packet: UnsafeRawBufferPointer, nameEnd: Int) {
        var i = 12
        while i < nameEnd - 1 {
            if nameEnd - i == name.count, equalIgnoringCase(packet, from: i, name) {
                out.put16(0xC000 | UInt16(i))
                return
            }
            i += 1 + Int(packet[i])
        }
        out.append(name)
    }

    static func equalIgnoringCase(_ packet: UnsafeRawBufferPointer, from start: Int, _ name: ArraySlice<UInt8>) -> Bool {
        for (k, byte) in name.enumerated() where WireName.lower(packet[start + k]) != WireName.lower(byte) { return false }
        return true
    }

    static func appendOPT(_ out: inout WireWriter, payloadSize: UInt16, extendedRcode: UInt8, dnssecOK: Bool, options: [UInt8]) {
        appendOPT(&out, payloadSize: payloadSize, extendedRcode: extendedRcode, dnssecOK: dnssecOK) { $0.append(options) }
    }

    /// The same with the options written by `options` (RDLENGTH filled in after).
    static func appendOPT(_ out: inout WireWriter, payloadSize: UInt16, extendedRcode: UInt8, dnssecOK: Bool,
                          options: (inout WireWriter) -> Void) {
        out.put8(0)
        out.put16(RRType.opt)
        out.put16(payloadSize)
        out.put8(extendedRcode)
        out.put8(0)
        out.put8(dnssecOK ? 0x80 : 0)
        out.put8(0)
        let lengthAt = out.count
        out.put16(0)
        options(&out)
        let length = UInt16(clamping: out.count - lengthAt - 2)
        out.withWritten(from: lengthAt) { field in
            guard field.count >= 2 else { return }
            field[0] = UInt8(length >> 8)
            field[1] = UInt8(length & 0xFF)
        }
    }
}
