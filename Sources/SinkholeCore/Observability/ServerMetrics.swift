import Foundation
import Prometheus
import Synchronization

/// Every counter sinkhole exports, kept in its own Prometheus registry (one per server, so
/// tests can run several), each made with its help text.
/// Hot-path handles are made once up front; the per-list and per-upstream ones on first use.
public final class ServerMetrics: Sendable {
    /// What happened to a query, the `outcome` label of `sinkhole_queries_total`.
    public enum Outcome: String, Sendable, CaseIterable {
        case blocked, forwarded, cached, refused, servfail, formerr, notimp, ratelimited, dropped
    }

    private let registry = PrometheusCollectorRegistry()
    /// `sinkhole_queries_total` per transport and outcome, indexed by `slot(_:_:)`: every query
    /// counts once, in its core's shard (`queryCounts`), with no string or dictionary lookup;
    /// the Prometheus counters are brought up to the shards' sums when /metrics is scraped.
    private let queries: [RunningTotal]
    private let queryCounts = ShardedCounts(slots: 2 * Outcome.allCases.count)
    /// Blocked queries per list: in the slot of the list's number (`ListNumbers`) of the calling
    /// thread's shard, with no lock and no string hashed; lists numbered past the slots (only a
    /// process that has seen thousands of list names) in a dictionary of the thread's shard.
    /// `sinkhole_blocked_total` per list made and brought up to date at scrape time.
    private let blockedCounts = ShardedCounts(slots: ServerMetrics.listSlots)
    private let blockedShards = ThreadShards<[String: UInt64]> { [:] }
    static let listSlots = 256
    /// The per-list counters, made at the scrape that first sees a block by the list.
    private let blocked = Mutex<[String: RunningTotal]>([:])
    /// `sinkhole_upstream_latency_seconds`, one per upstream, rendered by `exposition()`.
    private let upstreamLatency = Mutex<[(String, LatencyHistogram)]>([])
    private let latencyBuckets: [Duration]
    private let upstreamErrors = Mutex<[String: Prometheus.Counter]>([:])
    private let listGauges = Mutex<[String: (entries: Prometheus.Gauge, reload: Prometheus.Gauge, ok: Prometheus.Gauge)]>([:])
    private let logWritten: RunningTotal
    private let logDropped: RunningTotal
    private let tcpOpen: Prometheus.Gauge
    private let cacheGauges: (entries: Prometheus.Gauge, bytes: Prometheus.Gauge, evicted: RunningTotal, turnedAway: RunningTotal)
    private let history: [String: RunningTotal]
    private let historyPaused: Prometheus.Gauge
    private let inflight: (now: Prometheus.Gauge, refused: RunningTotal)
    private let retroHitCounter: Prometheus.Counter
    private let upstreamUp = Mutex<[String: Prometheus.Gauge]>([:])

    public init() {
        latencyBuckets = [.microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
                          .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                          .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                          .seconds(2), .seconds(5)]
        var q: [RunningTotal] = []
        for transport in [Transport.udp, .tcp] {
            for outcome in Outcome.allCases {
                precondition(q.count == ServerMetrics.slot(transport, outcome))
                q.append(RunningTotal(registry, "queries_total", ServerMetrics.queriesHelp,
                                      labels: [("transport", transport.rawValue), ("outcome", outcome.rawValue)]))
            }
        }
        queries = q
        logWritten = RunningTotal(registry, "block_log_events_written", "Block-log events written to the file since start")
        logDropped = RunningTotal(registry, "block_log_events_dropped", "Block-log events dropped because the writer fell behind")
        tcpOpen = registry.makeGauge(descriptor: ServerMetrics.name("tcp_connections_open", "Open TCP client connections"))
        cacheGauges = (
            registry.makeGauge(descriptor: ServerMetrics.name("cache_entries", "Answers in the answer cache")),
            registry.makeGauge(descriptor: ServerMetrics.name("cache_bytes", "Memory the answer cache's entries take, counted against --cache-size")),
            RunningTotal(registry, "cache_evictions", "Answers evicted from the full cache to make room, since start"),
            RunningTotal(registry, "cache_turned_away", "Answers for names asked once not taken by the full cache, since start"))
        var h: [String: RunningTotal] = [:]
        for (key, help) in [("recorded", "Answered queries handed to the query history since start"),
                            ("dropped", "Queries not recorded in the query history: its writer fell behind, or its disk was nearly full"),
                            ("written", "Queries written to the query history database since start"),
                            ("pruned", "Query history rows pruned for age since start")] {
            h[key] = RunningTotal(registry, "history_queries_\(key)", help)
        }
        history = h
        // The usual build-info series: constant 1, the release in its label (joins on dashboards).
        registry.makeGauge(descriptor: ServerMetrics.name("build_info", "sinkhole's release, in the version label; always 1"),
                           labels: [("version", SinkholeVersion.string)]).set(1.0)
        inflight = (
            registry.makeGauge(descriptor: ServerMetrics.name("queries_inflight", "Queries waiting on upstreams now (at most --max-inflight)")),
            RunningTotal(registry, "max_inflight_servfails", "Queries answered SERVFAIL at once because --max-inflight queries were waiting on upstreams, since start"))
        historyPaused = registry.makeGauge(descriptor: ServerMetrics.name("history_paused", "1 while the query history does not record because its file system is nearly full"))
        retroHitCounter = registry.makeCounter(descriptor: ServerMetrics.name(
            "retro_hits_total", "Clients found in the query history resolving a name before a list blocked it, since start"))
    }

