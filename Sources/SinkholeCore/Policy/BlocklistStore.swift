import Foundation
import Glibc
import Logging
import Synchronization

/// Holds the blocklist snapshot in force and builds new ones.
///
/// Readers take the current snapshot: a reference copy under a lock held for nanoseconds, and
/// not one lock for all: the snapshot is kept once per thread shard (`ThreadShards`), so the
/// cores answering queries each take their own. A swap sets every shard. A
/// refresh stats every list file, re-reads only those whose signature changed, and swaps in a
/// whole new snapshot, so no query ever sees a half-built list. A file that changed but cannot
/// be used keeps its previous version in force, and so does one being written (`holding`) or
/// replaced by a link to nothing; only a file that is gone loses its list, and never the last
/// block list: a directory left with no block list keeps the lists in force (see `refresh`).
public final class BlocklistStore: Sendable {
    /// The snapshot in force, one copy per shard (its generation counts the swaps).
    private let copies: ThreadShards<Blocklist>
    /// Lists in force by path, and the signatures of files that failed (not re-read until they
    /// change). Its lock also serialises refreshes.
    private struct Files {
        var lists: [String: LoadedList] = [:]
        var failed: [String: FileSignature] = [:]
        /// Of those, the files refused as cut short.
        var cutShort: Set<String> = []
        /// Skipped entries already logged (name and reason), so each is logged once while it stays.
        var skipsLogged: Set<String> = []
        /// True while the lists in force are kept because the directory has no block list left.
        var keptWhileEmpty = false
    }
    private let refreshLock = Mutex(Files())
    private let swapped = NSCondition()
    private let refreshes = Mutex(0)

    /// Refreshes completed so far, whether or not they changed anything.
    public var refreshCount: Int { refreshes.withLock { $0 } }

    public init(_ initial: Blocklist = .empty) {
        copies = ThreadShards { initial }
        refreshLock.withLock { files in
            for list in initial.loaded { files.lists[list.path] = list }
        }
    }

    public var snapshot: Blocklist { copies.mine.value.withLock { $0 } }

    /// File names whose latest version could not be used (their previous version, if any, is in force).
    public var failedFiles: Set<String> {
        refreshLock.withLock { Set($0.failed.keys.map { ($0 as NSString).lastPathComponent }) }
    }
    public var generation: Int { snapshot.generation }

    /// What a refresh did, for the operator's log and for tests.
    public struct RefreshReport: Sendable {
        public var loaded: [LoadedList] = []
        /// The versions that `loaded` replaced, by path (for the retro-hunt: what is new).
        public var previous: [String: LoadedList] = [:]
        public var removed: [String] = []
        public var failed: [FileLoadResult] = []
        public var lineErrors: [ListLineError] = []
        /// Entries of the directory not read as lists, new since the last refresh, that look as
        /// if they were meant to be (`BlocklistStore.worthSaying`).
        public var skipped: [BlocklistLoader.SkippedEntry] = []
        public var unchanged = 0
        /// Files left as they are in force because they are being written (the names given).
        public var held: [String] = []
        /// The block lists kept in force although their files are gone, because no block list
        /// was left in the directory (an emptied or replaced directory, a mount gone); set on
        /// the refresh that found it so, and `keptRestored` on the one that found lists again.
        public var keptWhileEmpty: [String] = []
        public var keptRestored = false
        public var seconds = 0.0
        public var changed: Bool { !loaded.isEmpty || !removed.isEmpty }
    }

