import Foundation

/// What loading a directory of lists found: the snapshot, and what to tell the operator.
public struct LoadReport: Sendable {
    public var blocklist: Blocklist
    /// Lines skipped, each with `file:line: reason`.
    public var lineErrors: [ListLineError]
    /// Files that could not be used at all, with the reason.
    public var fileErrors: [(path: String, reason: String)]
    public var seconds: Double
}

public enum BlocklistLoadError: Error, CustomStringConvertible {
    case directoryUnreadable(String, String)

    public var description: String {
        switch self {
        case .directoryUnreadable(let path, let reason): return "cannot read blocklist directory \(path): \(reason)"
        }
    }
}

/// Reads every list file of a directory and builds one `Blocklist`.
///
/// Which files are lists: every regular file (or link to one) whose name does not start with a
/// dot and does not end in `.md`, `~`, `.swp`, `.tmp`, `.bak`, `.dpkg-*` or `.rpm*`.
public enum BlocklistLoader {
    static let ignoredSuffixes = [".md", "~", ".swp", ".tmp", ".bak", ".part", ".dpkg-old", ".dpkg-new",
                                  ".dpkg-dist", ".rpmnew", ".rpmsave"]

    public static func isListFileName(_ name: String) -> Bool {
        if name.hasPrefix(".") { return false }
        return !ignoredSuffixes.contains { name.hasSuffix($0) }
    }

    /// Paths of the list files in `directory`, sorted by name.
    public static func listFiles(in directory: String) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw BlocklistLoadError.directoryUnreadable(directory, Self.reason(error))
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

    public static func load(directory: String) throws -> LoadReport {
        try load(files: listFiles(in: directory))
    }

    public static func load(files: [String]) -> LoadReport {
        let started = Date()
        var builder = DomainMatcher.Builder()
        var lists: [ListFile] = []
        var lineErrors: [ListLineError] = []
        var fileErrors: [(String, String)] = []
        for path in files {
            let name = (path as NSString).lastPathComponent
            guard let data = FileManager.default.contents(atPath: path) else {
                fileErrors.append((path, "cannot be read"))
                continue
            }
            let bytes = [UInt8](data)
            if bytes.contains(0) {
                fileErrors.append((path, "not a text file (contains NUL bytes)"))
                continue
            }
            let listIndex = lists.count
            let before = builder.count
            var rejected = 0
            var firstErrors: [ListLineError] = []
            ListParser.parse(bytes, file: name, add: { wire, kind, line, _ in
                builder.add(name: wire, kind: kind, list: listIndex, line: line)
            }, reject: { error in
                rejected += 1
                if firstErrors.count < 100 { firstErrors.append(error) }
            })
            lineErrors += firstErrors
            let entries = builder.count - before
            if entries == 0 && rejected > 0 {
                fileErrors.append((path, "no valid entry (\(rejected) lines rejected)"))
                continue
            }
            lists.append(ListFile(name: name, path: path, entries: entries, rejectedLines: rejected))
        }
        let blocklist = Blocklist(lists: lists, matcher: builder.build())
        return LoadReport(blocklist: blocklist, lineErrors: lineErrors, fileErrors: fileErrors,
                          seconds: Date().timeIntervalSince(started))
    }

    static func reason(_ error: Error) -> String {
        if let posix = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError {
            return posix.localizedDescription
        }
        return (error as NSError).localizedDescription
    }
}
