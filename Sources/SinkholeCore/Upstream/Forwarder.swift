import Dispatch
import Logging
import Synchronization

/// Sends queries that no earlier stage answered to the upstream resolvers, in the order the
/// strategy and their health give: each try has `timeout` seconds, and the whole loop one
/// `deadline`; a timeout, network error or SERVFAIL moves on to the next upstream. When every
/// upstream has failed, the last upstream SERVFAIL is relayed, or SERVFAIL is answered.
public final class Forwarder: Sendable {
    /// Every upstream: those of `--upstream` first, in their order, then those that only
    /// forward zones name. Health, sockets and metrics are kept per address, once each.
    public let upstreams: [SocketAddress]
    /// The indexes of `--upstream`'s upstreams: every name outside the forward zones.
    private let defaultGroup: [Int]
    /// The forward zones, each with its upstreams' indexes.
    let routes: ForwardRoutes
    /// Where names under the private reverse zones go (`--private-reverse`): false when every
    /// such name goes to the default upstreams like any other.
    private let keepsPrivateReverse: Bool
    /// The default upstreams with private addresses (not loopback: `PrivateReverse.isNetworksOwn`),
    /// which the private reverse names go to; empty when sinkhole answers them itself.
    public let privateGroup: [Int]
    public let timeout: Double
    /// Seconds for the whole retry loop of one query to the default upstreams; nil in the
    /// configuration means the timeout × their number (× a zone's number for that zone).
    public let deadline: Double
    private let configuredDeadline: Double?
    /// The longest retry loop of any query: over the default upstreams, a forward zone's or the
    /// private reverse ones (a graceful stop waits this long for the queries in flight).
    public let longestDeadline: Double
    public let strategy: UpstreamStrategy
    public let health: UpstreamHealth
    public let metrics: ServerMetrics?
    /// Pass the client's EDNS Client Subnet option upstream (`--forward-ecs`); off by default.
    public let forwardECS: Bool
    /// The UDP payload size we advertise to upstreams (RFC 6891), the same as to clients.
    public let payloadSize: UInt16
    private let sockets: UpstreamSockets
    /// Per upstream, its latency timer (nil without metrics).
    private let latency: [LatencyHistogram?]
    private let logger: Logger
    /// Per upstream, the outage under way (for the log): when it began, what has been said.
    private let outages: Mutex<[Outage]>
    /// Seconds between `upstream still down` lines for one upstream.
    let stillDownInterval: Double

    /// An upstream's time marked down, for the log: one line when it goes down, one a minute
    /// while it stays down, one when it answers again; the tries in between at debug level.
    /// (A down upstream that every query still reaches, when every upstream is down, would
    /// otherwise write a warning per query: thousands a second, in the journal.)
    struct Outage {
        var since: UInt64 = 0
        var lastLine: UInt64 = 0
        var failures = 0
        var failuresSinceLine = 0

        /// One more failed try while down, at `now`: the failures since the last line and how
        /// long it has been down when a line is due (`interval` after the last), else nil.
        /// `now` may be earlier than the times kept (a clock read on another core before a later
        /// one was stored): no line then. Unsigned, that wrapped: `down_seconds=18446744073`,
        /// and lines twice a second where one a minute was meant.
        mutating func failedAgain(at now: UInt64, interval: UInt64) -> (failures: Int, down: UInt64)? {
            failures += 1
            failuresSinceLine += 1
            // since 0: the core that marked it down has not recorded when yet (another lock).
            guard since != 0, now >= lastLine, now - lastLine >= interval else { return nil }
            defer { lastLine = now; failuresSinceLine = 0 }
            return (failuresSinceLine, now >= since ? now - since : 0)
        }
    }

