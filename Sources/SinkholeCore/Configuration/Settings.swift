import Foundation
import Glibc
import Yams

/// A readable configuration problem: where (flag or file and key) and why.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The settings of `sinkhole serve` as raw text values keyed by flag name (`block-mode`,
/// `listen`, ...), from a YAML file (`--config`) and from flags. Flags override the file key by
/// key. `configuration()` validates everything and builds the `ServerConfiguration`; every
/// default lives there. Keeping one representation for both sources means a key in the file and
/// a flag can never mean different things.
public struct Settings: Sendable {
    /// Every key, and whether it takes several values (a list in YAML, a repeated flag).
    public static let keys: [String: Bool] = [
        "listen": true, "upstream": true, "forward-zone": true, "private-reverse": false, "allow": true, "deny": true,
        "blocklist-dir": false, "block-log": false, "block-mode": false, "sinkhole-ipv4": false,
        "sinkhole-ipv6": false, "block-ttl": false, "upstream-timeout": false, "tcp-idle-timeout": false,
        "tcp-max-connections": false, "edns-buffer-size": false, "log-level": false, "refuse-action": false,
        "rate-limit": false, "rate-limit-burst": false, "rate-limit-action": false, "max-inflight": false,
        "rate-limit-ipv4-prefix": false, "rate-limit-ipv6-prefix": false,
        "tcp-max-per-client": false, "tcp-max-queries": false, "upstream-strategy": false, "upstream-deadline": false,
        "user": false, "group": false, "metrics-listen": false, "block-log-max-size": false, "block-log-keep": false,
        "syslog": false, "syslog-server": false, "syslog-protocol": false,
        "cache-size": false, "cache-min-ttl": false, "cache-max-ttl": false, "serve-stale": false,
        "trust-ecs-from": true, "forward-ecs": false,
        "query-history": false, "no-query-history": false, "history-retention": false,
    ]

    public private(set) var values: [String: [String]] = [:]
    /// Where each value came from, for error messages: `--block-mode` or `sinkhole.yaml: block-mode`.
    public private(set) var origins: [String: String] = [:]
    /// The configuration file these settings were read from (nil: flags alone), which the files
    /// sinkhole writes must not be.
    public private(set) var file: String?

    public init() {}

    public mutating func set(_ key: String, _ value: [String], origin: String) {
        values[key] = value
        origins[key] = origin
    }

    /// Flags given on the command line (`nil` or empty means not given).
    public mutating func setFlag(_ key: String, _ value: String?) {
        if let value { set(key, [value], origin: "--\(key)") }
    }

    public mutating func setFlag(_ key: String, _ values: [String]) {
        if !values.isEmpty { set(key, values, origin: "--\(key)") }
    }

    /// This file's settings with `other`'s keys replacing them.
    public func overridden(by other: Settings) -> Settings {
        var out = self
        out.file = file ?? other.file
        for (key, value) in other.values { out.set(key, value, origin: other.origins[key] ?? key) }
        return out
    }

