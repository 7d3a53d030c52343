import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

@Suite struct UpstreamHealthTests {
    static let records = ["www.example.org. 300 IN A 192.0.2.12"]

    @Test func deadUpstreamIsMarkedDownSkippedAndUsedAgainWhenItComesBack() throws {
        let first = try FakeUpstream(records: UpstreamHealthTests.records)
        let port = first.address.port
        let h = try TestHarness(records: UpstreamHealthTests.records) { c in
            c.upstreams = [first.address, c.upstreams[0]]
            c.upstreamTimeout = 0.3
            c.upstreamRetryBackoff = 0.5
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
        #expect(first.received.count == 1)

        // The first upstream goes away: queries still answered by the second.
        first.stop()
        for _ in 0..<UpstreamHealth.downAfter {
            #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
        }
        let health = h.server.chain.forwarder.health
        #expect(health.snapshot[0].down)
        // Marked down: the next query goes to the second upstream first and is not slowed.
        let before = h.upstream.received.count
        let started = Date()
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
        #expect(Date().timeIntervalSince(started) < 0.25, "no time spent on the down upstream")
        #expect(h.upstream.received.count == before + 1)

        // It comes back on the same port; after the back-off it is probed and used again.
        let back = try FakeUpstream(records: UpstreamHealthTests.records, port: port)
        defer { back.stop() }
        let deadline = Date().addingTimeInterval(5)
        while back.received.isEmpty && Date() < deadline {
            #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
            _ = back.waitForQueries(1, timeout: 0.2)
        }
        #expect(!back.received.isEmpty, "the recovered upstream is probed")
        // The probe's answer is taken on a loop's thread after the upstream sent it: a bounded
        // wait for it, with a query at each step (the test raced it under load).
        let marked = Date().addingTimeInterval(3)
        while health.snapshot[0].down && Date() < marked {
            _ = DNSTestClient.ask("www.example.org", server: h.address)
            _ = back.waitForQueries(back.received.count + 1, timeout: 0.1)
        }
        #expect(!health.snapshot[0].down)
    }

    /// A standby behind a healthy upstream (`first`) that was marked down is probed once its
    /// back-off passes, beside the queries the first answers: it was probed only by a query that
    /// reached it, which never came, so it stayed marked down (and `sinkhole_upstream_up` 0) for
    /// good while healthy. The probe does not hold up the client's query.
    @Test func aRecoveredStandbyBehindAHealthyFirstIsProbedAndMarkedUp() throws {
        let standby = try FakeUpstream(records: UpstreamHealthTests.records)
        defer { standby.stop() }
        let h = try TestHarness(records: UpstreamHealthTests.records) { c in
            c.upstreams = [c.upstreams[0], standby.address]
            c.upstreamTimeout = 0.2
            c.upstreamRetryBackoff = 0.3
        }
        defer { h.stop() }
        // Both fail three names in a row: both marked down.
        for i in 0..<UpstreamHealth.downAfter {
            h.upstream.set(.silent, for: "dead\(i).example.org")
            standby.set(.silent, for: "dead\(i).example.org")
            #expect(DNSTestClient.ask("dead\(i).example.org", server: h.address)?.rcode == Rcode.servFail)
        }
        let health = h.server.chain.forwarder.health
        #expect(health.isDown(0) && health.isDown(1))
        // Both answer again. The first takes the queries; the standby is probed all the same.
        let deadline = Date().addingTimeInterval(5)
        var asked = 0
        while (health.isDown(0) || health.isDown(1)) && Date() < deadline && asked < 200 {
            #expect(DNSTestClient.ask("n\(asked).www.example.org", server: h.address)?.rcode == Rcode.nxDomain)
            asked += 1
            _ = standby.waitForQueries(UpstreamHealth.downAfter + 1, timeout: 0.05)   // the probe, if it came
        }
        #expect(!health.isDown(0))
        #expect(!health.isDown(1), "the standby is probed and marked up")
    }

    /// A down upstream that every query still reaches (it is the only one) writes one error when
    /// it goes down, each try after that at debug, a summary at most once per interval, and one
    /// notice when it answers again: not a warning per query.
    @Test func aDownUpstreamIsLoggedOnceNotPerQuery() throws {
        let records = UpstreamHealthTests.records
        for interval in [60.0, 0] {
            let recorder = LogRecorder()
            let h = try TestHarness(records: records, logger: recorder.logger) { c in
                c.upstreamTimeout = 0.3
                c.upstreamRetryBackoff = 0.2
                c.upstreamStillDownInterval = interval
            }
            defer { h.stop() }
            let port = h.upstream.address.port
            h.upstream.stop()   // nothing listens: each try fails at once (port unreachable)
            let asked = UpstreamHealth.downAfter + 5
            for i in 0..<asked {
                #expect(DNSTestClient.ask("q\(i).example.org", server: h.address)?.rcode == Rcode.servFail)
            }
            // The first failure while up is a warning, the next ones within the minute debug.
            #expect(recorder.events("upstream try failed").map(\.level) ==
                    [.warning] + Array(repeating: .debug, count: UpstreamHealth.downAfter - 2 + (interval > 0 ? 5 : 0)))
            #expect(recorder.events.withLock { $0 }.filter { $0.message.hasPrefix("upstream marked down") }.map(\.level) == [.error])
            let stillDown = recorder.events("upstream still down")
            #expect(stillDown.count == (interval > 0 ? 0 : 5))
            #expect(stillDown.allSatisfy { $0.level == .warning && $0.metadata["failures"] == "1" })

            let back = try FakeUpstream(records: records, port: port)
            defer { back.stop() }
            let deadline = Date().addingTimeInterval(5)
            while recorder.events("upstream answering again").isEmpty && Date() < deadline {
                _ = DNSTestClient.ask("www.example.org", server: h.address)
            }
            let again = recorder.events("upstream answering again")
            #expect(again.map(\.level) == [.notice])
            let whileDown = try #require(again.first?.metadata["failures_while_down"]).description
            #expect(Int(whileDown).map { $0 >= 5 } == true, "the tries after it went down, and any probe that failed: \(whileDown)")
        }
    }