    /// Per upstream, the pace of the lines said when it goes down, comes back, and fails a try
    /// while up. A random-subdomain attack makes an upstream flap: the attack's names time out
    /// three in a row and mark it down, the next real name marks it up. Each change was a line:
    /// 150 a second in a trial (381 downs and 381 recoveries in 10 s). Each kind is now said at
    /// most once a minute per upstream, with how many went unsaid since.
    struct Chatter {
        var down = LogPace(), downsUnsaid = 0
        var up = LogPace(), upsUnsaid = 0
        var failure = LogPace(), failuresUnsaid = 0
        /// A line about the state was held back, and the state is to be said once the minute
        /// is over (`sayState`), so that the log's last word agrees with sinkhole_upstream_up
        /// even when no later event would say it.
        var stateDue = false
    }
    private let chatter: Mutex<[Chatter]>
    /// The pace of the warning that TCP retries are all busy.
    private let localPace = Mutex(LogPace())
    /// The pace of the warning that an upstream answered for a forward zone it does not serve.
    private let foreignPace = Mutex(LogPace())
    /// The pace of the warning that an upstream refused a query.
    private let refusedPace = Mutex(LogPace())
    /// Per upstream, until when (uptime nanoseconds) it is asked without EDNS: one that answered
    /// only so. Without this memory every name cost it two queries, the first drawing a FORMERR.
    /// Kept 15 minutes and then learnt again, as Unbound keeps such a fact in its infra cache
    /// (`infra-host-ttl`), so an upgraded server is asked with EDNS again.
    private let plainDNS: [PlainDNS]
    static let plainDNSMemory: UInt64 = 900 * 1_000_000_000
    private final class PlainDNS: Sendable { let until = Atomic<UInt64>(0) }

    public convenience init(upstreams defaults: [SocketAddress], zones: [ForwardZone] = [], privateReverse: PrivateReverseMode = .auto,
                            timeout: Double, payloadSize: UInt16,
                            strategy: UpstreamStrategy = .first, deadline: Double? = nil, retryBackoff: Double = 5,
                            metrics: ServerMetrics? = nil, forwardECS: Bool = false, stillDownInterval: Double = 60, logger: Logger) {
        self.init(upstreams: defaults, zones: zones, privateReverse: privateReverse, timeout: timeout, payloadSize: payloadSize,
                  strategy: strategy, deadline: deadline, retryBackoff: retryBackoff, metrics: metrics, forwardECS: forwardECS,
                  stillDownInterval: stillDownInterval, tcpRetries: .shared, logger: logger)
    }

    /// The same with the threads that retry truncated answers over TCP given (tests).
    init(upstreams defaults: [SocketAddress], zones: [ForwardZone], privateReverse: PrivateReverseMode,
         timeout: Double, payloadSize: UInt16, strategy: UpstreamStrategy, deadline: Double?, retryBackoff: Double,
         metrics: ServerMetrics?, forwardECS: Bool, stillDownInterval: Double, tcpRetries: TCPRetries, logger: Logger) {
        self.metrics = metrics
        self.forwardECS = forwardECS
        var upstreams = defaults
        var routes: [ForwardRoutes.Route] = []
        for zone in zones {
            var group: [Int] = []
            for address in zone.upstreams {
                if let index = upstreams.firstIndex(of: address) {
                    group.append(index)
                } else {
                    group.append(upstreams.count)
                    upstreams.append(address)
                }
            }
            routes.append(.init(name: zone.name, upstreams: group))
        }
        self.upstreams = upstreams
        defaultGroup = Array(defaults.indices)
        keepsPrivateReverse = privateReverse != .forward
        privateGroup = privateReverse == .auto ? defaults.indices.filter { PrivateReverse.isNetworksOwn(defaults[$0].address) } : []
        self.routes = ForwardRoutes(routes)
        self.timeout = timeout
        self.strategy = strategy
        configuredDeadline = deadline
        self.deadline = deadline ?? timeout * Double(max(1, defaults.count))
        let largestGroup = max(defaults.count, routes.map(\.upstreams.count).max() ?? 0, privateGroup.count)
        longestDeadline = deadline ?? timeout * Double(max(1, largestGroup))
        self.health = UpstreamHealth(upstreams: upstreams, firstBackoff: retryBackoff)
        self.payloadSize = payloadSize
        self.logger = logger
        sockets = UpstreamSockets(upstreams: upstreams, tcpRetries: tcpRetries)
        latency = upstreams.map { metrics?.latencyTimer($0) }
        outages = Mutex(upstreams.map { _ in Outage() })
        chatter = Mutex(upstreams.map { _ in Chatter() })
        plainDNS = upstreams.map { _ in PlainDNS() }
        self.stillDownInterval = stillDownInterval
    }

    /// Whether upstream `index` is asked without EDNS now (for tests).
    func asksWithoutEDNS(_ index: Int) -> Bool {
        plainDNS[index].until.load(ordering: .relaxed) > DispatchTime.now().uptimeNanoseconds
    }

    /// Ends that memory for every upstream now, as its 15 minutes would (for tests).
    func expirePlainDNSMemory() {
        for slot in plainDNS { slot.until.store(1, ordering: .relaxed) }
    }

