import CLdns

/// What happens to reverse lookups of private and special addresses (`--private-reverse`):
/// names under the zones of RFC 6303 (RFC 1918, loopback, link-local, the documentation
/// ranges, unique-local IPv6, ...) and of 100.64.0.0/10 (RFC 6598). Only a network's own servers
/// know them; a public resolver can only answer NXDOMAIN, and asking it tells the world the
/// addresses the network uses. A forward zone that holds the name always wins.
public enum PrivateReverseMode: String, Sendable, CaseIterable {
    /// To the `--upstream`s that have private or loopback addresses (likely the network's own
    /// resolvers), answered locally when there is none. The default.
    case auto
    /// Always answered here (NXDOMAIN), as Unbound's default local zones and Pi-hole's
    /// "never forward reverse lookups for private IP ranges" answer them.
    case local
    /// To `--upstream` like every other name.
    case forward
}

/// The RFC 6303 zones (and RFC 6598's) and the answer sinkhole gives for them itself.
enum PrivateReverse {
    /// The zones, in lowercase wire form.
    static let zones: [[UInt8]] = {
        var text = ["10.in-addr.arpa", "168.192.in-addr.arpa", "0.in-addr.arpa", "127.in-addr.arpa",
                    "254.169.in-addr.arpa", "2.0.192.in-addr.arpa", "100.51.198.in-addr.arpa",
                    "113.0.203.in-addr.arpa", "255.255.255.255.in-addr.arpa",
                    "d.f.ip6.arpa", "8.e.f.ip6.arpa", "9.e.f.ip6.arpa", "a.e.f.ip6.arpa", "b.e.f.ip6.arpa",
                    "8.b.d.0.1.0.0.2.ip6.arpa"]
        text += (16...31).map { "\($0).172.in-addr.arpa" }
        text += (64...127).map { "\($0).100.in-addr.arpa" }
        // ::/128 and ::1/128: 31 zero nibbles, then 0 or 1.
        let zeros = Array(repeating: "0", count: 31).joined(separator: ".")
        text += ["0.\(zeros).ip6.arpa", "1.\(zeros).ip6.arpa"]
        return text.map { WireName.fromText($0)! }
    }()

    /// Whether the wire-form `name` ends in `arpa.` (any case): the names the zones can hold,
    /// checked before the zones are (a forwarded name pays six byte compares).
    static func mayHold(_ name: [UInt8]) -> Bool {
        let n = name.count
        guard n >= 6, name[n - 1] == 0, name[n - 6] == 4 else { return false }
        return WireName.lower(name[n - 5]) == UInt8(ascii: "a") && WireName.lower(name[n - 4]) == UInt8(ascii: "r")
            && WireName.lower(name[n - 3]) == UInt8(ascii: "p") && WireName.lower(name[n - 2]) == UInt8(ascii: "a")
    }

    /// The routes that find the zone of a name (their upstream lists unused).
    static let routes = ForwardRoutes(zones.map { .init(name: $0, upstreams: []) })

    /// The `from` of an answer sinkhole made for such a name (no upstream's).
    static let origin = SocketAddress(address: [0, 0, 0, 0], port: 0)

    /// NXDOMAIN for a name below a zone; for the zone's own name, its SOA to an SOA query and
    /// NODATA to any other type. The SOA is RFC 6303's (section 3, the values Unbound uses):
    /// `<zone> 10800 SOA <zone> nobody.invalid. 1 3600 1200 604800 10800`. ID 0: the relay
    /// gives it the client's.
    static func answer(for question: Question, zone: [UInt8]) -> UpstreamAnswer? {
        guard let m = Message.empty() else { return nil }
        m.isResponse = true
        m.recursionAvailable = true
        m.setQuestion(question)
        let apex = WireName.lowercased(question.name) == zone
        m.rcode = apex ? Rcode.noError : Rcode.nxDomain
        let rdata: [(ldns_rdf_type, [UInt8])] = [
            (LDNS_RDF_TYPE_DNAME, zone), (LDNS_RDF_TYPE_DNAME, WireName.fromText("nobody.invalid")!),
            (LDNS_RDF_TYPE_INT32, be32(1)), (LDNS_RDF_TYPE_PERIOD, be32(3600)),
            (LDNS_RDF_TYPE_PERIOD, be32(1200)), (LDNS_RDF_TYPE_PERIOD, be32(604_800)),
            (LDNS_RDF_TYPE_PERIOD, be32(10_800)),
        ]
        let section: Message.Section = apex && question.type == RRType.soa ? .answer : .authority
        m.append(section, owner: zone, type: RRType.soa, qclass: RRType.recordClass(asked: question.qclass), ttl: 10_800, rdata: rdata)
        return UpstreamAnswer(message: m)
    }
}
