import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `sinkhole report` through the built binary, on a live, a rotated and a compressed block log.
@Suite struct ReportCommandTests {
    static func line(_ time: String, _ client: String, _ name: String, _ rule: String) -> String {
        #"{"@timestamp":"\#(time)","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"nxdomain","dataset":"sinkhole.block"},"source":{"ip":"\#(client)","port":56437},"network":{"transport":"udp","protocol":"dns"},"dns":{"type":"answer","id":4122,"question":{"name":"\#(name)","type":"A","class":"IN"},"response_code":"NXDOMAIN"},"rule":{"name":"\#(rule)","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"qname","rule_line":26,"ttl":60}}"#
    }

    /// A retro-hit as the retro-hunt writes it (docs/query-history.md): `client` resolved `name`
    /// before a list blocked it; `@timestamp` is when the hunt found it.
    static func retroHit(_ time: String, _ client: String, _ name: String) -> String {
        #"{"@timestamp":"\#(time)","ecs":{"version":"8.11.0"},"event":{"kind":"alert","category":"network","type":"info","action":"retro-hit","dataset":"sinkhole.block","start":"2026-11-28T09:14:03.120Z","end":"2026-11-30T17:40:51.007Z"},"source":{"ip":"\#(client)"},"network":{"protocol":"dns"},"dns":{"type":"query","question":{"name":"\#(name)","type":"A","class":"IN"}},"rule":{"name":"msstorageboxes.com","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"history","rule_line":26,"history":{"first_seen":"2026-11-28T09:14:03.120Z","last_seen":"2026-11-30T17:40:51.007Z","count":14,"types":["A","AAAA"]}}}"#
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary with stdout and stderr captured in files (no pipe to fill, no timing).
    func run(_ args: [String], in dir: String) throws -> Result {
        let r = try runProgramSeparately(SinkholeProcess.binaryPath(), args, directory: dir)
        return Result(status: r.status, stdout: r.stdout, stderr: r.stderr)
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
        // gzip leaves block.log.2.gz, as logrotate does.
        #expect(try runProgram("/usr/bin/env", ["gzip", dir + "/block.log.2"]).status == 0)
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

    /// Not counted as attempts, but listed apart: the machines that reached the names before
    /// the list blocked them are what the analyst must see first.
    @Test func retroHitsInTheBlockLogAreNotCountedAsAttemptsButListed() throws {
        // The list was added at 15:07:58: the retro-hunt wrote three clients that had resolved
        // its names before; one of them then tried again and was blocked at 15:10.
        let dir = try logs()
        let log = [
            Self.retroHit("2026-12-01T15:07:58.412Z", "10.20.31.7", "msstorageboxes.com"),
            Self.retroHit("2026-12-01T15:07:58.413Z", "10.20.31.44", "update.msstorageboxes.com"),
            Self.retroHit("2026-12-01T15:07:58.414Z", "10.20.31.12", "msstorageboxes.com"),
            Self.line("2026-12-01T15:10:00.000Z", "10.20.31.7", "msstorageboxes.com", "msstorageboxes.com"),
        ].joined(separator: "\n") + "\n"
        try Data(log.utf8).write(to: URL(fileURLWithPath: dir + "/retro.log"))

        let byClient = try run(["report", "retro.log"], in: dir)
        #expect(byClient.status == 0)
        #expect(byClient.stderr.isEmpty, "retro-hits are block log lines, not malformed ones: \(byClient.stderr)")
        #expect(byClient.stdout == """
        CLIENT      ATTEMPTS  DOMAINS  FIRST SEEN                LAST SEEN                 TOP DOMAINS
        10.20.31.7         1        1  2026-12-01T15:10:00.000Z  2026-12-01T15:10:00.000Z  msstorageboxes.com (1)

        Resolved before a list blocked them (retro-hits, not counted above; details: sinkhole hunt):
        CLIENT       NAME                       FIRST SEEN                LAST SEEN                 COUNT  LIST
        10.20.31.12  msstorageboxes.com         2026-11-28T09:14:03.120Z  2026-11-30T17:40:51.007Z     14  crowdstrike-3cx.txt
        10.20.31.44  update.msstorageboxes.com  2026-11-28T09:14:03.120Z  2026-11-30T17:40:51.007Z     14  crowdstrike-3cx.txt
        10.20.31.7   msstorageboxes.com         2026-11-28T09:14:03.120Z  2026-11-30T17:40:51.007Z     14  crowdstrike-3cx.txt

        """)

        let byDomain = try run(["report", "--by", "domain", "--format", "csv", "retro.log"], in: dir)
        #expect(byDomain.status == 0)
        #expect(byDomain.stdout == "domain,attempts,clients,first_seen,last_seen,rule,list\r\n"
            + "msstorageboxes.com,1,1,2026-12-01T15:10:00.000Z,2026-12-01T15:10:00.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n")
        #expect(byDomain.stderr == "report: 3 retro-hits (3 clients that resolved a name before a list blocked it) not in this output: see them with --format table or sinkhole hunt\n")

        let byList = try run(["report", "--by", "list", "--format", "json", "retro.log"], in: dir)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(byList.stdout.utf8)) as? [[String: Any]])
        #expect(rows.map { $0["attempts"] as? Int } == [1])
        #expect(rows.map { $0["clients"] as? Int } == [1])

        // Read along with other logs, they change nothing there either.
        let mixed = try run(["report", "--by", "domain", "--format", "json", "block.log.1", "retro.log"], in: dir)
        let mixedRows = try #require(try JSONSerialization.jsonObject(with: Data(mixed.stdout.utf8)) as? [[String: Any]])
        #expect(mixedRows.map { $0["domain"] as? String } == ["msstorageboxes.com", "notmsstorageboxes.com", "sbmsa.wiki"])
        #expect(mixedRows.map { $0["attempts"] as? Int } == [1, 1, 1])

        let onlyHits = Array(log.split(separator: "\n").prefix(3)).joined(separator: "\n") + "\n"
        try Data(onlyHits.utf8).write(to: URL(fileURLWithPath: dir + "/only-retro.log"))
        let none = try run(["report", "--client", "10.20.31.44", "only-retro.log"], in: dir)
        #expect(none.status == 0)
        #expect(none.stdout.hasPrefix("no blocked attempts match\n\nResolved before a list blocked them"), "\(none.stdout)")
        #expect(none.stdout.contains("10.20.31.44") && !none.stdout.contains("10.20.31.7 "), "\(none.stdout)")
        #expect(none.stderr.isEmpty)
    }

    @Test func csvForASpreadsheetCarriesNoFormulaFromTheLog() throws {
        // The infected machine chooses the names it asks for.
        let dir = try logs()
        let log = [
            Self.line("2026-11-26T21:00:00.000Z", "10.20.31.7", "=1+2.msstorageboxes.com", "msstorageboxes.com"),
            Self.line("2026-11-26T21:00:01.000Z", "10.20.31.7", "@SUM(1+1)*cmd.msstorageboxes.com", "msstorageboxes.com"),
        ].joined(separator: "\n") + "\n"
        try Data(log.utf8).write(to: URL(fileURLWithPath: dir + "/formula.log"))
        let byDomain = try run(["report", "--by", "domain", "--format", "csv", "formula.log"], in: dir)
        #expect(byDomain.status == 0, "\(byDomain.stderr)")
        #expect(byDomain.stdout == "domain,attempts,clients,first_seen,last_seen,rule,list\r\n"
            + "\"'=1+2.msstorageboxes.com\",1,1,2026-11-26T21:00:00.000Z,2026-11-26T21:00:00.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n"
            + "\"'@sum(1+1)*cmd.msstorageboxes.com\",1,1,2026-11-26T21:00:01.000Z,2026-11-26T21:00:01.000Z,msstorageboxes.com,crowdstrike-3cx.txt\r\n")
        let byClient = try run(["report", "--format", "csv", "--top", "1", "formula.log"], in: dir)
        #expect(byClient.stdout == "client,attempts,domains,first_seen,last_seen,top_domains\r\n"
            + "10.20.31.7,2,2,2026-11-26T21:00:00.000Z,2026-11-26T21:00:01.000Z,\"'=1+2.msstorageboxes.com (1)\"\r\n")
        let json = try run(["report", "--by", "domain", "--format", "json", "formula.log"], in: dir)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(rows.map { $0["domain"] as? String } == ["=1+2.msstorageboxes.com", "@sum(1+1)*cmd.msstorageboxes.com"])
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
