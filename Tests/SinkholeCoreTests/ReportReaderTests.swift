import Foundation
import Testing
@testable import SinkholeCore

/// Reading live, rotated and gzip-compressed block logs, and surviving what is found in them.
@Suite struct ReportReaderTests {
    let lines = ReportFixture.lines

    func read(_ path: String) throws -> (lines: [String], reader: BlockLogReader) {
        let reader = try BlockLogReader(path: path)
        var out: [String] = []
        try reader.forEachLine { out.append(String(decoding: $0, as: UTF8.self)) }
        return (out, reader)
    }

    /// block.log (live, last line cut short), block.log.1 (two garbage lines), block.log.2.gz.
    func rotatedSet() throws -> (dir: String, files: [String]) {
        let dir = try ReportFixture.directory()
        let live = dir + "/block.log", one = dir + "/block.log.1", two = dir + "/block.log.2.gz"
        try ReportFixture.write(live, lines[0] + "\n" + lines[1] + "\n" + String(lines[2].prefix(90)))
        try ReportFixture.write(one, lines[3] + "\n\u{1F}\u{8B} not gzip, just noise\n" + lines[4] + "\n\n{\"@timestamp\":\n")
        try ReportFixture.gzip(lines[5...].joined(separator: "\n") + "\n", to: two)
        return (dir, [live, one, two])
    }

