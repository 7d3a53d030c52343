import Foundation
import Glibc
import Logging
import Testing
@testable import SinkholeCore

/// The block log is what the SOC's SIEM parses: its lines must not change by a byte when the
/// writer does. These are the lines the String-based writer wrote for events of every shape
/// (sinkhole addresses over TCP, a CNAME block behind a trusted ECS forwarder, a response-IP
/// block, rpz-drop with control characters and quotes in the rule, a retro-hit); the byte
/// writer must give the same, one by one and appended into one chunk.
@Suite struct BlockLogGoldenTests {
    static let expected: [String] = [
        #"{"@timestamp":"2023-03-29T00:00:00.123Z","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"sinkhole","dataset":"sinkhole.block"},"source":{"ip":"2001:db8::7","port":40000},"network":{"transport":"tcp","protocol":"dns"},"dns":{"type":"answer","id":4660,"question":{"name":"Www.MsStorageBoxes.com","type":"AAAA","class":"IN"},"response_code":"NOERROR","resolved_ip":["0.0.0.0","::1"]},"rule":{"name":"msstorageboxes.com","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"qname","rule_line":18,"ttl":60}}"#,
        #"{"@timestamp":"1970-01-01T00:00:00.000Z","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"nxdomain","dataset":"sinkhole.block"},"source":{"ip":"192.0.2.0","subnet":"192.0.2.0/24"},"network":{"transport":"udp","protocol":"dns","forwarded_ip":"10.1.2.3","forwarded_port":53},"dns":{"type":"answer","id":0,"question":{"name":"cdn.example.org","type":"A","class":"IN"},"response_code":"NXDOMAIN"},"rule":{"name":"msstorageboxes.com","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"cname","matched_name":"a.msstorageboxes.com","chain_position":2,"rule_line":18,"ttl":300}}"#,
        #"{"@timestamp":"2099-12-31T23:59:59.999Z","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"nodata","dataset":"sinkhole.block"},"source":{"ip":"127.0.0.1","port":65535},"network":{"transport":"udp","protocol":"dns"},"dns":{"type":"answer","id":65535,"question":{"name":"x.test","type":"HTTPS","class":"IN"},"response_code":"NOERROR"},"rule":{"name":"198.51.100.0/24","ruleset":"ips.txt"},"sinkhole":{"schema_version":1,"match":"response-ip","matched_ip":"198.51.100.9","rule_line":7,"ttl":0}}"#,
        #"{"@timestamp":"2023-03-29T00:00:00.123Z","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"drop","dataset":"sinkhole.block"},"source":{"ip":"127.0.0.1","port":1},"network":{"transport":"udp","protocol":"dns"},"dns":{"type":"answer","id":1,"question":{"name":"\\\"\\\\\\001\\255.x","type":"TYPE65280","class":"CH"}},"rule":{"name":"a\u0001\"b\\c\td\né\r\u001f","ruleset":"l\#u{7F}ist.rpz"},"sinkhole":{"schema_version":1,"match":"qname","rule_line":1,"ttl":60}}"#,
        #"{"@timestamp":"2023-03-29T00:00:00.123Z","ecs":{"version":"8.11.0"},"event":{"kind":"alert","category":"network","type":"info","action":"retro-hit","dataset":"sinkhole.block","start":"2023-03-28T10:40:00.000Z","end":"2023-03-28T10:42:03.456Z"},"source":{"ip":"192.0.2.44"},"network":{"protocol":"dns"},"dns":{"type":"query","question":{"name":"msstorageboxes.com","type":"A","class":"IN"}},"rule":{"name":"msstorageboxes.com","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"history","rule_line":18,"history":{"first_seen":"2023-03-28T10:40:00.000Z","last_seen":"2023-03-28T10:42:03.456Z","count":12,"types":["A","AAAA"]}}}"#,
    ]

    /// Bytes, not Strings, are compared: String equality would take "é" and "e\u{301}" as equal.
    @Test func linesAreByteForByteTheDocumentedOnes() throws {
        let events = GoldenEvents.all()
        let file = Array(BlockLogGoldenTests.expected.map { $0 + "\n" }.joined().utf8)
        #expect(events.count == BlockLogGoldenTests.expected.count)
        for (event, line) in zip(events, BlockLogGoldenTests.expected) {
            #expect(Array(event.jsonLine().utf8) == Array(line.utf8))
        }
        var chunk: [UInt8] = []
        for event in events {
            event.appendJSONLine(to: &chunk)
            chunk.append(0x0A)
        }
        #expect(chunk == file)

        // And through the block log itself, to its file.
        let dir = try BlockEventTests.temporaryDirectory("golden")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try BlockLog(path: dir + "/block.log", logger: Logger(label: "test"))
        for event in events { log.record(event) }
        log.close()
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/block.log"))) == file)
    }

