// Fuzz target `rpz`: an RPZ zone file through BlocklistLoader.load (format detection, ldns's
// zone-file reader, the RPZ trigger rules, local data, the matcher build), then lookups in
// the loaded list.
//
// The input is written to `x.rpz` in a private temporary directory for each run (the RPZ
// reader takes a path: ldns reads the zone with stdio).
import SinkholeCore

private let probes: [[UInt8]] = ["example.com", "www.example.com", "a.b.c.d", "rpz-passthru", "x", "*.example.com"]
    .compactMap { WireName.fromText($0) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzSupport.bytes(data, size)
    let path = FuzzSupport.write(bytes, name: "x.rpz")
    let result = BlocklistLoader.load(file: path)
    for error in result.lineErrors { _ = error.description }
    if let list = result.list {
        guard list.format == .rpz else { fatalError("x.rpz loaded as \(list.format)") }
        let blocklist = Blocklist(lists: [list])
        let policy = BlockPolicy(mode: .sinkhole)
        for probe in probes {
            if let match = blocklist.decide(probe) {
                _ = policy.answer(for: Question(name: probe, type: 1, qclass: 1), match: match)
                _ = policy.answer(for: Question(name: probe, type: 28, qclass: 1), match: match)
            }
            _ = blocklist.blockingRule(for: probe)
        }
    } else if result.failure == nil {
        fatalError("load gave neither a list nor a failure")
    }
    return 0
}
