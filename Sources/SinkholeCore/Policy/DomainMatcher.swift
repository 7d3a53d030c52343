/// An immutable set of domain names with a rule attached to each, answering "is this name,
/// or a name above it, listed?" with one hash probe per label.
///
/// Memory is kept compact for multi-million-entry feeds: names live in one byte arena
/// (lowercase wire labels, no root byte), entries are 12-byte records, and the open-addressing
/// table holds 4-byte indexes at a load factor of at most 1/2, about 40 bytes an entry in all.
public struct DomainMatcher: Sendable {
    /// Which names a rule covers, relative to the listed name.
    public enum Scope: UInt8, Sendable {
        /// The name and every name below it (plain lists, hosts files, `||name^`).
        case subtree = 0
        /// Only names strictly below it (`*.name`).
        case below = 1
        /// Only the name itself (an RPZ QNAME trigger without a wildcard).
        case exact = 2
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

        public init(_ scope: Scope, _ action: Action) {
            self.scope = scope
            self.action = action
        }

        public static let block = Kind(.subtree, .block)
        public static let blockBelow = Kind(.below, .block)
        public static let allow = Kind(.subtree, .allow)

        var packed: UInt8 { scope.rawValue | action.rawValue << 2 }
        init(packed: UInt8) {
            scope = Scope(rawValue: packed & 3) ?? .subtree
            action = Action(rawValue: packed >> 2) ?? .block
        }
    }

    /// One listed name: where its bytes are, where it came from.
    struct Entry {
        var offset: UInt32
        var line: UInt32
        var list: UInt16
        var length: UInt8
        var kind: UInt8
    }

    /// A hit: the listed name (lowercase wire form, no root byte), its kind, list index and line.
    public struct Hit: Sendable, Equatable {
        public var name: [UInt8]
        public var kind: Kind
        public var list: Int
        public var line: Int
        /// Byte offset in the queried name at which the listed name starts.
        public var suffixStart: Int
    }

    private var arena: [UInt8]
    private var entries: [Entry]
    private var table: [UInt32]
    private var mask: Int

    public var count: Int { entries.count }

    public static let empty = DomainMatcher(arena: [], entries: [], table: [0, 0], mask: 1)

    private init(arena: [UInt8], entries: [Entry], table: [UInt32], mask: Int) {
        self.arena = arena
        self.entries = entries
        self.table = table
        self.mask = mask
    }

    /// Collects entries, then builds the table once.
    public struct Builder {
        var arena: [UInt8] = []
        var entries: [Entry] = []

        public init() {}

        /// `name` is a lowercase wire name; a trailing root byte is ignored.
        public mutating func add(name: [UInt8], kind: Kind, list: Int, line: Int) {
            var bytes = name[...]
            if bytes.last == 0 { bytes = bytes.dropLast() }
            guard !bytes.isEmpty, bytes.count <= 255 else { return }
            entries.append(Entry(offset: UInt32(arena.count), line: UInt32(clamping: line),
                                 list: UInt16(clamping: list), length: UInt8(bytes.count), kind: kind.packed))
            arena.append(contentsOf: bytes)
        }

        public var count: Int { entries.count }

        /// Reserves room for a file of `bytes` bytes and at most `entries` names, so that a
        /// large feed is not copied by repeated growth.
        public mutating func reserve(bytes: Int, entries: Int) {
            arena.reserveCapacity(bytes)
            self.entries.reserveCapacity(entries)
        }

        /// Builds the table, consuming the builder. Duplicates (same name and kind) keep the first
        /// occurrence; they are squeezed out of the entry array in place, so a large list is never
        /// held twice.
        public consuming func build() -> DomainMatcher {
            var capacity = 2
            while capacity < entries.count * 2 { capacity <<= 1 }
            let mask = capacity - 1
            var table = [UInt32](repeating: 0, count: capacity)
            var kept = 0
            arena.withUnsafeBufferPointer { arenaBytes in
                entries.withUnsafeMutableBufferPointer { all in
                    for i in 0..<all.count {
                        let entry = all[i]
                        let key = UnsafeBufferPointer(rebasing: arenaBytes[Int(entry.offset)..<Int(entry.offset) + Int(entry.length)])
                        var slot = Int(DomainMatcher.hash(key)) & mask
                        var duplicate = false
                        while table[slot] != 0 {
                            let other = all[Int(table[slot]) - 1]
                            if other.kind == entry.kind, other.length == entry.length,
                               key.elementsEqual(arenaBytes[Int(other.offset)..<Int(other.offset) + Int(other.length)]) {
                                duplicate = true
                                break
                            }
                            slot = (slot + 1) & mask
                        }
                        if duplicate { continue }
                        all[kept] = entry
                        kept += 1
                        table[slot] = UInt32(kept)
                    }
                }
            }
            entries.removeLast(entries.count - kept)
            return DomainMatcher(arena: arena, entries: entries, table: table, mask: mask)
        }
    }

    @inline(__always)
    static func hash<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var h: UInt32 = 2_166_136_261
        for b in bytes {
            h = (h ^ UInt32(WireName.lower(b))) &* 16_777_619
        }
        return h
    }

    /// Decides for a queried wire name (any letter case, ending with the root label).
    /// An allow rule covering the name wins; otherwise the most specific covering rule.
    public func decide(_ qname: [UInt8]) -> Hit? {
        guard !entries.isEmpty, let starts = WireName.labelStarts(qname) else { return nil }
        let end = qname.count - 1   // exclude the root byte
        var found: Hit?
        return qname.withUnsafeBufferPointer { q -> Hit? in
            for (index, start) in starts.enumerated() {
                let key = UnsafeBufferPointer(rebasing: q[start..<end])
                var slot = Int(DomainMatcher.hash(key)) & mask
                while table[slot] != 0 {
                    let entry = entries[Int(table[slot]) - 1]
                    slot = (slot + 1) & mask
                    guard Int(entry.length) == key.count, equalsArena(entry, key) else { continue }
                    let kind = Kind(packed: entry.kind)
                    let applies: Bool
                    switch kind.scope {
                    case .subtree: applies = true
                    case .below: applies = index > 0
                    case .exact: applies = index == 0
                    }
                    guard applies else { continue }
                    let hit = Hit(name: Array(arena[Int(entry.offset)..<Int(entry.offset) + Int(entry.length)]),
                                  kind: kind, list: Int(entry.list), line: Int(entry.line), suffixStart: start)
                    if kind.action == .allow { return hit }
                    if found == nil { found = hit }
                }
            }
            return found
        }
    }

    @inline(__always)
    private func equalsArena(_ entry: Entry, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        arena.withUnsafeBufferPointer { a in
            var i = 0
            var j = Int(entry.offset)
            while i < key.count {
                if a[j] != WireName.lower(key[i]) { return false }
                i += 1
                j += 1
            }
            return true
        }
    }

    /// Approximate bytes held, for start-up logging and the memory benchmark.
    public var memoryFootprint: Int {
        arena.capacity + entries.capacity * MemoryLayout<Entry>.stride + table.capacity * 4
    }
}