    @Test func timestampsAreRFC3339WithMilliseconds() {
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 0, tv_nsec: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 951_782_400, tv_nsec: 5_000_000)) == "2000-02-29T00:00:00.005Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 4_102_444_799, tv_nsec: 999_999_999)) == "2099-12-31T23:59:59.999Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: -1, tv_nsec: 0)) == "1969-12-31T23:59:59.000Z")
        // Out of range: written in full as the String writer did, never cut to a wrong date.
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 253_402_300_800, tv_nsec: 0)) == "10000-01-01T00:00:00.000Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: -62_167_219_201, tv_nsec: 0)) == "00-1-12-31T23:59:59.000Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 0, tv_nsec: 1_500_000_000)) == "1970-01-01T00:00:00.1500Z")
        #expect(BlockEvent.rfc3339(timespec(tv_sec: 0, tv_nsec: -5_000_000)) == "1970-01-01T00:00:00.0-5Z")
    }

    /// Times from 1970 to 9999 are formatted by arithmetic, not gmtime_r: the two agree on
    /// every 7th day of those 8,000 years (every weekday and day of a month, leap days, century
    /// years such as 2100 that are not leap years and 2000 and 2400 that are), on the seconds
    /// around midnight and at both ends of the range, and the milliseconds are cut, not rounded.
    @Test func arithmeticTimestampsAgreeWithGmtime() {
        func expected(_ seconds: Int, _ nanoseconds: Int) -> String {
            var t = time_t(seconds)
            var tm = Glibc.tm()
            gmtime_r(&t, &tm)
            func pad(_ v: Int32, _ width: Int) -> String {
                let text = String(v)
                return String(repeating: "0", count: max(0, width - text.count)) + text
            }
            return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):"
                + "\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(nanoseconds / 1_000_000), 3))Z"
        }
        var checked = 0
        var mismatches: [String] = []
        let lastDay = 2_932_896   // 9999-12-31
        for day in stride(from: 0, through: lastDay, by: 7) {
            for seconds in [day * 86_400, day * 86_400 + 86_399] {
                let nanoseconds = (day % 1000) * 1_000_000 + 999_999
                let got = BlockEvent.rfc3339(timespec(tv_sec: seconds, tv_nsec: nanoseconds))
                if got != expected(seconds, nanoseconds), mismatches.count < 5 { mismatches.append(got) }
                checked += 1
            }
        }
        for (seconds, text) in [(951_782_399, "2000-02-28T23:59:59.000Z"), (951_868_800, "2000-03-01T00:00:00.000Z"),
                                (4_107_542_400, "2100-03-01T00:00:00.000Z"), (4_107_456_000, "2100-02-28T00:00:00.000Z"),
                                (13_574_563_200, "2400-02-29T00:00:00.000Z"), (253_402_300_799, "9999-12-31T23:59:59.000Z"),
                                (1_680_048_000, "2023-03-29T00:00:00.000Z")] {
            #expect(BlockEvent.rfc3339(timespec(tv_sec: seconds, tv_nsec: 0)) == text)
            #expect(expected(seconds, 0) == text)
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
        #expect(checked > 800_000)
    }

    /// Addresses are written by the log's own IPv4 formatter and inet_ntop for IPv6.
    @Test func addressTextIsTheUsualForm() {
        #expect(IPAddress.text([0, 0, 0, 0]) == "0.0.0.0")
        #expect(IPAddress.text([255, 255, 255, 255]) == "255.255.255.255")
        #expect(IPAddress.text([10, 100, 7, 199]) == "10.100.7.199")
        #expect(IPAddress.text(IPAddress.parse("2001:db8::7")!) == "2001:db8::7")
        #expect(IPAddress.text(IPAddress.parse("::ffff:192.0.2.1")!) == "::ffff:192.0.2.1")
        #expect(IPAddress.text([1, 2, 3]) == "?")
        #expect(IPAddress.text([]) == "?")
    }

    /// A match made on the query path holds the listed name, not its text: the writer writes
    /// the rule from the name (`*.` before a below-only rule), the same as `rule` gives.
    @Test func nameRulesAreWrittenAsTheirText() throws {
        let names: [[UInt8]] = [WireName.fromText("example.org")!, WireName.fromText("a\"b.c\\d.x")!, [3, 0x61, 0x2E, 0x01, 0], [0]]
        for zone in names {
            for below in [false, true] {
                let match = RuleMatch(zone: zone[...], below: below, list: "l.txt", line: 3, action: .block, localData: [])
                let answer = BlockAnswer(match: match, action: .nxdomain, rcode: 3, addresses: [], ttl: 60)
                let event = BlockEvent(time: timespec(tv_sec: 0, tv_nsec: 0), client: SocketAddress(address: [127, 0, 0, 1], port: 9),
                                       transport: .udp, id: 1, qname: zone, qtype: 1, qclass: 1, answer: answer)
                let line = event.jsonLine()
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                let rule = try #require(object["rule"] as? [String: Any])
                #expect(rule["name"] as? String == match.rule, "\(line)")
                #expect(rule["ruleset"] as? String == "l.txt")
            }
        }
        let match = RuleMatch(zone: WireName.fromText("example.org")![...], below: true, list: "l.txt", line: 3, action: .block, localData: [])
        #expect(match.rule == "*.example.org")
        let event = BlockEvent(time: timespec(tv_sec: 0, tv_nsec: 0), client: SocketAddress(address: [127, 0, 0, 1], port: 9),
                               transport: .udp, id: 1, qname: [0], qtype: 1, qclass: 1,
                               answer: BlockAnswer(match: match, action: .nxdomain, rcode: 3, addresses: [], ttl: 60))
        #expect(event.jsonLine().contains(#""rule":{"name":"*.example.org","ruleset":"l.txt"}"#))
    }

    /// The type and class names come from a table made once: the same as ldns gives for every
    /// one of the 65,536 numbers (TYPE65280 and CLASS42 past what ldns knows).
    @Test func typeAndClassNamesAreLdnsOnes() {
        var wrong: [String] = []
        for n in 0...Int(UInt16.max) {
            let v = UInt16(n)
            if RRType.name(v) != RRType.ldnsName(v) { wrong.append("type \(n)") }
            if RRType.className(v) != RRType.ldnsClassName(v) { wrong.append("class \(n)") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(5))")
        #expect(RRType.name(1) == "A" && RRType.name(28) == "AAAA" && RRType.name(65) == "HTTPS" && RRType.name(65280) == "TYPE65280")
        #expect(RRType.className(1) == "IN" && RRType.className(3) == "CH" && RRType.className(42) == "CLASS42")
    }

    /// The byte and String escapers (the report formatter keeps the String one) agree.
    @Test func byteAndStringEscapersAgree() {
        let samples = ["", "plain", "q\"uote", "back\\slash", "\u{0}\u{1}\u{1F}\u{7F}", "tab\tnl\ncr\r", "é e\u{301} \u{2028} 😀 \u{FFFD}",
                       "\u{80}\u{9F}", String(decoding: [0xC3, 0x28, 0xFF], as: UTF8.self)]
        for sample in samples {
            var text = ""
            JSONObjectWriter.appendString(sample, to: &text)
            var bytes: [UInt8] = []
            JSONObjectWriter.appendString(sample, to: &bytes)
            #expect(bytes == Array(text.utf8), "\(sample.debugDescription)")
        }
    }
}


