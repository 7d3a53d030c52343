import Glibc
import Synchronization

/// Identifies one version of a file's contents as the kernel reports it (following links), so
/// that a reload re-reads only files that changed, including a ConfigMap `..data` swap.
public struct FileSignature: Sendable, Equatable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: Int64
    var changed: Int64

    /// The signature of a list path with no file to sign: a link to nothing, or a list kept in
    /// force after its file went (`BlocklistStore.refresh`). Kept among the failed files, so
    /// that it is said once and exported as not usable.
    static let absent = FileSignature(device: 0, inode: 0, size: -1, modified: 0, changed: 0)

    private init(device: UInt64, inode: UInt64, size: Int64, modified: Int64, changed: Int64) {
        self.device = device
        self.inode = inode
        self.size = size
        self.modified = modified
        self.changed = changed
    }

    /// nil when the path cannot be stat'ed.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        changed = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
    }
}

/// A record an RPZ list answers with for a name (local data), in wire form.
public struct LocalRecord: Sendable, Equatable {
    public var type: UInt16
    public var rdata: [UInt8]
}

/// A small number for each list file name, the same for the process's life: per-list counters
/// are kept in slots by number, so a blocked query counts without a string hash or a lock.
public enum ListNumbers {
    private static let table = Mutex<(numbers: [String: Int], names: [String])>(([:], []))

    /// The number of `name`, given on its first use.
    public static func number(for name: String) -> Int {
        table.withLock { t in
            if let n = t.numbers[name] { return n }
            t.names.append(name)
            t.numbers[name] = t.names.count - 1
            return t.names.count - 1
        }
    }

    /// Every name numbered so far, by number.
    public static var names: [String] { table.withLock { $0.names } }
}

/// One list file, parsed: its own matcher, its provenance and its counts. Immutable.
public final class LoadedList: Sendable {
    /// File name, e.g. `crowdstrike-3cx.txt`: `rule.ruleset` in the block log.
    public let name: String
    /// `name`'s number (`ListNumbers`).
    public let number: Int
    public let path: String
    public let format: ListFormat
    public let entries: Int
    public let rejectedLines: Int
    public let signature: FileSignature?
    public let seconds: Double
    /// When it was loaded, seconds since the Unix epoch.
    public let loadedAt: Double
    let matcher: DomainMatcher
    /// Segments of the matcher taken over from the version this one replaced (see `DomainMatcher`).
    public let sharedSegments: Int
    public var segments: Int { matcher.segmentCount }
    /// IP indicators (IP lists, RPZ rpz-ip triggers).
    let addresses: IPPrefixSet
    /// RPZ local data by lowercase wire name (root byte excluded).
    let localData: [[UInt8]: [LocalRecord]]
    /// What the operator should know of how the file was read, beyond its rejected lines (its
    /// hosts lines with real addresses: blocked, not answered with them). Said by check and serve.
    public let notes: [String]

    init(name: String, path: String, format: ListFormat, matcher: DomainMatcher, rejectedLines: Int,
         signature: FileSignature?, seconds: Double, localData: [[UInt8]: [LocalRecord]] = [:],
         addresses: IPPrefixSet = IPPrefixSet(), sharedSegments: Int = 0, notes: [String] = []) {
        self.notes = notes
        self.sharedSegments = sharedSegments
        self.addresses = addresses
        self.name = name
        number = ListNumbers.number(for: name)
        self.path = path
        self.format = format
        self.entries = matcher.count + addresses.count
        self.matcher = matcher
        self.rejectedLines = rejectedLines
        self.signature = signature
        self.seconds = seconds
        self.localData = localData
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.loadedAt = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    public var summary: ListFile {
        ListFile(name: name, path: path, entries: entries, rejectedLines: rejectedLines)
    }
}
