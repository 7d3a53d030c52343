import CSinkholeTestSupport
import Foundation
import Glibc

/// A child process for the tests: spawned with posix_spawn, reaped by its owner, every wait
/// bounded by a deadline.
///
/// Why not Foundation's `Process`: on Linux it learns of every child's exit on one shared manager
/// thread that waits in a blocking `waitpid`, and `waitUntilExit` polls a run loop until that
/// thread has spoken. A child that outlives its own exit notice, or a thread pool starved by tests
/// that block, then leaves every other test waiting for an exit that has already happened: the
/// whole run hangs instead of failing. Here no wait depends on another thread.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private let lock = NSLock()
    private var exitCode: Int32?

    public enum SpawnError: Error, CustomStringConvertible {
        case spawn(String, Int32)
        case open(String, Int32)
        public var description: String {
            switch self {
            case let .spawn(path, e): "cannot start \(path): \(String(cString: strerror(e)))"
            case let .open(path, e): "cannot open \(path): \(String(cString: strerror(e)))"
            }
        }
    }

    /// Starts `path` with `arguments`; stdin, stdout and stderr are the given descriptors (the
    /// caller keeps and closes its own copies). Nothing else of the test process is inherited.
    public init(_ path: String, _ arguments: [String], directory: String? = nil,
                stdin: Int32, stdout: Int32, stderr: Int32) throws {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: Int32 = 0
        let rc = argv.withUnsafeBufferPointer { buffer -> Int32 in
            if let directory {
                return directory.withCString { sinkhole_test_spawn(&child, path, buffer.baseAddress, $0, stdin, stdout, stderr) }
            }
            return sinkhole_test_spawn(&child, path, buffer.baseAddress, nil, stdin, stdout, stderr)
        }
        guard rc == 0 else { throw SpawnError.spawn(path, rc) }
        pid = child
    }

    /// Opens a file for the child's stdin (read) or output (written, created or truncated;
    /// /dev/null opened so serves both).
    public static func open(_ path: String, forWriting: Bool) throws -> Int32 {
        let fd = path == "/dev/null" ? Glibc.open(path, O_RDWR | O_CLOEXEC)
            : forWriting ? Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                         : Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SpawnError.open(path, errno) }
        return fd
    }

    /// The exit code (128 + signal for a child a signal ended) once it has exited; nil when it
    /// is still running after `timeout` seconds.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitCode { return exitCode }
        var status: Int32 = 0
        switch sinkhole_test_wait(pid, Int32(max(0, timeout) * 1000), &status) {
        case 1: exitCode = sinkhole_test_exit_code(status)
        case 0: return nil
        default: exitCode = -1   // not our child any more (ECHILD): nothing left to wait for
        }
        return exitCode
    }

    public var isRunning: Bool { wait(timeout: 0) == nil }

    public func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Sends `signal` and waits for the exit; after `timeout` s the child is killed and -1
    /// returned, so a child that will not stop fails its test instead of hanging the run.
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 20) -> Int32 {
        self.signal(signal)
        if let code = wait(timeout: timeout) { return code }
        killGroup()
        return -1
    }

    /// SIGKILL to the child's process group (it leads one: what it started goes too, such as a
    /// server a shell script put in the background), then the child is reaped.
    private func killGroup() {
        kill(-pid, SIGKILL)
        _ = wait(timeout: 10)
    }

    /// A child left running by a test that ended early is killed and reaped, not left behind.
    deinit {
        if wait(timeout: 0) == nil { killGroup() }
    }
}

/// What a program printed and how it ended.
public struct ProgramResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs a program to completion with stdout and stderr apart.
public func runProgramSeparately(_ path: String, _ arguments: [String], directory: String? = nil,
                                 timeout: Double = 60) throws -> ProgramResult {
    try runToFiles(path, arguments, directory: directory, timeout: timeout, merged: false)
}

/// Runs a program to completion; returns its exit status and what it printed (stdout and stderr
/// in the order it wrote them).
public func runProgram(_ path: String, _ arguments: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
    let r = try runToFiles(path, arguments, directory: nil, timeout: timeout, merged: true)
    return (r.status, r.stdout)
}

/// Output goes to temporary files (no pipe whose write end a stray descriptor could hold open),
/// stdin is /dev/null. A program still running after `timeout` s is killed and reported with
/// status -1 and a note in what it printed. `merged`: stderr goes to the stdout file.
private func runToFiles(_ path: String, _ arguments: [String], directory: String?, timeout: Double,
                        merged: Bool) throws -> ProgramResult {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-child-\(UUID().uuidString)").path
    let outPath = base + ".out", errPath = base + ".err"
    defer { unlink(outPath); unlink(errPath) }
    let input = try ChildProcess.open("/dev/null", forWriting: false)
    defer { close(input) }
    let out = try ChildProcess.open(outPath, forWriting: true)
    defer { close(out) }
    let err = merged ? out : try ChildProcess.open(errPath, forWriting: true)
    defer { if !merged { close(err) } }
    let child = try ChildProcess(path, arguments, directory: directory, stdin: input, stdout: out, stderr: err)
    var note = ""
    let status: Int32
    if let code = child.wait(timeout: timeout) {
        status = code
    } else {
        _ = child.stop(signal: SIGKILL, timeout: 10)
        status = -1
        note = "\n[test support: \(path) \(arguments.joined(separator: " ")) was still running after \(timeout) s and was killed]\n"
    }
    // Decoded leniently: output that is not UTF-8 is still shown when a test fails on it.
    func read(_ path: String) -> String { FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? "" }
    let stdout = read(outPath)
    let stderr = merged ? "" : read(errPath)
    return merged ? ProgramResult(status: status, stdout: stdout + note, stderr: "")
                  : ProgramResult(status: status, stdout: stdout, stderr: stderr + note)
}

/// Runs a command-line tool (`drill`, `dig`, `curl`) from PATH and returns what it printed.
public func runTool(_ tool: String, _ arguments: [String]) throws -> String {
    try runProgram("/usr/bin/env", [tool] + arguments).output
}

/// Runs the built `sinkhole` binary to completion.
public func runSinkhole(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try runProgram(SinkholeProcess.binaryPath(), arguments)
}
