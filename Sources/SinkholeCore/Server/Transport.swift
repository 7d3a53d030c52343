/// How a query reached us; decides the reply size limit and is logged as `network.transport`.
public enum Transport: String, Sendable {
    case udp
    case tcp
}

/// Called by a listener for each received message. The handler calls `respond` exactly once,
/// from any thread; an empty reply means nothing is sent (a dropped query). `packet` is valid
/// only during the call (a UDP listener's receive buffer): what outlives it is copied.
public typealias QueryHandler = @Sendable (
    _ packet: UnsafeRawBufferPointer, _ client: SocketAddress, _ transport: Transport, _ respond: Responder
) -> Void

/// Where a query's reply goes: out of the UDP listener it came in on, to the client's address,
/// or to a closure (TCP connections, tests). A value, not a closure: a UDP query's responder is
/// made without an allocation (a closure capturing the listener and the address needs a
/// context on the heap, one per query).
public struct Responder: Sendable {
    // Plain stored properties rather than an enum of the two kinds: reading the listener out of
    // an enum's payload copied it (a retain and a release per reply on the fast path, and an
    // outlined copy of the whole enum wherever a Responder was passed on).
    /// The UDP listener the query came in on; nil for a closure's responder.
    private let listener: UDPListener?
    private let client: SocketAddress
    private let arrival: Arrival?
    /// Where the reply goes when there is no listener (TCP connections, tests).
    private let body: (@Sendable ([UInt8]) -> Void)?

    public init(_ body: @escaping @Sendable ([UInt8]) -> Void) {
        listener = nil
        client = SocketAddress(ip: IPBytes([]), port: 0)
        arrival = nil
        self.body = body
    }

    init(udp listener: UDPListener, client: SocketAddress, arrival: Arrival?) {
        self.listener = listener
        self.client = client
        self.arrival = arrival
        body = nil
    }

    /// Sends the reply `write` makes, of at most `limit` bytes, written in place where it can be:
    /// a UDP query answered on its listener's loop thread has it written straight into the
    /// batch's send buffer, without an array of its own. `beforeSending` runs once the reply is
    /// made and before it can reach the client (the block log's record). False, and nothing
    /// sent or run, when the reply came out empty or longer than `limit` (the caller then answers
    /// another way). `write` may be called twice (a reply too long for the first buffer is made
    /// again in a larger one).
    public func write(limit: Int, _ write: (inout WireWriter) -> Void, beforeSending: () -> Void = {}) -> Bool {
        guard limit > 0 else { return false }
        if let listener, let sent = listener.sendInPlace(to: client, from: arrival, limit: limit, write) {
            // Queued: it leaves with the batch, after this.
            if sent { beforeSending() }
            return sent
        }
        // Elsewhere (TCP, another thread): made in scratch memory, 4 KiB first, then sent as an
        // array of its own length.
        func make(_ capacity: Int) -> [UInt8]? {
            withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { buffer -> [UInt8]? in
                var writer = WireWriter(buffer)
                write(&writer)
                guard let n = writer.written else { return nil }
                return Array(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            }
        }
        let small = min(limit, Responder.firstScratch)
        var reply = make(small)
        if reply == nil, limit > small { reply = make(min(limit, 65_535)) }
        guard let reply, !reply.isEmpty else { return false }
        beforeSending()
        self(reply)
        return true
    }

    /// The scratch memory a reply made off the send batch is tried in first.
    static let firstScratch = 4096

    /// Sends `reply` (empty: nothing is sent).
    public func callAsFunction(_ reply: [UInt8]) {
        if let listener {
            listener.send(reply, to: client, from: arrival)
        } else {
            body?(reply)
        }
    }
}
