import Dispatch
import Logging

/// Sends queries that no earlier stage answered to the upstream resolvers, in order: each try
/// has `timeout` seconds; a timeout or network error moves on to the next upstream, and when
/// every upstream has failed the query is answered SERVFAIL.
public final class Forwarder: Sendable {
    public let upstreams: [SocketAddress]
    public let timeout: Double
    /// The UDP payload size we advertise to upstreams (RFC 6891), the same as to clients.
    public let payloadSize: UInt16
    private let queues = QueuePool(label: "sinkhole.upstream")
    private let logger: Logger

    public init(upstreams: [SocketAddress], timeout: Double, payloadSize: UInt16, logger: Logger) {
        self.upstreams = upstreams
        self.timeout = timeout
        self.payloadSize = payloadSize
        self.logger = logger
    }

    /// The message sent upstream: the client's question, RD and CD, and our own OPT record with
    /// the client's DO bit. Nothing else of the client's query is passed on.
    func upstreamQuery(for query: Query) -> [UInt8]? {
        guard let message = Message.empty() else { return nil }
        message.id = 0
        message.opcode = Opcode.query
        message.recursionDesired = query.header.recursionDesired
        message.checkingDisabled = query.header.checkingDisabled
        message.authenticData = query.message.authenticData
        message.setQuestion(query.question)
        message.edns = EDNS(udpPayloadSize: payloadSize, dnssecOK: query.edns?.dnssecOK ?? false)
        return message.wire()
    }

    public func forward(_ query: Query, completion: @escaping @Sendable (Resolution) -> Void) {
        guard let wire = upstreamQuery(for: query) else {
            return completion(.failure(rcode: Rcode.servFail, reason: "could not encode the upstream query"))
        }
        attempt(0, wire: wire, question: query.question, completion: completion)
    }

    private func attempt(_ index: Int, wire: [UInt8], question: Question,
                         completion: @escaping @Sendable (Resolution) -> Void) {
        guard index < upstreams.count else {
            return completion(.failure(rcode: Rcode.servFail, reason: "no upstream answered"))
        }
        let upstream = upstreams[index]
        let exchangeQueue = queues.queue()
        let exchange = UpstreamExchange(upstream: upstream, query: wire, question: question, timeout: timeout,
                                        queue: exchangeQueue) { [self] result in
            switch result {
            case .success(let reply):
                completion(.upstream(reply, from: upstream))
            case .failure(let failure):
                logger.warning("upstream try failed", metadata: [
                    "upstream": "\(upstream)", "reason": "\(failure)",
                    "dns.question.name": "\(WireName.text(question.name))",
                ])
                attempt(index + 1, wire: wire, question: question, completion: completion)
            }
        }
        exchange.start()
    }
}
