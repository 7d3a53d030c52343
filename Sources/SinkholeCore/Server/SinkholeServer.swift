import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization

/// The running sinkhole: lists loaded, block log open, listeners bound, queries flowing through
/// the `QueryChain`. Start-up fails with a readable error before anything binds when the list
/// directory or block log cannot be used, and when an address cannot be bound.
public final class SinkholeServer: Sendable {
    public let configuration: ServerConfiguration
    public let store: BlocklistStore
    public let blockLog: BlockLog?
    public let syslog: SyslogSink?
    /// The query history and its retro-hunter, when `--query-history` is on.
    public let history: QueryHistory?
    public let hunter: RetroHunter?
    public let chain: QueryChain
    public let metrics = ServerMetrics()
    private let metricsServer = Mutex<MetricsServer?>(nil)
    private let stopping = Atomic<Bool>(false)
    /// Signalled once a stop has closed the listeners to new queries (and waits for those in
    /// flight); each waiter signals it again for the next.
    private let draining = DispatchSemaphore(value: 0)
    private let logger: Logger
    private let watcher: DirectoryWatcher
    private let listeners = Mutex<(udp: [UDPListener], tcp: [TCPListener])>(([], []))

    public init(configuration: ServerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        store = BlocklistStore()
        let report = try store.refresh(directory: configuration.blocklistDirectory)
        BlocklistStore.log(report, logger: logger)
        SinkholeServer.logTotals(store.snapshot, seconds: report.seconds, logger: logger)
        let directory = configuration.blocklistDirectory
        let store = self.store
        syslog = configuration.syslog.map { SyslogSink(target: $0, logger: logger) }
        if configuration.blockLogPath != nil || syslog != nil {
            var forward: (@Sendable ([BlockEvent]) -> Void)?
            if let sink = syslog { forward = { events in sink.enqueue(events) } }
            blockLog = try BlockLog(path: configuration.blockLogPath, rotation: configuration.blockLogRotation,
                                    logger: logger, forward: forward)
        } else {
            blockLog = nil
        }
        if let path = configuration.queryHistoryPath {
            var options = QueryHistory.Options()
            options.retention = configuration.historyRetention
            options.capacity = configuration.historyCapacity
            history = try SinkholeServer.openHistory(path: path, options: options, logger: logger)
        } else {
            history = nil
        }
        if let history {
            let log = blockLog
            let metrics = self.metrics
            hunter = RetroHunter(history: history, logger: logger) { hits in
                // Every hit goes to the block log (and syslog); the operational log names the
                // first few and counts the rest, so a large hunt does not flood it.
                for (index, hit) in hits.enumerated() {
                    if index < SinkholeServer.retroHitsLogged {
                        logger.warning("retro-hit: client resolved a name before a list blocked it", metadata: [
                            "source.ip": "\(hit.client)", "dns.question.name": "\(hit.name)", "rule.name": "\(hit.rule.rule)",
                            "rule.ruleset": "\(hit.rule.list)", "count": "\(hit.count)",
                            "first_seen": "\(ReportTime.format(hit.firstSeen))", "last_seen": "\(ReportTime.format(hit.lastSeen))",
                        ])
                    }
                    log?.record(BlockEvent.retroHit(hit))
                }
                if hits.count > SinkholeServer.retroHitsLogged {
                    logger.warning("more retro-hits: see the block log (event.action retro-hit)", metadata: [
                        "count": "\(hits.count - SinkholeServer.retroHitsLogged)",
                    ])
                }
                metrics.retroHits(hits.count)
            }
        } else {
            hunter = nil
        }
        let hunter = self.hunter
        watcher = DirectoryWatcher(directory: directory, logger: logger) { beingWritten, writtenInPlace in
            SinkholeServer.refresh(store, directory: directory, force: false, holding: beingWritten, writtenInPlace: writtenInPlace,
                                   hunter: hunter, logger: logger)
        }
        syslog?.start()
        let blocking = BlockingStage(store: store, policy: configuration.blockPolicy, log: blockLog)
        let forwarder = Forwarder(upstreams: configuration.upstreams, zones: configuration.forwardZones,
                                  privateReverse: configuration.privateReverse,
                                  timeout: configuration.upstreamTimeout,
                                  payloadSize: configuration.ednsPayloadSize, strategy: configuration.upstreamStrategy,
                                  deadline: configuration.upstreamDeadline,
                                  retryBackoff: configuration.upstreamRetryBackoff, metrics: metrics,
                                  forwardECS: configuration.forwardECS,
                                  stillDownInterval: configuration.upstreamStillDownInterval, logger: logger)
        chain = QueryChain(blocking: blocking, forwarder: forwarder,
                           replies: ReplyBuilder(payloadSize: configuration.ednsPayloadSize, echoesClientSubnet: configuration.forwardECS),
                           access: configuration.access, refuseAction: configuration.refuseAction,
                           rateLimiter: configuration.rateLimit > 0
                               ? RateLimiter(queriesPerSecond: configuration.rateLimit, burst: configuration.rateLimitBurst,
                                             ipv4Prefix: configuration.rateLimitIPv4Prefix,
                                             ipv6Prefix: configuration.rateLimitIPv6Prefix) : nil,
                           rateLimitAction: configuration.rateLimitAction, maxInFlight: configuration.maxInFlight,
                           metrics: metrics,
                           cache: configuration.cacheBytes > 0
                               ? AnswerCache(budgetBytes: configuration.cacheBytes, minTTL: configuration.cacheMinTTL,
                                             maxTTL: configuration.cacheMaxTTL, serveStale: configuration.serveStale) : nil,
                           trustECSFrom: AccessPolicy(rules: configuration.trustECSFrom.compactMap { try? AccessPolicy.parse($0, allow: true) }),
                           history: history, fastPath: configuration.fastPath,
                           staleAnswerAfter: configuration.staleAnswerAfter, logger: logger)
    }

