@testable import SinkholeCore
import Testing

/// The cache's eviction order within one shard: a hit marks its entry used and leaves it in
/// place; eviction from the tail gives a used entry one second chance (CLOCK), so it outlives
/// the entries that were not used, until it goes unused for a whole turn of the shard.
@Suite struct CacheEvictionTests {
    func key(_ name: String) -> AnswerCache.Key {
        AnswerCache.Key(Question(name: WireName.fromText(name)!, type: 1, qclass: 1), dnssecOK: false)
    }

    func answer(_ name: String) -> UpstreamAnswer {
        let m = Message.empty()!
        m.isResponse = true
        m.setQuestion(Question(name: WireName.fromText(name)!, type: 1, qclass: 1))
        m.append(.answer, presentation: "\(name). 300 IN A 192.0.2.1")
        return UpstreamAnswer(message: m)!
    }

    /// Stored twice: a full shard admits a name on its second answer (the doorkeeper).
    func store(_ cache: AnswerCache, _ name: String) {
        for _ in 0..<2 { cache.store(key(name), answer: answer(name)) }
    }

    @Test func aUsedEntryGetsASecondChanceAndLosesItWhenUnusedForATurn() throws {
        let cache = AnswerCache(budgetBytes: 16 * 5000)   // about ten entries a shard
        // Names that all fall in one shard, in the order they are stored.
        let names = (0..<4000).map { "s\($0).example.org" }.filter { key($0).shard(of: 16) == 0 }
        var next = 0
        while cache.stats.evicted == 0 {
            store(cache, names[next])
            next += 1
        }
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

    @Test func anEvictionGivesABoundedNumberOfSecondChances() throws {
        // A shard of many small entries, every one used: a store still evicts, after at most
        // `maxSecondChances` entries moved to the front, and stays within the budget.
        let cache = AnswerCache(budgetBytes: 16 * 200_000)
        let names = (0..<60_000).map { "u\($0).example.org" }.filter { key($0).shard(of: 16) == 0 }
        var next = 0
        while cache.stats.evicted == 0 {
            store(cache, names[next])
            next += 1
        }
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
