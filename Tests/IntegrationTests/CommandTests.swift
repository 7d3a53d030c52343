import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `sinkhole check` and `sinkhole explain` through the built binary.
@Suite struct CommandTests {
    func directory(_ files: [String: [UInt8]]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, bytes) in files { _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(bytes)) }
        return dir
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String) {
        let r = try runSinkhole(args)
        return (r.status, r.output)
    }

    @Test func checkReportsEntriesRejectedLinesAndUnusableFiles() throws {
        let good = try directory(["intel.txt": Array("evil.example\nexa mple.com\n0.0.0.0 a.example b.example\n".utf8)])
        let ok = try run(["check", good])
        #expect(ok.status == 0, "\(ok.out)")
        #expect(ok.out.contains("intel.txt: 3 entries (lines), 1 line rejected"), "\(ok.out)")
        #expect(ok.out.contains("intel.txt:2: unexpected text after the name: 'exa mple.com'"))

        let bad = try directory(["feed.txt": [0x1F, 0x8B, 0x08, 0]])
        let failed = try run(["check", bad, good + "/intel.txt"])
        #expect(failed.status == 1)
        #expect(failed.out.contains("feed.txt: UNUSABLE: not a text file"), "\(failed.out)")
        #expect(failed.out.contains("intel.txt: 3 entries"))

        let missing = try run(["check", "/nonexistent/list.txt"])
        #expect(missing.status == 1)
        #expect(missing.out.contains("no such file"))
    }

    /// A list saved under a name serve does not read (a backup suffix, a dot, a subdirectory)
    /// is named with the reason, so that an operator sees why it is not in force.
    @Test func checkNamesTheEntriesItDoesNotRead() throws {
        let dir = try directory([
            "intel.txt": Array("evil.example\n".utf8),
            "intel.txt.bak": Array("old.example\n".utf8),
            ".feed.txt": Array("hidden.example\n".utf8),
            "NOTES.md": Array("# notes\n".utf8),
        ])
        try FileManager.default.createDirectory(atPath: dir + "/more", withIntermediateDirectories: false)
        // A link whose target is gone (a ConfigMap key being removed): not a list, as before.
        #expect(symlink("missing.txt", dir + "/gone.txt") == 0)
        let r = try run(["check", dir])
        #expect(r.status == 0, "\(r.out)")
        #expect(r.out.contains("intel.txt: 1 entry (lines), 0 lines rejected"), "\(r.out)")
        #expect(r.out.contains("/intel.txt.bak: not read: an editor, backup or package file (.bak)"), "\(r.out)")
        #expect(r.out.contains("/.feed.txt: not read: hidden (its name starts with a dot)"), "\(r.out)")
        #expect(r.out.contains("/NOTES.md: not read: a note (.md)"), "\(r.out)")
        #expect(r.out.contains("/more: not read: a directory or a link to one (subdirectories are not read)"), "\(r.out)")
        #expect(r.out.contains("/gone.txt: not read: a link to nothing, or gone (stat failed)"), "\(r.out)")
        #expect(try BlocklistLoader.listFiles(in: dir) == [dir + "/intel.txt"], "serve reads the one list")
        #expect(r.out.contains("total: 1 entry, 0 unusable"), "\(r.out)")
    }

    @Test func checkOnTheShippedListsPasses() throws {
        let shipped = URL(fileURLWithPath: SinkholeProcess.binaryPath()).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("blocklists").path
        let r = try run(["check", shipped])
        #expect(r.status == 0, "\(r.out)")
        #expect(r.out.contains("crowdstrike-3cx.txt: 21 entries (lines), 0 lines rejected"), "\(r.out)")
    }

    @Test func explainNamesTheRuleFileAndLine() throws {
        let dir = try directory([
            "intel.txt": Array("# header\nevil.example\n".utf8),
            "more.hosts": Array("0.0.0.0 www.evil.example\n".utf8),
            "ours.allow": Array("good.evil.example\n".utf8),
            "feed.rpz": Array("$ORIGIN rpz.test.\n@ SOA ns. h. 1 2 3 4 5\nlocal.example A 192.0.2.7\n".utf8),
        ])
        let blocked = try run(["explain", "WWW.Evil.Example", "--blocklist-dir", dir])
        #expect(blocked.status == 0)
        #expect(blocked.out.contains("BLOCKED by rule 'www.evil.example' at more.hosts:1"), "the closest rule: \(blocked.out)")
        // The other lists that hold it (from a migration trial: only the deciding one was named).
        #expect(blocked.out.contains("\n  also blocked by rule 'evil.example' at intel.txt:2"), "\(blocked.out)")
        #expect(try run(["explain", "a.evil.example", "--blocklist-dir", dir]).out.contains("BLOCKED by rule 'evil.example' at intel.txt:2"))
        let allowed = try run(["explain", "x.good.evil.example", "--blocklist-dir", dir])
        #expect(allowed.status == 1)
        #expect(allowed.out.contains("ALLOWED by rule 'good.evil.example' at ours.allow:1"), "\(allowed.out)")
        #expect(allowed.out.contains("\n  also blocked (lifted by the allow above) by rule 'evil.example' at intel.txt:2"), "\(allowed.out)")
        let local = try run(["explain", "local.example", "--blocklist-dir", dir])
        #expect(local.out.contains("local data 192.0.2.7"), "\(local.out)")
        let unlisted = try run(["explain", "example.org", "--blocklist-dir", dir])
        #expect(unlisted.status == 1)
        #expect(unlisted.out.contains("not listed"))
        #expect(!unlisted.out.contains("note:"))
        // A file serve cannot use now (a failed update's error page): serve keeps its earlier
        // version, which explain cannot see; it says so rather than only "not listed".
        try "<html><body>502 Bad Gateway</body></html>\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        let failed = try run(["explain", "host1.feed.example", "--blocklist-dir", dir])
        #expect(failed.status == 1)
        #expect(failed.out.contains("note: feed.txt cannot be used as it is now (no valid entry"), "\(failed.out)")
        #expect(failed.out.contains("a running serve keeps its earlier version in force"), "\(failed.out)")
    }

    /// From a migration trial: an emptied list (how a Pi-hole user switches one off) is one that a
    /// running serve refuses, keeping its version in force; explain said "not listed" and check
    /// "0 entries" of names serve went on blocking. A custom.list of local records dropped in is
    /// said once, with its first line.
    @Test func emptiedListsAndLocalRecordsAreSaidByCheckAndExplain() throws {
        let dir = try directory([
            "pihole-domains.txt": Array("# emptied\n".utf8),
            "custom.list": Array("192.168.1.10 nas.home.lan\n192.168.1.20 printer.home.lan printer\n".utf8),
        ])
        let explained = try run(["explain", "doubleclick.net", "--blocklist-dir", dir])
        #expect(explained.status == 1)
        #expect(explained.out.contains("note: pihole-domains.txt has no entry now: a running serve that had a version with entries keeps that version in force"), "\(explained.out)")
        let checked = try run(["check", dir])
        #expect(checked.status == 0, "\(checked.out)")
        #expect(checked.out.contains("pihole-domains.txt: 0 entries (lines), 0 lines rejected\n  warning: no entry: it blocks nothing"), "\(checked.out)")
        #expect(checked.out.contains("custom.list: 2 entries (lines), 0 lines rejected\n  note: 2 lines with a real address"), "\(checked.out)")
        #expect(checked.out.contains("the first at custom.list:1: '192.168.1.10 nas.home.lan'"), "\(checked.out)")
        let local = try run(["explain", "nas.home.lan", "--blocklist-dir", dir])
        #expect(local.status == 0 && local.out.contains("BLOCKED by rule 'nas.home.lan' at custom.list:1"), "\(local.out)")
    }

    /// A FIFO in the list directory (a log pipe left there, say) is reported and does not hold
    /// up check or serve: opening one for reading waits for a writer, and reading it for data.
    @Test func aFIFOInTheListDirectoryIsRefusedNotWaitedOn() throws {
        let dir = try directory(["intel.txt": Array("evil.example\n".utf8)])
        #expect(mkfifo(dir + "/pipe.txt", 0o600) == 0)
        let checked = try run(["check", dir])
        #expect(checked.status == 1)
        #expect(checked.out.contains("pipe.txt: UNUSABLE: not a regular file (a FIFO, socket or device)"), "\(checked.out)")
        #expect(checked.out.contains("intel.txt: 1 entry"), "\(checked.out)")
        let s = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--blocklist-dir", dir])
        #expect(try s.start(), "\(s.stderr)")
        defer { _ = s.stop() }
        let r = DNSTestClient.ask("evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: s.port))
        #expect(r?.rcode == Rcode.nxDomain)
    }

    /// A list directory that is not there is named with the system's reason.
    @Test func aMissingListDirectoryIsSaidPlainly() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-\(UUID().uuidString)").path
        let r = try run(["explain", "evil.example", "--blocklist-dir", missing])
        #expect(r.status == 2)
        #expect(r.out.contains("cannot read blocklist directory \(missing): no such file or directory"), "\(r.out)")
    }

    /// An address is looked up among the IP indicators (which judge upstream answers), not
    /// taken for a name that no list holds.
    @Test func explainOfAnAddressNamesTheIndicator() throws {
        let dir = try directory([
            "c2.ips": Array("# C2\n203.0.113.66\n2001:db8:bad::/48\n".utf8),
            "intel.txt": Array("evil.example\n".utf8),
        ])
        let listed = try run(["explain", "203.0.113.66", "--blocklist-dir", dir])
        #expect(listed.status == 0)
        #expect(listed.out.contains("203.0.113.66: LISTED by rule '203.0.113.66/32' at c2.ips:2"), "\(listed.out)")
        let inRange = try run(["explain", "2001:db8:bad::7", "--blocklist-dir", dir])
        #expect(inRange.status == 0)
        #expect(inRange.out.contains("LISTED by rule '2001:db8:bad::/48' at c2.ips:3"), "\(inRange.out)")
        let other = try run(["explain", "203.0.113.67", "--blocklist-dir", dir])
        #expect(other.status == 1)
        #expect(other.out.contains("203.0.113.67: not listed"), "\(other.out)")
        let tooLong = try run(["explain", String(repeating: "a", count: 64) + ".example", "--blocklist-dir", dir])
        #expect(tooLong.status == 2)
        #expect(tooLong.out.contains("is not a domain name or an IP address: label of 64 bytes (at most 63)"), "\(tooLong.out)")
        let empty = try run(["explain", "bad..example", "--blocklist-dir", dir])
        #expect(empty.status == 2)
        #expect(empty.out.contains("'bad..example' is not a domain name or an IP address: empty label"), "\(empty.out)")
    }

    @Test func versionIsPrinted() throws {
        for args in [["--version"], ["serve", "--version"]] {
            let r = try run(args)
            #expect(r.status == 0)
            #expect(r.out == SinkholeVersion.string + "\n", "\(r.out)")
        }
    }

    /// A mistyped subcommand is named as one, with the nearest, instead of serve's usage.
    @Test func aMistypedSubcommandIsNamedAsOne() throws {
        let typo = try run(["chekc", "/dev/null"])
        #expect(typo.status == 64)
        #expect(typo.out.contains("unknown subcommand 'chekc'. Did you mean 'check'?"), "\(typo.out)")
        #expect(!typo.out.contains("sinkhole serve"), "\(typo.out)")
        let file = try run(["/etc/sinkhole/sinkhole.yaml"])
        #expect(file.status == 64)
        #expect(file.out.contains("To start with a configuration file: sinkhole serve --config /etc/sinkhole/sinkhole.yaml."), "\(file.out)")
        // What the check must leave alone: help in its forms, and serve's flags without 'serve'.
        let help = try run(["--help"])
        #expect(help.status == 0 && help.out.contains("SUBCOMMANDS:"), "\(help.out)")
        let serveHelp = try run(["help", "serve"])
        #expect(serveHelp.status == 0 && serveHelp.out.contains("--blocklist-dir"), "\(serveHelp.out)")
        let serveFlag = try run(["--block-ttl", "-5", "--upstream", "192.0.2.53"])
        #expect(serveFlag.status == 64 && serveFlag.out.contains("--block-ttl '-5': must be 0 or more"), "serve is the default: \(serveFlag.out)")
        let unrelated = try run(["frobnicate"])
        #expect(unrelated.status == 64)
        #expect(unrelated.out.contains("unknown subcommand 'frobnicate'. Subcommands: serve, check, explain, report, hunt"), "\(unrelated.out)")
    }
}

