import Glibc
import Dispatch
import Synchronization
import Logging

/// The path every query takes, in order. Each step either answers or hands on to the next.
///
/// 1. AccessPolicy, HeaderGate – clients no --allow rule covers get REFUSED (or nothing) for
///                  anything that has a header; then the 12 raw header bytes: drop responses and runts, NOTIMP other opcodes,
///                  FORMERR QDCOUNT≠1. Cheapest checks first; nothing is parsed that is dropped.
/// 2. (AccessPolicy is checked with the header: no open resolver, and refused traffic costs
///                  as little as possible.)
/// 3. RateLimiter – UDP clients over --rate-limit (per client prefix) get an empty TC=1 reply (or
///                  nothing): never an amplified answer to a spoofed source. TCP is not limited.
/// 4. decode      – libldns parses the message: FORMERR if it cannot or its OPT is malformed;
///                  BADVERS for EDNS version > 0.
/// 5. BlockingStage – listed name or a parent of it: block answer + one BlockEvent. Before any
///                  stage that could send the name off the host.
/// 6. AnswerCache – a fresh cached answer for the same question (after the block check, so a
///                  newly listed name is never served from it); identical questions in flight
///                  are coalesced into one upstream query.
/// 7. Forwarder   – everything else goes upstream; SERVFAIL when no upstream answers, and at
///                  once when --max-inflight queries are already waiting upstream.
/// 8. ResponseInspection – a CNAME/DNAME target in the answer that is listed blocks the answer,
///                  so no upstream data for a listed name reaches the client through an alias.
///                  Every answer that is not blocked is recorded in the query history (when on)
///                  for retro-hunts: a buffer append, never a database call.
/// 9. ReplyBuilder – header/question/OPT rules, TC=1 when over the client's UDP size.
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
    /// Queries waiting for the answer to an identical question already upstream, at most 16 ×
    /// `maxInFlight` of them: past that, SERVFAIL at once as past --max-inflight. Before, a flood
    /// of one name against a slow upstream grew its list by the query rate × the deadline.
    private let waitingCount = Atomic<Int>(0)
    var maxWaiting: Int { 16 * maxInFlight }
    /// Uptime (ns) of the last `--max-inflight reached` warning, and the count said in it.
    private let overloadWarned = Mutex<(pace: LogPace, said: Int)>((LogPace(), 0))
    public let counters = QueryCounters()
    public let metrics: ServerMetrics?
    public let cache: AnswerCache?
    /// Forwarders whose EDNS Client Subnet names the real client in the block log.
    public let trustECSFrom: AccessPolicy
    /// Where answered, unblocked queries are recorded for retro-hunts (nil = no history).
    public let history: QueryHistory?
    /// Blocked names and inspected cache hits of plain queries are answered from the bytes,
    /// without ldns (`WireQuery`, `FastReply`, `CachedReply`); everything else, and every query
    /// when false, takes the full path. Same answers either way (tests compare them).
    public let fastPath: Bool
    /// With --serve-stale, seconds a query whose expired answer is in the cache waits for the
    /// upstreams before that answer is served to it (RFC 8767's client response timer, 1.8 s
    /// as the RFC suggests and Unbound's serve-expired-client-timeout); the refresh goes on.
    public let staleAnswerAfter: Double
    /// Questions on their way upstream and the queries waiting for their answer, in shards
    /// by key so that cores forwarding different names do not queue on one lock.
    private let pendingShards = (0..<16).map { _ in PendingShard() }

    fileprivate final class PendingShard: Sendable {
        let waiting = Mutex<[AnswerCache.Key: [Waiter]]>([:])
    }
    private let logger: Logger

    public init(blocking: BlockingStage, forwarder: Forwarder, replies: ReplyBuilder,
                access: AccessPolicy = .allowAll, refuseAction: RefuseAction = .refuse,
                rateLimiter: RateLimiter? = nil, rateLimitAction: RateLimitAction = .truncate,
                maxInFlight: Int = 2048, metrics: ServerMetrics? = nil, cache: AnswerCache? = nil,
                trustECSFrom: AccessPolicy = AccessPolicy(rules: []), history: QueryHistory? = nil,
                fastPath: Bool = true, staleAnswerAfter: Double = 1.8, logger: Logger) {
        self.staleAnswerAfter = staleAnswerAfter
        self.trustECSFrom = trustECSFrom
        self.history = history
        self.fastPath = fastPath
        self.metrics = metrics
        self.cache = cache
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
                       respond: Responder) {
        packet.withUnsafeBytes { handle(bytes: $0, client: client, transport: transport, respond: respond) }
    }

    /// The same with the reply given to a closure (fuzz targets, tools).
    public func handle(_ packet: [UInt8], client: SocketAddress, transport: Transport,
                       respond: @escaping @Sendable ([UInt8]) -> Void) {
        handle(packet, client: client, transport: transport, respond: Responder(respond))
    }

    /// The same for a message in a buffer that stays valid only for the call (a UDP listener's
    /// receive buffer): blocked names, cache hits and plain forwarded queries are answered from
    /// it without a copy; the rare paths copy it.
    public func handle(bytes raw: UnsafeRawBufferPointer, client: SocketAddress, transport: Transport,
                       respond: Responder) {
        let header: Header
        let verdict = HeaderGate.inspect(raw)
        // Strangers learn nothing, not even whether their packet was well formed.
        guard access.allows(client.ip) else {
            counters.count(.refused)
            metrics?.query(transport, .refused)
            switch verdict {
            case .drop:
                return respond([])
            case .reject(let h, _), .proceed(let h):
                if refuseAction == .drop { return respond([]) }
                return respond(replies.rejection(to: h, packet: Array(raw), rcode: Rcode.refused))
            }
        }
        switch verdict {
        case .drop:
            metrics?.query(transport, .dropped)
            return respond([])
        case .reject(let rejected, let rcode):
            metrics?.query(transport, rcode == Rcode.notImp ? .notimp : .formerr)
            return respond(replies.rejection(to: rejected, packet: Array(raw), rcode: rcode))
        case .proceed(let h):
            header = h
        }

        if transport == .udp, let limiter = rateLimiter, !limiter.allow(client.ip) {
            counters.count(.rateLimited)
            metrics?.query(transport, .ratelimited)
            if rateLimitAction == .drop { return respond([]) }
            return respond(replies.rejection(to: header, packet: Array(raw), rcode: Rcode.noError, truncated: true))
        }
        if fastPath {
            switch fastPathOutcome(raw, header: header, client: client, transport: transport, respond: respond) {
            case .answered: return
            case .forward(let query, let key): return forward(query, key: key, respond: respond)
            case .fullPath: break
            }
        }
        let packet = Array(raw)
        guard let message = Message(wire: packet), let question = message.question, OPTCheck.isValid(packet) else {
            metrics?.query(transport, .formerr)
            return respond(HeaderGate.headerOnlyReply(to: header, rcode: Rcode.formErr))
        }
        var decoded = Query(header: header, question: question, edns: message.edns,
                            client: client, transport: transport)
        if decoded.edns != nil, !trustECSFrom.rules.isEmpty || forwarder.forwardECS {
            switch ClientSubnet.read(options: message.ednsOptions) {
            case .valid(let subnet):
                decoded.clientSubnet = subnet
                decoded.subnetTrusted = subnet.namesAClient && trustECSFrom.allows(client.ip)
            case .malformed where forwarder.forwardECS || trustECSFrom.allows(client.ip):
                // RFC 7871 6 and 7.2.1, where ECS is used: FORMERR, not forwarded or logged.
                metrics?.query(transport, .formerr)
                return respond(replies.rejection(to: header, packet: packet, rcode: Rcode.formErr))
            case .malformed, .absent:
                break
            }
        }
        let query = decoded
        if let edns = query.edns, edns.version > 0 {
            metrics?.query(transport, .formerr)
            return respond(replies.reply(to: query, .badVersion))
        }
        // A compression pointer in the only question's name has no earlier name to point to
        // (RFC 1035 4.1.4: pointers are to a prior occurrence); a meta type is no question.
        if QueryChain.questionNameIsCompressed(packet) || RRType.isNeverAsked(question.type) {
            metrics?.query(transport, .formerr)
            return respond(replies.rejection(to: header, packet: packet, rcode: Rcode.formErr))
        }
        // Signed with a key sinkhole does not hold (it holds none): NOTAUTH/BADKEY, RFC 8945.
        if let tsig = TSIGPlacement.last(packet) {
            metrics?.query(transport, .refused)
            let reply = replies.badKey(to: query, key: tsig.key, algorithm: tsig.algorithm, timeAndFudge: tsig.timeAndFudge)
            // Within the size limit as every reply: the echoed names can make it 800 bytes, past
            // 512 without EDNS (a review). Too big: TC=1 with the question, and TCP has room.
            guard reply.count <= query.replySizeLimit(payloadSize: replies.payloadSize) else {
                return respond(replies.rejection(to: header, packet: packet, rcode: Rcode.notAuth, truncated: true))
            }
            return respond(reply)
        }
        if let blocked = blocking.process(query) {
            if case .blocked(let answer) = blocked {
                metrics?.query(transport, .blocked)
                metrics?.blocked(list: answer.match.list)
            }
            if case .blocked(let answer) = blocked, answer.action == .drop { return respond([]) }
            return respond(replies.reply(to: query, blocked))
        }
        // CHAOS questions ask who the server is: they are not passed to the upstream, whose
        // software and version (NSD's version.bind) are not the clients' to learn. Refused, as
        // Unbound does with hide-version. (A listed name is still blocked above, in any class.)
        if query.question.qclass == RRType.classCH {
            metrics?.query(transport, .refused)
            return respond(replies.reply(to: query, .failure(rcode: Rcode.refused, reason: "CHAOS class")))
        }
        // A zone transfer (AXFR, IXFR) is an authoritative server's to give, not a resolver's:
        // refused here, as Unbound refuses it. Forwarded, an AXFR drew SERVFAIL after two
        // upstream tries, and an IXFR lost its SOA on the way and its reply was cached for
        // every serial.
        if query.question.type == RRType.axfr || query.question.type == RRType.ixfr {
            metrics?.query(transport, .refused)
            return respond(replies.reply(to: query, .failure(rcode: Rcode.refused, reason: "zone transfer")))
        }
        var cacheKey = AnswerCache.Key(query.question, dnssecOK: query.edns?.dnssecOK ?? false,
                                       checkingDisabled: query.header.checkingDisabled)
        if forwarder.forwardECS, let subnet = query.clientSubnet { cacheKey.subnet = subnet.option }
        let key = cacheKey
        if let cache, let hit = cache.lookup(key), let cached = AnswerCache.answer(from: hit) {
            return deliver(query, .upstream(cached, from: AnswerCache.origin), outcome: .cached,
                           inspected: hit.stale ? nil : (key, hit.serial), respond: respond)
        }
        forward(query, key: key, respond: respond)
    }

    /// A query that is not blocked and has no fresh answer in the cache: upstream, unless an
    /// identical question is already on its way there, whose answer it then waits for.
    private func forward(_ query: Query, key: AnswerCache.Key, respond: Responder) {
        // Identical questions already on their way upstream wait for that answer (coalescing).
        let shard = pendingShards[key.shard(of: pendingShards.count)]
        let maxWaiting = self.maxWaiting
        let first = shard.waiting.withLock { waiting -> Bool? in
            // One lookup for the usual case, a question not yet in flight.
            guard var earlier = waiting.updateValue([], forKey: key) else { return true }
            defer { waiting[key] = earlier }
            guard waitingCount.add(1, ordering: .relaxed).newValue <= maxWaiting else {
                waitingCount.subtract(1, ordering: .relaxed)
                return nil
            }
            earlier.append(Waiter(query: query, respond: respond))
            return false
        }
        guard let first else {
            counters.count(.overloaded)
            warnOverloaded()
            return deliver(query, .failure(rcode: Rcode.servFail, reason: "too many queries waiting"), outcome: .servfail, respond: respond)
        }
        guard first else { return }
        if inFlightCount.add(1, ordering: .relaxed).newValue > maxInFlight {
            inFlightCount.subtract(1, ordering: .relaxed)
            counters.count(.overloaded)
            warnOverloaded()
            let failure = Resolution.failure(rcode: Rcode.servFail, reason: "too many queries in flight")
            deliver(query, failure, outcome: .servfail, respond: respond)
            for waiter in takeWaiters(shard, key) {
                deliver(waiter.query, failure, outcome: .servfail, respond: waiter.respond)
            }
            return
        }
        let miss = Miss(chain: self, query: query, key: key, respond: respond, shard: shard)
        // An expired answer kept for --serve-stale: served if the refresh takes too long.
        if let cache, cache.serveStale, cache.lookup(key, allowStale: true)?.stale == true {
            DispatchQueue.global().asyncAfter(deadline: .now() + staleAnswerAfter) { [self] in answerStale(miss) }
        }
        forwarder.forward(miss)
    }

    /// RFC 8767's client response timer ran out before the upstreams answered `miss`: the
    /// expired answer is served to it and to the queries waiting with it, and to every query
    /// for it until the refresh ends (`recheckLater` for the rest of the deadline). The refresh
    /// goes on; its answer is cached (`forwarded`). Nothing happens if it has already ended.
    private func answerStale(_ miss: Miss) {
        guard let cache, let hit = cache.lookup(miss.key, allowStale: true), hit.stale,
              let stale = AnswerCache.answer(from: hit),
              miss.stage.compareExchange(expected: Miss.waiting, desired: Miss.answeredStale, ordering: .acquiringAndReleasing).exchanged
        else { return }
        cache.recheckLater(miss.key, seconds: UInt64(forwarder.longestDeadline.rounded(.up)))
        let waiters = miss.shard.waiting.withLock { waiting -> [Waiter] in
            // The entry stays (empty): the refresh's end finds it, and queries now join it.
            guard let taken = waiting[miss.key], !taken.isEmpty else { return [] }
            waiting[miss.key] = []
            waitingCount.subtract(taken.count, ordering: .relaxed)
            return taken
        }
        let resolution = Resolution.upstream(stale, from: AnswerCache.origin)
        deliver(miss.query, resolution, outcome: .forwarded, respond: miss.respond)
        for waiter in waiters {
            deliver(waiter.query, resolution, outcome: .forwarded, respond: waiter.respond)
        }
    }

    /// The queries waiting on `key`'s question, taken off the table with its entry.
    private func takeWaiters(_ shard: PendingShard, _ key: AnswerCache.Key) -> [Waiter] {
        let taken = shard.waiting.withLock { $0.removeValue(forKey: key) ?? [] }
        if !taken.isEmpty { waitingCount.subtract(taken.count, ordering: .relaxed) }
        return taken
    }

    /// Queries waiting on upstreams now (`sinkhole_queries_inflight`).
    public var inFlight: Int { inFlightCount.load(ordering: .relaxed) }

    /// Says, at most once a minute, that --max-inflight turned queries away: otherwise their
    /// SERVFAILs look like an upstream outage (a flood of slow names from one client fills the
    /// limit for everyone).
    private func warnOverloaded() {
        let total = counters.overloaded
        let since = overloadWarned.withLock { w -> Int? in
            guard w.pace.due() else { return nil }
            defer { w.said = total }
            return total - w.said
        }
        guard let since else { return }
        logger.warning("max-inflight reached: queries answered SERVFAIL at once", metadata: [
            "max_inflight": "\(maxInFlight)", "servfails": "\(since)",
        ])
    }

    /// The expired answer kept for `key`, after every upstream failed, held to be served at
    /// once for the next 30 s (RFC 8767's failure recheck timer); nil when there is none.
    private func staleInstead(_ key: AnswerCache.Key) -> Resolution? {
        guard let cache, let hit = cache.lookup(key, allowStale: true), let stale = AnswerCache.answer(from: hit) else { return nil }
        cache.recheckLater(key)
        return .upstream(stale, from: AnswerCache.origin)
    }

    /// A forwarded query's resolution: delivered to it and to the identical queries that waited.
    fileprivate func forwarded(_ miss: Miss, _ resolution: Resolution) {
        let key = miss.key
        var resolution = resolution
        var fresh = false
        switch resolution {
        case .upstream(let answer, _) where answer.rcode == Rcode.servFail && !answer.isValidationFailure:
            // Every upstream failed, the last with SERVFAIL (relayed when nothing better is
            // found): as when they timed out, an expired answer is better (RFC 8767). It went
            // unused here, so --serve-stale did nothing against an upstream answering SERVFAIL.
            // Not over a validating upstream's verdict that the data is bogus: the old answer
            // was served as authentic (AD) right after the upstream had found it forged.
            if let stale = staleInstead(key) { resolution = stale }
        case .upstream(let answer, let from):
            fresh = true
            if let cache { resolution = .upstream(cache.clamped(answer), from: from) }
            // A validating upstream found the data bogus: the answer kept for the name goes, so
            // that no later failure serves it stale (with AD) as --serve-stale would have.
            if answer.isValidationFailure { cache?.discard(key) }
        case .failure:
            // Every upstream failed: an expired answer is better than none (RFC 8767).
            if let stale = staleInstead(key) { resolution = stale }
        default:
            break
        }
        // The first query's delivery stores the fresh answer, before the waiters are taken
        // off the table: a query arriving now finds either the answer or the table entry.
        if miss.stage.exchange(Miss.resolved, ordering: .acquiringAndReleasing) == Miss.answeredStale {
            // Already answered stale (`answerStale`): the fresh answer is only cached.
            if fresh, let cache, case .upstream(let answer, _) = resolution { cache.store(key, answer: answer) }
        } else {
            deliver(miss.query, resolution, outcome: .forwarded, storeAs: fresh ? key : nil, respond: miss.respond)
        }
        let waiters = takeWaiters(miss.shard, key)
        // The answer is immutable: every waiter's reply is made from the same one.
        for waiter in waiters {
            deliver(waiter.query, resolution, outcome: .forwarded, respond: waiter.respond)
        }
        // Releasing: a stop that sees the count reach 0 sees these deliveries done.
        inFlightCount.subtract(1, ordering: .releasing)
    }

    /// A query on its way upstream: the forwarder's job, with what the chain needs once it is
    /// resolved, in the same object (one allocation, and one reference where the upstream
    /// socket's table holds it; the message sent is written from the query, not stored).
    fileprivate final class Miss: ForwardJob, @unchecked Sendable {
        let chain: QueryChain
        let key: AnswerCache.Key
        let respond: Responder
        let shard: PendingShard
        /// Whether the client was answered: `waiting`, `answeredStale` by the client response
        /// timer, or `resolved` (whichever comes first answers it).
        let stage = Atomic<UInt8>(Miss.waiting)
        static let waiting: UInt8 = 0, answeredStale: UInt8 = 1, resolved: UInt8 = 2

        init(chain: QueryChain, query: Query, key: AnswerCache.Key, respond: Responder, shard: PendingShard) {
            self.chain = chain
            self.key = key
            self.respond = respond
            self.shard = shard
            super.init(query: query)
        }

        override func resolved(_ resolution: Resolution) {
            chain.forwarded(self, resolution)
        }
    }

    /// The fast path: a plain query (`WireQuery`) for a blocked name, or one whose cached answer
    /// was already inspected against the lists in force, answered from the bytes. False when the
    /// query must take the full path; nothing has been logged or sent then.
    private func fastPathOutcome(_ raw: UnsafeRawBufferPointer, header: Header, client: SocketAddress, transport: Transport,
                                 respond: Responder) -> FastOutcome {
        guard let q = WireQuery.parse(raw) else { return .fullPath }
        // With --forward-ecs the client's ECS option is part of the cache key and of the query
        // sent upstream: the full path. From a trusted forwarder it names the client behind it
        // in the block log and the history, read here from the packet's bytes as the full path
        // reads it from the decoded OPT record (a dnsdist in front sends it with every query).
        if q.hasOptions && forwarder.forwardECS { return .fullPath }
        // Parsed only where it is used (each path asks once): a plain block with no log has no use for it.
        let ecsTrusted = q.hasOptions && !trustECSFrom.rules.isEmpty && trustECSFrom.allows(client.ip)
        // A malformed ECS option from a trusted forwarder is answered FORMERR, by the full path.
        if ecsTrusted, ClientSubnet.isMalformed(options: UnsafeRawBufferPointer(rebasing: raw[q.options])) { return .fullPath }
        /// The client behind a trusted forwarder; nil for a source prefix of 0 (the client
        /// declining to be named: the forwarder is the client to record).
        func trustedSubnet() -> ClientSubnet? {
            guard ecsTrusted, let subnet = ClientSubnet.parse(options: UnsafeRawBufferPointer(rebasing: raw[q.options])),
                  subnet.namesAClient else { return nil }
            return subnet
        }
        let limit = transport == .tcp ? 65_535 : Query.udpLimit(client: q.edns?.udpPayloadSize, ours: replies.payloadSize)
        let snapshot = blocking.store.snapshot
        let decided = UnsafeRawBufferPointer(rebasing: raw[12..<q.nameEnd]).withMemoryRebound(to: UInt8.self) { snapshot.decide($0) }
        if let (hit, listIndex) = decided, hit.kind.action != .allow {
            // A plain block with no log to write: answered from the hit and the query's bytes,
            // with nothing copied out of them (no name, no match, no answer made).
            if blocking.log == nil, let plain = blocking.policy.plainAnswer(type: q.qtype, qclass: q.qclass, action: hit.kind.action) {
                let list = snapshot.loaded[listIndex]
                let written = withExtendedLifetime(list) {
                    respond.write(limit: limit) {
                        FastReply.block(into: &$0, q, packet: raw, rcode: plain.rcode, address: plain.address, ttl: blocking.policy.ttl,
                                        zoneOffset: 12 + hit.suffixStart, list: list.name, payloadSize: replies.payloadSize) { text in
                            if hit.kind.scope == .below || hit.kind.scope == .starred { text.put(UInt8(ascii: "*")); text.put(UInt8(ascii: ".")) }
                            WireName.writeText(hit.listed) { text.put($0) }
                        }
                    }
                }
                guard written else { return .fullPath }   // truncation: the full path
                metrics?.query(transport, .blocked)
                metrics?.blocked(list: list.name, number: list.number)
                counters.count(.fastAnswered)
                return .answered
            }
            let name = Array(raw[12..<q.nameEnd])
            let match = snapshot.match(hit, list: listIndex, qname: name)
            let question = Question(name: name, type: q.qtype, qclass: q.qclass)
            let answer = blocking.policy.answer(for: question, match: match)
            // Recorded once the reply is made (it may yet go to the full path, which records it
            // then) and before it can reach the client.
            func record() {
                var event = BlockEvent(client: client, transport: transport, id: q.id, qname: name,
                                       qtype: q.qtype, qclass: q.qclass, answer: answer)
                event.subnet = trustedSubnet()
                blocking.log?.record(event)
            }
            if answer.action == .drop {
                record()
                respond([])
            } else {
                guard respond.write(limit: limit, { FastReply.block(into: &$0, q, packet: raw, answer: answer, payloadSize: replies.payloadSize) },
                                    beforeSending: record)
                else { return .fullPath }   // truncation: the full path
            }
            metrics?.query(transport, .blocked)
            metrics?.blocked(list: answer.match.list, number: snapshot.loaded[listIndex].number)
            counters.count(.fastAnswered)
            return .answered
        }
        guard !forwarder.forwardECS, q.qclass != RRType.classCH else { return .fullPath }
        let dnssecOK = q.edns?.dnssecOK ?? false
        let checkingDisabled = q.checkingDisabled
        let asked = UnsafeRawBufferPointer(rebasing: raw[12..<q.nameEnd])
        // The name lowered once, for the key's digest and for the cache's match.
        let payloadSize = replies.payloadSize
        let (digest, found) = AnswerCache.Key.withLowercased(asked) { lower -> (Int, AnswerCache.FastLookup) in
            let digest = AnswerCache.Key.digest(lowercased: lower, type: q.qtype, qclass: q.qclass, dnssecOK: dnssecOK,
                                                checkingDisabled: checkingDisabled)
            // Looked up from the packet's bytes: the name is copied only for a query forwarded.
            let found = cache?.preparedLookup(lowercased: lower, type: q.qtype, qclass: q.qclass, dnssecOK: dnssecOK,
                                              checkingDisabled: checkingDisabled, digest: digest,
                                              generation: snapshot.generation) { prepared, age in
                respond.write(limit: limit) { prepared.reply(into: &$0, to: q, packet: raw, age: age, payloadSize: payloadSize) }
            }
            return (digest, found ?? .absent)
        }
        switch found {
        case .served:
            metrics?.query(transport, .cached)
            // The client behind a trusted forwarder, as in the block log.
            if let history, let subnet = trustedSubnet() {
                history.record(client: subnet.address, name: asked, qtype: q.qtype)
            } else {
                history?.record(client: client.ip, name: asked, qtype: q.qtype)
            }
            counters.count(.fastAnswered)
            return .answered
        case .present:
            return .fullPath   // to be inspected against the lists in force first
        case .absent:
            break
        }
        // Not blocked, not cached: what the full path would do next is forward it, and the
        // query it would decode is this one.
        let question = Question(name: Array(raw[12..<q.nameEnd]), type: q.qtype, qclass: q.qclass)
        let key = AnswerCache.Key(question, dnssecOK: dnssecOK, checkingDisabled: checkingDisabled, digest: digest)
        var query = Query(header: header, question: question, edns: q.edns, client: client, transport: transport)
        query.clientSubnet = trustedSubnet()
        query.subnetTrusted = query.clientSubnet != nil
        return .forward(query, key)
    }

    enum FastOutcome {
        /// Answered (or dropped) from the bytes; nothing more to do.
        case answered
        /// A plain query that is not blocked and not in the cache: forward it.
        case forward(Query, AnswerCache.Key)
        /// Anything else: decode with ldns and take every step.
        case fullPath
    }

    /// A query waiting for an identical one already sent upstream.
    struct Waiter: @unchecked Sendable {
        let query: Query
        let respond: Responder
    }

    /// Response inspection, metrics and the reply, for a forwarded or cached answer. When the
    /// answer is the cached one `inspected` names and inspection finds it clean, the cache is
    /// told, so that the fast path may serve it while the same lists are in force. A fresh
    /// upstream answer is cached under `storeAs`, marked inspected when it was found clean.
    private func deliver(_ query: Query, _ resolution: Resolution, outcome: ServerMetrics.Outcome,
                         inspected cached: (key: AnswerCache.Key, serial: UInt64)? = nil,
                         storeAs key: AnswerCache.Key? = nil, respond: Responder) {
        // One snapshot for the inspection and the generation it is recorded under.
        let lists = blocking.store.snapshot
        let generation = lists.generation
        let inspected = ResponseInspection(blocking: blocking).process(query, resolution, lists: lists)
        var clean = false
        if case .upstream = inspected { clean = true }
        if let cached, clean {
            cache?.markInspected(cached.key, serial: cached.serial, generation: generation)
        }
        if let key, let cache, case .upstream(let answer, _) = resolution {
            cache.store(key, answer: answer, inspectedGeneration: clean ? generation : -1)
        }
        switch inspected {
        case .blocked(let answer):
            metrics?.query(query.transport, .blocked)
            metrics?.blocked(list: answer.match.list)
        case .upstream:
            metrics?.query(query.transport, outcome)
        case .failure, .badVersion:
            metrics?.query(query.transport, .servfail)
        }
        if let history, inspected.reachedUpstream {
            // The client behind a trusted forwarder, as in the block log.
            if query.subnetTrusted, let subnet = query.clientSubnet {
                history.record(client: subnet.address, name: query.question.name, qtype: query.question.type)
            } else {
                history.record(client: query.client.ip, name: query.question.name, qtype: query.question.type)
            }
        }
        if case .blocked(let answer) = inspected, answer.action == .drop {
            respond([])
        } else if case .upstream(let answer, _) = inspected, let prepared = answer.prepared,
                  respond.write(limit: query.replySizeLimit(payloadSize: replies.payloadSize), {
                      prepared.reply(into: &$0, id: query.header.id, flags: query.header.flags,
                                     question: query.question, edns: query.edns, payloadSize: replies.payloadSize,
                                     clientSubnet: replies.echoesClientSubnet ? query.clientSubnet : nil)
                  }) {
            // The upstream's own bytes with our header, question and OPT: what ReplyBuilder.relay
            // makes, without encoding the message again.
        } else {
            respond(replies.reply(to: query, inspected))
        }
    }

    /// Counts kept on the query path: per-core shards (`ShardedCounts`), no lock and no line
    /// that the cores write in turn.
    public final class QueryCounters: Sendable {
        enum Slot: Int, CaseIterable { case refused, rateLimited, overloaded, fastAnswered }
        private let counts = ShardedCounts(slots: Slot.allCases.count)

        @inline(__always)
        func count(_ slot: Slot) { counts.add(slot.rawValue) }

        public var refused: Int { Int(counts.total(Slot.refused.rawValue)) }
        public var rateLimited: Int { Int(counts.total(Slot.rateLimited.rawValue)) }
        /// SERVFAIL at once because --max-inflight queries were already upstream.
        public var overloaded: Int { Int(counts.total(Slot.overloaded.rawValue)) }
        /// Answered by the fast path (blocked or cached, without ldns).
        public var fastAnswered: Int { Int(counts.total(Slot.fastAnswered.rawValue)) }
    }

    /// Waits until every forwarded query has been answered, or the timeout passes (a stop's
    /// drain). It looks at the in-flight count every 2 ms rather than keeping a DispatchGroup
    /// that every forwarded query would enter and leave: two more writes of a line that every
    /// core writes, for the sake of one wait at shutdown.
    @discardableResult
    public func waitForInFlight(timeout: Double) -> Bool {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, timeout) * 1e9)
        while inFlightCount.load(ordering: .acquiring) > 0 {
            guard DispatchTime.now().uptimeNanoseconds < deadline else { return false }
            usleep(2_000)
        }
        return true
    }
}

extension QueryChain {
    /// True when the question's name (from byte 12) holds a compression pointer, or a label
    /// type other than a plain label, before its end.
    static func questionNameIsCompressed(_ packet: [UInt8]) -> Bool {
        var i = 12
        while i < packet.count {
            let length = packet[i]
            if length == 0 { return false }
            if length & 0xC0 != 0 { return true }
            i += 1 + Int(length)
        }
        return false
    }
}
