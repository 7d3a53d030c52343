import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `sinkhole report` through the built binary, on a live, a rotated and a compressed block log.
@Suite struct ReportCommandTests {
    static func line(_ time: String, _ client: String, _ name: String, _ rule: String) -> String {
        #"{"@timestamp":"\#(time)","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"nxdomain","dataset":"sinkhole.block"},"source":{"ip":"\#(client)","port":56437},"network":{"transport":"udp","protocol":"dns"},"dns":{"type":"answer","id":4122,"question":{"name":"\#(name)","type":"A","class":"IN"},"response_code":"NXDOMAIN"},"rule":{"name":"\#(rule)","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"qname","rule_line":26,"ttl":60}}"#
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary with stdout and stderr captured in files (no pipe to fill, no timing).
    func run(_ args: [String], in dir: String) throws -> Result {
        let outPath = dir + "/stdout", errPath = dir + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: SinkholeProcess.binaryPath())
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = out
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        try out.close()
        try err.close()
        return Result(status: p.terminationStatus,
                      stdout: try String(contentsOfFile: outPath, encoding: .utf8),
                      stderr: try String(contentsOfFile: errPath, encoding: .utf8))
    }

    func logs() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-cmd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let live = [
            Self.line("2026-11-26T21:00:30.875Z", "10.20.31.7", "msstorageboxes.com", "msstorageboxes.com"),
            Self.line("2026-11-26T21:05:00.000Z", "10.20.31.9", "Update.SBMSA.wiki", "sbmsa.wiki"),
        ].joined(separator: "\n") + "\n" + #"{"@timestamp":"2026-11-26T21:06:00.000Z","ecs":{"ver"#
        try Data(live.utf8).write(to: URL(fileURLWithPath: dir + "/block.log"))
        let rotated = [
            Self.line("2026-11-25T08:00:00.000Z", "10.20.31.7", "sbmsa.wiki", "sbmsa.wiki"),
            "not json at all",
            Self.line("2026-11-25T09:00:00.000Z", "10.20.31.12", "notmsstorageboxes.com", "notmsstorageboxes.com"),
        ].joined(separator: "\n") + "\n"
        try Data(rotated.utf8).write(to: URL(fileURLWithPath: dir + "/block.log.1"))
        let old = Self.line("2026-11-24T07:00:00.000Z", "10.20.31.12", "www.msstorageboxes.com", "msstorageboxes.com") + "\n"
        try Data(old.utf8).write(to: URL(fileURLWithPath: dir + "/block.log.2"))
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["gzip", dir + "/block.log.2"]   // leaves block.log.2.gz, as logrotate does
        try gzip.run()
        gzip.waitUntilExit()
        #expect(gzip.terminationStatus == 0)
        return dir
    }

    @Test func answersWhichClientsTriedThePublishedDomainsAndWhenFirst() throws {
        let dir = try logs()
        let args = ["report", "--by", "client", "--domain", "msstorageboxes.com", "--domain", "sbmsa.wiki",
                    "block.log", "block.log.1", "block.log.2.gz"]
        let table = try run(args, in: dir)
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.hasPrefix("CLIENT       ATTEMPTS  DOMAINS  FIRST SEEN"), "\(table.stdout)")
        #expect(table.stderr == "report: skipped 2 malformed lines (block.log: 1, block.log.1: 1)\n")

        let json = try run(args + ["--format", "json"], in: dir)
        #expect(json.status == 0)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(rows.map { $0["client"] as? String } == ["10.20.31.7", "10.20.31.9", "10.20.31.12"])
        #expect(rows.map { $0["attempts"] as? Int } == [2, 1, 1])
        #expect(rows.map { $0["first_seen"] as? String } == ["2026-11-25T08:00:00.000Z", "2026-11-26T21:05:00.000Z", "2026-11-24T07:00:00.000Z"])
        #expect(rows.map { $0["last_seen"] as? String } == ["2026-11-26T21:00:30.875Z", "2026-11-26T21:05:00.000Z", "2026-11-24T07:00:00.000Z"])

        let csv = try run(["report", "--by", "domain", "--format", "csv", "--since", "2026-11-25", "--client", "10.20.31.0/24",
                           "--block-log", "block.log", "block.log.1"], in: dir)
        #expect(csv.status == 0)
        #expect(csv.stdout == "domain,attempts,clients,first_seen,last_seen,rule,list\r\n"
            + "msstorageboxes.com,1,1,2026-11-26T21:00:30.875Z,2026-11-26T21:00:30.875Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n"
            + "notmsstorageboxes.com,1,1,2026-11-25T09:00:00.000Z,2026-11-25T09:00:00.000Z,notmsstorageboxes.com,crowdstrike-3cx.txt\r\n"
            + "sbmsa.wiki,1,1,2026-11-25T08:00:00.000Z,2026-11-25T08:00:00.000Z,sbmsa.wiki,crowdstrike-3cx.txt\r\n"
            + "update.sbmsa.wiki,1,1,2026-11-26T21:05:00.000Z,2026-11-26T21:05:00.000Z,sbmsa.wiki,crowdstrike-3cx.txt\r\n")
    }

    @Test func missingFilesAndMissingArgumentsFail() throws {
        let dir = try logs()
        let missing = try run(["report", "block.log", "block.log.3.gz"], in: dir)
        #expect(missing.status == 1)
        #expect(missing.stdout.isEmpty)
        #expect(missing.stderr == "report: cannot read block.log.3.gz: No such file or directory\n")

        let none = try run(["report"], in: dir)
        #expect(none.status != 0)
        #expect(none.stderr.contains("give the block log files to read"), "\(none.stderr)")

        let badTime = try run(["report", "--since", "yesterday", "block.log"], in: dir)
        #expect(badTime.status != 0)
        #expect(badTime.stderr.contains("'yesterday' is not a time"), "\(badTime.stderr)")
    }
}
