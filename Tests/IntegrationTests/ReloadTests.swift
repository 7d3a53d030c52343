import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Synchronization
import Testing

/// Each kind of file change of the blocklist directory, observed through DNS answers. Every wait
/// is on the store's own signal, bounded by the one-second promise.
@Suite struct ReloadTests {
    static let records = ["new.example. 300 IN A 192.0.2.50", "steady.example. 300 IN A 192.0.2.51",
                          "evil.example. 300 IN A 192.0.2.52"]

    func blocked(_ name: String, _ h: TestHarness) -> Bool {
        DNSTestClient.ask(name, server: h.address)?.rcode == Rcode.nxDomain
    }

    func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    var listDir: (TestHarness) -> String { { $0.directory.appendingPathComponent("lists").path } }

    @Test func fileAddedTakesEffectWithinASecond() throws {
        let h = try TestHarness(lists: [:], records: ReloadTests.records)
        defer { h.stop() }
        #expect(!blocked("new.example", h))
        let g = h.server.store.generation
        try write("new.example\n", to: listDir(h) + "/feed.txt")
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("a.new.example", h))
    }

    @Test func fileReplacedByRenameAndEditedInPlace() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n"], records: ReloadTests.records)
        defer { h.stop() }
        let path = listDir(h) + "/feed.txt"
        var g = h.server.store.generation
        // Replace by rename, as careful tools write: a hidden temporary name, then rename over.
        try write("new.example\n", to: listDir(h) + "/.feed.txt.tmp")
        #expect(rename(listDir(h) + "/.feed.txt.tmp", path) == 0)
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("new.example", h))
        #expect(!blocked("evil.example", h))
        // Edit in place: append a line to the same inode.
        g = h.server.store.generation
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("evil.example\n".utf8))
        try handle.close()
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("evil.example", h))
        #expect(blocked("new.example", h))
    }

    @Test func fileRemovedStopsApplying() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n", "other.txt": "new.example\n"], records: ReloadTests.records)
        defer { h.stop() }
        #expect(blocked("evil.example", h))
        let g = h.server.store.generation
        try FileManager.default.removeItem(atPath: listDir(h) + "/feed.txt")
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(!blocked("evil.example", h))
        #expect(blocked("new.example", h))
    }

    @Test func configMapSymlinkSwap() throws {
        let h = try TestHarness(lists: [:], records: ReloadTests.records)
        defer { h.stop() }
        let dir = listDir(h)
        let fm = FileManager.default
        // Kubernetes layout: ..<timestamp>/feed.txt, ..data -> ..<timestamp>, feed.txt -> ..data/feed.txt
        var g = h.server.store.generation
        try fm.createDirectory(atPath: dir + "/..2026_11_26_1", withIntermediateDirectories: true)
        try write("evil.example\n", to: dir + "/..2026_11_26_1/feed.txt")
        try fm.createSymbolicLink(atPath: dir + "/..data", withDestinationPath: "..2026_11_26_1")
        try fm.createSymbolicLink(atPath: dir + "/feed.txt", withDestinationPath: "..data/feed.txt")
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("evil.example", h))

        g = h.server.store.generation
        try fm.createDirectory(atPath: dir + "/..2026_11_26_2", withIntermediateDirectories: true)
        try write("new.example\n", to: dir + "/..2026_11_26_2/feed.txt")
        try fm.createSymbolicLink(atPath: dir + "/..data_tmp", withDestinationPath: "..2026_11_26_2")
        #expect(rename(dir + "/..data_tmp", dir + "/..data") == 0)
        try fm.removeItem(atPath: dir + "/..2026_11_26_1")
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("new.example", h))
        #expect(!blocked("evil.example", h))
        #expect(h.server.store.snapshot.lists.map(\.name) == ["feed.txt"], "hidden ConfigMap entries are not lists")
    }

    @Test func aBadFileNeverRemovesProtection() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n"], records: ReloadTests.records)
        defer { h.stop() }
        let path = listDir(h) + "/feed.txt"
        let store = h.server.store
        let bad: [[UInt8]] = [
            [0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03],      // a gzip header: binary
            Array("<html><body>502 Bad Gateway</body></html>\n".utf8),          // an error page: no valid entry
            Array("exa mple\n-bad.example\n".utf8),                            // only bad lines
            [],                                                                 // emptied: a failed download
            Array(" \n\n".utf8),                                                 // white space only
        ]
        for contents in bad {
            let r = store.refreshCount
            #expect(FileManager.default.createFile(atPath: path, contents: Data(contents)))
            #expect(store.waitForRefresh(after: r, timeout: 1.0))
            #expect(blocked("evil.example", h), "previous version stays in force")
        }
        // An unreadable file also keeps the old version (root reads anything, so only check when not root).
        if getuid() != 0 {
            let r = store.refreshCount
            chmod(path, 0)
            #expect(store.waitForRefresh(after: r, timeout: 1.0))
            #expect(blocked("evil.example", h))
        }
        #expect(store.failedFiles == ["feed.txt"])
        // A good version replaces it again.
        let g = store.generation
        try write("new.example\n", to: path)
        #expect(store.waitForGeneration(after: g, timeout: 1.0))
        #expect(blocked("new.example", h))
        #expect(!blocked("evil.example", h))
    }

    @Test func burstOfChangesIsCoalesced() throws {
        let h = try TestHarness(lists: [:], records: ReloadTests.records)
        defer { h.stop() }
        let g = h.server.store.generation
        for i in 0..<50 {
            try write("n\(i).example\n", to: listDir(h) + "/f\(i).txt")
        }
        #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        #expect(h.server.store.waitUntilLoaded(count: 50, timeout: 1.0))
        #expect(h.server.store.generation - g < 10, "50 files written in a burst are not 50 reloads")
        #expect(blocked("n49.example", h))
    }

    @Test func sighupStyleReloadForcesFullReRead() throws {
        let h = try TestHarness(lists: ["feed.txt": "evil.example\n"], records: ReloadTests.records)
        defer { h.stop() }
        let g = h.server.store.generation
        h.server.reload()
        #expect(h.server.store.generation == g + 1)
        #expect(blocked("evil.example", h))
    }

    @Test func queriesDuringRepeatedReloadsAreAlwaysRight() throws {
        let h = try TestHarness(lists: ["steady.txt": "evil.example\n", "churn.txt": "x0.example\n"],
                                records: ReloadTests.records)
        defer { h.stop() }
        let wrong = Mutex<[String]>([])
        let group = DispatchGroup()
        for client in 0..<3 {
            group.enter()
            // A thread of its own: the shared pool may be busy with other tests.
            Thread.detachNewThread {
                defer { group.leave() }
                for i in 0..<200 {
                    let blockedName = i % 2 == 0
                    let name = blockedName ? "c\(client).evil.example" : "steady.example"
                    guard let r = DNSTestClient.ask(name, server: h.address, timeout: 2) else {
                        wrong.withLock { $0.append("\(name): no answer") }
                        continue
                    }
                    if blockedName && r.rcode != Rcode.nxDomain { wrong.withLock { $0.append("\(name): rcode \(r.rcode)") } }
                    if !blockedName && r.records(.answer).map(\.rdata) != [[192, 0, 2, 51]] {
                        wrong.withLock { $0.append("\(name): rcode \(r.rcode)") }
                    }
                }
            }
        }
        let dir = listDir(h)
        for round in 0..<20 {
            let g = h.server.store.generation
            let names = (0...round).map { "x\($0).example" }.joined(separator: "\n")
            try write(names + "\n", to: dir + "/churn.txt")
            #expect(h.server.store.waitForGeneration(after: g, timeout: 1.0))
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(wrong.withLock { $0 }.isEmpty, "\(wrong.withLock { $0.prefix(5) })")
    }
}

