import Dispatch
import Foundation
import Glibc
import Synchronization

/// Why one try at one upstream gave no usable answer.
public enum UpstreamFailure: Error, Sendable, CustomStringConvertible {
    case timeout
    case network(String)
    case badReply(String)

    /// The `reason` label of `sinkhole_upstream_errors_total`.
    public var kind: String {
        switch self {
        case .timeout: return "timeout"
        case .network: return "network"
        case .badReply: return "bad_reply"
        }
    }

    public var description: String {
        switch self {
        case .timeout: return "timed out"
        case .network(let why): return why
        case .badReply(let why): return "bad reply: \(why)"
        }
    }
}

/// The checks every upstream reply passes before it is used, over UDP and TCP alike.
enum UpstreamReply {
    /// A reply's ID and message: QR set and exactly one question, or nil (ignored).
    static func decoded(_ bytes: [UInt8]) -> (id: UInt16, message: Message)? {
        guard bytes.count >= Header.size, bytes[2] & 0x80 != 0, let message = Message(wire: bytes),
              message.questionCount == 1, message.question != nil else { return nil }
        message.receivedWire = bytes
        return (UInt16(bytes[0]) << 8 | UInt16(bytes[1]), message)
    }

    /// True when the reply's question is the one asked (name ignoring case, type and class).
    static func answers(_ message: Message, _ question: Question) -> Bool {
        message.question?.matches(question) ?? false
    }

    /// The reply as a message when it answers our query (ID and question); nil for anything else.
    static func validated(_ bytes: [UInt8], id: UInt16, question: Question) -> Message? {
        guard let (got, message) = decoded(bytes), got == id, answers(message, question) else { return nil }
        return message
    }
}

/// A blocking DNS-over-TCP exchange with a deadline, used for the rare retry after a truncated
/// UDP reply. It runs on a global queue, never on a listener's.
enum TCPExchange {
    static func run(upstream: SocketAddress, query: [UInt8], timeout: Double) -> Result<[UInt8], UpstreamFailure> {
        let deadline = DispatchTime.now() + timeout
        let fd = socket(upstream.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .failure(.network(SystemError("socket").description)) }
        defer { close(fd) }

        func wait(_ events: Int16) -> Bool {
            let left = Int64(deadline.uptimeNanoseconds) - Int64(DispatchTime.now().uptimeNanoseconds)
            guard left > 0 else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            return poll(&p, 1, Int32(max(1, left / 1_000_000))) == 1
        }

        let rc = upstream.withSockAddr { connect(fd, $0, $1) }
        if rc != 0 {
            guard errno == EINPROGRESS, wait(Int16(POLLOUT)) else { return .failure(.timeout) }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { return .failure(.network(SystemError("TCP connect \(upstream)", error).description)) }
        }
        var framed = [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query
        while !framed.isEmpty {
            let n = framed.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { framed.removeFirst(n); continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                guard wait(Int16(POLLOUT)) else { return .failure(.timeout) }
                continue
            }
            return .failure(.network(SystemError("TCP send to \(upstream)").description))
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            if received.count >= 2 {
                let length = Int(received[0]) << 8 | Int(received[1])
                if received.count >= 2 + length { return .success(Array(received[2..<(2 + length)])) }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += chunk[0..<n]; continue }
            if n == 0 { return .failure(.network("TCP connection to \(upstream) closed before a whole reply")) }
            if errno == EAGAIN || errno == EINTR {
                guard wait(Int16(POLLIN)) else { return .failure(.timeout) }
                continue
            }
            return .failure(.network(SystemError("TCP receive from \(upstream)").description))
        }
    }
}
