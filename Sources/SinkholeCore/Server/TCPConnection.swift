import Dispatch
import Glibc
import Synchronization

/// One DNS-over-TCP client connection: 2-byte length-prefixed messages (RFC 1035 §4.2.2),
/// several queries in flight at once and answered in any order (RFC 7766 §6.2.1.1), messages
/// split across reads, an idle timeout and a cap on queries per connection. Only whole
/// queries and replies count as activity, so a client dribbling a message a byte at a time, or
/// sending empty messages, is closed at the idle timeout like a silent one; and a client that
/// stops reading its replies is closed once they have waited that long without a byte taken.
/// All state lives on the connection's serial queue, so a slow or idle client holds nothing
/// that others need.
final class TCPConnection: @unchecked Sendable {
    /// Queries of one connection in flight at once; past this, reading pauses until replies go out.
    static let maxInFlight = 128
    /// Replies a client has not read; past this the client is dropped rather than buffered for.
    static let maxPendingOutput = 1 << 20

    private let fd: Int32
    private let peer: SocketAddress
    private let queue: DispatchQueue
    private let idleTimeout: Double
    private let handler: QueryHandler
    private let onClose: @Sendable (TCPConnection) -> Void
    private let maxQueries: Int
    private var queriesRead = 0
    /// The client's address, for the per-client connection cap.
    let peerAddress: [UInt8]

