import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// The fast path (blocked names and inspected cache hits answered from the bytes) gives the same
/// answers as the full path: two servers with the same lists and upstream records, one with the
/// fast path off, asked the same queries.
@Suite struct FastPathTests {
    static let records = [
        "www.example.org. 300 IN A 192.0.2.12", "www.example.org. 300 IN AAAA 2001:db8::12",
        "alias.example.org. 120 IN CNAME www.example.org.",
        "nodata.example.org. 300 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 90",
    ]
    static let lists = [
        "intel.txt": "evil.example\n*.wild.example\n",
        "zone.rpz": """
            $TTL 60
            @ SOA localhost. root.localhost. 1 3600 600 86400 60
            @ NS localhost.
            nodata.rpz.example CNAME *.
            local.rpz.example A 192.0.2.77
            local.rpz.example AAAA 2001:db8::77

            """,
    ]

    func pair(_ mode: BlockMode = .nxdomain) throws -> (fast: TestHarness, full: TestHarness) {
        (try make(fast: true, mode), try make(fast: false, mode))
    }

    /// With `logged` false, no block log: the fast path then answers a plain block from the
    /// hit and the query's bytes alone, with no match or answer made.
    func make(fast: Bool, _ mode: BlockMode = .nxdomain, logged: Bool = true) throws -> TestHarness {
        try TestHarness(lists: FastPathTests.lists, records: FastPathTests.records) {
            $0.cacheBytes = 1 << 20
            $0.fastPath = fast
            $0.blockPolicy.mode = mode
            $0.blockPolicy.sinkholeIPv4 = [192, 0, 2, 1]
            $0.blockPolicy.sinkholeIPv6 = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
            if !logged { $0.blockLogPath = nil }
        }
    }

