@testable import SinkholeCore
import Testing

/// The cache's eviction order within one shard: a hit marks its entry used and leaves it in
/// place; eviction from the tail gives a used entry one second chance (CLOCK), so it outlives
/// the entries that were not used, until it goes unused for a whole turn of the shard.
@Suite struct CacheEvictionTests {
    func key(_ name: String) -> AnswerCache.Key {
        AnswerCache.Key(Question(name: WireName.fromText(name)!, type: 1, qclass: 1), dnssecOK: false, checkingDisabled: false)
    }

    func answer(_ name: String) -> UpstreamAnswer {
        let m = Message.empty()!
        m.isResponse = true
        m.setQuestion(Question(name: WireName.fromText(name)!, type: 1, qclass: 1))
        m.append(.answer, presentation: "\(name). 300 IN A 192.0.2.1")
        return UpstreamAnswer(message: m)!
    }

    /// Names `prefix0.example.org`, `prefix1...` among the first `count` that fall in shard 0.
    func shardNames(_ prefix: String, _ count: Int) -> [String] {
        (0..<count).map { "\(prefix)\($0).example.org" }.filter { key($0).shard(of: 16) == 0 }
    }

    /// Stores `names` in order until the first eviction; returns how many were stored.
    func fillUntilFirstEviction(_ cache: AnswerCache, _ names: [String]) -> Int {
        var next = 0
        while cache.stats.evicted == 0 {
            store(cache, names[next])
            next += 1
        }
        return next
    }

    /// Stored twice: a full shard admits a name on its second answer (the doorkeeper).
    func store(_ cache: AnswerCache, _ name: String) {
        for _ in 0..<2 { cache.store(key(name), answer: answer(name)) }
    }

    @Test func aUsedEntryGetsASecondChanceAndLosesItWhenUnusedForATurn() throws {
        let cache = AnswerCache(budgetBytes: 16 * 5000)   // about ten entries a shard
        // Names that all fall in one shard, in the order they are stored.
        let names = shardNames("s", 4000)
        var next = fillUntilFirstEviction(cache, names)
        let held = next - 1   // entries the shard holds when full
        #expect(held >= 4, "a shard holds several entries (\(held))")
        #expect(cache.lookup(key(names[0])) == nil, "the first eviction took the oldest")
        // The oldest left is used; the next store evicts the one after it instead.
        #expect(cache.lookup(key(names[1])) != nil)
        let evicted = cache.stats.evicted
        store(cache, names[next])
        next += 1
        #expect(cache.stats.evicted == evicted + 1)
        #expect(cache.lookup(key(names[2])) == nil, "the unused entry went")
        // Not used again for a whole turn of the shard: it goes like the others.
        for _ in 0..<(held + 1) {
            store(cache, names[next])
            next += 1
        }
        #expect(cache.lookup(key(names[1])) == nil, "its second chance was used up")
        #expect(cache.lookup(key(names[next - 1])) != nil, "the newest stays")
    }

    @Test func theAnswerJustStoredStaysWhenEveryOtherEntryWasUsed() throws {
        // A shard of about ten entries, all used: the second chances bring the new entry to
        // the tail, and it must not be the one taken.
        let cache = AnswerCache(budgetBytes: 16 * 5000)
        let names = shardNames("t", 4000)
        let next = fillUntilFirstEviction(cache, names)
        for name in names[0..<next] { _ = cache.lookup(key(name)) }   // every entry left used
        let evicted = cache.stats.evicted
        store(cache, names[next])
        #expect(cache.stats.evicted == evicted + 1, "one older entry made room")
        #expect(cache.lookup(key(names[next])) != nil, "the new answer is served")
    }

    @Test func anEvictionGivesABoundedNumberOfSecondChances() throws {
        // A shard of many small entries, every one used: a store still evicts, after at most
        // `maxSecondChances` entries moved to the front, and stays within the budget.
        let cache = AnswerCache(budgetBytes: 16 * 200_000)
        let names = shardNames("u", 60_000)
        let next = fillUntilFirstEviction(cache, names)
        let held = cache.count
        #expect(held > AnswerCache.Shard.maxSecondChances, "more entries than chances (\(held))")
        for name in names[0..<next] { _ = cache.lookup(key(name)) }   // every one used
        let evicted = cache.stats.evicted
        store(cache, names[next])
        #expect(cache.stats.evicted == evicted + 1, "one entry made room")
        #expect(cache.bytes <= 16 * 200_000 / 16)
        #expect(cache.lookup(key(names[next])) != nil)
    }
}

