import Foundation
import Testing
@testable import SinkholeCore

@Suite struct SettingsTests {
    func configuration(_ yaml: String, flags: Settings = Settings()) throws -> ServerConfiguration {
        try Settings.parse(yaml: yaml, file: "sinkhole.yaml").overridden(by: flags)
            .configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")
    }

    func error(_ yaml: String) -> String {
        do {
            _ = try configuration(yaml)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func everyKeyIsReadAndFlagsOverrideTheFile() throws {
        let yaml = """
        # sample
        listen: ["127.0.0.1:5300", "[::1]:5300"]
        upstream:
          - 192.0.2.53
          - "[2001:db8::53]:5353"
        blocklist-dir: /srv/lists
        block-log: /var/log/sinkhole/block.log
        block-mode: sinkhole
        sinkhole-ipv4: 192.0.2.1
        sinkhole-ipv6: 2001:db8::1
        block-ttl: 5m
        upstream-timeout: 500ms
        tcp-idle-timeout: 3s
        tcp-max-connections: 64
        edns-buffer-size: 1400
        allow: [10.0.0.0/8]
        deny: [10.9.0.0/16]
        refuse-action: drop
        log-level: warning
        """
        let c = try configuration(yaml)
        #expect(c.listen.map(\.description) == ["127.0.0.1:5300", "[::1]:5300"])
        #expect(c.upstreams.map(\.description) == ["192.0.2.53:53", "[2001:db8::53]:5353"])
        #expect(c.blocklistDirectory == "/srv/lists")
        #expect(c.blockLogPath == "/var/log/sinkhole/block.log")
        #expect(c.blockPolicy.mode == .sinkhole)
        #expect(c.blockPolicy.sinkholeIPv4 == [192, 0, 2, 1])
        #expect(c.blockPolicy.ttl == 300)
        #expect(c.upstreamTimeout == 0.5)
        #expect(c.tcpIdleTimeout == 3)
        #expect(c.tcpMaxConnections == 64)
        #expect(c.ednsPayloadSize == 1400)
        #expect(c.refuseAction == .drop)
        #expect(c.access.allows([10, 1, 2, 3]))
        #expect(!c.access.allows([10, 9, 2, 3]))
        #expect(!c.access.allows([127, 0, 0, 1]), "an allow list replaces the default")

        var flags = Settings()
        flags.setFlag("block-mode", "nxdomain")
        flags.setFlag("listen", ["127.0.0.1:5400"])
        let overridden = try configuration(yaml, flags: flags)
        #expect(overridden.blockPolicy.mode == .nxdomain)
        #expect(overridden.listen.map(\.description) == ["127.0.0.1:5400"])
        #expect(overridden.blocklistDirectory == "/srv/lists")
    }

    /// From a failure-mode trial: under an open-files limit of 64, TCP clients took every
    /// descriptor and forwarded queries failed (no upstream socket). The TCP cap is lowered to what
    /// the limit leaves after the upstream sockets, listeners and files.
    @Test func theTCPCapFitsTheOpenFilesLimit() throws {
        let c = ServerConfiguration(listen: [SocketAddress(address: [127, 0, 0, 1], port: 53)],
                                    upstreams: [SocketAddress(address: [192, 0, 2, 1], port: 53)], blocklistDirectory: "/tmp")
        // 64 + 32 × (2 cores × 1 upstream + 1) + 2 × 1 listener × 2 cores = 164 kept back.
        #expect(c.tcpConnectionsFitting(openFiles: 1024, cpus: 2) == 860)
        #expect(c.tcpConnectionsFitting(openFiles: 300, cpus: 2) == 136)
        #expect(c.tcpConnectionsFitting(openFiles: 64, cpus: 2) == 16, "never below 16")
        #expect(c.tcpConnectionsFitting(openFiles: 65_536, cpus: 2) > c.tcpMaxConnections, "the unit's limit leaves the default alone")
    }

    @Test func defaultsWhenTheFileIsEmpty() throws {
        let c = try configuration("upstream: 192.0.2.53\n")
        #expect(c.listen.map(\.description) == ["127.0.0.1:53", "[::1]:53"])
        #expect(c.blockPolicy.mode == .nxdomain && c.blockPolicy.ttl == 60)
        #expect(c.upstreamTimeout == 2 && c.tcpIdleTimeout == 10 && c.ednsPayloadSize == 1232)
        #expect(c.blocklistDirectory == "/lists")
        #expect(c.access.allows([192, 168, 1, 1]) && c.access.allows([127, 0, 0, 1]))
        #expect(!c.access.allows([203, 0, 113, 1]))
    }

    @Test func queryHistoryIsOnWhenNamedAndOffWithTheFlag() throws {
        let yaml = "upstream: 192.0.2.53\nquery-history: /var/lib/sinkhole/history.db\nhistory-retention: 7d\n"
        let on = try configuration(yaml)
        #expect(on.queryHistoryPath == "/var/lib/sinkhole/history.db")
        #expect(on.historyRetention == 7 * 86_400)
        #expect(try configuration("upstream: 192.0.2.53\n").queryHistoryPath == nil, "off unless named")
        #expect(try configuration("upstream: 192.0.2.53\n").historyRetention == 30 * 86_400)
        var flags = Settings()
        flags.setFlag("no-query-history", "true")
        #expect(try configuration(yaml, flags: flags).queryHistoryPath == nil, "--no-query-history wins over the file")
        #expect(error("upstream: 192.0.2.53\nhistory-retention: forever\n").hasPrefix("sinkhole.yaml:2: history-retention 'forever'"))
        #expect(error("upstream: 192.0.2.53\nhistory-retention: 10m\n") == "sinkhole.yaml:2: history-retention: at least 1h (the history is kept per hour)")
        #expect(error("upstream: 192.0.2.53\nquery-history: \"\"\n") == "sinkhole.yaml:2: query-history: give a file path")
    }

    @Test func badFilesAreRejectedWithKeyPathAndReason() {
        #expect(error("upstream: 192.0.2.53\nblok-mode: sinkhole\n") == "sinkhole.yaml:2: blok-mode: unknown key; did you mean 'block-mode'?")
        #expect(error("upstream: 192.0.2.53\nblock-mode: refuse\n") == "sinkhole.yaml:2: block-mode 'refuse': must be nxdomain or sinkhole")
        #expect(error("upstream: 192.0.2.53\nblock-mode: [nxdomain]\n") == "sinkhole.yaml:2: block-mode: takes one value, not a list")
        #expect(error("upstream: [192.0.2.53, {a: 1}]\n") == "sinkhole.yaml:1: upstream[1]: expected a single value")
        #expect(error("upstream: 192.0.2.53\nlisten: localhost:53\n").hasPrefix("sinkhole.yaml:2: listen 'localhost:53'"))
        #expect(error("upstream: 192.0.2.53\nmetrics-listen: localhost:9353\n").hasSuffix("(use e.g. 127.0.0.1:9353 or [::1]:9353)"))
        #expect(error("listen:\n  - [::1]:53\n").hasSuffix("(an IPv6 address in brackets must be quoted: \"[::1]:53\")"))
        #expect(error("listen: [::1]:53\n").hasSuffix("(an IPv6 address in brackets must be quoted: \"[::1]:53\")"))
        #expect(!error("listen: [127.0.0.1:53, 10.0.0.1:53\n").contains("IPv6"), "a broken list of IPv4 addresses gets no IPv6 hint")
        #expect(error("upstream: 192.0.2.53\nsyslog: maybe\n") == "sinkhole.yaml:2: syslog 'maybe': must be true or false (yes/no and on/off are read as those)")
        #expect(error("upstream: 192.0.2.53\nupstream-timeout: soon\n").hasPrefix("sinkhole.yaml:2: upstream-timeout 'soon'"))
        #expect(error("upstream: 192.0.2.53\nedns-buffer-size: 100\n").contains("from 512 to 4096"))
        #expect(error("upstream: 192.0.2.53\nallow: [10.0.0.0/33]\n").hasPrefix("sinkhole.yaml:2: allow '10.0.0.0/33'"))
        #expect(error("- a\n- b\n") == "sinkhole.yaml: expected a mapping of settings at the top level")
        #expect(error("listen: [\n").hasPrefix("sinkhole.yaml: not valid YAML"))
        #expect(error("block-mode: nxdomain\n").hasPrefix("no upstream"))
    }

    /// An unknown key names the line and the key meant when one is near; the list of every key
    /// (44 of them on one line) is left to `serve --help`.
    @Test func unknownKeysSuggestTheNearestKnownKey() {
        #expect(error("upstream: 192.0.2.53\n\nrate-limt: 10\n") == "sinkhole.yaml:3: rate-limt: unknown key; did you mean 'rate-limit'?")
        #expect(error("block_mode: sinkhole\n") == "sinkhole.yaml:1: block_mode: unknown key; did you mean 'block-mode'?")
        #expect(error("Block_Log_Max_Size: 1M\n").hasSuffix("did you mean 'block-log-max-size'?"), "case and '_' are no edit")
        #expect(error("--listen: \"127.0.0.1:53\"\n").hasSuffix("did you mean 'listen'?"), "a flag written as a key")
        #expect(error("cache-m-ttl: 5\n").hasSuffix("did you mean 'cache-max-ttl' or 'cache-min-ttl'?"), "equally near: both")
        let far = error("upstream: 192.0.2.53\nresolver: 192.0.2.1\n")
        #expect(far == "sinkhole.yaml:2: resolver: unknown key (the keys are the long flags of `sinkhole serve --help` without the dashes)")
        #expect(!far.contains("block-log-keep"), "no list of every key")
        #expect(Spelling.distance("block-mod", "block-mode") == 1 && Spelling.distance("", "abc") == 3 && Spelling.distance("abc", "abc") == 0)
    }

    /// An empty list in the file was taken as the key left out, and so as its default: `listen: []`
    /// listened on loopback, `upstream: []` used resolv.conf, `allow: []` allowed the private ranges.
    @Test func emptyListsAreRefusedWhereTheDefaultIsSomething() throws {
        #expect(error("upstream: 192.0.2.53\nlisten: []\n")
                == "sinkhole.yaml:2: listen: an empty list; give at least one value, or leave the key out for the default (127.0.0.1:53 and [::1]:53)")
        #expect(error("upstream: []\n").hasPrefix("sinkhole.yaml:1: upstream: an empty list; give at least one value"))
        #expect(error("upstream: 192.0.2.53\nallow: []\n").hasPrefix("sinkhole.yaml:2: allow: an empty list"))
        // Where the default is none, an empty list says just that.
        let c = try configuration("upstream: 192.0.2.53\ndeny: []\ntrust-ecs-from: []\n")
        #expect(c.trustECSFrom.isEmpty && c.access.allows([192, 168, 1, 1]))
    }

    /// An empty path or name passed `check --config` and failed serve at start (or wrote nothing).
    @Test func emptyPathsAndNamesAreRefused() {
        #expect(error("upstream: 192.0.2.53\nblock-log:\n") == "sinkhole.yaml:2: block-log: give a file path")
        #expect(error("upstream: 192.0.2.53\nblock-log: \"\"\n") == "sinkhole.yaml:2: block-log: give a file path")
        #expect(error("upstream: 192.0.2.53\nblocklist-dir:\n") == "sinkhole.yaml:2: blocklist-dir: give a directory path")
        #expect(error("upstream: 192.0.2.53\nuser: ''\n") == "sinkhole.yaml:2: user: give a user name")
        #expect(error("upstream: 192.0.2.53\nuser: nobody\ngroup:\n") == "sinkhole.yaml:3: group: give a group name")
        var flags = Settings()
        flags.setFlag("blocklist-dir", "")
        do {
            _ = try configuration("upstream: 192.0.2.53\n", flags: flags)
            Issue.record("--blocklist-dir \"\" was taken")
        } catch {
            #expect("\(error)" == "--blocklist-dir: give a directory path")
        }
    }

    /// Sizes and durations past what their counters hold are refused as too large: the block log
    /// size was multiplied unchecked, and timeouts and the retention converted to nanoseconds and
    /// milliseconds unchecked, so `99999999999999G` or `999999999999999d` crashed sinkhole.
    @Test func sizesAndDurationsTooLargeAreRefusedNotOverflowed() throws {
        let base = "upstream: 192.0.2.53\n"
        #expect(error(base + "block-log-max-size: 99999999999999G\n")
                == "sinkhole.yaml:2: block-log-max-size '99999999999999G': too large (more bytes than a 64-bit count holds; use e.g. 100M, 1G)")
        #expect(error(base + "block-log-max-size: 99999999999999999999\n").contains("too large"), "more digits than an Int holds")
        #expect(error(base + "block-log-max-size: 8589934592G\n").contains("too large"), "2^33 GiB is 2^63 bytes, one past Int.max")
        #expect(try configuration(base + "block-log-max-size: 8589934591G\n").blockLogRotation.maxSize == 8_589_934_591 << 30)
        #expect(error(base + "block-log-max-size: 12Q\n").contains("not a size"))
        #expect(error(base + "block-log-max-size: -1M\n").contains("not a size"))
        #expect(try SizeText.bytes("64k").get() == 65_536)
        #expect(error(base + "upstream-timeout: 999999999999999d\n") == "sinkhole.yaml:2: upstream-timeout '999999999999999d': too large (at most 1d)")
        #expect(error(base + "upstream-deadline: 25h\n").hasSuffix("too large (at most 1d)"))
        #expect(error(base + "tcp-idle-timeout: 2d\n").hasSuffix("too large (at most 1d)"))
        #expect(error(base + "history-retention: 99999999999999999d\n").hasSuffix("too large (at most 3650d, 10 years)"))
        let digits = String(repeating: "9", count: 400)   // more than a Double holds: infinity
        #expect(error(base + "history-retention: \(digits)\n").hasSuffix("too large (at most 3650d, 10 years)"))
        #expect(error(base + "block-ttl: \(digits)\n") == "sinkhole.yaml:2: block-ttl: at most 7 days")
        #expect(error(base + "cache-min-ttl: \(digits)\n").hasPrefix("sinkhole.yaml:2: cache-min-ttl is above --cache-max-ttl"))
        let c = try configuration(base + "upstream-timeout: 1d\nupstream-deadline: 24h\ntcp-idle-timeout: 86400\nhistory-retention: 3650d\ncache-max-ttl: 3650d\n")
        #expect(c.upstreamTimeout == 86_400 && c.upstreamDeadline == 86_400 && c.historyRetention == 3650 * 86_400 && c.cacheMaxTTL == 604_800)
    }

