import Dispatch
import Glibc
import Logging
import Synchronization

/// Accepts DNS-over-TCP connections (RFC 7766) on one socket and hands each to a `TCPConnection`.
///
/// At most `maxConnections` are open at once; a connection past the cap is accepted and closed
/// at once, so the kernel's backlog never fills with clients that would wait for nothing.
///
/// Out of descriptors or memory, accepting pauses (`AcceptPause`) rather than spinning, and the
/// operator's log says so at most once a minute.
public final class TCPListener: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let source: DispatchSourceRead
    private let handler: QueryHandler
    private var started = false
    private let idleTimeout: Double
    private let maxConnections: Int
    private let connections = Mutex<[ObjectIdentifier: TCPConnection]>([:])
    private let connectionQueues = QueuePool(label: "sinkhole.tcp.connection")

    private let maxPerClient: Int
    private let maxQueries: Int
    private let logger: Logger?
    private let pause: AcceptPause
    /// The shortage's warnings: their pace, and how many shortages since the last (on the
    /// accept queue).
    private var warningPace = LogPace()
    private var shortagesSinceWarning = 0

    public init(address requested: SocketAddress, queue: DispatchQueue, idleTimeout: Double,
                maxConnections: Int, maxPerClient: Int = 16, maxQueries: Int = 1000,
                logger: Logger? = nil, handler: @escaping QueryHandler) throws {
        self.maxPerClient = maxPerClient
        self.logger = logger
        self.maxQueries = maxQueries
        (fd, address) = try Socket.listening(requested, backlog: 128)
        self.handler = handler
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        pause = AcceptPause(source: source, queue: queue)
        let fd = self.fd
        source.setCancelHandler { Glibc.close(fd) }
    }

    public var openConnections: Int { connections.withLock { $0.count } }

    public func start() {
        source.setEventHandler { [unowned self] in self.acceptAll() }
        started = true
        source.resume()
    }

    /// Stops accepting and stops reading on every open connection; replies to queries already
    /// received are still written, then each connection closes.
    public func stop() {
        // A Dispatch source must be resumed once before it may be cancelled and released.
        if !started { started = true; source.resume() }
        // Cancelled before a source suspended for a shortage is resumed (by `pause.stop()`, so
        // that its cancellation completes): resumed first, it could accept one more connection
        // after the open ones are listed below.
        source.cancel()
        pause.stop()
        let open = connections.withLock { Array($0.values) }
        for connection in open { connection.finish() }
    }

    private func acceptAll() {
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept(fd, $0, &length)
                }
            }
            if client < 0 {
                let error = errno
                if error == EINTR || error == ECONNABORTED || error == EPROTO { continue }
                if AcceptPause.isShortage(error) { shortage(error) }
                return
            }
            Socket.setNonBlocking(client)
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            guard let peer = SocketAddress(storage: &storage), openConnections < maxConnections,
                  connections.withLock({ open in open.values.filter { $0.peerAddress == peer.address }.count }) < maxPerClient else {
                Glibc.close(client)
                continue
            }
            let queue = connectionQueues.queue()
            let connection = TCPConnection(fd: client, peer: peer, queue: queue, idleTimeout: idleTimeout,
                                           maxQueries: maxQueries, handler: handler) { [weak self] closed in
                _ = self?.connections.withLock { $0.removeValue(forKey: ObjectIdentifier(closed)) }
            }
            connections.withLock { $0[ObjectIdentifier(connection)] = connection }
            connection.start()
        }
    }

    /// Pauses accepting, and warns at most once a minute (on the accept queue).
    private func shortage(_ error: Int32) {
        shortagesSinceWarning += 1
        if warningPace.due() {
            logger?.warning("cannot accept TCP connections; accepting again every \(Int(AcceptPause.interval * 1000)) ms until it can", metadata: [
                "error": "\(String(cString: strerror(error)))", "server.address": "\(address)",
                "open_files_limit": "\(OpenFilesLimit.current.soft)", "tcp.connections_open": "\(openConnections)",
                "shortages": "\(shortagesSinceWarning)",
            ])
            shortagesSinceWarning = 0
        }
        pause.pause()
    }
}
