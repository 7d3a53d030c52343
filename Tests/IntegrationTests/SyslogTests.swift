import Foundation
import Glibc
@testable import SinkholeCore
import SinkholeTestSupport
import Testing

/// Block events delivered to in-test syslog collectors over UDP and TCP.
@Suite struct SyslogTests {
    /// A UDP collector on 127.0.0.1:0.
    final class UDPCollector {
        let fd: Int32
        let address: SocketAddress
        init() throws {
            fd = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: 0), type: Int32(SOCK_DGRAM.rawValue))
            address = SocketAddress.local(of: fd)!
            var flags = fcntl(fd, F_GETFL, 0)
            flags &= ~O_NONBLOCK
            _ = fcntl(fd, F_SETFL, flags)
            var tv = timeval(tv_sec: 3, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }
        func receive() -> String? {
            var buffer = [UInt8](repeating: 0, count: 8192)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }
    }

    /// A TCP collector that reads octet-counted frames.
    final class TCPCollector {
        let listener: Int32
        let address: SocketAddress
        var connection: Int32 = -1
        var buffer: [UInt8] = []
        init(port: UInt16 = 0) throws {
            listener = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: port), type: Int32(SOCK_STREAM.rawValue))
            address = SocketAddress.local(of: listener)!
            guard listen(listener, 4) == 0 else { throw SystemError("listen") }
        }
        func close() {
            if connection >= 0 { Glibc.close(connection) }
            Glibc.close(listener)
        }
        /// The next framed message, waiting up to `timeout` seconds (accepting the sink's connection first).
        func receive(timeout: Double = 5) -> String? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                if let frame = takeFrame() { return frame }
                let fd = connection >= 0 ? connection : listener
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let left = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
                guard left > 0, poll(&p, 1, left) == 1 else { return nil }
                if connection < 0 {
                    connection = accept(listener, nil, nil)
                    continue
                }
                var chunk = [UInt8](repeating: 0, count: 8192)
                let n = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return nil }
                buffer += chunk[0..<n]
            }
        }
        func takeFrame() -> String? {
            guard let space = buffer.firstIndex(of: 0x20), let length = Int(String(decoding: buffer[..<space], as: UTF8.self)),
                  buffer.count >= space + 1 + length else { return nil }
            let message = String(decoding: buffer[(space + 1)..<(space + 1 + length)], as: UTF8.self)
            buffer.removeFirst(space + 1 + length)
            return message
        }
    }

    @Test func udpCollectorGetsOneRFC5424MessagePerBlockedQuery() throws {
        let collector = try UDPCollector()
        let h = try TestHarness(lists: ["intel.txt": "# intel\nevil.example\n"]) { $0.syslog = .udp(collector.address) }
        defer { h.stop() }
        for i in 0..<5 { #expect(DNSTestClient.ask("q\(i).evil.example", server: h.address)?.rcode == Rcode.nxDomain) }
        h.server.blockLog?.flush()
        var names: [String] = []
        for _ in 0..<5 {
            let m = try #require(collector.receive())
            #expect(m.hasPrefix("<133>1 "))
            #expect(m.contains(" sinkhole ") && m.contains(" block [sinkhole@32473 "))
            #expect(m.contains("rule.ruleset=\"intel.txt\"") && m.contains("event.action=\"nxdomain\""))
            #expect(m.contains("source.ip=\"127.0.0.1\""))
            #expect(m.contains("sinkhole.rule_line=\"2\""), "the line of the rule, as in the block log: \(m)")
            if let r = m.range(of: #"dns.question.name="[^"]*""#, options: .regularExpression) { names.append(String(m[r])) }
        }
        #expect(Set(names) == Set((0..<5).map { "dns.question.name=\"q\($0).evil.example\"" }))
        #expect(try h.blockLogLines().count == 5, "the file log is written as well")
    }

    @Test func tcpCollectorThatGoesAwayGetsTheQueuedEventsWhenItComesBack() throws {
        var collector = try TCPCollector()
        let port = collector.address.port
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"]) { $0.syslog = .tcp(collector.address) }
        defer { h.stop() }
        #expect(DNSTestClient.ask("first.evil.example", server: h.address) != nil)
        h.server.blockLog?.flush()
        #expect(collector.receive()?.contains("first.evil.example") == true)

        // The collector goes away: DNS keeps answering, the file log stays complete.
        collector.close()
        for i in 0..<3 { #expect(DNSTestClient.ask("down\(i).evil.example", server: h.address)?.rcode == Rcode.nxDomain) }
        h.server.blockLog?.flush()
        #expect(try h.blockLogLines().count == 4)

        // It comes back on the same port: the three queued events arrive.
        collector = try TCPCollector(port: port)
        defer { collector.close() }
        var received: [String] = []
        while received.count < 3, let m = collector.receive(timeout: 10) { received.append(m) }
        #expect(received.count == 3)
        for i in 0..<3 { #expect(received.contains { $0.contains("down\(i).evil.example") }) }
        #expect(h.server.syslog?.counts.dropped == 0)
    }

    /// A UDP collector whose port refuses (ICMP port unreachable): connecting always works and
    /// every other send fails. The operator's log says so once, not once per try (it said
    /// about ten a second), and DNS and the block log go on.
    @Test func aFlappingCollectorIsSaidOnceNotPerTry() throws {
        let probe = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &length) } }
        close(probe)   // nothing listens there now: each datagram draws a port unreachable
        let port = UInt16(bigEndian: addr.sin_port)
        let recorder = LogRecorder()
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"], logger: recorder.logger) {
            $0.syslog = .udp(SocketAddress(address: [127, 0, 0, 1], port: port))
        }
        defer { h.stop() }
        for i in 0..<30 {
            #expect(DNSTestClient.ask("n\(i).evil.example", server: h.address)?.rcode == Rcode.nxDomain)
            h.server.blockLog?.flush()
        }
        #expect(try h.blockLogLines().count == 30)
        #expect(recorder.events("syslog collector unreachable; events are queued and re-sent").count == 1)
        #expect(recorder.events("syslog connected").count == 1)
        #expect(recorder.events("syslog delivering again").count <= 1)
    }

    /// Events still queued when sinkhole stops are lost with the process. The trial: a TCP
    /// collector gone, 20 blocked queries, SIGTERM, and nothing in the log but `stopped`. Now
    /// the stop says how many and to where, before `stopped`.
    @Test func eventsQueuedAtStopAreCountedInTheLog() throws {
        // Bound but not listening: every connect is refused, and no one else gets the port.
        let refusing = try Socket.bound(SocketAddress(address: [127, 0, 0, 1], port: 0), type: Int32(SOCK_STREAM.rawValue))
        defer { close(refusing) }
        let collector = SocketAddress.local(of: refusing)!
        let recorder = LogRecorder()
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"], logger: recorder.logger) { $0.syslog = .tcp(collector) }
        for i in 0..<20 { #expect(DNSTestClient.ask("q\(i).evil.example", server: h.address)?.rcode == Rcode.nxDomain) }
        #expect(try h.blockLogLines().count == 20)
        h.stop()

        let said = recorder.events("syslog collector unreachable at stop; queued events not delivered")
        #expect(said.count == 1)
        #expect(said.first?.level == .warning)
        #expect(said.first?.metadata["undelivered"] == "20")
        #expect(said.first?.metadata["target"] == "tcp://\(collector)")
        let messages = recorder.events.withLock { $0.map(\.message) }
        #expect(messages.firstIndex(of: "syslog collector unreachable at stop; queued events not delivered")
                    ?? .max < messages.firstIndex(of: "stopped") ?? -1, "said before stopped: \(messages)")
    }

    /// A collector that goes away again within a minute of `syslog delivering again` has its
    /// failure held back by the pacing; the log's last word on syslog must not stay 'delivering'.
    @Test func aCollectorGoneAgainWithinTheMinuteIsSaidUnreachableAtStop() throws {
        var collector = try TCPCollector()
        let port = collector.address.port
        let recorder = LogRecorder()
        let h = try TestHarness(lists: ["intel.txt": "evil.example\n"], logger: recorder.logger) { $0.syslog = .tcp(collector.address) }
        #expect(DNSTestClient.ask("first.evil.example", server: h.address) != nil)
        h.server.blockLog?.flush()
        #expect(collector.receive()?.contains("first.evil.example") == true)

        // Gone (said), back (said), gone again within the minute (held back).
        collector.close()
        #expect(DNSTestClient.ask("second.evil.example", server: h.address) != nil)
        h.server.blockLog?.flush()
        #expect(recorder.waitUntil(timeout: 5) { $0.contains { $0.message == "syslog collector unreachable; events are queued and re-sent" } })
        collector = try TCPCollector(port: port)
        #expect(collector.receive(timeout: 10)?.contains("second.evil.example") == true)
        #expect(recorder.waitUntil(timeout: 5) { $0.contains { $0.message == "syslog delivering again" } })
        collector.close()
        #expect(DNSTestClient.ask("third.evil.example", server: h.address) != nil)
        h.server.blockLog?.flush()
        h.stop()

        let syslogWords = recorder.events.withLock { $0.map(\.message).filter { $0.hasPrefix("syslog ") } }
        #expect(syslogWords.last == "syslog collector unreachable at stop; queued events not delivered", "\(syslogWords)")
        let said = recorder.events("syslog collector unreachable at stop; queued events not delivered")
        #expect(said.first?.metadata["undelivered"] == "1")
        #expect(said.first?.metadata["reason"] != nil)
    }

    /// The trial's list file `nl<LF>x] "q.txt`: its name went into rule.ruleset and the summary
    /// with a raw LF, which splits the message in a line-oriented store.
    @Test func aNewlineInAListFileNameReachesTheCollectorEscaped() throws {
        let collector = try UDPCollector()
        let list = "nl\nx] \"q.txt"
        let h = try TestHarness(lists: [list: "nlc2.example\n"]) { $0.syslog = .udp(collector.address) }
        defer { h.stop() }
        #expect(DNSTestClient.ask("nlc2.example", server: h.address)?.rcode == Rcode.nxDomain)
        h.server.blockLog?.flush()
        let m = try #require(collector.receive())
        #expect(!m.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "a control character in \(m)")
        #expect(SyslogTests.sdParam("rule.ruleset", in: m) == #"nl\nx] "q.txt"#, "\(m)")
        #expect(m.hasSuffix(#" by nl\nx] "q.txt: nlc2.example (nxdomain)"#), "\(m)")
        #expect(try h.blockLogLines().first?.at("rule.ruleset") as? String == list, "the block log keeps the name as it is")
    }

    /// Every field goes through the same escaping: C0 controls, DEL and C1 written as the
    /// operational log writes them, and RFC 5424's `"`, `\` and `]` escapes still right, a quote
    /// with a combining mark after it included.
    @Test func everyStructuredDataValueAndTheSummaryAreEscaped() throws {
        let list = "a\u{1b}[31m\t\u{7f}\u{85}\\\"]\"\u{301}.txt"
        let rule = "r\u{0}ule\r\n.example"
        let match = RuleMatch(rule: rule, list: list, line: 7, zone: WireName.fromText("evil.example")!)
        let event = BlockEvent(client: SocketAddress(address: [127, 0, 0, 1], port: 1), transport: .udp, id: 1,
                               qname: WireName.fromText("evil.example")!, qtype: 1, qclass: 1,
                               answer: BlockAnswer(match: match, action: .nxdomain, rcode: 3, addresses: [], ttl: 60))
        let m = SyslogSink.message(event, hostname: "h", pid: 1)
        #expect(!m.unicodeScalars.contains { $0.value < 0x20 || ($0.value >= 0x7F && $0.value <= 0x9F) }, "\(m)")
        #expect(SyslogTests.sdParam("rule.ruleset", in: m) == LogText.printable(list, doublingBackslash: false), "\(m)")
        #expect(SyslogTests.sdParam("rule.name", in: m) == LogText.printable(rule, doublingBackslash: false), "\(m)")
        #expect(SyslogTests.sdParam("sinkhole.ttl", in: m) == "60", "the values after them are read where they are")
        #expect(m.hasSuffix(" by \(LogText.printable(list, doublingBackslash: false)): \(LogText.printable(rule, doublingBackslash: false)) (nxdomain)"), "\(m)")
    }

    /// A query name whose text form holds an escape reads in syslog exactly as in the block log,
    /// so that the two join on `dns.question.name`.
    @Test func aQueryNameReadsAsInTheBlockLog() throws {
        let match = RuleMatch(rule: "example", list: "intel.txt", line: 1, zone: WireName.fromText("example")!)
        let name = [3] + Array("a.b".utf8) + [1, 0x80] + WireName.fromText("example")!
        let event = BlockEvent(client: SocketAddress(address: [127, 0, 0, 1], port: 1), transport: .udp, id: 1,
                               qname: name, qtype: 1, qclass: 1,
                               answer: BlockAnswer(match: match, action: .nxdomain, rcode: 3, addresses: [], ttl: 60))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(event.jsonLine().utf8)) as? [String: Any])
        let logged = try #require(json.at("dns.question.name") as? String)
        #expect(logged == #"a\.b.\128.example"#)
        #expect(SyslogTests.sdParam("dns.question.name", in: SyslogSink.message(event, hostname: "h", pid: 1)) == logged)
    }

    /// The value of SD-PARAM `name` in message `m`, its RFC 5424 escapes undone (§6.3.3); nil if
    /// absent or if an unescaped `]` or the end comes before its closing quote.
    static func sdParam(_ name: String, in m: String) -> String? {
        guard let start = m.range(of: " \(name)=\"") else { return nil }
        var value = String.UnicodeScalarView()
        var scalars = m[start.upperBound...].unicodeScalars.makeIterator()
        while let c = scalars.next() {
            switch c {
            case "\"": return String(value)
            case "]": return nil
            case "\\":
                guard let next = scalars.next() else { return nil }
                if next != "\"" && next != "\\" && next != "]" { value.append("\\") }
                value.append(next)
            default: value.append(c)
            }
        }
        return nil
    }

    @Test func queueIsBoundedAndDropsAreCounted() throws {
        // A collector that never exists: everything waits in the queue, the oldest beyond capacity dropped.
        let sink = SyslogSink(target: .tcp(SocketAddress(address: [127, 0, 0, 1], port: 9)), capacity: 10,
                              logger: TestHarness.quietLogger)
        let match = RuleMatch(rule: "evil.example", list: "l", line: 1, zone: WireName.fromText("evil.example")!)
        let event = BlockEvent(client: SocketAddress(address: [127, 0, 0, 1], port: 1), transport: .udp, id: 1,
                               qname: WireName.fromText("evil.example")!, qtype: 1, qclass: 1,
                               answer: BlockAnswer(match: match, action: .nxdomain, rcode: 3, addresses: [], ttl: 60))
        sink.enqueue([BlockEvent](repeating: event, count: 25))
        #expect(sink.counts.dropped == 15)
        #expect(sink.counts.sent == 0)
    }
}
