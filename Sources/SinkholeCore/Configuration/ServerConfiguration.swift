import Foundation

/// Everything `sinkhole serve` needs, with every default in one place.
public struct ServerConfiguration: Sendable {
    /// Addresses to answer on, UDP and TCP each. Default: 127.0.0.1:53 and [::1]:53.
    public var listen: [SocketAddress]
    /// Upstream resolvers, tried in order. Default: the nameservers of /etc/resolv.conf.
    public var upstreams: [SocketAddress]
    /// Domains whose names go to upstreams of their own (`--forward-zone`). Default: none.
    public var forwardZones: [ForwardZone] = []
    /// Where reverse lookups of private addresses go. Default: auto.
    public var privateReverse: PrivateReverseMode = .auto
    /// Directory of list files. Default: `blocklists/` of the checkout, else /etc/sinkhole/blocklists.
    public var blocklistDirectory: String
    /// JSON-lines file of blocked queries; nil = not written.
    public var blockLogPath: String?
    /// How blocked names are answered. Default: NXDOMAIN.
    public var blockPolicy: BlockPolicy
    /// Seconds to wait for one upstream try. Default 2.
    public var upstreamTimeout: Double
    /// Seconds a TCP connection may sit idle before it is closed. Default 10.
    public var tcpIdleTimeout: Double
    /// Open TCP client connections at most, per listening address. Default 256.
    public var tcpMaxConnections: Int
    /// UDP payload size we advertise in OPT records, in bytes. Default 1232 (DNS flag day 2020).
    public var ednsPayloadSize: UInt16

    /// Who may query. Default: loopback and private ranges (AccessPolicy.defaultAllowed).
    public var access: AccessPolicy = (try? AccessPolicy(allow: [], deny: [])) ?? .allowAll
    /// What refused clients get. Default: REFUSED.
    public var refuseAction: RefuseAction = .refuse

    /// UDP queries per second per client prefix; 0 = no limit (the default).
    public var rateLimit: Double = 0
    /// The client prefixes the rate limit counts per: /24 and /56 by default, /32 and /128 for
    /// each address.
    public var rateLimitIPv4Prefix = 24
    public var rateLimitIPv6Prefix = 56
    /// Queries a client prefix may send at once above the rate. Default: twice the rate.
    public var rateLimitBurst: Double = 0
    /// What UDP clients over the limit get. Default: an empty TC=1 reply.
    public var rateLimitAction: RateLimitAction = .truncate
    /// Queries waiting on upstreams at most; past it, SERVFAIL at once. Default 2048.
    public var maxInFlight = 2048
    /// Open TCP connections per client address at most. Default 16.
    public var tcpMaxPerClient = 16
    /// Queries answered on one TCP connection before it is closed. Default 1000.
    public var tcpMaxQueries = 1000

    /// How upstreams are ordered for each query. Default: first.
    public var upstreamStrategy: UpstreamStrategy = .first
    /// Seconds for one query's whole retry loop; nil = upstream timeout × number of upstreams.
    public var upstreamDeadline: Double?
    /// Seconds before a down upstream is probed again (doubling to 60). Default 5.
    public var upstreamRetryBackoff: Double = 5
    /// Seconds between `upstream still down` log lines for one upstream (tests shorten it).
    public var upstreamStillDownInterval: Double = 60

    /// User and group to drop to after binding; nil = keep the identity started with.
    public var user: String?
    public var group: String?

    /// Address of the Prometheus /metrics and /health endpoint; nil = off (the default).
    public var metricsListen: SocketAddress?

    /// Size-based rotation of the block log; maxSize 0 = off (the default; SIGHUP reopen always works).
    public var blockLogRotation = LogRotation(maxSize: 0, keep: 10)

    /// Where block events also go as RFC 5424 syslog messages; nil = nowhere (the default).
    public var syslog: SyslogTarget?

    /// Answer cache budget in bytes; 0 = no cache. Default 64 MiB.
    public var cacheBytes = 64 << 20
    /// TTL bounds applied to cached answers, seconds. Defaults 0 and 86400.
    public var cacheMinTTL: UInt32 = 0
    public var cacheMaxTTL: UInt32 = 86_400
    /// Serve expired answers (TTL 30) when every upstream fails (RFC 8767). Default off.
    public var serveStale = false
    /// With serveStale, seconds before an expired answer is served while its refresh goes on
    /// (RFC 8767's client response timer); not a flag, set by tests.
    public var staleAnswerAfter = 1.8

    /// Forwarders trusted to name their clients with EDNS Client Subnet. Default: none.
    public var trustECSFrom: [String] = []
    /// Send the client's ECS option upstream. Default off.
    public var forwardECS = false

    /// SQLite file of answered, unblocked queries for retro-hunts; nil = no history (the
    /// default of a bare `serve`; the shipped configuration turns it on).
    public var queryHistoryPath: String?
    /// Seconds of query history kept. Default 30 days.
    public var historyRetention: Double = 30 * 86_400
    /// Answered queries held in memory at most while the history writer catches up; past it they
    /// are dropped and counted. Default 500,000 (about 40 MB at worst).
    public var historyCapacity = 500_000

