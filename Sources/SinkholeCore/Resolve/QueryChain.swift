import Dispatch
import Synchronization
import Logging

/// The path every query takes, in order. Each step either answers or hands on to the next.
///
/// 1. HeaderGate  – 12 raw header bytes: drop responses and runts, NOTIMP other opcodes,
///                  FORMERR QDCOUNT≠1. Cheapest checks first; nothing is parsed that is dropped.
/// 2. AccessPolicy – clients no --allow rule covers get REFUSED (or nothing): no open resolver.
///                  Before decoding, so refused traffic costs as little as possible.
/// 3. RateLimiter – UDP clients over --rate-limit (per /24 or /56) get an empty TC=1 reply (or
///                  nothing): never an amplified answer to a spoofed source. TCP is not limited.
/// 4. decode      – libldns parses the message: FORMERR if it cannot or its OPT is malformed;
///                  BADVERS for EDNS version > 0.
/// 5. BlockingStage – listed name or a parent of it: block answer + one BlockEvent. Before any
///                  stage that could send the name off the host.
/// 6. Forwarder   – everything else goes upstream; SERVFAIL when no upstream answers, and at
///                  once when --max-inflight queries are already waiting upstream.
/// 7. ResponseInspection – a CNAME/DNAME target in the answer that is listed blocks the answer,
///                  so no upstream data for a listed name reaches the client through an alias.
/// 8. ReplyBuilder – header/question/OPT rules, TC=1 when over the client's UDP size.
public final class QueryChain: Sendable {
    public let blocking: BlockingStage
    public let forwarder: Forwarder
    public let replies: ReplyBuilder
    public let access: AccessPolicy
    public let refuseAction: RefuseAction
    public let rateLimiter: RateLimiter?
    public let rateLimitAction: RateLimitAction
    public let maxInFlight: Int
    private let inFlightCount = Atomic<Int>(0)
    public let counters = QueryCounters()
    public let metrics: ServerMetrics?
    private let inFlight = DispatchGroup()
    private let logger: Logger

    public init(blocking: BlockingStage, forwarder: Forwarder, replies: ReplyBuilder,
                access: AccessPolicy = .allowAll, refuseAction: RefuseAction = .refuse,
                rateLimiter: RateLimiter? = nil, rateLimitAction: RateLimitAction = .truncate,
                maxInFlight: Int = 2048, metrics: ServerMetrics? = nil, logger: Logger) {
        self.metrics = metrics
        self.rateLimiter = rateLimiter
        self.rateLimitAction = rateLimitAction
        self.maxInFlight = maxInFlight
        self.access = access
        self.refuseAction = refuseAction
        self.blocking = blocking
        self.forwarder = forwarder
        self.replies = replies
        self.logger = logger
    }

    /// Handles one received message; `respond` is called exactly once (empty = no reply).
    public func handle(_ packet: [UInt8], client: SocketAddress, transport: Transport,
                       respond: @escaping @Sendable ([UInt8]) -> Void) {
        let header: Header
        switch HeaderGate.inspect(packet) {
        case .drop:
            metrics?.query(transport, .dropped)
            return respond([])
        case .reject(let rejected, let rcode):
            metrics?.query(transport, rcode == Rcode.notImp ? .notimp : .formerr)
            return respond(replies.rejection(to: rejected, packet: packet, rcode: rcode))
        case .proceed(let h):
            header = h
        }
        guard access.allows(client.address) else {
            counters.refused.add(1, ordering: .relaxed)
            metrics?.query(transport, .refused)
            if refuseAction == .drop { return respond([]) }
            return respond(replies.rejection(to: header, packet: packet, rcode: Rcode.refused))
        }
        if transport == .udp, let limiter = rateLimiter, !limiter.allow(client.address) {
            counters.rateLimited.add(1, ordering: .relaxed)
            metrics?.query(transport, .ratelimited)
            if rateLimitAction == .drop { return respond([]) }
            return respond(replies.rejection(to: header, packet: packet, rcode: Rcode.noError, truncated: true))
        }
        guard let message = Message(wire: packet), let question = message.question, OPTCheck.isValid(packet) else {
            metrics?.query(transport, .formerr)
            return respond(HeaderGate.headerOnlyReply(to: header, rcode: Rcode.formErr))
        }
        let query = Query(header: header, message: message, question: question, edns: message.edns,
                          client: client, transport: transport)
        if let edns = query.edns, edns.version > 0 {
            metrics?.query(transport, .formerr)
            return respond(replies.reply(to: query, .badVersion))
        }
        if let blocked = blocking.process(query) {
            if case .blocked(let answer) = blocked {
                metrics?.query(transport, .blocked)
                metrics?.blocked(list: answer.match.list)
            }
            if case .blocked(let answer) = blocked, answer.action == .drop { return respond([]) }
            return respond(replies.reply(to: query, blocked))
        }
        if inFlightCount.add(1, ordering: .relaxed).newValue > maxInFlight {
            inFlightCount.subtract(1, ordering: .relaxed)
            counters.overloaded.add(1, ordering: .relaxed)
            metrics?.query(transport, .servfail)
            return respond(replies.reply(to: query, .failure(rcode: Rcode.servFail, reason: "too many queries in flight")))
        }
        inFlight.enter()
        let inspection = ResponseInspection(blocking: blocking)
        forwarder.forward(query) { [self] resolution in
            let inspected = inspection.process(query, resolution)
            switch inspected {
            case .blocked(let answer):
                metrics?.query(transport, .blocked)
                metrics?.blocked(list: answer.match.list)
            case .upstream:
                metrics?.query(transport, .forwarded)
            case .failure, .badVersion:
                metrics?.query(transport, .servfail)
            }
            if case .blocked(let answer) = inspected, answer.action == .drop {
                respond([])
            } else {
                respond(replies.reply(to: query, inspected))
            }
            inFlightCount.subtract(1, ordering: .relaxed)
            inFlight.leave()
        }
    }

    /// Counts kept on the query path (atomics, no lock).
    public final class QueryCounters: Sendable {
        public let refused = Atomic<Int>(0)
        public let rateLimited = Atomic<Int>(0)
        /// SERVFAIL at once because --max-inflight queries were already upstream.
        public let overloaded = Atomic<Int>(0)
    }

    /// Waits until every forwarded query has been answered, or the timeout passes.
    @discardableResult
    public func waitForInFlight(timeout: Double) -> Bool {
        inFlight.wait(timeout: .now() + timeout) == .success
    }
}