/// Events of every shape the block log writes (for the byte-exact line test).
enum GoldenEvents {
    static func all() -> [BlockEvent] {
        let t = timespec(tv_sec: 1_680_048_000, tv_nsec: 123_456_789)
        let zone = WireName.fromText("msstorageboxes.com")!
        let m = RuleMatch(rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt", line: 18, zone: zone)
        var out: [BlockEvent] = []
        out.append(BlockEvent(time: t, client: SocketAddress(address: IPAddress.parse("2001:db8::7")!, port: 40000),
                              transport: .tcp, id: 4660, qname: WireName.fromText("Www.MsStorageBoxes.com")!, qtype: 28, qclass: 1,
                              answer: BlockAnswer(match: m, action: .sinkhole, rcode: 0, addresses: [[0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]], ttl: 60)))
        var cname = BlockEvent(time: timespec(tv_sec: 0, tv_nsec: 0), client: SocketAddress(address: [10, 1, 2, 3], port: 53),
                               transport: .udp, id: 0, qname: WireName.fromText("cdn.example.org")!, qtype: 1, qclass: 1,
                               answer: BlockAnswer(match: m, action: .nxdomain, rcode: 3, addresses: [], ttl: 300),
                               matchedOn: "cname", matchedName: WireName.fromText("a.msstorageboxes.com")!, chainPosition: 2)
        cname.subnet = ClientSubnet.parse(options: [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2])!
        out.append(cname)
        out.append(BlockEvent(time: timespec(tv_sec: 4_102_444_799, tv_nsec: 999_999_999), client: SocketAddress(address: [127, 0, 0, 1], port: 65535),
                              transport: .udp, id: 65535, qname: WireName.fromText("x.test")!, qtype: 65, qclass: 1,
                              answer: BlockAnswer(match: RuleMatch(rule: "198.51.100.0/24", list: "ips.txt", line: 7, zone: [0], action: .block),
                                                  action: .nodata, rcode: 0, addresses: [], ttl: 0),
                              matchedOn: "response-ip", matchedAddress: [198, 51, 100, 9]))
        out.append(BlockEvent(time: t, client: SocketAddress(address: [127, 0, 0, 1], port: 1), transport: .udp, id: 1,
                              qname: [4, 0x22, 0x5C, 0x01, 0xFF, 1, 0x78, 0], qtype: 65280, qclass: 3,
                              answer: BlockAnswer(match: RuleMatch(rule: "a\u{1}\"b\\c\td\né\r\u{1F}", list: "l\u{7F}ist.rpz", line: 1, zone: [1, 0x78, 0]),
                                                  action: .drop, rcode: 0, addresses: [], ttl: 60)))
        let hit = RetroHit(client: "192.0.2.44", name: "msstorageboxes.com", rule: m, firstSeen: 1_680_000_000_000,
                           lastSeen: 1_680_000_123_456, count: 12, types: ["A", "AAAA"], clientID: 1, nameID: 1)
        out.append(BlockEvent.retroHit(hit, time: t))
        return out
    }
}
