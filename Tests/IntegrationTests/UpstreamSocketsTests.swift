import Dispatch
import Foundation
@testable import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// The pooled upstream sockets and the per-core event loops they share with the UDP listeners.
@Suite struct UpstreamSocketsTests {
    static let names = 400
    static let records = (0..<names).map { "n\($0).example.org. 300 IN A 10.0.\($0 / 256).\($0 % 256)" }

    @Test func socketsAreReusedRotatedAndClosed() throws {
        let h = try TestHarness(records: UpstreamSocketsTests.records)
        let forwarder = h.server.chain.forwarder
        let loops = forwarder.eventLoops.count
        for i in 0..<UpstreamSocketsTests.names {
            #expect(DNSTestClient.ask("n\(i).example.org", server: h.address)?.answerCount == 1)
        }
        // Each loop keeps at most socketsPerUpstream open, whatever the number of queries.
        #expect(forwarder.openSockets <= loops * UpstreamSockets.socketsPerUpstream)
        #expect(forwarder.openSockets > 0)
        let ports = Set(h.upstream.received.map(\.sourcePort))
        #expect(ports.count >= UpstreamSocketsTests.names / UpstreamSockets.queriesPerSocket)
        h.stop()
        #expect(forwarder.openSockets == 0, "stopping closes every upstream socket")
    }

    @Test func concurrentClientsEachGetTheirOwnAnswer() throws {
        // Many clients at once, over every listener socket and loop: each reply must be the one
        // for its own question (IDs and questions matched per socket, no cross-talk).
        let h = try TestHarness(records: UpstreamSocketsTests.records)
        defer { h.stop() }
        let clients = 8
        let perClient = UpstreamSocketsTests.names / clients
        let wrong = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: clients) { c in
            for k in 0..<perClient {
                let i = c * perClient + k
                let r = DNSTestClient.ask("n\(i).example.org", server: h.address)
                if r?.records(.answer).map(\.rdata) != [[10, 0, UInt8(i / 256), UInt8(i % 256)]] {
                    wrong.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(wrong.load(ordering: .relaxed) == 0)
        #expect(h.upstream.received.count == UpstreamSocketsTests.names, "each name asked upstream once")
    }

    @Test func aSilentUpstreamTimesOutWhileOthersAreAnswered() throws {
        // A query that never gets a reply waits on the same loop and socket pool as queries
        // that do: it fails at its deadline, and the others are not held up by it.
        let h = try TestHarness(records: UpstreamSocketsTests.records) { c in
            c.upstreamTimeout = 0.4
        }
        defer { h.stop() }
        h.upstream.set(.silent, for: "n0.example.org")
        let started = Date()
        let silent = DispatchQueue(label: "silent")
        let failed = Mutex<Message?>(nil)
        let group = DispatchGroup()
        silent.async(group: group) {
            let r = DNSTestClient.ask("n0.example.org", server: h.address)
            failed.withLock { $0 = r }
        }
        for i in 1..<50 {
            #expect(DNSTestClient.ask("n\(i).example.org", server: h.address)?.answerCount == 1)
        }
        #expect(group.wait(timeout: .now() + 10) == .success)
        let took = Date().timeIntervalSince(started)
        #expect(failed.withLock { $0?.rcode } == Rcode.servFail)
        #expect(took >= 0.35, "the silent query waited for its deadline (\(took) s)")
        #expect(took < 2.5, "and not much longer (\(took) s)")
    }
}
