import ArgumentParser
import Foundation
import SinkholeCore

/// `sinkhole check PATH…`: parse list files or directories exactly as `serve` would.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parse list files or directories (or a --config file) as serve would: entries per file, rejected lines with reasons.",
        discussion: "With --config, or any of serve's flags, the settings serve would run with (the file overridden by the flags, as serve takes them) are validated too. Exits 1 when a file or directory cannot be used, or when those settings are invalid, a file serve writes cannot be created or the --user or --group named does not exist; 0 otherwise (rejected lines and unread directory entries alone do not fail the check)."
    )

    @Argument(help: ArgumentHelp("List files or directories of lists.", valueName: "PATH"))
    var paths: [String] = []

    @Option(name: .customLong("max-errors"), parsing: .unconditional, help: "Rejected lines printed per file.")
    var maxErrors: Int = 20

    /// serve's own options: `check --config FILE --listen ...` validates what `serve` given the
    /// same would run with (a systemd drop-in's ExecStart flags over the file).
    @OptionGroup(title: "Settings to validate, as serve takes them (then the blocklist directory they name is checked, unless PATHs are given)")
    var serve: ServeOptions

    func validate() throws {
        if maxErrors < 0 { throw ValidationError("--max-errors must be 0 or more") }
    }

    func run() throws {
        var paths = self.paths
        var configFailed = false
        let given = try? serve.settings()
        let config = serve.config
        if config != nil || given.map({ !$0.values.isEmpty }) == true {
            let name = config ?? "settings"
            do {
                let (configuration, settings) = try serve.configuration()
                // The files serve writes and the user it drops to: serve would refuse to start
                // without them. Said with the lists' check, not instead of it: every problem in one run.
                let problems = settings.fileProblems(configuration) + settings.identityProblems(configuration)
                for problem in problems { print("\(problem)") }
                configFailed = !problems.isEmpty
                if !configFailed {
                    print("\(name): OK")
                    var shown = configuration.summary
                    shown["log-level"] = settings.logLevel
                    for (key, value) in shown.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
                    if let problem = ResolvConf.hostAddressProblem(listen: configuration.listen) { print("note: \(problem)") }
                }
                if paths.isEmpty { paths = [configuration.blocklistDirectory] }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                print("\(error)")
                throw ExitCode(1)
            }
        }
        guard !paths.isEmpty else { throw ValidationError("give at least one list file or directory, or --config FILE") }
        var unusable = 0
        var total = 0
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                print("\(path): UNUSABLE: no such file or directory")
                unusable += 1
                continue
            }
            let files: [String]
            var skipped: [BlocklistLoader.SkippedEntry] = []
            if isDirectory.boolValue {
                do { (files, skipped) = try BlocklistLoader.listing(of: path) } catch {
                    print("\(path): UNUSABLE: \(error)")
                    unusable += 1
                    continue
                }
                if files.isEmpty { print("\(path): no list files") }
            } else {
                files = [path]
            }
            for file in files {
                let result = BlocklistLoader.load(file: file)
                if let list = result.list {
                    let kind = BlocklistLoader.isAllowList(list.name) ? "allowlist, " : ""
                    print("\(LogText.printable(file)): \(LogText.count(list.entries, "entry", plural: "entries")) (\(kind)\(list.format.rawValue)), \(LogText.count(result.rejectedLines, "line")) rejected")
                    if BlocklistLoader.looksMeantAsAllowList(list.name), list.format != .rpz {
                        print("  warning: named like an allowlist, read as a block list: its names are blocked (an allowlist's name ends in .allow)")
                    }
                    for note in list.notes { print("  note: \(LogText.printable(note))") }
                    if list.entries == 0, !BlocklistLoader.isAllowList(list.name) {
                        print("  warning: no entry: it blocks nothing (a running serve that had a version with entries keeps that version in force; remove the file to drop the list)")
                    }
                    total += list.entries
                } else {
                    print("\(LogText.printable(file)): UNUSABLE: \(result.failure ?? "unknown reason")")
                    unusable += 1
                }
                for error in result.lineErrors.prefix(maxErrors) { print("  \(LogText.printable(error.description))") }
                if result.rejectedLines > maxErrors { print("  … and \(result.rejectedLines - maxErrors) more") }
            }
            // What serve does not read either, so that a list saved under the wrong name is seen.
            for entry in skipped {
                print("\(LogText.printable((path as NSString).appendingPathComponent(entry.name))): not read: \(entry.reason)")
                if entry.unreadableName { unusable += 1 }
            }
        }
        print("total: \(LogText.count(total, "entry", plural: "entries")), \(unusable) unusable")
        if configFailed { print("\(config ?? "settings"): NOT OK (see above)") }
        if unusable > 0 || configFailed { throw ExitCode(1) }
    }
}

