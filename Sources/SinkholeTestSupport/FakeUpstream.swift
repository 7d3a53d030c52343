import Dispatch
import Foundation
import Glibc
import SinkholeCore
import Synchronization

/// An in-process authoritative-style DNS server on 127.0.0.1 (UDP and TCP, same port) that
/// answers from zone-text records and records every query it receives, so tests can check what
/// left the sinkhole. Behaviours per name let tests make it slow, silent, truncating or spoofed.
public final class FakeUpstream: @unchecked Sendable {
    /// What the upstream does for a query.
    public enum Behaviour: Sendable {
        /// Answer from the records for that name and type (NXDOMAIN when the name has none).
        case answer
        /// Never reply.
        case silent
        /// Over UDP reply TC=1 with no records; over TCP answer in full.
        case truncateUDP
        /// Reply with this rcode and no records.
        case rcode(UInt8)
        /// Before the real reply, send one from another port and one with a wrong ID, both
        /// carrying `spoofAddress` in an A record.
        case spoofFirst(spoofAddress: String)
        /// Answer NOERROR with exactly these records (presentation format) in the answer section.
        case answerWith([String])
        /// Over UDP, answer as `.answer` does, but only when `release()` is called.
        case held
        /// Answer from the records with these header bits also set (AA 0x0400, AD 0x0020), and
        /// these records (presentation format) added to the authority and additional sections.
        case answerExtra(setFlags: UInt16, authority: [String], additional: [String])
        /// A validating resolver and a name whose signatures fail: SERVFAIL, unless the query
        /// has CD set, when it answers from the records.
        case bogusUnlessCD
        /// A reply of the header alone (QDCOUNT 0, no records) with this rcode.
        case headerOnly(UInt8)
        /// A reply with the query's ID and QR set whose body is no DNS message.
        case garbage
        /// SERVFAIL with an Extended DNS Error (RFC 8914) of this INFO-CODE and text in its OPT
        /// record, as a validating resolver says DNSSEC Bogus (6) or Signature Expired (7).
        case servfailWithEDE(UInt16, text: String)
        /// A server that does not know EDNS: FORMERR (with the question, no OPT) to a query
        /// with an OPT record, the answer to one without.
        case formerrToEDNS
        /// The same, with a FORMERR of the header alone (no question), as a forger can send.
        case headerOnlyFormerrToEDNS
        /// The answer, with the query's ECS option echoed back with this SCOPE PREFIX-LENGTH (a
        /// CDN's authority tailoring its answer to the client's subnet).
        case echoClientSubnet(scope: UInt8)
        /// The answer with an OPT record at the end of its answer section (RFC 6891 allows one
        /// only in the additional section).
        case optInAnswer
        /// A reply whose OPT record carries this 12-bit rcode (BADVERS 16, BADCOOKIE 23): its
        /// low 4 bits in the header, the rest in the OPT.
        case extendedRcode(UInt16)
    }

    /// A query as the upstream saw it.
    public struct Received: Sendable {
        public var id: UInt16
        public var sourcePort: UInt16
        public var transport: Transport
        public var name: String
        public var type: UInt16
        public var dnssecOK: Bool
        public var hadOPT: Bool
        /// The OPT record's raw options (code, length, data …).
        public var options: [UInt8] = []
        public var checkingDisabled = false
        public var authenticData = false
        public var recursionDesired = true
    }

    public let address: SocketAddress
    private let udpFD: Int32
    private let tcpFD: Int32
    private let spoofFD: Int32
    private let queue = DispatchQueue(label: "fake-upstream")
    private var sources: [DispatchSourceRead] = []
    /// UDP replies of `.held` names, until `release()`.
    private var heldReplies: [(client: SocketAddress, reply: [UInt8])] = []
    private let state = Mutex<(records: [String: [String]], behaviours: [String: Behaviour], received: [Received])>(([:], [:], []))