    /// Every field a client sees, names compared without regard to case, TTLs within a second.
    func same(_ a: Message, _ b: Message, _ what: String) {
        #expect(a.id == b.id, "\(what): id")
        #expect(a.rcode == b.rcode && a.isResponse == b.isResponse && a.authoritative == b.authoritative, "\(what): rcode/QR/AA")
        #expect(a.truncated == b.truncated && a.recursionDesired == b.recursionDesired
                && a.recursionAvailable == b.recursionAvailable && a.checkingDisabled == b.checkingDisabled, "\(what): flags")
        #expect(a.question == b.question, "\(what): question exactly as asked")
        for section in [Message.Section.answer, .authority, .additional] {
            let x = a.records(section), y = b.records(section)
            #expect(x.count == y.count, "\(what): \(section) count")
            for (r, s) in zip(x, y) {
                #expect(WireName.equalIgnoringCase(r.owner, s.owner) && r.type == s.type && r.rdata == s.rdata, "\(what): \(section) record")
                #expect(abs(Int(r.ttl) - Int(s.ttl)) <= 1, "\(what): ttl \(r.ttl) vs \(s.ttl)")
            }
        }
        #expect(a.edns == b.edns, "\(what): OPT")
        #expect(a.ednsOptions == b.ednsOptions, "\(what): OPT options (EDE)")
    }

    func ask(_ h: TestHarness, _ packet: [UInt8], tcp: Bool = false) -> Message? {
        let reply = tcp ? DNSTestClient.tcp(packet, to: h.address) : DNSTestClient.udp(packet, to: h.address)
        return reply.flatMap { Message(wire: $0) }
    }

    static let variants: [(String, EDNS?, [UInt8])] = [
        ("no EDNS", nil, []),
        ("EDNS", EDNS(udpPayloadSize: 1232), []),
        ("EDNS DO", EDNS(udpPayloadSize: 4096, dnssecOK: true), []),
        ("EDNS cookie", EDNS(udpPayloadSize: 1232), [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
    ]

    func packet(_ name: String, _ type: UInt16, _ edns: EDNS?, _ options: [UInt8], id: UInt16) -> [UInt8] {
        var p = DNSTestClient.query(name, type: type, id: id, edns: edns)
        if !options.isEmpty, let m = Message(wire: p) {
            m.setEDNSOptions(options)
            p = m.wire() ?? p
        }
        return p
    }

    @Test(arguments: [BlockMode.nxdomain, .sinkhole])
    func blockedAnswersAreTheSame(mode: BlockMode) throws {
        let (fast, full) = try pair(mode)
        defer { fast.stop(); full.stop() }
        var id: UInt16 = 100
        for name in ["evil.example", "Deep.Sub.EVIL.example", "x.wild.example", "nodata.rpz.example", "local.rpz.example"] {
            for type in [RRType.a, RRType.aaaa, 15] {
                for (label, edns, options) in FastPathTests.variants {
                    id &+= 1
                    let p = packet(name, type, edns, options, id: id)
                    let a = try #require(ask(fast, p)), b = try #require(ask(full, p))
                    same(a, b, "\(mode) \(name) \(RRType.name(type)) \(label)")
                }
            }
        }
        let tcp = packet("evil.example", RRType.a, EDNS(udpPayloadSize: 1232), [], id: 9)
        same(try #require(ask(fast, tcp, tcp: true)), try #require(ask(full, tcp, tcp: true)), "over TCP")
        #expect(fast.server.chain.counters.fastAnswered > 0)
        #expect(full.server.chain.counters.fastAnswered == 0)
        // One block-log line per query on both, with the same fields.
        let x = try fast.blockLogLines(), y = try full.blockLogLines()
        #expect(x.count == y.count && x.count == 5 * 3 * 4 + 1)
        for (l, r) in zip(x, y) {
            for field in ["dns.question.name", "dns.question.type", "dns.id", "rule.name", "rule.ruleset",
                          "sinkhole.rule_line", "event.action", "dns.response_code", "network.transport"] {
                #expect("\(l.at(field) ?? "-")" == "\(r.at(field) ?? "-")", "\(field)")
            }
        }
        #expect(fast.upstream.received.isEmpty && full.upstream.received.isEmpty)
    }

    @Test(arguments: [BlockMode.nxdomain, .sinkhole])
    func blockedAnswersWithNoLogAreTheSame(mode: BlockMode) throws {
        let fast = try make(fast: true, mode, logged: false), full = try make(fast: false, mode)
        defer { fast.stop(); full.stop() }
        #expect(fast.server.blockLog == nil)
        var id: UInt16 = 300
        var asked = 0
        // Listed, below a listed name, a `*.` rule, any letter case, RPZ actions, local data
        // (the full path's), every client variant.
        for name in ["evil.example", "Deep.Sub.EVIL.example", "x.wild.example", "A.B.Wild.Example", "nodata.rpz.example",
                     "local.rpz.example"] {
            for type in [RRType.a, RRType.aaaa, 15, 255] {
                for (label, edns, options) in FastPathTests.variants {
                    id &+= 1
                    asked += 1
                    let p = packet(name, type, edns, options, id: id)
                    let a = try #require(ask(fast, p)), b = try #require(ask(full, p))
                    same(a, b, "\(mode) \(name) \(RRType.name(type)) \(label)")
                }
            }
        }
        #expect(fast.server.chain.counters.fastAnswered > 0)
        #expect(fast.upstream.received.isEmpty)
        // Counted per list as on the full path.
        let counted = fast.server.metrics.exposition()
        let expected = full.server.metrics.exposition()
        for list in ["intel.txt", "zone.rpz"] {
            let series = "sinkhole_blocked_total{list=\"\(list)\"}"
            let line = { (text: String) in text.split(separator: "\n").first { $0.hasPrefix(series) }.map(String.init) }
            #expect(line(counted) != nil && line(counted) == line(expected), "\(list): \(line(counted) ?? "-") vs \(line(expected) ?? "-")")
        }
        #expect(asked == 6 * 4 * 4)
    }

    /// Behind a trusted forwarder (a dnsdist that sends ECS with every query) blocked names and
    /// cache hits still take the fast path, and name the client behind the forwarder as the full
    /// path does: in the block log, and in the history for forwarded queries and cache hits.
    @Test func trustedECSIsReadOnTheFastPathAsOnTheFullPath() throws {
        func make(fast: Bool) throws -> TestHarness {
            try TestHarness(lists: FastPathTests.lists, records: FastPathTests.records) {
                $0.cacheBytes = 1 << 20
                $0.fastPath = fast
                $0.trustECSFrom = ["127.0.0.1/32"]
                $0.queryHistoryPath = NSTemporaryDirectory() + "sinkhole-history-\(UUID().uuidString).db"
            }
        }
        let fast = try make(fast: true), full = try make(fast: false)
        defer {
            for h in [fast, full] {
                let path = h.server.configuration.queryHistoryPath ?? ""
                h.stop()
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            }
        }
        let ecs: [UInt8] = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2]   // 10.1.2.0/24
        var id: UInt16 = 700
        // Blocked names, then allowed ones: forwarded first, a cache hit the second time.
        for name in ["evil.example", "Deep.Sub.EVIL.example", "www.example.org", "WWW.Example.org", "alias.example.org",
                     "alias.example.org"] {
            for type in [RRType.a, RRType.aaaa] {
                id &+= 1
                let p = packet(name, type, EDNS(udpPayloadSize: 1232), ecs, id: id)
                let a = try #require(ask(fast, p)), b = try #require(ask(full, p))
                same(a, b, "ECS \(name) \(RRType.name(type))")
            }
        }
        #expect(fast.server.chain.counters.fastAnswered >= 8, "blocked names and cache hits on the fast path")
        #expect(full.server.chain.counters.fastAnswered == 0)
        let x = try fast.blockLogLines(), y = try full.blockLogLines()
        #expect(x.count == 4 && y.count == 4)
        for (l, r) in zip(x, y) {
            #expect(l.at("source.ip") as? String == "10.1.2.0", "the client behind the forwarder")
            for field in ["source.ip", "source.subnet", "source.port", "network.forwarded_ip", "dns.question.name", "dns.id", "rule.name"] {
                #expect("\(l.at(field) ?? "-")" == "\(r.at(field) ?? "-")", "\(field)")
            }
        }
        let history = { (h: TestHarness) throws -> [String] in
            let store = try #require(h.server.history)
            store.flush()
            return try store.entries().map { "\($0.client) \($0.name) \($0.qtype) \($0.count)" }.sorted()
        }
        let fastRows = try history(fast), fullRows = try history(full)
        #expect(fastRows == fullRows, "\(fastRows) vs \(fullRows)")
        #expect(!fastRows.isEmpty && fastRows.allSatisfy { $0.hasPrefix("10.1.2.0 ") }, "\(fastRows)")
    }

    @Test func cachedAnswersAreTheSame() throws {
        let (fast, full) = try pair()
        defer { fast.stop(); full.stop() }
        var id: UInt16 = 500
        for name in ["www.example.org", "alias.example.org", "nodata.example.org"] {
            for type in [RRType.a, RRType.aaaa] {
                for (label, edns, options) in FastPathTests.variants {
                    // The first query fills the cache (and marks the answer inspected); the
                    // second, in another letter case, is a cache hit.
                    for asked in [name, name.uppercased()] {
                        id &+= 1
                        let p = packet(asked, type, edns, options, id: id)
                        let a = try #require(ask(fast, p)), b = try #require(ask(full, p))
                        same(a, b, "\(asked) \(RRType.name(type)) \(label)")
                    }
                }
            }
        }
        #expect(fast.server.chain.counters.fastAnswered >= 12)
        #expect(fast.upstream.received.count == full.upstream.received.count)
    }

    @Test func aListChangeSendsCachedAnswersThroughInspectionAgain() throws {
        let (fast, full) = try pair()
        defer { fast.stop(); full.stop() }
        for h in [fast, full] {
            #expect(ask(h, DNSTestClient.query("alias.example.org"))?.answerCount == 1)
            #expect(ask(h, DNSTestClient.query("alias.example.org"))?.answerCount == 1, "a cache hit")
            let g = h.server.store.generation
            try "www.example.org\n".write(to: h.directory.appendingPathComponent("lists/later.txt"), atomically: true, encoding: .utf8)
            #expect(h.server.store.waitForGeneration(after: g, timeout: 1))
            let r = try #require(ask(h, DNSTestClient.query("alias.example.org")))
            #expect(r.rcode == Rcode.nxDomain, "the cached CNAME now leads to a listed name")
            #expect(ask(h, DNSTestClient.query("www.example.org"))?.rcode == Rcode.nxDomain)
        }
        #expect(fast.upstream.received.count == 1)
    }

    @Test func aBlockAnswerTooLargeForUDPDropsTheErrorTextAsOnTheFullPath() throws {
        // A 250-byte listed name: with EDNS at 512 bytes, question + SOA + the EDE text is too
        // big. The text is optional (RFC 8914 2): it goes, and the SOA stays (it used to be TC=1
        // with no SOA, which a client that does not retry over TCP could not cache).
        let long = (0..<4).map { String(repeating: Character(UnicodeScalar(UInt8(97 + $0))), count: 60) }.joined(separator: ".") + ".example"
        let hs = try [true, false].map { fast in
            try TestHarness(lists: ["intel.txt": long + "\n"]) { $0.fastPath = fast }
        }
        defer { hs.forEach { $0.stop() } }
        let p = DNSTestClient.query(long, id: 77, edns: EDNS(udpPayloadSize: 512))
        let a = try #require(ask(hs[0], p)), b = try #require(ask(hs[1], p))
        #expect(!a.truncated && a.rcode == Rcode.nxDomain)
        #expect(a.records(.authority).map(\.type) == [RRType.soa])
        #expect(a.ednsOptions == [0, 15, 0, 2, 0, 15], "EDE 15 without its text: \(a.ednsOptions)")
        same(a, b, "block answer without the EDE text")
        #expect(try hs[0].blockLogLines().count == 1, "declining the fast path logs nothing twice")
        // With room (TCP, or a larger buffer), the text is there.
        let tcp = try #require(ask(hs[0], p, tcp: true))
        #expect(!tcp.truncated && tcp.rcode == Rcode.nxDomain && tcp.ednsOptions.count > 6)
        let roomy = try #require(ask(hs[0], DNSTestClient.query(long, edns: EDNS(udpPayloadSize: 1232))))
        #expect(!roomy.truncated && roomy.ednsOptions.count > 6)
    }
}
