import Foundation

/// What `sinkhole report` groups blocked attempts by.
public enum ReportGrouping: String, Sendable, CaseIterable {
    /// `source.ip`: attempts, distinct domains, first and last seen, top domains.
    case client
    /// `dns.question.name`, lowercased: attempts, distinct clients, first and last seen, rule and list.
    case domain
    /// `rule.ruleset`: attempts, distinct clients, distinct domains, first and last seen.
    case list
}

/// The question asked of the block logs: filters, grouping and how many rows.
public struct ReportQuery: Sendable {
    public var grouping: ReportGrouping
    /// Attempts at or after this time (ms since the epoch).
    public var since: Int64?
    /// Attempts before this time (ms since the epoch).
    public var until: Int64?
    /// Attempts from any of these clients; all when empty.
    public var clients: [ClientPattern]
    /// Attempts for any of these names or names below them; all when empty.
    public var domains: [DomainPattern]
    /// Rows at most, after sorting; all when nil.
    public var limit: Int?
    /// Domains listed per client in `--by client`.
    public var topDomains: Int

    public init(grouping: ReportGrouping = .client, since: Int64? = nil, until: Int64? = nil,
                clients: [ClientPattern] = [], domains: [DomainPattern] = [], limit: Int? = nil, topDomains: Int = 5) {
        self.grouping = grouping
        self.since = since
        self.until = until
        self.clients = clients
        self.domains = domains
        self.limit = limit
        self.topDomains = topDomains
    }

    /// Whether an attempt passes every filter. Retro-hit lines are findings of the query
    /// history, not blocked attempts, and are never counted (`sinkhole hunt` reports them);
    /// `ReportAggregator.add(line:)` skips them the same way.
    public func accepts(_ record: BlockLogRecord) -> Bool {
        !record.isRetroHit && acceptsTime(record.time) && acceptsClient(record.client)
            && (acceptsDomain(record.domain) || acceptsRule(record.rule))
    }

    func acceptsTime(_ time: Int64) -> Bool {
        if let since, time < since { return false }
        if let until, time >= until { return false }
        return true
    }

    func acceptsClient(_ client: String) -> Bool {
        guard !clients.isEmpty else { return true }
        guard let address = IPAddress.parse(client) else { return false }
        return clients.contains { $0.matches(address: address) }
    }

    func acceptsDomain(_ domain: String) -> Bool {
        domains.isEmpty || domains.contains { $0.matches(domain) }
    }

    /// An attempt whose name was not in the domains but whose rule is: a name blocked because
    /// its answer's CNAME led into a listed domain (`sinkhole.match: cname`; `rule.name` is the
    /// listed name). The client reached for that domain, under another name.
    func acceptsRule(_ rule: String) -> Bool {
        !domains.isEmpty && !rule.isEmpty && domains.contains { $0.matches(rule) }
    }
}

/// Counts blocked attempts, line by line, into groups. Lines that are not block log lines are
/// counted as malformed and otherwise ignored; blank lines are ignored. Retro-hit lines are
/// block log lines (counted in `lines`) but not attempts: they never reach a group.
public final class ReportAggregator {
    public let query: ReportQuery
    /// Non-blank lines seen.
    public private(set) var lines = 0
    /// Lines that were not block log lines.
    public private(set) var malformed = 0
    /// Attempts that passed the filters.
    public private(set) var matched = 0
    /// Retro-hit lines that passed the client and domain filters and whose resolutions fall in
    /// the time window: clients that resolved a name before a list blocked it. Not attempts (the
    /// queries were answered), so not in the groups, but the first thing an analyst must see.
    public private(set) var retroHits: [LoggedRetroHit] = []

    struct RuleKey: Hashable {
        var rule: String
        var list: String
    }

    struct Group {
        var attempts = 0
        var first = Int64.max
        var last = Int64.min
        /// `client`: attempts per domain. `list`: the distinct domains.
        var domains: [String: Int] = [:]
        /// `domain`, `list`: the distinct clients.
        var clients: Set<String> = []
        /// `domain`: attempts per rule and list.
        var rules: [RuleKey: Int] = [:]
    }

    private var groups: [String: Group] = [:]
    /// `--client` verdict per `source.ip` text, so each distinct address is parsed once.
    private var clientVerdicts: [String: Bool] = [:]

    public init(query: ReportQuery) {
        self.query = query
    }