@Suite struct ConfigFileCommandTests {
    @Test func serveReadsTheConfigFileAndFlagsOverrideIt() throws {
        let upstream = try FakeUpstream()
        defer { upstream.stop() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/lists", withIntermediateDirectories: true)
        try "evil.example\n".write(toFile: dir + "/lists/intel.txt", atomically: true, encoding: .utf8)
        let yaml = """
        listen: ["127.0.0.1:0"]
        upstream: ["\(upstream.address)"]
        blocklist-dir: \(dir)/lists
        block-mode: sinkhole
        sinkhole-ipv4: 192.0.2.77
        """
        try yaml.write(toFile: dir + "/sinkhole.yaml", atomically: true, encoding: .utf8)
        let s = SinkholeProcess(arguments: ["serve", "--config", dir + "/sinkhole.yaml", "--block-ttl", "42s"])
        #expect(try s.start(), "\(s.stderr)")
        let r = try #require(DNSTestClient.ask("evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: s.port)))
        #expect(r.records(.answer).map(\.rdata) == [[192, 0, 2, 77]])
        #expect(r.records(.answer).first?.ttl == 42)
        #expect(s.stop() == 0)

        let check = try runProgramSeparately(SinkholeProcess.binaryPath(), ["check", "--config", dir + "/sinkhole.yaml"])
        let text = check.stdout
        #expect(check.status == 0, "\(text)")
        #expect(text.contains("sinkhole.yaml: OK") && text.contains("intel.txt: 1 entry"), "\(text)")

        try (yaml + "\nblock-mod: nxdomain\n").write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try SinkholeProcess.run(["serve", "--config", dir + "/bad.yaml"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("bad.yaml:6: block-mod: unknown key; did you mean 'block-mode'?"), "\(bad.stderr)")
    }
}

/// `sinkhole check --config` refuses what `serve` would refuse, with the same kind of message,
/// and serve's own start-up messages say what failed.
@Suite struct CheckConfigTests {
    func write(_ yaml: String) throws -> (dir: String, file: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chk-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/lists", withIntermediateDirectories: true)
        try "evil.example\n".write(toFile: dir + "/lists/intel.txt", atomically: true, encoding: .utf8)
        let file = dir + "/sinkhole.yaml"
        try ("upstream: 192.0.2.53\nblocklist-dir: \(dir)/lists\n" + yaml).write(toFile: file, atomically: true, encoding: .utf8)
        return (dir, file)
    }

    @Test func checkRefusesABlockLogOrHistoryServeCannotCreate() throws {
        let (dir, file) = try write("block-log: /nonexistent/x.log\nquery-history: /nonexistent/h.db\n")
        let r = try runSinkhole(["check", "--config", file])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("sinkhole.yaml:3: block-log '/nonexistent/x.log': directory /nonexistent does not exist"), "\(r.output)")
        #expect(r.output.contains("sinkhole.yaml:4: query-history '/nonexistent/h.db': directory /nonexistent does not exist"), "\(r.output)")
        #expect(!r.output.contains(": OK"), "\(r.output)")
        #expect(r.output.hasSuffix("sinkhole.yaml: NOT OK (see above)\n"), "\(r.output)")
        // The lists are checked in the same run: every problem at once.
        #expect(r.output.contains("intel.txt: 1 entry"), "\(r.output)")
        let both = dir + "/both.yaml"
        try "upstream: 192.0.2.53\nblock-log: /nonexistent/x.log\nblocklist-dir: /nonexistent/lists\n".write(toFile: both, atomically: true, encoding: .utf8)
        let twice = try runSinkhole(["check", "--config", both])
        #expect(twice.status == 1)
        #expect(twice.output.contains("block-log '/nonexistent/x.log': directory /nonexistent does not exist"), "\(twice.output)")
        #expect(twice.output.contains("/nonexistent/lists: UNUSABLE: no such file or directory"), "\(twice.output)")
        // A path serve would create is fine, and check does not create it.
        let (_, good) = try write("block-log: \(dir)/block.log\nquery-history: \(dir)/history.db\n")
        let ok = try runSinkhole(["check", "--config", good])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("sinkhole.yaml: OK") && ok.output.contains("intel.txt: 1 entry"), "\(ok.output)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/block.log") && !FileManager.default.fileExists(atPath: dir + "/history.db"))
    }

    @Test func checkAndServeRefuseListenAddressesThatCannotAllBeBound() throws {
        let (_, twice) = try write("listen: [\"127.0.0.1:5355\", \"127.0.0.1:5355\"]\n")
        let r = try runSinkhole(["check", "--config", twice])
        #expect(r.status == 1 && r.output.contains("listen '127.0.0.1:5355': given twice"), "\(r.output)")
        let serve = try SinkholeProcess.run(["serve", "--config", twice])
        #expect(serve.status == 64 && serve.stderr.contains("listen '127.0.0.1:5355': given twice"), "\(serve.stderr)")
        #expect(!serve.stderr.contains("Address already in use"), "\(serve.stderr)")

        let (_, metrics) = try write("listen: \"127.0.0.1:5355\"\nmetrics-listen: \"127.0.0.1:5355\"\n")
        let m = try runSinkhole(["check", "--config", metrics])
        #expect(m.status == 1 && m.output.contains("metrics-listen '127.0.0.1:5355': taken by the DNS listener on 127.0.0.1:5355"), "\(m.output)")
    }

    @Test func anUnreadableConfigFileSaysWhy() throws {
        let check = try runSinkhole(["check", "--config", "/nonexistent.yaml"])
        #expect(check.status == 1 && check.output.contains("/nonexistent.yaml: cannot be read: No such file or directory"), "\(check.output)")
        let serve = try SinkholeProcess.run(["serve", "--config", "/nonexistent.yaml"])
        #expect(serve.status == 64 && serve.stderr.contains("/nonexistent.yaml: cannot be read: No such file or directory"), "\(serve.stderr)")
    }

    @Test func negativeNumbersAreValuesTheValidationRefuses() throws {
        let ttl = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--listen", "127.0.0.1:0", "--block-ttl", "-5"])
        #expect(ttl.status == 64, "\(ttl.stderr)")
        #expect(ttl.stderr.contains("--block-ttl '-5': must be 0 or more"), "\(ttl.stderr)")
        let burst = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--listen", "127.0.0.1:0", "--rate-limit", "10", "--rate-limit-burst", "-1"])
        #expect(burst.stderr.contains("--rate-limit-burst '-1': must be a whole number from 1 to"), "\(burst.stderr)")
        let limit = try runSinkhole(["report", "--limit", "-1", "/dev/null"])
        #expect(limit.status == 64 && limit.output.contains("--limit must be at least 1"), "\(limit.output)")
        let window = try runSinkhole(["report", "--since", "1h", "--until", "2026-01-01", "/dev/null"])
        #expect(window.status == 64 && window.output.contains("--since 1h is not before --until 2026-01-01"), "\(window.output)")
        let errors = try runSinkhole(["check", "--max-errors", "-1", "/dev/null"])
        #expect(errors.status == 64 && errors.output.contains("--max-errors must be 0 or more"), "\(errors.output)")
    }

    /// A port already taken: the message names the socket that could not be bound.
    @Test func bindFailuresNameTheSocket() throws {
        let dir = try write("").dir
        let udp = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: 0), type: Int32(SOCK_DGRAM.rawValue))
        defer { close(udp) }
        let udpPort = try #require(SocketAddress.local(of: udp)).port
        let dns = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--blocklist-dir", dir + "/lists",
                                           "--listen", "127.0.0.1:\(udpPort)"])
        #expect(dns.status == 1)
        #expect(dns.stderr.contains("cannot start: bind 127.0.0.1:\(udpPort) (DNS over UDP): Address already in use"), "\(dns.stderr)")

        let tcp = try Socket.listening(SocketAddress(address: [127, 0, 0, 1], port: 0), backlog: 1)
        defer { close(tcp.fd) }
        let metrics = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--blocklist-dir", dir + "/lists",
                                               "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:\(tcp.address.port)"])
        #expect(metrics.status == 1)
        #expect(metrics.stderr.contains("bind 127.0.0.1:\(tcp.address.port) (metrics, HTTP over TCP): Address already in use"), "\(metrics.stderr)")
    }

    /// From an operator's trial: serve-stale, syslog and forward-ecs set to true in the file could
    /// not be turned off for one run (--serve-stale=false was refused). --no-... flags do.
    @Test func onOffKeysOfTheFileCanBeTurnedOffByFlags() throws {
        let (_, file) = try write("listen: \"127.0.0.1:0\"\nserve-stale: true\nforward-ecs: true\n")
        let on = SinkholeProcess(arguments: ["serve", "--config", file, "--no-query-history"])
        #expect(try on.start())
        #expect(on.waitForLog("serve-stale true") && on.waitForLog("forward-ecs=true"), "\(on.stderr)")
        #expect(on.stop() == 0)
        let off = SinkholeProcess(arguments: ["serve", "--config", file, "--no-query-history", "--no-serve-stale", "--no-forward-ecs", "--no-syslog"])
        #expect(try off.start())
        #expect(off.waitForLog("serve-stale false") && off.waitForLog("forward-ecs=false"), "\(off.stderr)")
        #expect(off.stop() == 0)
        // --no-syslog turns off a collector the file names too (a code review found it kept).
        let (_, withServer) = try write("listen: \"127.0.0.1:0\"\nsyslog: true\nsyslog-server: 127.0.0.1:5514\n")
        let kept = try runSinkhole(["check", "--config", withServer])
        #expect(kept.output.contains("syslog: udp://127.0.0.1:5514"), "\(kept.output)")
        let none = try runSinkhole(["check", "--config", withServer, "--no-syslog"])
        #expect(none.status == 0 && none.output.contains("syslog: (off)"), "\(none.output)")
    }

    /// From an operator's trial: check took no serve flags, so a systemd drop-in's ExecStart
    /// flags over the file could not be validated. check takes serve's options and validates
    /// the file overridden by them, as serve would run.
    @Test func checkValidatesTheFileWithServesFlagsOverIt() throws {
        let (_, file) = try write("listen: \"127.0.0.1:0\"\nserve-stale: true\n")
        let bad = try runSinkhole(["check", "--config", file, "--block-mode", "refuse"])
        #expect(bad.status == 1 && bad.output.contains("--block-mode 'refuse': must be nxdomain or sinkhole"), "\(bad.output)")
        let off = try runSinkhole(["check", "--config", file, "--no-serve-stale"])
        #expect(off.status == 0 && off.output.contains("serve-stale false"), "\(off.output)")
        let loop = try runSinkhole(["check", "--listen", "127.0.0.1:5399", "--upstream", "127.0.0.1:5399"])
        #expect(loop.status == 1 && loop.output.contains("queries would loop"), "flags alone are validated: \(loop.output)")
    }

    /// What serve refuses, check refuses too: empty paths, a user that does not exist, the
    /// history in the block log's file. Each used to pass `check --config` with OK.
    @Test func checkRefusesWhatServeRefuses() throws {
        for (yaml, message, serveStatus) in [
            ("block-log:\n", ": block-log: give a file path", Int32(64)),
            ("block-log: \"\"\n", ": block-log: give a file path", 64),
            ("listen: []\n", "sinkhole.yaml:3: listen: an empty list", 64),
            ("block-log-max-size: 99999999999999G\n", ": block-log-max-size '99999999999999G': too large", 64),
            ("user: nosuchuser\n", "user 'nosuchuser': no such user", 1),
        ] {
            let (_, file) = try write((yaml.hasPrefix("listen") ? "" : "listen: \"127.0.0.1:0\"\n") + yaml)
            let check = try runSinkhole(["check", "--config", file])
            #expect(check.status == 1 && check.output.contains(message), "\(yaml): \(check.output)")
            #expect(!check.output.contains(": OK"), "\(yaml): \(check.output)")
            let serve = try SinkholeProcess.run(["serve", "--config", file])
            #expect(serve.status == serveStatus, "\(yaml): \(serve.stderr)")
            #expect(serve.stderr.contains(serveStatus == 64 ? message : "no such user"), "\(yaml): \(serve.stderr)")
        }
        let dir = try write("").dir
        let file = dir + "/other.yaml"
        try "upstream: 192.0.2.53\nblocklist-dir:\n".write(toFile: file, atomically: true, encoding: .utf8)
        let noLists = try runSinkhole(["check", "--config", file])
        #expect(noLists.status == 1 && noLists.output.contains("other.yaml:2: blocklist-dir: give a directory path"), "\(noLists.output)")
        let noListsFlag = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--listen", "127.0.0.1:0", "--blocklist-dir", ""])
        #expect(noListsFlag.status == 64 && noListsFlag.stderr.contains("--blocklist-dir: give a directory path"), "\(noListsFlag.stderr)")
        try "upstream: 192.0.2.53\nblocklist-dir: \(dir)/lists\nblock-log: \(dir)/b.log\nquery-history: \(dir)/lists/../b.log\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let same = try runSinkhole(["check", "--config", file])
        #expect(same.status == 1 && same.output.contains("other.yaml:4: query-history '\(dir)/lists/../b.log' is the block log"), "\(same.output)")
        let serve = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--listen", "127.0.0.1:0", "--blocklist-dir", dir + "/lists",
                                             "--block-log", dir + "/h.db-shm", "--query-history", dir + "/h.db"])
        #expect(serve.status == 64 && serve.stderr.contains("--query-history '\(dir)/h.db': its -shm file \(dir)/h.db-shm is the block log"), "\(serve.stderr)")
        let huge = try SinkholeProcess.run(["serve", "--upstream", "192.0.2.53", "--listen", "127.0.0.1:0", "--block-log-max-size", "99999999999999G"])
        #expect(huge.status == 64 && huge.stderr.contains("--block-log-max-size '99999999999999G': too large"), "\(huge.stderr)")
    }

    /// A privileged port bound without the privilege: the error says how to get it. Run as an
    /// unprivileged user (through setpriv when the tests run as root).
    @Test func aPermissionDeniedBindSaysHowToGetThePrivilege() throws {
        let dir = try write("").dir
        _ = chmod(dir, 0o755)
        _ = chmod(dir + "/lists", 0o755)
        let serve = [SinkholeProcess.binaryPath(), "serve", "--upstream", "192.0.2.53", "--blocklist-dir", dir + "/lists", "--listen", "127.0.0.1:1"]
        let r: (status: Int32, output: String)
        if geteuid() != 0 {
            r = try runProgram(serve[0], Array(serve.dropFirst()), timeout: 30)
        } else {
            try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "setpriv runs serve as nobody")
            r = try runProgram("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups"] + serve, timeout: 30)
        }
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("cannot start: bind 127.0.0.1:1 (DNS over UDP): Permission denied; ports below 1024 need privileges: start sinkhole as root with --user USER"), "\(r.output)")
        #expect(r.output.contains("as deploy/sinkhole.service does (AmbientCapabilities=CAP_NET_BIND_SERVICE)"), "\(r.output)")
    }

    /// --syslog-server takes IP literals only: its help said HOST:PORT.
    @Test func syslogServerHelpSaysAnIPAddress() throws {
        let help = try runSinkhole(["serve", "--help"])
        #expect(help.status == 0 && help.output.contains("--syslog-server <IP[:PORT]>"), "\(help.output)")
        #expect(help.output.contains("an IP address, not a host name"), "\(help.output)")
        #expect(!help.output.contains("HOST:PORT"), "\(help.output)")
        let name = try SinkholeProcess.run(["serve", "--listen", "127.0.0.1:0", "--upstream", "192.0.2.53", "--syslog-server", "localhost:514"])
        #expect(name.status == 64 && name.stderr.contains("--syslog-server 'localhost:514': not an IPv4 or IPv6 address literal"), "\(name.stderr)")
    }

    @Test func serveRefusesAnUnspecifiedUpstream() throws {
        let r = try SinkholeProcess.run(["serve", "--listen", "127.0.0.1:0", "--upstream", "0.0.0.0:5361"])
        #expect(r.status == 64 && r.stderr.contains("--upstream 0.0.0.0:5361: not a usable upstream address"), "\(r.stderr)")
    }
}

