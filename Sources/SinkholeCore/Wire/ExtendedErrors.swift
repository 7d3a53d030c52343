/// Extended DNS Errors (RFC 8914, option 15) in an upstream's answer: relayed to the client as
/// they came, and read for a validating upstream's verdict.
enum ExtendedErrors {
    static let optionCode: UInt16 = 15
    /// The most bytes of them relayed (options past it are left out).
    static let relayLimit = 300

    /// The EDE options among the OPT options in `bytes[range]` (code, length and data each, RFC
    /// 6891 6.1.2), as they are, up to `relayLimit` bytes; empty when there are none or the
    /// options do not fill the range.
    static func options(_ bytes: [UInt8], in range: Range<Int>) -> [UInt8] {
        guard !range.isEmpty, range.upperBound <= bytes.count,
              OPTCheck.optionsFill(bytes, from: range.lowerBound, to: range.upperBound) else { return [] }
        var out: [UInt8] = []
        var at = range.lowerBound
        while at + 4 <= range.upperBound {
            let code = UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1])
            let end = at + 4 + (Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]))
            if code == optionCode, end - at >= 6, out.count + (end - at) <= relayLimit {
                out.append(contentsOf: bytes[at..<end])
            }
            at = end
        }
        return out
    }

    /// The EDE options among a message's OPT options (`Message.ednsOptions`).
    static func options(_ all: [UInt8]) -> [UInt8] { options(all, in: 0..<all.count) }

    /// The INFO-CODEs of EDE options (`options`' result).
    static func codes(_ options: [UInt8]) -> [UInt16] {
        var codes: [UInt16] = []
        var at = 0
        while at + 6 <= options.count {
            codes.append(UInt16(options[at + 4]) << 8 | UInt16(options[at + 5]))
            at += 4 + (Int(options[at + 2]) << 8 | Int(options[at + 3]))
        }
        return codes
    }

    /// EDE 3, Stale Answer (RFC 8914 4.4), with no text.
    static let staleAnswer: [UInt8] = [0, 15, 0, 2, 0, 3]

    /// `wire` (a reply `CachedReply` laid out, its OPT record at `opt`, last, if any) with
    /// `option` added to its OPT record, or with an OPT record holding it added at the end.
    static func adding(_ option: [UInt8], to wire: [UInt8], opt: Range<Int>?) -> [UInt8] {
        var out = wire
        if let opt, opt.upperBound == wire.count, let end = CachedReply.name(wire, at: opt.lowerBound, end: wire.count),
           end + 10 <= wire.count {
            let length = (Int(wire[end + 8]) << 8 | Int(wire[end + 9])) + option.count
            guard length <= 0xFFFF else { return wire }
            out[end + 8] = UInt8(length >> 8)
            out[end + 9] = UInt8(length & 0xFF)
            out += option
            return out
        }
        guard opt == nil, wire.count >= Header.size else { return wire }
        let count = (Int(wire[10]) << 8 | Int(wire[11])) + 1
        guard count <= 0xFFFF else { return wire }
        out[10] = UInt8(count >> 8)
        out[11] = UInt8(count & 0xFF)
        out += [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, UInt8(option.count >> 8), UInt8(option.count & 0xFF)] + option
        return out
    }

    /// INFO-CODEs by which a validating resolver says the data failed DNSSEC validation: DNSSEC
    /// Bogus, Signature Expired, Signature Not Yet Valid, DNSKEY Missing, RRSIGs Missing, No Zone
    /// Key Bit Set, NSEC Missing (RFC 8914 4.7-4.13). Its SERVFAIL is then a verdict on the data,
    /// not a failure of the resolver.
    static func isValidationFailure(_ code: UInt16) -> Bool { (6...12).contains(code) }
}
