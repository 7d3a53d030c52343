import Foundation
@testable import SinkholeCore
import SinkholeTestSupport
import Testing

@Suite struct ResponseIPTests {
    static let records = [
        "c2.example.org. 300 IN A 203.0.113.66",
        "clean.example.org. 300 IN A 192.0.2.10",
        "c2v6.example.org. 300 IN AAAA 2001:db8:bad::1",
        "cleanv6.example.org. 300 IN AAAA 2001:db8:600d::1",
        "edge.example.org. 300 IN A 198.51.100.255",
        "rpz.example.org. 300 IN A 192.0.2.200",
        "mapped.example.org. 300 IN AAAA ::ffff:203.0.113.5",
        "nat64.example.org. 300 IN AAAA 64:ff9b::203.0.113.7",
        "othernat.example.org. 300 IN AAAA 64:ff9c::203.0.113.7",
    ]

    @Test func answersWithAddressesInListedRangesAreBlocked() throws {
        let h = try TestHarness(lists: [
            "c2.ips": "# C2 hosts\n203.0.113.0/24\n2001:db8:bad::/48\n198.51.100.255\nnot-an-address\n",
            "feed.rpz": "$ORIGIN rpz.test.\n@ SOA ns. h. 1 2 3 4 5\n32.200.2.0.192.rpz-ip CNAME *.\n",
        ], records: ResponseIPTests.records)
        defer { h.stop() }
        // An IPv4 address in an AAAA record that reaches it (IPv4-mapped, NAT64's well-known
        // prefix) is that address: `::ffff:203.0.113.5` went around 203.0.113.0/24.
        for (name, type) in [("c2.example.org", RRType.a), ("c2v6.example.org", RRType.aaaa), ("edge.example.org", RRType.a),
                             ("mapped.example.org", RRType.aaaa), ("nat64.example.org", RRType.aaaa)] {
            let r = try #require(DNSTestClient.ask(name, type: type, edns: EDNS(udpPayloadSize: 1232), server: h.address))
            #expect(r.rcode == Rcode.nxDomain, "\(name)")
            #expect(r.answerCount == 0, "no upstream data reaches the client")
            #expect(Array(r.ednsOptions.prefix(6)).suffix(2) == [0, 17], "EDE 17 Filtered")
        }
        for (name, type) in [("clean.example.org", RRType.a), ("cleanv6.example.org", RRType.aaaa), ("othernat.example.org", RRType.aaaa)] {
            #expect(DNSTestClient.ask(name, type: type, server: h.address)?.answerCount == 1, "\(name)")
        }
        let nodata = try #require(DNSTestClient.ask("rpz.example.org", server: h.address))
        #expect(nodata.rcode == 0 && nodata.answerCount == 0, "rpz-ip CNAME *. is NODATA")

        let lines = try h.blockLogLines()
        #expect(lines.count == 6)
        let first = try #require(lines.first)
        #expect(first.at("sinkhole.match") as? String == "response-ip")
        #expect(first.at("sinkhole.matched_ip") as? String == "203.0.113.66")
        #expect(first.at("rule.name") as? String == "203.0.113.0/24")
        #expect(first.at("rule.ruleset") as? String == "c2.ips")
        #expect(h.server.store.snapshot.loaded.first { $0.name == "c2.ips" }?.rejectedLines == 1)
    }

