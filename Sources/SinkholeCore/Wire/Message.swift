import CLdns
import Glibc

/// The question of a DNS message: the name exactly as asked (wire format, letter case
/// preserved, ending with the root label), its type and class.
public struct Question: Sendable, Hashable {
    public var name: [UInt8]
    public var type: UInt16
    public var qclass: UInt16

    public init(name: [UInt8], type: UInt16, qclass: UInt16) {
        self.name = name
        self.type = type
        self.qclass = qclass
    }

    /// Same name (ASCII case-insensitively, RFC 4343), type and class.
    public func matches(_ other: Question) -> Bool {
        type == other.type && qclass == other.qclass && WireName.equalIgnoringCase(name, other.name)
    }
}

/// What an OPT pseudo-record (RFC 6891) said.
public struct EDNS: Sendable, Equatable {
    public var udpPayloadSize: UInt16
    public var version: UInt8
    public var extendedRcode: UInt8
    public var dnssecOK: Bool

    public init(udpPayloadSize: UInt16, version: UInt8 = 0, extendedRcode: UInt8 = 0, dnssecOK: Bool = false) {
        self.udpPayloadSize = udpPayloadSize
        self.version = version
        self.extendedRcode = extendedRcode
        self.dnssecOK = dnssecOK
    }
}

/// A DNS message held as an `ldns_pkt`.
///
/// Ownership: the `Message` owns its `ldns_pkt` and frees it (`ldns_pkt_free`, which deep-frees
/// every section) in `deinit`. Records pushed into it are owned by it from then on.
/// A `Message` is used by one thread at a time; it is `Sendable` so that it can be handed over.
public final class Message: @unchecked Sendable {
    let pkt: UnsafeMutablePointer<ldns_pkt>
    private init(owning pkt: UnsafeMutablePointer<ldns_pkt>) {
        self.pkt = pkt
    }

    deinit {
        ldns_pkt_free(pkt)
    }

