import CSinkholeTestSupport
import Foundation
import Glibc

/// The built `sinkhole` binary run as a child process, as an operator would run it. Waits for
/// its "listening on" log line (never a sleep) to learn the port it bound. Its stderr is read on
/// a thread of its own, so no wait here depends on a shared pool; each wait has a deadline.
public final class SinkholeProcess: @unchecked Sendable {
    private let arguments: [String]
    private let launcher: [String]
    private var child: ChildProcess?
    private let log = StderrLog()

    /// `.build/debug/sinkhole` of this checkout, or `$SINKHOLE_BINARY`.
    public static func binaryPath(file: String = #filePath) -> String {
        if let path = ProcessInfo.processInfo.environment["SINKHOLE_BINARY"] { return path }
        var url = URL(fileURLWithPath: file)
        while url.path != "/" {
            url = url.deletingLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { break }
        }
        return url.appendingPathComponent(".build/debug/sinkhole").path
    }

    /// `launcher`: a program that execs the binary with the rest of its arguments, e.g.
    /// `["/usr/bin/prlimit", "--nofile=48:48", "--"]` (the process is then the binary itself).
    public init(arguments: [String], launcher: [String] = []) {
        self.arguments = arguments
        self.launcher = launcher
    }

    /// Everything it has written to stderr (its operational log) so far.
    public var stderr: String { log.locked { $0.text } }
    /// The port of its first "listening on" line; 0 before it.
    public var port: UInt16 { log.locked { $0.port } }
    public var pid: pid_t { child?.pid ?? 0 }

    /// Starts the process and a thread that reads its stderr until the end. The thread holds
    /// only the log, so a test that drops this object early still has its child killed (by
    /// `ChildProcess.deinit`), which ends the thread.
    private func launch() throws {
        let devNull = try ChildProcess.open("/dev/null", forWriting: true)
        defer { close(devNull) }
        var fds: [Int32] = [0, 0]
        guard sinkhole_test_pipe(&fds) == 0 else { throw ChildProcess.SpawnError.open("a pipe", errno) }
        defer { close(fds[1]) }
        do {
            let command = launcher + [SinkholeProcess.binaryPath()] + arguments
            child = try ChildProcess(command[0], Array(command.dropFirst()), stdin: devNull, stdout: devNull, stderr: fds[1])
        } catch {
            close(fds[0])
            throw error
        }
        let reader = fds[0], log = self.log
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                log.append(buffer[..<n])
            }
            close(reader)
            log.close()
        }
    }

    /// Waits until the operational log (stderr) holds `text` at least `count` times; false on timeout.
    public func waitForLog(_ text: String, count: Int = 1, timeout: Double = 10) -> Bool {
        log.waitUntil(Date().addingTimeInterval(timeout)) { $0.text.components(separatedBy: text).count - 1 >= count }
    }

    /// Starts and waits for "listening on" (true) or for the process to exit or the timeout (false).
    public func start(timeout: Double = 15) throws -> Bool {
        try launch()
        return log.waitUntil(Date().addingTimeInterval(timeout)) { $0.port != 0 || $0.closed } && port != 0
    }

    /// Sends a signal and waits for exit; returns the exit status, or -1 when the process had
    /// not exited `timeout` seconds after the signal (it is then killed, and the test fails
    /// instead of hanging).
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 20) -> Int32 {
        guard let child else { return -1 }
        let status = child.stop(signal: signal, timeout: timeout)
        // The log is whole once the pipe is closed; the bound only guards against a stray holder.
        _ = log.waitUntil(Date().addingTimeInterval(2)) { $0.closed }
        return status
    }

    /// Runs the binary to completion (for commands that should fail at start-up): its exit
    /// status and its log. Killed, with status -1, when still running after `timeout` s.
    public static func run(_ arguments: [String], timeout: Double = 15) throws -> (status: Int32, stderr: String) {
        let p = SinkholeProcess(arguments: arguments)
        try p.launch()
        var status: Int32 = -1
        if let code = p.child?.wait(timeout: timeout) {
            status = code
        } else {
            _ = p.stop(signal: SIGKILL, timeout: 5)
        }
        _ = p.log.waitUntil(Date().addingTimeInterval(2)) { $0.closed }
        return (status, p.stderr)
    }
}

/// What a child wrote to stderr, filled by its reader thread; waits on it have deadlines.
private final class StderrLog: @unchecked Sendable {
    struct State {
        var bytes: [UInt8] = []
        var closed = false
        var port: UInt16 = 0
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }
    private let grew = NSCondition()
    private var state = State()

    func locked<T>(_ body: (State) -> T) -> T {
        grew.lock()
        defer { grew.unlock() }
        return body(state)
    }

    func append(_ chunk: ArraySlice<UInt8>) {
        grew.lock()
        state.bytes += chunk
        if state.port == 0 {
            let text = state.text
            if let range = text.range(of: #"listening on (127\.0\.0\.1|0\.0\.0\.0):(\d+)"#, options: .regularExpression),
               let colon = text[range].lastIndex(of: ":"), let p = UInt16(text[range][text.index(after: colon)...]) {
                state.port = p
            }
        }
        grew.broadcast()
        grew.unlock()
    }

    func close() {
        grew.lock()
        state.closed = true
        grew.broadcast()
        grew.unlock()
    }

    /// Waits until `condition` holds or the deadline; its last value.
    func waitUntil(_ deadline: Date, _ condition: (State) -> Bool) -> Bool {
        grew.lock()
        defer { grew.unlock() }
        while !condition(state) {
            if !grew.wait(until: deadline) { return condition(state) }
        }
        return true
    }
}
