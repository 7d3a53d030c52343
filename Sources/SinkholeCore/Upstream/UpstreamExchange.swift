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

/// One query to one upstream over UDP, falling back to TCP when the reply is truncated.
///
/// Spoofing defence (RFC 5452): every try uses a new socket, so a kernel-chosen random source
/// port, and a fresh random ID; the socket is connected to the upstream so the kernel drops
/// datagrams from any other address or port, and each reply is checked again here: source,
/// ID, QR and question must all match, or the datagram is ignored and the wait goes on.
final class UpstreamExchange: @unchecked Sendable {
    typealias Completion = @Sendable (Result<Message, UpstreamFailure>) -> Void

    private let upstream: SocketAddress
    private let question: Question
    private var query: [UInt8]
    private let deadline: DispatchTime
    private let queue: DispatchQueue
    /// Used only on `queue`.
    private let buffer: ReceiveBuffer
    private let completion: Completion
    private let state = Mutex<Bool>(false)   // finished
    private var fd: Int32 = -1
    private var readSource: DispatchSourceRead?
    private var timer: DispatchSourceTimer?
    private var retryingOverTCP = false

    init(upstream: SocketAddress, query: [UInt8], question: Question, timeout: Double,
         queue: DispatchQueue, buffer: ReceiveBuffer, completion: @escaping Completion) {
        self.buffer = buffer
        self.upstream = upstream
        self.query = query
        self.question = question
        self.deadline = .now() + timeout
        self.queue = queue
        self.completion = completion
    }

    private var expectedID: UInt16 { UInt16(query[0]) << 8 | UInt16(query[1]) }

    private func newID() {
        let id = UInt16.random(in: 0...UInt16.max)
        query[0] = UInt8(id >> 8)
        query[1] = UInt8(id & 0xFF)
    }

    func start() {
        queue.async { [self] in startUDP() }
    }

    private func finish(_ result: Result<Message, UpstreamFailure>) {
        let first = state.withLock { done -> Bool in
            if done { return false }
            done = true
            return true
        }
        guard first else { return }
        timer?.cancel()
        if let source = readSource {
            let fd = self.fd
            source.setCancelHandler { Glibc.close(fd) }
            source.cancel()
        } else if fd >= 0 {
            Glibc.close(fd)
        }
        completion(result)
    }

    private func startUDP() {
        newID()
        fd = socket(upstream.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return finish(.failure(.network(SystemError("socket").description))) }
        let connected = upstream.withSockAddr { connect(fd, $0, $1) }
        guard connected == 0 else { return finish(.failure(.network(SystemError("connect \(upstream)").description))) }
        let sent = query.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == query.count else { return finish(.failure(.network(SystemError("send to \(upstream)").description))) }

        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [self] in receiveUDP() }
        readSource = source
        let timer = DispatchSource.makeTimerSource(queue: queue)
        // An ICMP "port unreachable" leaves an error on the socket but does not wake a Dispatch
        // read source, so look for it twice early (it arrives within a round trip), then wait
        // out the deadline: a closed upstream fails over in milliseconds, not at the timeout.
        var checks: [DispatchTime] = [.now() + 0.02, .now() + 0.2].filter { $0 < deadline }
        timer.schedule(deadline: checks.first ?? deadline)
        timer.setEventHandler { [self] in
            guard !checks.isEmpty else { return finish(.failure(.timeout)) }
            checks.removeFirst()
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error != 0 {
                return finish(.failure(.network(SystemError("receive from \(upstream)", error).description)))
            }
            self.timer?.schedule(deadline: checks.first ?? deadline)
        }
        self.timer = timer
        source.resume()
        timer.resume()
    }

    private func receiveUDP() {
        guard !retryingOverTCP else { return }
        var storage = sockaddr_storage()
        let raw = buffer.bytes
        for _ in 0..<16 {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, raw, ReceiveBuffer.size, Int32(MSG_DONTWAIT), $0, &length)
                }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                // ICMP port unreachable and the like: this upstream is not answering.
                return finish(.failure(.network(SystemError("receive from \(upstream)").description)))
            }
            guard SocketAddress(storage: &storage) == upstream else { continue }
            guard let reply = validated(Array(UnsafeRawBufferPointer(start: raw, count: n))) else { continue }
            if reply.truncated {
                retryingOverTCP = true
                let remaining = max(0.05, Double(Int64(deadline.uptimeNanoseconds) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9)
                let upstream = self.upstream, query = self.query
                let expected = expectedID
                // Blocking, but rare: its own thread, so it never holds a queue others need.
                Thread.detachNewThread { [self] in
                    let result = TCPExchange.run(upstream: upstream, query: query, timeout: remaining)
                    switch result {
                    case .success(let bytes):
                        if let message = validated(bytes, expectedID: expected) {
                            finish(.success(message))
                        } else {
                            finish(.failure(.badReply("TCP reply does not match the query")))
                        }
                    case .failure(let failure):
                        finish(.failure(failure))
                    }
                }
                return
            }
            return finish(.success(reply))
        }
    }

    /// The reply as a message when it answers our query; nil for anything else.
    private func validated(_ bytes: [UInt8], expectedID: UInt16? = nil) -> Message? {
        guard bytes.count >= Header.size else { return nil }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        guard id == (expectedID ?? self.expectedID), bytes[2] & 0x80 != 0 else { return nil }
        guard let message = Message(wire: bytes), let q = message.question,
              message.questionCount == 1, q.matches(question) else { return nil }
        message.receivedWire = bytes
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
