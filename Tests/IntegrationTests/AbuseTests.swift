import Foundation
import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// Rate limits, the in-flight cap and TCP caps, through the running server.
@Suite struct AbuseTests {
    @Test func udpClientsOverTheRateGetEmptyTruncatedRepliesAndTCPIsNotLimited() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.rateLimit = 1
            c.rateLimitBurst = 5
        }
        defer { h.stop() }
        let limited = SocketAddress(address: [127, 0, 9, 1], port: 0)
        var normal = 0
        var truncated = 0
        for i in 0..<20 {
            let q = DNSTestClient.query("www.example.org", id: UInt16(100 + i))
            guard let reply = DNSTestClient.udp(q, to: h.address, from: limited), let m = Message(wire: reply) else { continue }
            if m.truncated {
                truncated += 1
                #expect(m.answerCount == 0 && reply.count <= q.count, "never an amplified answer")
                #expect(m.id == UInt16(100 + i))
            } else {
                normal += 1
            }
        }
        #expect(normal >= 5 && normal <= 7, "burst of 5 plus what refills during the test")
        #expect(truncated >= 13)
        // Another /24 has its own bucket; TCP from the limited prefix is answered in full.
        #expect(DNSTestClient.udp(DNSTestClient.query("www.example.org"), to: h.address,
                                  from: SocketAddress(address: [127, 0, 10, 1], port: 0)).flatMap { Message(wire: $0) }?.answerCount == 1)
        let tcp = DNSTestClient.tcp(DNSTestClient.query("www.example.org"), to: h.address).flatMap { Message(wire: $0) }
        #expect(tcp?.answerCount == 1 && tcp?.truncated == false)
        #expect(h.server.chain.counters.rateLimited == truncated)
    }

    /// With --rate-limit-ipv4-prefix 32 each address has its own budget: a host over the rate
    /// does not take its subnet neighbours' answers with it.
    @Test func aPerAddressPrefixKeepsNeighboursApart() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.rateLimit = 1
            c.rateLimitBurst = 2
            c.rateLimitIPv4Prefix = 32
        }
        defer { h.stop() }
        func truncated(from last: UInt8) -> Bool? {
            DNSTestClient.udp(DNSTestClient.query("www.example.org"), to: h.address,
                              from: SocketAddress(address: [127, 0, 11, last], port: 0)).flatMap { Message(wire: $0)?.truncated }
        }
        var noisy: [Bool?] = []
        for _ in 0..<6 { noisy.append(truncated(from: 1)) }
        #expect(noisy.contains(true), "127.0.11.1 went over its budget: \(noisy)")
        #expect(truncated(from: 2) == false, "127.0.11.2, in the same /24, still has its own")
    }

    /// Out of descriptors, the server pauses accepting TCP rather than retrying at once (which
    /// spun a core for as long as the shortage lasted, and said nothing), says so once, and
    /// takes the waiting connections when descriptors are free again. Its start-up line names
    /// the limit it runs under (the hard limit here, so it cannot raise it).
    @Test func runningOutOfDescriptorsPausesAcceptingAndRecovers() throws {
        let dir = try OperationalLogTests.workDirectory("emfile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = OperationalLogTests.serve(dir, ["--block-log", dir + "/block.log", "--tcp-max-per-client", "1000"],
                                          launcher: ["/usr/bin/prlimit", "--nofile=36:36", "--"])
        #expect(try s.start(), "\(s.stderr)")
        defer { _ = s.stop() }
        #expect(s.stderr.contains("open-files-limit=36"), "\(s.stderr)")
        // The TCP cap is lowered to fit the limit (to its floor of 16 here), which still leaves
        // this limit short: the shortage below is reached all the same.
        #expect(s.stderr.contains("lowered_to=16"), "\(s.stderr)")
        let server = SocketAddress(address: [127, 0, 0, 1], port: s.port)
        var held: [DNSTestClient.TCPConnection] = []
        for _ in 0..<80 { if let c = DNSTestClient.TCPConnection(to: server) { held.append(c) } }
        #expect(s.waitForLog("cannot accept TCP connections"), "\(s.stderr)")

        // A second of the shortage: a server retrying accept at once would use most of a core.
        func cpuTicks() -> Int {
            let stat = (try? String(contentsOfFile: "/proc/\(s.pid)/stat", encoding: .utf8)) ?? ""
            let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
            return fields.count > 12 ? (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) : 0
        }
        let before = cpuTicks()
        Thread.sleep(forTimeInterval: 1)   // the interval measured, not a wait for an event
        let used = cpuTicks() - before
        #expect(used < 20, "\(used) of 100 clock ticks in a second while out of descriptors")

        held.removeAll()
        let reply = DNSTestClient.tcp(DNSTestClient.query("evil.example"), to: server, timeout: 10).flatMap { Message(wire: $0) }
        #expect(reply?.rcode == Rcode.nxDomain, "answered over TCP once descriptors are free")
        #expect(s.stderr.components(separatedBy: "cannot accept TCP connections").count - 1 == 1, "said once: \(s.stderr)")
    }

    @Test func rateLimiterStateIsBoundedAndRefills() {
        let limiter = RateLimiter(queriesPerSecond: 10, burst: 2)
        let t0: UInt64 = 1_000_000_000
        #expect(limiter.allow([192, 0, 2, 1], now: t0))
        #expect(limiter.allow([192, 0, 2, 200], now: t0), "same /24 shares the bucket")
        #expect(!limiter.allow([192, 0, 2, 3], now: t0))
        #expect(limiter.allow([192, 0, 2, 3], now: t0 + 100_000_000), "one token back after 100 ms at 10/s")
        #expect(limiter.allow([198, 51, 100, 1], now: t0))
        let v6 = IPAddress.parse("2001:db8:0:1::1")!
        let sameSlash56 = IPAddress.parse("2001:db8:0:ff::1")!
        #expect(limiter.allow(v6, now: t0) && limiter.allow(sameSlash56, now: t0))
        #expect(!limiter.allow(v6, now: t0))
        // A million spoofed sources: the table does not grow (fixed slots), and nothing crashes.
        for i in 0..<1_000_000 {
            _ = limiter.allow([UInt8(i >> 16 & 0xFF), UInt8(i >> 8 & 0xFF), UInt8(i & 0xFF), 1], now: t0)
        }
    }

    /// Queries waiting for an identical question already upstream are bounded (16 ×
    /// --max-inflight): past that, SERVFAIL at once. From a review: a flood of one name against
    /// a slow upstream grew its waiting list by the query rate × the deadline.
    @Test func queriesWaitingOnOneQuestionAreBounded() throws {
        let h = try TestHarness(records: ["one.example.org. 300 IN A 192.0.2.44"]) { c in
            c.maxInFlight = 1   // 16 may wait
            c.upstreamTimeout = 4
        }
        defer { h.stop() }
        h.upstream.set(.held, for: "one.example.org")
        let socket = try #require(DNSTestClient.UDPSocket(to: h.address, timeout: 5))
        #expect(socket.send(DNSTestClient.query("one.example.org", id: 1)))
        #expect(h.upstream.waitForQueries(1, timeout: 5))
        for id in 2...20 { #expect(socket.send(DNSTestClient.query("one.example.org", id: UInt16(id)))) }
        // The 3 past the 16 waiting are answered at once, SERVFAIL; the rest wait.
        var early: [UInt16] = []
        for _ in 0..<3 {
            guard let reply = socket.receive(), let header = Header(reply) else { break }
            #expect(header.rcode == Rcode.servFail)
            early.append(header.id)
        }
        #expect(early.sorted() == [18, 19, 20])
        h.upstream.release()
        var answered = 0
        for _ in 0..<17 {
            guard let reply = socket.receive(), let m = Message(wire: reply) else { break }
            if m.answerCount == 1 { answered += 1 }
        }
        #expect(answered == 17, "the first and the 16 waiting get the answer")
        #expect(h.upstream.received(for: "one.example.org").count == 1)
    }

    /// Past --max-inflight a query gets SERVFAIL at once; the operator's log says so (once a
    /// minute) and /metrics tells these SERVFAILs from an upstream's.
    @Test func queriesPastTheInFlightCapGetServfailAtOnce() throws {
        let recorder = LogRecorder()
        let h = try TestHarness(logger: recorder.logger) { c in
            c.maxInFlight = 2
            c.upstreamTimeout = 4   // the two stay in flight until /metrics has been read
            c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0)
        }
        defer { h.stop() }
        h.upstream.set(.silent, for: "slow0.example.org")
        h.upstream.set(.silent, for: "slow1.example.org")
        let results = Mutex<[Double]>([])
        let group = DispatchGroup()
        for i in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                _ = DNSTestClient.udp(DNSTestClient.query("slow\(i).example.org", id: UInt16(i)), to: h.address, timeout: 5)
            }
        }
        // Wait until both are upstream, observed at the fake upstream, then the third is refused work.
        #expect(h.upstream.waitForQueries(2, timeout: 3))
        let started = Date()
        let third = try #require(DNSTestClient.ask("other.example.org", server: h.address, timeout: 5))
        results.withLock { $0.append(Date().timeIntervalSince(started)) }
        #expect(third.rcode == Rcode.servFail)
        #expect(results.withLock { $0[0] } < 1.0, "answered at once, not after the upstream timeout")
        #expect(h.server.chain.counters.overloaded == 1)
        let fourth = try #require(DNSTestClient.ask("another.example.org", server: h.address, timeout: 5))
        #expect(fourth.rcode == Rcode.servFail)
        let warnings = recorder.events("max-inflight reached: queries answered SERVFAIL at once")
        #expect(warnings.map(\.level) == [.warning], "once a minute, not per query")
        #expect(warnings.first?.metadata["max_inflight"] == "2")
        let address = try #require(h.server.metricsAddress)
        let body = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(body.contains("sinkhole_max_inflight_servfails 2"), "\(body)")
        #expect(body.contains("sinkhole_queries_inflight 2"), "\(body)")
        #expect(group.wait(timeout: .now() + 10) == .success)
    }

    @Test func tcpPerClientCapAndQueriesPerConnection() throws {
        let h = try TestHarness { c in
            c.tcpMaxPerClient = 2
            c.tcpMaxQueries = 3
        }
        defer { h.stop() }
        let a = try #require(DNSTestClient.TCPConnection(to: h.address))
        let b = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(a.send(DNSTestClient.query("evil.example")) && a.receive() != nil)
        #expect(b.send(DNSTestClient.query("evil.example")) && b.receive() != nil)
        let c = try #require(DNSTestClient.TCPConnection(to: h.address))
        #expect(c.closedByServer(), "a third connection from the same address is closed")
        // a has used 1 of 3 queries: two more are answered, then the server closes.
        #expect(a.send(DNSTestClient.query("evil.example")) && a.receive() != nil)
        #expect(a.send(DNSTestClient.query("evil.example")) && a.receive() != nil)
        #expect(a.closedByServer())
    }
}
