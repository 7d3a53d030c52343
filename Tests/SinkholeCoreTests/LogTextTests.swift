import Foundation
import Glibc
import Logging
import Synchronization
import Testing
@testable import SinkholeCore
import SinkholeTestSupport

@Suite struct LogTextTests {
    @Test func controlCharactersAreEscapedAndTheRestKept() {
        #expect(LogText.printable("plain.example") == "plain.example")
        #expect(LogText.printable("é.example ü") == "é.example ü")
        #expect(LogText.printable("\u{1B}[31mRED\u{1B}[0m") == "\\x1b[31mRED\\x1b[0m")
        #expect(LogText.printable("a\nforged line\r\tb") == "a\\nforged line\\r\\tb")
        #expect(LogText.printable("\u{0}\u{7F}\u{9B}\u{85}") == "\\x00\\x7f\\u{9b}\\u{85}")
        #expect(LogText.printable("a\u{2028}b\u{202E}c\u{2066}") == "a\\u{2028}b\\u{202e}c\\u{2066}")
        // A backslash in the text is doubled: a feed's literal "\x1b" does not read as an escape made here.
        #expect(LogText.printable("lit\\x1b") == "lit\\\\x1b")
    }

    @Test func longTextIsCutAtACharacter() {
        #expect(LogText.quoted("short", limit: 10) == "short")
        #expect(LogText.quoted(String(repeating: "x", count: 10), limit: 10) == String(repeating: "x", count: 10))
        #expect(LogText.quoted(String(repeating: "x", count: 25), limit: 10) == String(repeating: "x", count: 10) + "... (15 more bytes)")
        // "é" is two bytes: the cut falls after a whole character, never inside one.
        let cut = LogText.quoted(String(repeating: "é", count: 10), limit: 5)
        #expect(cut == "éé... (16 more bytes)")
    }

    /// From a SOC trial: the operational log was in local time to the second, with a `+0000`
    /// offset that followed TZ. It is timed as the block log is: UTC, RFC 3339, milliseconds.
    @Test func operationalLinesAreTimedInUTCWithMilliseconds() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        var handler = OperationalLogHandler(label: "sinkhole", fd: fds[1], metadataProvider: nil)
        handler.metadata["base"] = "1"
        let logger = Logger(label: "sinkhole") { _ in handler }
        logger.warning("list \u{1B}[31m loaded", metadata: ["file.path": "/a b", "n": "2"], source: "SinkholeCore")
        close(fds[1])
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = read(fds[0], &buffer, buffer.count)
        let line = String(decoding: buffer[0..<max(0, n)], as: UTF8.self)
        let pattern = #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z warning sinkhole: base=1 file\.path="/a b" n=2 \[SinkholeCore\] list \\x1b\[31m loaded\n$"#
        #expect(line.range(of: pattern, options: .regularExpression) != nil, "\(line)")
    }

    /// Values with a space, `=` or a quote are quoted, so each stderr line parses as logfmt.
    @Test func metadataValuesAreQuotedWhereLogfmtNeedsIt() {
        let recorder = LogRecorder()
        let logger = Logger(label: "t") { _ in PrintableLogHandler(recorder) }
        logger.info("starting", metadata: [
            "cache-size": "64 MiB, ttl 0-86400s", "listen": "127.0.0.1:53", "reason": "said \"no\"",
            "query": "a=b", "empty": "", "count": .stringConvertible(3), "path": "/lists/x\ny.txt",
        ])
        let metadata = recorder.events.withLock { $0[0].metadata }
        #expect(metadata["cache-size"] == .string("\"64 MiB, ttl 0-86400s\""))
        #expect(metadata["listen"] == .string("127.0.0.1:53"))
        #expect(metadata["reason"] == .string("\"said \\\"no\\\"\""))
        #expect(metadata["query"] == .string("\"a=b\""))
        #expect(metadata["empty"] == .string("\"\""))
        #expect(metadata["count"] == .string("3"))
        #expect(metadata["path"] == .string("/lists/x\\ny.txt"))
    }

    @Test func theHandlerEscapesMessagesAndMetadata() {
        let recorder = LogRecorder()
        let logger = Logger(label: "t") { _ in PrintableLogHandler(recorder) }
        logger.warning("feed.txt:2: bad: '\u{1B}]0;owned\u{7}'", metadata: [
            "file.path": "/lists/\u{1B}[2J.txt",
            "nested": .array([.string("a\nb"), .dictionary(["k": .stringConvertible(42)])]),
        ])
        let (_, message, metadata) = recorder.events.withLock { $0[0] }
        #expect(message == "feed.txt:2: bad: '\\x1b]0;owned\\x07'")
        #expect(metadata["file.path"] == .string("/lists/\\x1b[2J.txt"))
        #expect(metadata["nested"] == .array([.string("a\\nb"), .dictionary(["k": .string("42")])]))
    }
}
