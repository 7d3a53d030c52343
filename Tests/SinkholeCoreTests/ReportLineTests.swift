import Foundation
import Testing
@testable import SinkholeCore

/// The targeted block log line scanner and the time parsing behind `--since`/`--until`.
@Suite struct ReportLineTests {
    static let documented = #"{"@timestamp":"2026-11-26T21:01:41.974Z","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"nxdomain","dataset":"sinkhole.block"},"source":{"ip":"10.20.31.9","port":47708},"network":{"transport":"tcp","protocol":"dns"},"dns":{"type":"answer","id":53353,"question":{"name":"www.cloaked.example.com","type":"A","class":"IN"},"response_code":"NXDOMAIN"},"rule":{"name":"msstorageboxes.com","ruleset":"crowdstrike-3cx.txt"},"sinkhole":{"schema_version":1,"match":"cname","matched_name":"cdn.msstorageboxes.com","chain_position":1,"rule_line":26,"ttl":60}}"#

    @Test func readsTheDocumentedLine() {
        #expect(BlockLogRecord.parse(Self.documented) == BlockLogRecord(
            time: ReportFixture.ms("2026-11-26T21:01:41.974Z"), client: "10.20.31.9", domain: "www.cloaked.example.com",
            rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt", action: "nxdomain"))
    }