@Suite struct DeploymentFileTests {
    @Test func systemdUnitVerifies() throws {
        let repo = URL(fileURLWithPath: SinkholeProcess.binaryPath()).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let r = try runProgram("/bin/sh", [repo.appendingPathComponent("deploy/verify.sh").path], timeout: 90)
        #expect(r.status == 0, "\(r.output)")
    }

    /// The unit runs serve with the sample file's installed path, and the paths that file names
    /// are ones the unit lets the service read (lists) and write (block log, history).
    @Test func theUnitReadsTheSampleConfigAndItsPathsAreTheUnitsDirectories() throws {
        let repo = URL(fileURLWithPath: SinkholeProcess.binaryPath()).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let unit = try String(contentsOf: repo.appendingPathComponent("deploy/sinkhole.service"), encoding: .utf8)
        let lines = unit.split(separator: "\n").map(String.init)
        let execStart = lines.filter { $0.hasPrefix("ExecStart=") }
        #expect(execStart == ["ExecStart=/usr/local/bin/sinkhole serve --config /etc/sinkhole/sinkhole.yaml"])
        func directory(_ key: String) -> String? {
            lines.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
        }
        #expect(directory("ConfigurationDirectory") == "sinkhole")
        #expect(directory("LogsDirectory") == "sinkhole")
        #expect(directory("StateDirectory") == "sinkhole")
        let settings = try Settings.load(yamlFile: repo.appendingPathComponent("deploy/sinkhole.yaml").path)
        let c = try settings.configuration(defaultBlocklistDirectory: "/nowhere")
        #expect(c.blocklistDirectory == "/etc/sinkhole/blocklists")
        #expect(c.blockLogPath?.hasPrefix("/var/log/sinkhole/") == true)
        #expect(c.queryHistoryPath?.hasPrefix("/var/lib/sinkhole/") == true)
    }

    @Test func sampleConfigIsValid() throws {
        let repo = URL(fileURLWithPath: SinkholeProcess.binaryPath()).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let settings = try Settings.load(yamlFile: repo.appendingPathComponent("deploy/sinkhole.yaml").path)
        _ = try settings.configuration(defaultBlocklistDirectory: "/etc/sinkhole/blocklists")
    }
}
