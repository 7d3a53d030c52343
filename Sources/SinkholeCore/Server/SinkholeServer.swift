import Dispatch
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
    public let chain: QueryChain
    private let logger: Logger
    private let listeners = Mutex<(udp: [UDPListener], tcp: [TCPListener])>(([], []))

    public init(configuration: ServerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let report = try BlocklistLoader.load(directory: configuration.blocklistDirectory)
        SinkholeServer.log(report, logger: logger)
        store = BlocklistStore(report.blocklist)
        blockLog = try configuration.blockLogPath.map { try BlockLog(path: $0, logger: logger) }
        let blocking = BlockingStage(store: store, policy: configuration.blockPolicy, log: blockLog)
        let forwarder = Forwarder(upstreams: configuration.upstreams, timeout: configuration.upstreamTimeout,
                                  payloadSize: configuration.ednsPayloadSize, logger: logger)
        chain = QueryChain(blocking: blocking, forwarder: forwarder,
                           replies: ReplyBuilder(payloadSize: configuration.ednsPayloadSize), logger: logger)
    }

    /// Logs what a load found: per-file counts at info, each bad line at warning, unusable files at error.
    public static func log(_ report: LoadReport, logger: Logger) {
        for error in report.lineErrors {
            logger.warning("\(error.description)")
        }
        for (path, reason) in report.fileErrors {
            logger.error("list not loaded", metadata: ["file.path": "\(path)", "reason": "\(reason)"])
        }
        for list in report.blocklist.lists {
            logger.info("list loaded", metadata: [
                "file.path": "\(list.path)", "entries": "\(list.entries)", "rejected_lines": "\(list.rejectedLines)",
            ])
        }
        logger.info("blocklists ready", metadata: [
            "lists": "\(report.blocklist.lists.count)", "entries": "\(report.blocklist.entryCount)",
            "seconds": "\(String(format: "%.3f", report.seconds))",
        ])
    }

    /// The addresses actually bound (a port 0 request is replaced by the port the kernel chose;
    /// UDP and TCP share it).
    public var boundAddresses: [SocketAddress] {
        listeners.withLock { $0.udp.map(\.address) }
    }

    /// Binds UDP and TCP on every listen address and starts answering.
    public func start() throws {
        let handler: QueryHandler = { [chain] packet, client, transport, respond in
            chain.handle(packet, client: client, transport: transport, respond: respond)
        }
        var udp: [UDPListener] = []
        var tcp: [TCPListener] = []
        do {
            for address in configuration.listen {
                let (u, t) = try bindPair(address, handler: handler)
                udp.append(u)
                tcp.append(t)
            }
        } catch {
            udp.forEach { $0.stop(); $0.close() }
            tcp.forEach { $0.stop() }
            throw error
        }
        listeners.withLock { $0 = (udp, tcp) }
        for (u, t) in zip(udp, tcp) {
            u.start()
            t.start()
            logger.info("listening on \(u.address)", metadata: ["network.transport": "udp,tcp"])
        }
    }

    /// UDP then TCP on the same port; for port 0 the kernel picks the UDP port and TCP follows
    /// it (retried a few times if that TCP port happens to be taken).
    private func bindPair(_ address: SocketAddress, handler: @escaping QueryHandler) throws -> (UDPListener, TCPListener) {
        var lastError: Error?
        for _ in 0..<(address.port == 0 ? 8 : 1) {
            let udp = try UDPListener(address: address, queue: DispatchQueue(label: "sinkhole.udp"), handler: handler)
            do {
                let tcp = try TCPListener(address: udp.address, queue: DispatchQueue(label: "sinkhole.tcp.accept"),
                                          idleTimeout: configuration.tcpIdleTimeout,
                                          maxConnections: configuration.tcpMaxConnections, handler: handler)
                return (udp, tcp)
            } catch {
                lastError = error
                udp.stop()
                udp.close()
            }
        }
        throw lastError ?? SystemError("bind \(address)", EADDRINUSE)
    }

    /// Graceful stop: no new queries, in-flight ones answered (or failed at their deadline),
    /// block log flushed and closed.
    public func stop() {
        let (udp, tcp) = listeners.withLock { ($0.udp, $0.tcp) }
        udp.forEach { $0.stop() }
        tcp.forEach { $0.stop() }
        let budget = configuration.upstreamTimeout * Double(max(1, configuration.upstreams.count)) + 1
        if !chain.waitForInFlight(timeout: budget) {
            logger.warning("stopping with queries still in flight")
        }
        udp.forEach { $0.close() }
        blockLog?.close()
        logger.info("stopped")
    }

    /// SIGHUP: reopen the block log (logrotate) and reload the lists.
    public func reload() {
        blockLog?.reopen()
        do {
            let report = try BlocklistLoader.load(directory: configuration.blocklistDirectory)
            SinkholeServer.log(report, logger: logger)
            store.replace(report.blocklist)
        } catch {
            logger.error("blocklist reload failed; previous lists stay in force", metadata: ["error": "\(error)"])
        }
    }
}
