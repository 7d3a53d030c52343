/// The fixed 12-byte DNS header (RFC 1035 §4.1.1), read straight from wire bytes.
///
/// ldns exposes these fields through function-like macros that Swift cannot import,
/// and the header gate must decide before any allocation, so it is read here in Swift.
public struct Header: Sendable, Equatable {
    public static let size = 12

    public var id: UInt16
    public var flags: UInt16
    public var qdcount: UInt16
    public var ancount: UInt16
    public var nscount: UInt16
    public var arcount: UInt16

    public init(id: UInt16, flags: UInt16, qdcount: UInt16 = 0, ancount: UInt16 = 0, nscount: UInt16 = 0, arcount: UInt16 = 0) {
        self.id = id
        self.flags = flags
        self.qdcount = qdcount
        self.ancount = ancount
        self.nscount = nscount
        self.arcount = arcount
    }

    /// Reads the header; nil when fewer than 12 bytes are given.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Header.size else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        id = u16(0)
        flags = u16(2)
        qdcount = u16(4)
        ancount = u16(6)
        nscount = u16(8)
        arcount = u16(10)
    }

    public init?(_ bytes: [UInt8]) {
        guard let h = bytes.withUnsafeBytes({ Header($0) }) else { return nil }
        self = h
    }

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var opcode: UInt8 { UInt8((flags >> 11) & 0xF) }
    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var checkingDisabled: Bool { flags & 0x0010 != 0 }
    public var rcode: UInt8 { UInt8(flags & 0xF) }

    public var bytes: [UInt8] {
        [UInt8(id >> 8), UInt8(id & 0xFF), UInt8(flags >> 8), UInt8(flags & 0xFF),
         UInt8(qdcount >> 8), UInt8(qdcount & 0xFF), UInt8(ancount >> 8), UInt8(ancount & 0xFF),
         UInt8(nscount >> 8), UInt8(nscount & 0xFF), UInt8(arcount >> 8), UInt8(arcount & 0xFF)]
    }
}

/// DNS opcodes and response codes used by sinkhole (RFC 1035, RFC 6891).
public enum Opcode {
    public static let query: UInt8 = 0
}

public enum Rcode {
    public static let noError: UInt8 = 0
    public static let formErr: UInt8 = 1
    public static let servFail: UInt8 = 2
    public static let nxDomain: UInt8 = 3
    public static let notImp: UInt8 = 4
    public static let refused: UInt8 = 5
    public static let notAuth: UInt8 = 9
    /// BADVERS is 16: 0 in the header and 1 in the OPT record's extended-RCODE field.
    public static let badVers: UInt16 = 16

    /// Mnemonic as written in logs (`NXDOMAIN`), per the IANA registry.
    public static func name(_ code: UInt16) -> String {
        switch code {
        case 0: return "NOERROR"
        case 1: return "FORMERR"
        case 2: return "SERVFAIL"
        case 3: return "NXDOMAIN"
        case 4: return "NOTIMP"
        case 5: return "REFUSED"
        case 16: return "BADVERS"
        default: return "RCODE\(code)"
        }
    }
}
