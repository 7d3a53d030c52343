import Dispatch
import Foundation
import Glibc
import Synchronization

/// A small HTTP/1.1 server for `/metrics` (Prometheus text format 0.0.4) and `/health`, on
/// `--metrics-listen`. One request per connection (`Connection: close`), GET and HEAD only,
/// requests over 8 KiB or not read whole within 5 s dropped, at most 16 connections served at
/// once: enough for Prometheus, curl and a load balancer's health check, and nothing more to
/// attack. With all 16 taken, a new connection closes the one that has been reading its request
/// the longest: in an abuse trial, 16 connections sending a byte every 3 s (each read had its own
/// 5 s timeout) kept `/health` failing for as long as they liked.
public final class MetricsServer: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let source: DispatchSourceRead
    private let active = Atomic<Int>(0)
    /// Connections still reading their request, by descriptor, with when they were accepted
    /// (uptime ns). An entry is removed before its descriptor is closed, so a descriptor here
    /// is always the connection's own.
    private let reading = Mutex<[Int32: UInt64]>([:])
    static let maxServed = 16
    static let requestSeconds: Double = 5
    private let routes: @Sendable (String) -> (status: Int, contentType: String, body: String)?
    private var started = false
    private let pause: AcceptPause

    /// `routes` maps a path to a response, or nil for 404.
    public init(address requested: SocketAddress,
                routes: @escaping @Sendable (String) -> (status: Int, contentType: String, body: String)?) throws {
        (fd, address) = try Socket.listening(requested, backlog: 16)
        self.routes = routes
        let queue = DispatchQueue(label: "sinkhole.metrics")
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        pause = AcceptPause(source: source, queue: queue)
        let fd = self.fd
        source.setCancelHandler { Glibc.close(fd) }
    }

    public func start() {
        source.setEventHandler { [unowned self] in acceptAll() }
        started = true
        source.resume()
    }

    public func stop() {
        if !started { started = true; source.resume() }
        source.cancel()   // before a paused source is resumed, so it accepts nothing more
        pause.stop()
    }

    private func acceptAll() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                let error = errno
                if error == EINTR || error == ECONNABORTED || error == EPROTO { continue }
                if AcceptPause.isShortage(error) { pause.pause() }   // not a spin while out of descriptors
                return
            }
            let count = active.add(1, ordering: .relaxed).newValue
            // Full: the connection reading its request the longest is shut down to make room
            // (its thread then ends at once); past twice the cap (those threads not ended yet,
            // or every connection sending its response), the new one is turned away.
            let room = count <= MetricsServer.maxServed || (count <= 2 * MetricsServer.maxServed && reading.withLock { open in
                guard let oldest = open.min(by: { $0.value < $1.value }) else { return false }
                open.removeValue(forKey: oldest.key)
                shutdown(oldest.key, Int32(SHUT_RDWR))
                return true
            })
            if !room {
                active.subtract(1, ordering: .relaxed)
                Glibc.close(client)
                continue
            }
            reading.withLock { $0[client] = DispatchTime.now().uptimeNanoseconds }
            Thread.detachNewThread { [self] in
                serve(client)
                reading.withLock { _ = $0.removeValue(forKey: client) }
                Glibc.close(client)
                active.subtract(1, ordering: .relaxed)
            }
        }
    }

    private func serve(_ client: Int32) {
        var tv = timeval(tv_sec: Int(MetricsServer.requestSeconds), tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // The whole request within the time, not each read: a byte every few seconds held a
        // slot for hours.
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(MetricsServer.requestSeconds * 1e9)
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while request.count < 8192 {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { return }
            // Rounded up to whole microseconds, carried into the seconds: a tv_usec of 1,000,000
            // is EDOM, and the read then had no timeout at all (a review).
            let micros = (deadline - now + 999) / 1000
            tv = timeval(tv_sec: Int(micros / 1_000_000), tv_usec: Int(micros % 1_000_000))
            guard setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else { return }
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            request += chunk[0..<n]
            if request.count >= 4, request.suffix(from: max(0, request.count - n - 3)).containsCRLFCRLF { break }
        }
        // Read whole: no longer one to make room by closing (or it was closed so, meanwhile).
        guard reading.withLock({ $0.removeValue(forKey: client) != nil }) else { return }
        let head = String(decoding: request, as: UTF8.self)
        let requestLine = head.split(separator: "\r\n", maxSplits: 1).first ?? ""
        let parts = requestLine.split(separator: " ")
        var response: (status: Int, contentType: String, body: String)
        var sendBody = true
        if parts.count < 3 || !parts[2].hasPrefix("HTTP/1.") {
            response = (400, "text/plain; charset=utf-8", "bad request\n")
        } else if parts[0] != "GET" && parts[0] != "HEAD" {
            response = (405, "text/plain; charset=utf-8", "only GET and HEAD\n")
        } else {
            sendBody = parts[0] == "GET"
            let path = String(parts[1].split(separator: "?", maxSplits: 1).first ?? "")
            response = routes(path) ?? (404, "text/plain; charset=utf-8", "not found: try /metrics or /health\n")
        }
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][response.status] ?? "OK"
        let body = Array(response.body.utf8)
        var out = Array(("HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n"
            + (response.status == 405 ? "Allow: GET, HEAD\r\n" : "") + "\r\n").utf8)
        if sendBody { out += body }
        var offset = 0
        while offset < out.count {
            let n = out.withUnsafeBytes { send(client, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }
}

extension ArraySlice where Element == UInt8 {
    var containsCRLFCRLF: Bool {
        guard count >= 4 else { return false }
        var i = startIndex
        while i + 3 < endIndex {
            if self[i] == 13 && self[i + 1] == 10 && self[i + 2] == 13 && self[i + 3] == 10 { return true }
            i += 1
        }
        return false
    }
}
