import Dispatch
import Glibc

/// Receives DNS queries on one UDP socket and sends the replies back from it.
///
/// A Dispatch read source drains the socket in batches; the handler runs on the listener's
/// queue and may answer there (blocked names) or later from any thread (forwarded names):
/// `sendto` on a UDP socket is safe from several threads.
public final class UDPListener: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let source: DispatchSourceRead
    private let handler: QueryHandler
    private var started = false

    /// Binds; throws with the reason (address in use, not available) so start-up can fail clearly.
    public init(address requested: SocketAddress, queue: DispatchQueue, reusePort: Bool = false,
                handler: @escaping QueryHandler) throws {
        fd = try Socket.bound(requested, type: Int32(SOCK_DGRAM.rawValue), reusePort: reusePort)
        Socket.setOption(fd, SOL_SOCKET, SO_RCVBUF, 4 << 20)
        address = SocketAddress.local(of: fd) ?? requested
        self.handler = handler
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
    }

    public func start() {
        source.setEventHandler { [unowned self] in self.drain() }
        started = true
        source.resume()
    }

    /// Stops receiving. The socket stays open so that queries already in flight can still be
    /// answered; `close()` releases it once they are done.
    public func stop() {
        // A Dispatch source must be resumed once before it may be cancelled and released.
        if !started { started = true; source.resume() }
        source.cancel()
    }

    public func close() {
        _ = Glibc.close(fd)
    }

    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var storage = sockaddr_storage()
        let fd = self.fd
        // Bounded, so one busy socket cannot starve the others sharing the queue.
        for _ in 0..<256 {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, &length)
                    }
                }
            }
            if n < 0 { return }   // EAGAIN: drained; other errors (ICMP-induced) are per packet
            guard let client = SocketAddress(storage: &storage) else { continue }
            let packet = Array(buffer[0..<n])
            handler(packet, client, .udp) { reply in
                guard !reply.isEmpty else { return }
                client.withSockAddr { addr, len in
                    _ = reply.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT), addr, len) }
                }
            }
        }
    }
}
