import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `--forward-zone`: an internal zone's names go to its own upstreams, every other name to
/// `--upstream`, and the block check still comes first.
@Suite struct ForwardZoneTests {
    static func zone(_ text: String) throws -> ForwardZone { try ForwardZone.parse(text).get() }

    @Test func zoneNamesGoToTheZonesUpstreamsAndNoOtherNameDoes() throws {
        let corp = try FakeUpstream(records: ["dc1.corp.example. 300 IN A 10.0.0.11", "corp.example. 300 IN A 10.0.0.10"])
        let lab = try FakeUpstream(records: ["box.lab.corp.example. 300 IN A 10.0.9.9"])
        defer { corp.stop(); lab.stop() }
        let h = try TestHarness(lists: ["intel.txt": "evil.corp.example\n"], records: ["www.example.org. 300 IN A 192.0.2.12"]) {
            $0.forwardZones = [try! Self.zone("corp.example=\(corp.address)"), try! Self.zone("lab.corp.example=\(lab.address)")]
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("DC1.Corp.Example", server: h.address)?.records(.answer).map(\.rdata) == [[10, 0, 0, 11]])
        #expect(DNSTestClient.ask("corp.example", server: h.address)?.records(.answer).map(\.rdata) == [[10, 0, 0, 10]])
        #expect(DNSTestClient.ask("box.lab.corp.example", server: h.address)?.records(.answer).map(\.rdata) == [[10, 0, 9, 9]])
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.records(.answer).map(\.rdata) == [[192, 0, 2, 12]])
        #expect(DNSTestClient.ask("notcorp.example", server: h.address)?.rcode == Rcode.nxDomain)
        // Blocked inside a zone: answered here, asked of no upstream.
        #expect(DNSTestClient.ask("x.evil.corp.example", server: h.address)?.rcode == Rcode.nxDomain)

