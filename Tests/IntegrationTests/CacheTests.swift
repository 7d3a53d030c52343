import Foundation
import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

@Suite struct CacheTests {
    /// --serve-stale when the upstream answers SERVFAIL, not only when it is silent: the
    /// SERVFAIL was relayed as an answer and the stale one never looked at.
    @Test func serveStaleAppliesWhenTheUpstreamAnswersServfail() throws {
        let h = try TestHarness(records: ["st.example.org. 1 IN A 192.0.2.61"]) { c in
            c.cacheBytes = 1 << 20
            c.serveStale = true
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("st.example.org", server: h.address)?.answerCount == 1)
        h.upstream.set(.rcode(Rcode.servFail), for: "st.example.org")
        // Expired after its 1 s: asked upstream again (a bounded wait on the upstream's count).
        let deadline = Date().addingTimeInterval(5)
        var reply: Message?
        while Date() < deadline {
            reply = DNSTestClient.ask("st.example.org", server: h.address)
            if h.upstream.received(for: "st.example.org").count >= 2 { break }
            _ = h.upstream.waitForQueries(2, timeout: 0.2)
        }
        #expect(h.upstream.received(for: "st.example.org").count >= 2, "expired and asked again")
        #expect(reply?.rcode == Rcode.noError && reply?.records(.answer).first?.ttl == 30, "the stale answer, TTL 30")
        // For the next 30 s it is served at once, without asking the upstream again.
        let asked = h.upstream.received(for: "st.example.org").count
        #expect(DNSTestClient.ask("st.example.org", server: h.address)?.records(.answer).first?.ttl == 30)
        #expect(h.upstream.received(for: "st.example.org").count == asked)
        // Marked as stale for a client with EDNS: EDE 3, Stale Answer (RFC 8914 4.4).
        let marked = try #require(DNSTestClient.ask("st.example.org", edns: EDNS(udpPayloadSize: 1232), server: h.address))
        #expect(marked.records(.answer).first?.ttl == 30 && marked.ednsOptions == [0, 15, 0, 2, 0, 3], "\(marked.ednsOptions)")
    }

