import Foundation
import Logging
import SinkholeCore

/// A sinkhole server on 127.0.0.1 with port 0, a fake upstream, list files in a temporary
/// directory and a block log: what every integration test starts from.
public final class TestHarness: @unchecked Sendable {
    public let upstream: FakeUpstream
    public let server: SinkholeServer
    public let directory: URL
    public let blockLogPath: String
    public var address: SocketAddress { server.boundAddresses[0] }

    public static let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// `lists` maps file names to contents. `configure` may change the configuration before start.
    public init(lists: [String: String] = ["test.txt": "evil.example\n"], records: [String] = [],
                logger: Logger = TestHarness.quietLogger,
                configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        upstream = try FakeUpstream(records: records)
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sinkhole-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("lists"), withIntermediateDirectories: true)
        for (name, text) in lists {
            try text.write(to: directory.appendingPathComponent("lists").appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        blockLogPath = directory.appendingPathComponent("block.log").path
        var configuration = ServerConfiguration(
            listen: [SocketAddress(address: [127, 0, 0, 1], port: 0)], upstreams: [upstream.address],
            blocklistDirectory: directory.appendingPathComponent("lists").path, blockLogPath: blockLogPath,
            upstreamTimeout: 1)
        // Tests see every query at the fake upstream unless they turn the cache on themselves.
        configuration.cacheBytes = 0
        configure(&configuration)
        server = try SinkholeServer(configuration: configuration, logger: logger)
        try server.start()
    }

    /// Lines of the block log as parsed JSON objects, after flushing what is queued.
    public func blockLogLines() throws -> [[String: Any]] {
        server.blockLog?.flush()
        let text = (try? String(contentsOfFile: blockLogPath, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map {
            guard let object = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else {
                throw HarnessError.notAnObject(String($0))
            }
            return object
        }
    }

    public enum HarnessError: Error { case notAnObject(String) }

    public func stop() {
        server.stop()
        upstream.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { }
}

extension Dictionary where Key == String, Value == Any {
    /// Value at a dotted ECS path in nested objects, e.g. `source.ip`.
    public func at(_ path: String) -> Any? {
        var current: Any? = self
        for part in path.split(separator: ".") {
            current = (current as? [String: Any])?[String(part)]
        }
        return current
    }
}
