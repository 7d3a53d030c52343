import CLdns

/// What happens to reverse lookups of private and special addresses (`--private-reverse`):
/// names under the zones of RFC 6303 (RFC 1918, loopback, link-local, the documentation
/// ranges, unique-local IPv6, ...) and of 100.64.0.0/10 (RFC 6598). Only a network's own servers
/// know them; a public resolver can only answer NXDOMAIN, and asking it tells the world the
/// addresses the network uses. A forward zone that holds the name always wins.
public enum PrivateReverseMode: String, Sendable, CaseIterable {
    /// To the `--upstream`s that have private addresses (likely the network's own resolvers;
    /// not loopback), answered locally when there is none. The default.
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

    /// The private ranges of the default access list (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// 169.254/16, fc00::/7, fe80::/10) and not loopback.
    private static let privateRanges = try? AccessPolicy(allow: defaultPrivate, deny: [])
    static let defaultPrivate = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
                                 "fc00::/7", "fe80::/10"]

    /// Whether an upstream at `address` is taken for one of the network's own resolvers by
    /// `auto`: a private address, an IPv4-mapped one read as its IPv4 address. Not loopback:
    /// what listens there is most often a local proxy to a public resolver (cloudflared,
    /// dnscrypt-proxy, stubby), which would pass the lookups on; a local Unbound answers them
    /// itself as sinkhole then does. (systemd-resolved may pass them to a LAN server that knows
    /// them: the README says how to send them there.)
    static func isNetworksOwn(_ address: [UInt8]) -> Bool {
        privateRanges?.allows(IPAddress.unmapped(address)) ?? false
    }

    /// The routes that find the zone of a name (their upstream lists unused).
    static let routes = ForwardRoutes(zones.map { .init(name: $0, upstreams: []) })

    /// The `from` of an answer sinkhole made for such a name (no upstream's).
    static let origin = SocketAddress(address: [0, 0, 0, 0], port: 0)

    /// NXDOMAIN for a name below a zone; for the zone's own name, its SOA or NS to a query of
    /// that type and NODATA to any other; `localhost.` for the PTR of 127.0.0.1 and ::1 (RFC
    /// 6761 6.3). The SOA and NS are RFC 6303's (section 3): `<zone> 10800 SOA <zone>
    /// nobody.invalid. 1 3600 1200 604800 10800` and `<zone> NS <zone>`. ID 0: the relay gives
    /// it the client's.
    static func answer(for question: Question, zone: [UInt8]) -> UpstreamAnswer? {
        guard let m = Message.empty() else { return nil }
        m.isResponse = true
        m.recursionAvailable = true
        m.setQuestion(question)
        let name = WireName.lowercased(question.name)
        let apex = name == zone
        let recordClass = RRType.recordClass(asked: question.qclass)
        if question.type == RRType.ptr, name == localhostV4 || name == localhostV6 {
            m.rcode = Rcode.noError
            m.append(.answer, owner: question.name, type: RRType.ptr, qclass: recordClass, ttl: 10_800,
                     rdata: [(LDNS_RDF_TYPE_DNAME, WireName.fromText("localhost")!)])
            return UpstreamAnswer(message: m)
        }
        // The zone's name and the names on the way down to 1.0.0.127.in-addr.arpa exist (an
        // empty non-terminal is NODATA, not NXDOMAIN: RFC 8020 reads NXDOMAIN as nothing below).
        let hasName = apex || localhostV4.withUnsafeBufferPointer { WireName.isWithin($0, zone: name) }
        m.rcode = hasName ? Rcode.noError : Rcode.nxDomain
        if apex, question.type == RRType.ns {
            m.append(.answer, owner: zone, type: RRType.ns, qclass: recordClass, ttl: 10_800, rdata: [(LDNS_RDF_TYPE_DNAME, zone)])
            return UpstreamAnswer(message: m)
        }
        let rdata: [(ldns_rdf_type, [UInt8])] = [
            (LDNS_RDF_TYPE_DNAME, zone), (LDNS_RDF_TYPE_DNAME, WireName.fromText("nobody.invalid")!),
            (LDNS_RDF_TYPE_INT32, be32(1)), (LDNS_RDF_TYPE_PERIOD, be32(3600)),
            (LDNS_RDF_TYPE_PERIOD, be32(1200)), (LDNS_RDF_TYPE_PERIOD, be32(604_800)),
            (LDNS_RDF_TYPE_PERIOD, be32(10_800)),
        ]
        let section: Message.Section = apex && question.type == RRType.soa ? .answer : .authority
        m.append(section, owner: zone, type: RRType.soa, qclass: recordClass, ttl: 10_800, rdata: rdata)
        return UpstreamAnswer(message: m)
    }

    /// The reverse names of 127.0.0.1 and ::1 (the latter is its zone's own name).
    static let localhostV4 = WireName.fromText("1.0.0.127.in-addr.arpa")!
    static let localhostV6 = WireName.fromText("1." + Array(repeating: "0", count: 31).joined(separator: ".") + ".ip6.arpa")!
}
