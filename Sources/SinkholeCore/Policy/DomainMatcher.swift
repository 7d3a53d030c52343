import CSinkholeNet
import Glibc

/// An immutable set of domain names with a rule attached to each, answering "is this name,
/// or a name above it, listed?" with one hash probe per label.
///
/// Memory is kept compact for multi-million-entry feeds: names are held in immutable segments of
/// a few hundred consecutive entries (a byte arena of lowercase wire labels without the root byte,
/// and 8-byte entry records), and one open-addressing table of 4-byte slots at a load factor of at
/// most 1/2 finds them: about 40 bytes an entry in all.
///
/// A slot holds an entry's reference in its low bits and, in the bits the reference does not need
/// (9 with a million names), a tag from the name's hash. A probe reads an entry only when the tags
/// agree, so a name that is not listed costs one cache line of the table and no read of the
/// segments, which with a large list are cold. A table of 2 MiB or more asks for transparent huge
/// pages, so that its random reads do not each miss the TLB as well.
///
/// Segments end where the names' content says so (content-defined boundaries), and line numbers
/// are stored relative to the segment's first entry, so a new version of a file shares every run
/// of unchanged lines with the version it replaces, even where lines moved: a reload holds only
/// the changed segments and a new table beside the version in force. The matcher is immutable
/// once built, so the version in force is never touched.
public final class DomainMatcher: @unchecked Sendable {
    /// Which names a rule covers, relative to the listed name.
    public enum Scope: UInt8, Sendable {
        /// The name and every name below it (plain lists, hosts files, `||name^`).
        case subtree = 0
        /// Only names strictly below it (`*.name`).
        case below = 1
        /// Only the name itself (an RPZ QNAME trigger without a wildcard).
        case exact = 2
        /// The name and every name below it, as `subtree`, written `*.name` in a block list (as
        /// Blocky reads it): the rule is named as written.
        case starred = 3
    }

    /// What a rule does when it applies.
    public enum Action: UInt8, Sendable {
        /// Block with the configured block mode.
        case block = 0
        /// Allow; wins over every block rule for the names it covers.
        case allow = 1
        /// RPZ `CNAME .`: NXDOMAIN whatever the block mode.
        case nxdomain = 2
        /// RPZ `CNAME *.`: NODATA.
        case nodata = 3
        /// RPZ `CNAME rpz-drop.`: no answer at all.
        case drop = 4
        /// RPZ local data: answer with the list's own A/AAAA records for the name.
        case localData = 5
    }

    /// A rule's scope and action.
    public struct Kind: Sendable, Equatable {
        public var scope: Scope
        public var action: Action
        /// Adblock's `$important`: a block rule that wins over the feeds' exceptions (`@@`) that
        /// are not `$important` themselves; an allowlist file's allow still wins over it.
        public var important: Bool

        public init(_ scope: Scope, _ action: Action, important: Bool = false) {
            self.scope = scope
            self.action = action
            self.important = important
        }

        public static let block = Kind(.subtree, .block)
        public static let blockBelow = Kind(.below, .block)
        public static let blockStarred = Kind(.starred, .block)
        public static let allow = Kind(.subtree, .allow)

        var packed: UInt8 { scope.rawValue | action.rawValue << 2 | (important ? 0x20 : 0) }
        init(packed: UInt8) {
            scope = Scope(rawValue: packed & 3) ?? .subtree
            action = Action(rawValue: (packed >> 2) & 7) ?? .block
            important = packed & 0x20 != 0
        }
    }

    /// One listed name within its segment: where its bytes are, its kind, and its line as an
    /// offset from the segment's first line.
    struct Entry: Equatable {
        var offset: UInt16
        var length: UInt8
        var kind: UInt8
        var line: UInt32
    }

