/// Where a decision came from: the rule as written (normalised), its list and line, and what it does.
public struct RuleMatch: Sendable, Equatable {
    /// The list entry, e.g. `msstorageboxes.com` or `*.example.org`. For a name rule it is made
    /// from `zone` when asked for (by the log writer, not on the query path).
    public var rule: String {
        get { ruleText ?? ((below ? "*." : "") + WireName.text(Array(zoneBytes))) }
        set { ruleText = newValue }
    }
    private var ruleText: String?
    private var below = false
    /// The list's file name, e.g. `crowdstrike-3cx.txt`.
    public var list: String
    /// 1-based line in that file.
    public var line: Int
    /// The listed name in lowercase wire form with the root byte: the owner of the block answer's SOA.
    /// (A CNAME match replaces it with the name asked; the rule keeps the listed name.)
    /// Often a slice of the queried name, which it then shares (no copy per blocked query).
    public var zoneBytes: ArraySlice<UInt8> {
        willSet { if ruleText == nil { ruleText = rule } }
    }
    /// `zoneBytes` as an array.
    public var zone: [UInt8] {
        get { Array(zoneBytes) }
        set { zoneBytes = newValue[...] }
    }
    public var action: DomainMatcher.Action
    /// RPZ local data for the name, when `action == .localData`.
    public var localData: [LocalRecord]
    /// True when the match was found in the upstream's answer (a CNAME target), not the name asked.
    public var responseBased = false

    public init(rule: String, list: String, line: Int, zone: [UInt8], action: DomainMatcher.Action = .block,
                localData: [LocalRecord] = []) {
        ruleText = rule
        self.list = list
        self.line = line
        self.zoneBytes = zone[...]
        self.action = action
        self.localData = localData
    }

    /// The match of a name rule for `zone` (`below`: a `*.` rule). No string is made here: this
    /// runs for every blocked query.
    init(zone: ArraySlice<UInt8>, below: Bool, list: String, line: Int, action: DomainMatcher.Action, localData: [LocalRecord]) {
        self.below = below
        self.list = list
        self.line = line
        self.zoneBytes = zone
        self.action = action
        self.localData = localData
    }

    public var allowed: Bool { action == .allow }

    public static func == (a: RuleMatch, b: RuleMatch) -> Bool {
        a.list == b.list && a.line == b.line && a.zoneBytes.elementsEqual(b.zoneBytes) && a.action == b.action
            && a.localData == b.localData && a.responseBased == b.responseBased && a.rule == b.rule
    }
}

/// Counts for one loaded list file.
public struct ListFile: Sendable, Equatable {
    public var name: String
    public var path: String
    public var entries: Int
    public var rejectedLines: Int
}

/// An immutable snapshot of every loaded list, as the query path sees it. A reload builds a new
/// snapshot and swaps it in whole, so a query sees either the old lists or the new ones.
public final class Blocklist: Sendable {
    public let loaded: [LoadedList]
    /// Increases by one with every snapshot swapped in.
    public let generation: Int

    public init(lists: [LoadedList], generation: Int = 0) {
        self.loaded = lists
        self.generation = generation
        hasAddressRules = lists.contains { !$0.addresses.isEmpty }
        hasImportant = lists.contains { $0.matcher.hasImportant }
        isAllowList = lists.map { BlocklistLoader.isAllowList($0.name) }
    }

    /// Whether some list has `$important` block rules, which beat the feeds' exceptions.
    private let hasImportant: Bool
    /// Per list, whether it is an allowlist file (`.allow`): its allows beat `$important`.
    private let isAllowList: [Bool]

    public static let empty = Blocklist(lists: [])

    public var lists: [ListFile] { loaded.map(\.summary) }
    public var entryCount: Int { loaded.reduce(0) { $0 + $1.entries } }
    /// Of those, the address ranges (IP indicators).
    public var addressCount: Int { loaded.reduce(0) { $0 + $1.addresses.count } }
    /// Of those, the ranges that block (IP indicators; allowlist ranges left out).
    public var blockingAddressCount: Int { loaded.reduce(0) { $0 + $1.addresses.blockingCount } }

