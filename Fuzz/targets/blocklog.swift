// Fuzz target `blocklog`: the block log reader of `sinkhole report` (BlockLogLine's
// hand-written JSON scanner over raw pointers, RFC 3339 times, string unescaping).
//
// Checked: a line the scanner accepts as a block log line is a JSON object that
// JSONSerialization accepts too (the scanner promises to reject anything that is not one
// well-formed JSON object). Not compared: lines with a \uD800-\uDFFF escape, since
// JSONSerialization refuses unpaired surrogates that the JSON grammar allows.
import Foundation
import SinkholeCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzSupport.bytes(data, size)
    let fields = bytes.withUnsafeBytes { raw -> BlockLogLine? in
        guard let fields = BlockLogLine.scan(raw) else { return nil }
        _ = fields.time(in: raw)
        for span in [fields.timestamp, fields.client, fields.domain, fields.rule, fields.list, fields.action] where span.isPresent {
            _ = fields.string(span, in: raw)
            _ = fields.string(span, in: raw, lowercase: true)
        }
        return fields
    }
    _ = BlockLogRecord.parse(String(decoding: bytes, as: UTF8.self))
    if fields != nil, let text = String(validatingCString: bytes.map { CChar(bitPattern: $0) } + [0]),
       text.range(of: #"\\u[dD][89a-fA-F]"#, options: .regularExpression) == nil {
        guard let json = try? JSONSerialization.jsonObject(with: Data(bytes)), json is [String: Any] else {
            fatalError("scanner accepted a line JSONSerialization rejects: \(FuzzSupport.hex(bytes))")
        }
    }
    return 0
}