    static let queriesHelp = "Messages received, by transport and what happened to them, since start"

    /// `sinkhole_<name>` with its help text.
    static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "sinkhole", metricName: name, unitName: "", helpText: help)
    }

    private static func slot(_ transport: Transport, _ outcome: Outcome) -> Int {
        let o: Int
        switch outcome {
        case .blocked: o = 0
        case .forwarded: o = 1
        case .cached: o = 2
        case .refused: o = 3
        case .servfail: o = 4
        case .formerr: o = 5
        case .notimp: o = 6
        case .ratelimited: o = 7
        case .dropped: o = 8
        }
        return (transport == .udp ? 0 : Outcome.allCases.count) + o
    }

    @inline(__always)
    public func query(_ transport: Transport, _ outcome: Outcome) {
        queryCounts.add(ServerMetrics.slot(transport, outcome))
    }

    /// One query blocked by list `name`, numbered `number` (`LoadedList.number`).
    public func blocked(list name: String, number: Int) {
        if number >= 0 && number < ServerMetrics.listSlots { return blockedCounts.add(number) }
        blockedShards.mine.value.withLock { $0[name, default: 0] += 1 }
    }

    /// The same by name alone (the full path's blocks): in the thread's dictionary, summed with
    /// the slots at scrape time, so it takes no process-wide lock.
    public func blocked(list name: String) {
        blockedShards.mine.value.withLock { $0[name, default: 0] += 1 }
    }

    /// Brings the Prometheus counters up to the sums of the per-core counts. Each counter only
    /// goes up (`RunningTotal`), so two scrapes at once (two Prometheus servers) never store a
    /// sum below one already published.
    private func publishCounts() {
        for slot in queries.indices { queries[slot].publish(queryCounts.total(slot)) }
        var blockedTotals: [String: UInt64] = [:]
        for (number, name) in ListNumbers.names.prefix(ServerMetrics.listSlots).enumerated() {
            let total = blockedCounts.total(number)
            if total > 0 { blockedTotals[name, default: 0] += total }
        }
        for shard in blockedShards.shards {
            shard.value.withLock { for (list, n) in $0 { blockedTotals[list, default: 0] += n } }
        }
        for (list, total) in blockedTotals {
            let counter = blocked.withLock { counters in
                if let c = counters[list] { return c }
                let c = RunningTotal(registry, "blocked_total", "Blocked queries by the list whose rule decided, since start",
                                     labels: [("list", list)])
                counters[list] = c
                return c
            }
            counter.publish(total)
        }
    }

    /// Retro-hit events reported (a client found in the query history resolving a newly listed name).
    public func retroHits(_ count: Int) {
        retroHitCounter.increment(by: Int64(count))
    }

    /// Queries waiting on upstreams, and those turned away at the limit, read when /metrics is scraped.
    public func update(inflight now: Int, limitServfails: Int) {
        inflight.now.set(Double(now))
        inflight.refused.publish(limitServfails)
    }

    /// The answer cache's figures, read when /metrics is scraped.
    public func update(cache stats: AnswerCache.Stats) {
        cacheGauges.entries.set(Double(stats.entries))
        cacheGauges.bytes.set(Double(stats.bytes))
        cacheGauges.evicted.publish(stats.evicted)
        cacheGauges.turnedAway.publish(stats.turnedAway)
    }

    /// The query history's counters, read when /metrics is scraped.
    public func update(history counts: QueryHistory.Counts) {
        history["recorded"]?.publish(counts.recorded)
        history["dropped"]?.publish(counts.dropped)
        history["written"]?.publish(counts.written)
        history["pruned"]?.publish(counts.pruned)
        historyPaused.set(Double(counts.paused ? 1 : 0))
    }

    /// The `sinkhole_upstream_latency_seconds` histogram of one upstream (the forwarder keeps
    /// one per upstream, so that recording an answer looks nothing up).
    public func latencyTimer(_ upstream: SocketAddress) -> LatencyHistogram {
        upstreamLatency.withLock { histograms in
            if let h = histograms.first(where: { $0.0 == upstream.description }) { return h.1 }
            let h = LatencyHistogram(buckets: latencyBuckets)
            histograms.append((upstream.description, h))
            return h
        }
    }

    public func upstreamFailed(_ upstream: SocketAddress, reason: String) {
        errorCounter(upstream, reason).increment()
    }

    /// The reasons of `sinkhole_upstream_errors_total`: every one exists, at 0, for every
    /// upstream from the first scrape, so that rate() and alerts see a series before its first
    /// error rather than a series that appears with it.
    static let upstreamErrorReasons = ["timeout", "network", "bad_reply", "servfail", "local"]

    private func errorCounter(_ upstream: SocketAddress, _ reason: String) -> Prometheus.Counter {
        let key = "\(upstream)/\(reason)"
        return upstreamErrors.withLock { counters in
            if let c = counters[key] { return c }
            let c = registry.makeCounter(
                descriptor: ServerMetrics.name("upstream_errors_total", "Failed tries at each upstream, by reason, since start"),
                labels: [("upstream", upstream.description), ("reason", reason)])
            counters[key] = c
            return c
        }
    }

    /// Sets the gauges read at scrape time.
    public func update(lists: [LoadedList], failedLists: Set<String>, reloadTimes: [String: Double],
                       blockLog: (written: Int, dropped: Int)?, tcpOpen open: Int,
                       upstreams: [(SocketAddress, Bool)]) {
        listGauges.withLock { gauges in
            // A list whose file was removed stops being exported. A file that has never loaded
            // (unreadable from the start, say) is exported too, with 0 entries and success 0, so
            // that the alert on list_last_reload_success sees it: it blocks nothing.
            let neverLoaded = failedLists.subtracting(lists.map(\.name))
            let current = Set(lists.map(\.name)).union(neverLoaded)
            for (name, g) in gauges where !current.contains(name) {
                registry.unregisterGauge(g.entries)
                registry.unregisterGauge(g.reload)
                registry.unregisterGauge(g.ok)
                gauges[name] = nil
            }
            let figures = lists.map { ($0.name, $0.entries) } + neverLoaded.sorted().map { ($0, 0) }
            for (name, entries) in figures {
                let g = gauges[name] ?? (
                    registry.makeGauge(descriptor: ServerMetrics.name("list_entries", "Entries of each loaded list"),
                                       labels: [("list", name)]),
                    registry.makeGauge(descriptor: ServerMetrics.name("list_last_reload_timestamp_seconds", "When each list was last loaded"),
                                       labels: [("list", name)]),
                    registry.makeGauge(descriptor: ServerMetrics.name("list_last_reload_success", "1 if the latest version of each list was usable"),
                                       labels: [("list", name)]))
                gauges[name] = g
                g.entries.set(Double(entries))
                g.reload.set(reloadTimes[name] ?? 0)
                g.ok.set(failedLists.contains(name) ? 0.0 : 1.0)
            }
        }
        if let blockLog {
            logWritten.publish(blockLog.written)
            logDropped.publish(blockLog.dropped)
        }
        tcpOpen.set(Double(open))
        for (address, _) in upstreams {
            for reason in ServerMetrics.upstreamErrorReasons { _ = errorCounter(address, reason) }
        }
        upstreamUp.withLock { gauges in
            for (address, up) in upstreams {
                let g = gauges[address.description] ?? registry.makeGauge(
                    descriptor: ServerMetrics.name("upstream_up", "1 unless the upstream is marked down"),
                    labels: [("upstream", address.description)])
                gauges[address.description] = g
                g.set(up ? 1.0 : 0.0)
            }
        }
    }

    /// A label value as the text format wants it: backslash, double quote and newline escaped.
    static func escapedLabel(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    /// The Prometheus text exposition of every metric (`registry` alone lacks the per-core
    /// counts not yet published and the upstream latency histograms: read this, not it).
    public func exposition() -> String {
        publishCounts()
        var text = registry.emitToString()
        let histograms = upstreamLatency.withLock { $0 }
        if !histograms.isEmpty {
            text += "# HELP sinkhole_upstream_latency_seconds Time from a try's query to its answer, per upstream\n"
            text += "# TYPE sinkhole_upstream_latency_seconds histogram\n"
            for (upstream, h) in histograms {
                h.render(into: &text, name: "sinkhole_upstream_latency_seconds",
                         labels: "upstream=\"\(ServerMetrics.escapedLabel(upstream))\"")
            }
        }
        return text
    }
}