    /// Answer blocked names and inspected cache hits of plain queries without ldns. Default on;
    /// off only in tests that compare it with the full path.
    public var fastPath = true

    public static let defaultListen = ["127.0.0.1:53", "[::1]:53"]
    public static let installedBlocklistDirectory = "/etc/sinkhole/blocklists"

    public init(listen: [SocketAddress], upstreams: [SocketAddress], blocklistDirectory: String,
                blockLogPath: String? = nil, blockPolicy: BlockPolicy = BlockPolicy(mode: .nxdomain),
                upstreamTimeout: Double = 2, tcpIdleTimeout: Double = 10, tcpMaxConnections: Int = 256,
                ednsPayloadSize: UInt16 = 1232) {
        self.listen = listen
        self.upstreams = upstreams
        self.blocklistDirectory = blocklistDirectory
        self.blockLogPath = blockLogPath
        self.blockPolicy = blockPolicy
        self.upstreamTimeout = upstreamTimeout
        self.tcpIdleTimeout = tcpIdleTimeout
        self.tcpMaxConnections = tcpMaxConnections
        self.ednsPayloadSize = ednsPayloadSize
    }

    /// One line per setting, for the start-up log.
    public var summary: [String: String] {
        [
            "listen": listen.map(\.description).joined(separator: ","),
            "upstream": upstreams.map(\.description).joined(separator: ","),
            "forward-zone": forwardZones.isEmpty ? "(none)" : forwardZones.map(\.description).joined(separator: " "),
            "private-reverse": privateReverse.rawValue,
            "blocklist-dir": blocklistDirectory,
            "block-log": blockLogPath ?? "(none)",
            "block-mode": blockPolicy.mode.rawValue,
            "sinkhole-ipv4": IPAddress.text(blockPolicy.sinkholeIPv4),
            "sinkhole-ipv6": IPAddress.text(blockPolicy.sinkholeIPv6),
            "block-ttl": "\(blockPolicy.ttl)s",
            "upstream-timeout": "\(upstreamTimeout)s",
            "tcp-idle-timeout": "\(tcpIdleTimeout)s",
            "tcp-max-connections": "\(tcpMaxConnections)",
            "edns-buffer-size": "\(ednsPayloadSize)",
            "access": access.rules.map(\.description).joined(separator: ","),
            "refuse-action": refuseAction.rawValue,
            "rate-limit": rateLimit == 0 ? "off"
                : "\(rateLimit)/s burst \(rateLimitBurst) per /\(rateLimitIPv4Prefix) and /\(rateLimitIPv6Prefix) \(rateLimitAction.rawValue)",
            "max-inflight": "\(maxInFlight)",
            "upstream-strategy": upstreamStrategy.rawValue,
            "metrics-listen": metricsListen?.description ?? "(off)",
            "syslog": syslog?.description ?? "(off)",
            "trust-ecs-from": trustECSFrom.isEmpty ? "(none)" : trustECSFrom.joined(separator: ","),
            "forward-ecs": "\(forwardECS)",
            "cache-size": cacheBytes == 0 ? "(off)" : "\(cacheBytes >> 20) MiB, ttl \(cacheMinTTL)-\(cacheMaxTTL)s, serve-stale \(serveStale)",
            "block-log-max-size": blockLogRotation.maxSize == 0 ? "(no rotation)" : "\(blockLogRotation.maxSize) bytes, keep \(blockLogRotation.keep)",
            "user": user.map { "\($0)\(group.map { ":" + $0 } ?? "")" } ?? "(unchanged)",
            // Without a deadline given, each forward zone's is its own: the timeout × its upstreams.
            "upstream-deadline": upstreamDeadline.map { "\($0)s" } ?? "\(upstreamTimeout * Double(max(1, upstreams.count)))s"
                + (forwardZones.isEmpty ? "" : " (a forward zone's: upstream-timeout × its upstreams)"),
            "tcp-max-per-client": "\(tcpMaxPerClient)",
            "tcp-max-queries": "\(tcpMaxQueries)",
            "query-history": queryHistoryPath.map { "\($0), retention \(Int(historyRetention))s" } ?? "(off)",
        ]
    }
}

/// Parses durations as written on the command line: `2`, `2s`, `1500ms`, `1m`, `1h`.
public enum DurationText {
    /// `60`, `2s`, `500ms`, `1.5m`, `1h`, `7d`: digits with at most one decimal point, then a
    /// unit (none: seconds). Nothing else that Double would take (`1e3`, `0x10`, `inf`).
    /// Digits too many for a Double give infinity, which the callers refuse as too large.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        var number = Substring(t), factor = 1.0
        for (suffix, f) in units where t.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            factor = f
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              number.filter({ $0 == "." }).count <= 1, number.contains(where: \.isNumber),
              let v = Double(number), !v.isNaN else { return nil }
        return v * factor
    }
}
