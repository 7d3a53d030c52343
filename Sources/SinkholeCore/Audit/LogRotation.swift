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
        errno = 0
        if gzip(source, to: destination) { return nil }
        return errno == 0 ? "could not be written" : String(cString: strerror(errno))
    }

    /// Compresses `source` into `destination` (through a temporary name), then removes `source`.
    /// On any failure the uncompressed file is kept: nothing is lost.
    @discardableResult
    static func gzip(_ source: String, to destination: String) -> Bool {
        // Neither name may be a symlink: whoever can write the log's directory could otherwise
        // have the rotation read, or truncate and overwrite, any file sinkhole can write.
        let sourceFD = open(source, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard sourceFD >= 0 else { return false }
        guard let input = fdopen(sourceFD, "rb") else {
            close(sourceFD)
            return false
        }
        defer { fclose(input) }
        let temporary = destination + ".tmp"
        unlink(temporary)   // a leftover of a failed rotation, or something planted there
        // Same mode as the live log (0640): rotated evidence is not world-readable. O_EXCL with
        // O_NOFOLLOW: only a file this call creates is written.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return false }
        fchmod(fd, 0o640)
        guard let output = gzdopen(fd, "wb6") else {
            close(fd)
            return false
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var ok = true
        while true {
            let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, input) }
            if n == 0 { break }
            let written = buffer.withUnsafeBytes { gzwrite(output, $0.baseAddress, UInt32(n)) }
            if written != Int32(n) { ok = false; break }
        }
        ok = gzclose(output) == Z_OK && ok && ferror(input) == 0
        guard ok, Glibc.rename(temporary, destination) == 0 else {
            unlink(temporary)
            return false
        }
        unlink(source)
        return true
    }
}
