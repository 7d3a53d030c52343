import ArgumentParser
import Dispatch
import Foundation
import Logging
import SinkholeCore

/// The flags of `serve` (and of `check --config`). Every one is optional here: a flag not given
/// falls back to the config file, then to the default in `Settings.configuration()`.
/// Numbers and durations are parsed `.unconditional`: the word after the flag is its value even
/// when it starts with a dash, so `--block-ttl -5` is refused by the validation as a negative
/// TTL rather than by the parser as a missing value.
struct ServeOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp("YAML file of settings; keys are the flag names below. Flags override it.", valueName: "FILE"))
    var config: String?

    @Option(name: .customLong("listen"), help: ArgumentHelp("Address to answer on, UDP and TCP; repeatable. IPv6 in brackets. Default: 127.0.0.1:53 and [::1]:53.", valueName: "ADDR:PORT"))
    var listen: [String] = []

    @Option(name: .customLong("upstream"), help: ArgumentHelp("Upstream resolver; repeatable. Tried in the order --upstream-strategy gives (by default the order given). Default: the nameservers of /etc/resolv.conf (never sinkhole itself).", valueName: "ADDR[:PORT]"))
    var upstream: [String] = []

    @Option(name: .customLong("forward-zone"), help: ArgumentHelp("Send the names of DOMAIN and below it to these upstreams instead of --upstream (internal zones to their own servers; the longest zone given wins); repeatable.", valueName: "DOMAIN=ADDR[:PORT][,ADDR[:PORT]...]"))
    var forwardZone: [String] = []

    @Option(name: .customLong("private-reverse"), help: ArgumentHelp("Reverse lookups of private addresses (RFC 6303 zones: 10.in-addr.arpa, 168.192.in-addr.arpa, d.f.ip6.arpa, ...) not in a --forward-zone: auto (to the --upstreams with private addresses, not loopback, else answered NXDOMAIN here; the default), local (always answered here), forward (to --upstream like any name).", valueName: "auto|local|forward"))
    var privateReverse: String?

    @Option(name: .customLong("blocklist-dir"), help: ArgumentHelp("Directory of list files, watched for changes. Default: blocklists/ of the source checkout the binary was built in, else \(ServerConfiguration.installedBlocklistDirectory).", valueName: "DIR"))
    var blocklistDir: String?

    @Option(name: .customLong("block-log"), help: ArgumentHelp("Append one JSON line per blocked query to this file.", valueName: "FILE"))
    var blockLog: String?

    @Option(name: .customLong("block-log-max-size"), parsing: .unconditional, help: ArgumentHelp("Rotate the block log when it reaches this size (e.g. 100M); rotated files are gzip-compressed. Default (or 0): no size rotation.", valueName: "SIZE"))
    var blockLogMaxSize: String?

    @Option(name: .customLong("block-log-keep"), parsing: .unconditional, help: ArgumentHelp("Rotated block logs kept (block.log.1.gz …). Default 10.", valueName: "N"))
    var blockLogKeep: String?

    @Option(name: .customLong("block-mode"), help: ArgumentHelp("nxdomain (default): NXDOMAIN with an SOA. sinkhole: A/AAAA answered with the sinkhole addresses, other types NODATA.", valueName: "nxdomain|sinkhole"))
    var blockMode: String?

    @Option(name: .customLong("sinkhole-ipv4"), help: ArgumentHelp("Address answered for blocked A queries in sinkhole mode. Default 0.0.0.0.", valueName: "ADDR"))
    var sinkholeIPv4: String?

    @Option(name: .customLong("sinkhole-ipv6"), help: ArgumentHelp("Address answered for blocked AAAA queries in sinkhole mode. Default ::.", valueName: "ADDR"))
    var sinkholeIPv6: String?

    @Option(name: .customLong("block-ttl"), parsing: .unconditional, help: ArgumentHelp("TTL of block answers and the SOA negative-caching TTL (e.g. 60, 60s, 5m). Default 60s.", valueName: "DURATION"))
    var blockTTL: String?

    @Option(name: .customLong("upstream-timeout"), parsing: .unconditional, help: ArgumentHelp("Time to wait for one upstream try before the next upstream (e.g. 2s, 500ms). Default 2s.", valueName: "DURATION"))
    var upstreamTimeout: String?

    @Option(name: .customLong("tcp-idle-timeout"), parsing: .unconditional, help: ArgumentHelp("Close a TCP client connection idle this long. Default 10s.", valueName: "DURATION"))
    var tcpIdleTimeout: String?

    @Option(name: .customLong("tcp-max-connections"), parsing: .unconditional, help: ArgumentHelp("Open TCP client connections at most, per listen address. Default 256.", valueName: "N"))
    var tcpMaxConnections: String?

    @Option(name: .customLong("edns-buffer-size"), parsing: .unconditional, help: ArgumentHelp("UDP payload size advertised in OPT records (512-4096), and the largest UDP reply sent. Default 1232.", valueName: "BYTES"))
    var ednsBufferSize: String?

    @Option(name: .customLong("allow"), help: ArgumentHelp("Clients allowed to query, as CIDR; repeatable. Replaces the default: loopback, RFC 1918, RFC 6598, 169.254.0.0/16, fc00::/7, fe80::/10. Longest prefix wins.", valueName: "CIDR"))
    var allow: [String] = []

    @Option(name: .customLong("deny"), help: ArgumentHelp("Clients refused, as CIDR; repeatable. Wins over an --allow of the same length.", valueName: "CIDR"))
    var deny: [String] = []

    @Option(name: .customLong("refuse-action"), help: ArgumentHelp("What clients outside --allow get: refuse (REFUSED, default) or drop (nothing).", valueName: "refuse|drop"))
    var refuseAction: String?

    @Option(name: .customLong("rate-limit"), parsing: .unconditional, help: ArgumentHelp("UDP queries per second allowed per client prefix (/24 for IPv4, /56 for IPv6, unless changed below); 0 = off (default).", valueName: "QPS"))
    var rateLimit: String?

    @Option(name: .customLong("rate-limit-ipv4-prefix"), parsing: .unconditional, help: ArgumentHelp("IPv4 clients in one prefix of this length share a rate-limit budget: 8 to 32, default 24 (32: each address its own).", valueName: "BITS"))
    var rateLimitIPv4Prefix: String?

    @Option(name: .customLong("rate-limit-ipv6-prefix"), parsing: .unconditional, help: ArgumentHelp("IPv6 clients in one prefix of this length share a rate-limit budget: 16 to 128, default 56.", valueName: "BITS"))
    var rateLimitIPv6Prefix: String?

    @Option(name: .customLong("rate-limit-burst"), parsing: .unconditional, help: ArgumentHelp("Queries a client prefix may send at once above the rate. Default: twice --rate-limit.", valueName: "N"))
    var rateLimitBurst: String?

    @Option(name: .customLong("rate-limit-action"), help: ArgumentHelp("What UDP clients over the limit get: truncate (empty TC=1 reply, default) or drop.", valueName: "truncate|drop"))
    var rateLimitAction: String?

    @Option(name: .customLong("max-inflight"), parsing: .unconditional, help: ArgumentHelp("Queries waiting on upstreams at most; past it, SERVFAIL at once. Default 2048.", valueName: "N"))
    var maxInflight: String?

    @Option(name: .customLong("tcp-max-per-client"), parsing: .unconditional, help: ArgumentHelp("Open TCP connections per client address at most. Default 16.", valueName: "N"))
    var tcpMaxPerClient: String?

    @Option(name: .customLong("tcp-max-queries"), parsing: .unconditional, help: ArgumentHelp("Queries answered on one TCP connection before it is closed. Default 1000.", valueName: "N"))
    var tcpMaxQueries: String?

    @Option(name: .customLong("upstream-strategy"), help: ArgumentHelp("Order of upstreams per query: first (in the order given, default), random, fastest (lowest smoothed RTT). Upstreams that failed 3 times in a row go last until probed again.", valueName: "first|random|fastest"))
    var upstreamStrategy: String?

    @Option(name: .customLong("upstream-deadline"), parsing: .unconditional, help: ArgumentHelp("Time for one query's whole retry loop over the upstreams. Default: --upstream-timeout × number of upstreams.", valueName: "DURATION"))
    var upstreamDeadline: String?

    @Option(name: .customLong("metrics-listen"), help: ArgumentHelp("Serve Prometheus /metrics and /health over HTTP on this address. Off by default.", valueName: "ADDR:PORT"))
    var metricsListen: String?

    @Option(name: .customLong("cache-size"), parsing: .unconditional, help: ArgumentHelp("Answer cache budget in MiB; 0 turns the cache off. Default 64.", valueName: "MIB"))
    var cacheSize: String?

    @Option(name: .customLong("cache-min-ttl"), parsing: .unconditional, help: ArgumentHelp("Cache answers at least this long, whatever their TTL. Default 0.", valueName: "DURATION"))
    var cacheMinTTL: String?

    @Option(name: .customLong("cache-max-ttl"), parsing: .unconditional, help: ArgumentHelp("Cache answers at most this long. Default 1d (86400 s).", valueName: "DURATION"))
    var cacheMaxTTL: String?

    @Flag(name: .customLong("serve-stale"), inversion: .prefixedNo, help: "When every upstream fails, or a refresh takes over 1.8 s, answer from expired cache entries (TTL 30, RFC 8767). --no-serve-stale overrides a configuration file's serve-stale: true.")
    var serveStale: Bool?

    @Option(name: .customLong("trust-ecs-from"), help: ArgumentHelp("Downstream forwarders (CIDR; repeatable) whose EDNS Client Subnet names the real client in the block log.", valueName: "CIDR"))
    var trustECSFrom: [String] = []

    @Flag(name: .customLong("forward-ecs"), inversion: .prefixedNo, help: "Pass the client's EDNS Client Subnet option to the upstreams (off by default; --no-forward-ecs overrides the configuration file).")
    var forwardECS: Bool?

    @Flag(name: .customLong("syslog"), inversion: .prefixedNo, help: "Also send each block event as an RFC 5424 message to the local syslog socket (/dev/log). --no-syslog overrides the configuration file.")
    var syslog: Bool?

    @Option(name: .customLong("syslog-server"), help: ArgumentHelp("Send block events to this syslog collector instead: an IP address, not a host name (port default 514).", valueName: "IP[:PORT]"))
    var syslogServer: String?

    @Option(name: .customLong("syslog-protocol"), help: ArgumentHelp("Transport to --syslog-server: udp (default) or tcp (octet-counting framing, RFC 6587).", valueName: "udp|tcp"))
    var syslogProtocol: String?

    @Option(name: .customLong("query-history"), help: ArgumentHelp("Record every answered, unblocked query (client, name, type, hour) in this SQLite file, and hunt it for clients that resolved a name before a list blocked it (retro-hit events in the block log). Off unless given; on in the shipped configuration.", valueName: "FILE"))
    var queryHistory: String?

    @Flag(name: .customLong("no-query-history"), help: "Keep no query history, even if the configuration file names a file.")
    var noQueryHistory = false

    @Option(name: .customLong("history-retention"), parsing: .unconditional, help: ArgumentHelp("Query history kept this long (e.g. 30d, 12h); older rows are pruned. Default 30d.", valueName: "DURATION"))
    var historyRetention: String?

    @Option(name: .customLong("user"), help: ArgumentHelp("After binding, drop root privileges to this user (before any query is handled).", valueName: "USER"))
    var user: String?

    @Option(name: .customLong("group"), help: ArgumentHelp("Group to drop to with --user. Default: the user's primary group.", valueName: "GROUP"))
    var group: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Operational log level on stderr: trace, debug, info (default), notice, warning, error, critical.", valueName: "LEVEL"))
    var logLevel: String?

    /// The file's settings (if any) overridden by the flags given.
    func settings() throws -> Settings {
        var flags = Settings()
        flags.setFlag("listen", listen)
        flags.setFlag("upstream", upstream)
        flags.setFlag("forward-zone", forwardZone)
        flags.setFlag("private-reverse", privateReverse)
        flags.setFlag("allow", allow)
        flags.setFlag("deny", deny)
        flags.setFlag("blocklist-dir", blocklistDir)
        flags.setFlag("block-log", blockLog)
        flags.setFlag("block-mode", blockMode)
        flags.setFlag("block-log-max-size", blockLogMaxSize)
        flags.setFlag("block-log-keep", blockLogKeep)
        flags.setFlag("sinkhole-ipv4", sinkholeIPv4)
        flags.setFlag("sinkhole-ipv6", sinkholeIPv6)
        flags.setFlag("block-ttl", blockTTL)
        flags.setFlag("upstream-timeout", upstreamTimeout)
        flags.setFlag("tcp-idle-timeout", tcpIdleTimeout)
        flags.setFlag("tcp-max-connections", tcpMaxConnections)
        flags.setFlag("edns-buffer-size", ednsBufferSize)
        flags.setFlag("refuse-action", refuseAction)
        flags.setFlag("log-level", logLevel)
        flags.setFlag("rate-limit", rateLimit)
        flags.setFlag("rate-limit-burst", rateLimitBurst)
        flags.setFlag("rate-limit-action", rateLimitAction)
        flags.setFlag("rate-limit-ipv4-prefix", rateLimitIPv4Prefix)
        flags.setFlag("rate-limit-ipv6-prefix", rateLimitIPv6Prefix)
        flags.setFlag("max-inflight", maxInflight)
        flags.setFlag("tcp-max-per-client", tcpMaxPerClient)
        flags.setFlag("tcp-max-queries", tcpMaxQueries)
        flags.setFlag("upstream-strategy", upstreamStrategy)
        flags.setFlag("upstream-deadline", upstreamDeadline)
        flags.setFlag("metrics-listen", metricsListen)
        // Either way when given: --no-serve-stale turns off a file's serve-stale: true.
        flags.setFlag("syslog", syslog.map { "\($0)" })
        flags.setFlag("serve-stale", serveStale.map { "\($0)" })
        flags.setFlag("forward-ecs", forwardECS.map { "\($0)" })
        flags.setFlag("trust-ecs-from", trustECSFrom)
        flags.setFlag("cache-size", cacheSize)
        flags.setFlag("cache-min-ttl", cacheMinTTL)
        flags.setFlag("cache-max-ttl", cacheMaxTTL)
        flags.setFlag("syslog-server", syslogServer)
        flags.setFlag("syslog-protocol", syslogProtocol)
        flags.setFlag("query-history", queryHistory)
        if noQueryHistory { flags.setFlag("no-query-history", "true") }
        flags.setFlag("history-retention", historyRetention)
        flags.setFlag("user", user)
        flags.setFlag("group", group)
        guard let config else { return flags }
        return try Settings.load(yamlFile: config).overridden(by: flags)
    }

    func configuration() throws -> (ServerConfiguration, Settings) {
        let settings = try settings()
        return (try settings.configuration(defaultBlocklistDirectory: DefaultPaths.blocklistDirectory()), settings)
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer DNS on the listen addresses until SIGTERM or SIGINT.",
        discussion: "SIGHUP reopens the block log (for logrotate) and re-reads every list. List files are also watched and reloaded within a second of a change."
    )

    @OptionGroup var options: ServeOptions

    func validate() throws {
        Signals.block()
        do { _ = try options.configuration() } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        Signals.block()   // before any thread starts, so that every thread inherits the mask
        var (configuration, settings) = try options.configuration()
        let level = Logger.Level(rawValue: settings.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = OperationalLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sinkhole")
        let openFiles = OpenFilesLimit.raise().after
        let fitting = configuration.tcpConnectionsFitting(openFiles: openFiles)
        if fitting < configuration.tcpMaxConnections {
            logger.warning("open-files-limit leaves room for fewer TCP connections than --tcp-max-connections: lowered, so that upstream sockets and files can still be opened (raise LimitNOFILE)", metadata: [
                "open_files_limit": "\(openFiles)", "tcp.max_connections": "\(configuration.tcpMaxConnections)", "lowered_to": "\(fitting)",
            ])
            configuration.tcpMaxConnections = fitting
        }
        var summary = configuration.summary.mapValues { Logger.MetadataValue.string($0) }
        summary["version"] = .string(SinkholeVersion.string)
        summary["open-files-limit"] = .string("\(openFiles)")
        logger.info("starting", metadata: summary)
        if let problem = ResolvConf.hostAddressProblem(listen: configuration.listen) { logger.warning("\(problem)") }

        let server: SinkholeServer
        do {
            server = try SinkholeServer(configuration: configuration, logger: logger)
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)\(Privileges.hint(for: error).map { "; \($0)" } ?? "")")
            throw ExitCode(1)
        }
        Signals.serve(server, logger: logger)
    }
}