    /// Closes the upstream sockets and stops their loops; call once nothing is in flight.
    public func stop() {
        sockets.stop()
    }

    /// The per-core event loops that the upstream sockets (and the UDP listeners) run on.
    var eventLoops: [EventLoop] { sockets.loops }

    /// Upstream sockets open now (for tests).
    var openSockets: Int { sockets.openSockets }

    /// The message sent upstream, written by `out` (into the upstream send batch's slot, on a
    /// loop's thread): the client's question, RD and AD set, the client's CD, and our own OPT record with the client's
    /// DO bit (and its ECS option with `--forward-ecs`); no OPT record when `edns` is false (the
    /// retry to an upstream that answered FORMERR to one). Nothing else is passed on.
    func writeUpstreamQuery(for query: Query, edns: Bool = true, into out: inout WireWriter) {
        // Built from the bytes up (ldns_pkt2wire would allocate 64 KiB for these few dozen).
        out.put16(0)                                   // ID: set per try
        // RD always: the upstreams are recursive resolvers, and the answer may be cached and
        // served to every client. A client's RD=0 passed on had the upstream answer from its
        // own cache only (a CNAME without its target, a referral), which was then cached for
        // everyone. The reply keeps the client's RD. CD as the client set it (part of the cache
        // key). AD always (RFC 6840 5.7: "tell me whether you validated"): the answer then
        // carries the upstream's AD, and each client's reply keeps it only if that client asked
        // (`ReplyBuilder.relayedFlags`). Opcode QUERY.
        out.put16(query.header.flags & 0x0010 | 0x0100 | 0x0020)
        out.put16(1)
        out.put16(0)
        out.put16(0)
        out.put16(edns ? 1 : 0)
        out.append(query.question.name)
        out.put16(query.question.type)
        out.put16(query.question.qclass)
        guard edns else { return }
        let options = forwardECS ? (query.clientSubnet?.option ?? []) : []
        FastReply.appendOPT(&out, payloadSize: payloadSize, extendedRcode: 0,
                            dnssecOK: query.edns?.dnssecOK ?? false, options: options)
    }

    /// Forwards `job`'s query; `job.resolved` is called once, with the answer or the failure.
    func forward(_ job: ForwardJob) {
        // One clock read for the order, the deadline and the first try.
        let now = DispatchTime.now().uptimeNanoseconds
        job.forwarder = self
        if let route = routes.route(for: job.question.name) {
            probe(route.upstreams, like: job, now: now)
            job.order = health.order(strategy, among: route.upstreams, now: now)
            let loop = configuredDeadline ?? timeout * Double(route.upstreams.count)
            job.until = now + UInt64(max(0, loop) * 1e9)
        } else if keepsPrivateReverse, PrivateReverse.mayHold(job.question.name),
                  let zone = PrivateReverse.routes.route(for: job.question.name) {
            guard !privateGroup.isEmpty else {
                // No upstream of the network's own: answered here, never sent out.
                let answer = PrivateReverse.answer(for: job.question, zone: zone.name)
                return job.resolved(answer.map { .upstream($0, from: PrivateReverse.origin) }
                                    ?? .failure(rcode: Rcode.servFail, reason: "private reverse answer"))
            }
            probe(privateGroup, like: job, now: now)
            job.order = health.order(strategy, among: privateGroup, now: now)
            let loop = configuredDeadline ?? timeout * Double(privateGroup.count)
            job.until = now + UInt64(max(0, loop) * 1e9)
        } else {
            probe(defaultGroup, like: job, now: now)
            job.order = health.order(strategy, among: defaultGroup, now: now)
            job.until = now + UInt64(max(0, deadline) * 1e9)
        }
        // A chase ends with the query it is part of: the client waited that query's deadline
        // and the zone's whole one after it (4 + 2 s, past a stub's 5 s), and a graceful stop,
        // which waits the longest deadline, could give up on it (a review).
        if let chase = job as? Chase { job.until = min(job.until, chase.notAfter) }
        attempt(job, now: now)
    }

    /// Probes the upstreams of `group` that are down and due for a probe, with `job`'s question,
    /// beside the query and not in its way: the probe's answer only tells their health. Before,
    /// a down upstream was probed only by a query that reached it, which with `first` and a
    /// healthy upstream before it never came: a recovered standby stayed marked down (and
    /// `sinkhole_upstream_up` 0) for good. A real query no longer waits on a probe either.
    private func probe(_ group: [Int], like job: ForwardJob, now: UInt64) {
        for index in health.claimProbes(among: group, now: now, hold: timeout) {
            let probe = Probe(query: job.query)
            probe.forwarder = self
            probe.order = [index]
            probe.until = now + UInt64(timeout * 1e9)
            attempt(probe, now: now)
        }
    }

