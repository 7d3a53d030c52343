@testable import SinkholeCore
import Testing

/// The upstream loop's deadlines: a FIFO for those that arrive in order, a heap for the rest.
/// Whatever the order of arrival, entries come out earliest first, each once, and only when due.
@Suite struct DeadlineQueueTests {
    private func entry(_ deadline: UInt64, _ serial: UInt64) -> DeadlineQueue.Entry {
        .init(deadline: deadline, token: 0, id: 0, serial: serial)
    }

    @Test func entriesComeOutEarliestFirstEachOnceAndOnlyWhenDue() {
        var generator = SplitMix(seed: 42)
        var queue = DeadlineQueue()
        var pushed: [UInt64: UInt64] = [:]   // serial → deadline
        var popped: [UInt64] = []
        var unordered = 0
        var early = 0
        // Takes every entry due at `now`: each due, earliest first within the sweep.
        func sweep(_ now: UInt64) {
            var last: UInt64 = 0
            while let e = queue.popDue(now) {
                if e.deadline > now { early += 1 }
                if e.deadline < last { unordered += 1 }
                last = e.deadline
                popped.append(e.serial)
            }
        }
        var now: UInt64 = 1_000
        for serial in UInt64(1)...20_000 {
            now += generator.next() % 3
            // Mostly the same timeout (in order); one in eight shorter (a retry with less time left).
            let timeout: UInt64 = generator.next() % 8 == 0 ? generator.next() % 500 : 500
            queue.push(entry(now + timeout, serial))
            pushed[serial] = now + timeout
            if generator.next() % 4 == 0 {
                sweep(now)
                #expect(queue.earliest.map { $0 > now } ?? true, "an entry due now was left behind")
            }
        }
        #expect(queue.count == pushed.count - popped.count)
        #expect(popped.count > 10_000, "most entries fell due during the run")
        sweep(UInt64.max)
        #expect(queue.count == 0 && queue.earliest == nil)
        #expect(early == 0, "entries came out before they were due")
        #expect(unordered == 0, "entries came out of deadline order")
        #expect(popped.count == pushed.count && Set(popped) == Set(pushed.keys), "each entry exactly once")
    }

    @Test func aRetryDueBeforeTheQueuedOnesComesOutFirst() {
        var queue = DeadlineQueue()
        queue.push(entry(100, 1))
        queue.push(entry(200, 2))
        queue.push(entry(150, 3))   // out of order: the heap
        queue.push(entry(120, 4))
        #expect(queue.earliest == 100)
        #expect(queue.popDue(99) == nil)
        #expect([queue.popDue(1000), queue.popDue(1000), queue.popDue(1000), queue.popDue(1000)].map { $0?.serial } == [1, 4, 3, 2])
        #expect(queue.popDue(1000) == nil)
    }
}

/// A small deterministic generator for the test above.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