    private let readSource: DispatchSourceRead
    private let writeSource: DispatchSourceWrite
    private let timer: DispatchSourceTimer
    private var readSuspended = false
    private var writeSuspended = true
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var inFlight = 0
    private var lastActivity = DispatchTime.now()
    /// When the client last took bytes of the pending output (or when output began waiting).
    private var lastDrained = DispatchTime.now()
    private var finishing = false
    private var closed = false
    /// When the connection last became idle (nothing in flight, nothing to send), in uptime
    /// nanoseconds; `UInt64.max` while it is busy. Read by the listener, on another queue, to
    /// pick the connection to close when every slot is taken.
    let idleSince = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)
    /// When the client last sent a query (or connected), in uptime nanoseconds: with no
    /// connection idle, the one that sent none for the longest is closed to make room.
    let lastQueryAt = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)

    init(fd: Int32, peer: SocketAddress, queue: DispatchQueue, idleTimeout: Double, maxQueries: Int = 1000,
         handler: @escaping QueryHandler, onClose: @escaping @Sendable (TCPConnection) -> Void) {
        self.maxQueries = maxQueries
        self.peerAddress = peer.address
        self.fd = fd
        self.peer = peer
        self.queue = queue
        self.idleTimeout = idleTimeout
        self.handler = handler
        self.onClose = onClose
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        timer = DispatchSource.makeTimerSource(queue: queue)
    }

    func start() {
        readSource.setEventHandler { [self] in readAvailable() }
        writeSource.setEventHandler { [self] in flush() }
        timer.setEventHandler { [self] in checkIdle() }
        timer.schedule(deadline: .now() + idleTimeout, repeating: .never)
        readSource.resume()
        timer.resume()
    }

    /// Stop reading; close once every received query is answered and written.
    func finish() {
        queue.async { [self] in
            guard !closed else { return }
            finishing = true
            if !readSuspended { readSource.suspend(); readSuspended = true }
            closeIfDone()
        }
    }

    private func readAvailable() {
        // 16 KiB a read, uninitialised: the read source fires again while more is waiting.
        let n = withUnsafeTemporaryAllocation(byteCount: 16_384, alignment: 16) { chunk -> Int in
            let n = read(fd, chunk.baseAddress, chunk.count)
            if n > 0 { input.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n])) }
            return n
        }
        if n == 0 {
            // Peer closed its side: answer what was asked, then close.
            finishing = true
            if !readSuspended { readSource.suspend(); readSuspended = true }
            closeIfDone()
            return
        }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            close()
            return
        }
        extractMessages()
    }

    private func extractMessages() {
        var offset = 0
        while input.count - offset >= 2 && inFlight < TCPConnection.maxInFlight && !finishing {
            let length = Int(input[offset]) << 8 | Int(input[offset + 1])
            guard input.count - offset - 2 >= length else { break }
            let message = Array(input[(offset + 2)..<(offset + 2 + length)])
            offset += 2 + length
            inFlight += 1
            queriesRead += 1
            idleSince.store(.max, ordering: .relaxed)
            // A query: a header at least, QR clear. An empty or a response-shaped message is
            // answered as any other (or not at all) but keeps nobody's connection open.
            if length >= 12, message[2] & 0x80 == 0 {
                lastActivity = .now()
                lastQueryAt.store(lastActivity.uptimeNanoseconds, ordering: .relaxed)
            }
            if queriesRead >= maxQueries {
                // Answer this one and what is in flight, then close (RFC 7766 §6.2.3 allows it).
                finishing = true
                if !readSuspended { readSource.suspend(); readSuspended = true }
            }
            let respond = Responder { [self] reply in
                queue.async { self.replied(reply) }
            }
            message.withUnsafeBytes { handler($0, peer, .tcp, respond) }
        }
        if offset > 0 { input.removeFirst(offset) }
        if inFlight >= TCPConnection.maxInFlight && !readSuspended {
            readSource.suspend()
            readSuspended = true
        }
    }

    private func replied(_ reply: [UInt8]) {
        inFlight -= 1
        guard !closed else { return }
        if !reply.isEmpty && reply.count <= 65_535 {
            if output.isEmpty { lastDrained = .now() }
            output.append(UInt8(reply.count >> 8))
            output.append(UInt8(reply.count & 0xFF))
            output.append(contentsOf: reply)
            lastActivity = .now()
        }
        if output.count > TCPConnection.maxPendingOutput {
            close()
            return
        }
        flush()
        if !finishing && readSuspended && inFlight < TCPConnection.maxInFlight {
            readSource.resume()
            readSuspended = false
            extractMessages()
        }
        closeIfDone()
    }

    private func flush() {
        guard !closed else { return }
        while !output.isEmpty {
            let n = output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                output.removeFirst(n)
                lastDrained = .now()
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                if writeSuspended { writeSource.resume(); writeSuspended = false }
                return
            }
            close()
            return
        }
        if !writeSuspended { writeSource.suspend(); writeSuspended = true }
        closeIfDone()
    }

    private func closeIfDone() {
        guard inFlight == 0 && output.isEmpty else { return }
        if finishing { return close() }
        if idleSince.load(ordering: .relaxed) == .max { idleSince.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }
    }

    /// Closes the connection if it is still idle: the listener's way to make room for a new
    /// client when every slot is taken (RFC 7766 6.2.3 lets a server close idle connections
    /// under pressure). A connection that became busy meanwhile is left alone.
    func closeIfIdle(since: UInt64) {
        queue.async { [self] in
            // Still in the idle spell it was chosen in: one that took a query and answered it
            // meanwhile is a client in use, and the listener counts it again.
            guard !closed, inFlight == 0, output.isEmpty, idleSince.load(ordering: .relaxed) == since else { return }
            close()
        }
    }

    /// Closes the connection whatever it has in flight: the listener's way to make room when
    /// every slot is taken and none is idle (RFC 7766 6.2.3), for the connection whose client
    /// sent no query for the longest. Its answers still to come are dropped; the client asks again.
    func closeUnderPressure() {
        queue.async { [self] in close() }
    }

    private func checkIdle() {
        guard !closed else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let idleFor = Double(now - lastActivity.uptimeNanoseconds) / 1e9
        // Replies the client has not taken a byte of for the idle timeout: it stopped reading
        // (the kernel's buffers full). Holding them would let a few such clients keep every
        // connection slot and their replies' memory for as long as they like.
        let stalledFor = output.isEmpty ? 0 : Double(now - lastDrained.uptimeNanoseconds) / 1e9
        if (inFlight == 0 && output.isEmpty && idleFor >= idleTimeout) || stalledFor >= idleTimeout {
            close()
        } else {
            // The nearer of the two deadlines, but not in the past: a query still waiting on an
            // upstream past the idle deadline is looked at again shortly, not in a tight loop.
            var next = lastActivity + idleTimeout
            if !output.isEmpty { next = min(next, lastDrained + idleTimeout) }
            timer.schedule(deadline: max(next, .now() + 0.05) + 0.01, repeating: .never)
        }
    }

    private func close() {
        guard !closed else { return }
        closed = true
        // A suspended source must be resumed before it is cancelled and released.
        if readSuspended { readSource.resume(); readSuspended = false }
        if writeSuspended { writeSource.resume(); writeSuspended = false }
        let fd = self.fd
        let group = DispatchGroup()
        group.enter()
        group.enter()
        readSource.setCancelHandler { group.leave() }
        writeSource.setCancelHandler { group.leave() }
        readSource.cancel()
        writeSource.cancel()
        timer.cancel()
        group.notify(queue: queue) { Glibc.close(fd) }
        input = []
        output = []
        onClose(self)
    }
}