    /// The next try of `job`, or its resolution when no upstream or no time is left.
    private func attempt(_ job: ForwardJob, now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        let left = Double(Int64(job.until) - Int64(now)) / 1e9
        guard job.next < job.order.count, left > 0.001 else {
            return job.resolved(job.lastServfail ?? .failure(rcode: Rcode.servFail, reason: "no upstream answered"))
        }
        job.index = job.order[job.next]
        job.next += 1
        job.started = now
        if plainDNS[job.index].until.load(ordering: .relaxed) > now { job.withoutEDNS = job.index }
        // The last upstream to try waits for the rest of the deadline: a longer
        // --upstream-deadline lets a slow upstream answer (one that took 2.5 s, a cold lookup,
        // was cut off at its 2 s timeout with seconds of deadline left, and its answer dropped).
        let wait = job.next == job.order.count ? left : min(timeout, left)
        sockets.exchange(upstream: job.index, try: job, timeout: wait, now: now)
    }

    /// The outcome of `job`'s current try: its answer, or the next try.
    fileprivate func tried(_ job: ForwardJob, _ result: Result<UpstreamAnswer, UpstreamFailure>) {
        let index = job.index
        let upstream = upstreams[index]
        // A probe's reply tells only the health. One a query would have taken shows the upstream
        // back. One it would have passed over (SERVFAIL that is no DNSSEC verdict, REFUSED,
        // NOTIMP) is no recovery: before, any reply counted, so an upstream marked down for
        // answering SERVFAIL to every name came back at each probe, every 5 s, and three client
        // queries paid its round trip each time (a review). Nor is it held against it: the probe
        // asks a client's question, which may be a broken name (a later review). It stays down,
        // and the next probe, with another question, comes after the first back-off.
        if job is Probe, case .success(let reply) = result {
            let passedOver = (reply.rcode == Rcode.servFail && !reply.isValidationFailure)
                || reply.rcode == Rcode.refused || reply.rcode == Rcode.notImp
            guard passedOver else { return answered(job, reply, index: index) }
            logger.debug("probe answered without an answer: still down", metadata: [
                "upstream": "\(upstream)", "rcode": "\(Rcode.name(UInt16(reply.rcode)))",
                "dns.question.name": "\(WireName.text(job.question.name))",
            ])
            metrics?.upstreamFailed(upstream, reason: reply.rcode == Rcode.servFail ? "servfail" : "bad_reply")
            return attempt(job)
        }
        switch result {
        case .success(let reply) where reply.rcode == Rcode.formErr && !reply.hasOPT && job.withoutEDNS != index:
            // An upstream that does not know EDNS answers FORMERR, without an OPT record of its
            // own, to ours: asked again without it (RFC 6891 7: fall back to plain DNS), as
            // Unbound does. Its FORMERR went to the client, whose query was fine, or became
            // SERVFAIL. A FORMERR with an OPT comes from a server that knows EDNS: no retry.
            // Remembered for later queries only from a FORMERR that repeats our question: a
            // 12-byte one needs only the ID and port to forge, and would have switched the
            // upstream to plain DNS (no DO bit, 512 bytes) for everyone for 15 minutes (a review).
            job.withoutEDNS = index
            if !reply.withoutQuestion { job.learntPlain = index }
            job.next -= 1
            attempt(job)
        case .success(let reply) where [Rcode.formErr, Rcode.notImp, Rcode.refused].contains(reply.rcode):
            // FORMERR, NOTIMP or REFUSED, with or without the question: this upstream would not
            // take our query (its access list leaves sinkhole out, most often). The next one is
            // tried, and SERVFAIL answered when none would, as Unbound does: relaying FORMERR
            // would tell the client its own query was malformed, and a REFUSED relayed kept a
            // healthy second upstream from ever being asked. Not held against the upstream's
            // health at once: an odd question from a client draws it (NSD refuses a class it
            // does not serve so). It is held against it once another upstream answers the same
            // question (`answered`), as a SERVFAIL is: an upstream that refuses every query was
            // asked first for good, each query paying its round trip. A refusal is said at most
            // once a minute: an access list that leaves sinkhole out is the operator's to fix.
            if reply.rcode == Rcode.refused, refusedPace.withLock({ $0.due() }) {
                logger.warning("upstream refused a query: the next upstream is tried (is sinkhole's address allowed by it?) (said at most once a minute)", metadata: [
                    "upstream": "\(upstream)", "dns.question.name": "\(WireName.text(job.question.name))",
                ])
            } else {
                logger.debug("upstream would not take the query", metadata: [
                    "upstream": "\(upstream)", "rcode": "\(reply.rcode)",
                    "dns.question.name": "\(WireName.text(job.question.name))",
                ])
            }
            metrics?.upstreamFailed(upstream, reason: "bad_reply")
            job.passedOver.append((index, reply.rcode))
            attempt(job)
        case .success(let reply) where reply.facts.extendedRcode != 0:
            // An extended rcode (BADVERS, BADCOOKIE, ...) lives in the OPT record, which is
            // hop-by-hop (RFC 6891 6.1.1): it speaks of sinkhole's own query to this upstream,
            // not of the client's, and a client without EDNS could not even be told it. We ask
            // with version 0 and no cookie, so such a reply is a broken one: the next upstream
            // is tried, and SERVFAIL answered when none answers otherwise. As a header-only
            // error, not held against the upstream's health.
            logger.debug("upstream answered an extended rcode", metadata: [
                "upstream": "\(upstream)", "rcode": "\(Int(reply.facts.extendedRcode) << 4 | Int(reply.rcode))",
                "dns.question.name": "\(WireName.text(job.question.name))",
            ])
            metrics?.upstreamFailed(upstream, reason: "bad_reply")
            attempt(job)
        case .success(let reply) where reply.rcode == Rcode.servFail && !reply.isValidationFailure:
            // A validating upstream's DNSSEC verdict (SERVFAIL with EDE 6-12) is an answer, taken
            // below: it counted against the upstream's health, so three queries for a bogus
            // domain marked every validating upstream down, and each was asked in turn.
            // The next upstream is tried, but a SERVFAIL is not held against this one's health:
            // it answered, and SERVFAIL speaks of the name (a broken delegation) more often than
            // of the upstream; three such names in a row marked a healthy upstream down, with an
            // error in the log and sinkhole_upstream_up 0 (counted as reason servfail).
            // It is held against it once another upstream answers the same question otherwise
            // (`answered`): then the fault was this upstream's (its own resolution broken), and
            // one that fails every name is marked down as before.
            failed(index, "answered SERVFAIL", job.question, heldAgainst: false)
            metrics?.upstreamFailed(upstream, reason: "servfail")
            job.lastServfail = .upstream(reply, from: upstream)
            job.passedOver.append((index, reply.rcode))
            attempt(job)
        case .success(let reply):
            answered(job, reply, index: index)
        case .failure(.local(let why)):
            // Our own limit on TCP retries, not the upstream's fault: not held against it. The
            // next upstream is tried: only this one truncated, and another may answer over UDP
            // (a truncating upstream with a silent TCP side filled the retry threads, and queries
            // got SERVFAIL while a healthy second upstream had time left to answer).
            if localPace.withLock({ $0.due() }) {
                logger.warning("TCP retry not made: \(why); the next upstream is tried (said at most once a minute)", metadata: [
                    "upstream": "\(upstream)", "dns.question.name": "\(WireName.text(job.question.name))",
                ])
            }
            metrics?.upstreamFailed(upstream, reason: "local")
            attempt(job)
        case .failure(let failure):
            var waited: Double?
            if case .timeout = failure { waited = Double(DispatchTime.now().uptimeNanoseconds &- job.started) / 1e9 }
            failed(index, "\(failure)", job.question, waited: waited)
            metrics?.upstreamFailed(upstream, reason: failure.kind)
            attempt(job)
        }
    }

