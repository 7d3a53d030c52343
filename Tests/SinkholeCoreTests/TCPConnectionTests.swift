import Dispatch
import Foundation
import Glibc
@testable import SinkholeCore
import Testing

/// `TCPConnection` on one end of a socket pair, the test playing the client on the other.
@Suite struct TCPConnectionTests {
    /// A connection whose handler answers every message with `replyBytes` bytes (0: no reply),
    /// its idle timeout short; `closed` is signalled when the connection closes.
    final class Pair: @unchecked Sendable {
        let client: Int32
        let connection: TCPConnection
        let closed = DispatchSemaphore(value: 0)

        init(replyBytes: Int, idleTimeout: Double) throws {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw POSIXError(.EIO) }
            // Small buffers on both sides, so that unread replies back up into the connection.
            var size: Int32 = 4096
            setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
            client = fds[1]
            let closed = self.closed
            connection = TCPConnection(
                fd: fds[0], peer: SocketAddress(address: [127, 0, 0, 1], port: 1), queue: DispatchQueue(label: "tcp-test"),
                idleTimeout: idleTimeout,
                handler: { packet, _, _, respond in
                    guard replyBytes > 0 else { return respond([]) }
                    var reply = [UInt8](repeating: 0x61, count: replyBytes)
                    if packet.count >= 2 { reply[0] = packet[0]; reply[1] = packet[1] }
                    respond(reply)
                },
                onClose: { _ in closed.signal() })
            connection.start()
        }

        /// Writes `message` with its length prefix.
        func send(_ message: [UInt8]) {
            let framed = [UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message
            _ = framed.withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        deinit { Glibc.close(client) }
    }

    static let query: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7] + Array("example".utf8) + [0, 0, 1, 0, 1]

    /// A client that asks for large replies and never reads them is closed at the idle
    /// timeout, though its replies are still waiting: it would otherwise hold its connection
    /// slot and the replies' memory for as long as it liked.
    @Test func aClientThatStopsReadingIsClosedAtTheIdleTimeout() throws {
        let pair = try Pair(replyBytes: 60_000, idleTimeout: 0.3)
        for _ in 0..<8 { pair.send(Self.query) }   // 480 KB of replies against a few KB of buffers
        #expect(pair.closed.wait(timeout: .now() + 5) == .success, "closed while its replies wait unread")
    }

    /// A client that reads its replies, however many, is not closed while it does.
    @Test func aClientThatReadsIsServed() throws {
        let pair = try Pair(replyBytes: 60_000, idleTimeout: 0.3)
        for _ in 0..<8 { pair.send(Self.query) }
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(pair.client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        while received < 8 * 60_002 {
            let n = buffer.withUnsafeMutableBytes { recv(pair.client, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            received += n
        }
        #expect(received == 8 * 60_002)
    }

    /// Empty messages and responses are not queries: they keep no connection open.
    @Test func emptyMessagesDoNotCountAsActivity() throws {
        let pair = try Pair(replyBytes: 0, idleTimeout: 0.4)
        var response = Self.query
        response[2] |= 0x80
        // Something every 0.1 s for longer than the idle timeout: the connection still closes.
        let started = DispatchTime.now()
        var closedAt: DispatchTime?
        for i in 0..<30 {
            pair.send(i % 2 == 0 ? [] : response)
            if pair.closed.wait(timeout: .now() + 0.1) == .success { closedAt = .now(); break }
        }
        let after = try #require(closedAt, "closed though the client kept sending empty messages")
        #expect(Double(after.uptimeNanoseconds - started.uptimeNanoseconds) / 1e9 < 2)
    }
}
