/// First stage of every query: decides on the 12 raw header bytes alone, before any parsing.
///
/// RFC 1035 and RFC 6895 rules, in this order:
/// - shorter than a header: nothing can be echoed, so the packet is dropped;
/// - QR=1 (a response sent to us): dropped, never answered (answering would enable reflection loops);
/// - opcode other than QUERY: NOTIMP;
/// - QDCOUNT other than 1: FORMERR.
public enum HeaderGate {
    public enum Verdict: Equatable, Sendable {
        /// Silently discard.
        case drop
        /// Answer with a header-only reply carrying this rcode.
        case reject(Header, rcode: UInt8)
        /// Header is acceptable; decode the message.
        case proceed(Header)
    }

    public static func inspect(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        guard let header = Header(bytes) else { return .drop }
        if header.isResponse { return .drop }
        if header.opcode != Opcode.query { return .reject(header, rcode: Rcode.notImp) }
        if header.qdcount != 1 { return .reject(header, rcode: Rcode.formErr) }
        return .proceed(header)
    }

    public static func inspect(_ bytes: [UInt8]) -> Verdict {
        bytes.withUnsafeBytes { inspect($0) }
    }

    /// A header-only reply (no question, no records) to the query whose header is given:
    /// ID, opcode and RD copied, QR and RA set, Z, AA, TC, AD, CD clear.
    public static func headerOnlyReply(to query: Header, rcode: UInt8) -> [UInt8] {
        var flags: UInt16 = 0x8000 | 0x0080        // QR, RA
        flags |= UInt16(query.opcode) << 11
        if query.recursionDesired { flags |= 0x0100 }
        flags |= UInt16(rcode & 0xF)
        return Header(id: query.id, flags: flags).bytes
    }
}
