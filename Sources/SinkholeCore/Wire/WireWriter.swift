/// Writes a message's bytes into memory someone else owns: a slot of the UDP listener's send
/// batch, so that a reply made on the fast path needs no array of its own (one allocation and
/// one free less per blocked query and per cache hit), or an array's storage (`makeArray`).
///
/// A write past `capacity` writes nothing and sets `overflowed`; the writer that made the
/// message then reports that it did not fit, and the caller tries a larger buffer or the full path.
public struct WireWriter {
    private let base: UnsafeMutableRawPointer
    public let capacity: Int
    public private(set) var count = 0
    public private(set) var overflowed = false

    public init(_ buffer: UnsafeMutableRawBufferPointer) {
        base = buffer.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!
        capacity = buffer.count
    }

    /// The bytes written, or nil when something did not fit.
    public var written: Int? { overflowed ? nil : count }

    @inline(__always) private mutating func room(_ n: Int) -> Bool {
        if count + n <= capacity { return true }
        overflowed = true
        return false
    }

    @inline(__always) public mutating func put8(_ v: UInt8) {
        guard room(1) else { return }
        base.storeBytes(of: v, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always) public mutating func put16(_ v: UInt16) {
        guard room(2) else { return }
        base.storeBytes(of: v.bigEndian, toByteOffset: count, as: UInt16.self)
        count += 2
    }

    @inline(__always) public mutating func put32(_ v: UInt32) {
        guard room(4) else { return }
        base.storeBytes(of: v.bigEndian, toByteOffset: count, as: UInt32.self)
        count += 4
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard room(bytes.count) else { return }
        if let from = bytes.baseAddress, bytes.count > 0 {
            (base + count).copyMemory(from: from, byteCount: bytes.count)
        }
        count += bytes.count
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    public mutating func append(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Forgets what was written from `offset` on.
    public mutating func rewind(to offset: Int) {
        count = min(count, max(0, offset))
    }

    /// The bytes from `offset` on, to change in place (TTLs of a cached answer).
    public mutating func withWritten(from offset: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
        guard offset <= count else { return }
        body(UnsafeMutableRawBufferPointer(start: base + offset, count: count - offset))
    }

    /// An array made by `write` in at most `capacity` bytes; empty when it did not fit.
    public static func makeArray(capacity: Int, _ write: (inout WireWriter) -> Void) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            var writer = WireWriter(UnsafeMutableRawBufferPointer(buffer))
            write(&writer)
            initialized = writer.written ?? 0
        }
    }
}
