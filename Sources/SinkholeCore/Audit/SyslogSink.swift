import Foundation
import Glibc
import Logging
import Synchronization

/// Where syslog messages go (`--syslog`, `--syslog-server`, `--syslog-protocol`).
public enum SyslogTarget: Sendable, Equatable, CustomStringConvertible {
    /// The local syslog socket (`/dev/log`), datagrams.
    case local(path: String)
    case udp(SocketAddress)
    /// TCP with octet-counting framing (RFC 6587 §3.4.1).
    case tcp(SocketAddress)

    public var description: String {
        switch self {
        case .local(let path): return "unix:\(path)"
        case .udp(let a): return "udp://\(a)"
        case .tcp(let a): return "tcp://\(a)"
        }
    }
}

/// Delivers block events as RFC 5424 syslog messages, with the JSON line's fields as structured
/// data, from its own thread. DNS never waits for it: events are queued (at most `capacity`);
/// while the collector is down or slow they wait and are re-sent once it is back; past the
/// capacity the oldest are dropped, counted and reported. What is still queued at stop is lost
/// with the process, and said with its count. The block log file is written independently, so it
/// stays complete whatever happens here.
public final class SyslogSink: @unchecked Sendable {
    public let target: SyslogTarget
    public let capacity: Int
    private let hostname: String
    private let logger: Logger
    private let condition = NSCondition()
    private var queue: [BlockEvent] = []
    private var head = 0
    private var stopping = false
    private var thread: Thread?
    /// Set by the thread once it has said what it leaves undelivered; `stop` waits for it.
    private var finished = false
    private let sentCount = Atomic<Int>(0)
    private let droppedCount = Atomic<Int>(0)
    private let connectedState = Atomic<Bool>(false)

    public init(target: SyslogTarget, capacity: Int = 100_000, logger: Logger) {
        self.target = target
        self.capacity = capacity
        self.logger = logger
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        hostname = host.isEmpty ? "-" : host
    }

    public var counts: (sent: Int, dropped: Int) {
        (sentCount.load(ordering: .relaxed), droppedCount.load(ordering: .relaxed))
    }

    public var isConnected: Bool { connectedState.load(ordering: .relaxed) }

    public func start() {
        let t = Thread { [self] in run() }
        t.name = "sinkhole.syslog"
        thread = t
        t.start()
    }

    /// Queues events; never blocks on the network.
    public func enqueue(_ events: [BlockEvent]) {
        condition.lock()
        queue.append(contentsOf: events)
        let pending = queue.count - head
        if pending > capacity {
            let excess = pending - capacity
            head += excess
            droppedCount.add(excess, ordering: .relaxed)
        }
        condition.signal()
        condition.unlock()
    }

