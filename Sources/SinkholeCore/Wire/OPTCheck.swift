/// RFC 6891 §6.1.1 checks on the OPT records of a message ldns has already parsed: at most one
/// OPT, and only with the root name as owner. ldns keeps just one OPT and does not look at its
/// owner, so the raw bytes are walked here (a well-formed message, so the walk is simple).
public enum OPTCheck {
    /// False when the message carries more than one OPT record, or one whose owner is not the root.
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
            }
            offset = end + 10 + rdlength
            guard offset <= bytes.count else { return false }
        }
        return true
    }

    /// The offset just past a (possibly compressed) name starting at `offset`.
    static func skipName(_ bytes: [UInt8], _ start: Int) -> Int? {
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