    /// Retro-hits of one hunt named one by one in the operational log.
    static let retroHitsLogged = 20

    static func logTotals(_ blocklist: Blocklist, seconds: Double, logger: Logger) {
        // Serving with nothing to block is allowed (a new install, a directory being filled),
        // but never quietly: the SOC would take the service for protection.
        let level: Logger.Level = blocklist.entryCount == 0 ? .warning : .info
        logger.log(level: level, blocklist.entryCount == 0 ? "blocklists in force: no entry, nothing is blocked" : "blocklists in force", metadata: [
            "lists": "\(blocklist.loaded.count)", "entries": "\(blocklist.entryCount)",
            "generation": "\(blocklist.generation)", "seconds": "\(String(format: "%.3f", seconds))",
        ])
    }

    /// Opens the query history. A file that is not an SQLite database, or a damaged one, is data
    /// gone bad, not a configuration error: it is moved aside (with its -wal and -shm), kept for
    /// whoever wants to look at it, and a new history is started, so that neither DNS nor the
    /// history stays down over it. Anything else (a missing directory, permissions) is the
    /// configuration's and fails the start with its reason, as before.
    static func openHistory(path: String, options: QueryHistory.Options, logger: Logger) throws -> QueryHistory {
        do {
            return try QueryHistory(path: path, options: options, logger: logger)
        } catch let error as QueryHistory.HistoryError where error.notADatabase {
            let aside = "\(path).unreadable-\(Int(Date().timeIntervalSince1970))"
            guard rename(path, aside) == 0 else { throw error }
            for suffix in ["-wal", "-shm"] { _ = rename(path + suffix, aside + suffix) }
            logger.error("query history is not a readable database: moved aside, a new one started", metadata: [
                "path": "\(path)", "moved_to": "\(aside)", "error": "\(error.description)",
            ])
            return try QueryHistory(path: path, options: options, logger: logger)
        }
    }

    /// Re-reads what changed (everything when `force`), swaps, and logs; never throws.
    /// A change queues a retro-hunt of the history for what the changed lists newly block.
    static func refresh(_ store: BlocklistStore, directory: String, force: Bool, holding: Set<String>,
                        writtenInPlace: Set<String> = [], hunter: RetroHunter?, logger: Logger) {
        do {
            let report = try store.refresh(directory: directory, force: force, holding: holding, writtenInPlace: writtenInPlace)
            BlocklistStore.log(report, logger: logger)
            if report.changed { logTotals(store.snapshot, seconds: report.seconds, logger: logger) }
            if !report.loaded.isEmpty { hunter?.listsChanged(report.loaded, previous: report.previous, store: store) }
        } catch {
            logger.error("blocklist reload failed; the lists in force stay", metadata: ["error": "\(error)"])
        }
    }

