/// Where a block or allow decision came from: the rule as written (normalised), its list and line.
public struct RuleMatch: Sendable, Equatable {
    /// The list entry, e.g. `msstorageboxes.com` or `*.example.org`.
    public var rule: String
    /// The list's file name, e.g. `crowdstrike-3cx.txt`.
    public var list: String
    /// 1-based line in that file.
    public var line: Int
    /// The listed name in lowercase wire form with the root byte: the owner of the block answer's SOA.
    public var zone: [UInt8]
    public var allowed: Bool
}

/// One loaded list file.
public struct ListFile: Sendable, Equatable {
    public var name: String
    public var path: String
    public var entries: Int
    public var rejectedLines: Int
}

/// An immutable snapshot of every loaded list, as the query path sees it. A reload builds a new
/// snapshot and swaps it in whole, so a query sees either the old lists or the new ones.
public final class Blocklist: Sendable {
    public let lists: [ListFile]
    let matcher: DomainMatcher

    public init(lists: [ListFile], matcher: DomainMatcher) {
        self.lists = lists
        self.matcher = matcher
    }

    public static let empty = Blocklist(lists: [], matcher: .empty)

    public var entryCount: Int { matcher.count }

    /// The rule that decides `qname` (any case, wire form), or nil when no list mentions it.
    /// An allow rule on the name or a parent wins over any block rule (`allowed == true`).
    public func decide(_ qname: [UInt8]) -> RuleMatch? {
        guard let hit = matcher.decide(qname) else { return nil }
        var text = WireName.text(hit.name + [0])
        if hit.kind == .blockBelow { text = "*." + text }
        let list = hit.list < lists.count ? lists[hit.list].name : "?"
        return RuleMatch(rule: text, list: list, line: hit.line, zone: hit.name + [0], allowed: hit.kind == .allow)
    }

    /// The block rule for `qname`, or nil when it is not blocked (unlisted or allowed).
    public func blockingRule(for qname: [UInt8]) -> RuleMatch? {
        guard let match = decide(qname), !match.allowed else { return nil }
        return match
    }
}
