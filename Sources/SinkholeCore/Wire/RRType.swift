import CLdns
import Glibc

/// Record types and classes sinkhole refers to by number, and their mnemonics from ldns.
public enum RRType {
    public static let a: UInt16 = 1
    public static let ns: UInt16 = 2
    public static let soa: UInt16 = 6
    public static let ptr: UInt16 = 12

    /// The class of records made for a question of class `asked`: ANY (255) and NONE (254) ask,
    /// but no record has them outside dynamic update (RFC 6895 3.2), so IN is answered.
    @inline(__always) public static func recordClass(asked: UInt16) -> UInt16 {
        asked == 255 || asked == 254 ? 1 : asked
    }
    public static let cname: UInt16 = 5
    public static let aaaa: UInt16 = 28
    public static let dname: UInt16 = 39
    public static let opt: UInt16 = 41
    /// Zone transfers (RFC 1995, RFC 5936): refused, a resolver has no zone to give.
    public static let ixfr: UInt16 = 251
    public static let axfr: UInt16 = 252
    public static let classIN: UInt16 = 1
    /// CHAOS: server identification (version.bind, id.server, hostname.bind), never forwarded.
    public static let classCH: UInt16 = 3

    /// Types that are no question a client may ask (FORMERR, as Unbound answers): OPT (RFC 6891
    /// 6.1.1), the meta-type range 128-248 (unassigned, RFC 6895 3.1), TKEY and TSIG
    /// (transaction meta-types), and the obsolete MAILB and MAILA. Zone transfers are questions
    /// (REFUSED, by QueryChain); ANY is forwarded.
    public static func isNeverAsked(_ type: UInt16) -> Bool {
        type == opt || (128...250).contains(type) || type == 253 || type == 254
    }

    /// `A`, `AAAA`, `TYPE65280` (RFC 3597 form for unknown types).
    public static func name(_ type: UInt16) -> String {
        Int(type) < typeNames.count ? typeNames[Int(type)] : ldnsName(type)
    }

    /// The names of types 0-299 (every type in use but TA, DLV and private ones), made once:
    /// ldns makes each name in a buffer of its own (several allocations and a printf), and the
    /// block log writes two names per line.
    private static let typeNames: [String] = (0..<300).map { ldnsName(UInt16($0)) }
    private static let classNames: [String] = (0..<256).map { ldnsClassName(UInt16($0)) }

    static func ldnsName(_ type: UInt16) -> String {
        guard let s = ldns_rr_type2str(ldns_rr_type(rawValue: UInt32(type))) else { return "TYPE\(type)" }
        defer { free(s) }
        return String(cString: s)
    }

    /// The number for a mnemonic (`AAAA` → 28, `TYPE65280` → 65280), nil when unknown.
    public static func value(_ name: String) -> UInt16? {
        let type = ldns_get_rr_type_by_name(name)
        return type.rawValue == 0 ? nil : UInt16(truncatingIfNeeded: type.rawValue)
    }

    /// `IN`, `CH`, `CLASS42`.
    public static func className(_ qclass: UInt16) -> String {
        Int(qclass) < classNames.count ? classNames[Int(qclass)] : ldnsClassName(qclass)
    }

    static func ldnsClassName(_ qclass: UInt16) -> String {
        guard let s = ldns_rr_class2str(ldns_rr_class(rawValue: UInt32(qclass))) else { return "CLASS\(qclass)" }
        defer { free(s) }
        return String(cString: s)
    }
}