    /// A retro-hit line (rare: one per client and name) decoded whole.
    private func addRetroHit(_ line: UnsafeRawBufferPointer) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
              let source = object["source"] as? [String: Any], let client = source["ip"] as? String,
              let dns = object["dns"] as? [String: Any], let question = dns["question"] as? [String: Any],
              let name = question["name"] as? String,
              let event = object["event"] as? [String: Any],
              let start = (event["start"] as? String).flatMap(ReportTime.parse),
              let end = (event["end"] as? String).flatMap(ReportTime.parse) else { return }
        let history = (object["sinkhole"] as? [String: Any])?["history"] as? [String: Any]
        let list = (object["rule"] as? [String: Any])?["ruleset"] as? String ?? ""
        // In the window when any of its resolutions may be: [start, end] meets [since, until).
        if let since = query.since, end < since { return }
        if let until = query.until, start >= until { return }
        guard query.acceptsClient(client), query.acceptsDomain(name.lowercased()) else { return }
        retroHits.append(LoggedRetroHit(client: client, name: name, firstSeen: start, lastSeen: end,
                                        count: history?["count"] as? Int ?? 0, list: list))
    }

    /// Counts a line that could not be read as a line at all (too long).
    public func addMalformed(_ count: Int = 1) {
        lines += count
        malformed += count
    }

    /// Parses, filters and counts one line: the same filters as `ReportQuery.accepts`, applied
    /// field by field on the raw line, so that a line is decoded only as far as it passes.
    public func add(line: UnsafeRawBufferPointer) {
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
        lines += 1
        guard let fields = BlockLogLine.scan(line), let time = fields.time(in: line) else {
            malformed += 1
            return
        }
        if fields.isRetroHit(in: line) {
            addRetroHit(line)
            return
        }
        guard query.acceptsTime(time) else { return }
        let client = fields.string(fields.client, in: line)
        if !query.clients.isEmpty {
            let verdict: Bool
            if let known = clientVerdicts[client] {
                verdict = known
            } else {
                verdict = query.acceptsClient(client)
                clientVerdicts[client] = verdict
            }
            guard verdict else { return }
        }
        let domain = fields.string(fields.domain, in: line, lowercase: true)
        guard query.acceptsDomain(domain) || query.acceptsRule(fields.string(fields.rule, in: line, lowercase: true)) else { return }
        switch query.grouping {
        case .client:
            count(key: client, time: time, client: client, domain: domain, rule: "", list: "")
        case .domain:
            count(key: domain, time: time, client: client, domain: domain,
                  rule: fields.string(fields.rule, in: line), list: fields.string(fields.list, in: line))
        case .list:
            let list = fields.string(fields.list, in: line)
            count(key: list, time: time, client: client, domain: domain, rule: "", list: list)
        }
    }

    public func add(line: String) {
        var line = line
        line.withUTF8 { add(line: UnsafeRawBufferPointer($0)) }
    }

    /// Filters and counts an already decoded attempt.
    public func add(_ record: BlockLogRecord) {
        lines += 1
        guard query.accepts(record) else { return }
        let key: String
        switch query.grouping {
        case .client: key = record.client
        case .domain: key = record.domain
        case .list: key = record.list
        }
        count(key: key, time: record.time, client: record.client, domain: record.domain, rule: record.rule, list: record.list)
    }

    private func count(key: String, time: Int64, client: String, domain: String, rule: String, list: String) {
        matched += 1
        let grouping = query.grouping
        ReportAggregator.update(&groups[key, default: Group()]) { g in
            g.attempts += 1
            if time < g.first { g.first = time }
            if time > g.last { g.last = time }
            switch grouping {
            case .client:
                g.domains[domain, default: 0] += 1
            case .domain:
                g.clients.insert(client)
                g.rules[RuleKey(rule: rule, list: list), default: 0] += 1
            case .list:
                g.clients.insert(client)
                g.domains[domain, default: 0] += 1
            }
        }
    }

    @inline(__always)
    private static func update(_ group: inout Group, _ body: (inout Group) -> Void) { body(&group) }

    /// The groups as rows, most attempts first, ties by key (clients in address order).
    public func table() -> ReportTable {
        var keyed = groups.map { (key: $0.key, group: $0.value, address: IPAddress.parse($0.key)) }
        let byAddress = query.grouping == .client
        keyed.sort { a, b in
            if a.group.attempts != b.group.attempts { return a.group.attempts > b.group.attempts }
            if byAddress { return ReportAggregator.addressOrder(a.key, a.address, b.key, b.address) }
            return a.key < b.key
        }
        let total = keyed.count
        if let limit = query.limit, limit < keyed.count { keyed.removeLast(keyed.count - max(0, limit)) }
        let rows = keyed.map { row(key: $0.key, $0.group) }
        return ReportTable(grouping: query.grouping, columns: ReportTable.columns(for: query.grouping), rows: rows, totalRows: total)
    }

    /// IPv4 before IPv6, each in numeric order; text that is not an address last, in text order.
    static func addressOrder(_ a: String, _ aBytes: [UInt8]?, _ b: String, _ bBytes: [UInt8]?) -> Bool {
        switch (aBytes, bBytes) {
        case let (x?, y?):
            if x.count != y.count { return x.count < y.count }
            if x != y { return x.lexicographicallyPrecedes(y) }
            return a < b
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return a < b
        }
    }

    private func row(key: String, _ g: Group) -> [ReportValue] {
        switch query.grouping {
        case .client:
            let top = g.domains.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                .prefix(max(0, query.topDomains)).map { NamedCount(name: $0.key, count: $0.value) }
            return [.text(key), .count(g.attempts), .count(g.domains.count), .time(g.first), .time(g.last), .counts(top)]
        case .domain:
            let rules = g.rules.sorted {
                $0.value != $1.value ? $0.value > $1.value : ($0.key.rule, $0.key.list) < ($1.key.rule, $1.key.list)
            }
            var ruleNames: [String] = []
            var listNames: [String] = []
            for (r, _) in rules {
                if !ruleNames.contains(r.rule) { ruleNames.append(r.rule) }
                if !listNames.contains(r.list) { listNames.append(r.list) }
            }
            return [.text(key), .count(g.attempts), .count(g.clients.count), .time(g.first), .time(g.last),
                    .texts(ruleNames), .texts(listNames)]
        case .list:
            return [.text(key), .count(g.attempts), .count(g.clients.count), .count(g.domains.count),
                    .time(g.first), .time(g.last)]
        }
    }
}