extension BlocklistStore {
    /// Waits until `count` lists are in force (a burst may take more than one refresh).
    func waitUntilLoaded(count: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while snapshot.loaded.count < count {
            let g = generation
            let left = deadline.timeIntervalSinceNow
            if left <= 0 || !waitForGeneration(after: g, timeout: left) { return snapshot.loaded.count >= count }
        }
        return true
    }
}

/// The list directory moved away and back, through the binary's operational log.
@Suite struct DirectoryMovedTests {
    @Test func aDirectoryMovedAwayAndBackIsWatchedAgainAtOnce() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-moved-\(UUID().uuidString)").path
        let lists = base + "/lists", aside = base + "/lists.moved"
        try FileManager.default.createDirectory(atPath: lists, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        try "evil.example\n".write(toFile: lists + "/intel.txt", atomically: true, encoding: .utf8)
        let upstream = try FakeUpstream(records: ["late.example. 300 IN A 192.0.2.9"])
        defer { upstream.stop() }
        let s = SinkholeProcess(arguments: ["serve", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description,
                                            "--blocklist-dir", lists])
        #expect(try s.start(), "\(s.stderr)")
        defer { _ = s.stop() }
        let server = SocketAddress(address: [127, 0, 0, 1], port: s.port)
        func rcode(_ name: String) -> UInt8? { DNSTestClient.ask(name, server: server, timeout: 2)?.rcode }

        #expect(rename(lists, aside) == 0)
        #expect(s.waitForLog("the blocklist directory is gone"), "\(s.stderr)")
        #expect(rcode("evil.example") == Rcode.nxDomain, "the lists in force stay")
        #expect(rename(aside, lists) == 0)
        #expect(s.waitForLog("watching the blocklist directory again", timeout: 5), "\(s.stderr)")
        // A file added now is seen through inotify again, within the one-second promise.
        try "late.example\n".write(toFile: lists + "/late.txt", atomically: true, encoding: .utf8)
        // Seen through inotify (the one-second promise) rather than the 30 s rescan; the bound
        // leaves room for a loaded CI machine.
        #expect(s.waitForLog("late.txt", timeout: 5), "\(s.stderr)")
        #expect(rcode("late.example") == Rcode.nxDomain)
        #expect(s.stderr.components(separatedBy: "the blocklist directory is gone").count == 2, "reported once: \(s.stderr)")
        #expect(!s.stderr.contains("cannot read blocklist directory"), "no failed reload beside it: \(s.stderr)")
    }
}