    /// An upstream's answer to `job` (or any reply to a probe): its health and latency, then
    /// the resolution. An upstream that passed the question over before (SERVFAIL, REFUSED) is
    /// held to have failed.
    private func answered(_ job: ForwardJob, _ reply: UpstreamAnswer, index: Int) {
        let upstream = upstreams[index]
        if job.learntPlain == index, reply.rcode != Rcode.formErr {
            // Answered without EDNS after a FORMERR to EDNS: asked so from now on, for a while.
            // Only a retry after a FORMERR sets it, never a query asked plain because of it:
            // one of those answered just after the expiry renewed it, and under load the
            // upstream was never asked with EDNS again.
            let now = DispatchTime.now().uptimeNanoseconds
            let until = plainDNS[index].until.load(ordering: .relaxed)
            if until <= now, plainDNS[index].until.compareExchange(expected: until, desired: now + Forwarder.plainDNSMemory,
                                                                   ordering: .relaxed).exchanged {
                logger.notice("upstream answers only without EDNS: asked without it for 15 minutes", metadata: ["upstream": "\(upstream)"])
            }
        }
        for earlier in job.passedOver where earlier.index != index && reply.rcode != Rcode.servFail {
            failed(earlier.index, "answered \(Rcode.name(UInt16(earlier.rcode))) where another upstream answered", job.question)
        }
        let nanoseconds = DispatchTime.now().uptimeNanoseconds &- job.started
        latency[index]?.recordNanoseconds(Int64(nanoseconds))
        if health.success(index, rtt: Double(nanoseconds) / 1e9) {
            let now = DispatchTime.now().uptimeNanoseconds
            let (since, failures) = outages.withLock { all -> (UInt64, Int) in
                defer { all[index] = Outage() }   // since 0 again: no outage under way
                return (all[index].since, all[index].failures)
            }
            var metadata: Logger.Metadata = [
                "upstream": "\(upstream)", "down_seconds": "\(since == 0 || since > now ? 0 : Forwarder.seconds(now - since))",
                "failures_while_down": "\(failures)",
            ]
            if let unsaid = paced(index, now: now, \.up, \.upsUnsaid) {
                if unsaid > 0 { metadata["recoveries_unsaid"] = "\(unsaid)" }
                logger.notice("upstream answering again", metadata: metadata)
            } else {
                logger.debug("upstream answering again", metadata: metadata)
            }
        }
        // A probe's answer tells only the health: nothing more to look at.
        if routes.isEmpty || job is Probe { return job.resolved(.upstream(reply, from: upstream)) }
        let (kept, message, crossing) = confined(reply, to: job.question.name, from: index)
        // A CNAME into a forward zone this upstream does not serve: its target is asked of
        // the zone's own servers and the two answers joined, as Unbound follows it (a public
        // name aliased into an internal zone: Azure Private Link's privatelink zones). Once
        // per query: a chase's own answer is not chased again.
        if let crossing, let message, !(job is Chase) {
            return chase(crossing, after: message, for: job, from: upstream)
        }
        job.resolved(.upstream(kept, from: upstream))
    }

