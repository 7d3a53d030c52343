/// RFC 6891 §6.1.1 checks on the OPT records of a message ldns has already parsed: at most one
/// OPT, only with the root name as owner, and options that fill its data exactly (§6.1.2: each
/// a code, a length and that many bytes). ldns keeps just one OPT and does not look at its
/// owner, so the raw bytes are walked here (a well-formed message, so the walk is simple).
public enum OPTCheck {
    /// False when the message carries more than one OPT record, one whose owner is not the root,
    /// or one whose options run past (or stop short of) its data.
    public static func isValid(_ bytes: [UInt8]) -> Bool {
        guard let header = Header(bytes) else { return false }
        var offset = Header.size
        for _ in 0..<header.qdcount {
            guard let end = skipName(bytes, offset) else { return false }
            offset = end + 4
        }
        let records = Int(header.ancount) + Int(header.nscount) + Int(header.arcount)
        var opts = 0
        for index in 0..<records {
            let ownerStart = offset
            guard let end = skipName(bytes, offset), end + 10 <= bytes.count else { return false }
            let type = UInt16(bytes[end]) << 8 | UInt16(bytes[end + 1])
            let rdlength = Int(bytes[end + 8]) << 8 | Int(bytes[end + 9])
            if type == RRType.opt {
                opts += 1
                let inAdditional = index >= Int(header.ancount) + Int(header.nscount)
                if opts > 1 || !inAdditional || bytes[ownerStart] != 0 { return false }
                let dataEnd = end + 10 + rdlength
                guard dataEnd <= bytes.count else { return false }
                // Options are read as version 0 lays them out; a later version's may differ,
                // and its query gets BADVERS (RFC 6891 6.1.3), not FORMERR.
                if bytes[end + 5] == 0, !optionsFill(bytes, from: end + 10, to: dataEnd) { return false }
            }
            offset = end + 10 + rdlength
            guard offset <= bytes.count else { return false }
        }
        return true
    }

    /// Whether the OPT options in `bytes[start..<end]` (each a code, a length and that many
    /// bytes, RFC 6891 §6.1.2) fill it exactly. `end` must be within `bytes`.
    static func optionsFill<B: RandomAccessCollection>(_ bytes: B, from start: Int, to end: Int) -> Bool
        where B.Element == UInt8, B.Index == Int {
        var option = start
        while option < end {
            guard option + 4 <= end else { return false }
            option += 4 + (Int(bytes[option + 2]) << 8 | Int(bytes[option + 3]))
        }
        return option == end
    }

    /// The offset just past a (possibly compressed) name starting at `offset`.
    static func skipName<B: RandomAccessCollection>(_ bytes: B, _ start: Int) -> Int? where B.Element == UInt8, B.Index == Int {
        var offset = start
        while offset < bytes.count {
            let length = bytes[offset]
            if length == 0 { return offset + 1 }
            if length & 0xC0 == 0xC0 { return offset + 2 <= bytes.count ? offset + 2 : nil }
            if length & 0xC0 != 0 { return nil }
            offset += 1 + Int(length)
        }
        return nil
    }
}

/// RFC 8945 §5.1 (and §4.2): a TSIG record must be the last record of the additional section, and
/// there is at most one. ldns keeps only the last of several and moves one it finds elsewhere to
/// the end, so its re-encoding of such a message is not the message (and may not decode again);
/// such messages are refused before ldns sees them (a query gets FORMERR, as the RFC asks).
public enum TSIGPlacement {
    public static let tsig: UInt16 = 250

    /// False when a TSIG record is anywhere but last, or there are several. A message too short
    /// to walk is left to the decoder, which rejects it.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= Header.size else { return true }
        func count(_ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }
        var offset = Header.size
        for _ in 0..<count(4) {
            guard let end = OPTCheck.skipName(bytes, offset) else { return true }
            offset = end + 4
        }
        let records = count(6) + count(8) + count(10)
        for index in 0..<records {
            guard let end = OPTCheck.skipName(bytes, offset), end + 10 <= bytes.count else { return true }
            if count(end) == Int(tsig) && (index != records - 1 || count(10) == 0) { return false }
            offset = end + 10 + count(end + 8)
        }
        return true
    }

    /// The TSIG record that ends a message (its placement already checked): the key name, the
    /// algorithm name, and the time signed and fudge (8 bytes). Nil when there is none or it
    /// cannot be read.
    public static func last(_ bytes: [UInt8]) -> (key: [UInt8], algorithm: [UInt8], timeAndFudge: [UInt8])? {
        guard let header = Header(bytes), header.arcount > 0 else { return nil }
        var offset = Header.size
        for _ in 0..<header.qdcount {
            guard let end = OPTCheck.skipName(bytes, offset) else { return nil }
            offset = end + 4
        }
        let records = Int(header.ancount) + Int(header.nscount) + Int(header.arcount)
        for index in 0..<records {
            let owner = offset
            guard let end = OPTCheck.skipName(bytes, offset), end + 10 <= bytes.count else { return nil }
            let type = UInt16(bytes[end]) << 8 | UInt16(bytes[end + 1])
            let rdlength = Int(bytes[end + 8]) << 8 | Int(bytes[end + 9])
            offset = end + 10 + rdlength
            guard offset <= bytes.count else { return nil }
            guard index == records - 1, type == tsig else { continue }
            let data = end + 10
            guard let key = CachedReply.expandedName(bytes, at: owner),
                  let algorithm = CachedReply.expandedName(bytes, at: data),
                  let algorithmEnd = OPTCheck.skipName(bytes, data), algorithmEnd + 8 <= offset else { return nil }
            return (key, algorithm, Array(bytes[algorithmEnd..<(algorithmEnd + 8)]))
        }
        return nil
    }
}