/// A client that resolved a name before a list blocked it, as a retro-hit line says.
public struct LoggedRetroHit: Sendable, Equatable {
    public var client: String
    public var name: String
    public var firstSeen: Int64
    public var lastSeen: Int64
    public var count: Int
    public var list: String

    /// Retro-hits as a table (first seen first), for the text report.
    public static func table(_ hits: [LoggedRetroHit]) -> ReportTable {
        let columns = [ReportColumn("client", "CLIENT"), ReportColumn("name", "NAME"), ReportColumn("first_seen", "FIRST SEEN"),
                       ReportColumn("last_seen", "LAST SEEN"), ReportColumn("count", "COUNT"), ReportColumn("list", "LIST")]
        let rows = hits.sorted { ($0.firstSeen, $0.client, $0.name) < ($1.firstSeen, $1.client, $1.name) }.map {
            [ReportValue.text($0.client), .text($0.name), .time($0.firstSeen), .time($0.lastSeen), .count($0.count), .text($0.list)]
        }
        return ReportTable(grouping: .client, columns: columns, rows: rows, totalRows: rows.count)
    }
}

/// A name with its number of attempts (a client's top domains).
public struct NamedCount: Sendable, Equatable {
    public var name: String
    public var count: Int
    public init(name: String, count: Int) {
        self.name = name
        self.count = count
    }
}

/// One cell of a report.
public enum ReportValue: Sendable, Equatable {
    case text(String)
    case count(Int)
    /// Milliseconds since the epoch.
    case time(Int64)
    case texts([String])
    case counts([NamedCount])
}

/// A column of a report.
public struct ReportColumn: Sendable, Equatable {
    /// snake_case: the JSON key and the CSV header.
    public let name: String
    /// The table header.
    public let title: String
    /// For `.counts` cells: the JSON key of each name (`{"domain": …, "attempts": …}`).
    public let itemKey: String?

    public init(_ name: String, _ title: String, itemKey: String? = nil) {
        self.name = name
        self.title = title
        self.itemKey = itemKey
    }
}