    /// `reply` without the records it holds for names in a forward zone that the upstream
    /// `index` does not serve: a public resolver must not answer for the internal zone (`evil
    /// .example.net CNAME fs01.corp.example` with `fs01.corp.example A 6.6.6.6`, or a forged
    /// domain controller's address in the additional section). Such records are removed and the
    /// rest is relayed, or joined to the answer of the zone's servers for a CNAME into the zone
    /// (`chase`); said at most once a minute, as it may be an attack. Only with forward zones
    /// given (it decodes the reply).
    /// Also the decoded message kept, and the target of a CNAME in the chain from `name` that
    /// leads into such a zone (nil: none), for `chase`.
    private func confined(_ reply: UpstreamAnswer, to name: [UInt8], from index: Int)
        -> (UpstreamAnswer, Message?, [UInt8]?) {
        let own = routes.route(for: name)?.name
        guard let message = reply.message() else { return (reply, nil, nil) }
        func foreign(_ owner: [UInt8]) -> ForwardRoutes.Route? {
            guard let route = routes.route(for: owner), route.name != own, !route.upstreams.contains(index) else { return nil }
            return route
        }
        var zones: Set<String> = []
        let removed = message.removeRecords { owner in
            guard let route = foreign(owner) else { return false }
            zones.insert(WireName.text(route.name))
            return true
        }
        // The chain from the name asked, through the CNAMEs kept, to a target in such a zone.
        var crossing: [UInt8]?
        var current = name
        let cnames = message.records(.answer).filter { $0.type == RRType.cname }
        for _ in 0..<cnames.count {
            guard let next = cnames.first(where: { WireName.equalIgnoringCase($0.owner, current) }) else { break }
            if foreign(next.rdata) != nil {
                crossing = next.rdata
                break
            }
            current = next.rdata
        }
        if removed > 0, foreignPace.withLock({ $0.due() }) {
            logger.warning("upstream answered for a forward zone it does not serve; those records removed (said at most once a minute)", metadata: [
                "upstream": "\(upstreams[index])", "dns.question.name": "\(WireName.text(name))",
                "zones": "\(zones.sorted().joined(separator: ","))", "records_removed": "\(removed)",
            ])
        }
        guard removed > 0, let kept = UpstreamAnswer(message: message) else { return (reply, crossing == nil ? nil : message, crossing) }
        return (kept, message, crossing)
    }