    /// A run of consecutive entries of one file, immutable once built and shared between the
    /// versions of a file that contain it. Its storage is allocated at its exact size.
    final class Segment: @unchecked Sendable {
        let entries: UnsafeMutablePointer<Entry>
        let entryCount: Int
        let arena: UnsafeMutablePointer<UInt8>
        let arenaCount: Int
        let list: UInt16
        let digest: UInt64

        init(entries: ArraySlice<Entry>, arena: ArraySlice<UInt8>, list: UInt16, digest: UInt64) {
            entryCount = entries.count
            arenaCount = arena.count
            let entryStorage = UnsafeMutablePointer<Entry>.allocate(capacity: max(1, entries.count))
            let arenaStorage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, arena.count))
            for (i, entry) in entries.enumerated() { (entryStorage + i).initialize(to: entry) }
            arena.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { arenaStorage.initialize(from: base, count: source.count) }
            }
            self.entries = entryStorage
            self.arena = arenaStorage
            self.list = list
            self.digest = digest
        }

        deinit {
            entries.deinitialize(count: entryCount)
            entries.deallocate()
            arena.deallocate()
        }

        var entryBuffer: UnsafeBufferPointer<Entry> { UnsafeBufferPointer(start: entries, count: entryCount) }
        var arenaBuffer: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: arena, count: arenaCount) }

        /// Same names, kinds, relative lines and list as the entries being built.
        func holds(entries other: ArraySlice<Entry>, arena otherArena: ArraySlice<UInt8>, list otherList: UInt16) -> Bool {
            list == otherList && entryCount == other.count && arenaCount == otherArena.count
                && arenaBuffer.elementsEqual(otherArena) && entryBuffer.elementsEqual(other)
        }
    }

    /// What the lookup reads for a segment: its storage and, for this version, its first line.
    struct SegmentRef {
        var entries: UnsafePointer<Entry>
        var arena: UnsafePointer<UInt8>
        var firstLine: Int
        var list: Int
    }

    /// A hit: the listed name (lowercase wire form, no root byte), its kind, list index and line.
    public struct Hit: Sendable, Equatable {
        /// The listed name in wire form with its root byte. A slice of the queried name when that
        /// holds the listed name's exact bytes (a lower-case query: no copy); else a copy.
        public var zone: ArraySlice<UInt8>
        /// The listed name without the root byte.
        public var name: [UInt8] { Array(zone.dropLast()) }
        public var kind: Kind
        public var list: Int
        public var line: Int
        /// Byte offset in the queried name at which the listed name starts.
        public var suffixStart: Int
    }

    /// Entries per segment: a table slot holds `segment << entryBits | entry`, plus one.
    static let entryBits = 12
    static let maxSegmentEntries = 1 << entryBits
    static let maxSegments = Int(UInt32.max >> UInt32(entryBits))
    static let maxSegmentArena = Int(UInt16.max)
    /// A content-defined boundary may follow an entry once a segment has this many...
    static let minSegmentEntries = 128
    /// ...and then follows about one entry in this many (a power of two).
    static let boundaryOdds: UInt32 = 512

    /// Segments in file order (they keep the storage that `refs` points into alive).
    private let segments: [Segment]
    private let refs: [SegmentRef]
    private let table: [UInt32]
    private let mask: Int
    /// The slot bits that hold a reference plus one (zero: an empty slot), and the rest: the tag.
    private let referenceMask: UInt32
    private var tagMask: UInt32 { ~referenceMask }
    /// Entries in the table (duplicates excluded).
    public let count: Int
    /// Whether some entry is `$important`: only then does a walk go on past an allow rule.
    public let hasImportant: Bool

    public static let empty = DomainMatcher(segments: [], refs: [], table: [0, 0], mask: 1, referenceMask: .max, count: 0,
                                            hasImportant: false)

    private init(segments: [Segment], refs: [SegmentRef], table: [UInt32], mask: Int, referenceMask: UInt32, count: Int,
                 hasImportant: Bool) {
        self.hasImportant = hasImportant
        self.segments = segments
        self.refs = refs
        self.table = table
        self.mask = mask
        self.referenceMask = referenceMask
        self.count = count
    }

    /// The reference mask for a table over `segmentCount` segments: the fewest low bits that hold
    /// the largest reference plus one.
    static func referenceMask(segmentCount: Int) -> UInt32 {
        let largest = UInt64(max(0, segmentCount - 1)) << UInt64(entryBits) | UInt64(maxSegmentEntries - 1)
        let bits = UInt64.bitWidth - (largest + 1).leadingZeroBitCount
        return bits >= 32 ? .max : UInt32(1) << UInt32(bits) - 1
    }

    /// The tag bits of a name's slot: high bits of its hash, mixed, so that they are independent
    /// of the low bits that chose the slot.
    @inline(__always)
    static func tag(_ hash: UInt32, _ tagMask: UInt32) -> UInt32 {
        (hash &* 0x9E37_79B1) & tagMask
    }

    /// A zeroed table of `capacity` slots. Past 2 MiB, its pages are marked for transparent huge
    /// pages before they are first touched, where the kernel allows it (`madvise` mode).
    static func zeroedTable(capacity: Int) -> [UInt32] {
        [UInt32](unsafeUninitializedCapacity: capacity) { buffer, count in
            let bytes = capacity * MemoryLayout<UInt32>.stride
            let huge = 2 << 20
            if bytes >= huge, let base = buffer.baseAddress {
                let start = (Int(bitPattern: base) + huge - 1) & ~(huge - 1)
                let end = (Int(bitPattern: base) + bytes) & ~(huge - 1)
                if end > start, let aligned = UnsafeMutableRawPointer(bitPattern: start) {
                    _ = madvise(aligned, end - start, MADV_HUGEPAGE)   // advice only: no error matters
                }
            }
            buffer.initialize(repeating: 0)
            count = capacity
        }
    }

    /// Segments held, and how many of them are the same objects as in `other` (shared storage).
    public var segmentCount: Int { segments.count }
    public func sharedSegments(with other: DomainMatcher) -> Int {
        let theirs = Set(other.segments.map(ObjectIdentifier.init))
        return segments.reduce(0) { $0 + (theirs.contains(ObjectIdentifier($1)) ? 1 : 0) }
    }

    /// Collects entries into segments, then builds the table once.
    ///
    /// Given the matcher a new version replaces, each finished segment that is identical to one
    /// of the old matcher's (same names, kinds, relative lines) is replaced by that old segment,
    /// so only what changed is held twice while the new version is built.
    public struct Builder {
        private var entries: [Entry] = []
        private var arena: [UInt8] = []
        private var firstLine = 0
        private var list: UInt16 = 0
        private var digest: UInt64 = Builder.digestSeed
        private var segments: [Segment] = []
        private var firstLines: [Int] = []
        private var previous: [UInt64: [Segment]] = [:]
        private var added = 0
        /// True when the list was too large to hold (names beyond the limit were not added).
        public private(set) var overflowed = false

        static let digestSeed: UInt64 = 14_695_981_039_346_656_037

        public init(reusing previous: DomainMatcher? = nil) {
            entries.reserveCapacity(DomainMatcher.maxSegmentEntries)
            arena.reserveCapacity(DomainMatcher.maxSegmentArena)
            for segment in previous?.segments ?? [] {
                self.previous[segment.digest, default: []].append(segment)
            }
        }

        /// `name` is a lowercase wire name; a trailing root byte is ignored.
        public mutating func add(name: [UInt8], kind: Kind, list: Int, line: Int) {
            var bytes = name[...]
            if bytes.last == 0 { bytes = bytes.dropLast() }
            guard !bytes.isEmpty, bytes.count <= 255 else { return }
            let listIndex = UInt16(clamping: list)
            if !entries.isEmpty, entries.count == DomainMatcher.maxSegmentEntries
                || arena.count + bytes.count > DomainMatcher.maxSegmentArena
                || listIndex != self.list || line < firstLine || line - firstLine > Int(UInt32.max) {
                finishSegment()
            }
            if entries.isEmpty {
                guard segments.count < DomainMatcher.maxSegments else {
                    overflowed = true
                    return
                }
                firstLine = line
                self.list = listIndex
            }
            let hash = DomainMatcher.hash(bytes)
            let entry = Entry(offset: UInt16(arena.count), length: UInt8(bytes.count), kind: kind.packed,
                              line: UInt32(line - firstLine))
            entries.append(entry)
            arena.append(contentsOf: bytes)
            added += 1
            digest = (digest ^ (UInt64(hash) | UInt64(entry.kind) << 32 | UInt64(entry.line) << 40)) &* 1_099_511_628_211
            var mixed = hash ^ (hash >> 16)
            mixed = mixed &* 0x7FEB_352D
            mixed ^= mixed >> 15
            if entries.count >= DomainMatcher.minSegmentEntries, mixed & (DomainMatcher.boundaryOdds - 1) == 0 {
                finishSegment()
            }
        }

        /// Names added so far (duplicates included).
        public var count: Int { added }

        private mutating func finishSegment() {
            guard !entries.isEmpty else { return }
            let key = digest ^ UInt64(entries.count) << 48
            if let old = previous[key]?.first(where: { $0.holds(entries: entries[...], arena: arena[...], list: list) }) {
                segments.append(old)
            } else {
                segments.append(Segment(entries: entries[...], arena: arena[...], list: list, digest: key))
            }
            firstLines.append(firstLine)
            entries.removeAll(keepingCapacity: true)
            arena.removeAll(keepingCapacity: true)
            digest = Builder.digestSeed
        }

        /// Builds the table, consuming the builder. Duplicates (same name and kind) keep the first
        /// occurrence; the others stay in their segment but are not in the table.
        public consuming func build() -> DomainMatcher {
            finishSegment()
            entries = []
            arena = []
            previous = [:]
            let total = segments.reduce(0) { $0 + $1.entryCount }
            var capacity = 2
            while capacity < total * 2 { capacity <<= 1 }
            let mask = capacity - 1
            let refs = zip(segments, firstLines).map { segment, line in
                SegmentRef(entries: UnsafePointer(segment.entries), arena: UnsafePointer(segment.arena),
                           firstLine: line, list: Int(segment.list))
            }
            let referenceMask = DomainMatcher.referenceMask(segmentCount: segments.count)
            var table = DomainMatcher.zeroedTable(capacity: capacity)
            var kept = 0
            var hasImportant = false
            table.withUnsafeMutableBufferPointer { table in
                for (index, segment) in segments.enumerated() {
                    let arenaBytes = segment.arenaBuffer
                    for (position, entry) in segment.entryBuffer.enumerated() {
                        let key = UnsafeBufferPointer(rebasing: arenaBytes[Int(entry.offset)..<Int(entry.offset) + Int(entry.length)])
                        let hash = DomainMatcher.hash(key)
                        let tag = DomainMatcher.tag(hash, ~referenceMask)
                        var slot = Int(hash) & mask
                        var duplicate = false
                        while table[slot] != 0 {
                            defer { slot = (slot + 1) & mask }
                            guard table[slot] & ~referenceMask == tag else { continue }
                            let reference = Int(table[slot] & referenceMask) - 1
                            let ref = refs[reference >> DomainMatcher.entryBits]
                            let other = ref.entries[reference & (DomainMatcher.maxSegmentEntries - 1)]
                            if other.kind == entry.kind, other.length == entry.length,
                               key.elementsEqual(UnsafeBufferPointer(start: ref.arena + Int(other.offset), count: Int(other.length))) {
                                duplicate = true
                                break
                            }
                        }
                        if duplicate { continue }
                        table[slot] = tag | (UInt32(index << DomainMatcher.entryBits | position) + 1)
                        kept += 1
                        if Kind(packed: entry.kind).important { hasImportant = true }
                    }
                }
            }
            return DomainMatcher(segments: segments, refs: refs, table: table, mask: mask,
                                 referenceMask: referenceMask, count: kept, hasImportant: hasImportant)
        }
    }

    /// FNV-1a over the name's bytes (letter case folded) from the last to the first: read that
    /// way, a name's hash continues its parent's, so a query's suffixes are all hashed in one
    /// pass over its bytes instead of one pass each.
    @inline(__always)
    static func hash<C: BidirectionalCollection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var h = hashSeed
        for b in bytes.reversed() { h = hashStep(h, b) }
        return h
    }

    static let hashSeed: UInt32 = 2_166_136_261

    @inline(__always)
    static func hashStep(_ h: UInt32, _ byte: UInt8) -> UInt32 {
        (h ^ UInt32(WireName.lower(byte))) &* 16_777_619
    }

    /// A hit as the lookup finds it, holding no storage of its own (copied as plain bytes): the
    /// fast path answers a blocked name from it without making a `Hit`.
    public struct RawHit {
        public var kind: Kind
        public var list: Int
        public var line: Int
        /// Byte offset in the queried name at which the listed name starts.
        public var suffixStart: Int
        /// The listed bytes (lowercase wire labels, no root byte): valid while this matcher is.
        public var listed: UnsafeBufferPointer<UInt8>
        /// True when the queried name holds exactly the listed bytes from `suffixStart` on.
        public var sameBytes: Bool
    }

    /// Decides for a queried wire name (any letter case, ending with the root label).
    /// An allow rule covering the name wins, except that an RPZ wildcard passthru yields to a
    /// closer trigger of its zone, and an exception yields to an `$important` block unless it is
    /// `$important` too; otherwise the most specific covering rule.
    public func decide(_ qname: [UInt8]) -> Hit? {
        guard let raw = qname.withUnsafeBufferPointer({ decide($0) }) else { return nil }
        return hit(raw, in: qname)
    }

    /// `raw` as a `Hit` for `qname`, the name it was found for.
    func hit(_ raw: RawHit, in qname: [UInt8]) -> Hit {
        let zone: ArraySlice<UInt8>
        if raw.sameBytes {
            zone = qname[raw.suffixStart...]   // the suffix and the root byte: shares the name's storage
        } else {
            let length = raw.listed.count
            zone = [UInt8](unsafeUninitializedCapacity: length + 1) { buffer, count in
                if let base = raw.listed.baseAddress { buffer.baseAddress!.initialize(from: base, count: length) }
                buffer[length] = 0
                count = length + 1
            }[...]
        }
        return Hit(zone: zone, kind: raw.kind, list: raw.list, line: raw.line, suffixStart: raw.suffixStart)
    }

    /// The same for a name in memory the caller holds (the receive buffer, on the fast path).
    public func decide(_ q: UnsafeBufferPointer<UInt8>) -> RawHit? {
        // At most 255 bytes (RFC 1035 §3.1), so at most 127 labels: what `hashes` holds.
        guard count > 0, q.count <= 255, WireName.isPlainName(q) else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 128) { hashes in
            table.withUnsafeBufferPointer { table in
                refs.withUnsafeBufferPointer { refs in decide(q, end: q.count - 1, table: table, refs: refs, hashes: hashes) }
            }
        }
    }

    @inline(__always)
    private func decide(_ q: UnsafeBufferPointer<UInt8>, end: Int, table: UnsafeBufferPointer<UInt32>,
                        refs: UnsafeBufferPointer<SegmentRef>, hashes: UnsafeMutableBufferPointer<UInt32>) -> RawHit? {
        var found: RawHit?
        var allowed: RawHit?
        var important: RawHit?
        // First every suffix's hash, and a prefetch of its slot: with a large list the slots
        // are in memory no cache holds, and their reads then overlap instead of queueing.
        // The label starts, then from the last byte back to the first, each suffix's hash taken
        // where its label starts (in place of the start).
        var start = 0
        var labels = 0
        while start < end {
            hashes[labels] = UInt32(start)
            labels += 1
            start += 1 + Int(q[start])
        }
        var h = DomainMatcher.hashSeed
        var i = end
        var label = labels
        while label > 0 {
            label -= 1
            let labelStart = Int(hashes[label])
            while i > labelStart {
                i -= 1
                h = DomainMatcher.hashStep(h, q[i])
            }
            hashes[label] = h
            sinkhole_prefetch(table.baseAddress! + (Int(h) & mask))
        }
        // Then each label start in turn, the name itself first.
        start = 0
        var index = -1
        let tagMask = self.tagMask, referenceMask = self.referenceMask, mask = self.mask
        while start < end {
            index += 1
            defer { start += 1 + Int(q[start]) }
            let key = UnsafeBufferPointer(rebasing: q[start..<end])
            let hash = hashes[index]
            let tag = DomainMatcher.tag(hash, tagMask)
            var slot = Int(hash) & mask
            while table[slot] != 0 {
                let value = table[slot]
                slot = (slot + 1) & mask
                guard value & tagMask == tag else { continue }
                let reference = Int(value & referenceMask) - 1
                let ref = refs[reference >> DomainMatcher.entryBits]
                let entry = ref.entries[reference & (DomainMatcher.maxSegmentEntries - 1)]
                guard Int(entry.length) == key.count else { continue }
                let listedStart = ref.arena + Int(entry.offset)
                // Listed bytes are lowercase, and so are most queries: one memcmp settles those.
                let sameBytes = memcmp(listedStart, key.baseAddress!, key.count) == 0
                guard sameBytes || DomainMatcher.equals(listedStart, key) else { continue }
                let kind = Kind(packed: entry.kind)
                let applies: Bool
                switch kind.scope {
                case .subtree, .starred: applies = true
                case .below: applies = index > 0
                case .exact: applies = index == 0
                }
                guard applies else { continue }
                let listed = UnsafeBufferPointer(start: listedStart, count: Int(entry.length))
                let hit = RawHit(kind: kind, list: ref.list, line: ref.firstLine + Int(entry.line), suffixStart: start,
                                 listed: listed, sameBytes: sameBytes)
                if kind.action == .allow {
                    // An RPZ wildcard passthru (`*.name CNAME rpz-passthru.`) yields, as RPZ's
                    // precedence has it, to a closer trigger of its own zone: an exact one, or a
                    // longer wildcard, both met first here. (Only an RPZ zone holds a `*.` allow
                    // beside blocks; an allowlist has no blocks, and `@@||name^` covers its name.)
                    if kind.scope == .below, let found { return found }
                    // With `$important` rules in the list, an exception that is not important
                    // itself is kept while the walk looks for one above it.
                    guard hasImportant, !kind.important else { return hit }
                    if let important { return important }
                    if allowed == nil { allowed = hit }
                    continue
                }
                if found == nil { found = hit }
                if kind.important, important == nil {
                    if allowed != nil { return hit }
                    important = hit
                }
            }
        }
        // An `$important` block decides over a closer plain one, so that another list's
        // exception, weighed in `Blocklist.decide`, meets it.
        return allowed ?? important ?? found
    }

    /// Whether the listed bytes at `listed` equal `key` ignoring the key's letter case.
    @inline(__always)
    private static func equals(_ listed: UnsafePointer<UInt8>, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < key.count {
            if listed[i] != WireName.lower(key[i]) { return false }
            i += 1
        }
        return true
    }

    /// Approximate bytes held, for start-up logging and the memory benchmark (segments shared
    /// with another version are counted in both).
    public var memoryFootprint: Int {
        segments.reduce(0) { $0 + $1.arenaCount + $1.entryCount * MemoryLayout<Entry>.stride }
            + refs.capacity * MemoryLayout<SegmentRef>.stride + table.capacity * 4
    }
}
