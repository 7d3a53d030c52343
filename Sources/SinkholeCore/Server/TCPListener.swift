import Dispatch
import Glibc
import Synchronization

/// Accepts DNS-over-TCP connections (RFC 7766) on one socket and hands each to a `TCPConnection`.
///
/// At most `maxConnections` are open at once; a connection past the cap is accepted and closed
/// at once, so the kernel's backlog never fills with clients that would wait for nothing.
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

    public init(address requested: SocketAddress, queue: DispatchQueue, idleTimeout: Double,
                maxConnections: Int, maxPerClient: Int = 16, maxQueries: Int = 1000,
                handler: @escaping QueryHandler) throws {
        self.maxPerClient = maxPerClient
        self.maxQueries = maxQueries
        (fd, address) = try Socket.listening(requested, backlog: 128)
        self.handler = handler
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
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
        source.cancel()
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
            if client < 0 { return }
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
}