    /// Asks `target` (the type and class of `job`'s question) of its zone's servers, and resolves
    /// `job` with `chain` (the first answer, its foreign records removed) joined to that answer:
    /// the chain's CNAMEs, then the target's records, rcode and authority. A failure of the
    /// chase is the query's failure.
    private func chase(_ target: [UInt8], after chain: Message, for job: ForwardJob, from upstream: SocketAddress) {
        let query = job.query
        let question = Question(name: target, type: job.question.type, qclass: job.question.qclass)
        var asked = Query(header: query.header, question: question, edns: query.edns, client: query.client, transport: query.transport)
        asked.clientSubnet = query.clientSubnet
        forward(Chase(query: asked, notAfter: job.until) { resolution in
            guard case .upstream(let answer, _) = resolution, let message = answer.message() else { return job.resolved(resolution) }
            chain.join(answerOf: message)
            job.resolved(UpstreamAnswer(message: chain).map { .upstream($0, from: upstream) }
                         ?? .failure(rcode: Rcode.servFail, reason: "joined answer"))
        })
    }

    /// Whether a line of this kind for upstream `index` is due (at most once a minute): the
    /// number of such lines not said since the last one, or nil when it is not due (and is
    /// counted as unsaid).
    private func paced(_ index: Int, now: UInt64, _ pace: WritableKeyPath<Chatter, LogPace>,
                       _ unsaid: WritableKeyPath<Chatter, Int>) -> Int? {
        let (said, scheduleState) = chatter.withLock { all -> (Int?, Bool) in
            guard all[index][keyPath: pace].due(now) else {
                all[index][keyPath: unsaid] += 1
                // A held-back change of state (not a failed try) is said when the minute is over.
                let schedule = pace != \Chatter.failure && !all[index].stateDue
                if schedule { all[index].stateDue = true }
                return (nil, schedule)
            }
            defer { all[index][keyPath: unsaid] = 0 }
            return (all[index][keyPath: unsaid], false)
        }
        if scheduleState {
            // A minute, as the pace; tests shorten it with --upstream-still-down-interval's setting.
            DispatchQueue.global().asyncAfter(deadline: .now() + min(60, stillDownInterval)) { [weak self] in
                self?.sayState(index)
            }
        }
        return said
    }

    /// Once a minute of held-back up/down lines is over: the upstream's state now, and how often
    /// it changed unsaid, in one line (error while down, notice while up).
    private func sayState(_ index: Int) {
        let now = DispatchTime.now().uptimeNanoseconds
        let (downs, ups) = chatter.withLock { all -> (Int, Int) in
            defer {
                all[index].stateDue = false
                all[index].downsUnsaid = 0
                all[index].upsUnsaid = 0
            }
            guard all[index].downsUnsaid + all[index].upsUnsaid > 0 else { return (0, 0) }
            all[index].down.said(now)
            all[index].up.said(now)
            return (all[index].downsUnsaid, all[index].upsUnsaid)
        }
        guard downs + ups > 0 else { return }
        let metadata: Logger.Metadata = [
            "upstream": "\(upstreams[index])", "times_marked_down_unsaid": "\(downs)", "recoveries_unsaid": "\(ups)",
        ]
        if health.isDown(index) {
            logger.error("upstream is down, after flapping: marked down and back again more than once in the last minute", metadata: metadata)
        } else {
            logger.notice("upstream is answering, after flapping: marked down and back again more than once in the last minute", metadata: metadata)
        }
    }

