import Dispatch
import Foundation
import Synchronization
import Prometheus
import Testing
@testable import SinkholeCore

/// Per-core counters (`ShardedCounts`) and the upstream latency histogram built on them: what
/// the query path counts without a shared lock or cache line must still add up exactly, and
/// /metrics must read as the Prometheus library would have written it.
@Suite struct ShardedCountsTests {
    /// Threads counting at once in one shard (so they certainly share it): nothing is lost and
    /// no slot bleeds into another. The same with the usual 16 shards.
    @Test(arguments: [1, 16]) func countsFromManyThreadsAddUpExactly(shards: Int) {
        let counts = ShardedCounts(slots: 10, shards: shards)
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            for _ in 0..<5_000 { counts.add(9) }
            counts.add(0, UInt64(i))
        }
        #expect(counts.total(9) == 64 * 5_000)
        #expect(counts.total(0) == (0..<64).reduce(0) { $0 + UInt64($1) })
        for slot in 1..<9 { #expect(counts.total(slot) == 0, "slot \(slot)") }
    }

    /// The same observations in our histogram and in the library's DurationHistogram give the
    /// same text: buckets are cumulative, a value equal to a bound falls in that bound's bucket,
    /// one above every bound only in +Inf, and the sum is exact.
    @Test func latencyHistogramReadsAsThePrometheusLibraryWritesIt() {
        let buckets: [Duration] = [.microseconds(250), .milliseconds(1), .milliseconds(5), .seconds(1)]
        let ours = LatencyHistogram(buckets: buckets)
        let registry = PrometheusCollectorRegistry()
        let theirs = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "x", metricName: "latency", unitName: "seconds", helpText: "test"), labels: [("upstream", "127.0.0.1:53")], buckets: buckets)
        let observations: [Int64] = [0, 100_000, 250_000, 250_001, 999_999, 1_000_000, 3_000_000, 7_000_000_000, 42]
        DispatchQueue.concurrentPerform(iterations: observations.count) { i in ours.recordNanoseconds(observations[i]) }
        for ns in observations { theirs.recordNanoseconds(ns) }

        var text = ""
        ours.render(into: &text, name: "x_latency_seconds", labels: #"upstream="127.0.0.1:53""#)
        let library = registry.emitToString().split(separator: "\n").filter { !$0.hasPrefix("#") }.map(String.init)
        #expect(text.split(separator: "\n").map(String.init) == library)
        #expect(text.contains(#"x_latency_seconds_bucket{upstream="127.0.0.1:53",le="+Inf"} 9"#), "\(text)")
        #expect(ours.count == 9)
    }

    /// Queries counted on several threads while several scrapes run at once (two Prometheus
    /// servers): the last scrape is exact. A scrape that stored an older sum over a newer one
    /// would count the difference twice at the next.
    @Test func concurrentScrapesNeitherLoseNorDoubleCount() throws {
        let metrics = ServerMetrics()
        let perThread = 100_000, counting = 2, scraping = 2
        func read(_ text: String, _ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.dropFirst(series.count + 1)) }
        }
        let blockedSeries = #"sinkhole_blocked_total{list="intel.txt"}"#
        let querySeries = #"sinkhole_queries_total{transport="udp",outcome="blocked"}"#
        let countersLeft = Atomic<Int>(counting)
        let done = DispatchGroup()
        for worker in 0..<(counting + scraping) {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                if worker < counting {
                    for _ in 0..<perThread {
                        metrics.query(.udp, .blocked)
                        metrics.blocked(list: "intel.txt")
                    }
                    countersLeft.subtract(1, ordering: .relaxed)
                } else {
                    // Scrapes for as long as the counting goes on (at most 20,000).
                    for _ in 0..<20_000 where countersLeft.load(ordering: .relaxed) > 0 { _ = metrics.exposition() }
                }
            }
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        let final = metrics.exposition()
        #expect(read(final, blockedSeries) == Double(counting * perThread), "\(final)")
        #expect(read(final, querySeries) == Double(counting * perThread))
    }
}