    /// The addresses actually bound (a port 0 request is replaced by the port the kernel chose;
    /// UDP and TCP share it).
    public var boundAddresses: [SocketAddress] {
        listeners.withLock { $0.tcp.map(\.address) }
    }

    /// Binds UDP and TCP on every listen address and starts answering.
    public func start() throws {
        let handler: QueryHandler = { [chain] packet, client, transport, respond in
            chain.handle(bytes: packet, client: client, transport: transport, respond: respond)
        }
        var udp: [UDPListener] = []
        var tcp: [TCPListener] = []
        do {
            for address in configuration.listen {
                let (u, t) = try bindPair(address, handler: handler)
                udp += u
                tcp.append(t)
            }
        } catch {
            udp.forEach { $0.stop(); $0.close() }
            tcp.forEach { $0.stop() }
            throw error
        }
        listeners.withLock { $0 = (udp, tcp) }
        if let address = configuration.metricsListen {
            do {
                let server = try SinkholeServer.naming("metrics, HTTP over TCP") {
                    try MetricsServer(address: address) { [weak self] path in self?.route(path) }
                }
                metricsServer.withLock { $0 = server }
                server.start()
                logger.info("metrics on http://\(server.address)/metrics")
            } catch {
                udp.forEach { $0.stop(); $0.close() }
                tcp.forEach { $0.stop() }
                throw error
            }
        }
        if let user = configuration.user {
            do {
                let identity = try Privileges.resolve(user: user, group: configuration.group)
                blockLog?.chown(to: identity)
                if let path = history?.path {
                    for file in [path, path + "-wal", path + "-shm"] { _ = Glibc.chown(file, identity.uid, identity.gid) }
                }
                try Privileges.drop(to: identity)
                logger.info("dropped privileges", metadata: ["user": "\(user)", "uid": "\(identity.uid)", "gid": "\(identity.gid)"])
            } catch {
                udp.forEach { $0.stop(); $0.close() }
                tcp.forEach { $0.stop() }
                throw error
            }
        }
        watcher.start()
        do {
            try udp.forEach { try $0.start() }
        } catch {
            udp.forEach { $0.stop(); $0.close() }
            tcp.forEach { $0.stop() }
            throw error
        }
        // Lists may have changed while sinkhole was down: hunt once for all of them (pairs
        // already reported are not reported again).
        hunter?.listsChanged(store.snapshot.loaded, previous: [:], store: store)
        for t in tcp {
            t.start()
            logger.info("listening on \(t.address)", metadata: [
                "network.transport": "udp,tcp", "udp.sockets": "\(SinkholeServer.udpSocketsPerAddress)",
            ])
        }
    }

    /// UDP then TCP on the same port; for port 0 the kernel picks the UDP port and TCP follows
    /// it (retried a few times if that TCP port happens to be taken).
    /// UDP sockets per listen address: one per core, joined with SO_REUSEPORT so the kernel spreads
    /// queries over them and each is drained by its own core's event loop.
    static let udpSocketsPerAddress = CPUs.usable