    /// Re-reads what changed in `directory` and swaps in a new snapshot if anything did.
    /// Throws only when the directory itself cannot be listed (the lists in force stay).
    /// Files named in `holding` (being written, `DirectoryWatcher`) are not read: their version
    /// in force stays, and a new one is read once its writer is done.
    ///
    /// A refresh that would leave no block list in force while some are keeps them all: an
    /// emptied directory is far more often an accident (a directory replaced by a deploy, a
    /// mount that went away, `rm *` before a copy) than a decision to stop blocking, and a
    /// sinkhole that silently stops blocking is the failure it exists to prevent. It is said
    /// at error level; a restart with an empty directory runs with none.
    @discardableResult
    /// `writtenInPlace`: names the directory watcher saw written to since they last came by
    /// rename or were created (for the cut-short rule, `BlocklistLoader.load`).
    public func refresh(directory: String, force: Bool = false, holding: Set<String> = [],
                        writtenInPlace: Set<String> = []) throws -> RefreshReport {
        let started = DispatchTime.now()
        let (paths, skipped) = try BlocklistLoader.listing(of: directory)
        defer {
            // The replaced lists were large, short-lived allocations: hand their pages back to
            // the kernel now rather than keep them in malloc's free lists.
            _ = sinkhole_malloc_trim(0)
        }
        return refreshLock.withLock { files -> RefreshReport in
            var report = RefreshReport()
            var next: [String: LoadedList] = [:]
            var failed: [String: FileSignature] = [:]
            var cutShortNow: Set<String> = []
            for path in paths {
                let previous = files.lists[path]
                if !holding.isEmpty, holding.contains((path as NSString).lastPathComponent) {
                    if let previous { next[path] = previous }
                    if let earlier = files.failed[path] { failed[path] = earlier }
                    report.held.append(path)
                    continue
                }
                let signature = FileSignature(path: path)
                if !force, let signature {
                    if let previous, previous.signature == signature {
                        next[path] = previous
                        report.unchanged += 1
                        continue
                    }
                    if files.failed[path] == signature {
                        failed[path] = signature
                        if let previous { next[path] = previous }
                        report.unchanged += 1
                        continue
                    }
                }
                let result = BlocklistLoader.load(file: path, previous: previous, lastFailed: files.failed[path],
                                                  lastFailedCutShort: files.cutShort.contains(path),
                                                  writtenInPlace: writtenInPlace.contains((path as NSString).lastPathComponent))
                if result.cutShort { cutShortNow.insert(path) }
                if let signature, FileSignature(path: path) != signature {
                    // Changed while it was read: a writer began after the watcher last looked.
                    // Held like a file being written; its writer's changes bring another refresh
                    // (at the latest the 30 s rescan).
                    if let previous { next[path] = previous }
                    if let earlier = files.failed[path] { failed[path] = earlier }
                    report.held.append(path)
                    continue
                }
                report.lineErrors += result.lineErrors
                if let list = result.list {
                    next[path] = list
                    report.loaded.append(list)
                    if let previous { report.previous[path] = previous }
                } else {
                    report.failed.append(result)
                    if let signature { failed[path] = signature }
                    if let previous { next[path] = previous }   // protection already in force stays
                }
            }
            // A list file replaced by a link to nothing is a file that cannot be read, not one
            // removed: its version in force stays, as for an unreadable file (said once).
            var keptLinks: Set<String> = []
            for entry in skipped where entry.dangling {
                let path = (directory as NSString).appendingPathComponent(entry.name)
                guard let previous = files.lists[path] else { continue }
                keptLinks.insert(entry.name)
                next[path] = previous
                failed[path] = FileSignature.absent
                if files.failed[path] != FileSignature.absent {
                    report.failed.append(FileLoadResult(path: path, list: nil, failure: "a link to nothing (its target is gone)",
                                                        lineErrors: [], rejectedLines: 0))
                }
            }
            // No block list left: keep the lists in force (see above). A block list with no entry
            // (a file touched, a feed's header alone: what `rm *; curl -o` leaves when the
            // download fails) is no block list here.
            let blocks = { (lists: [String: LoadedList]) in
                lists.values.contains { !BlocklistLoader.isAllowList($0.name) && $0.entries > 0 }
            }
            if blocks(files.lists) && !blocks(next) {
                let gone = files.lists.keys.filter { next[$0] == nil }.sorted()
                for path in gone {
                    next[path] = files.lists[path]
                    failed[path] = FileSignature.absent   // not usable now: exported as such
                }
                if !files.keptWhileEmpty { report.keptWhileEmpty = gone }
                files.keptWhileEmpty = true
            } else if files.keptWhileEmpty && blocks(next.filter { paths.contains($0.key) }) {
                files.keptWhileEmpty = false
                report.keptRestored = true
            }
            // A refusal as cut short is kept with its signature, carried over unchanged.
            files.cutShort = Set(failed.keys.filter { path in
                cutShortNow.contains(path) || (files.cutShort.contains(path) && failed[path] == files.failed[path])
            })
            files.failed = failed
            // Not "not read as a list" for a link to nothing whose list stays: said as unusable.
            let noted = skipped.filter { BlocklistStore.worthSaying($0) && !keptLinks.contains($0.name) }
            let keys = noted.map { $0.name + "\u{0}" + $0.reason }
            report.skipped = zip(noted, keys).filter { !files.skipsLogged.contains($0.1) }.map(\.0)
            files.skipsLogged = Set(keys)
            report.removed = files.lists.keys.filter { next[$0] == nil }.sorted()
            report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            swapped.lock()
            if report.changed {
                files.lists = next
                let lists = next.values.sorted { $0.name < $1.name }
                // Refreshes are serialised by `refreshLock`: the generation read here is the last.
                let fresh = Blocklist(lists: lists, generation: snapshot.generation + 1)
                for shard in copies.shards { shard.value.withLock { $0 = fresh } }
            }
            refreshes.withLock { $0 += 1 }
            swapped.broadcast()
            swapped.unlock()
            return report
        }
    }

