import Foundation
import Logging
import Testing
@testable import SinkholeCore
import SinkholeTestSupport

@Suite struct ListLoaderTests {
    func directory(_ files: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lists-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    func store(_ files: [String: String]) throws -> BlocklistStore {
        let s = BlocklistStore()
        try s.refresh(directory: try directory(files))
        return s
    }

    func decide(_ s: BlocklistStore, _ name: String) -> RuleMatch? {
        s.snapshot.decide(WireName.fromText(name)!)
    }

    static let rpz = """
    $TTL 300
    $ORIGIN rpz.example.test.
    @ IN SOA ns.rpz.example.test. hostmaster.rpz.example.test. ( 1 3600 600 86400 60 )
      IN NS ns.rpz.example.test.
    nx.example        CNAME .
    *.wild.example    CNAME .
    nodata.example    CNAME *.
    pass.nx.example   CNAME rpz-passthru.
    drop.example      CNAME rpz-drop.
    local.example     A     192.0.2.7
    local.example     AAAA  2001:db8::7
    abs.example.rpz.example.test. CNAME .
    32.1.2.0.192.rpz-ip CNAME .
    redirect.example  CNAME walled-garden.example.
    broken.example    A     not-an-address
    """

    @Test func rpzTriggersAndActions() throws {
        let s = try store(["feed.rpz": ListLoaderTests.rpz])
        #expect(s.snapshot.loaded.first?.format == .rpz)
        #expect(decide(s, "nx.example")?.action == .nxdomain)
        #expect(decide(s, "nx.example")?.line == 5)
        #expect(decide(s, "sub.nx.example") == nil, "a QNAME trigger without * is exact")
        #expect(decide(s, "a.wild.example")?.action == .nxdomain)
        #expect(decide(s, "a.wild.example")?.rule == "*.wild.example")
        #expect(decide(s, "wild.example") == nil, "*.name does not cover name")
        #expect(decide(s, "nodata.example")?.action == .nodata)
        #expect(decide(s, "pass.nx.example")?.action == .allow)
        #expect(decide(s, "drop.example")?.action == .drop)
        let local = try #require(decide(s, "LOCAL.example"))
        #expect(local.action == .localData)
        #expect(local.localData == [LocalRecord(type: 1, rdata: [192, 0, 2, 7]),
                                    LocalRecord(type: 28, rdata: IPAddress.parse("2001:db8::7")!)])
        #expect(decide(s, "abs.example")?.action == .nxdomain, "absolute owner names under the origin")
        #expect(decide(s, "redirect.example") == nil)
        #expect(s.snapshot.loaded.first?.rejectedLines == 2, "redirect and bad A; the rpz-ip trigger is an IP rule")
    }

    @Test func rpzRecordTypeBeyondSixteenBitsIsARejectedLine() throws {
        // Found by the rpz fuzzer: ldns reads TYPE922001, which no 16-bit type field can hold.
        let text = "$ORIGIN rpz.example.test.\nodd.example TYPE922001 \\# 0\nnx.example CNAME .\n"
        let result = BlocklistLoader.load(file: try directory(["odd.rpz": text]) + "/odd.rpz")
        let list = try #require(result.list)
        #expect(list.entries == 1)
        #expect(result.lineErrors.contains { $0.reason.contains("record type out of range") }, "\(result.lineErrors)")
        // The zone is not held in memory: the rejected line's text is read back from the file.
        #expect(result.lineErrors.map(\.line) == [2])
        #expect(result.lineErrors.first?.text == "odd.example TYPE922001 \\# 0")
        #expect(result.lineErrors.first?.description == "odd.rpz:2: record type out of range (at most TYPE65535): 'odd.example TYPE922001 \\# 0'")
    }

    @Test func anRPZFileWithANULByteIsNotText() throws {
        let text = "$ORIGIN rpz.example.test.\nnx.example CNAME .\n" + String(repeating: "x", count: 5 << 20) + "\u{0}\n"
        let result = BlocklistLoader.load(file: try directory(["bin.rpz": text]) + "/bin.rpz")
        #expect(result.list == nil)
        #expect(result.failure == "not a text file (it contains NUL bytes)", "found past the first 4 MiB chunk")
    }

    /// From a list maintainer's trial: one `(` that never closes made ldns read every record
    /// after it as part of one bad record; 499 of 1,000 triggers were lost with a warning naming
    /// another line. The zone is refused, as BIND and Unbound refuse it, and the version in
    /// force stays. Parentheses in quotes and comments, and a closed multi-line SOA, are fine.
    @Test func anRPZWithAParenthesisNeverClosedIsRefused() throws {
        let good = "$ORIGIN rpz.example.test.\n@ SOA ns. h. ( 1 3600 ; a ( in a comment\n 600 86400 60 )\n"
            + "note.example TXT \"a ( in quotes\" \"\\\" (\"\n"
            + (0..<50).map { "p\($0).example CNAME .\n" }.joined()
        let loaded = BlocklistLoader.load(file: try directory(["good.rpz": good]) + "/good.rpz")
        #expect(loaded.list?.entries == 50)
        let bad = "$ORIGIN rpz.example.test.\n" + (0..<10).map { "a\($0).example CNAME .\n" }.joined()
            + "oops.example TXT \"x\" (\n" + (0..<40).map { "b\($0).example CNAME .\n" }.joined()
        let result = BlocklistLoader.load(file: try directory(["paren.rpz": bad]) + "/paren.rpz")
        #expect(result.list == nil)
        #expect(result.failure?.hasPrefix("paren.rpz:12: '(' never closed") == true, "\(result.failure ?? "")")
    }

    /// From a list maintainer's trial: `@ SOA` before any $ORIGIN, then `$ORIGIN rpz.x.` for the
    /// triggers. The root was taken for the apex, and every trigger kept the origin's labels.
    @Test func rpzSOABeforeAnyOriginTakesTheOriginOfTheTriggers() throws {
        let s = try store(["feed.rpz": "$TTL 60\n@ SOA ns.x. h.x. 1 2 3 4 5\n$ORIGIN rpz.threat.example.\nevil.example CNAME .\n"])
        #expect(decide(s, "evil.example")?.action == .nxdomain)
    }

    /// From a migration trial: a zone whose name came from named.conf (`@ SOA` with no $ORIGIN)
    /// and triggers written in full under it: read as whole names, each blocking only itself.
    /// Loaded so, but said, with the line that fixes it.
    @Test func rpzTriggersUnderTheSOAServerOfARootSOAAreSaid() throws {
        let zone = "$TTL 30\n@ SOA rpz.urlhaus.example. hostmaster.urlhaus.example. 1 2 3 4 5\n NS localhost.\n"
            + "evil.example.rpz.urlhaus.example. CNAME .\nbad.example.rpz.urlhaus.example. CNAME .\nplain.example CNAME .\n"
        let s = try store(["urlhaus.rpz": zone])
        let notes = try #require(s.snapshot.loaded.first).notes
        #expect(notes.count == 1)
        #expect(notes.first?.contains("2 triggers end in its server name rpz.urlhaus.example. (the first: evil.example.rpz.urlhaus.example)") == true, "\(notes)")
        #expect(notes.first?.contains("add '$ORIGIN rpz.urlhaus.example.' as the first line") == true)
        #expect(decide(s, "plain.example")?.action == .nxdomain)
        let fixed = try store(["urlhaus.rpz": "$ORIGIN rpz.urlhaus.example.\n" + zone])
        #expect(fixed.snapshot.loaded.first?.notes == [])
        #expect(decide(fixed, "evil.example")?.action == .nxdomain)
    }

    /// From a failure-mode trial: a 100 MB junk file took 45 s of a core to reject line by line,
    /// while every other list's update waited. A file whose first chunk (4 MiB) gives thousands of
    /// rejected lines and no entry is refused there, the version in force kept.
    @Test func aLargeFileOfJunkIsRefusedAtItsFirstChunk() throws {
        let junk = String(repeating: String(repeating: "Zm9vYmFyYmF6/+", count: 5) + "\n", count: 60_000)
        let dir = try directory(["feed.txt": "evil.example\n"])
        let s = BlocklistStore()
        _ = try s.refresh(directory: dir)
        try (junk + "late.example\n").write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        let failure = try #require(report.failed.first?.failure)
        #expect(failure.hasPrefix("not a list: its first ") && failure.hasSuffix(" lines were all rejected"), "\(failure)")
        #expect(decide(s, "evil.example") != nil, "the version in force stays")
        // Junk a chunk cannot hold alone, with entries in the first chunk, still loads.
        try ("good.example\n" + junk).write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        _ = try s.refresh(directory: dir)
        #expect(decide(s, "good.example") != nil)
    }

    @Test func rpzOriginWithoutSOAAndApexTriggerRejected() throws {
        let s = try store(["feed.rpz": "$ORIGIN rpz2.example.\n@ CNAME .\nbad.example CNAME .\n"])
        #expect(decide(s, "bad.example")?.action == .nxdomain)
        #expect(decide(s, "rpz2.example") == nil)
        #expect(s.snapshot.loaded.first?.rejectedLines == 1)
    }

    @Test func rpzActionsBecomeAnswers() {
        let policy = BlockPolicy(mode: .sinkhole)
        let q = { (t: UInt16) in Question(name: WireName.fromText("local.example")!, type: t, qclass: 1) }
        let local = RuleMatch(rule: "local.example", list: "f.rpz", line: 1, zone: WireName.fromText("local.example")!,
                              action: .localData, localData: [LocalRecord(type: 1, rdata: [192, 0, 2, 7])])
        #expect(policy.answer(for: q(1), match: local).addresses == [[192, 0, 2, 7]])
        #expect(policy.answer(for: q(1), match: local).action == .localData)
        #expect(policy.answer(for: q(28), match: local).action == .nodata)
        var nx = local
        nx.action = .nxdomain
        #expect(policy.answer(for: q(1), match: nx).rcode == Rcode.nxDomain, "RPZ action wins over the block mode")
        nx.action = .drop
        #expect(policy.answer(for: q(1), match: nx).action == .drop)
    }

    @Test func allowListFilesWinOverBlocksForNameAndBelow() throws {
        let s = try store(["intel.txt": "example.test\nads.partner.test\n", "ours.allow": "good.example.test\n||partner.test^\n"])
        #expect(decide(s, "bad.example.test")?.action == .block)
        #expect(decide(s, "good.example.test")?.action == .allow)
        #expect(decide(s, "x.good.example.test")?.action == .allow)
        #expect(decide(s, "ads.partner.test")?.action == .allow)
        #expect(decide(s, "ads.partner.test")?.list == "ours.allow")
        #expect(s.snapshot.blockingRule(for: WireName.fromText("good.example.test")!) == nil)
    }

    @Test func mostSpecificRuleAcrossListsAndProvenance() throws {
        let s = try store(["a.txt": "example.test\n", "b.txt": "# comment\n\nevil.example.test\n"])
        let m = try #require(decide(s, "x.evil.example.test"))
        #expect(m.rule == "evil.example.test")
        #expect(m.list == "b.txt")
        #expect(m.line == 3)
    }

    @Test func unusableFilesAreReportedWithReasons() throws {
        let dir = try directory(["empty-of-rules.txt": "exa mple\n"])
        _ = FileManager.default.createFile(atPath: dir + "/bin.dat", contents: Data([0x1F, 0x8B, 0, 0]))
        let s = BlocklistStore()
        let report = try s.refresh(directory: dir)
        #expect(report.failed.count == 2)
        #expect(Set(report.failed.compactMap(\.failure)) == ["not a text file (it contains NUL bytes)", "no valid entry (1 line rejected)"])
        #expect(report.lineErrors.first?.description == "empty-of-rules.txt:1: unexpected text after the name: 'exa mple'")
    }

    /// A file that had entries and has none now (0 bytes, white space, or a feed's header alone:
    /// what a failed download leaves) does not take its entries away; a new empty file is loaded
    /// with none, and removing a file drops them. An emptied allowlist withdraws its exceptions.
    @Test func anEmptiedFileKeepsTheVersionInForce() throws {
        let zone = "$TTL 60\n@ IN SOA ns.rpz.test. h.rpz.test. 1 3600 600 86400 60\n  IN NS ns.rpz.test.\n"
        let dir = try directory(["feed.txt": "evil.example.test\nbad.example.test\n", "placeholder.txt": "",
                                 "zone.rpz": zone + "zoned.example CNAME .\n", "ours.allow": "ok.evil.example.test\n"])
        let s = BlocklistStore()
        let first = try s.refresh(directory: dir)
        #expect(first.failed.isEmpty)
        #expect(first.loaded.map(\.name).sorted() == ["feed.txt", "ours.allow", "placeholder.txt", "zone.rpz"])
        #expect(decide(s, "ok.evil.example.test")?.allowed == true)
        for emptied in ["", "  \n\n\t\r\n"] {
            try emptied.write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
            let report = try s.refresh(directory: dir, force: true)
            #expect(report.failed.compactMap(\.failure) == ["empty, where the version in force has 2 entries (remove the file to drop the list)"])
            #expect(decide(s, "x.evil.example.test")?.list == "feed.txt")
        }
        // Content with no entry (a feed's header, a zone's SOA alone) is held back the same way.
        try (zone + "; no trigger today\n").write(toFile: dir + "/zone.rpz", atomically: true, encoding: .utf8)
        try "# evil indicators\n# updated hourly\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        let headers = try s.refresh(directory: dir)
        #expect(headers.failed.compactMap(\.failure).sorted() == [
            "no entry, where the version in force has 1 entry (remove the file to drop the list)",
            "no entry, where the version in force has 2 entries (remove the file to drop the list)",
        ])
        #expect(decide(s, "zoned.example")?.list == "zone.rpz")
        #expect(decide(s, "x.evil.example.test")?.list == "feed.txt")
        // An emptied allowlist takes its exception away.
        try "evil.example.test\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        try "".write(toFile: dir + "/ours.allow", atomically: true, encoding: .utf8)
        let withdrawn = try s.refresh(directory: dir)
        #expect(withdrawn.failed.isEmpty)   // the zone is unchanged: still held back, not re-read
        #expect(decide(s, "ok.evil.example.test")?.allowed == false)
        // Removing the files is how their entries go (while a block list with an entry stays:
        // the last ones are kept, see ListProtectionTests).
        try "other.example.test\n".write(toFile: dir + "/other.txt", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: dir + "/feed.txt")
        try FileManager.default.removeItem(atPath: dir + "/zone.rpz")
        try s.refresh(directory: dir)
        #expect(decide(s, "x.evil.example.test") == nil)
        #expect(decide(s, "zoned.example") == nil)
    }

    /// A lone word as a plain or hosts-file entry would block a whole top-level domain, and is
    /// what an error body ("Unauthorized") looks like: refused with a reason, and such a body
    /// leaves the list in force. A TLD is blocked when the line says so (`*.zip`, `||mov^`). In
    /// an allowlist a lone word would lift every block under a TLD: refused too, `||lan^` kept.
    @Test func aSingleLabelIsRefusedUnlessTheRuleSaysWholeTLD() throws {
        let dir = try directory([
            "feed.txt": "c2.example.test\nUnauthorized\n0.0.0.0 wpad ads.example.test\n*.zip\n||mov^\n"
                + "127.0.0.1 localhost localhost.localdomain localhost4 localhost4.localdomain4\n::1 localhost6 localhost6.localdomain6\n",
            "home.allow": "||lan^\ncom\n",
            "lan.txt": "printer.lan\nmsstorageboxes.com\n",
        ])
        let s = BlocklistStore()
        let first = try s.refresh(directory: dir)
        #expect(first.lineErrors.map(\.description) == [
            "feed.txt:2: a single label, which would block a whole top-level domain (to mean that, write ||unauthorized^): 'Unauthorized'",
            "feed.txt:3: a single label, which would block a whole top-level domain (to mean that, write ||wpad^): '0.0.0.0 wpad ads.example.test'",
            "home.allow:2: a single label, which would allow a whole top-level domain and lift every block rule in it (to mean that, write ||com^): 'com'",
        ])
        #expect(decide(s, "printer.lan")?.allowed == true)
        #expect(decide(s, "msstorageboxes.com")?.allowed == false, "the lone 'com' lifted nothing")
        #expect(decide(s, "unauthorized") == nil)
        #expect(decide(s, "x.unauthorized") == nil)
        #expect(decide(s, "wpad") == nil)
        #expect(decide(s, "ads.example.test")?.line == 3)
        #expect(decide(s, "invoice.zip")?.line == 4)
        #expect(decide(s, "a.b.mov")?.line == 5)
        // A failed download's body replaces the feed: the feed stays in force.
        try "Unauthorized\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.failed.compactMap(\.failure) == ["no valid entry (1 line rejected)"])
        #expect(decide(s, "c2.example.test")?.list == "feed.txt")
    }

    /// What serve does not read and may have been meant as a list (a backup copy, a subdirectory,
    /// a link to nothing) is logged once, not at every refresh; notes, hidden files and download
    /// leftovers are not logged (check names them all).
    @Test func entriesNotReadAsListsAreLoggedOnce() throws {
        let dir = try directory(["feed.txt": "a.example.test\n", "feed.txt.bak": "b.example.test\n", "README.md": "notes\n",
                                 ".feed.txt.swp": "", "next.txt.part": "c.example\n"])
        try FileManager.default.createDirectory(atPath: dir + "/more", withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: dir + "/gone.txt", withDestinationPath: dir + "/nowhere.txt")
        let s = BlocklistStore()
        let first = try s.refresh(directory: dir)
        #expect(first.skipped.map(\.name) == ["feed.txt.bak", "gone.txt", "more"])
        let recorder = LogRecorder()
        BlocklistStore.log(first, logger: recorder.logger)
        let lines = recorder.events("not read as a list")
        #expect(lines.map(\.level) == [.info, .info, .info])
        #expect(lines.map { $0.metadata["file.name"] } == ["feed.txt.bak", "gone.txt", "more"])
        #expect(lines[1].metadata["reason"] == "a link to nothing, or gone (stat failed)")
        #expect(try s.refresh(directory: dir, force: true).skipped.isEmpty, "said once")
        // Gone and back: said again.
        try FileManager.default.removeItem(atPath: dir + "/feed.txt.bak")
        #expect(try s.refresh(directory: dir).skipped.isEmpty)
        try "b.example.test\n".write(toFile: dir + "/feed.txt.bak", atomically: true, encoding: .utf8)
        #expect(try s.refresh(directory: dir).skipped.map(\.name) == ["feed.txt.bak"])
    }

    /// A list that drops most of its entries is loaded (feeds do shrink) with a warning, since a
    /// truncated download looks the same.
    @Test func aListThatLosesMostOfItsEntriesIsLoggedAsSuch() throws {
        let names = (0..<200).map { "n\($0).example.test" }
        let dir = try directory(["feed.txt": names.joined(separator: "\n"), "small.txt": "a.example.test\n"])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        try (names.prefix(19).joined(separator: "\n") + "\n").write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        try "b.example.test\n".write(toFile: dir + "/small.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.loaded.count == 2)
        #expect(decide(s, "n150.example.test") == nil)
        let recorder = LogRecorder()
        BlocklistStore.log(report, logger: recorder.logger)
        let warnings = recorder.events("list lost most of its entries")
        #expect(warnings.map(\.level) == [.warning])
        #expect(warnings.first?.metadata["entries"] == "19")
        #expect(warnings.first?.metadata["entries_before"] == "200")
        #expect(warnings.first?.metadata["file.path"] == .string(dir + "/feed.txt"))
    }

    /// Text from a list reaches the log and `check` with its control characters escaped, and a
    /// long line is quoted, not copied.
    @Test func badLinesAreQuotedPrintablyAndShort() throws {
        let long = String(repeating: "a", count: 1_000_000) + " b"
        let dir = try directory(["esc.txt": "good.example.test\n\u{1B}[31mRED\u{1B}[0m.example\n\(long)\n"])
        let s = BlocklistStore()
        let report = try s.refresh(directory: dir)
        #expect(report.lineErrors.count == 2)
        let escaped = LogText.printable(report.lineErrors[0].description)
        #expect(escaped == "esc.txt:2: character '\\x1b' is not allowed in a domain name: '\\x1b[31mRED\\x1b[0m.example'", "\(escaped)")
        #expect(!escaped.unicodeScalars.contains { $0.value < 0x20 })
        let cut = report.lineErrors[1].description
        #expect(cut.utf8.count < 400)
        #expect(cut.hasSuffix("... (999802 more bytes)'"), "\(cut.suffix(60))")
    }

    @Test func formatDetection() {
        #expect(ListFormat.detect(name: "x.rpz", bytes: []) == .rpz)
        #expect(ListFormat.detect(name: "feed", bytes: Array("; zone\n$TTL 60\n".utf8)) == .rpz)
        #expect(ListFormat.detect(name: "feed", bytes: Array("rpz. 60 IN SOA a. b. 1 2 3 4 5\n".utf8)) == .rpz)
        #expect(ListFormat.detect(name: "hosts", bytes: Array("0.0.0.0 a.example\n".utf8)) == .lines)
    }

    /// An IOC export that lists its addresses first and its domains after: both are rules. (The
    /// format was guessed from the first 20 lines, so 20 addresses first made every domain line
    /// an error, and a reload of a file that gained them dropped its domains.) A file of
    /// addresses alone is reported as an address list.
    @Test func addressesAndDomainsMixInOneFile() throws {
        let addresses = (1...25).map { "198.51.100.\($0)" }.joined(separator: "\n")
        let s = try store(["incident.txt": "# IOCs\n" + addresses + "\n2001:db8:bad::/48\nc2-a.example.net\nc2-b.example.net\n",
                           "only.txt": "203.0.113.7\n203.0.113.0/28\n"])
        #expect(decide(s, "c2-a.example.net")?.rule == "c2-a.example.net")
        #expect(decide(s, "www.c2-b.example.net")?.list == "incident.txt")
        #expect(s.snapshot.decideAddress([198, 51, 100, 25])?.rule == "198.51.100.25/32")
        #expect(s.snapshot.decideAddress(IPAddress.parse("2001:db8:bad::1")!)?.rule == "2001:db8:bad::/48")
        #expect(s.snapshot.decideAddress([203, 0, 113, 9])?.list == "only.txt")
        let lists = Dictionary(uniqueKeysWithValues: s.snapshot.loaded.map { ($0.name, $0) })
        #expect(lists["incident.txt"]?.format == .lines && lists["incident.txt"]?.rejectedLines == 0)
        #expect(lists["incident.txt"]?.entries == 28)
        #expect(lists["only.txt"]?.format == .ips)
    }

    /// An indicator range wider than /8 (IPv4) or /16 (IPv6) in a blocklist is a refused line,
    /// with its reason: `0.0.0.0/0` would block every answer. An allowlist may hold one.
    @Test func indicatorRangesTooWideToMeanOneAreRefused() throws {
        let dir = try directory(["feed.txt": "c2.example\n0.0.0.0/0\n10.0.0.0/7\n10.0.0.0/8\n::/0\n2001:db8::/16\n",
                                 "feed.ips": "0.0.0.0/1\n192.0.2.1\n",
                                 "wide.allow": "0.0.0.0/0\n"])
        let s = BlocklistStore()
        let report = try s.refresh(directory: dir)
        let reasons = report.lineErrors.map(\.description)
        #expect(reasons.contains { $0.hasPrefix("feed.txt:2: a /0 range, which would block answers across a large part of the internet") }, "\(reasons)")
        #expect(reasons.contains { $0.hasPrefix("feed.txt:3: a /7 range") } && reasons.contains { $0.hasPrefix("feed.txt:5: a /0 range") })
        #expect(reasons.contains { $0.hasPrefix("feed.ips:1: a /1 range") })
        #expect(!reasons.contains { $0.hasPrefix("feed.txt:4") || $0.hasPrefix("feed.txt:6") || $0.hasPrefix("wide.allow") })
        #expect(s.snapshot.decideAddress([8, 8, 8, 8])?.list == "wide.allow", "the allowlist's /0 is in force")

        // The same bound on RPZ rpz-ip triggers, but not on a passthru (an exception).
        let zone = """
        $TTL 300
        $ORIGIN rpz.example.test.
        @ IN SOA ns.rpz.example.test. hostmaster.rpz.example.test. ( 1 3600 600 86400 60 )
          IN NS ns.rpz.example.test.
        0.0.0.0.0.rpz-ip CNAME .
        24.0.2.0.192.rpz-ip CNAME .
        4.0.0.0.10.rpz-ip CNAME rpz-passthru.

        """
        let rpzDir = try directory(["feed.rpz": zone])
        let r = BlocklistStore()
        let rpzReport = try r.refresh(directory: rpzDir)
        #expect(rpzReport.lineErrors.map(\.description).contains { $0.hasPrefix("feed.rpz:5: a /0 range") }, "\(rpzReport.lineErrors)")
        #expect(rpzReport.lineErrors.count == 1)
        #expect(r.snapshot.decideAddress([192, 0, 2, 9]) != nil && r.snapshot.decideAddress([200, 1, 1, 1]) == nil)
        #expect(r.snapshot.decideAddress([8, 8, 8, 8])?.allowed == true, "the /4 passthru is in force")
    }

    /// RPZ precedence within a zone: the closest trigger wins, an exact one over a wildcard and a
    /// longer wildcard over a shorter. A wildcard passthru lifted the exact trigger under it (it
    /// was taken for an allow rule, which beats every block), so `*.corp.example CNAME
    /// rpz-passthru.` unblocked `c2.corp.example CNAME .` written right below it.
    @Test func rpzClosestTriggerWinsOverAWildcardPassthru() throws {
        let zone = """
        $ORIGIN rpz.example.test.
        @ IN SOA ns.rpz.example.test. hostmaster.rpz.example.test. ( 1 3600 600 86400 60 )
        *.corp.example        CNAME rpz-passthru.
        c2.corp.example       CNAME .
        *.lab.corp.example    CNAME *.
        ok.bad.example        CNAME rpz-passthru.
        *.bad.example         CNAME .

        """
        let s = try store(["feed.rpz": zone])
        #expect(decide(s, "c2.corp.example")?.action == .nxdomain, "an exact trigger beats a wildcard passthru")
        #expect(decide(s, "c2.corp.example")?.line == 4)
        #expect(decide(s, "x.c2.corp.example")?.action == .allow, "the exact trigger does not cover names below it")
        #expect(decide(s, "www.corp.example")?.action == .allow)
        #expect(decide(s, "a.lab.corp.example")?.action == .nodata, "a longer wildcard beats a shorter passthru")
        #expect(decide(s, "ok.bad.example")?.action == .allow, "an exact passthru beats a wildcard block")
        #expect(decide(s, "other.bad.example")?.action == .nxdomain)
        // Across lists an allow still wins: another list's passthru lifts this zone's block.
        let both = try store(["feed.rpz": zone, "mine.allow": "c2.corp.example\n"])
        #expect(decide(both, "c2.corp.example")?.action == .allow)
    }

    /// A rejected RPZ record is named by the line it starts on. ldns's count went a line off
    /// after a record in parentheses, and named such a record by its last line.
    @Test func rpzRejectedRecordsNameTheLineTheyStartOn() throws {
        let zone = "$TTL 300\n$ORIGIN rpz.test.\n@ SOA ns hm ( 1 2\n 3 4 5 )\nbad1.example A x ; c\n; c\n$TTL 60\n"
            + "bad2.example A y\nmulti.example TXT ( \"a\"\n \"b\" )\nbad3.example A z\n\n   \nok.example CNAME .\nbad4.example A w"
        let dir = try directory(["feed.rpz": zone])
        let report = try BlocklistStore().refresh(directory: dir)
        #expect(report.lineErrors.map(\.line) == [5, 8, 9, 11, 15])
        #expect(report.lineErrors.map(\.text) == ["bad1.example A x ; c", "bad2.example A y", "multi.example TXT ( \"a\"",
                                                  "bad3.example A z", "bad4.example A w"])
    }

    /// From a SOC trial: a list whose file name is not UTF-8 (Latin-1) was said at info to be "a
    /// link to nothing" and its indicators went unenforced. It is named, bytes escaped, as a
    /// file to rename, which serve says as a warning and check counts as unusable.
    @Test func aFileNameThatIsNotUTF8IsNamedAsOneToRename() throws {
        let dir = try directory(["ok.txt": "ok.example\n"])
        let path = Array(dir.utf8CString.dropLast()) + Array("/bad".utf8CString.dropLast()) + [CChar(bitPattern: 0xFF)]
            + Array("name.txt".utf8CString)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        #expect(fd >= 0)
        _ = write(fd, "latin.example\n", 14)
        close(fd)
        let (files, skipped) = try BlocklistLoader.listing(of: dir)
        #expect(files == [dir + "/ok.txt"])
        #expect(skipped.map(\.name) == ["bad%FFname.txt"])
        #expect(skipped.first?.unreadableName == true)
        #expect(skipped.first?.reason.hasPrefix("its name is not valid UTF-8") == true)
        // Only where it would be read as a list: not a hidden or editor's file, nor a directory
        // (a code review found `.\xE9.swp` failed check).
        for (bytes, directory) in [(Array(".".utf8) + [0xE9] + Array(".swp".utf8), false), (Array("caf".utf8) + [0xE9] + Array(".txt.bak".utf8), false),
                                   (Array("d".utf8) + [0xE9], true)] {
            let full = Array(dir.utf8CString.dropLast()) + [CChar(bitPattern: 0x2F)] + bytes.map { CChar(bitPattern: $0) } + [0]
            if directory { #expect(mkdir(full, 0o755) == 0) } else { let f = open(full, O_WRONLY | O_CREAT, 0o644); #expect(f >= 0); close(f) }
        }
        let dangling = Array(dir.utf8CString.dropLast()) + Array("/gone".utf8CString.dropLast()) + [CChar(bitPattern: 0xE9)] + Array(".txt".utf8CString)
        #expect(symlink("/nonexistent/target", dangling) == 0)
        let again = try BlocklistLoader.listing(of: dir).skipped
        #expect(again.filter(\.unreadableName).map(\.name) == ["bad%FFname.txt"], "\(again)")
        #expect(again.count == 5)
        #expect(again.first { $0.name == "gone%E9.txt" }?.reason == "a link to nothing, or gone (stat failed)")
    }

    /// Adblock's `$important`: a block rule that wins over exceptions that are not `$important`,
    /// in its own file and in other feeds, as AdGuard Home applies it; an important exception
    /// beats it, and so does an allowlist file (the operator's word). Before, any `@@` lifted it.
    @Test func anImportantBlockBeatsTheFeedsExceptions() throws {
        let feed = "||tracker.example^$important\n@@||cdn.tracker.example^\n||ads.example^\n@@||ok.ads.example^\n"
            + "||both.example^$important\n@@||x.both.example^$important\n"
        let s = try store(["feed.txt": feed, "other.txt": "@@||api.tracker.example^\n"])
        #expect(decide(s, "cdn.tracker.example")?.action == .block, "an exception in its own file yields")
        #expect(decide(s, "cdn.tracker.example")?.line == 1)
        #expect(decide(s, "api.tracker.example")?.action == .block, "so does another feed's")
        #expect(decide(s, "ok.ads.example")?.action == .allow, "a plain block still yields to an exception")
        #expect(decide(s, "x.both.example")?.action == .allow, "an important exception beats an important block")
        // A closer plain block in the same list does not hide its `$important` one from another
        // list's exception.
        let closer = try store(["feed.txt": "||c2.example^$important\n||cdn.c2.example^\n", "other.txt": "@@||cdn.c2.example^\n"])
        #expect(decide(closer, "cdn.c2.example")?.action == .block)
        #expect(decide(closer, "cdn.c2.example")?.rule == "c2.example")
        let mine = try store(["feed.txt": feed, "mine.allow": "cdn.tracker.example\n"])
        #expect(decide(mine, "cdn.tracker.example")?.action == .allow, "an allowlist file wins")
        #expect(decide(mine, "www.tracker.example")?.action == .block)
    }

    /// A list of names whose new version is addresses alone (a proxy's page, a "what is my IP"
    /// answer saved as the feed) keeps its version in force, as an emptied one does.
    @Test func aListOfNamesReplacedByAddressesAloneKeepsItsNames() throws {
        let dir = try directory(["feed.txt": "c2.example\nc3.example\n"])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        try "203.0.113.5\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.failed.compactMap(\.failure) == ["only addresses, where the version in force has 2 name entries (remove the file to drop the list)"])
        #expect(decide(s, "c2.example")?.list == "feed.txt")
    }

    /// From a list maintainer's trial: a download killed part way (curl -o, wget) left half of a
    /// 200,000-name feed, ending mid-line, and that half was loaded for good. A file ending
    /// mid-line with fewer entries than its version in force is held as a write cut short; one
    /// that ends with its newline, or has as many entries, is loaded.
    @Test func aListCutShortMidLineKeepsTheVersionInForce() throws {
        let full = (0..<300).map { "host\($0).feed.example\n" }.joined()
        let dir = try directory(["feed.txt": full, "zone.rpz": "$ORIGIN rpz.test.\n" + full.replacingOccurrences(of: "\n", with: " CNAME .\n")])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        let cut = String(full.prefix(2000).dropLast(3))          // mid-line
        // Written in place (the same file), as curl -o or cp write.
        try cut.write(toFile: dir + "/feed.txt", atomically: false, encoding: .utf8)
        try ("$ORIGIN rpz.test.\n" + cut.replacingOccurrences(of: "\n", with: " CNAME .\n")).write(toFile: dir + "/zone.rpz", atomically: false, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.failed.count == 2)
        #expect(report.failed.allSatisfy { $0.failure?.hasPrefix("written in place and ends mid-line, with fewer entries than the version in force") == true })
        #expect(decide(s, "host299.feed.example")?.list == "feed.txt")
        // The same content renamed into place arrived complete: loaded (a re-trial found a
        // shorter list without its final newline refused for good, even by mv).
        try ("$ORIGIN rpz.test.\n" + cut.replacingOccurrences(of: "\n", with: " CNAME .\n")).write(toFile: dir + "/zone.rpz", atomically: true, encoding: .utf8)
        let renamed = try s.refresh(directory: dir)
        #expect(renamed.failed.isEmpty, "\(renamed.failed.compactMap(\.failure))")
        #expect(decide(s, "host299.feed.example")?.list == "feed.txt", "the feed's version in force")
        // Shorter and ending with its newline: a list that really shrank.
        try (full.prefix(2000).split(separator: "\n").dropLast().joined(separator: "\n") + "\n").write(toFile: dir + "/feed.txt", atomically: false, encoding: .utf8)
        #expect(try s.refresh(directory: dir).failed.isEmpty)
        #expect(decide(s, "host299.feed.example") == nil, "gone from both now")
        // A feed that lists each name twice (a hosts file with 0.0.0.0 and :: lines), cut at
        // 60%: counted by names, as the version in force is (a review found it loaded).
        let twice = (0..<300).map { "0.0.0.0 dup\($0).feed.example\n:: dup\($0).feed.example\n" }.joined()
        try twice.write(toFile: dir + "/dups.txt", atomically: false, encoding: .utf8)
        try s.refresh(directory: dir)
        try String(twice.prefix(twice.count * 6 / 10).dropLast(2)).write(toFile: dir + "/dups.txt", atomically: false, encoding: .utf8)
        #expect(try s.refresh(directory: dir).failed.map { ($0.path as NSString).lastPathComponent } == ["dups.txt"])
        #expect(decide(s, "dup299.feed.example")?.list == "dups.txt")
        // Ending mid-line with more entries than before: an edit without a final newline.
        try (full + "host300.feed.example").write(toFile: dir + "/feed.txt", atomically: false, encoding: .utf8)
        #expect(try s.refresh(directory: dir).failed.isEmpty)
        #expect(decide(s, "host300.feed.example")?.list == "feed.txt")
    }

    /// From an operator's trial: a write cut short that follows a rename loaded. A bad file (an
    /// HTML error page) renamed over the list was refused; the cut written over it in place then
    /// had neither the inode of the version in force nor a rename of its own, and 19 of 21 blocks
    /// went. So did a cut written over a good file renamed in, within the reload's quiet time.
    @Test func aWriteCutShortAfterARenameIsHeldToo() throws {
        let full = (0..<300).map { "host\($0).feed.example\n" }.joined()
        let cut = String(full.prefix(2000).dropLast(3))
        let dir = try directory(["feed.txt": full])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        try "<html><body>502 Bad Gateway</body></html>\n".write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        #expect(try s.refresh(directory: dir).failed.count == 1, "the error page is refused")
        try cut.write(toFile: dir + "/feed.txt", atomically: false, encoding: .utf8)   // over the refused file, in place
        let report = try s.refresh(directory: dir)
        #expect(report.failed.first?.failure?.hasPrefix("written in place and ends mid-line") == true, "\(report.failed.compactMap(\.failure))")
        #expect(decide(s, "host299.feed.example")?.list == "feed.txt")
        // A good file renamed in and written over before any read: the watcher saw the write.
        try full.write(toFile: dir + "/feed.txt", atomically: true, encoding: .utf8)
        try cut.write(toFile: dir + "/feed.txt", atomically: false, encoding: .utf8)
        let unseen = try s.refresh(directory: dir, writtenInPlace: ["feed.txt"])
        #expect(unseen.failed.first?.failure?.hasPrefix("written in place and ends mid-line") == true)
        #expect(decide(s, "host299.feed.example")?.list == "feed.txt")
        #expect(try s.refresh(directory: dir, force: true).failed.count == 1, "and held again when read again (SIGHUP)")
        // A refused file made usable without a write (a chmod: same inode, same content) is not
        // taken for one written in place (a code review found it refused).
        let previous = try #require(s.snapshot.loaded.first { $0.name == "feed.txt" })
        try "host1.feed.example\nhost2.feed".write(toFile: dir + "/short.txt", atomically: true, encoding: .utf8)
        let unchanged = FileSignature(path: dir + "/short.txt")
        #expect(BlocklistLoader.load(file: dir + "/short.txt", previous: previous, lastFailed: unchanged).failure == nil)
        try "host1.feed.example\nhost33.feed".write(toFile: dir + "/short.txt", atomically: false, encoding: .utf8)   // a size of its own: mtime is coarse
        #expect(BlocklistLoader.load(file: dir + "/short.txt", previous: previous, lastFailed: unchanged).failure?
                    .hasPrefix("written in place") == true, "written over since it was refused")
    }

    /// What Windows PowerShell 5 writes (`"name" > list.txt`): UTF-16LE with a byte-order mark
    /// and CRLF. Read as the text it is (it was refused as not text, for its NUL bytes); big-endian
    /// too; an odd number of bytes is refused with a reason.
    @Test func utf16ListsWithAByteOrderMarkAreRead() throws {
        let dir = try directory([:])
        let text = "\u{FEFF}msstorageboxes.com\r\n# comment\r\n198.51.100.7\r\nsbmsa.wiki\r\n"
        let little = text.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let big = text.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        try Data(little).write(to: URL(fileURLWithPath: dir + "/windows.txt"))
        try Data(big).write(to: URL(fileURLWithPath: dir + "/big-endian.rpz.txt"))
        try Data(little.dropLast()).write(to: URL(fileURLWithPath: dir + "/cut.txt"))
        let zone = "$TTL 300\n$ORIGIN rpz.example.test.\n@ IN SOA ns.rpz.example.test. h.rpz.example.test. ( 1 3600 600 86400 60 )\n  IN NS ns.rpz.example.test.\nzone-only.example CNAME .\n"
        try Data(("\u{FEFF}" + zone).utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }).write(to: URL(fileURLWithPath: dir + "/windows.rpz"))
        let s = BlocklistStore()
        let report = try s.refresh(directory: dir)
        #expect(decide(s, "www.msstorageboxes.com")?.list == "big-endian.rpz.txt")
        #expect(decide(s, "sbmsa.wiki") != nil)
        #expect(decide(s, "zone-only.example")?.list == "windows.rpz", "an RPZ zone in UTF-16 too")
        #expect(s.snapshot.decideAddress([198, 51, 100, 7]) != nil)
        let lists = Dictionary(uniqueKeysWithValues: s.snapshot.loaded.map { ($0.name, $0) })
        #expect(lists["windows.txt"]?.entries == 3 && lists["windows.txt"]?.rejectedLines == 0)
        #expect(lists["big-endian.rpz.txt"]?.entries == 3)
        #expect(report.failed.compactMap(\.failure) == ["UTF-16 text with an odd number of bytes (save the file as UTF-8)"])
    }

    @Test func unchangedFilesAreNotReRead() throws {
        let dir = try directory(["a.txt": "a.example\n", "b.txt": "b.example\n"])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        let before = s.snapshot.loaded.first { $0.name == "a.txt" }
        try "c.example\n".write(toFile: dir + "/b.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.loaded.map(\.name) == ["b.txt"])
        #expect(report.unchanged == 1)
        #expect(s.snapshot.loaded.first { $0.name == "a.txt" } === before)
        let nothing = try s.refresh(directory: dir)
        #expect(!nothing.changed)
    }

    @Test func reloadOfAChangedFileSharesUnchangedRunsWithRightLines() throws {
        let n = 6_000
        func text(_ salt: String, header: String) -> String {
            header + (0..<n).map { "h\($0)-\($0 < n / 2 ? "a" : salt).bench.test\n" }.joined()
        }
        let dir = try directory(["big.txt": text("a", header: "# v1\n")])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        let v1 = try #require(s.snapshot.loaded.first)
        // Second half replaced, and one more header line: every unchanged name moves down one line.
        try text("b", header: "# v2\n# changed\n").write(toFile: dir + "/big.txt", atomically: true, encoding: .utf8)
        let report = try s.refresh(directory: dir)
        #expect(report.loaded.count == 1)
        let v2 = try #require(s.snapshot.loaded.first)
        #expect(v2.entries == n)
        #expect(v2.matcher.sharedSegments(with: v1.matcher) > v1.matcher.segmentCount / 2 - 3)
        #expect(decide(s, "h0-a.bench.test")?.line == 3)
        #expect(decide(s, "x.h2999-a.bench.test")?.line == 3_002)
        #expect(decide(s, "h3000-a.bench.test") == nil)
        #expect(decide(s, "h3000-b.bench.test")?.line == 3_003)
        #expect(decide(s, "h5999-b.bench.test")?.line == 6_002)
        // A bad new version keeps the one in force.
        try ("h1-a.bench.test\n\u{0}\n").write(toFile: dir + "/big.txt", atomically: true, encoding: .utf8)
        let bad = try s.refresh(directory: dir)
        #expect(bad.failed.count == 1)
        #expect(decide(s, "h5999-b.bench.test")?.line == 6_002)
    }

    @Test func filesLargerThanTheReadBufferKeepEveryLineAndItsNumber() throws {
        // About 10 MB: lines straddle the 4 MiB reads at arbitrary points.
        let n = 400_000
        var text = ""
        text.reserveCapacity(n * 26)
        for i in 1...n { text += i % 1_000 == 0 ? "# comment \(i)\n" : "n\(i).chunked-list.test\n" }
        let dir = try directory(["big.txt": text])
        let s = BlocklistStore()
        try s.refresh(directory: dir)
        let list = try #require(s.snapshot.loaded.first)
        #expect(list.entries == n - n / 1_000)
        #expect(list.rejectedLines == 0)
        for i in 1...n where i % 1_000 != 0 {
            guard decide(s, "n\(i).chunked-list.test")?.line == i else {
                Issue.record("n\(i) not found on line \(i)")
                return
            }
        }
    }
}