    /// A random-subdomain attack on a name whose servers do not answer: its names time out three
    /// in a row and mark the upstream down, the next real name marks it up again. Each change
    /// is said at most once a minute, not at every flap (150 lines a second in a trial).
    @Test func aFlappingUpstreamIsSaidOnceAMinuteNotAtEveryChange() throws {
        let recorder = LogRecorder()
        let h = try TestHarness(records: UpstreamHealthTests.records, logger: recorder.logger) { c in
            c.upstreamTimeout = 0.2
            c.upstreamStillDownInterval = 3   // when the held-back state is said (a minute in use)
        }
        defer { h.stop() }
        for cycle in 0..<3 {
            for i in 0..<UpstreamHealth.downAfter {
                h.upstream.set(.silent, for: "t\(cycle)-\(i).victim.example")
                #expect(DNSTestClient.ask("t\(cycle)-\(i).victim.example", server: h.address)?.rcode == Rcode.servFail)
            }
            #expect(h.server.chain.forwarder.health.isDown(0), "cycle \(cycle)")
            #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
            #expect(!h.server.chain.forwarder.health.isDown(0), "cycle \(cycle)")
        }
        let downs = recorder.events.withLock { $0 }.filter { $0.message.hasPrefix("upstream marked down") }
        #expect(downs.map(\.level) == [.error, .debug, .debug])
        #expect(recorder.events("upstream answering again").map(\.level) == [.notice, .debug, .debug])
        #expect(recorder.events("upstream try failed").filter { $0.level == .warning }.count == 1)
        // The changes held back are said once the interval is over, with the state they left:
        // the log's last word agrees with sinkhole_upstream_up though no event came after.
        // (Said once per interval: on a slow machine one may come between the cycles, so the
        // counts are summed over those said.)
        #expect(recorder.waitUntil(timeout: 15) { events in
            let summaries = events.filter { $0.message.contains("after flapping") }
            func unsaid(_ key: String) -> Int { summaries.compactMap { $0.metadata[key].flatMap { Int($0.description) } }.reduce(0, +) }
            return unsaid("times_marked_down_unsaid") == 2 && unsaid("recoveries_unsaid") == 2
        })
        let last = try #require(recorder.events.withLock { $0 }.last { $0.message.contains("after flapping") })
        #expect(last.level == .notice && last.message.hasPrefix("upstream is answering"), "\(last)")
    }

    @Test func servfailMovesOnAndTheDeadlineBoundsTheWholeLoop() throws {
        let a = try FakeUpstream()
        let b = try FakeUpstream()
        defer { a.stop(); b.stop() }
        a.set(.rcode(Rcode.servFail), for: "www.example.org")
        b.set(.silent, for: "www.example.org")
        b.set(.silent, for: "slow.example.org")
        a.set(.silent, for: "slow.example.org")
        let h = try TestHarness(records: UpstreamHealthTests.records) { c in
            c.upstreams = [a.address, b.address, c.upstreams[0]]
            c.upstreamTimeout = 0.4
            c.upstreamDeadline = 0.6
        }
        defer { h.stop() }
        h.upstream.set(.silent, for: "slow.example.org")
        // a SERVFAILs at once, b is silent 0.4 s, the third answers.
        let r = try #require(DNSTestClient.ask("www.example.org", server: h.address))
        #expect(r.answerCount == 1)
        // Everything silent: SERVFAIL once the 0.6 s deadline passes, not after 3 × 0.4 s.
        let started = Date()
        let failed = try #require(DNSTestClient.ask("slow.example.org", server: h.address))
        let took = Date().timeIntervalSince(started)
        #expect(failed.rcode == Rcode.servFail)
        #expect(took < 1.0, "took \(took) s")
    }

    @Test func closedUpstreamPortFailsOverAtOnce() throws {
        // A port nobody listens on: bind, note the port, close.
        let probe = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: 0), type: Int32(SOCK_DGRAM.rawValue))
        let closed = try #require(SocketAddress.local(of: probe))
        close(probe)
        let h = try TestHarness(records: UpstreamHealthTests.records) { c in
            c.upstreams = [closed, c.upstreams[0]]
            c.upstreamTimeout = 2
        }
        defer { h.stop() }
        let started = Date()
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
        #expect(Date().timeIntervalSince(started) < 1.0, "ICMP port unreachable noticed, not the 2 s timeout")
    }

    /// From two trials: SERVFAIL for a few broken names (a broken delegation, a DNSSEC-bogus
    /// domain) marked a healthy upstream down, with an error in the log. It moves on to the next
    /// upstream, is counted as servfail, and is not held against the upstream's health.
    @Test func servfailsForBrokenNamesDoNotMarkAnUpstreamDown() throws {
        let second = try FakeUpstream(records: [])
        defer { second.stop() }
        let h = try TestHarness(records: UpstreamHealthTests.records) { $0.upstreams.append(second.address) }
        defer { h.stop() }
        for i in 0..<(UpstreamHealth.downAfter + 2) {
            h.upstream.set(.rcode(Rcode.servFail), for: "b\(i).broken.example")
            second.set(.rcode(Rcode.servFail), for: "b\(i).broken.example")
            #expect(DNSTestClient.ask("b\(i).broken.example", server: h.address)?.rcode == Rcode.servFail)
        }
        #expect(!h.server.chain.forwarder.health.isDown(0) && !h.server.chain.forwarder.health.isDown(1))
        #expect(second.received.count == UpstreamHealth.downAfter + 2, "each moved on to the second")
        let text = h.server.metrics.exposition()
        #expect(text.contains(#"sinkhole_upstream_errors_total{upstream="\#(h.upstream.address)",reason="servfail"} 5"#), "\(text)")
        // Held against it once another upstream answers the same names (its own resolution is
        // broken, a review pointed out): marked down after three, as before.
        for i in 0..<UpstreamHealth.downAfter {
            h.upstream.set(.rcode(Rcode.servFail), for: "w\(i).example.org")
            second.set(.answerWith(["w\(i).example.org. 60 IN A 192.0.2.9"]), for: "w\(i).example.org")
            #expect(DNSTestClient.ask("w\(i).example.org", server: h.address)?.answerCount == 1)
        }
        #expect(h.server.chain.forwarder.health.isDown(0) && !h.server.chain.forwarder.health.isDown(1))
    }

    /// An upstream that refuses (or SERVFAILs) every query while another answers is marked down
    /// after three, and a probe answered so keeps it down: a REFUSED was never held against it,
    /// so it stayed first and every query paid its round trip; a probe answered SERVFAIL counted
    /// as a recovery, and it came back every 5 s (a review).
    @Test(arguments: [Rcode.refused, Rcode.servFail])
    func anUpstreamThatPassesOverEveryQueryIsMarkedDownAndItsProbesKeepItDown(rcode: UInt8) throws {
        let second = try FakeUpstream(records: [])
        defer { second.stop() }
        let h = try TestHarness(records: UpstreamHealthTests.records) { c in
            c.upstreams = [c.upstreams[0], second.address]
            c.upstreamTimeout = 0.5
            c.upstreamRetryBackoff = 0.2
        }
        defer { h.stop() }
        let health = h.server.chain.forwarder.health
        let reason = rcode == Rcode.servFail ? "servfail" : "bad_reply"
        func failures() -> Int {
            let line = h.server.metrics.exposition().split(separator: "\n").first {
                $0.hasPrefix(#"sinkhole_upstream_errors_total{upstream="\#(h.upstream.address)",reason="\#(reason)"}"#)
            }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        var asked = 0
        func ask() {
            let name = "p\(asked).example.org"
            h.upstream.set(.rcode(rcode), for: name)
            second.set(.answerWith(["\(name) 60 IN A 192.0.2.9"]), for: name)
            #expect(DNSTestClient.ask(name, server: h.address)?.answerCount == 1)
            asked += 1
        }
        for _ in 0..<UpstreamHealth.downAfter { ask() }
        #expect(health.isDown(0) && !health.isDown(1), "held against it once the other answered")
        // Queries go on (the probes ride on them); two probes come, each answered the same way.
        let deadline = Date().addingTimeInterval(5)
        while failures() < UpstreamHealth.downAfter + 2 && Date() < deadline && asked < 200 {
            ask()
            _ = h.upstream.waitForQueries(h.upstream.received.count + 1, timeout: 0.05)   // a probe, if one came
        }
        #expect(failures() >= UpstreamHealth.downAfter + 2, "probed twice")
        #expect(health.isDown(0), "a probe answered \(Rcode.name(UInt16(rcode))) is no recovery")
    }

    @Test func strategiesOrderUpstreams() {
        let ups = (1...3).map { SocketAddress(address: [127, 0, 0, 1], port: UInt16($0)) }
        let health = UpstreamHealth(upstreams: ups)
        #expect(health.order(.first) == [0, 1, 2])
        health.success(0, rtt: 0.050)
        health.success(1, rtt: 0.005)
        health.success(2, rtt: 0.020)
        #expect(health.order(.fastest) == [1, 2, 0])
        #expect(Set(health.order(.random)) == [0, 1, 2])
        for _ in 0..<UpstreamHealth.downAfter { health.failure(1) }
        #expect(health.order(.fastest) == [2, 0, 1], "a down upstream goes last")
        #expect(health.order(.first) == [0, 2, 1])
    }

    /// From an upstream-failure trial: an upstream that answers every other query at once and
    /// drops the rest stayed the `fastest`: its timeouts never counted in its RTT, and never
    /// three in a row. A timeout now counts as an answer after the time waited.
    @Test func timeoutsCountInTheSmoothedRTT() {
        let ups = (1...2).map { SocketAddress(address: [127, 0, 0, 1], port: UInt16($0)) }
        let health = UpstreamHealth(upstreams: ups)
        health.success(1, rtt: 0.200)
        for _ in 0..<10 {
            health.success(0, rtt: 0.001)
            health.failure(0, waited: 2.0)
        }
        #expect(!health.isDown(0))
        #expect(health.order(.fastest) == [1, 0], "the lossy one goes after the steady one")
        // Timings expire: a minute on, one query tries the first again (one lost packet kept the
        // fastest upstream out of use for good, a re-trial found); the others keep the order
        // until its answer comes (a review: every query went to a standby that could be dead).
        let later = DispatchTime.now().uptimeNanoseconds + UpstreamHealth.rttLifetime + 1_000_000_000
        #expect(health.order(.fastest, now: later) == [0, 1], "one query re-measures it")
        #expect(health.order(.fastest, now: later + 1) == [1, 0], "the next keep the order")
        health.success(0, rtt: 0.001)
        // Its new sample starts afresh: first again. (The other's timing is as old by then: one
        // query re-measures it in turn.)
        #expect(health.order(.fastest, now: later + 2) == [1, 0])
        #expect(health.order(.fastest, now: later + 3) == [0, 1], "its new sample starts afresh")
    }

    @Test func privilegesAreDroppedBeforeServing() throws {
        guard getuid() == 0 else { return }   // only root can drop privileges; CI runs as root
        let lists = FileManager.default.temporaryDirectory.appendingPathComponent("priv-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: lists, withIntermediateDirectories: true)
        try "evil.example\n".write(toFile: lists + "/intel.txt", atomically: true, encoding: .utf8)
        let logs = lists + "-logs"   // not in the blocklist directory, which is read as lists
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: lists)
            try? FileManager.default.removeItem(atPath: logs)
        }
        let log = logs + "/block.log"
        let s = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                                            "--blocklist-dir", lists, "--block-log", log, "--user", "nobody"])
        #expect(try s.start(), "\(s.stderr)")
        let status = try String(contentsOfFile: "/proc/\(s.pid)/status", encoding: .utf8)
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        #expect(uidLine.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().allSatisfy { $0 == "65534" }, "\(uidLine)")
        #expect(DNSTestClient.ask("evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: s.port))?.rcode == Rcode.nxDomain)
        #expect(s.stop() == 0)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("evil.example"), "the log stays writable")
        let bad = try SinkholeProcess.run(["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                                           "--blocklist-dir", lists, "--user", "no-such-user-here"])
        #expect(bad.status != 0 && bad.stderr.contains("no such user"), "\(bad.stderr)")
    }
}
