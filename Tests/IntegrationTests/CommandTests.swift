import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// `sinkhole check` and `sinkhole explain` through the built binary.
@Suite struct CommandTests {
    func directory(_ files: [String: [UInt8]]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, bytes) in files { FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(bytes)) }
        return dir
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: SinkholeProcess.binaryPath())
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func checkReportsEntriesRejectedLinesAndUnusableFiles() throws {
        let good = try directory(["intel.txt": Array("evil.example\nexa mple.com\n0.0.0.0 a.example b.example\n".utf8)])
        let ok = try run(["check", good])
        #expect(ok.status == 0, "\(ok.out)")
        #expect(ok.out.contains("intel.txt: 3 entries (lines), 1 lines rejected"), "\(ok.out)")
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
            "ours.allow": Array("good.evil.example\n".utf8),
            "feed.rpz": Array("$ORIGIN rpz.test.\n@ SOA ns. h. 1 2 3 4 5\nlocal.example A 192.0.2.7\n".utf8),
        ])
        let blocked = try run(["explain", "WWW.Evil.Example", "--blocklist-dir", dir])
        #expect(blocked.status == 0)
        #expect(blocked.out.contains("BLOCKED by rule 'evil.example' at intel.txt:2"), "\(blocked.out)")
        let allowed = try run(["explain", "x.good.evil.example", "--blocklist-dir", dir])
        #expect(allowed.status == 1)
        #expect(allowed.out.contains("ALLOWED by rule 'good.evil.example' at ours.allow:1"), "\(allowed.out)")
        let local = try run(["explain", "local.example", "--blocklist-dir", dir])
        #expect(local.out.contains("local data 192.0.2.7"), "\(local.out)")
        let unlisted = try run(["explain", "example.org", "--blocklist-dir", dir])
        #expect(unlisted.status == 1)
        #expect(unlisted.out.contains("not listed"))
    }
}