/// The shard's table (`AnswerCache.NodeTable`) against a dictionary doing the same inserts and
/// removals, and the fast path's lookup by a packet's bytes against a key's.
@Suite struct CacheTableTests {
    func key(_ name: String, type: UInt16 = 1, dnssecOK: Bool = false) -> AnswerCache.Key {
        AnswerCache.Key(Question(name: WireName.fromText(name)!, type: type, qclass: 1), dnssecOK: dnssecOK, checkingDisabled: false)
    }

    @Test func theTableHoldsWhatADictionaryHoldsThroughInsertsAndRemovals() {
        var table = AnswerCache.NodeTable()
        var model: [AnswerCache.Key: AnswerCache.Node] = [:]
        var generator = SystemRandomNumberGenerator()
        let keys = (0..<300).map { key("n\($0).example.org") }
        for step in 0..<20_000 {
            let k = keys.randomElement(using: &generator)!
            if let node = model[k], Bool.random(using: &generator) {
                table.remove(node)
                model[k] = nil
            } else if model[k] == nil {
                let node = AnswerCache.Node(key: k, wire: [], reply: nil, stored: 0, expires: 1, serial: UInt64(step))
                table.insert(node)
                model[k] = node
            }
            if step % 500 == 0 || step > 19_900 {
                #expect(table.count == model.count)
                for k in keys { #expect(table[k] === model[k], "step \(step)") }
            }
        }
        // Removing what is not there changes nothing.
        let stranger = AnswerCache.Node(key: key("stranger.example.org"), wire: [], reply: nil, stored: 0, expires: 1, serial: 0)
        let before = table.count
        table.remove(stranger)
        #expect(table.count == before)
    }

    @Test func aQuestionInPacketBytesFindsTheAnswerItsKeyStored() throws {
        let cache = AnswerCache(budgetBytes: 1 << 20)
        let m = Message.empty()!
        m.isResponse = true
        m.setQuestion(Question(name: WireName.fromText("www.example.org")!, type: 1, qclass: 1))
        m.append(.answer, presentation: "www.example.org. 300 IN A 192.0.2.1")
        let wire = try #require(m.wire())
        let answer = try #require(UpstreamAnswer(wire: wire))
        #expect(answer.prepared != nil, "an answer the fast path can serve")
        let serial = try #require(cache.store(key("www.example.org"), answer: answer))
        cache.markInspected(key("www.example.org"), serial: serial, generation: 7)
        func look(_ name: String, type: UInt16 = 1, dnssecOK: Bool = false, generation: Int = 7) -> AnswerCache.FastLookup {
            WireName.fromText(name)!.withUnsafeBytes { bytes in AnswerCache.Key.withLowercased(bytes) { lower in
                let digest = AnswerCache.Key.digest(lowercased: lower, type: type, qclass: 1, dnssecOK: dnssecOK, checkingDisabled: false)
                return cache.preparedLookup(lowercased: lower, type: type, qclass: 1, dnssecOK: dnssecOK, checkingDisabled: false, digest: digest,
                                            generation: generation) { reply, age in
                    reply.wire.count > 12 && age == 0
                } }
            }
        }
        #expect(look("www.example.org") == .served)
        #expect(look("WWW.Example.ORG") == .served, "any letter case")
        #expect(look("www.example.org", type: 28) == .absent)
        #expect(look("www.example.org", dnssecOK: true) == .absent)
        #expect(look("ww.example.org") == .absent)
        #expect(look("www.example.org", generation: 8) == .present, "not yet inspected against these lists")
        #expect(WireName.fromText("WWW.example.org")!.withUnsafeBytes { bytes in
                    AnswerCache.Key.withLowercased(bytes) { AnswerCache.Key.digest(lowercased: $0, type: 1, qclass: 1, dnssecOK: false, checkingDisabled: false) }
                } == key("www.example.org").digest, "the digest from the bytes is the key's")
        var ecs = key("www.example.org")
        ecs.subnet = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]
        cache.store(ecs, answer: answer)
        #expect(look("www.example.org") == .served, "an answer for one ECS subnet is another key")
    }
}
