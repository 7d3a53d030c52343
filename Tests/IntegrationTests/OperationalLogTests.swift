import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// The operational log (stderr) as an operator's terminal or journald receives it.
@Suite struct OperationalLogTests {
    /// A temporary directory with `lists/a.txt` blocking evil.example (the caller removes it).
    static func workDirectory(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/lists", withIntermediateDirectories: true)
        try "evil.example\n".write(toFile: dir + "/lists/a.txt", atomically: true, encoding: .utf8)
        return dir
    }

    /// serve on 127.0.0.1:0 with `dir`'s lists, no upstream to speak of and no history.
    static func serve(_ dir: String, _ more: [String] = [], launcher: [String] = []) -> SinkholeProcess {
        SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                                    "--blocklist-dir", dir + "/lists", "--no-query-history"] + more, launcher: launcher)
    }

    /// A feed's bad lines are reported as file:line and reason, with escape sequences written out
    /// and a huge line quoted in part; a start with nothing to block is a warning.
    @Test func feedTextCannotDriveTheTerminalOrFloodTheLog() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-oplog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let long = String(repeating: "z", count: 1_000_000) + " tail"
        try "good.example\n\u{1B}[31mRED\u{1B}[0m.example\n\(long)\n".write(to: dir.appendingPathComponent("feed.txt"), atomically: true, encoding: .utf8)
        let sinkhole = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                                                   "--blocklist-dir", dir.path])
        #expect(try sinkhole.start(), "\(sinkhole.stderr)")
        _ = sinkhole.stop()
        let log = sinkhole.stderr
        #expect(log.contains("feed.txt:2: character '\\x1b' is not allowed in a domain name: '\\x1b[31mRED\\x1b[0m.example'"), "\(log)")
        #expect(!log.unicodeScalars.contains { $0 == "\u{1B}" })
        #expect(log.contains("more bytes)'"))
        #expect(log.utf8.count < 20_000, "the log holds \(log.utf8.count) bytes for two bad lines")

        // An empty directory: the server answers, and says loudly that it blocks nothing.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let bare = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                                               "--blocklist-dir", empty.path])
        #expect(try bare.start(), "\(bare.stderr)")
        _ = bare.stop()
        #expect(bare.stderr.split(separator: "\n").contains { $0.contains("warning") && $0.contains("blocklists in force: no entry, nothing is blocked") },
                "\(bare.stderr)")
    }

    /// The block log reaches a file-size limit (as a full disk would stop it): blocked queries
    /// are still answered, the server is not killed (SIGXFSZ), the loss is said once and counted,
    /// the lines in the file stay whole JSON but for the one cut short, and after logrotate's
    /// move and SIGHUP the new file is written and the log says so.
    @Test func aBlockLogThatCannotBeWrittenLosesEventsButNotTheServer() throws {
        let dir = try OperationalLogTests.workDirectory("fsize")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/block.log"
        let s = OperationalLogTests.serve(dir, ["--block-log", log], launcher: ["/usr/bin/prlimit", "--fsize=8000", "--"])
        #expect(try s.start(), "\(s.stderr)")
        defer { _ = s.stop() }
        let server = SocketAddress(address: [127, 0, 0, 1], port: s.port)
        var answered = 0
        for i in 0..<60 where DNSTestClient.ask("host\(i).evil.example", server: server)?.rcode == Rcode.nxDomain {
            answered += 1
        }
        #expect(answered == 60, "every blocked query answered")
        #expect(s.waitForLog("cannot write to block log"), "\(s.stderr)")

        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.utf8.count <= 8000)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let whole = lines.dropLast().filter { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil }
        #expect(whole.count == lines.count - 1 && whole.count > 0, "every line but the cut one is JSON")

        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        kill(s.pid, SIGHUP)
        #expect(s.waitForLog("block log reopened"), "\(s.stderr)")
        #expect(DNSTestClient.ask("again.evil.example", server: server)?.rcode == Rcode.nxDomain)
        #expect(s.waitForLog("block log written again"), "\(s.stderr)")
        let fresh = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(fresh.count == 1 && fresh.first.map { $0.contains("again.evil.example") } == true, "\(fresh)")
        #expect(s.stderr.components(separatedBy: "cannot write to block log").count - 1 == 1, "said once")
        let lost = 60 - whole.count
        #expect(s.stderr.contains("events.lost=\(lost)") || s.stderr.contains("events.lost_total=\(lost)"), "\(s.stderr)")
        #expect(s.pid > 0 && kill(s.pid, 0) == 0, "the server is still running")

        // A server started later on the file with the cut line starts its first line on a new
        // line: the cut line stays the only bad one.
        let next = OperationalLogTests.serve(dir, ["--block-log", log + ".1"])
        #expect(try next.start(), "\(next.stderr)")
        #expect(DNSTestClient.ask("later.evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: next.port))?.rcode == Rcode.nxDomain)
        #expect(next.stop() == 0)
        let after = try String(contentsOfFile: log + ".1", encoding: .utf8).split(separator: "\n")
        let bad = after.filter { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) == nil }
        #expect(bad.count == 1 && after.last.map { $0.contains("later.evil.example") } == true, "\(bad.count) bad lines")
    }

    /// A block log at a file-size limit (EFBIG) with size rotation on is rotated, though the
    /// size it reached is below --block-log-max-size: a new file takes the events.
    @Test func aBlockLogAtAFileSizeLimitIsRotated() throws {
        let dir = try OperationalLogTests.workDirectory("efbig")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/block.log"
        let s = OperationalLogTests.serve(dir, ["--block-log", log, "--block-log-max-size", "1M"],
                                          launcher: ["/usr/bin/prlimit", "--fsize=8000", "--"])
        #expect(try s.start(), "\(s.stderr)")
        let server = SocketAddress(address: [127, 0, 0, 1], port: s.port)
        for i in 0..<40 { _ = DNSTestClient.ask("host\(i).evil.example", server: server) }
        #expect(s.waitForLog("block log rotated"), "\(s.stderr)")
        #expect(DNSTestClient.ask("fresh.evil.example", server: server)?.rcode == Rcode.nxDomain)
        #expect(s.stop() == 0, "a stop writes what is queued")
        #expect(s.stderr.contains("block log written again"), "\(s.stderr)")
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("fresh.evil.example"))
    }

    /// Signals sinkhole has no use for do not end it: a stray SIGUSR1/SIGUSR2, or SIGPIPE. It
    /// still answers, and stops on SIGTERM with status 0 (killed by one of them, the status
    /// would be 128 + that signal).
    @Test func signalsItHasNoUseForAreIgnored() throws {
        let dir = try OperationalLogTests.workDirectory("signals")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = OperationalLogTests.serve(dir)
        #expect(try s.start(), "\(s.stderr)")
        for sig in [SIGUSR1, SIGUSR2, SIGPIPE, SIGXFSZ] { kill(s.pid, sig) }
        #expect(DNSTestClient.ask("evil.example", server: SocketAddress(address: [127, 0, 0, 1], port: s.port))?.rcode == Rcode.nxDomain)
        #expect(s.stop() == 0, "\(s.stderr)")
    }
}
