import Foundation
import Glibc
import SinkholeCore
import SinkholeTestSupport
import Testing

/// A listener on 0.0.0.0 or :: answers each UDP query from the address it was sent to. On a host
/// with several addresses the routing table would otherwise pick the reply's source, and a
/// resolver (a connected socket, dig, glibc) drops a reply from any address but the one it asked.
/// Loopback has many IPv4 addresses (127.0.0.0/8): a query to 127.0.0.2, from 127.0.0.1, is
/// answered from 127.0.0.1 by the routing table. The test clients' sockets are connected to the
/// address they ask, so the kernel drops a reply from another.
@Suite struct WildcardListenTests {
    static func harness(_ listen: [SocketAddress]) throws -> TestHarness {
        try TestHarness(lists: ["intel.txt": "evil.example\n"],
                        records: ["www.example.org. 300 IN A 192.0.2.7", "tc.example.org. 300 IN A 192.0.2.40"]) {
            $0.listen = listen
        }
    }

    @Test func ipv4WildcardAnswersFromTheAddressAsked() throws {
        let h = try WildcardListenTests.harness([SocketAddress(address: [0, 0, 0, 0], port: 0)])
        defer { h.stop() }
        #expect(h.address.ip.allSatisfy { $0 == 0 })
        h.upstream.set(.truncateUDP, for: "tc.example.org")
        for last: UInt8 in [1, 2, 77] {
            let asked = SocketAddress(address: [127, 0, 0, last], port: h.address.port)
            // Blocked: answered on the listener's loop, in the batch's send slot.
            let blocked = try #require(DNSTestClient.ask("evil.example", server: asked, timeout: 2), "no reply from \(asked)")
            #expect(blocked.rcode == Rcode.nxDomain)
            // Forwarded: the upstream's answer comes back on the loop and joins the batch.
            let forwarded = try #require(DNSTestClient.ask("www.example.org", server: asked, timeout: 2), "no forwarded reply from \(asked)")
            #expect(forwarded.records(.answer).map(\.rdata) == [[192, 0, 2, 7]])
            // Retried over TCP upstream: the reply is sent from another thread, one datagram alone.
            let retried = try #require(DNSTestClient.ask("tc.example.org", server: asked, timeout: 2), "no retried reply from \(asked)")
            #expect(retried.records(.answer).map(\.rdata) == [[192, 0, 2, 40]])
        }
        // The block log names the client, as always.
        let lines = try h.blockLogLines()
        #expect(lines.count == 3)
        #expect(lines.allSatisfy { $0.at("source.ip") as? String == "127.0.0.1" })
    }

    @Test func ipv6WildcardAnswersOverLoopback() throws {
        let h = try WildcardListenTests.harness([SocketAddress(address: [UInt8](repeating: 0, count: 16), port: 0)])
        defer { h.stop() }
        let asked = SocketAddress(address: [UInt8](repeating: 0, count: 15) + [1], port: h.address.port)
        let blocked = try #require(DNSTestClient.ask("evil.example", server: asked, timeout: 2))
        #expect(blocked.rcode == Rcode.nxDomain)
        let forwarded = try #require(DNSTestClient.ask("www.example.org", server: asked, timeout: 2))
        #expect(forwarded.records(.answer).map(\.rdata) == [[192, 0, 2, 7]])
        h.upstream.set(.truncateUDP, for: "tc.example.org")
        let retried = try #require(DNSTestClient.ask("tc.example.org", server: asked, timeout: 2))
        #expect(retried.records(.answer).map(\.rdata) == [[192, 0, 2, 40]])
    }