    /// Reads a YAML mapping of keys to scalars (or lists of scalars for repeatable keys).
    /// Unknown keys, nesting, and lists for single-valued keys are rejected with the key path.
    public static func load(yamlFile path: String) throws -> Settings {
        // The lists' whole-file reader: strerror's reason when it cannot (No such file or
        // directory, Permission denied, Is a directory).
        guard var bytes = BlocklistLoader.readFile(path, anyKind: true) else {
            throw ConfigurationError("\(path): cannot be read: \(String(cString: strerror(errno)))")
        }
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }   // a UTF-8 byte order mark
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError("\(path): cannot be read: not UTF-8 text")
        }
        var settings = try parse(yaml: text, file: (path as NSString).lastPathComponent)
        settings.file = path
        return settings
    }

    /// The first top-level key given twice in `text`, with the lines (1-based) of its first and
    /// second occurrence.
    static func repeatedKey(_ text: String) -> (key: String, first: Int, again: Int)? {
        var seen: [String: Int] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard let first = line.first, first.isLetter || first.isNumber, let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            guard key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { continue }
            if let earlier = seen[key] { return (key, earlier, index + 1) }
            seen[key] = index + 1
        }
        return nil
    }

    /// Whether a value in `text` is a bracketed IPv6 address without quotes (`- [::1]:53`).
    static func hasUnquotedIPv6(_ text: String) -> Bool {
        text.split(separator: "\n").contains { line in
            guard let open = line.firstIndex(of: "["), let close = line[open...].firstIndex(of: "]") else { return false }
            let before = line[..<open].last
            let inside = line[line.index(after: open)..<close]
            return before != "\"" && before != "'" && inside.contains(":")
                && inside.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
    }

    public static func parse(yaml text: String, file: String) throws -> Settings {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            // A key given twice: said as the others are, with its line and the first one's
            // (Yams's message was a dump of the file, pointing at the first).
            if let (key, first, again) = Settings.repeatedKey(text) {
                throw ConfigurationError("\(file):\(again): \(key): given twice (first on line \(first)); give it once (a list for a key that takes several values)")
            }
            // One the scan above does not see (quoted, or in a `{...}` mapping): YAML's word for
            // it, without its dump of the file.
            let said = "\(error)"
            if let keys = said.range(of: "duplicated key(s): "), let end = said[keys.upperBound...].firstIndex(of: "\n") {
                let named = said[keys.upperBound..<end].split(separator: ",")
                    .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " .'")) }.filter { !$0.isEmpty }.sorted()
                let key = named.first ?? "a key"
                throw ConfigurationError("\(file): \(key): given twice\(named.count > 1 ? " (and \(named.dropFirst().joined(separator: ", ")))" : ""); give it once (a list for a key that takes several values)")
            }
            // YAML reads an unquoted [::1]:53 as the start of a list: the usual first mistake.
            let hint = Settings.hasUnquotedIPv6(text) ? "\n(an IPv6 address in brackets must be quoted: \"[::1]:53\")" : ""
            throw ConfigurationError("\(file): not valid YAML: \(error)\(hint)")
        }
        var settings = Settings()
        guard let node else { return settings }   // empty file
        guard let mapping = node.mapping else { throw ConfigurationError("\(file): expected a mapping of settings at the top level") }
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.scalar?.string else { throw ConfigurationError("\(file): keys must be plain names") }
            let path = keyNode.mark.map { "\(file):\($0.line): \(key)" } ?? "\(file): \(key)"
            guard let repeatable = keys[key] else { throw unknownKey(key, file: file, line: keyNode.mark?.line) }
            if let scalar = valueNode.scalar {
                settings.set(key, [scalar.string], origin: path)
            } else if let sequence = valueNode.sequence {
                guard repeatable else { throw ConfigurationError("\(path): takes one value, not a list") }
                var items: [String] = []
                for (index, item) in sequence.enumerated() {
                    guard let scalar = item.scalar else { throw ConfigurationError("\(path)[\(index)]: expected a single value") }
                    items.append(scalar.string)
                }
                settings.set(key, items, origin: path)
            } else {
                throw ConfigurationError("\(path): expected a value\(repeatable ? " or a list of values" : "")")
            }
        }
        return settings
    }

    /// An unknown key with the line it is on and the known key it is nearest, if one is near:
    /// the whole list of ~40 keys on one line hid the one that was meant.
    static func unknownKey(_ key: String, file: String, line: Int?) -> ConfigurationError {
        let place = line.map { "\(file):\($0): \(key)" } ?? "\(file): \(key)"
        let near = Spelling.nearest(key, among: keys.keys)
        guard !near.isEmpty else {
            return ConfigurationError("\(place): unknown key (the keys are the long flags of `sinkhole serve --help` without the dashes)")
        }
        return ConfigurationError("\(place): unknown key; did you mean \(near.map { "'\($0)'" }.joined(separator: " or "))?")
    }

    func one(_ key: String) -> String? { values[key]?.last }
    func many(_ key: String) -> [String] { values[key] ?? [] }
    func origin(_ key: String) -> String { origins[key] ?? "--\(key)" }

    /// Validates every setting and builds the configuration. Each error names the flag or the
    /// file and key, the value and the fix.
    public func configuration(defaultBlocklistDirectory: String,
                              resolvConf: String = "/etc/resolv.conf") throws -> ServerConfiguration {
        func address(_ text: String, _ key: String, defaultPort: UInt16? = nil) throws -> SocketAddress {
            do { return try SocketAddress.parse(text, defaultPort: defaultPort) } catch {
                throw ConfigurationError("\(origin(key)) \(error)")
            }
        }
        // `whole`: the setting is kept in whole seconds (a TTL), so a fraction is refused rather
        // than cut off. `most`: the longest taken, for settings that become nanosecond or
        // millisecond counts (a timeout, a retention), where a huge value (`999999999999d`)
        // overflowed the conversion and crashed sinkhole. TTLs are bounded by their own checks.
        func duration(_ key: String, _ fallback: Double, positive: Bool = true, whole: Bool = false,
                      most: (seconds: Double, text: String)? = nil) throws -> Double {
            guard let text = one(key) else { return fallback }
            let examples = whole ? "e.g. 60, 60s, 5m, 1h" : "e.g. 2s, 500ms, 1m"
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("-"), DurationText.seconds(String(trimmed.dropFirst())) != nil {
                throw ConfigurationError("\(origin(key)) '\(text)': must be \(positive ? "more than 0" : "0 or more") (\(examples))")
            }
            guard let v = DurationText.seconds(text), !positive || v > 0 else {
                throw ConfigurationError("\(origin(key)) '\(text)': not a \(positive ? "positive " : "")duration (use \(examples))")
            }
            if let most, v > most.seconds {
                throw ConfigurationError("\(origin(key)) '\(text)': too large (at most \(most.text))")
            }
            guard !whole || v == v.rounded(.down) else {
                throw ConfigurationError("\(origin(key)) '\(text)': must be whole seconds, as TTLs are (\(examples))")
            }
            return v
        }
        func integer(_ key: String, _ fallback: Int, _ range: ClosedRange<Int>) throws -> Int {
            guard let text = one(key) else { return fallback }
            guard let v = Int(text), range.contains(v) else {
                throw ConfigurationError("\(origin(key)) '\(text)': must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return v
        }
        // An empty list (`listen: []`) was taken as the key left out, and so as its default:
        // refused where the default is something (addresses, resolvers, allowed clients), so
        // that `[]` never quietly means the opposite of none. `deny: []` and `trust-ecs-from: []`
        // mean what their default means, none, and are taken.
        for (key, fallback) in [("listen", "127.0.0.1:53 and [::1]:53"), ("upstream", "the nameservers of \(resolvConf)"),
                                ("allow", "loopback and the private ranges")] where values[key]?.isEmpty == true {
            throw ConfigurationError("\(origin(key)): an empty list; give at least one value, or leave the key out for the default (\(fallback))")
        }
        // An empty path or name (`block-log:` with no value, `--blocklist-dir ""`) is no file:
        // serve failed on it at start, after `check --config` had said OK.
        for (key, what) in [("blocklist-dir", "a directory path"), ("block-log", "a file path"),
                            ("user", "a user name"), ("group", "a group name")] where one(key)?.isEmpty == true {
            throw ConfigurationError("\(origin(key)): give \(what)")
        }
        let listen = try (many("listen").isEmpty ? ServerConfiguration.defaultListen : many("listen")).map { try address($0, "listen") }
        for (index, a) in listen.enumerated() {
            guard let b = listen[..<index].first(where: { Settings.conflict(a, $0) }) else { continue }
            if a == b {
                throw ConfigurationError("\(origin("listen")) '\(a)': given twice (each address is listened on once, over UDP and TCP)")
            }
            let (wildcard, other) = a.isUnspecified ? (a, b) : (b, a)
            throw ConfigurationError("\(origin("listen")) '\(other)' and '\(wildcard)': \(wildcard) already answers on every \(a.isIPv6 ? "IPv6" : "IPv4") address of the host on port \(a.port); give one or the other")
        }
        var upstreams = try many("upstream").map { try address($0, "upstream", defaultPort: 53) }
        if let zero = upstreams.first(where: { $0.port == 0 }) {
            throw ConfigurationError("\(origin("upstream")) \(zero): port 0 cannot be sent to")
        }
        if let unspecified = upstreams.first(where: { IPAddress.isUnspecified($0.address) }) {
            throw ConfigurationError("\(origin("upstream")) \(unspecified): not a usable upstream address (0.0.0.0 and :: are no resolver's address: Linux sends to this host itself)")
        }
        // This host's addresses: an upstream at one of them, on a wildcard listener's port, is us.
        let hostAddresses = listen.contains(where: \.isUnspecified) ? ResolvConf.hostAddresses() : []
        if upstreams.isEmpty {
            upstreams = ResolvConf.excludingSelf(ResolvConf.nameservers(path: resolvConf), listen: listen, hostAddresses: hostAddresses)
            if upstreams.isEmpty {
                throw ConfigurationError("no upstream: give --upstream ADDR[:PORT] (\(resolvConf) names none other than sinkhole itself)")
            }
        } else {
            for upstream in upstreams {
                guard let own = listen.first(where: { ResolvConf.reaches(upstream, $0, hostAddresses: hostAddresses) }) else { continue }
                throw ConfigurationError("\(origin("upstream")) \(upstream) names sinkhole's own listen address \(own): queries would loop")
            }
        }
        var zones: [ForwardZone] = []
        for text in many("forward-zone") {
            let zone: ForwardZone
            switch ForwardZone.parse(text) {
            case .success(let z): zone = z
            case .failure(let problem): throw ConfigurationError("\(origin("forward-zone")) \(problem)")
            }
            if zones.contains(where: { $0.name == zone.name }) {
                throw ConfigurationError("\(origin("forward-zone")) '\(text)': \(zone.zone) given twice (give all its upstreams in one, separated by commas)")
            }
            for upstream in zone.upstreams {
                guard let own = listen.first(where: { ResolvConf.reaches(upstream, $0, hostAddresses: hostAddresses) }) else { continue }
                throw ConfigurationError("\(origin("forward-zone")) '\(text)': \(upstream) names sinkhole's own listen address \(own): queries would loop")
            }
            zones.append(zone)
        }
        let modeText = one("block-mode") ?? "nxdomain"
        guard let mode = BlockMode(rawValue: modeText) else {
            throw ConfigurationError("\(origin("block-mode")) '\(modeText)': must be nxdomain or sinkhole")
        }
        let v4Text = one("sinkhole-ipv4") ?? "0.0.0.0"
        guard let v4 = IPAddress.parse(v4Text), v4.count == 4 else {
            throw ConfigurationError("\(origin("sinkhole-ipv4")) '\(v4Text)': not an IPv4 address")
        }
        let v6Text = one("sinkhole-ipv6") ?? "::"
        guard let v6 = IPAddress.parse(v6Text), v6.count == 16 else {
            throw ConfigurationError("\(origin("sinkhole-ipv6")) '\(v6Text)': not an IPv6 address")
        }
        let ttl = try duration("block-ttl", 60, positive: false, whole: true)
        guard ttl <= 604_800 else { throw ConfigurationError("\(origin("block-ttl")): at most 7 days") }
        let access: AccessPolicy
        do { access = try AccessPolicy(allow: many("allow"), deny: many("deny")) } catch {
            let key = many("allow").contains { (try? AccessPolicy.parse($0, allow: true)) == nil } ? "allow" : "deny"
            throw ConfigurationError("\(origin(key)) \(error)")
        }
        let refuseText = one("refuse-action") ?? "refuse"
        guard let refuseAction = RefuseAction(rawValue: refuseText) else {
            throw ConfigurationError("\(origin("refuse-action")) '\(refuseText)': must be refuse or drop")
        }
        if let level = one("log-level"), !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) {
            throw ConfigurationError("\(origin("log-level")) '\(level)': use trace, debug, info, notice, warning, error or critical")
        }
        var configuration = ServerConfiguration(
            listen: listen, upstreams: upstreams,
            blocklistDirectory: one("blocklist-dir") ?? defaultBlocklistDirectory,
            blockLogPath: one("block-log"),
            blockPolicy: BlockPolicy(mode: mode, sinkholeIPv4: v4, sinkholeIPv6: v6, ttl: UInt32(ttl)),
            upstreamTimeout: try duration("upstream-timeout", 2, most: Settings.longestTimeout),
            tcpIdleTimeout: try duration("tcp-idle-timeout", 10, most: Settings.longestTimeout),
            tcpMaxConnections: try integer("tcp-max-connections", 256, 1...1_000_000),
            ednsPayloadSize: UInt16(try integer("edns-buffer-size", 1232, 512...4096)))
        configuration.access = access
        configuration.forwardZones = zones
        let privateText = one("private-reverse") ?? "auto"
        guard let privateReverse = PrivateReverseMode(rawValue: privateText) else {
            throw ConfigurationError("\(origin("private-reverse")) '\(privateText)': must be auto, local or forward")
        }
        configuration.privateReverse = privateReverse
        configuration.refuseAction = refuseAction
        configuration.rateLimit = Double(try integer("rate-limit", 0, 0...10_000_000))
        configuration.rateLimitBurst = Double(try integer("rate-limit-burst", Int(configuration.rateLimit * 2), 1...20_000_000))
        let rateActionText = one("rate-limit-action") ?? "truncate"
        guard let rateAction = RateLimitAction(rawValue: rateActionText) else {
            throw ConfigurationError("\(origin("rate-limit-action")) '\(rateActionText)': must be truncate or drop")
        }
        configuration.rateLimitAction = rateAction
        configuration.rateLimitIPv4Prefix = try integer("rate-limit-ipv4-prefix", 24, 8...32)
        configuration.rateLimitIPv6Prefix = try integer("rate-limit-ipv6-prefix", 56, 16...128)
        configuration.maxInFlight = try integer("max-inflight", 2048, 1...1_000_000)
        configuration.tcpMaxPerClient = try integer("tcp-max-per-client", 16, 1...1_000_000)
        configuration.tcpMaxQueries = try integer("tcp-max-queries", 1000, 1...100_000_000)
        let strategyText = one("upstream-strategy") ?? "first"
        guard let strategy = UpstreamStrategy(rawValue: strategyText) else {
            throw ConfigurationError("\(origin("upstream-strategy")) '\(strategyText)': must be first, random or fastest")
        }
        configuration.upstreamStrategy = strategy
        if one("upstream-deadline") != nil { configuration.upstreamDeadline = try duration("upstream-deadline", 0, most: Settings.longestTimeout) }
        if let text = one("block-log-max-size") {
            switch SizeText.bytes(text) {
            case .success(let bytes): configuration.blockLogRotation.maxSize = bytes
            case .failure(.notASize):
                throw ConfigurationError("\(origin("block-log-max-size")) '\(text)': not a size (use e.g. 100M, 1G, 500000)")
            case .failure(.tooLarge):
                throw ConfigurationError("\(origin("block-log-max-size")) '\(text)': too large (more bytes than a 64-bit count holds; use e.g. 100M, 1G)")
            }
        }
        configuration.blockLogRotation.keep = try integer("block-log-keep", 10, 1...1000)
        if let text = one("metrics-listen") {
            let metrics = try address(text, "metrics-listen")
            if let dns = listen.first(where: { Settings.conflict(metrics, $0) }) {
                throw ConfigurationError("\(origin("metrics-listen")) '\(metrics)': taken by the DNS listener on \(dns) (DNS listens on TCP too); give the metrics endpoint a port of its own")
            }
            configuration.metricsListen = metrics
        }
        func flag(_ key: String) throws -> Bool {
            switch one(key)?.lowercased() {
            case nil, "false", "no", "off": return false
            case "true", "yes", "on": return true
            case let other?: throw ConfigurationError("\(origin(key)) '\(other)': must be true or false (yes/no and on/off are read as those)")
            }
        }
        let syslogOn = try flag("syslog")
        configuration.cacheBytes = try integer("cache-size", 64, 0...65_536) << 20
        let cacheMinTTL = try duration("cache-min-ttl", 0, positive: false, whole: true)
        let cacheMaxTTL = min(604_800, try duration("cache-max-ttl", 86_400, whole: true))
        guard cacheMinTTL <= cacheMaxTTL else {
            throw ConfigurationError("\(origin("cache-min-ttl")) is above --cache-max-ttl (\(Int(cacheMaxTTL))s; at most 7 days)")
        }
        configuration.cacheMinTTL = UInt32(cacheMinTTL)
        configuration.cacheMaxTTL = UInt32(cacheMaxTTL)
        configuration.serveStale = try flag("serve-stale")
        configuration.forwardECS = try flag("forward-ecs")
        for cidr in many("trust-ecs-from") {
            do { _ = try AccessPolicy.parse(cidr, allow: true) } catch {
                throw ConfigurationError("\(origin("trust-ecs-from")) \(error)")
            }
        }
        configuration.trustECSFrom = many("trust-ecs-from")
        let protocolText = one("syslog-protocol") ?? "udp"
        guard protocolText == "udp" || protocolText == "tcp" else {
            throw ConfigurationError("\(origin("syslog-protocol")) '\(protocolText)': must be udp or tcp")
        }
        if one("syslog-protocol") != nil && one("syslog-server") == nil {
            throw ConfigurationError("\(origin("syslog-protocol")) needs --syslog-server (the local socket is always datagrams)")
        }
        // --no-syslog on the command line turns syslog off altogether, a collector the file
        // names too (it only skipped /dev/log, and the file's syslog-server still got every event).
        let syslogOffByFlag = origins["syslog"] == "--syslog" && !syslogOn && origins["syslog-server"] != "--syslog-server"
        if syslogOffByFlag {
            configuration.syslog = nil
        } else if let text = one("syslog-server") {
            let server = try address(text, "syslog-server", defaultPort: 514)
            configuration.syslog = protocolText == "tcp" ? .tcp(server) : .udp(server)
        } else if syslogOn {
            configuration.syslog = .local(path: "/dev/log")
        }
        if try !flag("no-query-history"), let path = one("query-history") {
            guard !path.isEmpty else { throw ConfigurationError("\(origin("query-history")): give a file path") }
            configuration.queryHistoryPath = path
        }
        configuration.historyRetention = try duration("history-retention", 30 * 86_400, most: (3650 * 86_400, "3650d, 10 years"))
        guard configuration.historyRetention >= 3600 else {
            throw ConfigurationError("\(origin("history-retention")): at least 1h (the history is kept per hour)")
        }
        configuration.user = one("user")
        configuration.group = one("group")
        // A file sinkhole writes must not sit in the list directory: every flush would be read
        // as a list change, and the file parsed as a list (the block log's JSON lines, each one a
        // bad line, or the history's SQLite pages).
        let lists = Settings.resolved(configuration.blocklistDirectory)
        for (key, path) in [("block-log", configuration.blockLogPath), ("query-history", configuration.queryHistoryPath)] {
            guard let path, Settings.resolved((path as NSString).deletingLastPathComponent.isEmpty
                                                  ? "." : (path as NSString).deletingLastPathComponent) == lists else { continue }
            throw ConfigurationError("\(origin(key)) '\(path)': in the blocklist directory, where every write would be read as a list change; put it elsewhere (e.g. /var/log/sinkhole, /var/lib/sinkhole)")
        }
        try sharedFiles(configuration)
        return configuration
    }

    /// The files sinkhole writes must be files of their own: the history (and the `-wal`, `-shm`
    /// and `-journal` files SQLite keeps beside it) named as the block log destroyed the log
    /// without a word, and either written over the configuration file destroys the settings.
    /// Paths are compared as they resolve (`..` and symbolic links in their directories), and
    /// files that exist by what they are (a hard link, a symbolic link to the other).
    func sharedFiles(_ configuration: ServerConfiguration) throws {
        func same(_ a: String, _ b: String) -> Bool {
            if Settings.resolvedFile(a) == Settings.resolvedFile(b) { return true }
            var sa = stat(), sb = stat()
            return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
        }
        let blockLog = configuration.blockLogPath
        if let history = configuration.queryHistoryPath {
            let key = origin("query-history")
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let name = history + suffix
                let what = suffix.isEmpty ? "" : ": its \(suffix) file \(name)"
                if let blockLog, same(name, blockLog) {
                    throw ConfigurationError("\(key) '\(history)'\(what) is the block log (\(origin("block-log")) '\(blockLog)'), which SQLite would write over; give each a file of its own")
                }
                if let file, same(name, file) {
                    throw ConfigurationError("\(key) '\(history)'\(what) is the configuration file \(file), which SQLite would write over; give the history a file of its own")
                }
            }
            // Size rotation renames the block log to <log>.1 and moves <log>.N.gz up by one.
            if let blockLog, configuration.blockLogRotation.maxSize > 0 {
                let log = Settings.resolvedFile(blockLog) + ".", named = Settings.resolvedFile(history)
                let rest = named.hasPrefix(log) ? named.dropFirst(log.count) : ""
                let number = rest.hasSuffix(".gz") ? rest.dropLast(3) : rest
                if !number.isEmpty, number.allSatisfy({ $0.isASCII && $0.isNumber }) {
                    throw ConfigurationError("\(key) '\(history)': a name the block log's rotation uses (\(origin("block-log-max-size"))), which would replace the history; give it a file of its own")
                }
            }
        }
        if let blockLog, let file, same(blockLog, file) {
            throw ConfigurationError("\(origin("block-log")) '\(blockLog)': is the configuration file \(file), which the block log would be appended to; give the block log a file of its own")
        }
    }

    /// A file path as it resolves: absolute, with `.`, `..` and symbolic links resolved in its
    /// directory as far as that exists. The file itself need not exist (serve creates it).
    static func resolvedFile(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return (resolved(directory.isEmpty ? "." : directory) as NSString).appendingPathComponent((path as NSString).lastPathComponent)
    }

    /// The longest timeout taken (upstream try, retry loop, TCP idle). Longer waits are no use
    /// to a DNS client, and a day keeps the default retry loop (the timeout × the number of
    /// upstreams) far inside the nanosecond clock it is counted on.
    static let longestTimeout = (seconds: 86_400.0, text: "1d")

    /// A directory path made absolute, with `.`, `..` and symbolic links resolved as far as they exist.
    static func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// Whether two sockets of one protocol on these addresses cannot both be bound: the same
    /// family and port (not 0, which the kernel picks afresh each time), and the same address
    /// or a wildcard (0.0.0.0, ::) on either side. IPv6 sockets are IPv6-only, so 0.0.0.0:53
    /// and [::]:53 do not conflict.
    static func conflict(_ a: SocketAddress, _ b: SocketAddress) -> Bool {
        guard a.port != 0, a.port == b.port, a.isIPv6 == b.isIPv6 else { return false }
        return a.ip == b.ip || a.isUnspecified || b.isUnspecified
    }

    /// What `serve` would meet opening the files it writes (the block log, the query history),
    /// found without creating them, for `sinkhole check --config`: one message per file that
    /// cannot be used, naming the flag or key.
    public func fileProblems(_ configuration: ServerConfiguration) -> [ConfigurationError] {
        var problems: [ConfigurationError] = []
        if let path = configuration.blockLogPath, let why = WritableFile.problem(path) {
            problems.append(ConfigurationError("\(origin("block-log")) '\(path)': \(why)"))
        }
        if let path = configuration.queryHistoryPath, let why = WritableFile.problem(path, readToo: true) {
            problems.append(ConfigurationError("\(origin("query-history")) '\(path)': \(why)"))
        }
        return problems
    }

    /// What `serve` would meet dropping privileges (`--user`, `--group`), looked up as serve
    /// looks them up, for `sinkhole check --config`: serve refuses to start on a user or group
    /// that does not exist, which check used to pass.
    public func identityProblems(_ configuration: ServerConfiguration) -> [ConfigurationError] {
        guard let user = configuration.user else { return [] }   // serve reads --group only with --user
        var problems: [ConfigurationError] = []
        if (try? Privileges.resolve(user: user, group: nil)) == nil {
            problems.append(ConfigurationError("\(origin("user")) '\(user)': no such user"))
        }
        if let group = configuration.group, getgrnam(group) == nil {
            problems.append(ConfigurationError("\(origin("group")) '\(group)': no such group"))
        }
        return problems
    }

    /// The operational log level (validated by `configuration()`).
    public var logLevel: String { one("log-level") ?? "info" }
}

/// Sizes as written in settings: `500000`, `64K`, `100M`, `1G` (powers of 1024).
public enum SizeText {
    /// Why a text is no size: not one at all, or more bytes than a 64-bit count holds
    /// (`99999999999999G` was multiplied unchecked, and the overflow trap crashed sinkhole).
    public enum Problem: Error, Equatable { case notASize, tooLarge }

    public static func bytes(_ text: String) -> Result<Int, Problem> {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int)] = [("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30)]
        var digits = Substring(t), factor = 1
        for (suffix, f) in units.reversed() where t.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            factor = f
            break
        }
        guard let v = Int(digits) else {
            // Digits alone that Int cannot hold are a size, only too large for one.
            return !digits.isEmpty && digits.allSatisfy({ $0.isASCII && $0.isNumber }) ? .failure(.tooLarge) : .failure(.notASize)
        }
        guard v >= 0 else { return .failure(.notASize) }
        let (bytes, overflow) = v.multipliedReportingOverflow(by: factor)
        return overflow ? .failure(.tooLarge) : .success(bytes)
    }
}