    /// `block-log-max-size: 0` is the default written out: no size rotation (as Python's
    /// RotatingFileHandler reads maxBytes 0), not a rotation at every line.
    @Test func blockLogMaxSizeZeroIsNoRotation() throws {
        let c = try configuration("upstream: 192.0.2.53\nblock-log: /var/log/sinkhole/block.log\nblock-log-max-size: 0\n")
        #expect(c.blockLogRotation.maxSize == 0)
        #expect(c.summary["block-log-max-size"] == "(no rotation)")
        #expect(try configuration("upstream: 192.0.2.53\nblock-log-max-size: 1K\n").summary["block-log-max-size"] == "1024 bytes, keep 10")
    }

    /// The block log, the history and its SQLite companions, and the configuration file must be
    /// files of their own, compared as their paths resolve: the history in the block log's file
    /// destroyed the block log without a word.
    @Test func theBlockLogHistoryAndConfigFileMustBeFilesOfTheirOwn() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("same-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/logs/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = "upstream: 192.0.2.53\nblock-log: \(dir)/logs/block.log\n"
        #expect(error(base + "query-history: \(dir)/logs/block.log\n")
                == "sinkhole.yaml:3: query-history '\(dir)/logs/block.log' is the block log (sinkhole.yaml:2: block-log '\(dir)/logs/block.log'), which SQLite would write over; give each a file of its own")
        #expect(error(base + "query-history: \(dir)/logs/sub/../block.log\n").contains("is the block log"), "'..' resolved")
        #expect(error(base + "query-history: \(dir)/./logs//block.log\n").contains("is the block log"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/logs")
        #expect(error(base + "query-history: \(dir)/link/block.log\n").contains("is the block log"), "a symbolic link to the directory")
        for suffix in ["-wal", "-shm", "-journal"] {
            #expect(error("upstream: 192.0.2.53\nblock-log: \(dir)/logs/h.db\(suffix)\nquery-history: \(dir)/logs/h.db\n")
                    .hasPrefix("sinkhole.yaml:3: query-history '\(dir)/logs/h.db': its \(suffix) file \(dir)/logs/h.db\(suffix) is the block log"), "\(suffix)")
        }
        // Existing files are compared by what they are: a hard link is the same file.
        _ = FileManager.default.createFile(atPath: dir + "/logs/block.log", contents: Data())
        #expect(link(dir + "/logs/block.log", dir + "/history.db") == 0)
        #expect(error(base + "query-history: \(dir)/history.db\n").contains("is the block log"), "a hard link")
        // Size rotation renames the block log to block.log.1, block.log.2.gz, ...
        #expect(error(base + "block-log-max-size: 1M\nquery-history: \(dir)/logs/block.log.2.gz\n")
                == "sinkhole.yaml:4: query-history '\(dir)/logs/block.log.2.gz': a name the block log's rotation uses (sinkhole.yaml:3: block-log-max-size), which would replace the history; give it a file of its own")
        #expect(error(base + "block-log-max-size: 1M\nquery-history: \(dir)/logs/block.log.1\n").contains("rotation uses"))
        // Files of their own are fine, next to each other too.
        let ok = try configuration(base + "block-log-max-size: 1M\nquery-history: \(dir)/logs/block.log.db\n")
        #expect(ok.queryHistoryPath == "\(dir)/logs/block.log.db")

        // The configuration file itself, known when it was loaded from its path.
        let file = dir + "/sinkhole.yaml"
        func loaded(_ yaml: String) -> String {
            do {
                try yaml.write(toFile: file, atomically: true, encoding: .utf8)
                _ = try Settings.load(yamlFile: file).configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(loaded("upstream: 192.0.2.53\nblock-log: \(dir)/logs/../sinkhole.yaml\n")
                == "sinkhole.yaml:2: block-log '\(dir)/logs/../sinkhole.yaml': is the configuration file \(file), which the block log would be appended to; give the block log a file of its own")
        #expect(loaded("upstream: 192.0.2.53\nquery-history: \(file)\n").hasPrefix("sinkhole.yaml:2: query-history '\(file)' is the configuration file \(file)"))
        var flags = Settings()
        flags.setFlag("block-log", file)
        try "upstream: 192.0.2.53\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigurationError.self, "a flag naming the file the settings came from") {
            try Settings.load(yamlFile: file).overridden(by: flags).configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")
        }
        #expect(loaded("upstream: 192.0.2.53\nblock-log: \(dir)/logs/block.log\nquery-history: \(dir)/h.db\n") == "no error")
    }

    /// From an operator's trial: a key given twice was said with YAML's dump of the file,
    /// pointing at the first; a bad value had no line. Both now name file:line.
    @Test func aRepeatedKeyAndABadValueNameTheirLine() throws {
        #expect(error("upstream: 192.0.2.53\nrate-limit: 10\n# note\nrate-limit: 20\n")
                == "sinkhole.yaml:4: rate-limit: given twice (first on line 2); give it once (a list for a key that takes several values)")
        #expect(error("upstream: 192.0.2.53\n\nrate-limit: ten\n") == "sinkhole.yaml:3: rate-limit 'ten': must be a whole number from 0 to 10000000")
        #expect(error("upstream: 192.0.2.53\n\"rate-limit\": 10\nrate-limit: 20\n") == "sinkhole.yaml: rate-limit: given twice; give it once (a list for a key that takes several values)")
        #expect(error("upstream: 192.0.2.53\n\"rate-limit\": 10\nrate-limit: 20\n\"block-mode\": sinkhole\nblock-mode: nxdomain\n")
                == "sinkhole.yaml: block-mode: given twice (and rate-limit); give it once (a list for a key that takes several values)")
    }

    /// `check --config` looks the user and group up as serve does before dropping to them.
    @Test func aUserOrGroupThatDoesNotExistIsAProblem() throws {
        func problems(_ yaml: String) throws -> [String] {
            let settings = try Settings.parse(yaml: "upstream: 192.0.2.53\n" + yaml, file: "sinkhole.yaml")
            return settings.identityProblems(try settings.configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")).map(\.description)
        }
        #expect(try problems("user: nosuchuser-\(getpid())\n") == ["sinkhole.yaml:2: user 'nosuchuser-\(getpid())': no such user"])
        #expect(try problems("user: root\ngroup: nosuchgroup-\(getpid())\n") == ["sinkhole.yaml:3: group 'nosuchgroup-\(getpid())': no such group"])
        #expect(try problems("user: root\ngroup: root\n") == [])
        #expect(try problems("user: root\n") == [])
        #expect(try problems("") == [])
    }

    /// A bind refused for want of privilege says how to get it; other failures say nothing more.
    @Test func aPermissionDeniedBindSaysHowToGetThePrivilege() {
        let hint = Privileges.hint(for: SystemError("bind 127.0.0.1:53 (DNS over UDP)", EACCES))
        #expect(hint?.contains("start sinkhole as root with --user USER") == true, "\(hint ?? "nil")")
        #expect(hint?.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE") == true, "the way deploy/sinkhole.service does it")
        #expect(Privileges.hint(for: SystemError("bind 127.0.0.1:53 (DNS over UDP)", EADDRINUSE)) == nil)
        #expect(Privileges.hint(for: SystemError("socket", EACCES)) == nil)
        #expect(Privileges.hint(for: ConfigurationError("x")) == nil)
    }

    @Test func listenAddressesThatCannotAllBeBoundAreRefused() throws {
        // The same address twice: serve used to fail with a misleading "Address already in use".
        #expect(error("upstream: 192.0.2.53\nlisten: [\"127.0.0.1:5355\", \"127.0.0.1:5355\"]\n")
                == "sinkhole.yaml:2: listen '127.0.0.1:5355': given twice (each address is listened on once, over UDP and TCP)")
        #expect(error("upstream: 192.0.2.53\nlisten: [\"[::1]:5355\", \"[0:0::1]:5355\"]\n").hasPrefix("sinkhole.yaml:2: listen '[::1]:5355': given twice"))
        // A wildcard takes every address of its family on its port.
        #expect(error("upstream: 192.0.2.53\nlisten: [\"0.0.0.0:5355\", \"127.0.0.1:5355\"]\n")
                .hasPrefix("sinkhole.yaml:2: listen '127.0.0.1:5355' and '0.0.0.0:5355': 0.0.0.0:5355 already answers on every IPv4 address"))
        #expect(error("upstream: 192.0.2.53\nlisten: [\"[::1]:5355\", \"[::]:5355\"]\n").contains("every IPv6 address"))
        // What can be bound together stays accepted: other families, other ports, port 0.
        for ok in [#"["0.0.0.0:5355", "[::]:5355"]"#, #"["127.0.0.1:5355", "127.0.0.1:5356"]"#,
                   #"["127.0.0.1:0", "127.0.0.1:0"]"#, #"["127.0.0.1:5355", "127.0.0.2:5355"]"#] {
            #expect(try configuration("upstream: 192.0.2.53\nlisten: \(ok)\n").listen.count == 2, "\(ok)")
        }
    }

    @Test func metricsOnADNSListenAddressIsRefused() throws {
        let base = "upstream: 192.0.2.53\nlisten: [\"127.0.0.1:5355\", \"[::1]:5355\"]\n"
        #expect(error(base + "metrics-listen: \"127.0.0.1:5355\"\n")
                == "sinkhole.yaml:3: metrics-listen '127.0.0.1:5355': taken by the DNS listener on 127.0.0.1:5355 (DNS listens on TCP too); give the metrics endpoint a port of its own")
        #expect(error(base + "metrics-listen: \"0.0.0.0:5355\"\n").contains("taken by the DNS listener on 127.0.0.1:5355"))
        #expect(try configuration(base + "metrics-listen: \"127.0.0.1:9353\"\n").metricsListen?.port == 9353)
        #expect(try configuration("upstream: 192.0.2.53\nlisten: \"127.0.0.1:5355\"\nmetrics-listen: \"[::]:5355\"\n").metricsListen != nil,
                "an IPv6 wildcard does not take IPv4 addresses")
    }

    @Test func upstreamsThatReachSinkholeItselfAreRefused() throws {
        // 0.0.0.0 and :: name no resolver: Linux delivers them to this host, here sinkhole itself.
        #expect(error("listen: \"127.0.0.1:5361\"\nupstream: \"0.0.0.0:5361\"\n")
                == "sinkhole.yaml:2: upstream 0.0.0.0:5361: not a usable upstream address (0.0.0.0 and :: are no resolver's address: Linux sends to this host itself)")
        #expect(error("upstream: \"[::]:5361\"\n").contains("[::]:5361: not a usable upstream address"))
        #expect(error("upstream: \"::\"\n").contains("[::]:53: not a usable upstream address"))
        #expect(error("upstream: \"::ffff:0.0.0.0\"\n").contains("not a usable upstream address"))
        // An IPv4-mapped address is the IPv4 address.
        #expect(error("listen: \"127.0.0.1:5361\"\nupstream: \"[::ffff:127.0.0.1]:5361\"\n")
                == "sinkhole.yaml:2: upstream [::ffff:127.0.0.1]:5361 names sinkhole's own listen address 127.0.0.1:5361: queries would loop")
        #expect(error("listen: \"0.0.0.0:53\"\nupstream: \"::ffff:127.0.0.2\"\n").contains("queries would loop"))
        #expect(error("listen: \"127.0.0.1:5361\"\nupstream: \"127.0.0.1:5361\"\n").contains("own listen address 127.0.0.1:5361"))
        #expect(try configuration("listen: \"127.0.0.1:5361\"\nupstream: \"[::ffff:192.0.2.53]:5361\"\n").upstreams.count == 1)
    }

    @Test func fractionalSecondsAreRefusedWhereWholeSecondsAreKept() throws {
        let base = "upstream: 192.0.2.53\n"
        // These are kept in whole seconds (TTLs); 1.5s used to become 1 s without a word.
        #expect(error(base + "block-ttl: 1.5s\n")
                == "sinkhole.yaml:2: block-ttl '1.5s': must be whole seconds, as TTLs are (e.g. 60, 60s, 5m, 1h)")
        #expect(error(base + "block-ttl: 500ms\n").contains("must be whole seconds"))
        #expect(error(base + "cache-min-ttl: 0.5\n").hasPrefix("sinkhole.yaml:2: cache-min-ttl '0.5': must be whole seconds"))
        #expect(error(base + "cache-max-ttl: 1500ms\n").hasPrefix("sinkhole.yaml:2: cache-max-ttl '1500ms': must be whole seconds"))
        // A whole number of seconds however written is fine.
        #expect(try configuration(base + "block-ttl: 1.5m\n").blockPolicy.ttl == 90)
        #expect(try configuration(base + "block-ttl: 2000ms\n").blockPolicy.ttl == 2)
        #expect(try configuration(base + "cache-min-ttl: 30s\ncache-max-ttl: 1h\n").cacheMaxTTL == 3600)
        // Durations kept as fractions still take them, as documented (500ms).
        let c = try configuration(base + "upstream-timeout: 500ms\ntcp-idle-timeout: 1.5s\nupstream-deadline: 2500ms\nhistory-retention: 1.5h\n")
        #expect(c.upstreamTimeout == 0.5 && c.tcpIdleTimeout == 1.5 && c.upstreamDeadline == 2.5 && c.historyRetention == 5400)
    }

    /// A minimum above the most the cache keeps is refused before it is converted to a TTL
    /// (above 2^32 s the conversion trapped: sinkhole crashed on `--cache-min-ttl 1e10`).
    @Test func cacheMinTTLAboveTheMaximumIsRefusedNotConverted() {
        #expect(error("upstream: 192.0.2.53\ncache-min-ttl: 10000000000\n") == "sinkhole.yaml:2: cache-min-ttl is above --cache-max-ttl (86400s; at most 7 days)")
        #expect(error("upstream: 192.0.2.53\ncache-min-ttl: 1e10\n") == "sinkhole.yaml:2: cache-min-ttl '1e10': not a duration (use e.g. 60, 60s, 5m, 1h)")
        #expect(error("upstream: 192.0.2.53\ncache-min-ttl: 8d\ncache-max-ttl: 30d\n").hasSuffix("(604800s; at most 7 days)"))
    }

    @Test func negativeValuesSayWhatTheValueMustBe() {
        #expect(error("upstream: 192.0.2.53\nblock-ttl: -5\n") == "sinkhole.yaml:2: block-ttl '-5': must be 0 or more (e.g. 60, 60s, 5m, 1h)")
        #expect(error("upstream: 192.0.2.53\nupstream-timeout: -1s\n") == "sinkhole.yaml:2: upstream-timeout '-1s': must be more than 0 (e.g. 2s, 500ms, 1m)")
        #expect(error("upstream: 192.0.2.53\ntcp-max-connections: -5\n").contains("must be a whole number from 1 to"))
        #expect(error("upstream: 192.0.2.53\nblock-ttl: --listen\n").hasPrefix("sinkhole.yaml:2: block-ttl '--listen': not a duration"),
                "a flag taken as the value is not called negative")
    }

    /// The block log or the history in the list directory would be read as a list change at
    /// every write (and parsed as a list): refused, however the path is spelled.
    @Test func filesSinkholeWritesAreRefusedInTheListDirectory() throws {
        let inside = "sinkhole.yaml:3: block-log '/srv/lists/block.log': in the blocklist directory, where every write would be read as a list change; put it elsewhere (e.g. /var/log/sinkhole, /var/lib/sinkhole)"
        #expect(error("upstream: 192.0.2.53\nblocklist-dir: /srv/lists\nblock-log: /srv/lists/block.log\n") == inside)
        #expect(error("upstream: 192.0.2.53\nblocklist-dir: /srv/lists/\nblock-log: /srv/x/../lists/block.log\n").hasPrefix("sinkhole.yaml:3: block-log '/srv/x/../lists/block.log': in the blocklist directory"))
        #expect(error("upstream: 192.0.2.53\nblocklist-dir: /srv/lists\nquery-history: /srv/lists/h.db\n").hasPrefix("sinkhole.yaml:3: query-history '/srv/lists/h.db': in the blocklist directory"))
        #expect(try configuration("upstream: 192.0.2.53\nblocklist-dir: /srv/lists\nblock-log: /srv/lists/sub/block.log\nquery-history: /srv/h.db\n").blockLogPath == "/srv/lists/sub/block.log", "a subdirectory is not read")
    }

    @Test func rateLimitPrefixesAreReadAndBounded() throws {
        let c = try configuration("upstream: 192.0.2.53\nrate-limit: 10\nrate-limit-ipv4-prefix: 32\nrate-limit-ipv6-prefix: 64\n")
        #expect(c.rateLimitIPv4Prefix == 32 && c.rateLimitIPv6Prefix == 64)
        let d = try configuration("upstream: 192.0.2.53\n")
        #expect(d.rateLimitIPv4Prefix == 24 && d.rateLimitIPv6Prefix == 56)
        #expect(error("upstream: 192.0.2.53\nrate-limit-ipv4-prefix: 33\n")
                == "sinkhole.yaml:2: rate-limit-ipv4-prefix '33': must be a whole number from 8 to 32")
        #expect(error("upstream: 192.0.2.53\nrate-limit-ipv6-prefix: 8\n")
                == "sinkhole.yaml:2: rate-limit-ipv6-prefix '8': must be a whole number from 16 to 128")
    }

    @Test func rateLimitBurstOfZeroIsRefused() throws {
        #expect(error("upstream: 192.0.2.53\nrate-limit: 10\nrate-limit-burst: 0\n")
                == "sinkhole.yaml:3: rate-limit-burst '0': must be a whole number from 1 to 20000000")
        #expect(try configuration("upstream: 192.0.2.53\nrate-limit: 10\n").rateLimitBurst == 20, "the default is twice the rate")
        #expect(try configuration("upstream: 192.0.2.53\nrate-limit: 10\nrate-limit-burst: 1\n").rateLimitBurst == 1)
    }

    @Test func ipv6ListenWithoutBracketsSaysSo() {
        #expect(error("upstream: 192.0.2.53\nlisten: \"::1:5356\"\n")
                == "sinkhole.yaml:2: listen '::1:5356': an IPv6 address with a port needs brackets: [::1]:5356")
        #expect(error("upstream: 192.0.2.53\nmetrics-listen: \"fd00::53\"\n").hasSuffix("needs brackets: [fd00::53]:PORT"))
        #expect(error("upstream: 192.0.2.53\nlisten: \"127.0.0.1\"\n") == "sinkhole.yaml:2: listen '127.0.0.1': missing ':PORT'")
    }

    @Test func anUnreadableFileSaysWhy() throws {
        func loadError(_ path: String) -> String {
            do { _ = try Settings.load(yamlFile: path); return "no error" } catch { return "\(error)" }
        }
        #expect(loadError("/nonexistent/sinkhole.yaml") == "/nonexistent/sinkhole.yaml: cannot be read: No such file or directory")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("settings-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(loadError(dir) == "\(dir): cannot be read: Is a directory")
        _ = FileManager.default.createFile(atPath: dir + "/latin1.yaml", contents: Data([0x6C, 0x69, 0x73, 0x74, 0x65, 0x6E, 0x3A, 0x20, 0xE9, 0x0A]))
        #expect(loadError(dir + "/latin1.yaml") == "\(dir)/latin1.yaml: cannot be read: not UTF-8 text")
        try "upstream: 192.0.2.53\n".write(toFile: dir + "/ok.yaml", atomically: true, encoding: .utf8)
        #expect(try Settings.load(yamlFile: dir + "/ok.yaml").values["upstream"] == ["192.0.2.53"])
        _ = FileManager.default.createFile(atPath: dir + "/bom.yaml", contents: Data([0xEF, 0xBB, 0xBF] + Array("upstream: 192.0.2.53\n".utf8)))
        #expect(try Settings.load(yamlFile: dir + "/bom.yaml").values["upstream"] == ["192.0.2.53"], "a byte order mark is skipped")
        if geteuid() != 0 {   // root reads anything
            chmod(dir + "/ok.yaml", 0)
            #expect(loadError(dir + "/ok.yaml") == "\(dir)/ok.yaml: cannot be read: Permission denied")
        }
    }

    @Test func filesServeWritesAreCheckedWithoutCreatingThem() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("files-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func problems(_ yaml: String) throws -> [String] {
            let settings = try Settings.parse(yaml: "upstream: 192.0.2.53\n" + yaml, file: "sinkhole.yaml")
            let c = try settings.configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")
            return settings.fileProblems(c).map(\.description)
        }
        #expect(try problems("block-log: /nonexistent/x.log\n")
                == ["sinkhole.yaml:2: block-log '/nonexistent/x.log': directory /nonexistent does not exist"])
        #expect(try problems("query-history: \(dir)/missing/history.db\n")
                == ["sinkhole.yaml:2: query-history '\(dir)/missing/history.db': directory \(dir)/missing does not exist"])
        // Files that serve creates are fine, and checking them creates nothing.
        #expect(try problems("block-log: \(dir)/block.log\nquery-history: \(dir)/history.db\n") == [])
        #expect(!FileManager.default.fileExists(atPath: dir + "/block.log"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/history.db"))
        _ = FileManager.default.createFile(atPath: dir + "/block.log", contents: Data())
        #expect(try problems("block-log: \(dir)/block.log\n") == [])
        // What serve's open refuses: a directory, a symbolic link (O_NOFOLLOW), a file for a directory.
        #expect(try problems("block-log: \(dir)\n") == ["sinkhole.yaml:2: block-log '\(dir)': is a directory"])
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.log", withDestinationPath: dir + "/block.log")
        #expect(try problems("block-log: \(dir)/link.log\n").first?.contains("is a symbolic link") == true)
        #expect(try problems("block-log: \(dir)/block.log/x.log\n") == ["sinkhole.yaml:2: block-log '\(dir)/block.log/x.log': \(dir)/block.log is not a directory"])
        if geteuid() != 0 {   // root writes anywhere
            chmod(dir, 0o500)
            defer { chmod(dir, 0o700) }
            #expect(try problems("block-log: \(dir)/new.log\n").first?.contains("is not writable by uid") == true)
        }
    }

    @Test func accessPolicyLongestPrefixWinsAndDenyWinsTies() throws {
        let p = try AccessPolicy(allow: ["10.0.0.0/8", "10.1.2.3"], deny: ["10.1.0.0/16", "10.0.0.0/8"])
        #expect(!p.allows([10, 5, 5, 5]), "deny wins a tie")
        #expect(!p.allows([10, 1, 9, 9]))
        #expect(p.allows([10, 1, 2, 3]), "a /32 allow inside a denied /16")
        #expect(!p.allows(IPAddress.parse("2001:db8::1")!), "no rule: refused")
        let d = try AccessPolicy(allow: [], deny: [])
        for ok in ["127.0.0.1", "10.1.1.1", "172.31.0.1", "192.168.0.1", "100.64.0.1", "::1", "fd00::1", "fe80::1"] {
            #expect(d.allows(IPAddress.parse(ok)!), "\(ok)")
        }
        for no in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:10.0.0.1"] {
            #expect(!d.allows(IPAddress.parse(no)!), "\(no)")
        }
    }
}
