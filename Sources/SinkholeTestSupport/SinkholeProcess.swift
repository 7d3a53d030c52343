import Foundation
import Synchronization

/// The built `sinkhole` binary run as a child process, as an operator would run it. Waits for
/// its "listening on" log line (never a sleep) to learn the port it bound.
public final class SinkholeProcess: @unchecked Sendable {
    public let process = Process()
    private let stderrText = Mutex("")
    private let ready = DispatchSemaphore(value: 0)
    private let readySignalled = Mutex(false)
    public private(set) var port: UInt16 = 0

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

    public var stderr: String { stderrText.withLock { $0 } }
    private let grew = NSCondition()

    public init(arguments: [String]) {
        process.executableURL = URL(fileURLWithPath: SinkholeProcess.binaryPath())
        process.arguments = arguments
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            if data.isEmpty {
                handle.readabilityHandler = nil
                self.signalReady()
                return
            }
            let text = self.stderrText.withLock { s -> String in
                s += String(decoding: data, as: UTF8.self)
                return s
            }
            self.grew.lock()
            self.grew.broadcast()
            self.grew.unlock()
            if let range = text.range(of: #"listening on (127\.0\.0\.1|0\.0\.0\.0):(\d+)"#, options: .regularExpression) {
                let match = text[range]
                if let colon = match.lastIndex(of: ":"), let p = UInt16(match[match.index(after: colon)...]) {
                    self.port = p
                    self.signalReady()
                }
            }
        }
    }

    /// Waits until the operational log (stderr) holds `text` at least `count` times; false on timeout.
    public func waitForLog(_ text: String, count: Int = 1, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        grew.lock()
        defer { grew.unlock() }
        while stderr.components(separatedBy: text).count - 1 < count {
            if !grew.wait(until: deadline) { return stderr.components(separatedBy: text).count - 1 >= count }
        }
        return true
    }

    private func signalReady() {
        let first = readySignalled.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { ready.signal() }
    }

    /// Starts and waits for "listening on" (true) or for the process to exit or the timeout (false).
    public func start(timeout: Double = 15) throws -> Bool {
        try process.run()
        _ = ready.wait(timeout: .now() + timeout)
        return port != 0
    }

    /// Sends a signal and waits for exit; returns the exit status, or -1 when the process had
    /// not exited `timeout` seconds after the signal (it is then killed, and the test fails
    /// instead of hanging).
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 20) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return -1
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs the binary to completion (for commands that should fail at start-up).
    public static func run(_ arguments: [String], timeout: Double = 15) throws -> (status: Int32, stderr: String) {
        let p = SinkholeProcess(arguments: arguments)
        let exited = DispatchSemaphore(value: 0)
        p.process.terminationHandler = { _ in exited.signal() }
        try p.process.run()
        if exited.wait(timeout: .now() + timeout) == .timedOut { p.process.terminate() }
        p.process.waitUntilExit()
        _ = p.ready.wait(timeout: .now() + 2)
        return (p.process.terminationStatus, p.stderr)
    }
}

/// Runs a program to completion; returns its exit status and what it printed (stdout and stderr).
public func runProgram(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Runs a command-line tool (`drill`, `dig`, `curl`) from PATH and returns what it printed.
public func runTool(_ tool: String, _ arguments: [String]) throws -> String {
    try runProgram("/usr/bin/env", [tool] + arguments).output
}

/// Runs the built `sinkhole` binary to completion.
public func runSinkhole(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try runProgram(SinkholeProcess.binaryPath(), arguments)
}
