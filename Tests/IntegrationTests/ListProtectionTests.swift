import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

/// What keeps the lists in force through an update that is not finished or not meant: a file
/// being written, a directory left with no block list, a file replaced by a link to nothing.
@Suite struct ListProtectionTests {
    static let records = ["late.example. 300 IN A 192.0.2.60", "new-late.example. 300 IN A 192.0.2.61",
                          "evil.example. 300 IN A 192.0.2.62", "other.example. 300 IN A 192.0.2.63",
                          "ok.evil.example. 300 IN A 192.0.2.64"]

    func blocked(_ name: String, _ h: TestHarness) -> Bool {
        DNSTestClient.ask(name, server: h.address)?.rcode == Rcode.nxDomain
    }

    func listDir(_ h: TestHarness) -> String { h.directory.appendingPathComponent("lists").path }

    @Test func aFileBeingWrittenInPlaceIsReadOnlyOnceItsWriterClosesIt() throws {
        let old = (1...200).map { "c2-\($0).example" }.joined(separator: "\n") + "\nlate.example\n"
        let h = try TestHarness(lists: ["feed.txt": old], records: Self.records)
        defer { h.stop() }
        #expect(blocked("late.example", h))
        // Written in place, as `curl -o` or `cat >` do, and stalled halfway: the first half of
        // the new version is on disk and the file is still open.
        let new = (1...200).map { "c2-\($0).example" }.joined(separator: "\n") + "\nnew-late.example\n"
        let bytes = Array(new.utf8)
        let fd = open(listDir(h) + "/feed.txt", O_WRONLY | O_TRUNC)
        #expect(fd >= 0)
        var closed = false
        defer { if !closed { close(fd) } }
        #expect(write(fd, bytes, bytes.count / 2) == bytes.count / 2)
        // Another file changes: a refresh runs while feed.txt is still open (its generation is
        // the sign that the refresh saw the directory after the half-write).
        var g = h.server.store.generation
        try "other.example\n".write(toFile: listDir(h) + "/other.txt", atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 2.0))
        #expect(blocked("other.example", h))
        #expect(blocked("late.example", h), "the version in force stays while the file is written")
        #expect(blocked("c2-200.example", h), "no half list: names past the cut are still blocked")
        // The writer finishes and closes: now it is read.
        g = h.server.store.generation
        #expect(bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress! + bytes.count / 2, bytes.count - bytes.count / 2) }
                == bytes.count - bytes.count / 2)
        close(fd)
        closed = true
        #expect(h.server.store.waitForGeneration(after: g, timeout: 2.0))
        #expect(blocked("new-late.example", h))
        #expect(!blocked("late.example", h))
        #expect(blocked("c2-200.example", h))
    }

    /// From an operator's trial: a good file renamed in and written over in place within the
    /// reload's quiet time, cut short: no read saw the renamed file, so the cut came with an inode
    /// never seen, and loaded. The watcher saw the write after the rename: held.
    @Test func aWriteCutShortRightAfterARenameKeepsTheVersionInForce() throws {
        let old = (1...200).map { "c2-\($0).example" }.joined(separator: "\n") + "\nlate.example\n"
        let h = try TestHarness(lists: ["feed.txt": old], records: Self.records)
        defer { h.stop() }
        #expect(blocked("c2-200.example", h))
        var g = h.server.store.generation
        let good = old + "new-late.example\n"
        try good.write(toFile: listDir(h) + "/.feed.txt.new", atomically: false, encoding: .utf8)
        #expect(rename(listDir(h) + "/.feed.txt.new", listDir(h) + "/feed.txt") == 0)
        try String(good.prefix(1000).dropLast(2)).write(toFile: listDir(h) + "/feed.txt", atomically: false, encoding: .utf8)
        // A change after it, whose load shows that a refresh has seen the directory since.
        try "other.example\n".write(toFile: listDir(h) + "/other.txt", atomically: true, encoding: .utf8)
        for _ in 0..<3 where !blocked("other.example", h) {
            _ = h.server.store.waitForGeneration(after: g, timeout: 2.0)
            g = h.server.store.generation
        }
        #expect(blocked("other.example", h))
        #expect(blocked("c2-200.example", h), "the version in force stays: the cut is held")
        #expect(blocked("late.example", h))
    }

    @Test func aDirectoryLeftWithNoBlockListKeepsTheListsInForceUntilListsAreBack() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n", "mine.allow": "ok.evil.example\n"], records: Self.records)
        defer { h.stop() }
        #expect(blocked("evil.example", h))
        let count = h.server.store.refreshCount
        try FileManager.default.removeItem(atPath: listDir(h) + "/feed.txt")
        #expect(h.server.store.waitForRefresh(after: count, timeout: 2.0))
        #expect(blocked("evil.example", h), "the last block list is kept")
        #expect(!blocked("ok.evil.example", h), "the allowlist still applies")
        #expect(h.server.store.failedFiles == ["feed.txt"], "kept, but exported as not usable")
        // A block list with no entry (a failed download's header) is not block lists back.
        let before = h.server.store.refreshCount
        try "# feed header, nothing after it\n".write(toFile: listDir(h) + "/empty.txt", atomically: true, encoding: .utf8)
        #expect(h.server.store.waitUntil(timeout: 2.0) {
            h.server.store.refreshCount > before && h.server.store.snapshot.loaded.contains { $0.name == "empty.txt" }
        })
        #expect(blocked("evil.example", h), "still kept")
        // Block lists come back: the kept one goes, the new one is in force.
        let g = h.server.store.generation
        try "other.example\n".write(toFile: listDir(h) + "/new.txt", atomically: true, encoding: .utf8)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 2.0))
        #expect(blocked("other.example", h))
        #expect(!blocked("evil.example", h), "the kept list is dropped once block lists are back")
        #expect(h.server.store.failedFiles.isEmpty)
    }

    @Test func aCompleteFileRenamedOverOneBeingWrittenIsReadAtOnce() throws {
        let h = try TestHarness(lists: ["feed.txt": "late.example\n"], records: Self.records)
        defer { h.stop() }
        // A stalled writer holds feed.txt open, half-written ...
        let fd = open(listDir(h) + "/feed.txt", O_WRONLY | O_TRUNC)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(write(fd, "new-la", 6) == 6)
        // ... and the operator puts a complete version in its place by rename.
        let g = h.server.store.generation
        try "new-late.example\n".write(toFile: listDir(h) + "/feed.txt.tmp", atomically: false, encoding: .utf8)
        #expect(rename(listDir(h) + "/feed.txt.tmp", listDir(h) + "/feed.txt") == 0)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 2.0))
        #expect(blocked("new-late.example", h))
        #expect(!blocked("late.example", h))
    }

    @Test func aDirectoryReplacedByAnEmptyOneKeepsTheListsInForce() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n"], records: Self.records)
        defer { h.stop() }
        let count = h.server.store.refreshCount
        #expect(rename(listDir(h), listDir(h) + ".moved") == 0)
        #expect(mkdir(listDir(h), 0o755) == 0)
        #expect(h.server.store.waitForRefresh(after: count, timeout: 5.0))
        #expect(blocked("evil.example", h))
        #expect(h.server.store.snapshot.loaded.map(\.name) == ["feed.txt"])
    }

    @Test func aListReplacedByALinkToNothingKeepsItsVersionInForce() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n", "other.txt": "other.example\n"], records: Self.records)
        defer { h.stop() }
        // The link made under a hidden name and renamed over the file: one step, as a
        // ConfigMap update or `ln -sf` makes it.
        #expect(symlink(h.directory.path + "/gone.txt", listDir(h) + "/.feed.link") == 0)
        #expect(rename(listDir(h) + "/.feed.link", listDir(h) + "/feed.txt") == 0)
        #expect(h.server.store.waitUntil(timeout: 2.0) { h.server.store.failedFiles.contains("feed.txt") })
        #expect(blocked("evil.example", h), "like an unreadable file, not a removed one")
        #expect(blocked("other.example", h))
    }
}
