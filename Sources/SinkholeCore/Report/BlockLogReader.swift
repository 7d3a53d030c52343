import CZlib
import Glibc

/// Why a block log could not be read at all.
public struct BlockLogReadError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// One block log file, plain or gzip-compressed, read line by line. gzip is recognised by its
/// magic bytes (1f 8b), not by the file name, so `block.log.2.gz`, a compressed file without the
/// suffix and a pipe (`<(cat block.log.2.gz)`) all work. Lines are handed out as byte ranges
/// into an internal buffer, valid only during the callback.
public final class BlockLogReader {
    /// Lines longer than this are not block log lines; they are skipped (and counted) without
    /// holding them in memory.
    public static let maxLineLength = 1 << 20

    public let path: String
    public private(set) var isCompressed = false
    /// Lines skipped because they exceeded `maxLineLength`.
    public private(set) var overlongLines = 0
    /// Non-fatal problems met while reading (a truncated or corrupt compressed stream). What was
    /// read before the problem has been handed out.
    public private(set) var warnings: [String] = []

    private let fd: Int32
    private static let chunkSize = 1 << 20
    private let input = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
    private var carry: [UInt8] = []
    private var skippingOverlong = false
    /// No line handed over yet (for a byte-order mark).
    private var atStart = true

    /// Opens `path` for reading; throws naming the file when it cannot be opened or is a directory.
    public init(path: String) throws(BlockLogReadError) {
        var fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        // A rotated file compressed between the shell's glob and this open (`block.log.1` became
        // `block.log.1.gz`): its events are in the compressed copy, read and named instead. The
        // report failed here.
        var opened = path
        if fd < 0, errno == ENOENT, !path.hasSuffix(".gz") {
            fd = Glibc.open(path + ".gz", O_RDONLY | O_CLOEXEC)
            if fd >= 0 { opened = path + ".gz" } else { errno = ENOENT }
        }
        self.path = opened
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            input.deallocate()
            throw BlockLogReadError(path: path, reason: reason)
        }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            Glibc.close(fd)
            input.deallocate()
            throw BlockLogReadError(path: path, reason: "is a directory")
        }
        self.fd = fd
    }

    deinit {
        Glibc.close(fd)
        input.deallocate()
    }

    /// Calls `body` for every line (without its newline; a last line without a newline
    /// included), in order. Throws only when the file cannot be read.
    public func forEachLine(_ body: (UnsafeRawBufferPointer) -> Void) throws(BlockLogReadError) {
        var filled = try readSome(into: input)
        if filled == 1 {   // a pipe may deliver one byte first; two are needed to see the magic
            filled += try readSome(into: UnsafeMutableRawBufferPointer(rebasing: input[1...]))
        }
        if filled >= 2, input[0] == 0x1F, input[1] == 0x8B {
            isCompressed = true
            try inflateAll(firstChunk: filled, body)
        } else {
            // Another compressor's file (logrotate's compresscmd) read as text gave "malformed
            // lines" and no rows, which reads as no hits: refused, naming it.
            let head = Array(UnsafeRawBufferPointer(rebasing: input[0..<min(filled, 6)]))
            for (magic, name, command) in BlockLogReader.otherCompressors where head.starts(with: magic) {
                throw BlockLogReadError(path: path, reason: "compressed with \(name), which report does not read: decompress it first (\(command)), or compress rotated logs with gzip, logrotate's default")
            }
            while filled > 0 {
                split(UnsafeRawBufferPointer(rebasing: input[0..<filled]), body)
                filled = try readSome(into: input)
            }
        }
        finish(body)
    }

    private func readSome(into buffer: UnsafeMutableRawBufferPointer) throws(BlockLogReadError) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw BlockLogReadError(path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// Magic bytes of the compressors report does not read, their names and how to undo them.
    static let otherCompressors: [([UInt8], String, String)] = [
        ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], "xz", "xz -d"),
        ([0x28, 0xB5, 0x2F, 0xFD], "zstd", "zstd -d"),
        ([0x42, 0x5A, 0x68], "bzip2", "bzip2 -d"),
        ([0x04, 0x22, 0x4D, 0x18], "lz4", "lz4 -d"),
    ]

    /// Inflates gzip members one after the other (as `gzip -d` does for concatenated files).
    private func inflateAll(firstChunk: Int, _ body: (UnsafeRawBufferPointer) -> Void) throws(BlockLogReadError) {
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: BlockLogReader.chunkSize, alignment: 16)
        defer { output.deallocate() }
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw BlockLogReadError(path: path, reason: "cannot start gzip decompression")
        }
        defer { inflateEnd(&stream) }
        guard let inBase = input.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let outBase = output.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        stream.next_in = inBase
        stream.avail_in = UInt32(firstChunk)
        var atEOF = false
        var memberEnded = false
        while true {
            if stream.avail_in == 0 && !atEOF {
                let n = try readSome(into: input)
                if n == 0 {
                    atEOF = true
                } else {
                    stream.next_in = inBase
                    stream.avail_in = UInt32(n)
                }
            }
            if stream.avail_in == 0 && atEOF {
                if !memberEnded { warnings.append("\(path): compressed data ends early (truncated file?); read what was there") }
                return
            }
            if memberEnded {
                // More bytes after a complete member: another member, or trailing padding.
                if let next = stream.next_in, next.pointee != 0x1F {
                    warnings.append("\(path): ignored \(stream.avail_in) bytes of trailing data after the compressed data")
                    return
                }
                inflateReset(&stream)
                memberEnded = false
            }
            stream.next_out = outBase
            stream.avail_out = UInt32(output.count)
            let rc = inflate(&stream, Z_NO_FLUSH)
            let produced = output.count - Int(stream.avail_out)
            if produced > 0 { split(UnsafeRawBufferPointer(rebasing: output[0..<produced]), body) }
            switch rc {
            case Z_OK, Z_BUF_ERROR:
                continue
            case Z_STREAM_END:
                memberEnded = true
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                warnings.append("\(path): corrupt compressed data (\(message)); read what was before it")
                return
            }
        }
    }

    /// Hands out the complete lines in `chunk`, keeping a partial last line for the next chunk.
    private func split(_ chunk: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        guard let base = chunk.baseAddress else { return }
        var start = 0
        let end = chunk.count
        while start < end {
            guard let hit = memchr(base + start, 0x0A, end - start) else {
                appendPartial(UnsafeRawBufferPointer(rebasing: chunk[start..<end]))
                return
            }
            let newline = UnsafeRawPointer(hit) - base
            let piece = UnsafeRawBufferPointer(rebasing: chunk[start..<newline])
            if skippingOverlong {
                skippingOverlong = false
            } else if carry.isEmpty {
                emit(piece, body)
            } else {
                appendPartial(piece)
                if skippingOverlong {
                    skippingOverlong = false
                } else {
                    carry.withUnsafeBytes { emit($0, body) }
                }
                carry.removeAll(keepingCapacity: true)
            }
            start = newline + 1
        }
    }

    private func appendPartial(_ piece: UnsafeRawBufferPointer) {
        guard !skippingOverlong else { return }
        if carry.count + piece.count > BlockLogReader.maxLineLength {
            overlongLines += 1
            skippingOverlong = true
            carry.removeAll(keepingCapacity: false)
            return
        }
        carry.append(contentsOf: piece)
    }

    /// Hands a whole line to `body`; the first line without a UTF-8 byte-order mark (a file saved
    /// by an editor, plain or then gzipped), however the bytes came in.
    private func emit(_ line: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        guard atStart else { return body(line) }
        atStart = false
        if line.count >= 3, line[0] == 0xEF, line[1] == 0xBB, line[2] == 0xBF {
            return body(UnsafeRawBufferPointer(rebasing: line[3...]))
        }
        body(line)
    }

    private func finish(_ body: (UnsafeRawBufferPointer) -> Void) {
        if !carry.isEmpty && !skippingOverlong { carry.withUnsafeBytes { emit($0, body) } }
        carry.removeAll(keepingCapacity: false)
        skippingOverlong = false
    }
}
