import Foundation
import Logging
import Testing
@testable import SinkholeCore

/// `--forward-zone` and its routes, with the settings helpers of `SettingsTests`.
extension SettingsTests {
    @Test func zonesAreReadFromTheFileAndFromFlags() throws {
        let yaml = """
            upstream: 192.0.2.53
            forward-zone:
              - corp.example=10.0.0.53,10.0.0.54:5353
              - "168.192.in-addr.arpa=[fd00::53]:53"
              - Lab.Corp.Example.=10.0.9.53

            """
        let c = try configuration(yaml)
        #expect(c.forwardZones.map(\.description) == [
            "corp.example=10.0.0.53:53,10.0.0.54:5353", "168.192.in-addr.arpa=[fd00::53]:53", "lab.corp.example=10.0.9.53:53",
        ])
        #expect(c.upstreams.map(\.description) == ["192.0.2.53:53"], "zones leave the default upstreams alone")
        var flags = Settings()
        flags.setFlag("forward-zone", ["ad.example=10.1.1.1"])
        #expect(try configuration(yaml, flags: flags).forwardZones.map(\.zone) == ["ad.example"], "a flag replaces the file's list")
        #expect(try configuration("upstream: 192.0.2.53\n").forwardZones.isEmpty)
    }

    @Test func badZonesAreRefusedWithTheReason() {
        let base = "upstream: 192.0.2.53\nlisten: 127.0.0.1:53\nforward-zone: "
        #expect(error(base + "corp.example\n").hasPrefix("sinkhole.yaml:3: forward-zone 'corp.example': expected DOMAIN=ADDR[:PORT]"))
        #expect(error(base + "\".=10.0.0.53\"\n").hasPrefix("sinkhole.yaml:3: forward-zone '.=10.0.0.53': the root zone's upstreams are --upstream"))
        #expect(error(base + "corp..example=10.0.0.53\n").hasPrefix("sinkhole.yaml:3: forward-zone 'corp..example=10.0.0.53': corp..example: empty label"))
        #expect(error(base + "corp.example=dc1.corp.example\n").contains("not an IPv4 or IPv6 address literal"))
        #expect(error(base + "corp.example=\n") .hasPrefix("sinkhole.yaml:3: forward-zone 'corp.example=': an empty upstream address"))
        #expect(error(base + "corp.example=10.0.0.53,,10.0.0.54\n").contains("an empty upstream address"))
        #expect(error(base + "corp.example=10.0.0.53:0\n").contains("port 0 cannot be sent to"))
        #expect(error(base + "corp.example=0.0.0.0\n").contains("not a usable upstream address"))
        #expect(error(base + "corp.example=10.0.0.53,10.0.0.53:53\n").contains("10.0.0.53:53 given twice"))
        #expect(error(base + "corp.example=127.0.0.1\n") == "sinkhole.yaml:3: forward-zone 'corp.example=127.0.0.1': 127.0.0.1:53 names sinkhole's own listen address 127.0.0.1:53: queries would loop")
        #expect(error("upstream: 192.0.2.53\nforward-zone: [a.example=10.0.0.1, A.Example.=10.0.0.2]\n")
            == "sinkhole.yaml:2: forward-zone 'A.Example.=10.0.0.2': a.example given twice (give all its upstreams in one, separated by commas)")
        #expect(error("upstream: 192.0.2.53\nforward-zone: []\n") == "no error", "no zones, as when the key is left out")
    }

    /// A graceful stop waits for the longest retry loop a query can have: a zone with more
    /// upstreams than --upstream has a longer one.
    @Test func theLongestDeadlineCoversTheLargestZone() throws {
        let zone = try ForwardZone.parse("corp.example=10.0.0.1,10.0.0.2,10.0.0.3").get()
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let forwarder = Forwarder(upstreams: [try SocketAddress.parse("10.0.0.9", defaultPort: 53)], zones: [zone],
                                  timeout: 2, payloadSize: 1232, logger: logger)
        defer { forwarder.stop() }
        #expect(forwarder.deadline == 2 && forwarder.longestDeadline == 6)
        let fixed = Forwarder(upstreams: [try SocketAddress.parse("10.0.0.9", defaultPort: 53)], zones: [zone],
                              timeout: 2, payloadSize: 1232, deadline: 3, logger: logger)
        defer { fixed.stop() }
        #expect(fixed.longestDeadline == 3, "--upstream-deadline holds for every loop")
    }

    /// A due down upstream is probed beside a query only when another upstream of the query's
    /// group is up to take it; otherwise the query itself tries it (a probe beside it sent the
    /// question twice to the same upstream and counted its failure twice).
    @Test func probesGoBesideQueriesOnlyWhenAnotherUpstreamIsUp() throws {
        let health = UpstreamHealth(upstreams: [try SocketAddress.parse("10.0.0.1", defaultPort: 53),
                                                try SocketAddress.parse("10.0.0.2", defaultPort: 53)], firstBackoff: 5)
        for _ in 0..<UpstreamHealth.downAfter { health.failure(1, now: 0) }
        let due: UInt64 = 6_000_000_000
        #expect(health.claimProbes(among: [0, 1], now: 1_000_000_000).isEmpty, "not due yet")
        #expect(health.claimProbes(among: [1], now: due).isEmpty, "alone in its group: the query probes it")
        #expect(health.order(.first, among: [1], now: due) == [1])
        #expect(health.claimProbes(among: [0, 1], now: due) == [1], "beside a query to the one that is up")
        #expect(health.claimProbes(among: [0, 1], now: due).isEmpty, "claimed once")
        #expect(health.order(.first, among: [0, 1], now: due) == [0, 1], "last meanwhile")
    }

    @Test func theLongestZoneOnALabelBoundaryWins() throws {
        func zone(_ text: String) throws -> [UInt8] { try #require(try? DomainName.parse(Substring(text)).get()) }
        let routes = ForwardRoutes([
            .init(name: try zone("corp.example"), upstreams: [1]),
            .init(name: try zone("lab.corp.example"), upstreams: [2]),
            .init(name: try zone("10.in-addr.arpa"), upstreams: [3]),
        ])
        func route(_ name: String) -> [Int]? { routes.route(for: WireName.fromText(name)!)?.upstreams }
        #expect(route("corp.example") == [1])
        #expect(route("WWW.Corp.EXAMPLE.") == [1])
        #expect(route("a.b.lab.corp.example") == [2])
        #expect(route("lab.corp.example") == [2])
        #expect(route("xlab.corp.example") == [1], "a label that only ends like the zone is not in it")
        #expect(route("notcorp.example") == nil)
        #expect(route("example") == nil)
        #expect(route("4.3.2.10.in-addr.arpa") == [3])
        #expect(route("4.3.2.110.in-addr.arpa") == nil)
        #expect(ForwardRoutes([]).route(for: WireName.fromText("corp.example")!) == nil)
    }
}