    /// Waits until a snapshot newer than `generation` is in force; false on timeout.
    public func waitForGeneration(after generation: Int, timeout: Double) -> Bool {
        waitUntil(timeout: timeout) { self.generation > generation }
    }

    /// Waits until more than `count` refreshes have completed; false on timeout.
    public func waitForRefresh(after count: Int, timeout: Double) -> Bool {
        waitUntil(timeout: timeout) { self.refreshCount > count }
    }

    /// Waits until `condition` holds, checked after each refresh; false on timeout.
    public func waitUntil(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        swapped.lock()
        defer { swapped.unlock() }
        while !condition() {
            if !swapped.wait(until: deadline) { return condition() }
        }
        return true
    }

    /// Logs a refresh: per-file counts and timings at info, each bad line at warning, unusable
    /// files at error with their first bad lines.
    public static func log(_ report: RefreshReport, logger: Logger) {
        for error in report.lineErrors {
            logger.warning("\(error.description)")
        }
        for failed in report.failed {
            logger.error("list not loaded; its previous version (if any) stays in force", metadata: [
                "file.path": "\(failed.path)", "reason": "\(failed.failure ?? "?")",
                "first_bad_lines": "\(failed.lineErrors.prefix(3).map(\.description).joined(separator: " | "))",
            ])
        }
        for list in report.loaded {
            logger.info("list loaded", metadata: [
                "file.path": "\(list.path)", "format": "\(list.format.rawValue)", "entries": "\(list.entries)",
                "rejected_lines": "\(list.rejectedLines)", "seconds": "\(String(format: "%.3f", list.seconds))",
                "shared_segments": "\(list.sharedSegments)/\(list.segments)",
            ])
            if list.rejectedLines > 0 {
                logger.warning("lines skipped", metadata: ["file.path": "\(list.path)", "count": "\(list.rejectedLines)"])
            }
            if let before = report.previous[list.path]?.entries, BlocklistStore.shrankSharply(from: before, to: list.entries),
               !BlocklistLoader.isAllowList(list.name) {
                // Loaded (a feed may well drop most of its entries), but a truncated download
                // looks the same: worth a look.
                logger.warning("list lost most of its entries", metadata: [
                    "file.path": "\(list.path)", "entries": "\(list.entries)", "entries_before": "\(before)",
                ])
            }
            if BlocklistLoader.looksMeantAsAllowList(list.name), list.format != .rpz {
                // whitelist.txt, local.allow.txt: names the operator meant to let through, here blocked.
                logger.warning("list named like an allowlist is read as a block list: its names are blocked (an allowlist's name ends in .allow)",
                               metadata: ["file.path": "\(list.path)"])
            }
            for note in list.notes {
                logger.warning("list read with a note", metadata: ["file.path": "\(list.path)", "note": "\(note)"])
            }
            if list.entries == 0 && !BlocklistLoader.isAllowList(list.name) {
                // Never quiet: after a restart an emptied feed has no version in force to keep.
                logger.warning("list has no entry: it blocks nothing", metadata: ["file.path": "\(list.path)"])
            }
        }
        for path in report.removed {
            logger.info("list removed", metadata: ["file.path": "\(path)"])
        }
        for path in report.held {
            logger.debug("list file being written: its version in force stays until its writer closes it",
                         metadata: ["file.path": "\(path)"])
        }
        if !report.keptWhileEmpty.isEmpty {
            logger.error("no block list left in the blocklist directory: the lists in force are kept (restart to run with none)",
                         metadata: ["lists": "\(report.keptWhileEmpty.map { ($0 as NSString).lastPathComponent }.joined(separator: ","))"])
        }
        if report.keptRestored {
            logger.notice("block lists are back in the blocklist directory: the lists in it are in force, and only they")
        }
        for entry in report.skipped {
            // At info, a link to nothing too: a ConfigMap key being removed leaves one for a moment.
            if entry.unreadableName {
                logger.warning("not read as a list", metadata: ["file.name": "\(entry.name)", "reason": "\(entry.reason)"])
            } else {
                logger.info("not read as a list", metadata: ["file.name": "\(entry.name)", "reason": "\(entry.reason)"])
            }
        }
    }
}