    /// Tries for up to `timeout` seconds to deliver what is queued (while a collector takes it:
    /// a dead one does not hold up the stop), then stops the thread and waits for it to say what
    /// it leaves undelivered, so that this is said before the server's `stopped`.
    public func stop(timeout: Double = 2) {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        while queue.count > head && Date() < deadline && connectedState.load(ordering: .relaxed) {
            _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.05)))
        }
        stopping = true
        condition.broadcast()
        // A connect or send to a collector gives up within its 2 s SO_SNDTIMEO; a send to a
        // full local socket has no timeout, so the wait is bounded here too.
        let joinDeadline = Date().addingTimeInterval(3)
        while thread != nil && !finished && Date() < joinDeadline { _ = condition.wait(until: joinDeadline) }
        let stuck = thread != nil && !finished
        let undelivered = queue.count - head
        condition.unlock()
        if stuck && undelivered > 0 {
            logger.warning("syslog sender did not stop in time; queued events not delivered",
                           metadata: ["target": "\(target)", "undelivered": "\(undelivered)"])
        }
    }

    // MARK: sender thread

    private var fd: Int32 = -1
    /// Delivery failing, and when each kind of message was last said: a failure is said when it
    /// starts and a recovery when it comes, but neither more than once a minute, so that a
    /// collector that flaps (a UDP port that refuses every other datagram, a TCP collector that
    /// accepts and closes) cannot flood the operator's log. Failures not said are counted into
    /// the next message.
    private var failing = false
    /// Whether this failure was said: its recovery then always is.
    private var failingSaid = false
    private var failurePace = LogPace()
    private var recoveryPace = LogPace()
    private var failuresSinceSaid = 0
    private var lastFailure = ""
    private var everConnected = false

    private func run() {
        var backoff = 0.2
        var droppedReported = 0
        while true {
            condition.lock()
            while queue.count == head && !stopping { condition.wait() }
            if stopping { condition.unlock(); break }
            let batchStart = head
            let batch = Array(queue[head..<min(queue.count, head + 256)])
            condition.unlock()

            if fd >= 0, case .tcp = target, peerClosed() { disconnect("collector closed the connection") }
            if fd < 0 && !connect() {
                failed("cannot connect")
                waitBeforeRetry(&backoff)
                continue
            }
            var delivered = 0
            for event in batch {
                if send(SyslogSink.message(event, hostname: hostname, pid: getpid())) { delivered += 1 } else { break }
            }
            condition.lock()
            // Events dropped meanwhile moved `head` on; never move it back.
            head = min(queue.count, max(head, batchStart + delivered))
            if head > 65_536 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            condition.broadcast()
            condition.unlock()
            sentCount.add(delivered, ordering: .relaxed)
            if delivered > 0 {
                backoff = 0.2
                if failing {
                    failing = false
                    // Said when the failure it ends was (the log's last word is then never a
                    // failure that is over), or otherwise at most once a minute.
                    if failingSaid || recoveryPace.due() {
                        recoveryPace.said()
                        logger.notice("syslog delivering again", metadata: ["target": "\(target)"])
                    }
                    failingSaid = false
                }
            }
            if delivered < batch.count {
                disconnect()
                failed("send failed")
                waitBeforeRetry(&backoff)
            }
            let dropped = droppedCount.load(ordering: .relaxed)
            if dropped > droppedReported {
                logger.error("syslog queue full; oldest events dropped (the block log file is complete)",
                             metadata: ["dropped.total": "\(dropped)", "target": "\(target)"])
                droppedReported = dropped
            }
        }
        if fd >= 0 { close(fd) }
        sayLeftBehind()
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// At stop, the events still queued are lost with the process: said with their count and
    /// the collector, and with the collector's state whatever the pacing held back. A collector
    /// that goes away again within a minute of `syslog delivering again` has its failure held
    /// back, and the log's last word on syslog would otherwise be that delivery works.
    private func sayLeftBehind() {
        condition.lock()
        let undelivered = queue.count - head
        condition.unlock()
        guard undelivered > 0 else { return }
        var metadata: Logger.Metadata = ["target": "\(target)", "undelivered": "\(undelivered)"]
        let dropped = droppedCount.load(ordering: .relaxed)
        if dropped > 0 { metadata["dropped.total"] = "\(dropped)" }
        if failing {
            metadata["reason"] = "\(lastFailure)"
            if failuresSinceSaid > 0 { metadata["failures"] = "\(failuresSinceSaid)" }
            logger.warning("syslog collector unreachable at stop; queued events not delivered", metadata: metadata)
        } else {
            logger.warning("syslog stopped before the queued events were delivered", metadata: metadata)
        }
    }

    private func connect() -> Bool {
        switch target {
        case .local(let path):
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8.prefix(107))
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            } == 0
            return connected(ok)
        case .udp(let address):
            fd = socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            return connected(address.withSockAddr { Glibc.connect(fd, $0, $1) } == 0)
        case .tcp(let address):
            fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return connected(address.withSockAddr { Glibc.connect(fd, $0, $1) } == 0)
        }
    }

    private func connected(_ ok: Bool) -> Bool {
        if !ok {
            close(fd)
            fd = -1
            return false
        }
        connectedState.store(true, ordering: .relaxed)
        if !everConnected {
            everConnected = true
            logger.info("syslog connected", metadata: ["target": "\(target)"])
        }
        return true
    }

    private func disconnect(_ why: String? = nil) {
        if fd >= 0 { close(fd) }
        fd = -1
        connectedState.store(false, ordering: .relaxed)
        if let why { failed(why) }
    }

    /// A failed connect or send: a warning at most once a minute, with the failures since the
    /// last one.
    private func failed(_ why: String) {
        failuresSinceSaid += 1
        lastFailure = why
        let starting = !failing
        failing = true
        guard failurePace.due() else { return }
        failingSaid = true
        logger.warning(starting ? "syslog collector unreachable; events are queued and re-sent" : "syslog collector still unreachable",
                       metadata: ["target": "\(target)", "reason": "\(why)", "failures": "\(failuresSinceSaid)"])
        failuresSinceSaid = 0
    }

    /// Waits `backoff` (unless stopping) and doubles it, up to 30 s. New events wake the
    /// condition too; they do not cut the wait short (a dead collector is not retried at every
    /// block-log flush).
    private func waitBeforeRetry(_ backoff: inout Double) {
        let until = Date().addingTimeInterval(backoff)
        condition.lock()
        while !stopping && Date() < until { _ = condition.wait(until: until) }
        condition.unlock()
        backoff = min(30, backoff * 2)
    }

    /// True when a TCP collector has closed its end: checked before each batch, so that events
    /// are not written into a connection that is already gone (the kernel would accept them).
    private func peerClosed() -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN) | Int16(0x2000) /* POLLRDHUP */, revents: 0)
        guard poll(&p, 1, 0) == 1 else { return false }
        if p.revents & (Int16(POLLHUP) | Int16(POLLERR) | Int16(0x2000)) != 0 { return true }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0
    }

    private func send(_ message: String) -> Bool {
        var bytes = Array(message.utf8)
        if case .tcp = target { bytes = Array("\(bytes.count) ".utf8) + bytes }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
            if case .tcp = target { continue }
            break   // a datagram goes whole or not at all
        }
        return true
    }

    /// One RFC 5424 message: facility local0, severity notice, MSGID `block` (or the event's
    /// action), structured data `[sinkhole@32473 …]` carrying the JSON line's fields by their ECS
    /// names, and a one-line summary. 32473 is the enterprise number RFC 5612 reserves for
    /// documentation: sinkhole has no registered one, and scripts key on `sinkhole@32473`.
    ///
    /// Control characters in values and summary are written as the operational log writes them
    /// (`LogText.printable`): a list file's name can hold a newline, and a raw one would split
    /// the message in a collector's line-oriented store or forge a line of its own. Backslashes
    /// are not doubled there, so that `dns.question.name` reads exactly as in the block log
    /// (`a\.b.example`) and the two join on it. Values then get RFC 5424's escapes (§6.3.3), so
    /// a newline in a list's name reads `\n` once those are undone.
    static func message(_ e: BlockEvent, hostname: String, pid: Int32) -> String {
        // By scalar, not Character: a `"` followed by a combining mark is one Character that
        // is not equal to `"`, and its quote would have gone out unescaped.
        func escape(_ s: String) -> String {
            var out = String.UnicodeScalarView()
            for scalar in LogText.printable(s, doublingBackslash: false).unicodeScalars {
                if scalar == "\"" || scalar == "\\" || scalar == "]" { out.append("\\") }
                out.append(scalar)
            }
            return String(out)
        }
        let name = WireName.text(e.qname)
        let type = RRType.name(e.qtype)
        if let seen = e.sighting {
            let sd: [(String, String)] = [
                ("schema_version", "\(BlockEvent.schemaVersion)"), ("source.ip", e.client.ipText),
                ("dns.question.name", name), ("dns.question.type", type),
                ("event.action", e.answer.action.rawValue), ("event.start", ReportTime.format(seen.firstSeen)),
                ("event.end", ReportTime.format(seen.lastSeen)), ("sinkhole.history.count", "\(seen.count)"),
                ("rule.name", e.answer.match.rule), ("rule.ruleset", e.answer.match.list), ("sinkhole.match", e.matchedOn),
                ("sinkhole.rule_line", "\(e.answer.match.line)"),
            ]
            let data = sd.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: " ")
            let summary = "retro-hit: \(e.client.ipText) resolved \(name) \(seen.count) times before \(e.answer.match.list) listed it (\(e.answer.match.rule))"
            return "<132>1 \(BlockEvent.rfc3339(e.time)) \(hostname) sinkhole \(pid) retro-hit [sinkhole@32473 \(data)] \(LogText.printable(summary, doublingBackslash: false))"
        }
        var sd: [(String, String)] = [("schema_version", "\(BlockEvent.schemaVersion)")]
        if let subnet = e.subnet {
            // The client behind a trusted forwarder, as in the block log's line.
            sd += [("source.ip", IPAddress.text(subnet.address)), ("source.subnet", subnet.text),
                   ("network.forwarded_ip", e.client.ipText), ("network.forwarded_port", "\(e.client.port)")]
        } else {
            sd += [("source.ip", e.client.ipText), ("source.port", "\(e.client.port)")]
        }
        sd += [
            ("network.transport", e.transport.rawValue), ("dns.id", "\(e.id)"),
            ("dns.question.name", name), ("dns.question.type", type),
            ("dns.question.class", RRType.className(e.qclass)),
            ("event.action", e.answer.action.rawValue),
            ("rule.name", e.answer.match.rule), ("rule.ruleset", e.answer.match.list),
            ("sinkhole.match", e.matchedOn),
        ]
        if e.answer.action != .drop { sd.append(("dns.response_code", Rcode.name(UInt16(e.answer.rcode)))) }
        for address in e.answer.addresses { sd.append(("dns.resolved_ip", IPAddress.text(address))) }
        if let matched = e.matchedName { sd.append(("sinkhole.matched_name", WireName.text(matched))) }
        if let position = e.chainPosition { sd.append(("sinkhole.chain_position", "\(position)")) }
        if let address = e.matchedAddress { sd.append(("sinkhole.matched_ip", IPAddress.text(address))) }
        // The same fields as the block log's line: which line of the list matched, too.
        sd.append(("sinkhole.rule_line", "\(e.answer.match.line)"))
        sd.append(("sinkhole.ttl", "\(e.answer.ttl)"))
        let data = sd.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: " ")
        let who = e.subnet.map { "\(IPAddress.text($0.address)) (via \(e.client.ipText))" } ?? e.client.ipText
        let summary = "blocked \(type) \(name) from \(who) by \(e.answer.match.list): \(e.answer.match.rule) (\(e.answer.action.rawValue))"
        return "<133>1 \(BlockEvent.rfc3339(e.time)) \(hostname) sinkhole \(pid) block [sinkhole@32473 \(data)] \(LogText.printable(summary, doublingBackslash: false))"
    }
}