    /// The rule that decides `qname` (any case, wire form), or nil when no list mentions it.
    /// An allow rule in any list wins (a feed's exception only over blocks that are not
    /// `$important`); otherwise the most specific rule, the first list on ties.
    public func decide(_ qname: [UInt8]) -> RuleMatch? {
        guard let (hit, list) = qname.withUnsafeBufferPointer({ decide($0) }) else { return nil }
        return match(hit, list: list, qname: qname)
    }

    /// The same for a name in memory the caller holds: the hit and the index in `loaded` of the
    /// list it is in, with nothing copied (the fast path answers from it).
    public func decide(_ qname: UnsafeBufferPointer<UInt8>) -> (hit: DomainMatcher.RawHit, list: Int)? {
        // The usual case, one list: its hit is the answer (no best to keep).
        if loaded.count == 1 {
            guard let hit = loaded[0].matcher.decide(qname) else { return nil }
            return (hit, 0)
        }
        var best: DomainMatcher.RawHit?
        var bestList = 0
        var exception: (hit: DomainMatcher.RawHit, list: Int)?
        var important: (hit: DomainMatcher.RawHit, list: Int)?
        for (index, list) in loaded.enumerated() {
            guard let hit = list.matcher.decide(qname) else { continue }
            if hit.kind.action == .allow {
                // An allowlist's allow, or any with no `$important` rule loaded: it wins.
                guard hasImportant, !isAllowList[index], !hit.kind.important else { return (hit, index) }
                if exception == nil { exception = (hit, index) }
                continue
            }
            if hit.kind.important, important == nil { important = (hit, index) }
            if let current = best, current.suffixStart <= hit.suffixStart { continue }
            best = hit
            bestList = index
        }
        // A feed's exception, unless an `$important` block covers the name too.
        if let exception { return important ?? exception }
        guard let best else { return nil }
        return (best, bestList)
    }

    /// Each list's own rule for `qname`, in list order (what `explain` shows beside the rule
    /// that decides: the other lists holding the name, and the blocks an allow lifts).
    public func matches(_ qname: [UInt8]) -> [RuleMatch] {
        loaded.indices.compactMap { index in
            guard let hit = qname.withUnsafeBufferPointer({ loaded[index].matcher.decide($0) }) else { return nil }
            return match(hit, list: index, qname: qname)
        }
    }

    /// The match for a hit that `decide` found for `qname` in `loaded[list]`.
    public func match(_ raw: DomainMatcher.RawHit, list index: Int, qname: [UInt8]) -> RuleMatch {
        let list = loaded[index]
        let hit = list.matcher.hit(raw, in: qname)
        return RuleMatch(zone: hit.zone, below: hit.kind.scope == .below || hit.kind.scope == .starred, list: list.name, line: hit.line, action: hit.kind.action,
                         localData: hit.kind.action == .localData ? list.localData[hit.name] ?? [] : [])
    }

    /// True when some list holds address ranges (IP lists, RPZ rpz-ip): only then are the
    /// addresses in upstream answers looked up.
    public let hasAddressRules: Bool

    /// The rule for an address found in an upstream answer (4 or 16 bytes): an allow range in any
    /// list wins; otherwise the first list's longest matching range. Nil when no list has it.
    public func decideAddress(_ address: [UInt8]) -> RuleMatch? {
        var found: RuleMatch?
        for list in loaded where !list.addresses.isEmpty {
            guard let rule = list.addresses.lookup(address) else { continue }
            let match = RuleMatch(rule: rule.text, list: list.name, line: rule.line, zone: [0], action: rule.action)
            if rule.action == .allow { return match }
            if found == nil { found = match }
        }
        return found
    }

    /// The block rule for `qname`, or nil when it is not blocked (unlisted or allowed).
    public func blockingRule(for qname: [UInt8]) -> RuleMatch? {
        guard let match = decide(qname), !match.allowed else { return nil }
        return match
    }
}