/// The answer: rows of cells under columns, sorted, limited.
public struct ReportTable: Sendable {
    public let grouping: ReportGrouping
    public let columns: [ReportColumn]
    public let rows: [[ReportValue]]
    /// Rows before `--limit`.
    public let totalRows: Int

    public init(grouping: ReportGrouping, columns: [ReportColumn], rows: [[ReportValue]], totalRows: Int) {
        self.grouping = grouping
        self.columns = columns
        self.rows = rows
        self.totalRows = totalRows
    }

    /// The cell of `row` under the column named `column`.
    public func value(_ row: Int, _ column: String) -> ReportValue? {
        guard rows.indices.contains(row), let c = columns.firstIndex(where: { $0.name == column }) else { return nil }
        return rows[row][c]
    }

    /// The first column of every row.
    public var keys: [String] {
        rows.map { if case .text(let key)? = $0.first { return key } else { return "" } }
    }

    public static func columns(for grouping: ReportGrouping) -> [ReportColumn] {
        switch grouping {
        case .client:
            return [ReportColumn("client", "CLIENT"), ReportColumn("attempts", "ATTEMPTS"), ReportColumn("domains", "DOMAINS"),
                    ReportColumn("first_seen", "FIRST SEEN"), ReportColumn("last_seen", "LAST SEEN"),
                    ReportColumn("top_domains", "TOP DOMAINS", itemKey: "domain")]
        case .domain:
            return [ReportColumn("domain", "DOMAIN"), ReportColumn("attempts", "ATTEMPTS"), ReportColumn("clients", "CLIENTS"),
                    ReportColumn("first_seen", "FIRST SEEN"), ReportColumn("last_seen", "LAST SEEN"),
                    ReportColumn("rule", "RULE"), ReportColumn("list", "LIST")]
        case .list:
            return [ReportColumn("list", "LIST"), ReportColumn("attempts", "ATTEMPTS"), ReportColumn("clients", "CLIENTS"),
                    ReportColumn("domains", "DOMAINS"), ReportColumn("first_seen", "FIRST SEEN"),
                    ReportColumn("last_seen", "LAST SEEN")]
        }
    }
}

/// A report over files: the table and what went wrong along the way.
public struct ReportOutcome: Sendable {
    public let table: ReportTable
    /// Non-blank lines read, over all files.
    public let lines: Int
    /// Attempts that passed the filters.
    public let matched: Int
    /// Malformed (skipped) lines per file, in the order read; files without any left out.
    public let malformedByFile: [(path: String, count: Int)]
    /// Non-fatal problems, e.g. a truncated compressed file.
    public let warnings: [String]
    /// Retro-hits that pass the filters (clients that resolved a name before it was listed).
    public var retroHits: [LoggedRetroHit] = []

    public var malformed: Int { malformedByFile.reduce(0) { $0 + $1.count } }

    /// The lines for stderr: the warnings, then `report: skipped N malformed lines (FILE: n, …)`.
    public var diagnostics: [String] {
        var out = warnings.map { "report: \($0)" }
        let total = malformed
        if total > 0 {
            let perFile = malformedByFile.map { "\($0.path): \($0.count)" }.joined(separator: ", ")
            out.append("report: skipped \(LogText.count(total, "malformed line")) (\(perFile))")
        }
        return out
    }
}

public enum BlockLogReport {
    /// Reads every file (plain or gzip) in order and answers `query`. Every file is opened
    /// before any is read, so a missing one fails the report at once, naming it.
    public static func run(_ query: ReportQuery, files: [String]) throws(BlockLogReadError) -> ReportOutcome {
        var readers: [BlockLogReader] = []
        for path in files { readers.append(try BlockLogReader(path: path)) }
        let aggregator = ReportAggregator(query: query)
        var malformedByFile: [(path: String, count: Int)] = []
        var warnings: [String] = []
        for reader in readers {
            let before = aggregator.malformed
            try reader.forEachLine { aggregator.add(line: $0) }
            aggregator.addMalformed(reader.overlongLines)
            warnings += reader.warnings
            let skipped = aggregator.malformed - before
            if skipped > 0 { malformedByFile.append((reader.path, skipped)) }
        }
        var outcome = ReportOutcome(table: aggregator.table(), lines: aggregator.lines, matched: aggregator.matched,
                                    malformedByFile: malformedByFile, warnings: warnings)
        outcome.retroHits = aggregator.retroHits
        return outcome
    }
}
