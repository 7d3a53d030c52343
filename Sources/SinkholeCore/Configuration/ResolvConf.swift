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
    /// A wildcard listener (0.0.0.0 or ::) on a port also excludes loopback and unspecified
    /// addresses on that port, the ones that certainly reach it.
    public static func excludingSelf(_ upstreams: [SocketAddress], listen: [SocketAddress]) -> [SocketAddress] {
        upstreams.filter { upstream in
            !listen.contains { l in
                guard l.port == upstream.port else { return false }
                if l.address == upstream.address { return true }
                guard l.address.allSatisfy({ $0 == 0 }) else { return false }
                let a = upstream.address
                let loopback = (a.count == 4 && a[0] == 127) || a == [UInt8](repeating: 0, count: 15) + [1]
                return loopback || a.allSatisfy { $0 == 0 }
            }
        }
    }
}