    /// RFC 8767's client response timer: with --serve-stale, a query whose answer has expired
    /// gets the stale answer once the upstream has kept it waiting that long, while the refresh
    /// goes on; the refresh's answer is then cached. Before, it waited for every upstream to
    /// fail (here 10 s, longer than the client's 3 s).
    @Test func serveStaleAnswersASlowRefreshAfterTheClientTimer() throws {
        let h = try TestHarness(records: ["slow.example.org. 1 IN A 192.0.2.62"]) { c in
            c.cacheBytes = 1 << 20
            c.serveStale = true
            c.staleAnswerAfter = 0.3
            c.upstreamTimeout = 10
        }
        defer { h.stop() }
        #expect(DNSTestClient.ask("slow.example.org", server: h.address)?.answerCount == 1)
        h.upstream.set(.held, for: "slow.example.org")
        // Served from the cache until it expires (1 s), then asked again: the upstream holds it.
        let deadline = Date().addingTimeInterval(6)
        var reply: Message?
        while Date() < deadline, h.upstream.received(for: "slow.example.org").count < 2 {
            reply = DNSTestClient.ask("slow.example.org", server: h.address)
            _ = h.upstream.waitForQueries(2, timeout: 0.2)
        }
        #expect(h.upstream.received(for: "slow.example.org").count == 2, "expired and asked again")
        if reply?.records(.answer).first?.ttl != 30 {
            reply = DNSTestClient.ask("slow.example.org", server: h.address)
        }
        #expect(reply?.rcode == Rcode.noError && reply?.records(.answer).first?.ttl == 30,
                "the stale answer while the refresh is held")
        // While the refresh is on its way, others get the stale answer at once, with no new query.
        let other = DNSTestClient.ask("slow.example.org", server: h.address, timeout: 1)
        #expect(other?.records(.answer).first?.ttl == 30)
        #expect(h.upstream.received(for: "slow.example.org").count == 2)
        // The refresh's answer arrives and is cached: fresh again.
        h.upstream.release()
        var fresh: Message?
        let until = Date().addingTimeInterval(3)
        while Date() < until {
            fresh = DNSTestClient.ask("slow.example.org", server: h.address)
            if let ttl = fresh?.records(.answer).first?.ttl, ttl <= 1 { break }
            _ = h.upstream.waitForQueries(3, timeout: 0.05)
        }
        #expect(fresh?.records(.answer).first?.ttl ?? 30 <= 1, "the refreshed answer, not the stale one")
    }

    @Test func cachedAnswerIsServedWithoutAnUpstreamQueryAndABlockAddedLaterWins() throws {
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"],
                                records: ["www.example.org. 300 IN A 192.0.2.12"]) { $0.cacheBytes = 1 << 20 }
        defer { h.stop() }
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.answerCount == 1)
        let again = try #require(DNSTestClient.ask("WWW.Example.ORG", server: h.address))
        #expect(again.records(.answer).map(\.rdata) == [[192, 0, 2, 12]])
        #expect(again.question?.name == WireName.fromText("WWW.Example.ORG"), "question case as asked")
        #expect(h.upstream.received.count == 1, "the second answer came from the cache")
        // DO=1 is a different key: it goes upstream.
        #expect(DNSTestClient.ask("www.example.org", edns: EDNS(udpPayloadSize: 1232, dnssecOK: true), server: h.address) != nil)
        #expect(h.upstream.received.count == 2)

        // A list that now blocks the name wins over the cached answer.
        let g = h.server.store.generation
        try "www.example.org\n".write(to: h.directory.appendingPathComponent("lists/new.txt"), atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(DNSTestClient.ask("www.example.org", server: h.address)?.rcode == Rcode.nxDomain)
        #expect(h.upstream.received.count == 2)
    }

    @Test func anAnswerLdnsMustReadIsRelayedAndCachedToo() throws {
        // HINFO data is not laid out by the byte reader: this answer takes the ldns path.
        let h = try TestHarness(records: ["box.example.org. 300 IN HINFO \"pc\" \"linux\""]) { $0.cacheBytes = 1 << 20 }
        defer { h.stop() }
        let first = try #require(DNSTestClient.ask("box.example.org", type: 13, server: h.address))
        #expect(first.records(.answer).map(\.type) == [13])
        let again = try #require(DNSTestClient.ask("BOX.example.org", type: 13, server: h.address))
        #expect(again.records(.answer).map(\.rdata) == first.records(.answer).map(\.rdata))
        #expect(again.question?.name == WireName.fromText("BOX.example.org"))
        #expect(h.upstream.received.count == 1, "the second answer came from the cache")
    }

    @Test func cachedAnswerIsReInspectedAgainstTheCurrentLists() throws {
        let h = try TestHarness(lists: [:], records: [
            "alias.example.org. 300 IN CNAME cdn.later.example.",
            "cdn.later.example. 300 IN A 192.0.2.80",
        ]) { $0.cacheBytes = 1 << 20 }
        defer { h.stop() }
        #expect(DNSTestClient.ask("alias.example.org", server: h.address)?.answerCount == 1)
        let g = h.server.store.generation
        try "later.example\n".write(to: h.directory.appendingPathComponent("lists/new.txt"), atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        let r = try #require(DNSTestClient.ask("alias.example.org", server: h.address))
        #expect(r.rcode == Rcode.nxDomain, "the cached CNAME chain now leads to a listed name")
        #expect(h.upstream.received.count == 1)
    }

    @Test func identicalQueriesInFlightAreCoalesced() throws {
        // The first upstream never answers this name; the second does. Five clients ask at once:
        // one query goes to each upstream (the first try times out after 1 s), and all five
        // get the second upstream's answer, whether they waited for it or came late enough to
        // find it in the cache.
        let second = try FakeUpstream(records: ["slow.example.org. 300 IN A 192.0.2.90"])
        defer { second.stop() }
        let h = try TestHarness(records: ["slow.example.org. 300 IN A 192.0.2.90"]) {
            $0.cacheBytes = 1 << 20
            $0.upstreams.append(second.address)
        }
        defer { h.stop() }
        h.upstream.set(.silent, for: "slow.example.org")
        let answers = Mutex(0)
        let group = DispatchGroup()
        for _ in 0..<5 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                if let r = DNSTestClient.ask("slow.example.org", server: h.address, timeout: 5), r.answerCount == 1,
                   r.records(.answer).map(\.rdata) == [[192, 0, 2, 90]] {
                    answers.withLock { $0 += 1 }
                }
            }
        }
        #expect(group.wait(timeout: .now() + 10) == .success)
        #expect(answers.withLock { $0 } == 5, "every client got the answer")
        #expect(h.upstream.received(for: "slow.example.org").count == 1, "five identical questions, one query to the first upstream")
        #expect(second.received(for: "slow.example.org").count == 1, "and one to the second")
    }
}

