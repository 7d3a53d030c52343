import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

@Suite struct MetricsTests {
    func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func prometheusEndpointCountsWhatWasSent() throws {
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"], records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0)
            c.access = try! AccessPolicy(allow: ["127.0.0.1/32"], deny: [])
        }
        defer { h.stop() }
        for _ in 0..<3 { #expect(DNSTestClient.ask("a.evil.example", server: h.address)?.rcode == Rcode.nxDomain) }
        for _ in 0..<2 { #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1) }
        #expect(DNSTestClient.tcp(DNSTestClient.query("evil.example"), to: h.address) != nil)
        #expect(DNSTestClient.udp(DNSTestClient.query("www.example.org"), to: h.address,
                                  from: SocketAddress(address: [127, 0, 0, 2], port: 0)) != nil)
        #expect(DNSTestClient.udp([0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], to: h.address) != nil)

        let address = try #require(h.server.metricsAddress)
        let body = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="blocked"}"#) == 3, "\(body)")
        #expect(value(body, #"sinkhole_queries_total{transport="tcp",outcome="blocked"}"#) == 1)
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="forwarded"}"#) == 2)
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="refused"}"#) == 1)
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="formerr"}"#) == 1)
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="cached"}"#) == 0)
        #expect(value(body, #"sinkhole_blocked_total{list="intel.txt"}"#) == 4)
        #expect(value(body, #"sinkhole_list_entries{list="intel.txt"}"#) == 1)
        #expect(value(body, #"sinkhole_list_last_reload_success{list="intel.txt"}"#) == 1)
        #expect(value(body, "sinkhole_block_log_events_written") != nil)
        #expect(value(body, "sinkhole_tcp_connections_open") != nil)
        #expect(value(body, #"sinkhole_upstream_latency_seconds_count{upstream="\#(h.upstream.address)"}"#) == 2)
        #expect(value(body, #"sinkhole_upstream_up{upstream="\#(h.upstream.address)"}"#) == 1)
        // Every error series exists at 0 before its first error, for rate() and alerts.
        for reason in ["timeout", "network", "bad_reply", "servfail"] {
            #expect(value(body, #"sinkhole_upstream_errors_total{upstream="\#(h.upstream.address)",reason="\#(reason)"}"#) == 0, "\(reason)")
        }
        #expect(body.contains("# TYPE sinkhole_queries_total counter"))
        // Counts since start are counters (rate() reads them as such), levels are gauges.
        for counter in ["block_log_events_written", "block_log_events_dropped", "cache_evictions", "cache_turned_away",
                        "max_inflight_servfails"] {
            #expect(body.contains("# TYPE sinkhole_\(counter) counter"), "\(counter)")
        }
        for gauge in ["tcp_connections_open", "queries_inflight", "cache_entries"] {
            #expect(body.contains("# TYPE sinkhole_\(gauge) gauge"), "\(gauge)")
        }
        // Every family has its help text (promtool lint asks for it).
        let families = Set(body.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] })
        let helped = Set(body.split(separator: "\n").filter { $0.hasPrefix("# HELP ") }.map { $0.split(separator: " ")[2] })
        #expect(families.count > 20 && families == helped, "no help: \(families.subtracting(helped))")
        #expect(body.components(separatedBy: "# TYPE sinkhole_upstream_latency_seconds histogram").count == 2, "one family")

        // Counted per core and summed at each scrape: a second scrape adds only what came since.
        #expect(DNSTestClient.ask("b.evil.example", server: h.address)?.rcode == Rcode.nxDomain)
        let again = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(value(again, #"sinkhole_queries_total{transport="udp",outcome="blocked"}"#) == 4, "\(again)")
        #expect(value(again, #"sinkhole_queries_total{transport="udp",outcome="forwarded"}"#) == 2)
        #expect(value(again, #"sinkhole_blocked_total{list="intel.txt"}"#) == 5)
        #expect(value(again, #"sinkhole_upstream_latency_seconds_count{upstream="\#(h.upstream.address)"}"#) == 2)

        let health = try runTool("curl", ["-sS", "-i", "--max-time", "5", "http://\(address)/health"])
        #expect(health.hasPrefix("HTTP/1.1 200 OK") && health.hasSuffix("ok\n"), "\(health)")
        let missing = try runTool("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://\(address)/nope"])
        #expect(missing == "404")
        let post = try runTool("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--max-time", "5", "http://\(address)/metrics"])
        #expect(post == "405")
    }

    /// A list file removed from the directory stops being exported at the next scrape.
    /// From an abuse trial: 16 connections sending a request a byte at a time held every slot of
    /// the metrics server, and `/health` failed for as long as they went on. A new connection
    /// now closes the one reading its request the longest.
    @Test func slowRequestsCannotHoldTheHealthCheckOut() throws {
        let h = try TestHarness { c in c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0) }
        defer { h.stop() }
        let address = try #require(h.server.metricsAddress)
        var slow: [Int32] = []
        defer { slow.forEach { close($0) } }
        for _ in 0..<20 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = address.port.bigEndian
            sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            let connected = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(connected == 0)
            _ = "GET /hea".withCString { send(fd, $0, 8, Int32(MSG_NOSIGNAL)) }
            slow.append(fd)
        }
        let started = Date()
        let body = try runTool("curl", ["-sS", "--max-time", "4", "http://\(address)/health"])
        #expect(body == "ok\n", "\(body)")
        #expect(Date().timeIntervalSince(started) < 3)
        // A client that sends no more is closed when its 5 s are up (a review: the first read's
        // timeout came out as 1,000,000 µs, which Linux refuses, and it waited for ever).
        var tv = timeval(tv_sec: 8, tv_usec: 0)
        setsockopt(slow[19], SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        #expect(recv(slow[19], &byte, 1, 0) == 0, "closed by the server, not left waiting")
    }

    @Test func aRemovedListIsNoLongerExported() throws {
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n", "extra.txt": "a.example\nb.example\n"]) { c in
            c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0)
        }
        defer { h.stop() }
        let address = try #require(h.server.metricsAddress)
        let before = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(value(before, #"sinkhole_list_entries{list="extra.txt"}"#) == 2, "\(before)")
        let g = h.server.store.generation
        try FileManager.default.removeItem(at: h.directory.appendingPathComponent("lists/extra.txt"))
        #expect(h.server.store.waitForGeneration(after: g, timeout: 5.0))
        let after = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(!after.contains(#"list="extra.txt""#), "\(after)")
        #expect(value(after, #"sinkhole_list_entries{list="intel.txt"}"#) == 1, "\(after)")
        #expect(value(after, #"sinkhole_list_last_reload_success{list="intel.txt"}"#) == 1)
    }

    @Test func aListThatNeverLoadedIsExportedAsUnusable() throws {
        // Not one usable line: the file is rejected at start and has no version in force.
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n", "broken.txt": "http://evil.example/payload\n"]) { c in
            c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0)
        }
        defer { h.stop() }
        #expect(h.server.store.failedFiles == ["broken.txt"])
        let address = try #require(h.server.metricsAddress)
        let body = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(value(body, #"sinkhole_list_last_reload_success{list="broken.txt"}"#) == 0, "\(body)")
        #expect(value(body, #"sinkhole_list_entries{list="broken.txt"}"#) == 0)
        #expect(value(body, #"sinkhole_list_last_reload_success{list="intel.txt"}"#) == 1)
    }

    @Test func cacheFiguresAreExported() throws {
        let h = try TestHarness(records: ["www.example.org. 300 IN A 192.0.2.12"]) { c in
            c.metricsListen = SocketAddress(address: [127, 0, 0, 1], port: 0)
            c.cacheBytes = 1 << 20
        }
        defer { h.stop() }
        for _ in 0..<2 { #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1) }
        let address = try #require(h.server.metricsAddress)
        let body = try runTool("curl", ["-sS", "--max-time", "5", "http://\(address)/metrics"])
        #expect(value(body, #"sinkhole_queries_total{transport="udp",outcome="cached"}"#) == 1, "\(body)")
        #expect(value(body, "sinkhole_cache_entries") == 1)
        #expect((value(body, "sinkhole_cache_bytes") ?? 0) > 400, "an entry's bytes and bookkeeping")
        #expect(value(body, "sinkhole_cache_evictions") == 0)
        #expect(value(body, "sinkhole_cache_turned_away") == 0)
        #expect(value(body, "sinkhole_history_paused") == 0)
        #expect(value(body, "sinkhole_build_info{version=\"\(SinkholeVersion.string)\"}") == 1, "\(body)")
    }
}
