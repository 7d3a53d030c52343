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
    /// - a rotated `X.N` beside `X.N.gz` is left out: a built-in rotation was caught between
    ///   renaming the compressed copy into place, complete, and removing the plain file, which
    ///   is about to go (and may be gone when read), so the copy is the one read.
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
            let compressed = path + ".gz"
            var st = stat()
            guard named.contains(compressed), stat(compressed, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return true }
            note("\(path) left out: \(compressed) holds the same events (a rotation was caught compressing it)")
            return false
        }
    }
}