        func names(_ upstream: FakeUpstream) -> Set<String> { Set(upstream.received.map { FakeUpstream.key($0.name) }) }
        #expect(names(corp) == ["dc1.corp.example.", "corp.example."])
        #expect(names(lab) == ["box.lab.corp.example."], "the longest zone wins")
        #expect(names(h.upstream) == ["www.example.org.", "notcorp.example."],
                "no zone name reached the default upstream")
        #expect(h.server.chain.forwarder.upstreams.count == 3)
    }

    /// As Unbound's forward-zone without forward-first: when the zone's upstreams fail, the
    /// query fails; it does not go to the public resolvers of --upstream.
    @Test func aSilentZoneUpstreamGivesServfailAndNeverTheDefaultUpstream() throws {
        let corp = try FakeUpstream(records: [])
        let corp2 = try FakeUpstream(records: ["dc1.corp.example. 300 IN A 10.0.0.11"])
        defer { corp.stop(); corp2.stop() }
        corp.set(.silent, for: "dc1.corp.example")
        corp.set(.silent, for: "dc2.corp.example")
        corp2.set(.silent, for: "dc2.corp.example")
        let h = try TestHarness(records: ["dc2.corp.example. 300 IN A 192.0.2.66"]) {
            $0.upstreamTimeout = 0.3
            $0.forwardZones = [try! Self.zone("corp.example=\(corp.address),\(corp2.address)")]
        }
        defer { h.stop() }
        // The second of the zone's upstreams answers when the first is silent.
        #expect(DNSTestClient.ask("dc1.corp.example", server: h.address)?.records(.answer).map(\.rdata) == [[10, 0, 0, 11]])
        // Both silent: SERVFAIL once the zone's two tries are over.
        #expect(DNSTestClient.ask("dc2.corp.example", server: h.address)?.rcode == Rcode.servFail)
        #expect(corp.received(for: "dc2.corp.example").count == 1 && corp2.received(for: "dc2.corp.example").count == 1)
        #expect(h.upstream.received.isEmpty, "an internal name went to the default upstream")
    }

    /// A public resolver must not answer for the internal zone: records it sends for names in a
    /// forward zone it does not serve are removed (a forged address for an internal host behind
    /// a CNAME, a forged domain controller in the additional section), and it is said.
    @Test func recordsForAZoneFromAnUpstreamOutsideItAreRemoved() throws {
        let corp = try FakeUpstream(records: ["fs01.corp.example. 300 IN A 10.1.2.3"])
        defer { corp.stop() }
        let recorder = LogRecorder()
        let h = try TestHarness(records: [], logger: recorder.logger) {
            $0.forwardZones = [try! ForwardZone.parse("corp.example=\(corp.address)").get()]
        }
        defer { h.stop() }
        h.upstream.set(.answerWith(["evil.example.net. 300 IN CNAME fs01.corp.example.", "fs01.corp.example. 300 IN A 6.6.6.6"]),
                       for: "evil.example.net")
        h.upstream.add(["www.example.net. 300 IN A 192.0.2.80"])
        h.upstream.set(.answerExtra(setFlags: 0, authority: [], additional: ["dc1.corp.example. 300 IN A 6.6.6.7"]), for: "www.example.net")
        // The forged A goes; the CNAME's target is asked of the zone's own server and joined.
        let r = try #require(DNSTestClient.ask("evil.example.net", server: h.address))
        #expect(r.records(.answer).map(\.type) == [RRType.cname, RRType.a], "\(r.text)")
        #expect(r.records(.answer).last?.rdata == [10, 1, 2, 3] && !r.text.contains("6.6.6."), "\(r.text)")
        #expect(corp.received(for: "fs01.corp.example").count == 1)
        // A public name aliased into the zone with nothing for the target (Azure Private Link's
        // shape): resolved through the zone; a target the zone does not have is its NXDOMAIN.
        h.upstream.set(.answerWith(["app.example.net. 300 IN CNAME fs01.corp.example."]), for: "app.example.net")
        let alias = try #require(DNSTestClient.ask("app.example.net", server: h.address))
        #expect(alias.rcode == Rcode.noError && alias.records(.answer).map(\.type) == [RRType.cname, RRType.a], "\(alias.text)")
        h.upstream.set(.answerWith(["gone.example.net. 300 IN CNAME nothere.corp.example."]), for: "gone.example.net")
        let gone = try #require(DNSTestClient.ask("gone.example.net", server: h.address))
        #expect(gone.rcode == Rcode.nxDomain && gone.records(.answer).map(\.type) == [RRType.cname], "\(gone.text)")
        let glue = try #require(DNSTestClient.ask("www.example.net", server: h.address))
        #expect(glue.records(.answer).map(\.rdata) == [[192, 0, 2, 80]] && !glue.text.contains("6.6.6."), "\(glue.text)")
        #expect(DNSTestClient.ask("fs01.corp.example", server: h.address)?.records(.answer).map(\.rdata) == [[10, 1, 2, 3]])
        let said = recorder.events("upstream answered for a forward zone it does not serve; those records removed (said at most once a minute)")
        #expect(said.count == 1 && said.first?.metadata["records_removed"] == "1", "once a minute: \(said)")

        // An upstream that serves the zone too may answer for it.
        let both = try TestHarness {
            $0.forwardZones = [try! ForwardZone.parse("corp.example=\($0.upstreams[0])").get()]
        }
        defer { both.stop() }
        both.upstream.set(.answerWith(["alias.example.net. 300 IN CNAME fs01.corp.example.", "fs01.corp.example. 300 IN A 10.1.2.3"]),
                          for: "alias.example.net")
        #expect(DNSTestClient.ask("alias.example.net", server: both.address)?.answerCount == 2)
    }

    /// A chase into a forward zone ends with the query it chases for: the client waited the
    /// query's deadline and then the zone's whole one (a review), past a stub's timeout.
    @Test func aChaseEndsWithTheQuerysDeadline() throws {
        let zone = try (0..<3).map { _ in try FakeUpstream(records: []) }
        defer { zone.forEach { $0.stop() } }
        for z in zone { z.set(.silent, for: "fs02.corp.example") }
        let h = try TestHarness(records: []) { c in
            c.upstreamTimeout = 0.5   // the query's deadline: 0.5 s (one default upstream)
            c.forwardZones = [try! ForwardZone.parse("corp.example=\(zone.map { "\($0.address)" }.joined(separator: ","))").get()]
        }
        defer { h.stop() }
        h.upstream.set(.answerWith(["slow.example.net. 300 IN CNAME fs02.corp.example."]), for: "slow.example.net")
        let started = Date()
        let r = try #require(DNSTestClient.ask("slow.example.net", server: h.address, timeout: 5))
        let took = Date().timeIntervalSince(started)
        #expect(r.rcode == Rcode.servFail)
        #expect(took < 1.2, "the zone's 3 × 0.5 s loop cut at the query's 0.5 s: took \(took) s")
        #expect(zone[0].received(for: "fs02.corp.example").count == 1)
    }

    /// The binary with the flag, asked by dig; an upstream named by a zone has its metrics.
    @Test func digAndMetricsSeeTheZone() throws {
        let corp = try FakeUpstream(records: ["dc1.corp.example. 300 IN A 10.0.0.11"])
        let upstream = try FakeUpstream(records: ["www.example.org. 300 IN A 192.0.2.12"])
        defer { corp.stop(); upstream.stop() }
        let lists = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-zone-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: lists, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: lists) }
        try "evil.example\n".write(to: lists.appendingPathComponent("intel.txt"), atomically: true, encoding: .utf8)
        let sinkhole = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description,
                                                   "--forward-zone", "corp.example=\(corp.address)",
                                                   "--blocklist-dir", lists.path, "--metrics-listen", "127.0.0.1:0"])
        #expect(try sinkhole.start(), "no 'listening on' line: \(sinkhole.stderr)")
        defer { _ = sinkhole.stop() }
        let port = String(sinkhole.port)
        let inZone = try runTool("dig", ["-p", port, "@127.0.0.1", "+time=2", "+tries=1", "+short", "dc1.corp.example"])
        #expect(inZone.trimmingCharacters(in: .whitespacesAndNewlines) == "10.0.0.11", "\(inZone)")
        let outside = try runTool("dig", ["-p", port, "@127.0.0.1", "+time=2", "+tries=1", "+short", "www.example.org"])
        #expect(outside.trimmingCharacters(in: .whitespacesAndNewlines) == "192.0.2.12", "\(outside)")
        #expect(corp.received.count == 1 && upstream.received.count == 1)
        #expect(sinkhole.stderr.contains("forward-zone=\"corp.example=\(corp.address)\""), "the start-up line names the zone: \(sinkhole.stderr)")
        // The zone's upstream has its series, as --upstream's have.
        let metrics = try #require(sinkhole.stderr.split(separator: "\n").first { $0.contains("metrics on http://") }?
            .split(separator: " ").last.map(String.init))
        let body = try runTool("curl", ["-sS", "--max-time", "5", metrics])
        #expect(body.contains("sinkhole_upstream_up{upstream=\"\(corp.address)\"} 1"), "\(body)")
        #expect(body.contains("sinkhole_upstream_latency_seconds_count{upstream=\"\(corp.address)\"} 1"), "\(body)")
    }
}
