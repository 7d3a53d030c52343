import Dispatch
import Glibc
import Logging
import Synchronization

/// Accepts DNS-over-TCP connections (RFC 7766) on one socket and hands each to a `TCPConnection`.
///
/// At most `maxConnections` are open at once. When every slot is taken, the connection idle the
/// longest is closed to make room for the new one (as Unbound and NSD shorten idle timeouts
/// under load): otherwise clients that open connections and send nothing, from more addresses
/// than the per-client cap can stop, would hold every slot until the idle timeout and shut
/// every other client out of TCP, which a truncated answer needs. When none is idle, the one
/// whose client sent no query for the longest is closed, whatever it waits for (RFC 7766 6.2.3
/// lets a server close connections under pressure): in an abuse trial, 256 connections each
/// holding one query for a name whose upstream never answered (a new one sent at each SERVFAIL)
/// held every slot, and a real client was turned away 9 times out of 12. A new connection is the
/// most recent, so the flood's own connections go before it. Only when every open connection is
/// already being closed is the new one accepted and closed at once, so the kernel's backlog never
/// fills with clients that would wait for nothing.
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
    /// Idle connections closed to make room, and turned away with none idle, since the last
    /// warning (on the accept queue), and that warning's pace.
    private var evictedSinceWarning = 0, refusedSinceWarning = 0
    private var fullPace = LogPace()
    /// Connections asked to close to make room, not closed yet, with the moment they had been
    /// idle since when chosen: counted out of the open ones, so that a burst of new clients does
    /// not evict the same slot twice. The connection itself is held, so that its identifier is
    /// not reused by a new one while listed here.
    private var evicting: [ObjectIdentifier: (connection: TCPConnection, since: UInt64)] = [:]
    /// The `since` of a busy connection closed to make room: closed whatever it does meanwhile.
    private static let closingBusy = UInt64.max - 1
    /// Busy connections closed to make room since the last warning (on the accept queue).
    private var busyClosedSinceWarning = 0

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
            // The per-client cap first: a connection it turns away must not cost another its slot.
            guard let peer = SocketAddress(storage: &storage),
                  connections.withLock({ open in open.values.filter { $0.peerAddress == peer.address }.count }) < maxPerClient,
                  makeRoom() else {
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

    /// Whether a new connection may be taken: a slot is free, or a connection was asked to close
    /// to free one (the idle longest, else the one quiet longest). False when every open one is
    /// already closing. On the accept queue.
    private func makeRoom() -> Bool {
        let open = connections.withLock { $0 }
        // Counted out only while it is still open and still in the idle spell it was chosen in:
        // one that took a query meanwhile (whether or not it is idle again now) was not closed,
        // and counts again, so the open ones never grow past the cap.
        evicting = evicting.filter { id, entry in
            open[id] === entry.connection
                && (entry.since == TCPListener.closingBusy || entry.connection.idleSince.load(ordering: .relaxed) == entry.since)
        }
        if open.count - evicting.count < maxConnections { return true }
        var idlest: (id: ObjectIdentifier, connection: TCPConnection, since: UInt64)?
        for (id, connection) in open where evicting[id] == nil {
            let since = connection.idleSince.load(ordering: .relaxed)
            if since != .max, since < idlest?.since ?? .max { idlest = (id, connection, since) }
        }
        var madeRoom = true
        if let idlest {
            evicting[idlest.id] = (idlest.connection, idlest.since)
            idlest.connection.closeIfIdle(since: idlest.since)
            evictedSinceWarning += 1
        } else {
            // None idle: the one whose client sent no query for the longest.
            var quietest: (id: ObjectIdentifier, connection: TCPConnection, at: UInt64)?
            for (id, connection) in open where evicting[id] == nil {
                let at = connection.lastQueryAt.load(ordering: .relaxed)
                if at < quietest?.at ?? .max { quietest = (id, connection, at) }
            }
            if let quietest {
                evicting[quietest.id] = (quietest.connection, TCPListener.closingBusy)
                quietest.connection.closeUnderPressure()
                busyClosedSinceWarning += 1
            } else {
                refusedSinceWarning += 1
                madeRoom = false
            }
        }
        if fullPace.due() {
            logger?.warning("TCP connections at --tcp-max-connections: the longest idle are closed to make room, or with none idle the one that sent no query for the longest (said at most once a minute)", metadata: [
                "server.address": "\(address)", "tcp.max_connections": "\(maxConnections)",
                "idle_closed": "\(evictedSinceWarning)", "busy_closed": "\(busyClosedSinceWarning)",
                "turned_away": "\(refusedSinceWarning)",
            ])
            evictedSinceWarning = 0
            busyClosedSinceWarning = 0
            refusedSinceWarning = 0
        }
        return madeRoom
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
