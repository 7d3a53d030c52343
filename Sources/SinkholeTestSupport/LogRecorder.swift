import Foundation
import Logging
import Synchronization

/// A log handler that keeps what it is given (message and metadata), for tests that check what
/// the operator's log says.
public final class LogRecorder: LogHandler, @unchecked Sendable {
    public let events = Mutex<[(level: Logger.Level, message: String, metadata: Logger.Metadata)]>([])
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace
    public var metadataProvider: Logger.MetadataProvider?

    public init() {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    private let logged = NSCondition()

    public func log(event: LogEvent) {
        events.withLock { $0.append((event.level, event.message.description, event.metadata ?? [:])) }
        logged.lock()
        logged.broadcast()
        logged.unlock()
    }

    /// Waits until `condition` holds of the events logged, checked after each; false on timeout.
    public func waitUntil(timeout: Double,
                          _ condition: ([(level: Logger.Level, message: String, metadata: Logger.Metadata)]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        logged.lock()
        defer { logged.unlock() }
        while !events.withLock({ condition($0) }) {
            if !logged.wait(until: deadline) { return events.withLock { condition($0) } }
        }
        return true
    }

    /// The events whose message is `message`.
    public func events(_ message: String) -> [(level: Logger.Level, message: String, metadata: Logger.Metadata)] {
        events.withLock { $0.filter { $0.message == message } }
    }

    /// A logger writing to this recorder.
    public var logger: Logger { Logger(label: "test") { _ in self } }
}
