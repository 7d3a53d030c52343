import Foundation

public enum BlocklistLoadError: Error, CustomStringConvertible {
    case directoryUnreadable(String, String)

    public var description: String {
        switch self {
        case .directoryUnreadable(let path, let reason): return "cannot read blocklist directory \(path): \(reason)"
        }
    }
}

/// What reading one list file gave: the list, or why the file cannot be used; and its bad lines.
public struct FileLoadResult: Sendable {
    public var path: String
    public var list: LoadedList?
    /// Why the file is unusable (unreadable, not text, no valid entry); nil when `list` is set.
    public var failure: String?
    /// The first bad lines (at most 100), each `file:line: reason: 'text'`.
    public var lineErrors: [ListLineError]
    public var rejectedLines: Int
}

/// Reads list files. Which files of a directory are lists: every regular file (or link to one)
/// whose name does not start with a dot and does not end in `.md`, `~`, `.swp`, `.tmp`, `.bak`,
/// `.part`, `.dpkg-*` or `.rpm*`. A file whose name ends in `.allow` is an allowlist: each of its
/// entries allows instead of blocks, whatever its format.
public enum BlocklistLoader {
    static let ignoredSuffixes = [".md", "~", ".swp", ".tmp", ".bak", ".part", ".dpkg-old", ".dpkg-new",
                                  ".dpkg-dist", ".rpmnew", ".rpmsave"]
    public static let maxReportedLineErrors = 100

    public static func isListFileName(_ name: String) -> Bool {
        if name.hasPrefix(".") { return false }
        return !ignoredSuffixes.contains { name.hasSuffix($0) }
    }

    public static func isAllowList(_ name: String) -> Bool { name.hasSuffix(".allow") }

    /// Paths of the list files in `directory`, sorted by name.
    public static func listFiles(in directory: String) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw BlocklistLoadError.directoryUnreadable(directory, reason(error))
        }
        var out: [String] = []
        for name in names.sorted() where isListFileName(name) {
            let path = (directory as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                out.append(path)
            }
        }
        return out
    }

    /// Reads and parses one file.
    public static func load(file path: String) -> FileLoadResult {
        let started = DispatchTime.now()
        let name = (path as NSString).lastPathComponent
        let signature = FileSignature(path: path)
        var result = FileLoadResult(path: path, list: nil, failure: nil, lineErrors: [], rejectedLines: 0)
        guard let bytes = readFile(path) else {
            result.failure = "cannot be read (\(String(cString: strerror(errno))))"
            return result
        }
        if bytes.contains(0) {
            result.failure = "not a text file (it contains NUL bytes)"
            return result
        }
        let allow = isAllowList(name)
        var builder = DomainMatcher.Builder()
        builder.reserve(bytes: bytes.count, entries: bytes.reduce(into: 1) { if $1 == 0x0A { $0 += 1 } })
        var localData: [[UInt8]: [LocalRecord]] = [:]
        var errors: [ListLineError] = []
        var rejected = 0
        let reject: (ListLineError) -> Void = { error in
            rejected += 1
            if errors.count < maxReportedLineErrors { errors.append(error) }
        }
        let format = ListFormat.detect(name: name, bytes: bytes)
        switch format {
        case .lines:
            ListParser.parse(bytes, file: name, add: { wire, kind, line in
                builder.add(name: wire, kind: allow ? .init(kind.scope, .allow) : kind, list: 0, line: line)
            }, reject: reject)
        case .rpz:
            let readable = RPZParser.parse(path: path, file: name, bytes: bytes, add: { wire, kind, line, local in
                builder.add(name: wire, kind: allow ? .init(kind.scope, .allow) : kind, list: 0, line: line)
                if let local, !allow { localData[Array(wire.dropLast()), default: []].append(local) }
            }, reject: reject)
            if !readable {
                result.failure = "cannot be read (\(String(cString: strerror(errno))))"
                return result
            }
        }
        result.lineErrors = errors
        result.rejectedLines = rejected
        if builder.count == 0 && rejected > 0 {
            result.failure = "no valid entry (\(rejected) lines rejected)"
            return result
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        result.list = LoadedList(name: name, path: path, format: format, matcher: builder.build(),
                                 rejectedLines: rejected, signature: signature, seconds: seconds, localData: localData)
        return result
    }

    /// The whole file, read with one fstat and as few reads as it takes; nil with errno set.
    static func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            errno = EISDIR
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: max(0, Int(st.st_size)))
        var filled = 0
        while true {
            if filled == bytes.count { bytes.append(contentsOf: [UInt8](repeating: 0, count: 65_536)) }
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            filled += n
        }
        bytes.removeLast(bytes.count - filled)
        return bytes
    }

    static func reason(_ error: Error) -> String {
        if let posix = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError {
            return posix.localizedDescription
        }
        return (error as NSError).localizedDescription
    }
}
