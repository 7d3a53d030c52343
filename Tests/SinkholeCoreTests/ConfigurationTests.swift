import Foundation
import Testing
@testable import SinkholeCore

@Suite struct ConfigurationTests {
    @Test func socketAddressesParse() throws {
        #expect(try SocketAddress.parse("127.0.0.1:5300").description == "127.0.0.1:5300")
        #expect(try SocketAddress.parse("[::1]:5300").description == "[::1]:5300")
        #expect(try SocketAddress.parse("192.0.2.53", defaultPort: 53).port == 53)
        #expect(try SocketAddress.parse("2001:db8::53", defaultPort: 53).isIPv6)
        #expect(try SocketAddress.parse("[2001:db8::53]", defaultPort: 53).port == 53)
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("localhost:53") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("127.0.0.1:99999") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("127.0.0.1") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("[::1:53") }
    }

    @Test func durationsParse() {
        #expect(DurationText.seconds("2") == 2)
        #expect(DurationText.seconds("2s") == 2)
        #expect(DurationText.seconds("1500ms") == 1.5)
        #expect(DurationText.seconds("1m") == 60)
        #expect(DurationText.seconds("abc") == nil)
        #expect(DurationText.seconds("-1s") == nil)
        #expect(DurationText.seconds("0.5s") == 0.5 && DurationText.seconds(".5") == 0.5 && DurationText.seconds("7d") == 604_800)
        // What Double would take but is no duration: hex (0x10 was 16 s), exponents, infinity.
        for text in ["0x10", "1e3", "1e3s", "inf", "nan", "1..5s", ".", "s", "", "+5s", "5 s"] {
            #expect(DurationText.seconds(text) == nil, "\(text)")
        }
    }

    /// The nameservers of a resolv.conf holding `text`, read from a file of its own.
    func nameservers(_ text: String) throws -> [SocketAddress] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resolv-\(UUID()).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return ResolvConf.nameservers(path: path)
    }

    @Test func resolvConfNameserversExcludeSinkholeItself() throws {
        let servers = try nameservers("# comment\nnameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%lo\nnameserver fe80::2%nosuchif9\nnameserver 192.0.2.54:5353\nsearch example.org\n")
        #expect(servers.map(\.description) == ["127.0.0.1:53", "192.0.2.53:53", "[fe80::1%lo]:53", "[fe80::2]:53"])
        let kept = ResolvConf.excludingSelf(servers, listen: [try SocketAddress.parse("127.0.0.1:53")])
        #expect(kept.map(\.description) == ["192.0.2.53:53", "[fe80::1%lo]:53", "[fe80::2]:53"])
        let wildcard = ResolvConf.excludingSelf(servers, listen: [try SocketAddress.parse("0.0.0.0:53")])
        #expect(wildcard.map(\.description) == ["192.0.2.53:53", "[fe80::1%lo]:53", "[fe80::2]:53"], "a wildcard listener is not every address")
    }

    /// From an operator's trial: the systemd unit's RestrictAddressFamilies denied netlink, so
    /// getifaddrs failed and a wildcard listener's loop check lost this host's addresses with
    /// nothing said. Said now (serve warns, check notes); the unit allows AF_NETLINK.
    @Test func unreadableInterfaceAddressesAreSaidForAWildcardListener() throws {
        let wildcard = [try SocketAddress.parse("0.0.0.0:53")]
        let denied: () throws -> Set<[UInt8]> = { throw SystemError("getifaddrs", EAFNOSUPPORT) }
        let problem = try #require(ResolvConf.hostAddressProblem(listen: wildcard, read: denied))
        #expect(problem.hasPrefix("cannot read this host's interface addresses (getifaddrs: Address family not supported by protocol)"))
        #expect(ResolvConf.hostAddressProblem(listen: [try SocketAddress.parse("127.0.0.1:53")], read: denied) == nil, "no wildcard: not needed")
        #expect(ResolvConf.hostAddressProblem(listen: wildcard, read: { [] }) == nil, "readable: nothing to say")
        let unit = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/SinkholeCoreTests/ConfigurationTests.swift", with: "deploy/sinkhole.service"), encoding: .utf8)
        #expect(unit.split(separator: "\n").contains { $0.hasPrefix("RestrictAddressFamilies=") && $0.contains("AF_NETLINK") })
    }

    /// From an upstream-failure trial: a link-local upstream (`fe80::1%eth0`, as NetworkManager
    /// writes router-advertised servers) lost its zone, and every try failed with EINVAL; nor
    /// could it be given as --upstream. The zone is the interface the socket address names.
    @Test func linkLocalUpstreamsKeepTheirInterface() throws {
        let lo = if_nametoindex("lo")
        #expect(lo > 0)
        for text in ["[fe80::1%lo]:5353", "fe80::1%lo"] {
            let address = try SocketAddress.parse(text, defaultPort: 5353)
            #expect(address.scope == lo && address.description == "[fe80::1%lo]:5353")
            let scope = address.withSockAddr { pointer, _ in
                UnsafeRawPointer(pointer).assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_scope_id
            }
            #expect(scope == lo, "the socket address names the interface")
        }
        #expect(try SocketAddress.parse("[fe80::1%\(lo)]:53").scope == lo, "a zone may be the index")
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("[fe80::1%nosuchif9]:53") }
        #expect(throws: SocketAddress.ParseError.self) { try SocketAddress.parse("192.0.2.1%lo:53") }
    }

    @Test func resolvConfEntriesThatReachSinkholeAreLeftOut() throws {
        let servers = try nameservers("nameserver 0.0.0.0\nnameserver ::ffff:127.0.0.1\nnameserver ::\nnameserver 192.0.2.53\n")
        // 0.0.0.0 reaches this host's 127.0.0.1 and :: its ::1; ::ffff:127.0.0.1 is 127.0.0.1.
        let listen = [try SocketAddress.parse("127.0.0.1:53"), try SocketAddress.parse("[::1]:53")]
        #expect(ResolvConf.excludingSelf(servers, listen: listen).map(\.description) == ["192.0.2.53:53"])
        #expect(ResolvConf.excludingSelf(servers, listen: [try SocketAddress.parse("10.0.0.53:53")]).count == 4,
                "they reach loopback, not every address of the host")
    }

    /// From an upstream-failure trial: a wildcard listener also takes this host's own addresses
    /// on its port, so `--listen 0.0.0.0:53 --upstream <this host's LAN address>` looped.
    @Test func aWildcardListenerReachesTheHostsOwnAddresses() throws {
        let own: Set<[UInt8]> = [[192, 0, 2, 2], [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2]]
        let wildcard = try SocketAddress.parse("0.0.0.0:53")
        #expect(ResolvConf.reaches(try SocketAddress.parse("192.0.2.2:53"), wildcard, hostAddresses: own))
        #expect(ResolvConf.reaches(try SocketAddress.parse("[::ffff:192.0.2.2]:53"), wildcard, hostAddresses: own))
        #expect(!ResolvConf.reaches(try SocketAddress.parse("192.0.2.3:53"), wildcard, hostAddresses: own), "another host")
        #expect(!ResolvConf.reaches(try SocketAddress.parse("192.0.2.2:5353"), wildcard, hostAddresses: own), "another port")
        #expect(!ResolvConf.reaches(try SocketAddress.parse("[2001:db8::2]:53"), wildcard, hostAddresses: own), "another family")
        #expect(ResolvConf.reaches(try SocketAddress.parse("[2001:db8::2]:53"), try SocketAddress.parse("[::]:53"), hostAddresses: own))
        #expect(!ResolvConf.reaches(try SocketAddress.parse("192.0.2.2:53"), try SocketAddress.parse("127.0.0.1:53"), hostAddresses: own),
                "a listener on one address takes only that one")
        #expect(ResolvConf.hostAddresses().contains([127, 0, 0, 1]), "this host's own addresses, loopback among them")
    }

    @Test func listFileNamesSkipDocsBackupsAndHiddenFiles() {
        #expect(BlocklistLoader.isListFileName("crowdstrike-3cx.txt"))
        #expect(BlocklistLoader.isListFileName("hosts"))
        #expect(!BlocklistLoader.isListFileName("README.md"))
        #expect(!BlocklistLoader.isListFileName(".hidden"))
        #expect(!BlocklistLoader.isListFileName("..data"))
        #expect(!BlocklistLoader.isListFileName("list.txt~"))
        #expect(!BlocklistLoader.isListFileName("list.txt.swp"))
        // From a list maintainer's trial: what editors, patch and sed -i leave mid-edit.
        for leftover in ["#feed.txt#", "4913", "feed.txt.orig", "feed.txt.rej", "feed.txt.old", "feed.txt.save",
                         "feed.txt.dpkg-tmp", "feed.txt.ucf-dist", "sedX1b2Zq"] {
            #expect(!BlocklistLoader.isListFileName(leftover), "\(leftover)")
        }
        #expect(BlocklistLoader.isListFileName("sedona-c2.txt") && BlocklistLoader.isListFileName("4913.txt"))
        #expect(BlocklistLoader.looksMeantAsAllowList("whitelist.txt") && BlocklistLoader.looksMeantAsAllowList("local.allow.txt"))
        #expect(!BlocklistLoader.looksMeantAsAllowList("local.allow") && !BlocklistLoader.looksMeantAsAllowList("crowdstrike-3cx.txt"))
        #expect(BlocklistLoader.looksMeantAsAllowList("white-list.txt") && BlocklistLoader.looksMeantAsAllowList("ALLOW_LIST"))
        for fine in ["disallow.txt", "not-allowed.txt", "swallow.txt", "exceptional-threats.txt"] {
            #expect(!BlocklistLoader.looksMeantAsAllowList(fine), "\(fine)")
        }
        for partial in ["feed.txt.crdownload", "feed.txt.new", ".feed.txt.swo"] { #expect(!BlocklistLoader.isListFileName(partial)) }
    }
}