    @Test func prefixSetLongestMatchAndRPZTriggerNames() throws {
        var set = IPPrefixSet()
        set.insert(address: [10, 0, 0, 0], prefix: 8, rule: .init(text: "10.0.0.0/8", action: .block, line: 1))
        set.insert(address: [10, 1, 0, 0], prefix: 16, rule: .init(text: "10.1.0.0/16", action: .allow, line: 2))
        #expect(set.lookup([10, 1, 2, 3])?.text == "10.1.0.0/16")
        #expect(set.lookup([10, 2, 2, 3])?.text == "10.0.0.0/8")
        #expect(set.lookup([11, 0, 0, 1]) == nil)
        #expect(set.lookup(IPAddress.parse("::ffff:10.1.2.3")!)?.text == "10.1.0.0/16", "an IPv4-mapped address is its IPv4 address")
        #expect(set.lookup(IPAddress.parse("64:ff9b::10.2.0.1")!)?.text == "10.0.0.0/8", "so is one in NAT64's well-known prefix")
        #expect(set.lookup(IPAddress.parse("::10.2.0.1")!) == nil, "an IPv4-compatible address is not")
        // A mapped range listed is its IPv4 range: it holds the A records too.
        set.insert(address: IPAddress.parse("::ffff:198.51.100.0")!, prefix: 120, rule: .init(text: "m", action: .block, line: 3))
        #expect(set.lookup([198, 51, 100, 9])?.text == "m")
        #expect(set.lookup(IPAddress.parse("::ffff:198.51.100.9")!)?.text == "m")
        // A mapped allow range stays IPv6: `::ffff:0:0/96` allows mapped answers, not every A
        // record (as IPv4's /0 it lifted every IPv4 indicator; a code review).
        set.insert(address: IPAddress.parse("::ffff:0.0.0.0")!, prefix: 96, rule: .init(text: "a", action: .allow, line: 4))
        #expect(set.lookup([198, 51, 100, 9])?.text == "m")
        #expect(set.lookup(IPAddress.parse("::ffff:198.51.100.9")!)?.text == "a")
        #expect(IPPrefixSet.refusedIndicator(IPAddress.parse("::ffff:0.0.0.0")!, 96) != nil, "::ffff:0:0/96 is IPv4's /0")
        #expect(IPPrefixSet.refusedIndicator(IPAddress.parse("::ffff:127.0.0.1")!, 128) != nil)
        #expect(IPPrefixSet.refusedIndicator(IPAddress.parse("::ffff:203.0.113.0")!, 120) == nil)
        for i in 0..<10_000 {
            set.insert(address: [172, 16, UInt8(i >> 8), UInt8(i & 0xFF)], prefix: 32, rule: .init(text: "h\(i)", action: .block, line: i))
        }
        #expect(set.lookup([172, 16, 39, 15])?.text == "h9999")
        let v4 = try #require(IPPrefixSet.parseRPZTrigger(["24", "0", "2", "0", "192"]))
        #expect(v4.address == [192, 0, 2, 0] && v4.prefix == 24)
        let v6 = try #require(IPPrefixSet.parseRPZTrigger(["48", "zz", "bad", "db8", "2001"]))
        #expect(v6.address == IPAddress.parse("2001:db8:bad::") && v6.prefix == 48)
        #expect(ListFormat.detect(name: "feed.ips", bytes: Array("# c2\n192.0.2.1\n2001:db8::/32\n".utf8)) == .ips)
    }
}

/// Response inspection through the built binary, with dig as the client.
@Suite struct ResponseInspectionEndToEndTests {
    @Test func binaryBlocksCNAMECloakingAndIPIndicatorsWithEDE() throws {
        let upstream = try FakeUpstream(records: [
            "alias.example.org. 300 IN CNAME cdn.msstorageboxes.com.",
            "c2.example.org. 300 IN A 203.0.113.66",
            "clean.example.org. 300 IN A 192.0.2.10",
        ])
        defer { upstream.stop() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ri-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/lists", withIntermediateDirectories: true)
        try "msstorageboxes.com\n".write(toFile: dir + "/lists/intel.txt", atomically: true, encoding: .utf8)
        try "203.0.113.0/24\n".write(toFile: dir + "/lists/c2.ips", atomically: true, encoding: .utf8)
        let log = dir + "/block.log"
        let s = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description,
                                            "--blocklist-dir", dir + "/lists", "--block-log", log, "--trust-ecs-from", "127.0.0.1/32"])
        #expect(try s.start(), "\(s.stderr)")
        let port = String(s.port)
        let alias = try runTool("dig", ["-p", port, "@127.0.0.1", "alias.example.org"])
        #expect(alias.contains("status: NXDOMAIN") && alias.contains("EDE: 17 (Filtered)"), "\(alias)")
        let c2 = try runTool("dig", ["-p", port, "@127.0.0.1", "c2.example.org", "+subnet=10.9.8.0/24"])
        #expect(c2.contains("status: NXDOMAIN") && c2.contains("EDE: 17 (Filtered): (blocked by c2.ips: 203.0.113.0/24)"), "\(c2)")
        #expect(try runTool("dig", ["-p", port, "@127.0.0.1", "+short", "clean.example.org"]).contains("192.0.2.10"))
        #expect(s.stop() == 0)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
        }
        #expect(lines.count == 2)
        #expect(lines.first?.at("sinkhole.match") as? String == "cname")
        #expect(lines.last?.at("sinkhole.match") as? String == "response-ip")
        #expect(lines.last?.at("source.ip") as? String == "10.9.8.0", "the client behind the trusted forwarder")
    }
}