    /// Decodes wire bytes with `ldns_wire2pkt`; nil when ldns cannot parse them.
    public convenience init?(wire bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count >= Header.size, TSIGPlacement.isValid(bytes) else { return nil }
        var out: UnsafeMutablePointer<ldns_pkt>?
        let status = ldns_wire2pkt(&out, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        guard status == LDNS_STATUS_OK, let pkt = out else {
            if let out { ldns_pkt_free(out) }
            return nil
        }
        self.init(owning: pkt)
    }

    public convenience init?(wire bytes: [UInt8]) {
        guard let pkt = bytes.withUnsafeBytes({ raw -> UnsafeMutablePointer<ldns_pkt>? in
            guard let base = raw.baseAddress, raw.count >= Header.size, TSIGPlacement.isValid(raw) else { return nil }
            var out: UnsafeMutablePointer<ldns_pkt>?
            let status = ldns_wire2pkt(&out, base.assumingMemoryBound(to: UInt8.self), raw.count)
            if status != LDNS_STATUS_OK {
                if let out { ldns_pkt_free(out) }
                return nil
            }
            return out
        }) else { return nil }
        self.init(owning: pkt)
    }

    /// An empty message (all counts zero, no OPT).
    public static func empty() -> Message? {
        guard let pkt = ldns_pkt_new() else { return nil }
        return Message(owning: pkt)
    }

    /// Encodes with `ldns_pkt2wire`. ldns allocates the output; it is copied and freed here.
    public func wire() -> [UInt8]? {
        var buffer: UnsafeMutablePointer<UInt8>?
        var size = 0
        guard ldns_pkt2wire(&buffer, pkt, &size) == LDNS_STATUS_OK, let buffer else { return nil }
        defer { free(buffer) }
        return Array(UnsafeBufferPointer(start: buffer, count: size))
    }

    // MARK: Header fields

    public var id: UInt16 {
        get { ldns_pkt_id(pkt) }
        set { ldns_pkt_set_id(pkt, newValue) }
    }
    public var isResponse: Bool {
        get { ldns_pkt_qr(pkt) }
        set { ldns_pkt_set_qr(pkt, newValue) }
    }
    public var opcode: UInt8 {
        get { UInt8(truncatingIfNeeded: ldns_pkt_get_opcode(pkt).rawValue) }
        set { ldns_pkt_set_opcode(pkt, ldns_pkt_opcode(rawValue: UInt32(newValue))) }
    }
    public var authoritative: Bool {
        get { ldns_pkt_aa(pkt) }
        set { ldns_pkt_set_aa(pkt, newValue) }
    }
    public var truncated: Bool {
        get { ldns_pkt_tc(pkt) }
        set { ldns_pkt_set_tc(pkt, newValue) }
    }
    public var recursionDesired: Bool {
        get { ldns_pkt_rd(pkt) }
        set { ldns_pkt_set_rd(pkt, newValue) }
    }
    public var recursionAvailable: Bool {
        get { ldns_pkt_ra(pkt) }
        set { ldns_pkt_set_ra(pkt, newValue) }
    }
    public var authenticData: Bool {
        get { ldns_pkt_ad(pkt) }
        set { ldns_pkt_set_ad(pkt, newValue) }
    }
    public var checkingDisabled: Bool {
        get { ldns_pkt_cd(pkt) }
        set { ldns_pkt_set_cd(pkt, newValue) }
    }
    /// The 4-bit header RCODE.
    public var rcode: UInt8 {
        get { UInt8(truncatingIfNeeded: ldns_pkt_get_rcode(pkt).rawValue) }
        set { ldns_pkt_set_rcode(pkt, newValue) }
    }

    public var answerCount: Int { Int(ldns_pkt_ancount(pkt)) }
    public var authorityCount: Int { Int(ldns_pkt_nscount(pkt)) }
    public var additionalCount: Int { Int(ldns_pkt_arcount(pkt)) }
    public var questionCount: Int { Int(ldns_pkt_qdcount(pkt)) }

    /// The first question, or nil when there is none.
    public var question: Question? {
        guard let list = ldns_pkt_question(pkt), ldns_rr_list_rr_count(list) > 0,
              let rr = ldns_rr_list_rr(list, 0), let owner = ldns_rr_owner(rr),
              let data = ldns_rdf_data(owner) else { return nil }
        let name = Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(owner)))
        return Question(name: name, type: UInt16(ldns_rr_get_type(rr).rawValue),
                        qclass: UInt16(ldns_rr_get_class(rr).rawValue))
    }

    /// The OPT record's contents, or nil when the message has no OPT record.
    public var edns: EDNS? {
        get {
            guard pkt.pointee._edns_present != 0 || ldns_pkt_edns_udp_size(pkt) > 0 else { return nil }
            return EDNS(udpPayloadSize: ldns_pkt_edns_udp_size(pkt),
                        version: ldns_pkt_edns_version(pkt),
                        extendedRcode: ldns_pkt_edns_extended_rcode(pkt),
                        dnssecOK: ldns_pkt_edns_do(pkt))
        }
        set {
            // Drop whatever OPT data the message carried (options are never echoed).
            dropEDNSOptions()
            pkt.pointee._edns_z = 0
            guard let value = newValue else {
                pkt.pointee._edns_present = 0
                pkt.pointee._edns_udp_size = 0
                pkt.pointee._edns_version = 0
                pkt.pointee._edns_extended_rcode = 0
                return
            }
            pkt.pointee._edns_present = 1
            pkt.pointee._edns_udp_size = value.udpPayloadSize
            pkt.pointee._edns_version = value.version
            pkt.pointee._edns_extended_rcode = value.extendedRcode
            ldns_pkt_set_edns_do(pkt, value.dnssecOK)
        }
    }

    /// Sets the OPT record's options (RFC 6891 §6.1.2: code, length, data, repeated). Call after
    /// setting `edns`, which clears them. The bytes are copied into an rdf the message owns.
    public func setEDNSOptions(_ options: [UInt8]) {
        dropEDNSOptions()
        guard !options.isEmpty else { return }
        pkt.pointee._edns_data = options.withUnsafeBytes {
            ldns_rdf_new_frm_data(LDNS_RDF_TYPE_UNKNOWN, options.count, $0.baseAddress)
        }
    }

    /// Frees the OPT record's options: their bytes, and the parsed list that reading
    /// `ednsOptions` leaves, which ldns writes in preference to the bytes (options set after a
    /// read were lost: a stale answer's EDE 3).
    private func dropEDNSOptions() {
        if let data = pkt.pointee._edns_data { ldns_rdf_deep_free(data) }
        pkt.pointee._edns_data = nil
        if let list = pkt.pointee._edns_list { ldns_edns_option_list_deep_free(list) }
        pkt.pointee._edns_list = nil
    }

    /// The OPT record's raw options, empty when there are none.
    public var ednsOptions: [UInt8] {
        if let list = ldns_pkt_edns_get_option_list(pkt), let buffer = ldns_edns_option_list2wireformat_buffer(list) {
            defer { ldns_buffer_free(buffer) }
            return Array(UnsafeBufferPointer(start: ldns_buffer_begin(buffer), count: max(ldns_buffer_position(buffer), ldns_buffer_limit(buffer))))
        }
        guard let data = pkt.pointee._edns_data, let bytes = ldns_rdf_data(data) else { return [] }
        return Array(UnsafeBufferPointer(start: bytes, count: ldns_rdf_size(data)))
    }

    /// Sets the question section to a single question. The record is created here and owned by the message.
    public func setQuestion(_ q: Question) {
        guard let rr = ldns_rr_new(), let owner = Message.dnameRdf(q.name) else { return }
        ldns_rr_set_owner(rr, owner)
        ldns_rr_set_type(rr, ldns_rr_type(rawValue: UInt32(q.type)))
        ldns_rr_set_class(rr, ldns_rr_class(rawValue: UInt32(q.qclass)))
        ldns_rr_set_question(rr, true)
        if let old = ldns_pkt_question(pkt) { ldns_rr_list_deep_free(old) }
        let list = ldns_rr_list_new()
        ldns_rr_list_push_rr(list, rr)
        ldns_pkt_set_question(pkt, list)
        ldns_pkt_set_qdcount(pkt, 1)
    }

    /// Removes the records whose owner name (wire form, as ldns holds it) `drop` picks, from
    /// every section; returns how many went.
    @discardableResult
    public func removeRecords(where drop: ([UInt8]) -> Bool) -> Int {
        var removed = 0
        for section in [Section.answer, .authority, .additional] {
            guard let old = list(section) else { continue }
            let kept = ldns_rr_list_new()
            for i in 0..<ldns_rr_list_rr_count(old) {
                guard let rr = ldns_rr_list_rr(old, i) else { continue }
                var owner: [UInt8] = []
                if let o = ldns_rr_owner(rr), let d = ldns_rdf_data(o) {
                    owner = Array(UnsafeBufferPointer(start: d, count: ldns_rdf_size(o)))
                }
                if drop(owner) {
                    removed += 1
                } else if let copy = ldns_rr_clone(rr) {
                    ldns_rr_list_push_rr(kept, copy)
                }
            }
            let count = UInt16(ldns_rr_list_rr_count(kept))
            ldns_rr_list_deep_free(old)
            switch section {
            case .answer: ldns_pkt_set_answer(pkt, kept); ldns_pkt_set_ancount(pkt, count)
            case .authority: ldns_pkt_set_authority(pkt, kept); ldns_pkt_set_nscount(pkt, count)
            case .additional: ldns_pkt_set_additional(pkt, kept); ldns_pkt_set_arcount(pkt, count)
            }
        }
        return removed
    }

    /// This message's answer section followed by `other`'s, and `other`'s authority section in
    /// place of this one's (the additional section emptied): a CNAME chain joined to the answer
    /// for its target, asked elsewhere. The rcode becomes `other`'s.
    public func join(answerOf other: Message) {
        guard let mine = list(.answer), let theirs = other.list(.answer) else { return }
        for i in 0..<ldns_rr_list_rr_count(theirs) {
            if let rr = ldns_rr_list_rr(theirs, i), let copy = ldns_rr_clone(rr) { ldns_rr_list_push_rr(mine, copy) }
        }
        ldns_pkt_set_ancount(pkt, UInt16(ldns_rr_list_rr_count(mine)))
        clear([.authority, .additional])
        if let authority = list(.authority), let source = other.list(.authority) {
            for i in 0..<ldns_rr_list_rr_count(source) {
                if let rr = ldns_rr_list_rr(source, i), let copy = ldns_rr_clone(rr) { ldns_rr_list_push_rr(authority, copy) }
            }
            ldns_pkt_set_nscount(pkt, UInt16(ldns_rr_list_rr_count(authority)))
        }
        rcode = other.rcode
    }

    /// Removes every record from the answer, authority and additional sections.
    public func clearRecords() {
        clear([.answer, .authority, .additional])
    }

    /// Removes every record from these sections (the OPT record, kept apart by ldns, stays).
    public func clear(_ sections: [Section]) {
        for section in sections {
            let fresh = ldns_rr_list_new()
            switch section {
            case .answer:
                if let old = ldns_pkt_answer(pkt) { ldns_rr_list_deep_free(old) }
                ldns_pkt_set_answer(pkt, fresh)
                ldns_pkt_set_ancount(pkt, 0)
            case .authority:
                if let old = ldns_pkt_authority(pkt) { ldns_rr_list_deep_free(old) }
                ldns_pkt_set_authority(pkt, fresh)
                ldns_pkt_set_nscount(pkt, 0)
            case .additional:
                if let old = ldns_pkt_additional(pkt) { ldns_rr_list_deep_free(old) }
                ldns_pkt_set_additional(pkt, fresh)
                ldns_pkt_set_arcount(pkt, 0)
            }
        }
    }

    public enum Section { case answer, authority, additional }

    /// Appends a record built from its parts. `rdata` is a list of (ldns rdf type, wire bytes).
    public func append(_ section: Section, owner: [UInt8], type: UInt16, qclass: UInt16, ttl: UInt32,
                       rdata: [(ldns_rdf_type, [UInt8])]) {
        guard let rr = ldns_rr_new(), let ownerRdf = Message.dnameRdf(owner) else { return }
        ldns_rr_set_owner(rr, ownerRdf)
        ldns_rr_set_type(rr, ldns_rr_type(rawValue: UInt32(type)))
        ldns_rr_set_class(rr, ldns_rr_class(rawValue: UInt32(qclass)))
        ldns_rr_set_ttl(rr, ttl)
        for (kind, bytes) in rdata {
            let rdf = bytes.withUnsafeBytes { ldns_rdf_new_frm_data(kind, bytes.count, $0.baseAddress) }
            if let rdf { ldns_rr_push_rdf(rr, rdf) }
        }
        let ldnsSection: ldns_pkt_section
        switch section {
        case .answer: ldnsSection = LDNS_SECTION_ANSWER
        case .authority: ldnsSection = LDNS_SECTION_AUTHORITY
        case .additional: ldnsSection = LDNS_SECTION_ADDITIONAL
        }
        if !ldns_pkt_push_rr(pkt, ldnsSection, rr) { ldns_rr_free(rr) }
    }

    /// Sets the TSIG record, which ldns writes after every other record (RFC 8945 5.1: it is
    /// last, after the OPT).
    public func setTSIG(owner: [UInt8], rdata: [(ldns_rdf_type, [UInt8])]) {
        guard let rr = ldns_rr_new(), let ownerRdf = Message.dnameRdf(owner) else { return }
        ldns_rr_set_owner(rr, ownerRdf)
        ldns_rr_set_type(rr, LDNS_RR_TYPE_TSIG)
        ldns_rr_set_class(rr, LDNS_RR_CLASS_ANY)
        ldns_rr_set_ttl(rr, 0)
        for (kind, bytes) in rdata {
            let rdf = bytes.withUnsafeBytes { ldns_rdf_new_frm_data(kind, bytes.count, $0.baseAddress) }
            if let rdf { ldns_rr_push_rdf(rr, rdf) }
        }
        if let old = ldns_pkt_tsig(pkt) { ldns_rr_free(old) }
        ldns_pkt_set_tsig(pkt, rr)
    }

    /// Appends a record given in presentation format (`example.org. 300 IN A 192.0.2.1`),
    /// parsed by `ldns_rr_new_frm_str`. Returns false when ldns cannot parse it. For fixtures and
    /// test upstreams; the query path never parses text.
    @discardableResult
    public func append(_ section: Section, presentation: String) -> Bool {
        var rr: UnsafeMutablePointer<ldns_rr>?
        guard ldns_rr_new_frm_str(&rr, presentation, 3600, nil, nil) == LDNS_STATUS_OK, let rr else { return false }
        let ldnsSection: ldns_pkt_section
        switch section {
        case .answer: ldnsSection = LDNS_SECTION_ANSWER
        case .authority: ldnsSection = LDNS_SECTION_AUTHORITY
        case .additional: ldnsSection = LDNS_SECTION_ADDITIONAL
        }
        if !ldns_pkt_push_rr(pkt, ldnsSection, rr) {
            ldns_rr_free(rr)
            return false
        }
        return true
    }

    /// Each record of a section in presentation format (ldns_rr2str), without the trailing newline.
    public func presentation(_ section: Section) -> [String] {
        guard let list = list(section) else { return [] }
        var out: [String] = []
        for i in 0..<ldns_rr_list_rr_count(list) {
            guard let rr = ldns_rr_list_rr(list, i), let s = ldns_rr2str(rr) else { continue }
            var text = String(cString: s)
            free(s)
            while text.hasSuffix("\n") || text.hasSuffix("\t") { text.removeLast() }
            out.append(text)
        }
        return out
    }

    /// A new ldns dname rdf holding a copy of wire-format name bytes; the caller owns it.
    static func dnameRdf(_ wire: [UInt8]) -> UnsafeMutablePointer<ldns_rdf>? {
        wire.withUnsafeBytes { ldns_dname_new_frm_data(UInt16(wire.count), $0.baseAddress) }
    }

    /// Lowers every record's TTL (all sections) by `seconds`, never below zero: what a cache does
    /// to an answer it serves (RFC 1035 §7.4: TTLs count down).
    public func ageTTLs(by seconds: UInt32) {
        eachRecord { rr in
            let ttl = ldns_rr_ttl(rr)
            ldns_rr_set_ttl(rr, ttl > seconds ? ttl - seconds : 0)
        }
    }

    /// Lowers the TTL of each SOA record in the authority section to at most its MINIMUM field
    /// (and `cap`):
    /// a negative answer's SOA is served with min(SOA TTL, MINIMUM) (RFC 2308 3), the time the
    /// negative answer may be kept. Returns whether one changed.
    @discardableResult
    public func capAuthoritySOATTLs(at cap: UInt32 = .max) -> Bool {
        guard let list = list(.authority) else { return false }
        var any = false
        for i in 0..<ldns_rr_list_rr_count(list) {
            guard let rr = ldns_rr_list_rr(list, i), ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA, ldns_rr_rd_count(rr) == 7,
                  let minimumField = ldns_rr_rdf(rr, 6), ldns_rdf_size(minimumField) == 4, let d = ldns_rdf_data(minimumField) else { continue }
            let minimum = UInt32(d[0]) << 24 | UInt32(d[1]) << 16 | UInt32(d[2]) << 8 | UInt32(d[3])
            let most = min(minimum, cap)
            if ldns_rr_ttl(rr) > most {
                ldns_rr_set_ttl(rr, most)
                any = true
            }
        }
        return any
    }

    /// Passes every TTL (OPT aside) through `change`, as `CachedReply.withTTLs` does for the
    /// answers it lays out; returns whether one changed.
    @discardableResult
    public func changeTTLs(_ change: (UInt32) -> UInt32) -> Bool {
        var any = false
        eachRecord { rr in
            let ttl = ldns_rr_ttl(rr), new = change(ttl)
            if new != ttl {
                ldns_rr_set_ttl(rr, new)
                any = true
            }
        }
        return any
    }

    /// Calls `body` with every record of the answer, authority and additional sections.
    private func eachRecord(_ body: (UnsafeMutablePointer<ldns_rr>) -> Void) {
        for section in [Section.answer, .authority, .additional] {
            guard let list = list(section) else { continue }
            for i in 0..<ldns_rr_list_rr_count(list) {
                if let rr = ldns_rr_list_rr(list, i) { body(rr) }
            }
        }
    }

    private func list(_ section: Section) -> UnsafeMutablePointer<ldns_rr_list>? {
        switch section {
        case .answer: return ldns_pkt_answer(pkt)
        case .authority: return ldns_pkt_authority(pkt)
        case .additional: return ldns_pkt_additional(pkt)
        }
    }

    /// Sets every record's TTL to at least `seconds` (a stale answer is served with TTL 30, RFC 8767).
    public func raiseTTLs(to seconds: UInt32) {
        eachRecord { rr in
            if ldns_rr_ttl(rr) < seconds { ldns_rr_set_ttl(rr, seconds) }
        }
    }

    /// Each record of a section as (owner, type, rdata bytes concatenated), for inspection and tests.
    public func records(_ section: Section) -> [(owner: [UInt8], type: UInt16, ttl: UInt32, rdata: [UInt8])] {
        guard let list = list(section) else { return [] }
        var out: [(owner: [UInt8], type: UInt16, ttl: UInt32, rdata: [UInt8])] = []
        for i in 0..<ldns_rr_list_rr_count(list) {
            guard let rr = ldns_rr_list_rr(list, i) else { continue }
            var owner: [UInt8] = []
            if let o = ldns_rr_owner(rr), let d = ldns_rdf_data(o) {
                owner = Array(UnsafeBufferPointer(start: d, count: ldns_rdf_size(o)))
            }
            var rdata: [UInt8] = []
            for j in 0..<ldns_rr_rd_count(rr) {
                if let f = ldns_rr_rdf(rr, j), let d = ldns_rdf_data(f) {
                    rdata += UnsafeBufferPointer(start: d, count: ldns_rdf_size(f))
                }
            }
            out.append((owner, UInt16(ldns_rr_get_type(rr).rawValue), ldns_rr_ttl(rr), rdata))
        }
        return out
    }

    /// Presentation text of the whole message (ldns_pkt2str), for debugging and tests.
    public var text: String {
        guard let s = ldns_pkt2str(pkt) else { return "" }
        defer { free(s) }
        return String(cString: s)
    }
}
