import Foundation

/// Reads `nameserver` lines of a resolv.conf(5) file: the default upstreams.
public enum ResolvConf {
    public static func nameservers(path: String = "/etc/resolv.conf") -> [SocketAddress] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        var out: [SocketAddress] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver" else { continue }
            var host = String(fields[1])
            if let percent = host.firstIndex(of: "%") { host = String(host[..<percent]) }   // fe80::1%eth0
            if let bytes = IPAddress.parse(host) { out.append(SocketAddress(address: bytes, port: 53)) }
        }
        return out
    }

    /// Upstreams with our own listening addresses removed, so sinkhole never forwards to itself.
    /// A wildcard listener (0.0.0.0 or ::) on a port excludes every local address on that port.
    public static func excludingSelf(_ upstreams: [SocketAddress], listen: [SocketAddress]) -> [SocketAddress] {
        upstreams.filter { upstream in
            !listen.contains { l in
                guard l.port == upstream.port else { return false }
                if l.address == upstream.address { return true }
                let wildcard = l.address.allSatisfy { $0 == 0 }
                let loopback = upstream.address.first == 127 && upstream.address.count == 4
                    || upstream.address == [UInt8](repeating: 0, count: 15) + [1]
                return wildcard && (loopback || upstream.address.count == l.address.count)
            }
        }
    }
}
