import Foundation
import Glibc
import SinkholeTestSupport
@testable import SinkholeCore

/// Block log lines for the report tests, written by the real `BlockEvent.jsonLine()` so the
/// tests follow the writer's format, plus hand-written lines for what the writer cannot produce
/// yet (a future action, unknown fields).
enum ReportFixture {
    static func ms(_ text: String) -> Int64 {
        guard let t = ReportTime.parse(text) else { preconditionFailure("bad fixture time \(text)") }
        return t
    }

    /// One line as `serve` writes it.
    static func line(_ time: String, _ client: String, _ name: String, rule: String, list: String,
                     action: BlockAction = .nxdomain, matchedOn: String = "qname") -> String {
        let t = ms(time)
        let match = RuleMatch(rule: rule, list: list, line: 7, zone: WireName.fromText(rule) ?? [0])
        let answer = BlockAnswer(match: match, action: action, rcode: action == .nxdomain ? 3 : 0,
                                 addresses: action == .sinkhole ? [[10, 20, 0, 80]] : [], ttl: 60)
        let event = BlockEvent(time: timespec(tv_sec: Int(t / 1000), tv_nsec: Int(t % 1000) * 1_000_000),
                               client: SocketAddress(address: IPAddress.parse(client) ?? [], port: 40000),
                               transport: .udp, id: 4122, qname: WireName.fromText(name) ?? [0], qtype: 1, qclass: 1,
                               answer: answer, matchedOn: matchedOn,
                               matchedName: matchedOn == "cname" ? WireName.fromText("cdn." + rule) : nil,
                               chainPosition: matchedOn == "cname" ? 1 : nil)
        return event.jsonLine()
    }

    /// A later schema's event: unknown action, unknown fields, keys in another order.
    static let laterSchema = #"{"sinkhole":{"schema_version":2,"match":"retro","new":{"x":[1,2.5e3,true,null]}},"rule":{"ruleset":"crowdstrike-3cx.txt","name":"msstorageboxes.com"},"@timestamp":"2026-11-26T13:00:00.000Z","event":{"action":"quarantine"},"source":{"port":1,"ip":"10.20.31.10"},"dns":{"question":{"type":"A","name":"CDN.msstorageboxes.com"}}}"#

    /// Eight attempts over three days, five clients, two lists (see the expectations in the tests).
    static var lines: [String] {
        [
            line("2026-11-26T10:00:00.000Z", "10.20.31.7", "msstorageboxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            line("2026-11-26T10:05:00.000Z", "10.20.31.7", "WWW.MSStorageBoxes.com", rule: "msstorageboxes.com", list: "crowdstrike-3cx.txt"),
            line("2026-11-26T11:00:00.000Z", "10.20.31.9", "sbmsa.wiki", rule: "sbmsa.wiki", list: "crowdstrike-3cx.txt", action: .sinkhole),
            line("2026-11-26T12:00:00.000Z", "10.20.31.7", "sbmsa.wiki", rule: "sbmsa.wiki", list: "crowdstrike-3cx.txt"),
            line("2026-11-25T23:59:59.999Z", "192.168.1.5", "ads.example.net", rule: "ads.example.net", list: "ads.txt"),
            line("2026-11-27T00:00:00.000Z", "2001:db8::7", "notmsstorageboxes.com", rule: "notmsstorageboxes.com", list: "ads.txt"),
            laterSchema,
            line("2026-11-26T13:30:00.000Z", "10.20.31.9", "www.cloaked.example.com", rule: "msstorageboxes.com",
                 list: "crowdstrike-3cx.txt", matchedOn: "cname"),
        ]
    }

    /// A retro-hit as the retro-hunt writes it: `client` resolved `name` before the list blocked it.
    /// Not a blocked attempt; `@timestamp` is when the hunt found it.
    static func retroHit(_ time: String, _ client: String, _ name: String, rule: String, list: String) -> String {
        let t = ms(time)
        let match = RuleMatch(rule: rule, list: list, line: 7, zone: WireName.fromText(rule) ?? [0])
        let hit = RetroHit(client: client, name: name, rule: match, firstSeen: t - 86_400_000, lastSeen: t - 3_600_000,
                           count: 14, types: ["A", "AAAA"], clientID: 1, nameID: 1)
        return BlockEvent.retroHit(hit, time: timespec(tv_sec: Int(t / 1000), tv_nsec: Int(t % 1000) * 1_000_000)).jsonLine()
    }

    static func aggregate(_ query: ReportQuery, _ lines: [String] = ReportFixture.lines) -> ReportAggregator {
        let a = ReportAggregator(query: query)
        for l in lines { a.add(line: l) }
        return a
    }

    static func table(_ query: ReportQuery, _ lines: [String] = ReportFixture.lines) -> ReportTable {
        aggregate(query, lines).table()
    }

    static func directory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func write(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// gzip-compresses `text` into `path` with the gzip tool, as logrotate's `compress` does.
    static func gzip(_ text: String, to path: String) throws {
        let plain = path + ".plain"
        try write(plain, text)
        // gzip replaces `plain` with `plain.gz`, which then takes the wanted name.
        guard try runProgram("/usr/bin/env", ["gzip", "-f", plain]).status == 0 else { throw CocoaError(.fileWriteUnknown) }
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: plain + ".gz", toPath: path)
    }
}