    /// Records in presentation format, e.g. `www.example.org. 300 IN A 192.0.2.1`.
    /// `port` 0 lets the kernel choose; a fixed port restarts an upstream where a stopped one was.
    public init(records: [String] = [], port: UInt16 = 0) throws {
        var udp: Int32 = -1
        var tcp: Int32 = -1
        var bound: SocketAddress?
        for _ in 0..<8 {
            udp = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: port), type: Int32(SOCK_DGRAM.rawValue))
            guard let a = SocketAddress.local(of: udp) else { continue }
            if let t = try? Socket.bound(a, type: Int32(SOCK_STREAM.rawValue)) {
                tcp = t
                bound = a
                break
            }
            close(udp)
        }
        guard let bound, listen(tcp, 16) == 0 else { throw SystemError("fake upstream bind") }
        address = bound
        udpFD = udp
        tcpFD = tcp
        spoofFD = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: 0), type: Int32(SOCK_DGRAM.rawValue))
        add(records)
        start()
    }

    deinit {
        for s in sources { s.cancel() }
        close(spoofFD)
    }

    public func stop() {
        for s in sources { s.cancel() }
        sources = []
    }

    public func add(_ records: [String]) {
        state.withLock { s in
            for r in records {
                let owner = r.split(separator: " ").first.map { String($0).lowercased() } ?? ""
                s.records[FakeUpstream.key(owner), default: []].append(r)
            }
        }
    }

    /// Sends the replies held for `.held` names (on the upstream's queue; returns once sent).
    public func release() {
        queue.sync {
            for (client, reply) in heldReplies {
                client.withSockAddr { addr, len in
                    _ = reply.withUnsafeBytes { sendto(udpFD, $0.baseAddress, $0.count, 0, addr, len) }
                }
            }
            heldReplies = []
        }
    }

    public func set(_ behaviour: Behaviour, for name: String) {
        state.withLock { $0.behaviours[FakeUpstream.key(name)] = behaviour }
    }

    public var received: [Received] { state.withLock { $0.received } }
    private let arrived = NSCondition()

    /// Waits until at least `count` queries have arrived; false on timeout.
    public func waitForQueries(_ count: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        arrived.lock()
        defer { arrived.unlock() }
        while received.count < count {
            if !arrived.wait(until: deadline) { return received.count >= count }
        }
        return true
    }

    /// Queries received for a name (any case).
    public func received(for name: String) -> [Received] {
        received.filter { FakeUpstream.key($0.name) == FakeUpstream.key(name) }
    }

    /// A name as the upstream keys it: lowercase, with the final dot.
    public static func key(_ name: String) -> String {
        var n = name.lowercased()
        if !n.hasSuffix(".") { n += "." }
        return n
    }

    private func start() {
        let udpSource = DispatchSource.makeReadSource(fileDescriptor: udpFD, queue: queue)
        let udpFD = self.udpFD, tcpFD = self.tcpFD
        udpSource.setEventHandler { [weak self] in self?.receiveUDP() }
        udpSource.setCancelHandler { close(udpFD) }
        let tcpSource = DispatchSource.makeReadSource(fileDescriptor: tcpFD, queue: queue)
        tcpSource.setEventHandler { [weak self] in self?.acceptTCP() }
        tcpSource.setCancelHandler { close(tcpFD) }
        sources = [udpSource, tcpSource]
        udpSource.resume()
        tcpSource.resume()
    }

    private func receiveUDP() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = buffer.withUnsafeMutableBytes { raw in
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(udpFD, raw.baseAddress, raw.count, 0, $0, &length) }
            }
        }
        guard n > 0, let client = SocketAddress(storage: &storage) else { return }
        let packet = Array(buffer[0..<n])
        let replies = respond(to: packet, transport: .udp, client: client)
        if let q = Message(wire: packet)?.question,
           case .held = state.withLock({ $0.behaviours[FakeUpstream.key(WireName.text(q.name))] }) {
            heldReplies += replies.map { (client, $0.1) }
            return
        }
        for (fd, reply) in replies {
            client.withSockAddr { addr, len in
                _ = reply.withUnsafeBytes { sendto(fd == -1 ? udpFD : fd, $0.baseAddress, $0.count, 0, addr, len) }
            }
        }
    }

    private func acceptTCP() {
        let fd = accept(tcpFD, nil, nil)
        guard fd >= 0 else { return }
        var peer = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) } }
        let client = SocketAddress(storage: &peer) ?? address
        Thread.detachNewThread { [weak self] in
            defer { close(fd) }
            var tv = timeval(tv_sec: 3, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var data: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                if data.count >= 2 {
                    let length = Int(data[0]) << 8 | Int(data[1])
                    if data.count >= 2 + length {
                        let message = Array(data[2..<(2 + length)])
                        data.removeFirst(2 + length)
                        for (_, reply) in self?.respond(to: message, transport: .tcp, client: client) ?? [] {
                            let framed = [UInt8(reply.count >> 8), UInt8(reply.count & 0xFF)] + reply
                            _ = framed.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        }
                        continue
                    }
                }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                data += chunk[0..<n]
            }
        }
    }

    /// Replies to send: (socket to send from, -1 = the main one; bytes).
    private func respond(to packet: [UInt8], transport: Transport, client: SocketAddress) -> [(Int32, [UInt8])] {
        guard let query = Message(wire: packet), let q = query.question else { return [] }
        let name = WireName.text(q.name)
        let (records, behaviour) = state.withLock { s -> ([String], Behaviour) in
            s.received.append(Received(id: query.id, sourcePort: client.port, transport: transport, name: name,
                                       type: q.type, dnssecOK: query.edns?.dnssecOK ?? false, hadOPT: query.edns != nil,
                                       options: query.ednsOptions, checkingDisabled: query.checkingDisabled,
                                       authenticData: query.authenticData, recursionDesired: query.recursionDesired))
            return (s.records[FakeUpstream.key(name)] ?? [], s.behaviours[FakeUpstream.key(name)] ?? .answer)
        }
        arrived.lock()
        arrived.broadcast()
        arrived.unlock()
        /// `edns` false: no OPT record, whatever the query had (a server that does not know EDNS).
        func reply(rcode: UInt8 = 0, tc: Bool = false, answers: [String], id: UInt16? = nil, edns: Bool = true) -> [UInt8] {
            guard let m = Message.empty() else { return [] }
            m.id = id ?? query.id
            m.isResponse = true
            m.recursionDesired = query.recursionDesired
            m.recursionAvailable = true
            m.rcode = rcode
            m.truncated = tc
            m.setQuestion(q)
            if edns, let e = query.edns { m.edns = EDNS(udpPayloadSize: 4096, dnssecOK: e.dnssecOK) }
            for a in answers {
                let fields = a.split(separator: " ")
                if fields.count > 3 {
                    let type = String(fields[3])
                    let wantsRRSIG = type == "RRSIG" && (query.edns?.dnssecOK ?? false)
                    if type == "SOA" { m.append(.authority, presentation: a); continue }
                    if type == RRType.name(q.type) || type == "CNAME" || wantsRRSIG || q.type == 255 {
                        m.append(.answer, presentation: a)
                    }
                }
            }
            return m.wire() ?? []
        }
        let answerRecords = records
        let rcode: UInt8 = records.isEmpty ? Rcode.nxDomain : 0
        switch behaviour {
        case .answer, .held:
            return [(-1, reply(rcode: rcode, answers: answerRecords))]
        case .silent:
            return []
        case .truncateUDP:
            if transport == .udp { return [(-1, reply(tc: true, answers: []))] }
            return [(-1, reply(rcode: rcode, answers: answerRecords))]
        case .rcode(let code):
            return [(-1, reply(rcode: code, answers: []))]
        case .answerWith(let records):
            guard let m = Message(wire: reply(answers: [])) else { return [] }
            for r in records { m.append(.answer, presentation: r) }
            return [(-1, m.wire() ?? [])]
        case .answerExtra(let flags, let authority, let additional):
            guard let m = Message(wire: reply(rcode: rcode, answers: answerRecords)) else { return [] }
            for r in authority { m.append(.authority, presentation: r) }
            for r in additional { m.append(.additional, presentation: r) }
            guard var wire = m.wire() else { return [] }
            wire[2] |= UInt8(flags >> 8)
            wire[3] |= UInt8(flags & 0xFF)
            return [(-1, wire)]
        case .bogusUnlessCD:
            if query.checkingDisabled { return [(-1, reply(rcode: rcode, answers: answerRecords))] }
            return [(-1, reply(rcode: Rcode.servFail, answers: []))]
        case .headerOnly(let code):
            let id = query.id
            return [(-1, [UInt8(id >> 8), UInt8(id & 0xFF), 0x81, 0x80 | code, 0, 0, 0, 0, 0, 0, 0, 0])]
        case .extendedRcode(let code):
            guard let m = Message(wire: reply(rcode: UInt8(code & 0xF), answers: answerRecords)) else { return [] }
            m.edns = EDNS(udpPayloadSize: 4096, version: 0, extendedRcode: UInt8(code >> 4), dnssecOK: false)
            return [(-1, m.wire() ?? [])]
        case .formerrToEDNS:
            if query.edns != nil { return [(-1, reply(rcode: Rcode.formErr, answers: [], edns: false))] }
            return [(-1, reply(rcode: rcode, answers: answerRecords))]
        case .echoClientSubnet(let scope):
            guard let m = Message(wire: reply(rcode: rcode, answers: answerRecords)),
                  case .valid(let subnet) = ClientSubnet.read(options: query.ednsOptions) else { return [] }
            m.setEDNSOptions(subnet.echo(scope: scope))
            return [(-1, m.wire() ?? [])]
        case .headerOnlyFormerrToEDNS:
            let id = query.id
            if query.edns != nil { return [(-1, [UInt8(id >> 8), UInt8(id & 0xFF), 0x81, 0x80 | Rcode.formErr, 0, 0, 0, 0, 0, 0, 0, 0])] }
            return [(-1, reply(rcode: rcode, answers: answerRecords))]
        case .optInAnswer:
            var wire = reply(rcode: rcode, answers: answerRecords, edns: false)
            guard wire.count > 12, wire[8...11].allSatisfy({ $0 == 0 }) else { return [] }
            wire[7] += 1
            wire += [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
            return [(-1, wire)]
        case .servfailWithEDE(let code, let text):
            guard let m = Message(wire: reply(rcode: Rcode.servFail, answers: [])) else { return [] }
            m.edns = EDNS(udpPayloadSize: 1232)
            m.setEDNSOptions([0, 15, 0, UInt8(2 + text.utf8.count), UInt8(code >> 8), UInt8(code & 0xFF)] + Array(text.utf8))
            return [(-1, m.wire() ?? [])]
        case .garbage:
            let id = query.id
            return [(-1, [UInt8(id >> 8), UInt8(id & 0xFF), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF])]
        case .spoofFirst(let address):
            let bogus = ["\(name). 300 IN A \(address)"]
            return [(spoofFD, reply(answers: bogus)),
                    (-1, reply(answers: bogus, id: query.id &+ 1)),
                    (-1, reply(rcode: rcode, answers: answerRecords))]
        }
    }
}
