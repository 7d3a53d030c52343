// Helpers shared by the fuzz targets (build.sh links this file into every target).
import Foundation
import Logging
import SinkholeCore

enum FuzzSupport {
    /// A logger that prints nothing: the stages log warnings that would flood the fuzzer's output.
    static let silentLogger = Logger(label: "sinkhole.fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The input as an array (libFuzzer may pass a null pointer for the empty input).
    static func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
        guard let data, size > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: size))
    }

    /// A private scratch directory for this process, removed at exit.
    static let scratchDirectory: String = {
        let template = NSTemporaryDirectory() + "sinkhole-fuzz-XXXXXX"
        var chars = Array(template.utf8CString)
        guard mkdtemp(&chars) != nil else { fatalError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        let path = String(cString: chars)
        atexit { FuzzSupport.removeScratch() }
        return path
    }()

    static func removeScratch() {
        try? FileManager.default.removeItem(atPath: scratchDirectory)
    }

    /// Writes `bytes` to `name` in the scratch directory (replacing it) and returns the path.
    static func write(_ bytes: [UInt8], name: String) -> String {
        let path = scratchDirectory + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatalError("cannot create \(path): \(String(cString: strerror(errno)))") }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            guard n > 0 else { fatalError("cannot write \(path)") }
            done += n
        }
        close(fd)
        return path
    }

    /// A blocklist directory with one list of every kind, loaded into a store: names that the
    /// packet seeds ask for are listed, so the corpus reaches every kind of block answer.
    static func makeStore() -> BlocklistStore {
        let dir = scratchDirectory + "/lists"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let lines = """
        # plain, hosts, wildcard and Adblock lines
        blocked.test
        0.0.0.0 hosts.test
        *.wild.test
        ||ads.test^
        @@||ok.ads.test^
        tracker.example
        """
        let rpz = """
        $TTL 60
        @ IN SOA localhost. root.localhost. 1 3600 600 86400 60
          IN NS  localhost.
        nx.rpz.test      CNAME .
        nodata.rpz.test  CNAME *.
        pass.wild.test   CNAME rpz-passthru.
        drop.rpz.test    CNAME rpz-drop.
        *.below.rpz.test CNAME .
        local.rpz.test   A     192.0.2.1
        local.rpz.test   AAAA  2001:db8::1
        """
        _ = write(Array(lines.utf8), name: "lists/fuzz.txt")
        _ = write(Array(rpz.utf8), name: "lists/fuzz.rpz")
        _ = write(Array("allowed.blocked.test\n".utf8), name: "lists/fuzz.allow")
        let store = BlocklistStore()
        do {
            let report = try store.refresh(directory: dir)
            guard report.failed.isEmpty, report.lineErrors.isEmpty, store.snapshot.entryCount > 0 else {
                fatalError("fuzz blocklist did not load cleanly: \(report.failed.map(\.failure)) \(report.lineErrors)")
            }
        } catch {
            fatalError("cannot load the fuzz blocklist: \(error)")
        }
        return store
    }

    /// Checks every reply the chain sends: a whole header with the query's ID and QR set, a
    /// message ldns can decode again, and over UDP no larger than the client accepts.
    static func checkReply(_ reply: [UInt8], to packet: [UInt8], transport: Transport, where stage: String) {
        if reply.isEmpty { return }
        func fail(_ why: String) -> Never {
            fatalError("\(stage): \(why); query \(hex(packet)) reply \(hex(reply))")
        }
        guard reply.count >= Header.size else { fail("reply shorter than a header") }
        guard packet.count >= 2, reply[0] == packet[0], reply[1] == packet[1] else { fail("reply ID differs from the query's") }
        guard reply[2] & 0x80 != 0 else { fail("reply without QR") }
        guard Message(wire: reply) != nil else { fail("reply that ldns cannot decode") }
        if transport == .udp {
            let limit = max(512, Int(Message(wire: packet)?.edns?.udpPayloadSize ?? 512))
            guard reply.count <= limit else { fail("UDP reply of \(reply.count) bytes over the client's \(limit)") }
        }
    }

    /// The byte reader of upstream replies against ldns: what `CachedReply` lays out, ldns must
    /// decode, with the same facts, CNAME/DNAME targets and addresses (the cache, the forwarder
    /// and response inspection read replies with `CachedReply`, and use ldns only where it gives up).
    static func checkReplyReader(_ bytes: [UInt8]) {
        guard let prepared = CachedReply(bytes) else { return }
        guard let message = Message(wire: bytes) else {
            fatalError("CachedReply lays out bytes that ldns cannot decode: \(hex(bytes))")
        }
        let records = message.records(.answer)
        let aliases = records.filter { $0.type == RRType.cname || $0.type == RRType.dname }.map(\.rdata)
        let addresses = records.filter { $0.type == RRType.a || $0.type == RRType.aaaa }.map(\.rdata)
        guard prepared.facts == ReplyFacts(message), prepared.aliasTargets == aliases,
              prepared.answerAddresses == addresses else {
            fatalError("CachedReply and ldns differ: \(prepared.facts) / \(ReplyFacts(message)), \(prepared.aliasTargets) / \(aliases), \(prepared.answerAddresses) / \(addresses): \(hex(bytes))")
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