@Suite struct AnswerCacheUnitTests {
    final class Clock: @unchecked Sendable { var now: UInt64 = 1000 }

    func answer(_ name: String, ttl: UInt32, rcode: UInt8 = 0, soa: (ttl: UInt32, minimum: UInt32)? = nil, records: Int = 1) -> UpstreamAnswer {
        let m = Message.empty()!
        m.isResponse = true
        m.rcode = rcode
        m.setQuestion(Question(name: WireName.fromText(name)!, type: 1, qclass: 1))
        for i in 0..<records { m.append(.answer, presentation: "\(name). \(ttl + UInt32(i)) IN A 192.0.2.\(i + 1)") }
        if let soa {
            m.append(.authority, presentation: "example.org. \(soa.ttl) IN SOA ns.example.org. h.example.org. 1 2 3 4 \(soa.minimum)")
        }
        return UpstreamAnswer(message: m)!
    }

    func key(_ name: String, dnssecOK: Bool = false) -> AnswerCache.Key {
        AnswerCache.Key(Question(name: WireName.fromText(name)!, type: 1, qclass: 1), dnssecOK: dnssecOK, checkingDisabled: false)
    }

    @Test func keysMatchOnEveryFieldWhateverTheCase() {
        #expect(key("A.Example.ORG") == key("a.example.org"))
        #expect(key("a.example.org").hashValue == key("A.EXAMPLE.ORG").hashValue)
        #expect(key("a.example.org") != key("b.example.org"))
        #expect(key("a.example.org") != key("a.example.org", dnssecOK: true))
        var withSubnet = key("a.example.org")
        withSubnet.subnet = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]
        #expect(withSubnet != key("a.example.org"), "the ECS option is part of the key")
        var same = key("A.example.org")
        same.subnet = withSubnet.subnet
        #expect(same == withSubnet && same.hashValue == withSubnet.hashValue)
    }

    @Test func ttlsCountDownAndEntriesExpire() throws {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, clock: { clock.now })
        cache.store(key("a.example.org"), answer: answer("a.example.org", ttl: 100, records: 2))
        clock.now += 30
        let hit = try #require(cache.lookup(key("A.EXAMPLE.org")))
        let m = try #require(AnswerCache.answer(from: hit)?.message())
        #expect(m.records(.answer).map(\.ttl) == [70, 71])
        clock.now += 70
        #expect(cache.lookup(key("a.example.org")) == nil, "expired at the smallest TTL")
    }

    @Test func negativeAnswersUseTheSOAMinimumAndServfailIsNotCached() {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, maxNegativeTTL: 3600, clock: { clock.now })
        cache.store(key("nx.example.org"), answer: answer("nx.example.org", ttl: 0, rcode: 3, soa: (300, 60), records: 0))
        cache.store(key("fail.example.org"), answer: answer("fail.example.org", ttl: 300, rcode: 2, records: 0))
        cache.store(key("nosoa.example.org"), answer: answer("nosoa.example.org", ttl: 0, rcode: 3, records: 0))
        #expect(cache.lookup(key("nx.example.org")) != nil)
        #expect(cache.lookup(key("fail.example.org")) == nil)
        #expect(cache.lookup(key("nosoa.example.org")) == nil, "no SOA: not cacheable (RFC 2308 §5)")
        clock.now += 60
        #expect(cache.lookup(key("nx.example.org")) == nil, "min(SOA TTL 300, MINIMUM 60)")
    }

    @Test func minAndMaxTTLClamp() throws {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, minTTL: 50, maxTTL: 200, clock: { clock.now })
        cache.store(key("short.example.org"), answer: answer("short.example.org", ttl: 5))
        cache.store(key("long.example.org"), answer: answer("long.example.org", ttl: 100_000))
        clock.now += 40
        #expect(cache.lookup(key("short.example.org")) != nil, "kept for the 50 s minimum")
        clock.now += 170
        #expect(cache.lookup(key("long.example.org")) == nil, "dropped after the 200 s maximum")
    }

    /// From a cache trial against Unbound. A TTL with the top bit set is 0 (RFC 2181 8): it was
    /// relayed as 4294967295 and kept a day. The negative part of an answer lasts min(SOA TTL,
    /// MINIMUM) and no record longer than its own TTL (RFC 2308 5): a 3 s CNAME ending in
    /// NXDOMAIN was kept the SOA's 300 s, and a CNAME with no data for the type its 300 s though
    /// the MINIMUM said 5. --cache-max-ttl bounds negative answers too. Served TTLs are
    /// within --cache-min-ttl and --cache-max-ttl, as they are kept.
    @Test func ttlRulesOfRFC2181And2308AndTheBounds() throws {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, maxNegativeTTL: 3600, clock: { clock.now })
        func message(_ name: String, rcode: UInt8, _ records: [String], soa: String? = nil) -> UpstreamAnswer {
            let m = Message.empty()!
            m.isResponse = true
            m.rcode = rcode
            m.setQuestion(Question(name: WireName.fromText(name)!, type: 1, qclass: 1))
            for r in records { m.append(.answer, presentation: r) }
            if let soa { m.append(.authority, presentation: soa) }
            return UpstreamAnswer(message: m)!
        }
        let top = message("top.example.org", rcode: 0, ["top.example.org. 4294967295 IN A 192.0.2.1", "top.example.org. 300 IN A 192.0.2.2"])
        #expect(top.message()?.records(.answer).map(\.ttl) == [0, 300], "relayed as 0")
        #expect(cache.store(key("top.example.org"), answer: top) == nil, "TTL 0: not cached")
        let soa = "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 300"
        cache.store(key("cnx.example.org"), answer: message("cnx.example.org", rcode: 3, ["cnx.example.org. 3 IN CNAME gone.example.org."], soa: soa))
        let soa5 = "example.org. 300 IN SOA ns.example.org. h.example.org. 1 2 3 4 5"
        cache.store(key("cn.example.org"), answer: message("cn.example.org", rcode: 0, ["cn.example.org. 300 IN CNAME t.example.org."], soa: soa5))
        #expect(cache.lookup(key("cnx.example.org")) != nil && cache.lookup(key("cn.example.org")) != nil)
        clock.now += 3
        #expect(cache.lookup(key("cnx.example.org")) == nil, "the CNAME's 3 s, not the SOA's 300")
        clock.now += 2
        #expect(cache.lookup(key("cn.example.org")) == nil, "the negative part's 5 s, not the CNAME's 300")

        let bounded = AnswerCache(budgetBytes: 1 << 20, minTTL: 15, maxTTL: 25, clock: { clock.now })
        bounded.store(key("neg.example.org"), answer: message("neg.example.org", rcode: 3, [], soa: soa))
        clock.now += 25
        #expect(bounded.lookup(key("neg.example.org")) == nil, "--cache-max-ttl bounds a negative answer")
        let served = bounded.clamped(message("b.example.org", rcode: 0, ["b.example.org. 300 IN A 192.0.2.3", "b.example.org. 3 IN A 192.0.2.4"]))
        #expect(served.message()?.records(.answer).map(\.ttl) == [25, 15], "served within the bounds")
        let within = message("c.example.org", rcode: 0, ["c.example.org. 20 IN A 192.0.2.5"])
        #expect(bounded.clamped(within) === within, "unchanged when within them")
        // A negative answer's SOA is served with min(SOA TTL, MINIMUM) (RFC 2308 3).
        let plain = message("nx2.example.org", rcode: 3, [], soa: soa5)
        let negative = cache.clamped(plain)
        #expect(negative.message()?.records(.authority).map(\.ttl) == [5])
        // Patched in its bytes, as ldns would have written it: no decode and encode per miss.
        #expect(plain.prepared != nil && negative.prepared != nil)
        let decoded = try #require(plain.message())
        decoded.capAuthoritySOATTLs(at: 3600)
        #expect(negative.wire == UpstreamAnswer(message: decoded)?.wire)
        #expect(cache.clamped(message("nx4.example.org", rcode: 0, ["nx4.example.org. 30 IN CNAME t.example.org."], soa: soa))
            .message()?.records(.authority).map(\.ttl) == [300], "TTL 300 = MINIMUM 300: kept")
        // No longer than sinkhole keeps it (an hour for a negative answer), for a plain one and
        // for a CNAME ending in no data alike.
        let soaDay = "example.org. 86400 IN SOA ns.example.org. h.example.org. 1 2 3 4 86400"
        #expect(cache.clamped(message("nx3.example.org", rcode: 3, [], soa: soaDay)).message()?.records(.authority).map(\.ttl) == [3600])
        cache.store(key("cnd.example.org"), answer: message("cnd.example.org", rcode: 0, ["cnd.example.org. 86400 IN CNAME t.example.org."], soa: soaDay))
        clock.now += 3600
        #expect(cache.lookup(key("cnd.example.org")) == nil, "the negative part at most an hour")
    }

    @Test func budgetEvictsTheLeastRecentlyUsed() {
        let cache = AnswerCache(budgetBytes: 16 * 1200)   // about 1200 bytes a shard
        // Each answered twice: a full shard admits a new name on its second answer.
        for i in 0..<400 {
            for _ in 0..<2 { cache.store(key("n\(i).example.org"), answer: answer("n\(i).example.org", ttl: 300)) }
        }
        #expect(cache.bytes <= 16 * 1200)
        #expect(cache.count < 400 && cache.count > 16)
        #expect(cache.lookup(key("n399.example.org")) != nil, "the newest stays")
        #expect(cache.lookup(key("n0.example.org")) == nil, "the oldest went first")
    }

    /// A hit makes an entry the most recently used (a hit within the most recent quarter of
    /// its shard leaves it in place): names in use survive a stream of new names that evicts
    /// everything else many times over.
    @Test func namesInUseOutliveTheNamesAskedOnlyEarlier() {
        let cache = AnswerCache(budgetBytes: 16 * 5000)   // about ten entries a shard
        let hot = (0..<16).map { "hot\($0).example.org" }
        for name in hot { cache.store(key(name), answer: answer(name, ttl: 300)) }
        var stored = 0
        for round in 0..<30 {
            #expect(hot.allSatisfy { cache.lookup(key($0)) != nil }, "round \(round)")
            for i in 0..<20 {
                let name = "new\(round)-\(i).example.org"
                // Answered twice: a full shard admits a new name on its second answer.
                for _ in 0..<2 { if cache.store(key(name), answer: answer(name, ttl: 300)) != nil { stored += 1 } }
            }
        }
        #expect(stored > 600, "the new names were cached (\(stored) stores)")
        #expect(cache.stats.evicted > 400, "and evicted many times over the budget")
        #expect(cache.lookup(key("new0-0.example.org")) == nil, "a name asked only at the start went")
        #expect(hot.allSatisfy { cache.lookup(key($0)) != nil })
    }

    @Test func aFloodOfNamesAskedOnceDoesNotEvictTheNamesInUse() {
        let cache = AnswerCache(budgetBytes: 16 * 5000)   // about ten entries a shard
        let warm = (0..<32).map { "warm\($0).example.org" }
        for name in warm { cache.store(key(name), answer: answer(name, ttl: 300)) }
        #expect(warm.allSatisfy { cache.lookup(key($0)) != nil })
        // A random-subdomain flood: 3000 names, each answered once, while clients keep using the
        // warm names. Plain LRU would let the hundred flood answers between two uses push every
        // warm entry out; the doorkeeper turns away names it has not seen before.
        var flooded = 0
        for i in 0..<3000 {
            if cache.store(key("r\(i).victim.example"), answer: answer("r\(i).victim.example", ttl: 300)) != nil { flooded += 1 }
            if i % 100 == 99 { #expect(warm.allSatisfy { cache.lookup(key($0)) != nil }, "after \(i + 1) flood answers") }
        }
        #expect(flooded < 600, "most flood answers were turned away (\(flooded) of 3000 stored)")
        let stats = cache.stats
        #expect(stats.turnedAway == 3000 - flooded && stats.entries == cache.count && stats.bytes == cache.bytes)
        #expect(stats.evicted > 0 && stats.evicted <= 2 * flooded, "only admitted answers evict")
        #expect(cache.bytes <= 16 * 5000)
        // A name asked again is cached on its second answer.
        let again = key("again.example.org")
        cache.store(again, answer: answer("again.example.org", ttl: 300))
        cache.store(again, answer: answer("again.example.org", ttl: 300))
        #expect(cache.lookup(again) != nil)
    }

    @Test func aFullShardWhoseOldestEntryExpiredAdmitsAtOnce() {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 16 * 1200, clock: { clock.now })
        for i in 0..<400 { cache.store(key("old\(i).example.org"), answer: answer("old\(i).example.org", ttl: 10)) }
        clock.now += 11
        let fresh = key("new.example.org")
        #expect(cache.store(fresh, answer: answer("new.example.org", ttl: 300)) != nil, "its least recently used entry had expired")
        #expect(cache.lookup(fresh) != nil)
        #expect(cache.bytes <= 16 * 1200)
    }

    @Test func doBitIsPartOfTheKeyAndServeStale() throws {
        let clock = Clock()
        let cache = AnswerCache(budgetBytes: 1 << 20, serveStale: true, clock: { clock.now })
        cache.store(key("s.example.org"), answer: answer("s.example.org", ttl: 10))
        #expect(cache.lookup(key("s.example.org", dnssecOK: true)) == nil)
        clock.now += 20
        #expect(cache.lookup(key("s.example.org")) == nil, "expired: not served fresh")
        let stale = try #require(cache.lookup(key("s.example.org"), allowStale: true))
        #expect(stale.stale)
        #expect(AnswerCache.answer(from: stale)?.message()?.records(.answer).first?.ttl == 30)
        // RFC 8767's failure recheck timer: once served stale after a failed refresh, it is
        // served at once for 30 s (each query waited for every upstream to fail again), then
        // the upstreams are asked again.
        cache.recheckLater(key("s.example.org"))
        #expect(cache.lookup(key("s.example.org"))?.stale == true, "held: a plain lookup finds it")
        clock.now += 30
        #expect(cache.lookup(key("s.example.org")) == nil, "30 s on: asked again")
        #expect(cache.lookup(key("s.example.org"), allowStale: true) != nil, "still there for the next failure")
    }
}