    private func failed(_ index: Int, _ reason: String, _ question: Question, waited: Double? = nil, heldAgainst: Bool = true) {
        let markedDown = heldAgainst && health.failure(index, waited: waited)
        let now = DispatchTime.now().uptimeNanoseconds
        let metadata: Logger.Metadata = [
            "upstream": "\(upstreams[index])", "reason": "\(reason)",
            "dns.question.name": "\(WireName.text(question.name))",
        ]
        if markedDown {
            outages.withLock { $0[index] = Outage(since: now, lastLine: now) }
            if let unsaid = paced(index, now: now, \.down, \.downsUnsaid) {
                var more = metadata
                if unsaid > 0 { more["times_marked_down_unsaid"] = "\(unsaid)" }
                logger.error("upstream marked down after \(UpstreamHealth.downAfter) failures in a row; probing it again later",
                             metadata: more)
            } else {
                logger.debug("upstream marked down", metadata: metadata)
            }
        } else if health.isDown(index) {
            let interval = UInt64(stillDownInterval * 1e9)
            let summary = outages.withLock { all in
                // The clock read under the lock: no time kept by another core is later.
                all[index].failedAgain(at: DispatchTime.now().uptimeNanoseconds, interval: interval)
            }
            if let summary {
                var more = metadata
                more["failures"] = "\(summary.failures)"
                more["down_seconds"] = "\(Forwarder.seconds(summary.down))"
                logger.warning("upstream still down", metadata: more)
            } else {
                logger.debug("upstream try failed", metadata: metadata)
            }
        } else if let unsaid = paced(index, now: now, \.failure, \.failuresUnsaid) {
            var more = metadata
            if unsaid > 0 { more["failures_unsaid"] = "\(unsaid)" }
            logger.warning("upstream try failed", metadata: more)
        } else {
            logger.debug("upstream try failed", metadata: metadata)
        }
    }

    /// Nanoseconds as whole seconds, for the log.
    private static func seconds(_ nanoseconds: UInt64) -> Int { Int(nanoseconds / 1_000_000_000) }
}

/// A try at one down upstream with a client's question, whose answer only tells the upstream's
/// health (`Forwarder.probe`).
final class Probe: ForwardJob, @unchecked Sendable {
    override func resolved(_ resolution: Resolution) {}
}

/// The target of a CNAME into a forward zone, asked of the zone's servers (`Forwarder.chase`).
final class Chase: ForwardJob, @unchecked Sendable {
    private let done: (Resolution) -> Void
    /// The deadline of the query that it chases for (uptime ns): its own ends no later.
    let notAfter: UInt64

    init(query: Query, notAfter: UInt64, done: @escaping (Resolution) -> Void) {
        self.done = done
        self.notAfter = notAfter
        super.init(query: query)
    }

    override func resolved(_ resolution: Resolution) { done(resolution) }
}

/// One query's way through the upstreams, held in one object: the message sent, the upstreams
/// still to try and the deadline of the whole loop. Each try's outcome comes back to it
/// (`finished`), so a try needs no closure (and no heap context) of its own, and the socket
/// table holds one reference per try instead of the message, the question and a completion.
/// The caller subclasses it and is told the resolution in `resolved`, once. Its state changes
/// only between tries, one try at a time, each handed over under the socket table's lock.
class ForwardJob: UpstreamTry, @unchecked Sendable {
    /// The client's query: the message sent is written from it for each try (straight into the
    /// send batch on a loop's thread) instead of kept as an array; a probe or a chase is made
    /// from it too.
    let query: Query
    fileprivate var forwarder: Forwarder?
    fileprivate var order: [Int] = []
    fileprivate var next = 0
    /// The deadline of the whole retry loop, in uptime nanoseconds.
    fileprivate var until: UInt64 = 0
    fileprivate var lastServfail: Resolution?
    /// The upstream that answered FORMERR to our OPT record, asked again without one, or known
    /// to answer only so (-1: none).
    fileprivate var withoutEDNS = -1
    /// The upstream asked again without OPT after its FORMERR to it (-1: none): its answer
    /// starts the memory of an upstream without EDNS.
    fileprivate var learntPlain = -1
    /// The upstreams that answered SERVFAIL, REFUSED, NOTIMP or FORMERR so far, with the rcode
    /// (held against them if another answers).
    fileprivate var passedOver: [(index: Int, rcode: UInt8)] = []
    /// The upstream of the current try, and when it was sent.
    fileprivate var index = 0
    fileprivate var started: UInt64 = 0

    init(query: Query) {
        self.query = query
        super.init(question: query.question)
    }

    override final func writeQuery(into out: inout WireWriter) {
        forwarder?.writeUpstreamQuery(for: query, edns: withoutEDNS != index, into: &out)
    }

    /// The answer, or the failure once every upstream failed or the deadline passed.
    func resolved(_ resolution: Resolution) {
        preconditionFailure("ForwardJob.resolved must be overridden")
    }

    override final func finished(_ result: Result<UpstreamAnswer, UpstreamFailure>) {
        forwarder?.tried(self, result)
    }
}
