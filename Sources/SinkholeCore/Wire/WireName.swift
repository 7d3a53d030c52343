/// Helpers for domain names in uncompressed wire format: length-prefixed labels ending
/// with the zero-length root label (RFC 1035 §3.1). Pure Swift, no ldns.
public enum WireName {
    /// ASCII case-insensitive equality (RFC 4343); other bytes compare exactly.
    public static func equalIgnoringCase(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where lower(a[i]) != lower(b[i]) { return false }
        return true
    }

    @inline(__always)
    public static func lower(_ byte: UInt8) -> UInt8 {
        (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
    }

    /// The name with ASCII letters in lower case. Most names already are, and are then returned
    /// as they are: no copy (a cache key is made from every forwarded or cached query's name).
    public static func lowercased(_ name: [UInt8]) -> [UInt8] {
        guard name.contains(where: { $0 &- 0x41 < 26 }) else { return name }
        return name.map(lower)
    }

    /// True for an uncompressed name whose labels are at most 63 bytes and which ends with the
    /// root label and nothing after it.
    public static func isPlainName(_ name: [UInt8]) -> Bool {
        name.withUnsafeBufferPointer { isPlainName($0) }
    }

    public static func isPlainName(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < name.count {
            let length = Int(name[i])
            if length == 0 { return i == name.count - 1 }
            if length > 63 { return false }
            i += 1 + length
        }
        return false
    }

    /// Presentation form without the trailing dot (`www.example.org`; the root is `.`).
    /// Dots and backslashes inside labels are escaped, bytes outside printable ASCII as `\DDD`.
    public static func text(_ name: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(name.count + 8)
        name.withUnsafeBufferPointer { writeText($0) { out.append($0) } }
        return String(decoding: out, as: UTF8.self)
    }

    /// `text(name)`'s bytes, one by one to `put` (straight into a reply, with no string made).
    public static func writeText(_ name: UnsafeBufferPointer<UInt8>, _ put: (UInt8) -> Void) {
        var i = 0
        var wrote = false
        while i < name.count {
            let length = Int(name[i])
            if length == 0 { break }
            let end = min(name.count, i + 1 + length)
            if wrote && end > i + 1 { put(UInt8(ascii: ".")) }
            wrote = wrote || end > i + 1
            for byte in name[(i + 1)..<end] {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"), UInt8(ascii: "\""):
                    put(UInt8(ascii: "\\"))
                    put(byte)
                case 0x21...0x7E:
                    put(byte)
                default:
                    put(UInt8(ascii: "\\"))
                    put(UInt8(ascii: "0") + byte / 100)
                    put(UInt8(ascii: "0") + byte / 10 % 10)
                    put(UInt8(ascii: "0") + byte % 10)
                }
            }
            i = end
        }
        if !wrote { put(UInt8(ascii: ".")) }
    }

    /// Wire form of a plain dotted name such as `www.example.org` or `www.example.org.`.
    /// Accepts any bytes in labels except dots; nil on an empty label, a label over 63 bytes or
    /// a name over 255 bytes. Callers that need hostname rules check them separately.
    public static func fromText(_ text: String) -> [UInt8]? {
        var s = Substring(text)
        if s == "." { return [0] }
        if s.hasSuffix(".") { s = s.dropLast() }
        guard !s.isEmpty else { return nil }
        var out: [UInt8] = []
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count <= 63 else { return nil }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        return out.count <= 255 ? out : nil
    }
}