/// `sinkhole explain NAME`: which rule of which file decides a name.
struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say whether a name is blocked or allowed, and by which rule of which file and line.",
        discussion: "Exits 0 when the name is blocked, 1 when it is not (allowed or unlisted), 2 when the lists cannot be read, 64 on a usage error (a missing or invalid argument)."
    )

    @Argument(help: "The name to look up, e.g. update.msstorageboxes.com, or an address to look up among the IP indicators")
    var name: String

    @Option(name: .customLong("blocklist-dir"), help: ArgumentHelp("Directory of list files (default as for serve).", valueName: "DIR"))
    var blocklistDir: String?

    func run() throws {
        let address = IPAddress.parse(name)
        guard let wire = address == nil ? WireName.fromPresentation(name) : [0] else {
            var why = ""
            if case .failure(let problem) = DomainName.parse(Substring(name)) { why = ": \(problem)" }
            print("'\(LogText.printable(name))' is not a domain name or an IP address\(why)")
            throw ExitCode(2)
        }
        let directory = blocklistDir ?? DefaultPaths.blocklistDirectory()
        let store = BlocklistStore()
        let report: BlocklistStore.RefreshReport
        do { report = try store.refresh(directory: directory) } catch {
            print("\(error)")
            throw ExitCode(2)
        }
        // explain reads the files as they are now. A file serve could not use is one whose
        // earlier version a running serve keeps in force: said first, not left to mislead (a
        // failed update made explain say "not listed" of a name serve still blocked).
        for failed in report.failed {
            let file = LogText.printable((failed.path as NSString).lastPathComponent)
            print("note: \(file) cannot be used as it is now (\(LogText.printable(failed.failure ?? "unusable"))): a running serve keeps its earlier version in force, which explain cannot see")
        }
        // An emptied block list is refused by serve as a failed download when it had entries
        // (explain said "not listed" of a name serve went on blocking from it).
        for list in report.loaded where list.entries == 0 && !BlocklistLoader.isAllowList(list.name) {
            print("note: \(LogText.printable(list.name)) has no entry now: a running serve that had a version with entries keeps that version in force (remove the file to drop the list), which explain cannot see")
        }
        if let address {
            // An address is looked up among the IP indicators, which judge upstream answers.
            let display = IPAddress.text(address)
            guard let match = store.snapshot.decideAddress(address) else {
                print("\(display): not listed in \(directory) (\(LogText.count(store.snapshot.entryCount, "entry", plural: "entries"))): answers holding it are relayed")
                throw ExitCode(1)
            }
            let source = "rule '\(match.rule)' at \(match.list):\(match.line)"
            if match.action == .allow {
                print("\(display): ALLOWED by \(source): answers holding it are relayed")
                throw ExitCode(1)
            }
            print("\(display): LISTED by \(source): an upstream answer holding it (A or AAAA) is blocked, as a response-IP match")
            return
        }
        let display = WireName.text(wire)
        guard let match = store.snapshot.decide(wire) else {
            print("\(display): not listed in \(directory) (\(LogText.count(store.snapshot.entryCount, "entry", plural: "entries"))): forwarded upstream")
            throw ExitCode(1)
        }
        let source = "rule '\(match.rule)' at \(match.list):\(match.line)"
        defer {
            // The other lists that hold the name: a list switched off or edited does not unblock
            // a name another list also blocks, and an allow's lifted blocks are worth seeing.
            for other in store.snapshot.matches(wire) where other.list != match.list {
                let what = other.allowed ? "allowed" : match.allowed ? "blocked (lifted by the allow above)" : "blocked"
                print("  also \(what) by rule '\(other.rule)' at \(other.list):\(other.line)")
            }
        }
        switch match.action {
        case .allow:
            print("\(display): ALLOWED by \(source): forwarded upstream")
            throw ExitCode(1)
        case .block:
            print("\(display): BLOCKED by \(source): answered per --block-mode (NXDOMAIN by default)")
        case .nxdomain:
            print("\(display): BLOCKED by \(source): answered NXDOMAIN (RPZ CNAME .)")
        case .nodata:
            print("\(display): BLOCKED by \(source): answered NODATA (RPZ CNAME *.)")
        case .drop:
            print("\(display): BLOCKED by \(source): no answer (RPZ rpz-drop)")
        case .localData:
            let addresses = match.localData.map { IPAddress.text($0.rdata) }.joined(separator: ", ")
            print("\(display): BLOCKED by \(source): answered with local data \(addresses)")
        }
    }
}
