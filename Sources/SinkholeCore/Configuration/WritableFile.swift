import Glibc

/// Whether `serve` can open a file it writes (the block log, the query history) as it opens it,
/// creating it if missing and following no symbolic link (O_NOFOLLOW), found without creating
/// anything: what `sinkhole check --config` reports. Checked with the effective identity of
/// the caller, which is the one `serve` opens its files with (before any `--user` drop).
public enum WritableFile {
    /// Why `path` cannot be opened for writing (`readToo`: reading and writing), or nil when it
    /// can, or can be created.
    public static func problem(_ path: String, readToo: Bool = false) -> String? {
        var st = stat()
        if lstat(path, &st) == 0 {
            switch st.st_mode & S_IFMT {
            case S_IFLNK: return "is a symbolic link, which sinkhole does not follow here (name the file itself)"
            case S_IFDIR: return "is a directory"
            default: break
            }
            guard faccessat(AT_FDCWD, path, W_OK | (readToo ? R_OK : 0), AT_EACCESS) == 0 else {
                return "cannot be \(readToo ? "read and written" : "written")\(byWhom): \(reason(errno))"
            }
            return nil
        }
        let code = errno
        guard code == ENOENT || code == ENOTDIR else { return reason(code) }
        // Missing: it is created, which needs a directory we may write in.
        let directory = parent(path)
        guard stat(directory, &st) == 0 else {
            let code = errno
            return code == ENOENT ? "directory \(directory) does not exist" : "directory \(directory): \(reason(code))"
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { return "\(directory) is not a directory" }
        guard faccessat(AT_FDCWD, directory, W_OK | X_OK, AT_EACCESS) == 0 else {
            return "directory \(directory) is not writable\(byWhom), so the file cannot be created: \(reason(errno))"
        }
        return nil
    }

    /// The directory a path names its file in: `.` for a bare name, `/` for a file at the root.
    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let directory = path[..<slash]
        return directory.isEmpty ? "/" : String(directory)
    }

    static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Who was checked, for a permission problem: the user `check` runs as may not be the one
    /// `serve` will.
    static var byWhom: String { " by uid \(geteuid())" }
}