    @Test func rotatedAndCompressedLogsReadTogetherWithMalformedLinesCountedPerFile() throws {
        let (_, files) = try rotatedSet()
        let outcome = try BlockLogReport.run(ReportQuery(grouping: .list), files: files)
        #expect(outcome.lines == 10)       // 8 lines with content per file, blank lines not counted
        #expect(outcome.matched == 7)      // all but the truncated line
        #expect(outcome.malformed == 3)
        #expect(outcome.malformedByFile.map(\.path) == [files[0], files[1]])
        #expect(outcome.malformedByFile.map(\.count) == [1, 2])
        #expect(outcome.warnings.isEmpty)
        #expect(outcome.diagnostics == ["report: skipped 3 malformed lines (\(files[0]): 1, \(files[1]): 2)"])
        #expect(outcome.table.rows[0] == [.text("crowdstrike-3cx.txt"), .count(5), .count(3), .count(5),
                                          .time(ReportFixture.ms("2026-11-26T10:00:00Z")), .time(ReportFixture.ms("2026-11-26T13:30:00Z"))])
        #expect(outcome.table.value(1, "attempts") == .count(2))
    }

    @Test func gzipIsRecognisedByContentNotName() throws {
        let dir = try ReportFixture.directory()
        try ReportFixture.gzip(lines.joined(separator: "\n"), to: dir + "/compressed-but-no-suffix")
        let (read, reader) = try read(dir + "/compressed-but-no-suffix")
        #expect(reader.isCompressed)
        #expect(read == lines)   // the last line, without a newline, is still a line
        try ReportFixture.write(dir + "/plain.gz", lines.joined(separator: "\n") + "\n")
        let plain = try self.read(dir + "/plain.gz")
        #expect(!plain.reader.isCompressed)
        #expect(plain.lines == lines)
    }

    @Test func concatenatedGzipMembersAreAllRead() throws {
        let dir = try ReportFixture.directory()
        try ReportFixture.gzip(lines[0...3].joined(separator: "\n") + "\n", to: dir + "/a.gz")
        try ReportFixture.gzip(lines[4...].joined(separator: "\n") + "\n", to: dir + "/b.gz")
        let joined = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.gz")) + Data(contentsOf: URL(fileURLWithPath: dir + "/b.gz"))
        try joined.write(to: URL(fileURLWithPath: dir + "/both.gz"))
        let (read, reader) = try read(dir + "/both.gz")
        #expect(read == lines)
        #expect(reader.warnings.isEmpty)
    }

    @Test func truncatedOrCorruptGzipKeepsWhatCameBeforeAndWarns() throws {
        let dir = try ReportFixture.directory()
        let many = (0..<3000).map { lines[$0 % lines.count] }
        try ReportFixture.gzip(many.joined(separator: "\n") + "\n", to: dir + "/whole.gz")
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir + "/whole.gz"))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.gz"))
        let cut = try read(dir + "/cut.gz")
        #expect(cut.lines.count > 100)
        #expect(cut.lines.count < 3000)
        #expect(Array(cut.lines.dropLast()) == Array(many.prefix(cut.lines.count - 1)))
        #expect(cut.reader.warnings == ["\(dir)/cut.gz: compressed data ends early (truncated file?); read what was there"])

        var corrupt = whole
        for k in (whole.count / 2)..<(whole.count / 2 + 64) { corrupt[k] ^= 0x5A }
        try corrupt.write(to: URL(fileURLWithPath: dir + "/corrupt.gz"))
        let bad = try read(dir + "/corrupt.gz")
        #expect(bad.reader.warnings.count == 1)
        #expect(bad.reader.warnings.first?.contains("corrupt compressed data") == true)
        let outcome = try BlockLogReport.run(ReportQuery(), files: [dir + "/corrupt.gz"])
        #expect(outcome.diagnostics.first?.hasPrefix("report: \(dir)/corrupt.gz: corrupt compressed data") == true)
    }

    @Test func linesSpanningReadChunksAreReassembled() throws {
        let dir = try ReportFixture.directory()
        // Over 2 MiB: lines cross the 1 MiB read and inflate chunks at arbitrary points.
        let many = (0..<6000).map { lines[$0 % lines.count] }
        let text = many.joined(separator: "\r\n") + "\r\n"
        try ReportFixture.write(dir + "/big.log", text)
        try ReportFixture.gzip(text, to: dir + "/big.log.gz")
        for name in ["big.log", "big.log.gz"] {
            let outcome = try BlockLogReport.run(ReportQuery(grouping: .list), files: [dir + "/" + name])
            #expect(outcome.matched == 6000, "\(name)")
            #expect(outcome.malformed == 0, "\(name)")
            #expect(outcome.table.value(0, "attempts") == .count(4500), "\(name)")
        }
    }

    @Test func anOverlongLineIsSkippedWithoutHoldingIt() throws {
        let dir = try ReportFixture.directory()
        let huge = "{\"x\":\"" + String(repeating: "a", count: BlockLogReader.maxLineLength * 2) + "\"}"
        try ReportFixture.write(dir + "/huge.log", lines[0] + "\n" + huge + "\n" + lines[1] + "\n" + huge)
        let outcome = try BlockLogReport.run(ReportQuery(), files: [dir + "/huge.log"])
        #expect(outcome.matched == 2)
        #expect(outcome.malformed == 2)
    }

    @Test func emptyFilesGiveNoRows() throws {
        let dir = try ReportFixture.directory()
        try ReportFixture.write(dir + "/empty.log", "")
        try ReportFixture.gzip("", to: dir + "/empty.log.gz")
        let outcome = try BlockLogReport.run(ReportQuery(), files: [dir + "/empty.log", dir + "/empty.log.gz"])
        #expect(outcome.table.rows.isEmpty)
        #expect(outcome.diagnostics.isEmpty)
    }

    /// From a SOC trial: a file named twice (a path and a glob, or a link) was counted twice, and
    /// a built-in rotation caught compressing left `.1` and its copy `.1.gz` to be counted twice.
    @Test func eachFileIsReadOnce() throws {
        let (dir, files) = try rotatedSet()
        #expect(symlink(files[0], dir + "/link.log") == 0)
        try ReportFixture.gzip(lines[3] + "\n", to: dir + "/block.log.1.gz")
        var notes: [String] = []
        let kept = ReportInputs.distinct(files + [dir + "/link.log", dir + "/block.log.1.gz", files[1], dir + "/gone.log", dir + "/gone.log"]) {
            notes.append($0)
        }
        #expect(kept == files + [dir + "/gone.log"], "a missing file stays, to be reported as missing")
        #expect(notes == ["\(dir)/link.log is a file already given (named twice, or a link to it): read once",
                          "\(files[1]) is a file already given (named twice, or a link to it): read once",
                          "\(dir)/block.log.1.gz left out: \(dir)/block.log.1 holds the same events (a rotation was caught compressing it)"])
        // The plain file is the complete one (logrotate writes the .gz in place, growing); only
        // a plain file that is there replaces the copy. One gone by the read is read as its .gz.
        #expect(ReportInputs.distinct([dir + "/missing.1", dir + "/block.log.1.gz"]) { _ in } == [dir + "/missing.1", dir + "/block.log.1.gz"])
    }

    /// Another compressor's file was read as malformed lines, giving no rows (read as no hits):
    /// refused, naming it. A UTF-8 byte-order mark does not spoil the first line.
    @Test func otherCompressorsAreRefusedAndAByteOrderMarkIsSkipped() throws {
        let dir = try ReportFixture.directory()
        for (name, magic) in [("xz", [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 1, 2] as [UInt8]), ("zstd", [0x28, 0xB5, 0x2F, 0xFD, 0, 0]),
                              ("bzip2", Array("BZh91AY&SY".utf8))] {
            let path = dir + "/block.log.\(name)"
            #expect(FileManager.default.createFile(atPath: path, contents: Data(magic)))
            #expect(throws: BlockLogReadError.self) { try BlockLogReport.run(ReportQuery(), files: [path]) }
            do { _ = try BlockLogReport.run(ReportQuery(), files: [path]) } catch {
                #expect(error.reason.hasPrefix("compressed with \(name), which report does not read"), "\(error.reason)")
            }
        }
        let bom = dir + "/bom.log"
        #expect(FileManager.default.createFile(atPath: bom, contents: Data([0xEF, 0xBB, 0xBF] + Array((lines[0] + "\n" + lines[1] + "\n").utf8))))
        let outcome = try BlockLogReport.run(ReportQuery(), files: [bom])
        #expect(outcome.matched == 2 && outcome.diagnostics.isEmpty, "\(outcome.diagnostics)")
        try ReportFixture.gzip("\u{FEFF}" + lines[0] + "\n", to: dir + "/bom.log.gz")
        #expect(try BlockLogReport.run(ReportQuery(), files: [dir + "/bom.log.gz"]).matched == 1, "gzipped too (a re-trial)")
    }

    /// From a re-trial: `report block.log*` during a rotation failed when `block.log.1` was
    /// compressed between the glob and the open; its events are read from `block.log.1.gz`.
    @Test func aRotatedFileCompressedSinceTheGlobIsReadCompressed() throws {
        let dir = try ReportFixture.directory()
        try ReportFixture.gzip(lines[0] + "\n" + lines[1] + "\n", to: dir + "/block.log.1.gz")
        #expect(try BlockLogReport.run(ReportQuery(), files: [dir + "/block.log.1"]).matched == 2)
        #expect(throws: BlockLogReadError(path: dir + "/block.log.2", reason: "No such file or directory")) {
            try BlockLogReport.run(ReportQuery(), files: [dir + "/block.log.2"])
        }
    }

    @Test func aMissingFileOrDirectoryFailsNamingItBeforeAnythingIsRead() throws {
        let (dir, files) = try rotatedSet()
        #expect(throws: BlockLogReadError(path: dir + "/block.log.3.gz", reason: "No such file or directory")) {
            try BlockLogReport.run(ReportQuery(), files: files + [dir + "/block.log.3.gz"])
        }
        #expect(throws: BlockLogReadError(path: dir, reason: "is a directory")) {
            try BlockLogReport.run(ReportQuery(), files: [dir])
        }
    }
}
