/// A domain whose names are sent to upstreams of their own (`--forward-zone
/// corp.example=10.0.0.53`): an organisation's internal zones to its domain controllers, its
/// private reverse zones to the server that has them, while every other name goes to
/// `--upstream`. As Unbound's forward-zone (with forward-first off) and dnsmasq's
/// `server=/corp.example/10.0.0.53`: the zone's upstreams only, never the others, so an internal
/// name is not leaked to a public resolver when the internal one is down. The block check comes
/// first, as for every name.
public struct ForwardZone: Sendable, Equatable, CustomStringConvertible {
    /// The zone in lowercase wire form (`\4corp\7example\0`).
    public let name: [UInt8]
    public let upstreams: [SocketAddress]

    public init(name: [UInt8], upstreams: [SocketAddress]) {
        self.name = name
        self.upstreams = upstreams
    }

    public var zone: String { WireName.text(name) }

    public var description: String {
        "\(zone)=\(upstreams.map(\.description).joined(separator: ","))"
    }

    /// `DOMAIN=ADDR[:PORT][,ADDR[:PORT]...]`, the port 53 by default. The reason, without the
    /// flag's name, when it is not one.
    public static func parse(_ text: String) -> Result<ForwardZone, ConfigurationError> {
        let example = "e.g. corp.example=10.0.0.53,10.0.0.54 or 168.192.in-addr.arpa=[fd00::53]:53"
        guard let equals = text.firstIndex(of: "=") else {
            return .failure(ConfigurationError("'\(text)': expected DOMAIN=ADDR[:PORT][,ADDR[:PORT]...] (\(example))"))
        }
        let domain = text[..<equals].trimmingCharacters(in: .whitespaces)
        let list = text[text.index(after: equals)...]
        if domain == "." || domain.isEmpty {
            return .failure(ConfigurationError("'\(text)': the root zone's upstreams are --upstream; a forward zone names a domain (\(example))"))
        }
        let name: [UInt8]
        switch DomainName.parse(Substring(domain)) {
        case .success(let wire): name = wire
        case .failure(let problem): return .failure(ConfigurationError("'\(text)': \(domain): \(problem)"))
        }
        var upstreams: [SocketAddress] = []
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            let itemText = item.trimmingCharacters(in: .whitespaces)
            guard !itemText.isEmpty else {
                return .failure(ConfigurationError("'\(text)': an empty upstream address (\(example))"))
            }
            let address: SocketAddress
            do { address = try SocketAddress.parse(itemText, defaultPort: 53) } catch {
                return .failure(ConfigurationError("'\(text)': \(error)"))
            }
            if address.port == 0 {
                return .failure(ConfigurationError("'\(text)': \(address): port 0 cannot be sent to"))
            }
            if IPAddress.isUnspecified(address.address) {
                return .failure(ConfigurationError("'\(text)': \(address): not a usable upstream address (0.0.0.0 and :: are no resolver's address)"))
            }
            if upstreams.contains(address) {
                return .failure(ConfigurationError("'\(text)': \(address) given twice"))
            }
            upstreams.append(address)
        }
        return .success(ForwardZone(name: name, upstreams: upstreams))
    }
}

/// The forward zones, looked up by a query's name: the longest zone that is the name or one of
/// its parents wins (`a.lab.corp.example` goes to `lab.corp.example`'s upstreams when both it
/// and `corp.example` are given).
struct ForwardRoutes: Sendable {
    struct Route: Sendable {
        /// The zone, lowercase wire form.
        let name: [UInt8]
        /// Indexes into the forwarder's upstreams, in the order given.
        let upstreams: [Int]
    }

    /// Longest first, so that the first match is the longest.
    let routes: [Route]

    init(_ routes: [Route]) {
        self.routes = routes.sorted { $0.name.count > $1.name.count }
    }

    var isEmpty: Bool { routes.isEmpty }

    /// The route of the wire-form `name` (any letter case), or nil for the default upstreams.
    func route(for name: [UInt8]) -> Route? {
        guard !routes.isEmpty else { return nil }
        return name.withUnsafeBufferPointer { bytes in routes.first { WireName.isWithin(bytes, zone: $0.name) } }
    }
}
