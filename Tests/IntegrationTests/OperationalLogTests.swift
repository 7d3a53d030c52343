import Foundation
import SinkholeCore
import SinkholeTestSupport
import Testing

/// The operational log (stderr) as an operator's terminal or journald receives it.
@Suite struct OperationalLogTests {
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
}
