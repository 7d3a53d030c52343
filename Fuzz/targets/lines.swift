// Fuzz target `lines`: the line-oriented list parser (plain domains, hosts files, `*.name`
// wildcards, Adblock `||name^` / `@@||name^`) on raw bytes, plus format detection.
//
// Checked:
// - every accepted name is a well-formed lowercase wire name of at most 255 bytes, on a line
//   number the input has;
// - the fast path (a bare hostname) and the general path agree: each line parses to the same
//   names and kinds as the same line with a trailing ` # comment` (which always takes the
//   general path), and is accepted or refused alike.
import SinkholeCore

private struct Entry: Equatable {
    var name: [UInt8]
    var kind: String
}

private func parse(_ bytes: [UInt8]) -> (entries: [Entry], rejected: Int) {
    var entries: [Entry] = []
    var rejected = 0
    ListParser.parse(bytes, file: "fuzz.txt", add: { name, kind, _ in
        entries.append(Entry(name: name, kind: "\(kind)"))
    }, reject: { _ in rejected += 1 })
    return (entries, rejected)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzSupport.bytes(data, size)
    _ = ListFormat.detect(name: "fuzz.txt", bytes: bytes)
    let lineCount = bytes.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }

    ListParser.parse(bytes, file: "fuzz.txt", add: { name, kind, line in
        guard (1...lineCount).contains(line) else {
            fatalError("entry on line \(line) of a \(lineCount)-line input \(FuzzSupport.hex(bytes))")
        }
        guard name.count <= 255, name.last == 0, WireName.isPlainName(name),
              name == WireName.lowercased(name), name.count > 1 else {
            fatalError("accepted a malformed wire name \(FuzzSupport.hex(name)) (\(kind)) from \(FuzzSupport.hex(bytes))")
        }
    }, reject: { error in
        guard (1...lineCount).contains(error.line) else {
            fatalError("error on line \(error.line) of a \(lineCount)-line input: \(error)")
        }
        _ = error.description
    })

    // Fast path against general path, line by line (the first 32 lines).
    for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).prefix(32) {
        let plain = parse(Array(line))
        let commented = parse(Array(line) + Array(" # fuzz".utf8))
        guard plain.entries == commented.entries, (plain.rejected > 0) == (commented.rejected > 0) else {
            fatalError("""
                line \(FuzzSupport.hex(Array(line))) parses to \(plain.entries.map { WireName.text($0.name) + " " + $0.kind }) \
                (\(plain.rejected) rejected) but with a trailing comment to \
                \(commented.entries.map { WireName.text($0.name) + " " + $0.kind }) (\(commented.rejected) rejected)
                """)
        }
    }
    return 0
}
