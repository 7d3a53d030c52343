import CZlib
import Dispatch
import Foundation
import Glibc

/// Size-based rotation of the block log (`--block-log-max-size`, `--block-log-keep`):
/// `block.log` → `block.log.1` → compressed to `block.log.1.gz`; older ones shift up
/// (`.1.gz` → `.2.gz` …) and the oldest beyond `keep` is deleted. Compression runs on its own
/// queue, so the writer only pays for two renames.
public struct LogRotation: Sendable {
    /// Rotate once the file is at least this many bytes; 0 = never (SIGHUP reopen still works).
    public var maxSize: Int
    /// Rotated files kept.
    public var keep: Int

    public init(maxSize: Int, keep: Int) {
        self.maxSize = maxSize
        self.keep = max(1, keep)
    }

    public static let compression = DispatchQueue(label: "sinkhole.blocklog.compress")

    /// Moves `path` aside and shifts the older files. The caller reopens `path` afterwards.
    /// `compressionFailed` is told when `.1` could not be compressed (it then stays as it is).
    func rotate(_ path: String, compressionFailed: @escaping @Sendable (_ file: String, _ reason: String) -> Void = { _, _ in }) {
        // A compression of the previous rotation still running must finish first: it reads `.1`.
        LogRotation.compression.sync {}
        let fm = FileManager.default
        try? fm.removeItem(atPath: "\(path).\(keep).gz")
        try? fm.removeItem(atPath: "\(path).\(keep)")
        // A rotated file may be uncompressed (its compression failed: a full disk, a name in the
        // way): it moves up with the others. It used to stay at `.1`, where the next rotation's
        // rename replaced it, and its events were gone with no word said.
        if keep > 1 {
            for i in stride(from: keep - 1, through: 1, by: -1) {
                _ = Glibc.rename("\(path).\(i).gz", "\(path).\(i + 1).gz")
                _ = Glibc.rename("\(path).\(i)", "\(path).\(i + 1)")
            }
        }
        guard Glibc.rename(path, "\(path).1") == 0 else { return }
        LogRotation.compression.async {
            if let reason = LogRotation.compress("\(path).1", to: "\(path).1.gz") {
                compressionFailed("\(path).1", reason)
            }
        }
    }

    /// `gzip`, with the reason when it fails (nil: done).
    static func compress(_ source: String, to destination: String) -> String? {
        var reason: String?
        _ = gzip(source, to: destination, reason: &reason)
        return reason
    }

    /// Compresses `source` into `destination` (through a temporary name), then removes `source`.
    /// On any failure the uncompressed file is kept: nothing is lost.
    @discardableResult
    static func gzip(_ source: String, to destination: String) -> Bool {
        var reason: String?
        return gzip(source, to: destination, reason: &reason)
    }

    /// The same, with the step that failed and its error in `reason`, taken right after that
    /// step (a later cleanup's `unlink` would otherwise leave its own errno behind).
    static func gzip(_ source: String, to destination: String, reason: inout String?) -> Bool {
        func failed(_ step: String) -> Bool {
            let error = errno
            reason = error == 0 ? step : "\(step): \(String(cString: strerror(error)))"
            return false
        }
        // Neither name may be a symlink: whoever can write the log's directory could otherwise
        // have the rotation read, or truncate and overwrite, any file sinkhole can write.
        let sourceFD = open(source, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard sourceFD >= 0 else { return failed("open \(source)") }
        guard let input = fdopen(sourceFD, "rb") else {
            defer { close(sourceFD) }
            return failed("open \(source)")
        }
        defer { fclose(input) }
        // A hidden name beside it: outside the `block.log*` glob that `zcat -f block.log*` and
        // `sinkhole report block.log*` are given, which read the half-written copy too, and
        // counted its events twice (`block.log.1.gz.tmp` beside `block.log.1`).
        let slash = destination.lastIndex(of: "/")
        let temporary = slash.map { "\(destination[...$0]).\(destination[destination.index(after: $0)...]).tmp" } ?? ".\(destination).tmp"
        unlink(temporary)   // a leftover of a failed rotation, or something planted there
        // Same mode as the live log (0640): rotated evidence is not world-readable. O_EXCL with
        // O_NOFOLLOW: only a file this call creates is written.
        errno = 0
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return failed("create \(temporary)") }
        fchmod(fd, 0o640)
        errno = 0
        guard let output = gzdopen(fd, "wb6") else {
            defer { close(fd) }
            return failed("start compressing")
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var step: String?
        var stepError: Int32 = 0
        errno = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, input) }
            if n == 0 { break }
            let written = buffer.withUnsafeBytes { gzwrite(output, $0.baseAddress, UInt32(n)) }
            if written != Int32(n) { (step, stepError) = ("write \(temporary)", errno); break }
        }
        if step == nil, ferror(input) != 0 { (step, stepError) = ("read \(source)", errno) }
        errno = 0
        if gzclose(output) != Z_OK, step == nil { (step, stepError) = ("finish \(temporary)", errno) }
        errno = 0
        if step == nil, Glibc.rename(temporary, destination) != 0 { (step, stepError) = ("rename to \(destination)", errno) }
        if let step {
            unlink(temporary)
            errno = stepError
            return failed(step)
        }
        unlink(source)
        return true
    }
}