    /// Binds UDP and TCP on the same port. A plain probe bind first (no SO_REUSEPORT) makes a port
    /// already in use fail clearly, even by another sinkhole; for port 0 it also picks the port;
    /// TCP is bound next, then the SO_REUSEPORT UDP sockets on that port.
    private func bindPair(_ address: SocketAddress, handler: @escaping QueryHandler) throws -> ([UDPListener], TCPListener) {
        var lastError: Error?
        for _ in 0..<(address.port == 0 ? 8 : 1) {
            let probe = try SinkholeServer.naming("DNS over UDP") { try Socket.bound(address, type: Int32(SOCK_DGRAM.rawValue)) }
            let port = SocketAddress.local(of: probe) ?? address
            do {
                let tcp = try SinkholeServer.naming("DNS over TCP") {
                    try TCPListener(address: port, queue: DispatchQueue(label: "sinkhole.tcp.accept"),
                                    idleTimeout: configuration.tcpIdleTimeout,
                                    maxConnections: configuration.tcpMaxConnections,
                                    maxPerClient: configuration.tcpMaxPerClient,
                                    maxQueries: configuration.tcpMaxQueries, logger: logger, handler: handler)
                }
                Glibc.close(probe)
                var udp: [UDPListener] = []
                do {
                    let loops = chain.forwarder.eventLoops
                    for i in 0..<SinkholeServer.udpSocketsPerAddress {
                        udp.append(try SinkholeServer.naming("DNS over UDP") {
                            try UDPListener(address: port, loop: loops[i % loops.count], reusePort: true, handler: handler)
                        })
                    }
                } catch {
                    udp.forEach { $0.stop(); $0.close() }
                    tcp.stop()
                    throw error
                }
                return (udp, tcp)
            } catch {
                lastError = error
                Glibc.close(probe)
            }
        }
        throw lastError ?? SystemError("bind \(address)", EADDRINUSE)
    }

    /// Runs `body`, naming in a failed system call's error which of sinkhole's sockets it was
    /// for (`bind 127.0.0.1:53 (DNS over UDP): Address already in use`).
    static func naming<T>(_ socket: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as SystemError {
            throw SystemError("\(error.operation) (\(socket))", error.code)
        }
    }

    /// The address the metrics endpoint is bound to, when it is on.
    public var metricsAddress: SocketAddress? { metricsServer.withLock { $0?.address } }

    /// Responses of the metrics endpoint.
    func route(_ path: String) -> (status: Int, contentType: String, body: String)? {
        switch path {
        case "/metrics":
            let (_, tcp) = listeners.withLock { ($0.udp, $0.tcp) }
            let snapshot = store.snapshot
            metrics.update(lists: snapshot.loaded, failedLists: store.failedFiles,
                           reloadTimes: Dictionary(snapshot.loaded.map { ($0.name, $0.loadedAt) }, uniquingKeysWith: { a, _ in a }),
                           blockLog: blockLog?.counts, tcpOpen: tcp.reduce(0) { $0 + $1.openConnections },
                           upstreams: zip(chain.forwarder.upstreams, chain.forwarder.health.snapshot).map { ($0, !$1.down) })
            if let history { metrics.update(history: history.counts) }
            metrics.update(inflight: chain.inFlight, limitServfails: chain.counters.overloaded)
            if let cache = chain.cache { metrics.update(cache: cache.stats) }
            return (200, "text/plain; version=0.0.4; charset=utf-8", metrics.exposition())
        case "/health":
            if stopping.load(ordering: .relaxed) { return (503, "text/plain; charset=utf-8", "stopping\n") }
            return (200, "text/plain; charset=utf-8", "ok\n")
        default:
            return nil
        }
    }

    /// Graceful stop: no new queries, in-flight ones answered (or failed at their deadline),
    /// block log flushed and closed.
    public func stop() {
        let (udp, tcp) = listeners.withLock { ($0.udp, $0.tcp) }
        stopping.store(true, ordering: .relaxed)
        watcher.stop()
        udp.forEach { $0.stop() }
        tcp.forEach { $0.stop() }
        draining.signal()
        let budget = chain.forwarder.longestDeadline + 1
        if !chain.waitForInFlight(timeout: budget) {
            logger.warning("stopping with queries still in flight")
        }
        udp.forEach { $0.close() }
        chain.forwarder.stop()
        metricsServer.withLock { $0?.stop() }
        history?.close()
        blockLog?.close()
        syslog?.stop()
        logger.info("stopped")
    }

    /// Waits until a stop has closed the listeners and waits for the queries in flight; false
    /// after `timeout` seconds.
    public func waitUntilDraining(timeout: Double) -> Bool {
        guard draining.wait(timeout: .now() + timeout) == .success else { return false }
        draining.signal()
        return true
    }

    /// SIGHUP: reopen the block log (logrotate) and re-read every list.
    public func reload() {
        blockLog?.reopen()
        SinkholeServer.refresh(store, directory: configuration.blocklistDirectory, force: true, holding: watcher.beingWritten,
                               hunter: hunter, logger: logger)
    }
}
