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

    /// Whether the wire-form `name` (any letter case) is `zone` (lowercase wire form) or below
    /// it: the zone's bytes end the name, starting on one of its labels.
    public static func isWithin(_ name: UnsafeBufferPointer<UInt8>, zone: [UInt8]) -> Bool {
        guard zone.count <= name.count else { return false }
        let start = name.count - zone.count
        var at = 0
        while at < start, name[at] != 0 { at += Int(name[at]) + 1 }
        guard at == start else { return false }
        for i in 0..<zone.count where lower(name[start + i]) != zone[i] { return false }
        return true
    }

    /// Wire form of a name in presentation format, the inverse of `text`: `\.`, `\\` and `\"`
    /// are the character itself, `\DDD` the byte of that decimal value, and any other `\X` the
    /// character X (RFC 1035 5.1). Names the query history keeps as `text` wrote them (a label
    /// holding a dot or a byte such as 0x80) come back as the names asked; `fromText` split
    /// `evil\.example.com` into three labels, and read `\200` as four bytes. Nil on an empty
    /// label, a label over 63 bytes, a name over 255, or an escape cut short.
    public static func fromPresentation(_ text: String) -> [UInt8]? {
        let bytes = Array(text.utf8)
        if bytes == [UInt8(ascii: ".")] { return [0] }
        var out: [UInt8] = []
        var label: [UInt8] = []
        var i = 0
        func endLabel() -> Bool {
            guard !label.isEmpty, label.count <= 63 else { return false }
            out.append(UInt8(label.count))
            out += label
            label.removeAll(keepingCapacity: true)
            return true
        }
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: ".") {
                guard endLabel() else { return nil }
                i += 1
                if i == bytes.count { break }   // the final dot
                continue
            }
            guard byte == UInt8(ascii: "\\") else {
                label.append(byte)
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { return nil }
            let digits = bytes[(i + 1)...].prefix(3)
            if digits.count == 3, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) {
                let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
                guard value <= 255 else { return nil }
                label.append(UInt8(value))
                i += 4
            } else {
                label.append(bytes[i + 1])
                i += 2
            }
        }
        if !label.isEmpty { guard endLabel() else { return nil } }
        guard !out.isEmpty else { return nil }
        out.append(0)
        return out.count <= 255 ? out : nil
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