    @Test func readsWhatTheWriterWritesIncludingEscapesAndIPv6() throws {
        let match = RuleMatch(rule: "x.example", list: "my list.txt", line: 1, zone: [0])
        let answer = BlockAnswer(match: match, action: .drop, rcode: 0, addresses: [], ttl: 60)
        let qname: [UInt8] = [5, 0x22, 0x5C, 0x2E, 0x01, 0x41, 1, 0x58, 7] + Array("EXAMPLE".utf8) + [0]
        let event = BlockEvent(time: timespec(tv_sec: 1_795_726_830, tv_nsec: 875_000_000),
                               client: SocketAddress(address: try #require(IPAddress.parse("fd00:20::31:7")), port: 1),
                               transport: .tcp, id: 1, qname: qname, qtype: 1, qclass: 1, answer: answer)
        let record = try #require(BlockLogRecord.parse(event.jsonLine()))
        #expect(record.time == 1_795_726_830_875)
        #expect(record.client == "fd00:20::31:7")
        #expect(record.domain == #"\"\\\.\001a.x.example"#)   // presentation form, lowercased
        #expect(record.list == "my list.txt")
        #expect(record.action == "drop")
    }

    @Test func keyOrderWhitespaceUnknownFieldsAndEscapedKeysDoNotMatter() {
        let line = " { \"dns\" : { \"question\" : { \"name\" : \"A\\u0042c.Example\" } } , \"extra\" : [ {}, [], -0.5e-3, \"\\ud83d\\ude00\" ] ,"
            + " \"source\":{\"\\u0069p\":\"10.0.0.1\"}, \"@timestamp\":\"2026-01-02T03:04:05Z\" }\r"
        #expect(BlockLogRecord.parse(line) == BlockLogRecord(time: ReportFixture.ms("2026-01-02T03:04:05Z"), client: "10.0.0.1", domain: "abc.example"))
    }

    @Test func rejectsLinesThatAreNotWholeBlockLogObjects() {
        let good = Self.documented
        let bad = [
            "",
            "garbage",
            String(good.dropLast()),                     // truncated: the writer was cut off
            String(good.prefix(200)),
            good + "x",                                  // trailing garbage
            good + "{}",
            "[" + good + "]",                            // not an object
            "null",
            good.replacingOccurrences(of: #""ip":"10.20.31.9""#, with: #""ip":10"#),               // wrong type
            good.replacingOccurrences(of: #""source":{"ip":"10.20.31.9","port":47708},"#, with: ""),  // missing field
            good.replacingOccurrences(of: #"2026-11-26T21:01:41.974Z"#, with: "yesterday"),
            good.replacingOccurrences(of: #"2026-11-26T21:01:41.974Z"#, with: "2026-02-30T00:00:00Z"),
            good.replacingOccurrences(of: "www.cloaked", with: "www\\x.cloaked"),                 // bad escape
            good.replacingOccurrences(of: "www.cloaked", with: "www\u{01}.cloaked"),              // raw control byte
            good.replacingOccurrences(of: #""ttl":60"#, with: #""ttl":060"#),
            good.replacingOccurrences(of: #""ttl":60"#, with: #""ttl":tru"#),
            good.replacingOccurrences(of: #""ttl":60"#, with: #""ttl":"#),
            good.replacingOccurrences(of: ",", with: ",,"),
            "{\"a\":" + String(repeating: "[", count: 100_000),   // nesting bomb: refused, no stack overflow
            "{\"a\":" + String(repeating: "{\"a\":", count: 50_000),
        ]
        for line in bad { #expect(BlockLogRecord.parse(line) == nil, "\(line.prefix(80))") }
    }

    @Test func numbersBeyondADoublesRangeAreRefused() {
        let tooLarge: [String] = ["4e708", "-1.8e308", "1.7976931348623159e308", String(repeating: "9", count: 309)]
        for number in tooLarge {
            let line = Self.documented.replacingOccurrences(of: #""port":47708"#, with: "\"port\":" + number)
            #expect(BlockLogRecord.parse(line) == nil, "\(number.prefix(40))")
        }
    }

    @Test func numbersWithinADoublesRangeAreAccepted() {
        for number in ["4e2", "1.7976931348623157e308", "1e-400", "-0.5E+3", String(repeating: "9", count: 308)] {
            let line = Self.documented.replacingOccurrences(of: #""ttl":60"#, with: "\"ttl\":" + number)
            #expect(BlockLogRecord.parse(line) != nil, "\(number.prefix(40))")
        }
    }

    @Test func rfc3339TimesAreParsedToMillisecondsUTC() {
        #expect(ReportTime.parse("1970-01-01T00:00:00Z") == 0)
        #expect(ReportTime.parse("2026-11-26T21:00:30.875Z") == 1_795_726_830_875)
        #expect(ReportTime.parse("2026-11-26T22:00:30.875+01:00") == 1_795_726_830_875)
        #expect(ReportTime.parse("2026-11-26T16:30:30.875-04:30") == 1_795_726_830_875)
        #expect(ReportTime.parse("2026-11-26t21:00:30.8759999z") == 1_795_726_830_875)
        #expect(ReportTime.parse("2026-11-26 21:00:30.8") == 1_795_726_830_800)
        #expect(ReportTime.parse("2026-11-26T21:00Z") == 1_795_726_800_000)
        #expect(ReportTime.parse("2028-02-29T00:00:00Z") == 1_835_395_200_000)
        #expect(ReportTime.parse("1969-12-31T23:59:59.999Z") == -1)
        for bad in ["2026-11-26", "2026-11-26T", "2027-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-26T24:00:00Z",
                    "2026-11-26T21:00:30.Z", "2026-11-26T21:00:30Zjunk", "2026-11-26T21:00:30+0100", "26-11-2026T00:00:00Z"] {
            #expect(ReportTime.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func timesAreFormattedAsTheLogWritesThem() {
        for text in ["2026-11-26T21:00:30.875Z", "1970-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z", "2000-02-29T12:34:56.007Z"] {
            #expect(ReportTime.parse(text).map(ReportTime.format) == text)
        }
    }

    @Test func boundsAcceptTimesDatesAndDurationsBeforeNow() throws {
        let now = ReportFixture.ms("2026-11-26T21:00:00Z")
        #expect(try ReportTime.bound("2026-11-26T10:00:00Z", now: now, upper: false) == ReportFixture.ms("2026-11-26T10:00:00Z"))
        #expect(try ReportTime.bound("2026-11-26", now: now, upper: false) == ReportFixture.ms("2026-11-26T00:00:00Z"))
        #expect(try ReportTime.bound("2026-11-26", now: now, upper: true) == ReportFixture.ms("2026-11-27T00:00:00Z"))
        #expect(try ReportTime.bound("30m", now: now, upper: false) == ReportFixture.ms("2026-11-26T20:30:00Z"))
        #expect(try ReportTime.bound("24h", now: now, upper: true) == ReportFixture.ms("2026-11-25T21:00:00Z"))
        #expect(try ReportTime.bound("7d", now: now, upper: false) == ReportFixture.ms("2026-11-19T21:00:00Z"))
        #expect(try ReportTime.bound("2w", now: now, upper: false) == ReportFixture.ms("2026-11-12T21:00:00Z"))
        #expect(try ReportTime.bound("90s", now: now, upper: false) == ReportFixture.ms("2026-11-26T20:58:30Z"))
        #expect(try ReportTime.bound("now", now: now, upper: true) == now)
        for bad in ["", "yesterday", "7", "d", "-7d", "7y", "2026-11-31", "99999999999999999999d", "1e3h"] {
            #expect(throws: ReportTime.BoundError.unrecognised(bad)) { try ReportTime.bound(bad, now: now, upper: false) }
        }
    }
}
