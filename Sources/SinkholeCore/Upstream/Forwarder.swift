import CoreMetrics
import Dispatch
import Logging

/// Sends queries that no earlier stage answered to the upstream resolvers, in the order the
/// strategy and their health give: each try has `timeout` seconds, and the whole loop one
/// `deadline`; a timeout, network error or SERVFAIL moves on to the next upstream. When every
/// upstream has failed, the last upstream SERVFAIL is relayed, or SERVFAIL is answered.
public final class Forwarder: Sendable {
    public let upstreams: [SocketAddress]
    public let timeout: Double
    /// Seconds for the whole retry loop of one query.
    public let deadline: Double
    public let strategy: UpstreamStrategy
    public let health: UpstreamHealth
    public let metrics: ServerMetrics?
    /// Pass the client's EDNS Client Subnet option upstream (`--forward-ecs`); off by default.
    public let forwardECS: Bool
    /// The UDP payload size we advertise to upstreams (RFC 6891), the same as to clients.
    public let payloadSize: UInt16
    private let sockets: UpstreamSockets
    /// Per upstream, its latency timer (nil without metrics).
    private let latency: [CoreMetrics.Timer?]
    private let logger: Logger

    public init(upstreams: [SocketAddress], timeout: Double, payloadSize: UInt16,
                strategy: UpstreamStrategy = .first, deadline: Double? = nil, retryBackoff: Double = 5,
                metrics: ServerMetrics? = nil, forwardECS: Bool = false, logger: Logger) {
        self.metrics = metrics
        self.forwardECS = forwardECS
        self.upstreams = upstreams
        self.timeout = timeout
        self.strategy = strategy
        self.deadline = deadline ?? timeout * Double(max(1, upstreams.count))
        self.health = UpstreamHealth(upstreams: upstreams, firstBackoff: retryBackoff)
        self.payloadSize = payloadSize
        self.logger = logger
        sockets = UpstreamSockets(upstreams: upstreams)
        latency = upstreams.map { metrics?.latencyTimer($0) }
    }

    /// Closes the upstream sockets and stops their loops; call once nothing is in flight.
    public func stop() {
        sockets.stop()
    }

    /// The per-core event loops that the upstream sockets (and the UDP listeners) run on.
    var eventLoops: [EventLoop] { sockets.loops }

    /// Upstream sockets open now (for tests).
    var openSockets: Int { sockets.openSockets }

    /// The message sent upstream: the client's question, RD and CD, and our own OPT record with
    /// the client's DO bit (and its ECS option with `--forward-ecs`). Nothing else is passed on.
    func upstreamQuery(for query: Query) -> [UInt8]? {
        // Built from the bytes up (ldns_pkt2wire would allocate 64 KiB for these few dozen).
        var out: [UInt8] = []
        out.reserveCapacity(query.question.name.count + 40)
        FastReply.put16(&out, 0)                                   // ID: set per try
        FastReply.put16(&out, query.header.flags & 0x0130)         // RD, AD, CD; opcode QUERY
        FastReply.put16(&out, 1)
        FastReply.put16(&out, 0)
        FastReply.put16(&out, 0)
        FastReply.put16(&out, 1)
        out.append(contentsOf: query.question.name)
        FastReply.put16(&out, query.question.type)
        FastReply.put16(&out, query.question.qclass)
        let options = forwardECS ? (query.clientSubnet?.option ?? []) : []
        FastReply.appendOPT(&out, payloadSize: payloadSize, extendedRcode: 0,
                            dnssecOK: query.edns?.dnssecOK ?? false, options: options)
        return out
    }

    public func forward(_ query: Query, completion: @escaping @Sendable (Resolution) -> Void) {
        guard let wire = upstreamQuery(for: query) else {
            return completion(.failure(rcode: Rcode.servFail, reason: "could not encode the upstream query"))
        }
        let order = health.order(strategy)
        attempt(order[...], wire: wire, question: query.question, until: .now() + deadline,
                lastServfail: nil, completion: completion)
    }

    private func attempt(_ order: ArraySlice<Int>, wire: [UInt8], question: Question, until deadline: DispatchTime,
                         lastServfail: Resolution?, completion: @escaping @Sendable (Resolution) -> Void) {
        let left = Double(Int64(deadline.uptimeNanoseconds) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9
        guard let index = order.first, left > 0.001 else {
            return completion(lastServfail ?? .failure(rcode: Rcode.servFail, reason: "no upstream answered"))
        }
        let upstream = upstreams[index]
        let started = DispatchTime.now()
        sockets.exchange(upstream: index, query: wire, question: question, timeout: min(timeout, left)) { [self] result in
            let rest = order.dropFirst()
            switch result {
            case .success(let reply) where reply.rcode == Rcode.servFail:
                failed(index, "answered SERVFAIL", question)
                metrics?.upstreamFailed(upstream, reason: "servfail")
                attempt(rest, wire: wire, question: question, until: deadline,
                        lastServfail: .upstream(reply, from: upstream), completion: completion)
            case .success(let reply):
                let rtt = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
                latency[index]?.recordNanoseconds(Int64(rtt * 1e9))
                if health.success(index, rtt: rtt) {
                    logger.notice("upstream answering again", metadata: ["upstream": "\(upstream)"])
                }
                completion(.upstream(reply, from: upstream))
            case .failure(let failure):
                failed(index, "\(failure)", question)
                metrics?.upstreamFailed(upstream, reason: failure.kind)
                attempt(rest, wire: wire, question: question, until: deadline, lastServfail: lastServfail,
                        completion: completion)
            }
        }
    }

    private func failed(_ index: Int, _ reason: String, _ question: Question) {
        let markedDown = health.failure(index)
        let metadata: Logger.Metadata = [
            "upstream": "\(upstreams[index])", "reason": "\(reason)",
            "dns.question.name": "\(WireName.text(question.name))",
        ]
        if markedDown {
            logger.error("upstream marked down after \(UpstreamHealth.downAfter) failures in a row; probing it again later", metadata: metadata)
        } else {
            logger.warning("upstream try failed", metadata: metadata)
        }
    }
}
