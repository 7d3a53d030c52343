import ArgumentParser
import Foundation
import SinkholeCore

/// `sinkhole hunt --query-history FILE [LIST…]`: which clients already resolved names that these
/// lists block, according to the query history.
struct Hunt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search the query history for clients that resolved names these lists block (a retro-hunt).",
        discussion: """
        Each LIST (file or directory) is parsed as serve would; without LIST the lists of \
        --blocklist-dir are used. Every name in the history is matched exactly as a query would \
        be (names below a listed name, *.name wildcards, RPZ triggers, allowlists), and each \
        client that resolved a matching name is printed with the rule, first and last seen and \
        a count. Times are UTC. The history file may be in use by a running sinkhole.

        Which machines resolved the 3CX domains in the last week:
          sinkhole hunt --query-history /var/lib/sinkhole/history.db --since 7d \\
            blocklists/crowdstrike-3cx.txt

        Exits 0 when clients were found, 1 when none were, 2 when a file cannot be read, 64 on a
        usage error (a missing or invalid argument).
        """
    )

    typealias Format = Report.Format

    @Option(name: .customLong("query-history"), help: ArgumentHelp("The history file serve writes (serve --query-history).", valueName: "FILE"))
    var queryHistory: String

    @Argument(help: ArgumentHelp("List files or directories of lists. Default: the lists of --blocklist-dir.", valueName: "LIST"))
    var lists: [String] = []

    @Option(name: .customLong("blocklist-dir"), help: ArgumentHelp("Directory of list files used when no LIST is given (default as for serve).", valueName: "DIR"))
    var blocklistDir: String?

    @Option(name: .customLong("since"), help: ArgumentHelp("Only resolutions at or after this time: 2026-11-26T10:00:00Z, 2026-11-26, or 30m, 24h, 7d before now. The history is kept per hour: an hour with a resolution at or after TIME counts whole (its first seen and count included). Default: the whole history.", valueName: "TIME"))
    var since: String?

    @Option(name: .customLong("format"), help: ArgumentHelp("table (for people), json (array of objects) or csv (RFC 4180, header row).", valueName: "table|json|csv"))
    var format: Format = .table

    func validate() throws {
        if let since {
            do { _ = try ReportTime.bound(since, now: ReportTime.now(), upper: false) } catch {
                throw ValidationError("--since \(error)")
            }
        }
    }

    func run() throws {
        let sinceMs = try since.map { try ReportTime.bound($0, now: ReportTime.now(), upper: false) } ?? 0
        let blocklist: Blocklist
        let sources = lists.isEmpty ? [blocklistDir ?? DefaultPaths.blocklistDirectory()] : lists
        do { blocklist = try Hunt.load(sources) } catch {
            FileHandle.standardError.write(Data("hunt: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let hits: [RetroHit]
        do {
            hits = try RetroHunt.hunt(historyFile: queryHistory, since: sinceMs) { blocklist.blockingRule(for: $0) }
        } catch {
            FileHandle.standardError.write(Data("hunt: \(error)\n".utf8))
            throw ExitCode(2)
        }
        // The history holds the names asked, not the addresses answered: IP indicators cannot be
        // hunted, and an analyst who gave an address list must be told so, not told "no client".
        // Allowlist ranges are no indicators: not counted as left out.
        let addresses = blocklist.addressCount
        let indicators = blocklist.blockingAddressCount
        if indicators > 0 {
            let what = LogText.count(indicators, "address entry", plural: "address entries")
            FileHandle.standardError.write(Data("hunt: \(what) (IP indicators) not hunted: the history records the names asked, not the addresses answered\n".utf8))
        }
        if hits.isEmpty && format == .table {
            // Which lists: without LIST they are the default directory's, which may not be the
            // one the running server watches.
            let named = sources.map { LogText.printable($0) }.joined(separator: ", ")
            let names = blocklist.entryCount - addresses
            print("no client in the history resolved a name these lists block (\(LogText.count(names, "name entry", plural: "name entries")) in \(named))")
        } else {
            FileHandle.standardOutput.write(Data(ReportFormatter.render(Hunt.table(hits), as: format.core).utf8))
        }
        if hits.isEmpty { throw ExitCode(1) }
    }

    /// Parses files and directories as serve would; an unusable file is an error here (the
    /// analyst named it), unlike in serve where the previous version stays in force.
    static func load(_ paths: [String]) throws -> Blocklist {
        var loaded: [LoadedList] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw ValidationError("\(path): no such file or directory")
            }
            let files = isDirectory.boolValue ? try BlocklistLoader.listFiles(in: path) : [path]
            for file in files {
                let result = BlocklistLoader.load(file: file)
                guard let list = result.list else {
                    throw ValidationError("\(file): unusable: \(result.failure ?? "unknown reason")")
                }
                loaded.append(list)
            }
        }
        return Blocklist(lists: loaded.sorted { $0.name < $1.name })
    }

    static func table(_ hits: [RetroHit]) -> ReportTable {
        let columns = [
            ReportColumn("client", "CLIENT"), ReportColumn("name", "NAME"), ReportColumn("rule", "RULE"),
            ReportColumn("list", "LIST"), ReportColumn("line", "LINE"), ReportColumn("first_seen", "FIRST SEEN"),
            ReportColumn("last_seen", "LAST SEEN"), ReportColumn("count", "COUNT"), ReportColumn("types", "TYPES"),
        ]
        let rows: [[ReportValue]] = hits.map {
            [.text($0.client), .text($0.name), .text($0.rule.rule), .text($0.rule.list), .count($0.rule.line),
             .time($0.firstSeen), .time($0.lastSeen), .count($0.count), .texts($0.types)]
        }
        return ReportTable(grouping: .client, columns: columns, rows: rows, totalRows: rows.count)
    }
}
