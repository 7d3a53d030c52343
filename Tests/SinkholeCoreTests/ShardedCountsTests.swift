import Dispatch
import Prometheus
import Testing
@testable import SinkholeCore

/// Per-core counters (`ShardedCounts`) and the upstream latency histogram built on them: what
/// the query path counts without a shared lock or cache line must still add up exactly, and
/// /metrics must read as the Prometheus library would have written it.
@Suite struct ShardedCountsTests {
    /// Many threads counting at once, most of them sharing shards (16 shards, 64 threads):
    /// nothing is lost and no slot bleeds into another.
    @Test func countsFromManyThreadsAddUpExactly() {
        let counts = ShardedCounts(slots: 10)
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
}
