/// A decoded query and where it came from: what every stage after the decoder sees.
public struct Query: Sendable {
    public let header: Header
    /// The question exactly as asked (letter case preserved).
    public let question: Question
    /// The client's OPT record, or nil when it sent none.
    public let edns: EDNS?
    public let client: SocketAddress
    public let transport: Transport
    /// The EDNS Client Subnet the query carried, if any.
    public var clientSubnet: ClientSubnet?
    /// True when `client` is a forwarder trusted (`--trust-ecs-from`) to say who its client is:
    /// the block log then names the ECS address as `source.ip`.
    public var subnetTrusted = false

    public init(header: Header, question: Question, edns: EDNS?,
                client: SocketAddress, transport: Transport) {
        self.header = header
        self.question = question
        self.edns = edns
        self.client = client
        self.transport = transport
    }

    /// The largest reply sent over this transport (RFC 1035 §4.2.1, RFC 6891 §6.2.5): over UDP
    /// 512 bytes without EDNS, else the smaller of the client's advertised size and ours
    /// (`--edns-buffer-size`), never below 512; 65535 over TCP.
    public func replySizeLimit(payloadSize: UInt16) -> Int {
        switch transport {
        case .tcp: return 65_535
        case .udp: return Query.udpLimit(client: edns?.udpPayloadSize, ours: payloadSize)
        }
    }

    /// A UDP reply's limit for a client that advertised `client` (nil: no EDNS), sinkhole
    /// advertising `ours`. Capped by ours, as RFC 6891 §6.2.5 has it and Unbound and BIND do: a
    /// 40-byte query claiming 65,535 must not draw a 60 KB datagram, an amplifier for spoofed
    /// sources (and a fragmented one, which DNS flag day 2020 set out to end).
    static func udpLimit(client: UInt16?, ours: UInt16) -> Int {
        guard let client else { return 512 }
        return max(512, min(Int(client), Int(ours)))
    }

    /// The block event for this query: client, transport, ID and question as asked, and the
    /// client behind a trusted forwarder when there is one.
    func event(answer: BlockAnswer, matchedOn: String = "qname", matchedName: [UInt8]? = nil,
               chainPosition: Int? = nil, matchedAddress: [UInt8]? = nil) -> BlockEvent {
        var e = BlockEvent(client: client, transport: transport, id: header.id, qname: question.name,
                           qtype: question.type, qclass: question.qclass, answer: answer, matchedOn: matchedOn,
                           matchedName: matchedName, chainPosition: chainPosition, matchedAddress: matchedAddress)
        if subnetTrusted { e.subnet = clientSubnet }
        return e
    }
}