    /// Seen from an unconnected socket, which takes a reply from anywhere: its source is the
    /// address the query was sent to.
    @Test func replySourceIsTheAddressAsked() throws {
        let h = try WildcardListenTests.harness([SocketAddress(address: [0, 0, 0, 0], port: 0)])
        defer { h.stop() }
        // An unconnected client sees the source of the reply itself.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        for last: UInt8 in [3, 200] {
            let asked = SocketAddress(address: [127, 0, 0, last], port: h.address.port)
            let query = DNSTestClient.query("evil.example", id: UInt16(last))
            let sent = asked.withSockAddr { addr, len in query.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, addr, len) } }
            #expect(sent == query.count)
            var from = sockaddr_storage()
            var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &fromLength) }
                }
            }
            #expect(n > 12)
            #expect(SocketAddress(storage: &from) == asked, "reply from \(SocketAddress(storage: &from).map(\.description) ?? "?")")
        }
    }

    /// The binary as an operator runs it in a container (`--listen 0.0.0.0:53`), asked by dig on
    /// an address other than the one the routing table would answer from.
    @Test func digGetsItsAnswerFromAWildcardListener() throws {
        let upstream = try FakeUpstream(records: ["www.example.org. 300 IN A 192.0.2.12"])
        defer { upstream.stop() }
        let lists = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-wild-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: lists, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: lists) }
        try "evil.example\n".write(to: lists.appendingPathComponent("intel.txt"), atomically: true, encoding: .utf8)
        let sinkhole = SinkholeProcess(arguments: ["serve", "--listen", "0.0.0.0:0", "--upstream", upstream.address.description,
                                                   "--blocklist-dir", lists.path])
        #expect(try sinkhole.start(), "no 'listening on' line: \(sinkhole.stderr)")
        defer { _ = sinkhole.stop() }
        let port = String(sinkhole.port)
        let blocked = try runTool("dig", ["-p", port, "@127.0.0.2", "+time=2", "+tries=1", "www.evil.example"])
        #expect(blocked.contains("status: NXDOMAIN"), "\(blocked)")
        #expect(blocked.contains("SERVER: 127.0.0.2#\(port)"), "\(blocked)")
        let forwarded = try runTool("dig", ["-p", port, "@127.0.0.3", "+time=2", "+tries=1", "+short", "www.example.org"])
        #expect(forwarded.trimmingCharacters(in: .whitespacesAndNewlines) == "192.0.2.12", "\(forwarded)")
        let drill = try runTool("drill", ["-p", port, "@127.0.0.4", "evil.example"])
        #expect(drill.contains("rcode: NXDOMAIN"), "\(drill)")
    }

    /// Whether this machine lets a test make a network namespace of its own (root, or user
    /// namespaces allowed) with the `ip` tool: where it cannot, the namespace test is skipped.
    static let canMakeNamespace: Bool = {
        guard let r = try? runProgram("/usr/bin/env", ["unshare", "-n", "ip", "link", "set", "lo", "up"]) else { return false }
        return r.status == 0
    }()

    /// On a host with several addresses of each family (here: a network namespace of the test's
    /// own, two IPv4 and two IPv6 documentation addresses on its loopback), dig asking one address
    /// from another gets its answer from the address it asked. Without packet info the kernel
    /// answers from the address nearest the client (RFC 6724: the client's own), and dig drops it.
    @Test(.enabled(if: WildcardListenTests.canMakeNamespace))
    func bothFamiliesAnswerFromTheAddressAskedOnAHostWithSeveralAddresses() throws {
        let lists = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-ns-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: lists, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(at: lists)
            try? FileManager.default.removeItem(atPath: lists.path + ".fifo")
        }
        try "evil.example\n".write(to: lists.appendingPathComponent("intel.txt"), atomically: true, encoding: .utf8)
        // Everything runs inside the namespace: the server is started, waited for on its
        // "listening on" lines (read from a FIFO, no sleep), asked, and stopped.
        let script = """
        set -e
        ip link set lo up
        ip addr add 192.0.2.53/32 dev lo
        ip addr add 192.0.2.54/32 dev lo
        ip -6 addr add 2001:db8::53/128 dev lo nodad
        ip -6 addr add 2001:db8::54/128 dev lo nodad
        fifo="$1.fifo"; mkfifo "$fifo"
        "$2" serve --listen 0.0.0.0:5353 --listen '[::]:5353' --allow 192.0.2.0/24 --allow 2001:db8::/32 --upstream 127.0.0.1:9 --blocklist-dir "$1" 2>"$fifo" >/dev/null &
        pid=$!
        exec 3<"$fifo"
        seen=0
        while [ $seen -lt 2 ] && read -r line <&3; do case "$line" in *"listening on"*) seen=$((seen + 1)) ;; esac; done
        cat <&3 >/dev/null &
        for pair in "192.0.2.54 192.0.2.53" "2001:db8::54 2001:db8::53"; do
          set -- $pair
          echo "== from $1 to $2"
          dig -p 5353 -b "$1" @"$2" +time=2 +tries=1 www.evil.example || true
        done
        kill $pid; wait $pid || true
        """
        let r = try runProgram("/usr/bin/env", ["unshare", "-n", "sh", "-c", script, "sh", lists.path, SinkholeProcess.binaryPath()])
        let runs = r.output.components(separatedBy: "== from ").dropFirst()
        #expect(runs.count == 2, "\(r.output)")
        for (run, server) in zip(runs, ["192.0.2.53", "2001:db8::53"]) {
            #expect(run.contains("status: NXDOMAIN"), "\(run)")
            #expect(run.contains("SERVER: \(server)#5353"), "\(run)")
        }
    }
}
