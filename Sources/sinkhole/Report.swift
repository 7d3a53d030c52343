import ArgumentParser
import Foundation
import SinkholeCore

/// `sinkhole report [FILE…]`: who tried which listed names, when, how often, from block logs.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarise block logs: blocked attempts per client, per domain or per list, with first and last seen.",
        discussion: """
        Reads the live block log, rotated ones (block.log.1) and gzip-compressed ones \
        (block.log.2.gz, recognised by content), in the order given. Lines that are not block \
        log lines (garbage, a last line still being written) are skipped and counted on stderr. \
        Times are UTC. Rows are sorted by attempts, most first, then by key.

        Which clients tried these published domains, and when first:
          sinkhole report --by client --domain msstorageboxes.com --domain sbmsa.wiki \\
            block.log block.log.1 block.log.2.gz

        Exits 1 when a file cannot be read.
        """
    )

    enum Grouping: String, ExpressibleByArgument, CaseIterable {
        case client, domain, list
        var core: ReportGrouping {
            switch self {
            case .client: return .client
            case .domain: return .domain
            case .list: return .list
            }
        }
    }

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json, csv
        var core: ReportFormat {
            switch self {
            case .table: return .table
            case .json: return .json
            case .csv: return .csv
            }
        }
    }

    @Argument(help: ArgumentHelp("Block log files, plain or gzip-compressed ('-': standard input). Each file is read once. Default: the --block-log file.", valueName: "FILE"))
    var files: [String] = []

    @Option(name: .customLong("block-log"), help: ArgumentHelp("The block log serve writes (as given to serve --block-log); read when no FILE is given, and also read along with FILEs.", valueName: "FILE"))
    var blockLog: String?

    @Option(name: .customLong("by"), help: ArgumentHelp("Group by client (source.ip), domain (the name asked, lowercased) or list (rule.ruleset).", valueName: "client|domain|list"))
    var by: Grouping = .client

    @Option(name: .customLong("since"), help: ArgumentHelp("Only attempts at or after this time: 2026-11-26T10:00:00Z, 2026-11-26 (UTC midnight), or 30m, 24h, 7d before now.", valueName: "TIME"))
    var since: String?

    @Option(name: .customLong("until"), help: ArgumentHelp("Only attempts before this time, same forms as --since; a date includes that whole day.", valueName: "TIME"))
    var until: String?

    @Option(name: .customLong("client"), help: ArgumentHelp("Only attempts from this address or CIDR block (10.0.0.0/8); repeatable.", valueName: "IP"))
    var clients: [String] = []

    @Option(name: .customLong("domain"), help: ArgumentHelp("Only attempts for this name or names below it, any letter case, and names blocked by a rule for it (a CNAME into it); repeatable.", valueName: "NAME"))
    var domains: [String] = []

    @Option(name: .customLong("format"), help: ArgumentHelp("table (for people), json (array of objects) or csv (RFC 4180, header row).", valueName: "table|json|csv"))
    var format: Format = .table

    @Option(name: .customLong("limit"), parsing: .unconditional, help: ArgumentHelp("Print at most N rows.", valueName: "N"))
    var limit: Int?

    @Option(name: .customLong("top"), parsing: .unconditional, help: ArgumentHelp("Domains listed per client with --by client.", valueName: "N"))
    var top: Int = 5

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if top < 0 { throw ValidationError("--top must not be negative") }
        if files.isEmpty && blockLog == nil {
            throw ValidationError("give the block log files to read, e.g. sinkhole report /var/log/sinkhole/block.log block.log.1 (or --block-log FILE)")
        }
        _ = try query(now: ReportTime.now())
    }

    /// The query the options describe; `now` anchors relative times.
    func query(now: Int64) throws -> ReportQuery {
        var query = ReportQuery(grouping: by.core, limit: limit, topDomains: top)
        do {
            if let since { query.since = try ReportTime.bound(since, now: now, upper: false) }
            if let until { query.until = try ReportTime.bound(until, now: now, upper: true) }
        } catch {
            throw ValidationError("\(error)")
        }
        if let from = query.since, let to = query.until, from >= to, let since, let until {
            throw ValidationError("--since \(since) is not before --until \(until): no time is left between them")
        }
        for text in clients {
            guard let pattern = ClientPattern(text) else {
                throw ValidationError("--client '\(text)' is not an IP address or CIDR block (10.20.31.7, 10.0.0.0/8, fd00::/8)")
            }
            query.clients.append(pattern)
        }
        for text in domains {
            do { query.domains.append(try DomainPattern(text)) } catch { throw ValidationError("--domain \(error)") }
        }
        return query
    }

    func run() throws {
        let paths = ReportInputs.distinct((files + (blockLog.map { [$0] } ?? [])).map { $0 == "-" ? "/dev/stdin" : $0 }) { note in
            FileHandle.standardError.write(Data("report: \(note)\n".utf8))
        }
        let query = try query(now: ReportTime.now())
        let outcome: ReportOutcome
        do {
            outcome = try BlockLogReport.run(query, files: paths)
        } catch {
            FileHandle.standardError.write(Data("report: cannot read \(error.path): \(error.reason)\n".utf8))
            throw ExitCode(1)
        }
        FileHandle.standardOutput.write(Data(ReportFormatter.render(outcome.table, as: format.core).utf8))
        // Retro-hits are not attempts (those queries were answered) but they are the machines
        // that reached the names: after the table, or said on stderr for json and csv.
        let hits = outcome.retroHits
        if !hits.isEmpty, format.core == .table {
            let title = "\nResolved before a list blocked them (retro-hits, not counted above; details: sinkhole hunt):\n"
            FileHandle.standardOutput.write(Data((title + ReportFormatter.text(LoggedRetroHit.table(hits))).utf8))
        }
        for line in outcome.diagnostics { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        if !hits.isEmpty, format.core != .table {
            let clients = Set(hits.map(\.client)).count
            FileHandle.standardError.write(Data("report: \(LogText.count(hits.count, "retro-hit")) (\(LogText.count(clients, "client")) that resolved a name before a list blocked it) not in this output: see them with --format table or sinkhole hunt\n".utf8))
        }
    }
}
