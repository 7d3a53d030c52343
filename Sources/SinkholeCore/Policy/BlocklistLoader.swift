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
    /// Refused as a write cut short (see `load`).
    public var cutShort = false
}

/// Reads list files. Which files of a directory are lists: every regular file (or link to one)
/// whose name does not start with a dot and does not end in `.md`, `~`, `.swp`, `.tmp`, `.bak`,
/// `.part`, `.dpkg-*` or `.rpm*`. A file whose name ends in `.allow` is an allowlist: each of its
/// entries allows instead of blocks, whatever its format.
public enum BlocklistLoader {
    static let ignoredSuffixes = [".md", "~", ".swp", ".swo", ".swx", ".tmp", ".bak", ".part", ".crdownload", ".new",
                                  ".orig", ".rej", ".old", ".save",
                                  ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp", ".dpkg-bak", ".ucf-dist",
                                  ".ucf-old", ".ucf-new", ".rpmnew", ".rpmsave"]
    public static let maxReportedLineErrors = 100

    public static func isListFileName(_ name: String) -> Bool { whyNotAList(name) == nil }

    /// Why a directory entry named `name` is not read as a list, or nil when it is one by name.
    static func whyNotAList(_ name: String) -> String? {
        if name.hasPrefix(".") { return "hidden (its name starts with a dot)" }
        // Emacs's auto-save file (#feed.txt#), Vim's write test (4913), sed -i's work file
        // (sedAbC123): each holds a list's text mid-edit, never a list to enforce.
        if name.count > 1, name.hasPrefix("#"), name.hasSuffix("#") { return "an editor's auto-save file (#...#)" }
        if name == "4913" { return "an editor's write test (4913)" }
        // (mkstemp's six characters mix cases and digits: `sedentary` is a name, not one.)
        let suffix = name.dropFirst(3)
        if name.count == 9, name.hasPrefix("sed"), suffix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }),
           suffix.contains(where: { $0.isUppercase || $0.isNumber }) { return "sed -i's work file (sedXXXXXX)" }
        if let suffix = ignoredSuffixes.first(where: { name.hasSuffix($0) }) {
            return suffix == ".md" ? "a note (.md)" : "an editor, backup or package file (\(suffix))"
        }
        return nil
    }

    /// An entry of the list directory that is not read, and why (`sinkhole check` prints them:
    /// a list saved as `feed.txt.bak` or in a subdirectory is otherwise silently not in force).
    public struct SkippedEntry: Sendable, Equatable {
        public var name: String
        public var reason: String
        /// A link to nothing (or an entry gone since it was listed).
        public var dangling = false
        /// A name that is not valid UTF-8 (`name` has its bytes escaped, `%FF`): a file meant as a list,
        /// most likely, that cannot be read until renamed. Said as a warning; check fails.
        public var unreadableName = false
    }

    public static func isAllowList(_ name: String) -> Bool { name.hasSuffix(".allow") }

    /// A block list whose name says allow (`whitelist.txt`, `local.allow.txt`, `passlist`):
    /// most likely names meant to be let through, which it blocks instead; worth a warning.
    public static func looksMeantAsAllowList(_ name: String) -> Bool {
        guard !isAllowList(name) else { return false }
        // By words, not substrings: `disallow.txt` and `swallow.txt` are not meant so.
        let words = name.lowercased().split { !($0.isLetter || $0.isNumber) }.map(String.init)
        let said: Set<String> = ["allow", "allowlist", "allowlists", "whitelist", "whitelists", "passlist", "exceptions"]
        if words.contains(where: said.contains) { return true }
        return zip(words, words.dropFirst()).contains { ["white", "allow", "pass"].contains($0.0) && $0.1 == "list" }
    }

    /// A file name's bytes as text: printable ASCII as it is, every other byte (and `%`) as `%HH`.
    static func escapedName(_ raw: UnsafePointer<CChar>) -> String {
        var out = ""
        var p = raw
        while p.pointee != 0 {
            let b = UInt8(bitPattern: p.pointee)
            out += (0x20..<0x7F).contains(b) && b != 0x25 ? String(UnicodeScalar(b)) : "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true)
            p += 1
        }
        return out
    }

    /// Paths of the list files in `directory`, sorted by name.
    public static func listFiles(in directory: String) throws -> [String] { try listing(of: directory).files }

    /// Paths of the list files in `directory`, and the entries that are not read, each sorted by name.
    public static func listing(of directory: String) throws -> (files: [String], skipped: [SkippedEntry]) {
        // opendir/readdir rather than FileManager, whose errors read "The operation could not be
        // completed. The file doesn't exist.": the operator gets strerror's words.
        guard let handle = opendir(directory) else {
            throw BlocklistLoadError.directoryUnreadable(directory, String(cString: strerror(errno)).lowercased())
        }
        defer { closedir(handle) }
        var names: [String] = []
        var badNames: [(escaped: String, isDirectory: Bool, dangling: Bool)] = []
        while true {
            // readdir's nil is both the end and an error (EIO, ESTALE on NFS): a listing cut short
            // would read as files removed, and their lists would go.
            errno = 0
            guard let entry = readdir(handle) else {
                if errno != 0 {
                    throw BlocklistLoadError.directoryUnreadable(directory, String(cString: strerror(errno)).lowercased())
                }
                break
            }
            // A name that is not UTF-8 (Latin-1 from an old system or a zip) cannot be opened
            // through a Swift string: its bytes were replaced, and it was said to be "a link to
            // nothing" at info while its indicators went unenforced.
            let decoded = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { raw -> (String?, String, Bool, Bool) in
                    if let name = String(validatingCString: raw) { return (name, "", false, false) }
                    // Followed as a list would be: a link to a directory is a directory, and a
                    // link to nothing is one.
                    var st = stat()
                    guard fstatat(dirfd(handle), raw, &st, 0) == 0 else { return (nil, escapedName(raw), false, true) }
                    return (nil, escapedName(raw), (st.st_mode & S_IFMT) == S_IFDIR, false)
                }
            }
            guard let name = decoded.0 else { badNames.append((decoded.1, decoded.2, decoded.3)); continue }
            if name != "." && name != ".." { names.append(name) }
        }
        var files: [String] = []
        // Such a name is said as one to rename only where it would be read as a list: a hidden,
        // backup or editor's file, or a directory, is skipped as its UTF-8 namesake would be.
        var skipped: [SkippedEntry] = badNames.sorted { $0.escaped < $1.escaped }.map { bad in
            if let reason = whyNotAList(bad.escaped) { return SkippedEntry(name: bad.escaped, reason: reason) }
            if bad.isDirectory { return SkippedEntry(name: bad.escaped, reason: "a directory or a link to one (subdirectories are not read)") }
            if bad.dangling { return SkippedEntry(name: bad.escaped, reason: "a link to nothing, or gone (stat failed)") }
            return SkippedEntry(name: bad.escaped, reason: "its name is not valid UTF-8, so it cannot be read: rename it (e.g. convmv -f latin1 -t utf8 --notest)",
                                unreadableName: true)
        }
        for name in names.sorted() {
            if let reason = whyNotAList(name) {
                skipped.append(SkippedEntry(name: name, reason: reason))
                continue
            }
            let path = (directory as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                // A link to nothing (a ConfigMap key being removed), a link loop, or an entry gone
                // since it was listed: not a list, as a removed file is not one.
                skipped.append(SkippedEntry(name: name, reason: "a link to nothing, or gone (stat failed)", dangling: true))
            } else if isDirectory.boolValue {
                skipped.append(SkippedEntry(name: name, reason: "a directory or a link to one (subdirectories are not read)"))
            } else {
                files.append(path)
            }
        }
        return (files, skipped)
    }

    /// Reads and parses one file. Line-format files are read in 4 MiB chunks and RPZ zones record
    /// by record, so a multi-million-entry feed is never held as text and as entries at once.
    ///
    /// `previous` is the version of the file in force, if any: the new version shares with it
    /// every run of entries that did not change, so a reload holds little more than the changes
    /// beside the version in force.
    ///
    /// `lastFailed` is the signature of the file's last version that could not be used, and
    /// `writtenInPlace` whether the directory watcher saw it written to after it came by rename
    /// (for the cut-short rule below).
    public static func load(file path: String, previous: LoadedList? = nil, lastFailed: FileSignature? = nil,
                            lastFailedCutShort: Bool = false, writtenInPlace: Bool = false) -> FileLoadResult {
        let started = DispatchTime.now()
        let name = (path as NSString).lastPathComponent
        let signature = FileSignature(path: path)
        var result = FileLoadResult(path: path, list: nil, failure: nil, lineErrors: [], rejectedLines: 0)
        func unreadable() -> FileLoadResult {
            result.failure = "cannot be read (\(String(cString: strerror(errno))))"
            return result
        }
        // O_NONBLOCK: a FIFO in the directory must not hold the start-up or a reload until
        // something writes to it (it is refused just below); on a regular file it changes nothing.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return unreadable() }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return unreadable() }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            errno = EISDIR
            return unreadable()
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            result.failure = "not a regular file (a FIFO, socket or device)"
            return result
        }
        // The read buffer is mapped from the kernel and unmapped before the table is built, so
        // that its pages are not still held (in malloc's free lists) at the peak of a reload.
        let chunkSize = 4 << 20
        let mapping = mmap(nil, chunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapping, mapping != UnsafeMutableRawPointer(bitPattern: -1) else { return unreadable() }
        let chunk = UnsafeMutableBufferPointer(start: mapping.bindMemory(to: UInt8.self, capacity: chunkSize), count: chunkSize)
        var mapped = true
        func unmap() {
            if mapped { munmap(mapping, chunkSize) }
            mapped = false
        }
        defer { unmap() }
        var filled = 0
        /// A UTF-16 file's text, as UTF-8, read from here instead of the file (see below).
        var converted: [UInt8]?
        var convertedOffset = 0
        /// Fills `chunk` after `filled`; false on a read error.
        func fill() -> Bool {
            while filled < chunk.count {
                if let text = converted {
                    let n = min(chunk.count - filled, text.count - convertedOffset)
                    if n == 0 { break }
                    text.withUnsafeBytes { (mapping + filled).copyMemory(from: $0.baseAddress! + convertedOffset, byteCount: n) }
                    convertedOffset += n
                    filled += n
                    continue
                }
                let n = read(fd, mapping + filled, chunk.count - filled)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                if n == 0 { break }
                filled += n
            }
            return true
        }
        guard fill() else { return unreadable() }
        // UTF-16 with a byte-order mark: what Windows PowerShell 5's `>` and `Out-File` write. It
        // is read as the text it is, not refused for its NUL bytes.
        if filled >= 2, (chunk[0] == 0xFF && chunk[1] == 0xFE) || (chunk[0] == 0xFE && chunk[1] == 0xFF) {
            guard let bytes = readFile(path) else { return unreadable() }
            guard let text = BlocklistLoader.utf16(bytes) else {
                result.failure = "UTF-16 text with an odd number of bytes (save the file as UTF-8)"
                return result
            }
            converted = text
            filled = 0
            guard fill() else { return unreadable() }
        }
        func wholeFile() -> [UInt8]? { converted ?? readFile(path) }
        let format = ListFormat.detect(name: name, bytes: Array(chunk[0..<min(filled, 65_536)]))

        let allow = isAllowList(name)
        var builder = DomainMatcher.Builder(reusing: previous?.matcher)
        var localData: [[UInt8]: [LocalRecord]] = [:]
        var addresses = IPPrefixSet()
        var errors: [ListLineError] = []
        var rejected = 0
        var mappedLines = 0
        var zoneNotes: [String] = []
        var firstMapped: ListParser.MappedLine?
        let reject: (ListLineError) -> Void = { error in
            rejected += 1
            if errors.count < maxReportedLineErrors { errors.append(error) }
        }
        let notText = "not a text file (it contains NUL bytes)"
        /// Whether the file holds anything but white space (see the emptied-file check below).
        var hasText = false
        /// The file's last byte as read (see the cut-short check below).
        var lastByte: UInt8?
        switch format {
        case .lines:
            var line = 1
            while true {
                let atEnd = filled < chunk.count
                if chunk[0..<filled].contains(0) {
                    result.failure = notText
                    return result
                }
                if !hasText { hasText = BlocklistLoader.hasText(chunk[0..<filled]) }
                if atEnd, filled > 0 { lastByte = chunk[filled - 1] }
                // Whole lines only; the partial last line moves to the front of the next chunk.
                var cut = filled
                if !atEnd {
                    guard let lastNewline = chunk[0..<filled].lastIndex(of: 0x0A) else {
                        result.failure = "a line longer than \(chunkSize) bytes: not a list"
                        return result
                    }
                    cut = lastNewline + 1
                }
                line += ListParser.parse(UnsafeBufferPointer(rebasing: chunk[0..<cut]), file: name, firstLine: line, allowList: allow, add: { wire, kind, line in
                    builder.add(name: wire, kind: allow ? .init(kind.scope, .allow) : kind, list: 0, line: line)
                }, addAddress: { address, prefix, line in
                    addresses.insert(address: address, prefix: prefix, rule: .init(
                        text: "\(IPAddress.text(address))/\(prefix)", action: allow ? .allow : .block, line: line))
                }, mapped: { line in
                    if mappedLines == 0 { firstMapped = line }
                    mappedLines += 1
                }, reject: reject)
                if atEnd { break }
                // Thousands of lines and not one entry: no list (a 100 MB junk file took 45 s of
                // a core to reject line by line, and every other list's update waited for it).
                // Refused at its first chunk, the version in force kept.
                if builder.count == 0, addresses.isEmpty, rejected >= 10_000 {
                    result.lineErrors = errors
                    result.rejectedLines = rejected
                    result.failure = "not a list: its first \(LogText.count(rejected, "line")) were all rejected"
                    return result
                }
                memmove(mapping, mapping + cut, filled - cut)
                filled -= cut
                guard fill() else { return unreadable() }
            }
        case .ips:
            guard let bytes = wholeFile() else { return unreadable() }
            if bytes.contains(0) {
                result.failure = notText
                return result
            }
            hasText = BlocklistLoader.hasText(bytes)
            lastByte = bytes.last
            var number = 0
            for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
                number += 1
                let original = String(decoding: raw, as: UTF8.self)
                let content = (original.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                if content.isEmpty { continue }
                guard let (address, prefix) = IPPrefixSet.parseCIDR(Substring(content)) else {
                    reject(ListLineError(file: name, line: number,
                                         reason: "not an IP address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32)",
                                         text: original.trimmingTrailingSpace))
                    continue
                }
                if !allow, let wide = IPPrefixSet.refusedIndicator(address, prefix) {
                    reject(ListLineError(file: name, line: number, reason: wide, text: original.trimmingTrailingSpace))
                    continue
                }
                let text = "\(IPAddress.text(address))/\(prefix)"
                addresses.insert(address: address, prefix: prefix,
                                 rule: .init(text: text, action: allow ? .allow : .block, line: number))
            }
        case .rpz:
            // ldns reads the records from the file itself. The bytes are looked at here only for
            // NUL and for any text, a chunk at a time (a 200 MB zone read whole added 370 MB to
            // the peak of a reload), and the text of the rejected lines kept for the log is read
            // in one pass afterwards. A UTF-16 file is already whole, as UTF-8, in `converted`.
            var lineText: (Int) -> String = { _ in "" }
            var parentheses = RPZParser.Parentheses()
            if let bytes = converted {
                if bytes.contains(0) {
                    result.failure = notText
                    return result
                }
                hasText = BlocklistLoader.hasText(bytes)
                lastByte = bytes.last
                bytes.withUnsafeBufferPointer { parentheses.feed($0) }
                lineText = { RPZParser.lineText(bytes, $0) }
            } else {
                var offset: off_t = 0
                while true {
                    let n = pread(fd, mapping, chunkSize, offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return unreadable()
                    }
                    if n == 0 { break }
                    let part = UnsafeBufferPointer(rebasing: chunk[0..<n])
                    if part.contains(0) {
                        result.failure = notText
                        return result
                    }
                    if !hasText { hasText = BlocklistLoader.hasText(part) }
                    lastByte = part.last
                    parentheses.feed(part)
                    offset += off_t(n)
                }
            }
            if let line = parentheses.unclosedLine {
                result.failure = "\(name):\(line): '(' never closed: every record after it would be read as part of that one (a zone-file syntax error)"
                return result
            }
            let readable = RPZParser.parse(path: path, file: name, lineText: lineText, add: { wire, kind, line, local in
                builder.add(name: wire, kind: allow ? .init(kind.scope, .allow) : kind, list: 0, line: line)
                if let local, !allow { localData[Array(wire.dropLast()), default: []].append(local) }
            }, addAddress: { address, prefix, action, line in
                let text = "\(IPAddress.text(address))/\(prefix)"
                if !allow, action != .allow, let wide = IPPrefixSet.refusedIndicator(address, prefix) {
                    return reject(ListLineError(file: name, line: line, reason: wide, text: text))
                }
                addresses.insert(address: address, prefix: prefix, rule: .init(
                    text: text, action: allow ? .allow : action, line: line))
            }, note: { zoneNotes.append($0) }, reject: reject)
            if !readable { return unreadable() }
            if converted == nil, !errors.isEmpty {
                let texts = BlocklistLoader.lines(Set(errors.map(\.line)), of: fd, buffer: chunk)
                errors = errors.map { ListLineError(file: $0.file, line: $0.line, reason: $0.reason, text: texts[$0.line] ?? "") }
            }
        }
        unmap()
        result.lineErrors = errors
        result.rejectedLines = rejected
        if builder.overflowed {
            result.failure = "too many entries for one list file (more than \(builder.count))"
            return result
        }
        if builder.count == 0 && addresses.isEmpty && rejected > 0 {
            result.failure = "no valid entry (\(LogText.count(rejected, "line")) rejected)"
            return result
        }
        // A blocklist that had entries and now has none is what a failed download leaves: curl -o
        // truncates before it fails, a feed's server answers an empty body, an error page or just
        // the feed's header. Whether the file is empty, white space or comments alone, it is taken
        // as a bad update, not as the end of the list: the version in force stays. Removing the
        // file is how a list's entries are dropped. An allowlist is never held back: emptying one
        // withdraws its exceptions, which only blocks more.
        if builder.count == 0, addresses.isEmpty, !allow, let previous, previous.entries > 0 {
            let what = hasText ? "no entry" : "empty"
            result.failure = "\(what), where the version in force has \(LogText.count(previous.entries, "entry", plural: "entries")) (remove the file to drop the list)"
            return result
        }
        // Likewise a body that is a lone address (a proxy's page, a "what is my IP" answer) where
        // the list had names: read as an address list now that addresses and names mix, it would
        // replace every name rule in force with one IP indicator.
        if builder.count == 0, !addresses.isEmpty, !allow, let previous, previous.matcher.count > 0 {
            result.failure = "only addresses, where the version in force has \(LogText.count(previous.matcher.count, "name entry", plural: "name entries")) (remove the file to drop the list)"
            return result
        }
        // A write cut short: a download that failed part way (curl -o, wget), a copy killed. It
        // leaves the file, written in place, ending mid-line with fewer entries than the version
        // in force, and was loaded for good (100,000 of 200,000 names in a trial). Held as a bad
        // update. A list that really shrinks ends with its newline, or comes by rename (complete
        // when it arrives). Written in place: the inode of the version in force, or of the last
        // version refused (a bad file renamed in, then written over: the cut then loaded), or
        // written to after its rename as the watcher saw (a rename, then a write within the
        // reload's quiet time, which no read saw in between).
        let matcher = builder.build()
        // Entries counted as the version in force counts them: names once each (the builder's
        // count has every repeat, so a feed listing names twice passed a cut at 60%).
        func sameFile(_ a: FileSignature?, _ b: FileSignature?) -> Bool {
            guard let a, let b, a.size >= 0, b.size >= 0 else { return false }
            return a.device == b.device && a.inode == b.inode
        }
        // The refused version's file counts if it was refused as cut short (read again, by a
        // SIGHUP, it is the same cut), or if its content changed since; not a file refused for
        // another reason and made usable without a write (a chmod of an unreadable file).
        let rewrittenSinceRefused = sameFile(signature, lastFailed)
            && (lastFailedCutShort || signature?.size != lastFailed?.size || signature?.modified != lastFailed?.modified)
        if let lastByte, lastByte != 0x0A, !allow, let previous, matcher.count + addresses.count < previous.entries,
           writtenInPlace || sameFile(signature, previous.signature) || rewrittenSinceRefused {
            result.cutShort = true
            result.failure = "written in place and ends mid-line, with fewer entries than the version in force (\(matcher.count + addresses.count), against \(previous.entries)): taken for a write cut short (end the file with a newline to use it, or rename a complete file into place)"
            return result
        }
        let shared = previous.map { matcher.sharedSegments(with: $0.matcher) } ?? 0
        // A line-format file that held addresses alone is reported as the address list it is.
        let reported = format == .lines && builder.count == 0 && !addresses.isEmpty ? ListFormat.ips : format
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        var notes = zoneNotes
        if let firstMapped, !allow {
            // Pi-hole's custom.list (`192.168.1.10 nas.home.lan`) dropped in as a list: its names
            // went dark with nothing said. Still blocked (a threat feed in hosts form may carry
            // the C2's own address), but said.
            notes.append("\(LogText.count(mappedLines, "line")) with a real address, not a sinkhole's (0.0.0.0, 127.0.0.1, ::), as local DNS records have: their names are blocked all the same, not answered with it (sinkhole serves no local records); the first at \(name):\(firstMapped.line): '\(LogText.cut(firstMapped.text))'")
        }
        result.list = LoadedList(name: name, path: path, format: reported, matcher: matcher,
                                 rejectedLines: rejected, signature: signature, seconds: seconds, localData: localData,
                                 addresses: addresses, sharedSegments: shared, notes: notes)
        return result
    }

    /// The text of the 1-based lines `wanted` of the file open as `fd`, read from its start a
    /// chunk at a time in `buffer` (at most 64 KiB of each line: the errors quote 200 bytes of it
    /// and say how long it is), trailing space and CR dropped, as the errors quote them.
    static func lines(_ wanted: Set<Int>, of fd: Int32, buffer: UnsafeMutableBufferPointer<UInt8>) -> [Int: String] {
        let last = wanted.max() ?? 0
        var found: [Int: String] = [:]
        var current: [UInt8] = []
        var line = 1
        var want = wanted.contains(1)
        var offset: off_t = 0
        while line <= last {
            let n = pread(fd, buffer.baseAddress, buffer.count, offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += off_t(n)
            var start = 0
            while start < n, line <= last {
                let rest = UnsafeRawPointer(buffer.baseAddress! + start)
                let newline = memchr(rest, 0x0A, n - start).map { $0 - UnsafeMutableRawPointer(mutating: rest) }
                let end = newline.map { start + $0 } ?? n
                if want, current.count < 65_536 {
                    current.append(contentsOf: buffer[start..<min(end, start + 65_536 - current.count)])
                }
                guard newline != nil else { break }
                if want { found[line] = String(decoding: current, as: UTF8.self).trimmingSpace }
                current.removeAll(keepingCapacity: true)
                line += 1
                want = wanted.contains(line)
                start = end + 1
            }
        }
        if want, line <= last { found[line] = String(decoding: current, as: UTF8.self).trimmingSpace }
        return found
    }

    /// UTF-16 text that starts with its byte-order mark (FF FE little-endian, FE FF big-endian)
    /// as UTF-8, without the mark; nil when it has an odd number of bytes. A lone surrogate
    /// becomes U+FFFD, which the parsers then report as not a name.
    static func utf16(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 2, bytes.count % 2 == 0 else { return nil }
        let little = bytes[0] == 0xFF
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2 - 1)
        var i = 2
        while i < bytes.count {
            let a = UInt16(bytes[i]), b = UInt16(bytes[i + 1])
            units.append(little ? a | b << 8 : a << 8 | b)
            i += 2
        }
        return Array(String(decoding: units, as: UTF16.self).utf8)
    }

    /// Whether `bytes` hold anything but spaces, tabs, CR and LF.
    static func hasText<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        bytes.contains { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D && $0 != 0x0A }
    }

    /// The whole file, read with one fstat and as few reads as it takes; nil with errno set.
    /// Only a regular file unless `anyKind` (a configuration may come from a pipe,
    /// `--config /dev/stdin`; a list file never does, and a FIFO among them must not block).
    static func readFile(_ path: String, anyKind: Bool = false) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | (anyKind ? 0 : O_NONBLOCK))
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFDIR || (kind != S_IFREG && !anyKind) {
            errno = kind == S_IFDIR ? EISDIR : EINVAL
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
}
