// Fuzz target `chain`: the whole QueryChain including the forwarder, against a fake upstream.
//
// Input: a 2-byte big-endian length L, then L bytes of client query, then the upstream's
// reply template (shorter inputs: all query, empty template). The fake upstream listens on a
// loopback UDP and TCP port of this process. For each query the forwarder sends, it answers
// with the template made acceptable to the forwarder's spoofing checks: the forwarder's ID,
// QR set, QDCOUNT 1 and the forwarder's own question, then the template's flags (byte 2-3,
// including TC, which makes the forwarder retry over TCP), its counts (bytes 6-11) and the rest
// of the template as the record sections (compression pointers into the question work).
// So the fuzzer controls every byte of the upstream's answer and ResponseInspection (CNAME
// cloaking) and the relay path see arbitrary records.
//
// Checked: `respond` is called exactly once within 5 s, every reply is well-formed (see
// FuzzSupport.checkReply), and the upstream's reply reads the same with CachedReply as with ldns
// (FuzzSupport.checkReplyReader).
import Dispatch
import Foundation
import SinkholeCore
import Synchronization

/// The current input's reply template, read by the fake upstream threads.
private let template = Mutex<[UInt8]>([])

/// The bytes the fake upstream answers `query` (the forwarder's upstream query) with.
private func upstreamReply(to query: [UInt8]) -> [UInt8]? {
    guard query.count >= Header.size else { return nil }
    // The forwarder's question: one name (it never compresses its own query) and type/class.
    var end = Header.size
    while end < query.count, query[end] != 0 { end += 1 + Int(query[end]) }
    end += 5
    guard end <= query.count else { return nil }
    var t = template.withLock { $0 }
    if t.count < Header.size { t += [UInt8](repeating: 0, count: Header.size - t.count) }
    var reply = [query[0], query[1], t[2] | 0x80, t[3], 0, 1] + t[6..<12]
    reply += query[Header.size..<end]
    reply += t[Header.size...]
    FuzzSupport.checkReplyReader(reply)
    return reply
}

/// A well-formed SERVFAIL answer to the forwarder's query: its ID, QR, its question.
private func servfail(to query: [UInt8]) -> [UInt8]? {
    guard query.count >= Header.size else { return nil }
    var end = Header.size
    while end < query.count, query[end] != 0 { end += 1 + Int(query[end]) }
    end += 5
    guard end <= query.count else { return nil }
    return [query[0], query[1], 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0] + query[Header.size..<end]
}

private func fail(_ what: String) -> Never {
    fatalError("fake upstream: \(what): \(String(cString: strerror(errno)))")
}

/// Starts the fake upstream on 127.0.0.1 (one port, UDP and TCP) and returns its address.
private func startUpstream() -> SocketAddress {
    let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard udp >= 0 else { fail("socket") }
    var address = SocketAddress(address: [127, 0, 0, 1], port: 0)
    guard address.withSockAddr({ bind(udp, $0, $1) }) == 0 else { fail("bind") }
    guard let bound = SocketAddress.local(of: udp) else { fail("getsockname") }
    address = bound
    let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard tcp >= 0 else { fail("socket") }
    var one: Int32 = 1
    setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard address.withSockAddr({ bind(tcp, $0, $1) }) == 0, listen(tcp, 64) == 0 else { fail("TCP bind/listen") }

    Thread.detachNewThread {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(udp, raw.baseAddress, raw.count, 0, $0, &length) }
                }
            }
            if n < 0 { if errno == EINTR { continue }; fail("recvfrom") }
            let query = Array(buffer[0..<n])
            guard let reply = upstreamReply(to: query), reply.count <= 65_507 else { continue }
            var datagrams = [reply]
            // The forwarder ignores a reply it cannot decode and would wait out its timeout:
            // follow such a reply at once with a plain SERVFAIL, so every input takes
            // milliseconds and the ignoring path is still exercised.
            if Message(wire: reply) == nil, let fallback = servfail(to: query) { datagrams.append(fallback) }
            for datagram in datagrams {
                _ = datagram.withUnsafeBytes { raw in
                    withUnsafePointer(to: &storage) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(udp, raw.baseAddress, raw.count, 0, $0, length) }
                    }
                }
            }
        }
    }
    Thread.detachNewThread {
        while true {
            let fd = accept(tcp, nil, nil)
            if fd < 0 { if errno == EINTR || errno == ECONNABORTED { continue }; fail("accept") }
            Thread.detachNewThread { serveTCP(fd) }
        }
    }
    return address
}

private func serveTCP(_ fd: Int32) {
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    func read(_ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n <= 0 { return nil }
            got += n
        }
        return out
    }
    guard let prefix = read(2), let query = read(Int(prefix[0]) << 8 | Int(prefix[1])),
          let reply = upstreamReply(to: query), reply.count <= 65_535 else { return }
    var framed = [UInt8(reply.count >> 8), UInt8(reply.count & 0xFF)] + reply
    while !framed.isEmpty {
        let n = framed.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return }
        framed.removeFirst(n)
    }
}

private let upstream = startUpstream()
private let store = FuzzSupport.makeStore()
private let forwarder = Forwarder(upstreams: [upstream], timeout: 1, payloadSize: 1232, logger: FuzzSupport.silentLogger)
private let chain = QueryChain(
    blocking: BlockingStage(store: store, policy: BlockPolicy(mode: .sinkhole, sinkholeIPv4: [192, 0, 2, 99]), log: nil),
    forwarder: forwarder, replies: ReplyBuilder(payloadSize: 1232), logger: FuzzSupport.silentLogger)
private let client = SocketAddress(address: [127, 0, 0, 1], port: 40_000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzSupport.bytes(data, size)
    var packet = input
    var reply: [UInt8] = []
    if input.count >= 2 {
        let length = Int(input[0]) << 8 | Int(input[1])
        if 2 + length <= input.count {
            packet = Array(input[2..<(2 + length)])
            reply = Array(input[(2 + length)...])
        }
    }
    template.withLock { $0 = reply }
    for transport in [Transport.udp, .tcp] {
        let replies = Mutex<[[UInt8]]>([])
        let done = DispatchSemaphore(value: 0)
        chain.handle(packet, client: client, transport: transport) { bytes in
            replies.withLock { $0.append(bytes) }
            done.signal()
        }
        guard done.wait(timeout: .now() + 5) == .success else {
            fatalError("chain/\(transport): respond not called within 5 s; input \(FuzzSupport.hex(input))")
        }
        let got = replies.withLock { $0 }
        guard got.count == 1 else {
            fatalError("chain/\(transport): respond called \(got.count) times; input \(FuzzSupport.hex(input))")
        }
        FuzzSupport.checkReply(got[0], to: packet, transport: transport, where: "chain/\(transport)")
    }
    return 0
}