/// A latency histogram counted per core (`ShardedCounts`): a bucket per bound and one above
/// them all, and the sum in nanoseconds. Recording takes no lock and writes only the calling
/// core's lines; the cumulative buckets, sum and count are made when it is rendered.
public final class LatencyHistogram: Sendable {
    private let bounds: [Int64]
    private let boundText: [String]
    private let counts: ShardedCounts

    init(buckets: [Duration]) {
        let sorted = buckets.sorted()
        bounds = sorted.map { d in d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000 }
        boundText = sorted.map(\.bucketRepresentation)
        counts = ShardedCounts(slots: sorted.count + 2)
    }

    public func recordNanoseconds(_ nanoseconds: Int64) {
        let ns = max(0, nanoseconds)
        var bucket = 0
        while bucket < bounds.count && ns > bounds[bucket] { bucket += 1 }
        counts.add(bucket, 1, and: bounds.count + 1, UInt64(ns))
    }

    /// Observations so far (every bucket, the one above the bounds included).
    public var count: UInt64 { (0...bounds.count).reduce(0) { $0 &+ counts.total($1) } }

    /// The Prometheus text lines of this histogram: `_bucket` per bound (cumulative) and `+Inf`,
    /// `_sum` in seconds, `_count`; the same lines the Prometheus library writes.
    func render(into text: inout String, name: String, labels: String) {
        var cumulative: UInt64 = 0
        for (i, bound) in boundText.enumerated() {
            cumulative &+= counts.total(i)
            text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative &+= counts.total(bounds.count)
        text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)\n"
        let sum = Duration.nanoseconds(Int64(truncatingIfNeeded: counts.total(bounds.count + 1)))
        text += "\(name)_sum{\(labels)} \(sum.bucketRepresentation)\n"
        text += "\(name)_count{\(labels)} \(cumulative)\n"
    }
}

/// A count kept since start somewhere else (the per-core query shards, the block log's writer,
/// the cache, the history), exported as a Prometheus counter: brought up to the count at each
/// scrape. A counter, not a
/// gauge, so that `rate()` and `increase()` read it as what it is and a restart shows as the
/// reset Prometheus expects of counters.
final class RunningTotal: Sendable {
    private let counter: Prometheus.Counter
    private let published = Mutex<UInt64>(0)

    init(_ registry: PrometheusCollectorRegistry, _ name: String, _ help: String, labels: [(String, String)] = []) {
        counter = registry.makeCounter(descriptor: ServerMetrics.name(name, help), labels: labels)
    }

    /// The count is now `total`; it never goes down (a smaller figure is ignored).
    func publish<T: BinaryInteger>(_ total: T) {
        let total = UInt64(clamping: total)
        published.withLock { last in
            guard total > last else { return }
            counter.increment(by: Int64(clamping: total - last))
            last = total
        }
    }
}
