import Dispatch
import Glibc
import Logging

/// Watches the blocklist directory with inotify and refreshes the store when anything in it
/// changes: a file added, replaced by rename, edited in place or removed, or a ConfigMap-style
/// `..data` symlink swap (which renames a hidden link, so every event counts, hidden names
/// included). Events are coalesced: the refresh runs once the directory has been quiet for
/// `settle` seconds (100 ms), well inside the one-second promise. A slow periodic rescan
/// (every 30 s) backs inotify up for changes it cannot see, such as a listed file that is a
/// link to a file elsewhere being edited there. A directory that is removed or moved away is
/// reported once and looked for every second; when one is back at the path it is watched and
/// read again.
///
/// A file being written in place is not read half-written: a name modified (IN_MODIFY) and not
/// yet closed by its writer (IN_CLOSE_WRITE) is held, its version in force kept, until the
/// writer closes it (a writer that dies is closed by the kernel too). `cat > list`, `curl -o`,
/// `wget -O` and `scp` all write in place, and a download that stalls between its writes would
/// otherwise load a list cut short and let the names after the cut resolve. A writer that keeps
/// the file open without writing for `writerQuiet` (60 s) is taken to be done: the file is read
/// as it is, with a warning.
public final class DirectoryWatcher: @unchecked Sendable {
    public let directory: String
    private let queue = DispatchQueue(label: "sinkhole.blocklist.watch")
    private let settle: Double
    private let rescanInterval: Double
    private let onChange: @Sendable (_ beingWritten: Set<String>, _ writtenInPlace: Set<String>) -> Void
    private let logger: Logger
    private var fd: Int32 = -1
    private var watch: Int32 = -1
    private var source: DispatchSourceRead?
    private var debounce: DispatchSourceTimer?
    private var rescan: DispatchSourceTimer?
    /// While the directory cannot be watched (removed, moved away, not yet there): tries to
    /// watch its path again every `retryInterval`, so that a directory put back is seen at once.
    private var retry: DispatchSourceTimer?
    private let retryInterval = 1.0
    private var firstPending: DispatchTime?
    /// However busy the directory, a refresh runs at most this long after the first event.
    private let maxDelay = 0.5
    /// Names modified and not yet closed by their writer, with when they were last modified.
    private var writing: [String: DispatchTime] = [:]
    /// Names whose file was written to since it came by rename or was created, as far as seen
    /// since the last refresh: a file written in place (`curl -o`), not one renamed in complete.
    private var writtenInPlace: Set<String> = []
    private let writerQuiet: Double

    /// `onChange` is given the names of the files being written (see above), to be left as they
    /// are in force, and the names written in place since the last call (see `writtenInPlace`).
    public init(directory: String, settle: Double = 0.1, rescanInterval: Double = 30, writerQuiet: Double = 60,
                logger: Logger, onChange: @escaping @Sendable (_ beingWritten: Set<String>, _ writtenInPlace: Set<String>) -> Void) {
        self.directory = directory
        self.writerQuiet = writerQuiet
        self.settle = settle
        self.rescanInterval = rescanInterval
        self.logger = logger
        self.onChange = onChange
    }

    public func start() {
        queue.sync {
            fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            if fd < 0 {
                logger.error("cannot watch the blocklist directory; changes are picked up every \(Int(rescanInterval)) s",
                             metadata: ["error": "\(SystemError("inotify_init1"))"])
            } else {
                if !addWatch() { watchLost() }
                let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
                source.setEventHandler { [unowned self] in drainEvents() }
                source.resume()
                self.source = source
            }
            let rescan = DispatchSource.makeTimerSource(queue: queue)
            rescan.schedule(deadline: .now() + rescanInterval, repeating: rescanInterval)
            // Not while the directory is missing: its loss was said once, and the retry reads it
            // when it is back.
            rescan.setEventHandler { [unowned self] in if retry == nil { changed() } }
            rescan.resume()
            self.rescan = rescan
        }
    }

