import CSinkholeNet
import Dispatch
import Glibc
import Synchronization

/// `struct mmsghdr`: one datagram of a recvmmsg/sendmmsg batch (checked against C's layout).
struct MultiMessageHeader {
    var msg_hdr: msghdr
    var msg_len: UInt32
}

/// Where a UDP query arrived, kept for a listener bound to a wildcard address (0.0.0.0 or ::):
/// the reply must leave from the address the client sent to, the only source its resolver
/// library accepts (on a host with several addresses the routing table would pick another), and
/// a link-local IPv6 client is reached only through the interface its query came in on.
struct Arrival: Sendable {
    /// The local address the query was sent to (4 or 16 bytes).
    let ip: IPBytes
    /// The interface it came in on (used for IPv6).
    let interface: UInt32
}

/// Receives DNS queries on one UDP socket and sends the replies back from it.
///
/// The socket is watched by one of the per-core event loops (`EventLoop`, shared with the
/// upstream sockets); when it is readable the loop drains it with recvmmsg, up to `batch`
/// datagrams per call. Replies made on the loop's thread (blocked names and cache hits while the
/// batch is handled; forwarded answers, whose upstream replies arrive on the same loop) are
/// queued and sent together with one sendmmsg, at the end of the batch or of the loop's turn;
/// replies made on any other thread (TCP fallbacks, a query that was sent from another loop)
/// are sent with `sendto`, which is safe from several threads on a UDP socket. Two system calls
/// per batch instead of two per query is most of what a blocked query costs, and no hand-off
/// between threads is left on the UDP path.
public final class UDPListener: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let loop: EventLoop
    private let handler: QueryHandler
    private let watching = Mutex<UInt64?>(nil)
    /// Set by `stop()`: from then on replies go out at once (`sendto`), since the loop no longer
    /// flushes this listener's send batch after its turns.
    private let stopped = Atomic<Bool>(false)
    /// The descriptor is closed: a late reply (a stale answer's timer after a stop's drain
    /// gave up) must not be sent on a number the kernel may have given to another socket.
    private let closed = Atomic<Bool>(false)
    /// Sends made off the loop's thread now under way: `close()` waits for them, so that none
    /// writes to the descriptor's number after it was closed and given to another socket or
    /// file (a review: a TCP retry's late answer could land in an unrelated TCP stream).
    private let sendsOffLoop = Atomic<Int>(0)

    /// Datagrams per recvmmsg and per sendmmsg.
    static let batch = 32
    /// Largest datagram received (larger ones are cut and then fail the header checks).
    static let receiveSize = 65_536
    /// Replies up to this size are copied into the send batch; larger ones go out alone.
    static let sendSize = 4096

    // Receive and send state, used only on the loop's thread.
    private let receiveBuffers: UnsafeMutableRawPointer
    private let receivePeers: UnsafeMutablePointer<sockaddr_storage>
    private let receiveVectors: UnsafeMutablePointer<iovec>
    private let receiveHeaders: UnsafeMutablePointer<MultiMessageHeader>
    private let sendBuffers: UnsafeMutableRawPointer
    private let sendPeers: UnsafeMutablePointer<sockaddr_storage>
    private let sendVectors: UnsafeMutablePointer<iovec>
    private let sendHeaders: UnsafeMutablePointer<MultiMessageHeader>
    private var pending = 0
    /// Bound to 0.0.0.0 or ::: each datagram's destination is read (packet info) and its reply
    /// sent from it. A listener on one address needs neither, and pays for neither.
    private let wildcard: Bool
    /// Control data per slot (packet info), received and sent; nil unless `wildcard`.
    private let receiveControl: UnsafeMutableRawPointer?
    private let sendControl: UnsafeMutableRawPointer?
    private static let controlSpace = Int(sinkhole_pktinfo_space())

    /// Binds; throws with the reason (address in use, not available) so start-up can fail clearly.
    init(address requested: SocketAddress, loop: EventLoop, reusePort: Bool = false,
         handler: @escaping QueryHandler) throws {
        fd = try Socket.bound(requested, type: Int32(SOCK_DGRAM.rawValue), reusePort: reusePort)
        Socket.setOption(fd, SOL_SOCKET, SO_RCVBUF, 4 << 20)
        address = SocketAddress.local(of: fd) ?? requested
        wildcard = address.isUnspecified
        if wildcard, sinkhole_want_pktinfo(fd, address.isIPv6 ? 1 : 0) != 0 {
            let error = SystemError("packet info on \(address)")
            Glibc.close(fd)
            throw error
        }
        self.handler = handler
        self.loop = loop
        precondition(MemoryLayout<MultiMessageHeader>.stride == Int(sinkhole_mmsghdr_size())
                     && MemoryLayout<MultiMessageHeader>.offset(of: \.msg_len) == Int(sinkhole_mmsghdr_len_offset()),
                     "struct mmsghdr layout")
        let n = UDPListener.batch
        receiveBuffers = .allocate(byteCount: n * UDPListener.receiveSize, alignment: 16)
        receivePeers = .allocate(capacity: n)
        receiveVectors = .allocate(capacity: n)
        receiveHeaders = .allocate(capacity: n)
        sendBuffers = .allocate(byteCount: n * UDPListener.sendSize, alignment: 16)
        sendPeers = .allocate(capacity: n)
        sendVectors = .allocate(capacity: n)
        sendHeaders = .allocate(capacity: n)
        receiveControl = wildcard ? .allocate(byteCount: n * UDPListener.controlSpace, alignment: 16) : nil
        sendControl = wildcard ? .allocate(byteCount: n * UDPListener.controlSpace, alignment: 16) : nil
        for i in 0..<n {
            receiveVectors[i] = iovec(iov_base: receiveBuffers + i * UDPListener.receiveSize, iov_len: UDPListener.receiveSize)
            sendVectors[i] = iovec(iov_base: sendBuffers + i * UDPListener.sendSize, iov_len: 0)
        }
    }

    deinit {
        receiveBuffers.deallocate()
        receivePeers.deallocate()
        receiveVectors.deallocate()
        receiveHeaders.deallocate()
        sendBuffers.deallocate()
        sendPeers.deallocate()
        sendVectors.deallocate()
        sendHeaders.deallocate()
        receiveControl?.deallocate()
        sendControl?.deallocate()
    }

    public func start() throws {
        let token = try loop.watch(fd, readable: { [self] in drain() }, flush: { [self] in if pending > 0 { flush() } })
        watching.withLock { $0 = token }
    }

    /// Stops receiving. The socket stays open so that queries already in flight can still be
    /// answered (their replies now go out one by one, as they come); `close()` releases it once
    /// they are done. Replies already queued for the send batch go out here.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        if let token = watching.withLock({ t -> UInt64? in defer { t = nil }; return t }) {
            loop.unwatch(token)
        }
        loop.performAndWait { [self] in if pending > 0 { flush() } }
    }

    public func close() {
        stop()
        // On the loop's thread, so that no batch is being sent on the descriptor as it closes.
        closed.store(true, ordering: .sequentiallyConsistent)
        // A send that saw `closed` false is finished before the close (Dekker's pairing with
        // `send`: both sides sequentially consistent). Each is one sendmsg, never blocking.
        while sendsOffLoop.load(ordering: .sequentiallyConsistent) > 0 { sched_yield() }
        loop.performAndWait { [fd] in _ = Glibc.close(fd) }
    }

    private func drain() {
        let n = UDPListener.batch
        // Bounded, so one busy socket cannot starve the others on the loop.
        for _ in 0..<8 {
            for i in 0..<n {
                receiveHeaders[i] = MultiMessageHeader(
                    msg_hdr: msghdr(msg_name: UnsafeMutableRawPointer(receivePeers + i),
                                    msg_namelen: socklen_t(MemoryLayout<sockaddr_storage>.size),
                                    msg_iov: receiveVectors + i, msg_iovlen: 1,
                                    msg_control: receiveControl.map { $0 + i * UDPListener.controlSpace },
                                    msg_controllen: receiveControl == nil ? 0 : UDPListener.controlSpace, msg_flags: 0),
                    msg_len: 0)
            }
            let received = Int(sinkhole_recvmmsg(fd, receiveHeaders, UInt32(n), Int32(MSG_DONTWAIT)))
            if received <= 0 { break }   // EAGAIN: drained; other errors (ICMP-induced) are per packet
            for i in 0..<received {
                guard let client = SocketAddress(storage: receivePeers + i) else { continue }
                let bytes = UnsafeRawBufferPointer(start: receiveBuffers + i * UDPListener.receiveSize,
                                                   count: Int(receiveHeaders[i].msg_len))
                handler(bytes, client, .udp, Responder(udp: self, client: client, arrival: wildcard ? arrival(i) : nil))
            }
            loop.flushSends()   // the batch's forwarded queries first: their answers take longest
            flush()
            // Another round while datagrams come more than one at a time: under load more have
            // arrived while this batch was answered, and a recvmmsg that takes them is cheaper
            // than the epoll_wait that would report them (at full speed, blocked names: 0.17-0.19
            // epoll_waits per query -> 0.05-0.07, server CPU 5.45 -> 5.20 us, lower in all six
            // alternating runs). A single datagram is a quiet socket: back to epoll at once, so
            // a moderate rate pays no extra call.
            if received <= 1 { break }
        }
    }

    /// Where datagram `i` of the batch just received arrived (wildcard listeners); nil when the
    /// kernel gave no packet info, and the reply then leaves as the routing table has it.
    private func arrival(_ i: Int) -> Arrival? {
        var bytes: (UInt64, UInt64) = (0, 0)
        var interface: UInt32 = 0
        let count = withUnsafeMutableBytes(of: &bytes) {
            Int(sinkhole_pktinfo_read(&receiveHeaders[i].msg_hdr, $0.baseAddress, &interface))
        }
        guard count > 0 else { return nil }
        return withUnsafeBytes(of: &bytes) { Arrival(ip: IPBytes(copying: $0.baseAddress!, count: count), interface: interface) }
    }

    /// Writes the control message that sends from `arrival` into `control`; its length.
    private static func writeControl(_ control: UnsafeMutableRawPointer, _ arrival: Arrival) -> Int {
        arrival.ip.withBytes { Int(sinkhole_pktinfo_write(control, Int32($0.count), $0.baseAddress, arrival.interface)) }
    }

    /// Queues the reply for the batch's sendmmsg when made while draining on this thread, else
    /// sends it at once.
    func send(_ reply: [UInt8], to client: SocketAddress, from arrival: Arrival?) {
        guard !reply.isEmpty, !closed.load(ordering: .acquiring) else { return }
        if reply.count <= UDPListener.sendSize,
           sendInPlace(to: client, from: arrival, limit: reply.count, { $0.append(reply) }) != nil { return }
        sendsOffLoop.add(1, ordering: .sequentiallyConsistent)
        defer { sendsOffLoop.subtract(1, ordering: .sequentiallyConsistent) }
        guard !closed.load(ordering: .sequentiallyConsistent) else { return }
        var peer = sockaddr_storage()
        let peerLength = client.fill(&peer)
        withUnsafeTemporaryAllocation(byteCount: UDPListener.controlSpace, alignment: 16) { control in
            reply.withUnsafeBytes { bytes in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                withUnsafeMutablePointer(to: &peer) { peerPointer in
                    withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var message = msghdr(msg_name: UnsafeMutableRawPointer(peerPointer), msg_namelen: peerLength,
                                             msg_iov: vectorPointer, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
                        if let arrival {
                            message.msg_control = control.baseAddress
                            message.msg_controllen = UDPListener.writeControl(control.baseAddress!, arrival)
                        }
                        _ = sendmsg(fd, &message, Int32(MSG_DONTWAIT))
                    }
                }
            }
        }
    }

    /// Writes a reply by `write` straight into the next slot of the send batch, when on the
    /// loop's thread: true when it was queued, false when it came out empty or longer than
    /// `limit`; nil when it must be made elsewhere (another thread, a stopped listener, or a
    /// reply longer than a slot that the client would take).
    func sendInPlace(to client: SocketAddress, from arrival: Arrival?, limit: Int,
                     _ write: (inout WireWriter) -> Void) -> Bool? {
        guard limit > 0 else { return false }
        guard loop.isCurrent, !stopped.load(ordering: .relaxed) else { return nil }
        if pending == UDPListener.batch { flush() }
        let i = pending
        let slot = sendVectors[i].iov_base!
        var writer = WireWriter(UnsafeMutableRawBufferPointer(start: slot, count: min(limit, UDPListener.sendSize)))
        write(&writer)
        guard let length = writer.written else { return limit > UDPListener.sendSize ? nil : false }
        guard length > 0 else { return false }
        sendVectors[i].iov_len = length
        let peerLength = client.fill(&sendPeers[i])
        sendHeaders[i] = MultiMessageHeader(
            msg_hdr: msghdr(msg_name: UnsafeMutableRawPointer(sendPeers + i), msg_namelen: peerLength,
                            msg_iov: sendVectors + i, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0),
            msg_len: 0)
        if let arrival, let sendControl {
            let control = sendControl + i * UDPListener.controlSpace
            sendHeaders[i].msg_hdr.msg_control = control
            sendHeaders[i].msg_hdr.msg_controllen = UDPListener.writeControl(control, arrival)
        }
        pending += 1
        return true
    }

    /// Sends the queued replies; a datagram the kernel refuses (a full buffer, an unreachable
    /// client) is dropped, as a lost UDP reply would be, and the rest still go.
    private func flush() {
        var sent = 0
        while sent < pending {
            let r = Int(sinkhole_sendmmsg(fd, sendHeaders + sent, UInt32(pending - sent), Int32(MSG_DONTWAIT)))
            sent += r > 0 ? r : 1
        }
        pending = 0
    }
}
