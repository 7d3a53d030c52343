import ArgumentParser
import Dispatch
import Foundation
import Logging
import SinkholeCore

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer DNS on the listen addresses until SIGTERM or SIGINT.",
        discussion: "SIGHUP reopens the block log (for logrotate) and reloads the lists."
    )

    @Option(name: .customLong("listen"), help: ArgumentHelp("Address to answer on, UDP and TCP; repeatable. IPv6 in brackets.", valueName: "ADDR:PORT"))
    var listen: [String] = []

    @Option(name: .customLong("upstream"), help: ArgumentHelp("Upstream resolver, tried in the order given; repeatable. Default: the nameservers of /etc/resolv.conf (never sinkhole itself).", valueName: "ADDR[:PORT]"))
    var upstream: [String] = []

    @Option(name: .customLong("blocklist-dir"), help: ArgumentHelp("Directory of list files. Default: blocklists/ of the source checkout the binary was built in, else \(ServerConfiguration.installedBlocklistDirectory).", valueName: "DIR"))
    var blocklistDir: String?

    @Option(name: .customLong("block-log"), help: ArgumentHelp("Append one JSON line per blocked query to this file.", valueName: "FILE"))
    var blockLog: String?

    @Option(name: .customLong("block-mode"), help: ArgumentHelp("nxdomain: NXDOMAIN with an SOA. sinkhole: A/AAAA answered with the sinkhole addresses, other types NODATA.", valueName: "nxdomain|sinkhole"))
    var blockMode: String = "nxdomain"

    @Option(name: .customLong("sinkhole-ipv4"), help: ArgumentHelp("Address answered for blocked A queries in sinkhole mode.", valueName: "ADDR"))
    var sinkholeIPv4: String = "0.0.0.0"

    @Option(name: .customLong("sinkhole-ipv6"), help: ArgumentHelp("Address answered for blocked AAAA queries in sinkhole mode.", valueName: "ADDR"))
    var sinkholeIPv6: String = "::"

    @Option(name: .customLong("block-ttl"), help: ArgumentHelp("TTL of block answers and the SOA negative-caching TTL (e.g. 60, 60s, 5m).", valueName: "DURATION"))
    var blockTTL: String = "60s"

    @Option(name: .customLong("upstream-timeout"), help: ArgumentHelp("Time to wait for one upstream try before the next upstream (e.g. 2s, 500ms).", valueName: "DURATION"))
    var upstreamTimeout: String = "2s"

    @Option(name: .customLong("tcp-idle-timeout"), help: ArgumentHelp("Close a TCP client connection idle this long.", valueName: "DURATION"))
    var tcpIdleTimeout: String = "10s"

    @Option(name: .customLong("tcp-max-connections"), help: ArgumentHelp("Open TCP client connections at most, per listen address.", valueName: "N"))
    var tcpMaxConnections: Int = 256

    @Option(name: .customLong("edns-buffer-size"), help: ArgumentHelp("UDP payload size advertised in OPT records (512-4096).", valueName: "BYTES"))
    var ednsBufferSize: Int = 1232

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Operational log level on stderr: trace, debug, info, notice, warning, error, critical.", valueName: "LEVEL"))
    var logLevel: String = "info"

    func validate() throws {
        _ = try makeConfiguration()
    }

    /// Turns the flags into a validated configuration; every error names the flag and the fix.
    func makeConfiguration() throws -> ServerConfiguration {
        func address(_ text: String, flag: String, defaultPort: UInt16? = nil) throws -> SocketAddress {
            do { return try SocketAddress.parse(text, defaultPort: defaultPort) } catch {
                throw ValidationError("--\(flag) \(error)")
            }
        }
        func duration(_ text: String, flag: String) throws -> Double {
            guard let v = DurationText.seconds(text) else {
                throw ValidationError("--\(flag) '\(text)': not a duration (use e.g. 2s, 500ms, 1m)")
            }
            return v
        }
        let listenAddresses = try (listen.isEmpty ? ServerConfiguration.defaultListen : listen).map {
            try address($0, flag: "listen")
        }
        var upstreams = try upstream.map { try address($0, flag: "upstream", defaultPort: 53) }
        if let zero = upstreams.first(where: { $0.port == 0 }) {
            throw ValidationError("--upstream \(zero): port 0 cannot be sent to")
        }
        if upstreams.isEmpty {
            upstreams = ResolvConf.excludingSelf(ResolvConf.nameservers(), listen: listenAddresses)
            if upstreams.isEmpty {
                throw ValidationError("no upstream: give --upstream ADDR[:PORT] (/etc/resolv.conf names none other than sinkhole itself)")
            }
        } else if ResolvConf.excludingSelf(upstreams, listen: listenAddresses).count != upstreams.count {
            throw ValidationError("--upstream names sinkhole's own listen address: queries would loop")
        }
        guard let mode = BlockMode(rawValue: blockMode) else {
            throw ValidationError("--block-mode '\(blockMode)': must be nxdomain or sinkhole")
        }
        guard let v4 = IPAddress.parse(sinkholeIPv4), v4.count == 4 else {
            throw ValidationError("--sinkhole-ipv4 '\(sinkholeIPv4)': not an IPv4 address")
        }
        guard let v6 = IPAddress.parse(sinkholeIPv6), v6.count == 16 else {
            throw ValidationError("--sinkhole-ipv6 '\(sinkholeIPv6)': not an IPv6 address")
        }
        let ttl = try duration(blockTTL, flag: "block-ttl")
        guard ttl <= 604_800 else { throw ValidationError("--block-ttl '\(blockTTL)': at most 7 days") }
        let timeout = try duration(upstreamTimeout, flag: "upstream-timeout")
        guard timeout > 0 else { throw ValidationError("--upstream-timeout must be more than 0") }
        let idle = try duration(tcpIdleTimeout, flag: "tcp-idle-timeout")
        guard idle > 0 else { throw ValidationError("--tcp-idle-timeout must be more than 0") }
        guard tcpMaxConnections > 0 else { throw ValidationError("--tcp-max-connections must be at least 1") }
        guard (512...4096).contains(ednsBufferSize) else {
            throw ValidationError("--edns-buffer-size \(ednsBufferSize): must be from 512 to 4096")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)': use trace, debug, info, notice, warning, error or critical")
        }
        return ServerConfiguration(
            listen: listenAddresses, upstreams: upstreams,
            blocklistDirectory: blocklistDir ?? DefaultPaths.blocklistDirectory(),
            blockLogPath: blockLog,
            blockPolicy: BlockPolicy(mode: mode, sinkholeIPv4: v4, sinkholeIPv6: v6, ttl: UInt32(ttl)),
            upstreamTimeout: timeout, tcpIdleTimeout: idle, tcpMaxConnections: tcpMaxConnections,
            ednsPayloadSize: UInt16(ednsBufferSize))
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sinkhole")
        let configuration = try makeConfiguration()
        logger.info("starting", metadata: configuration.summary.mapValues { .string($0) })

        let server: SinkholeServer
        do {
            server = try SinkholeServer(configuration: configuration, logger: logger)
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        Signals.handle(server: server, logger: logger)
        dispatchMain()
    }
}
