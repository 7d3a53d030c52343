import Foundation
import Testing
@testable import SinkholeCore

@Suite struct SettingsTests {
    func configuration(_ yaml: String, flags: Settings = Settings()) throws -> ServerConfiguration {
        try Settings.parse(yaml: yaml, file: "sinkhole.yaml").overridden(by: flags)
            .configuration(defaultBlocklistDirectory: "/lists", resolvConf: "/nonexistent")
    }

    func error(_ yaml: String) -> String {
        do {
            _ = try configuration(yaml)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func everyKeyIsReadAndFlagsOverrideTheFile() throws {
        let yaml = """
        # sample
        listen: ["127.0.0.1:5300", "[::1]:5300"]
        upstream:
          - 192.0.2.53
          - "[2001:db8::53]:5353"
        blocklist-dir: /srv/lists
        block-log: /var/log/sinkhole/block.log
        block-mode: sinkhole
        sinkhole-ipv4: 192.0.2.1
        sinkhole-ipv6: 2001:db8::1
        block-ttl: 5m
        upstream-timeout: 500ms
        tcp-idle-timeout: 3s
        tcp-max-connections: 64
        edns-buffer-size: 1400
        allow: [10.0.0.0/8]
        deny: [10.9.0.0/16]
        refuse-action: drop
        log-level: warning
        """
        let c = try configuration(yaml)
        #expect(c.listen.map(\.description) == ["127.0.0.1:5300", "[::1]:5300"])
        #expect(c.upstreams.map(\.description) == ["192.0.2.53:53", "[2001:db8::53]:5353"])
        #expect(c.blocklistDirectory == "/srv/lists")
        #expect(c.blockLogPath == "/var/log/sinkhole/block.log")
        #expect(c.blockPolicy.mode == .sinkhole)
        #expect(c.blockPolicy.sinkholeIPv4 == [192, 0, 2, 1])
        #expect(c.blockPolicy.ttl == 300)
        #expect(c.upstreamTimeout == 0.5)
        #expect(c.tcpIdleTimeout == 3)
        #expect(c.tcpMaxConnections == 64)
        #expect(c.ednsPayloadSize == 1400)
        #expect(c.refuseAction == .drop)
        #expect(c.access.allows([10, 1, 2, 3]))
        #expect(!c.access.allows([10, 9, 2, 3]))
        #expect(!c.access.allows([127, 0, 0, 1]), "an allow list replaces the default")

        var flags = Settings()
        flags.setFlag("block-mode", "nxdomain")
        flags.setFlag("listen", ["127.0.0.1:5400"])
        let overridden = try configuration(yaml, flags: flags)
        #expect(overridden.blockPolicy.mode == .nxdomain)
        #expect(overridden.listen.map(\.description) == ["127.0.0.1:5400"])
        #expect(overridden.blocklistDirectory == "/srv/lists")
    }

    @Test func defaultsWhenTheFileIsEmpty() throws {
        let c = try configuration("upstream: 192.0.2.53\n")
        #expect(c.listen.map(\.description) == ["127.0.0.1:53", "[::1]:53"])
        #expect(c.blockPolicy.mode == .nxdomain && c.blockPolicy.ttl == 60)
        #expect(c.upstreamTimeout == 2 && c.tcpIdleTimeout == 10 && c.ednsPayloadSize == 1232)
        #expect(c.blocklistDirectory == "/lists")
        #expect(c.access.allows([192, 168, 1, 1]) && c.access.allows([127, 0, 0, 1]))
        #expect(!c.access.allows([203, 0, 113, 1]))
    }

    @Test func queryHistoryIsOnWhenNamedAndOffWithTheFlag() throws {
        let yaml = "upstream: 192.0.2.53\nquery-history: /var/lib/sinkhole/history.db\nhistory-retention: 7d\n"
        let on = try configuration(yaml)
        #expect(on.queryHistoryPath == "/var/lib/sinkhole/history.db")
        #expect(on.historyRetention == 7 * 86_400)
        #expect(try configuration("upstream: 192.0.2.53\n").queryHistoryPath == nil, "off unless named")
        #expect(try configuration("upstream: 192.0.2.53\n").historyRetention == 30 * 86_400)
        var flags = Settings()
        flags.setFlag("no-query-history", "true")
        #expect(try configuration(yaml, flags: flags).queryHistoryPath == nil, "--no-query-history wins over the file")
        #expect(error("upstream: 192.0.2.53\nhistory-retention: forever\n").hasPrefix("sinkhole.yaml: history-retention 'forever'"))
        #expect(error("upstream: 192.0.2.53\nhistory-retention: 10m\n") == "sinkhole.yaml: history-retention: at least 1h (the history is kept per hour)")
        #expect(error("upstream: 192.0.2.53\nquery-history: \"\"\n") == "sinkhole.yaml: query-history: give a file path")
    }

    @Test func badFilesAreRejectedWithKeyPathAndReason() {
        #expect(error("upstream: 192.0.2.53\nblok-mode: sinkhole\n").hasPrefix("sinkhole.yaml: blok-mode: unknown key"))
        #expect(error("upstream: 192.0.2.53\nblock-mode: refuse\n") == "sinkhole.yaml: block-mode 'refuse': must be nxdomain or sinkhole")
        #expect(error("upstream: 192.0.2.53\nblock-mode: [nxdomain]\n") == "sinkhole.yaml: block-mode: takes one value, not a list")
        #expect(error("upstream: [192.0.2.53, {a: 1}]\n") == "sinkhole.yaml: upstream[1]: expected a single value")
        #expect(error("upstream: 192.0.2.53\nlisten: localhost:53\n").hasPrefix("sinkhole.yaml: listen 'localhost:53'"))
        #expect(error("upstream: 192.0.2.53\nupstream-timeout: soon\n").hasPrefix("sinkhole.yaml: upstream-timeout 'soon'"))
        #expect(error("upstream: 192.0.2.53\nedns-buffer-size: 100\n").contains("from 512 to 4096"))
        #expect(error("upstream: 192.0.2.53\nallow: [10.0.0.0/33]\n").hasPrefix("sinkhole.yaml: allow '10.0.0.0/33'"))
        #expect(error("- a\n- b\n") == "sinkhole.yaml: expected a mapping of settings at the top level")
        #expect(error("listen: [\n").hasPrefix("sinkhole.yaml: not valid YAML"))
        #expect(error("block-mode: nxdomain\n").hasPrefix("no upstream"))
    }

    @Test func accessPolicyLongestPrefixWinsAndDenyWinsTies() throws {
        let p = try AccessPolicy(allow: ["10.0.0.0/8", "10.1.2.3"], deny: ["10.1.0.0/16", "10.0.0.0/8"])
        #expect(!p.allows([10, 5, 5, 5]), "deny wins a tie")
        #expect(!p.allows([10, 1, 9, 9]))
        #expect(p.allows([10, 1, 2, 3]), "a /32 allow inside a denied /16")
        #expect(!p.allows(IPAddress.parse("2001:db8::1")!), "no rule: refused")
        let d = try AccessPolicy(allow: [], deny: [])
        for ok in ["127.0.0.1", "10.1.1.1", "172.31.0.1", "192.168.0.1", "100.64.0.1", "::1", "fd00::1", "fe80::1"] {
            #expect(d.allows(IPAddress.parse(ok)!), "\(ok)")
        }
        for no in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:10.0.0.1"] {
            #expect(!d.allows(IPAddress.parse(no)!), "\(no)")
        }
    }
}