extension BlocklistStore {
    /// Whether an entry serve does not read is worth a log line: a directory, a link to nothing,
    /// a backup or package copy, which may well have been meant as a list. Not hidden files, notes
    /// (.md), or what downloads and editors leave while they work (.tmp, .part, .swp): those come
    /// and go with every update. `sinkhole check` names them all.
    static func worthSaying(_ entry: BlocklistLoader.SkippedEntry) -> Bool {
        if entry.name.hasPrefix(".") || entry.name.hasSuffix(".md") { return false }
        return ![".tmp", ".part", ".swp"].contains { entry.name.hasSuffix($0) }
    }

    /// A list that had at least 100 entries and kept fewer than a tenth of them.
    static func shrankSharply(from before: Int, to after: Int) -> Bool {
        before >= 100 && after * 10 < before
    }
}

/// glibc's malloc_trim(3); <malloc.h> is not part of Swift's Glibc module.
@_silgen_name("malloc_trim")
func sinkhole_malloc_trim(_ pad: Int) -> Int32

/// glibc's mallopt(3), likewise.
@_silgen_name("mallopt")
func sinkhole_mallopt(_ parameter: Int32, _ value: Int32) -> Int32

public enum HeapTuning {
    /// Lets the main heap keep up to 64 MiB freed at its top instead of giving it back to the
    /// kernel at every free past 128 KiB (M_TRIM_THRESHOLD), and grow 4 MiB at a time
    /// (M_TOP_PAD). Reading an RPZ zone, ldns allocates and frees each record, and on the main
    /// thread that moved the heap's end up and down four times a record: `check` of a 200,000
    /// trigger zone spent 3.2 s of its 4.1 in brk. For the one-shot commands, which end soon
    /// after; serve reads lists on other threads, whose heaps this does not slow so.
    public static func apply() {
        _ = sinkhole_mallopt(-1, 64 << 20)   // M_TRIM_THRESHOLD
        _ = sinkhole_mallopt(-2, 4 << 20)    // M_TOP_PAD
    }
}
