import Foundation
import Glibc
import SinkholeCore

/// A blocking DNS client for tests: builds queries with ldns (through `Message`) and sends raw
/// bytes over UDP or TCP with a deadline, so malformed packets are as easy to send as good ones.
public enum DNSTestClient {
    /// A query message's wire bytes.
    public static func query(_ name: String, type: UInt16 = RRType.a, id: UInt16 = UInt16.random(in: 1...0xFFFF),
                             rd: Bool = true, edns: EDNS? = nil, qclass: UInt16 = RRType.classIN) -> [UInt8] {
        guard let m = Message.empty(), let wire = WireName.fromText(name) else { return [] }
        m.id = id
        m.recursionDesired = rd
        m.setQuestion(Question(name: wire, type: type, qclass: qclass))
        m.edns = edns
        return m.wire() ?? []
    }

    /// Sends one datagram and waits for one reply; nil on timeout.
    public static func udp(_ packet: [UInt8], to server: SocketAddress, timeout: Double = 3,
                           from source: SocketAddress? = nil) -> [UInt8]? {
        guard let socket = UDPSocket(to: server, timeout: timeout, from: source) else { return nil }
        _ = socket.send(packet)
        return socket.receive()
    }

    /// A UDP query answered and decoded; nil on timeout or an undecodable reply.
    public static func ask(_ name: String, type: UInt16 = RRType.a, edns: EDNS? = nil,
                           server: SocketAddress, timeout: Double = 3) -> Message? {
        udp(query(name, type: type, edns: edns), to: server, timeout: timeout).flatMap { Message(wire: $0) }
    }

    /// A TCP connection to the server, for sending framed messages in any pieces.
    /// A connected UDP socket, kept open across sends and receives.
    public final class UDPSocket {
        public let fd: Int32

        /// Bound to `source` when given (else a kernel-chosen port), then connected to `server`.
        public init?(to server: SocketAddress, timeout: Double = 3, from source: SocketAddress? = nil) {
            fd = socket(server.family, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            DNSTestClient.setTimeout(fd, timeout)
            guard source.map({ $0.withSockAddr { bind(fd, $0, $1) } == 0 }) ?? true,
                  server.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
                close(fd)
                return nil
            }
        }

        deinit { close(fd) }

        public func send(_ packet: [UInt8]) -> Bool {
            packet.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } == packet.count
        }

        /// The next datagram; nil at the timeout.
        public func receive() -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return n >= 0 ? Array(buffer[0..<n]) : nil
        }
    }

    public final class TCPConnection {
        public let fd: Int32
        private var buffer: [UInt8] = []

        public init?(to server: SocketAddress, timeout: Double = 3) {
            fd = socket(server.family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            DNSTestClient.setTimeout(fd, timeout)
            guard server.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
                close(fd)
                return nil
            }
        }

        deinit { close(fd) }

        /// Writes raw bytes (a framed message, or a piece of one).
        @discardableResult
        public func write(_ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
        }

        public static func framed(_ message: [UInt8]) -> [UInt8] {
            [UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message
        }

        public func send(_ message: [UInt8]) -> Bool { write(TCPConnection.framed(message)) }

        /// Reads one framed message; nil on timeout or when the server closed the connection.
        public func receive() -> [UInt8]? {
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                if buffer.count >= 2 {
                    let length = Int(buffer[0]) << 8 | Int(buffer[1])
                    if buffer.count >= 2 + length {
                        let message = Array(buffer[2..<(2 + length)])
                        buffer.removeFirst(2 + length)
                        return message
                    }
                }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return nil }
                buffer += chunk[0..<n]
            }
        }

        /// True when the server closed the connection (read returns 0) within the socket timeout.
        public func closedByServer() -> Bool {
            var byte: UInt8 = 0
            return recv(fd, &byte, 1, 0) == 0
        }
    }

    /// One query over a new TCP connection.
    public static func tcp(_ packet: [UInt8], to server: SocketAddress, timeout: Double = 3) -> [UInt8]? {
        guard let c = TCPConnection(to: server, timeout: timeout), c.send(packet) else { return nil }
        return c.receive()
    }

    static func setTimeout(_ fd: Int32, _ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}