    public func stop() {
        queue.sync {
            debounce?.cancel()
            rescan?.cancel()
            retry?.cancel()
            source?.cancel()
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// Watches the directory's path; false (and `watch` -1) when it cannot.
    private func addWatch() -> Bool {
        // IN_ONLYDIR: a file put at the directory's path is not taken for the directory.
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
            | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) | UInt32(IN_ONLYDIR)
        watch = inotify_add_watch(fd, directory, mask)
        return watch >= 0
    }

    /// Says once that the directory is not watched (gone, or another reason: no inotify watch
    /// left, no permission), and tries again every second until it is.
    private func watchLost() {
        let error = SystemError("inotify_add_watch")
        let what = error.code == ENOENT || error.code == ENOTDIR ? "the blocklist directory is gone" : "cannot watch the blocklist directory"
        logger.error("\(what); the lists in force stay, and the directory is looked for every \(Int(retryInterval)) s",
                     metadata: ["path": "\(directory)", "error": "\(error)"])
        guard retry == nil else { return }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + retryInterval, repeating: retryInterval)
        timer.setEventHandler { [unowned self] in
            guard addWatch() else { return }
            retry?.cancel()
            retry = nil
            logger.notice("watching the blocklist directory again", metadata: ["path": "\(directory)"])
            writing = [:]   // another directory's files
            writtenInPlace = []
            onChange([], [])    // what is there now may differ from the lists in force
        }
        timer.resume()
        retry = timer
    }

    private func drainEvents() {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var sawEvent = false
        var lostWatch = false
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            sawEvent = true
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let (descriptor, mask, length) = buffer.withUnsafeBytes { raw -> (Int32, UInt32, Int) in
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (event.wd, event.mask, Int(event.len))
                }
                let nameStart = offset + MemoryLayout<inotify_event>.size
                if descriptor == watch, length > 0, nameStart + length <= n {
                    let name = buffer[nameStart..<(nameStart + length)].withUnsafeBufferPointer { bytes in
                        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    // A rename into place or a new file starts afresh; a write after it (in the
                    // same batch or a later one) makes it a file written in place.
                    if mask & UInt32(IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM) != 0 {
                        writtenInPlace.remove(name)
                    }
                    if mask & UInt32(IN_MODIFY) != 0 {
                        writing[name] = .now()
                        writtenInPlace.insert(name)
                    }
                    // Closed, gone, or replaced by a file renamed into place (complete, whatever
                    // the writer of the file it replaced is still doing).
                    if mask & UInt32(IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE) != 0 {
                        writing[name] = nil
                    }
                }
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    logger.warning("too many changes in the blocklist directory at once: some were not seen one by one; files held as being written are read at the latest \(Int(writerQuiet)) s after their last change")
                }
                // Only the current watch's end counts: the IN_IGNORED that follows a removed
                // watch's IN_MOVE_SELF must not end the watch made after it.
                if descriptor == watch, mask & UInt32(IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF) != 0 { lostWatch = true }
                offset += MemoryLayout<inotify_event>.size + length
            }
        }
        if lostWatch {
            // The directory itself was removed or renamed: its path is watched again if a
            // directory is there already (one renamed into place), else once one is.
            if watch >= 0 { inotify_rm_watch(fd, watch) }
            watch = -1
            writing = [:]   // the old directory's files: their closes are no longer seen
            writtenInPlace = []
            if !addWatch() {
                // No refresh now: it could only fail to read the directory (the lists in force
                // stay either way); the retry reads it when it is back.
                watchLost()
                return
            }
        }
        if sawEvent { scheduleRefresh() }
    }

    private func scheduleRefresh() {
        let first = firstPending ?? .now()
        firstPending = first
        let deadline = min(DispatchTime.now() + settle, first + maxDelay)
        if debounce == nil {
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.setEventHandler { [unowned self] in
                firstPending = nil
                changed()
            }
            timer.resume()
            debounce = timer
        }
        debounce?.schedule(deadline: deadline, repeating: .never)
    }

    /// Tells `onChange` what is being written, and hands over the names written in place that
    /// are not (those are told again once read).
    private func changed() {
        let beingWritten = held()
        let inPlace = writtenInPlace.subtracting(beingWritten)
        writtenInPlace.subtract(inPlace)
        onChange(beingWritten, inPlace)
    }

    /// The names being written now (on the queue). A name quiet for `writerQuiet` is let go, with
    /// a warning: its writer keeps it open without writing, and it is read as it is.
    private func held() -> Set<String> {
        let now = DispatchTime.now()
        for (name, last) in writing where Double(now.uptimeNanoseconds &- last.uptimeNanoseconds) / 1e9 >= writerQuiet {
            writing[name] = nil
            logger.warning("list file still open for writing, unchanged for \(Int(writerQuiet)) s: read as it is", metadata: [
                "file.path": "\(directory.hasSuffix("/") ? directory : directory + "/")\(name)",
            ])
        }
        return Set(writing.keys)
    }

    /// The names of the files being written now, for a reload that did not come from the watcher.
    public var beingWritten: Set<String> { queue.sync { held() } }
}
