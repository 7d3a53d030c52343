import Glibc

/// The files a report reads, each once.
public enum ReportInputs {
    private struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    /// `paths` in order without repeats, each left out with a `note`:
    /// - the same file named twice (`--block-log /var/log/sinkhole/block.log` beside `block.log*`
    ///   run in that directory, or a symlink to it) is read once: its events were counted twice;
    /// - a rotated `X.N.gz` beside `X.N` is left out: a rotation was caught compressing `X.N`,
    ///   and both hold the same events. The plain file is the complete one (logrotate writes its
    ///   `.gz` in place, growing); if it is gone by the time it is read, `BlockLogReader` reads
    ///   the `.gz` it became.
    public static func distinct(_ paths: [String], note: (String) -> Void) -> [String] {
        var seen = Set<FileID>()
        var kept: [String] = []
        for path in paths {
            var st = stat()
            if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                guard seen.insert(FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))).inserted else {
                    note("\(path) is a file already given (named twice, or a link to it): read once")
                    continue
                }
            } else if kept.contains(path) {
                continue
            }
            kept.append(path)
        }
        let named = Set(kept)
        return kept.filter { path in
            guard path.hasSuffix(".gz") else { return true }
            let plain = String(path.dropLast(3))
            var st = stat()
            guard named.contains(plain), stat(plain, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return true }
            note("\(path) left out: \(plain) holds the same events (a rotation was caught compressing it)")
            return false
        }
    }
}
