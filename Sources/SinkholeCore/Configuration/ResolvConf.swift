import Foundation

/// Reads `nameserver` lines of a resolv.conf(5) file: the default upstreams.
public enum ResolvConf {
    public static func nameservers(path: String = "/etc/resolv.conf") -> [SocketAddress] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        var out: [SocketAddress] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver" else { continue }
            // A link-local server keeps its zone (fe80::1%eth0): without it no packet reaches it.
            // A zone naming no interface here is dropped, so the address is still listed (and
            // its tries fail in the log) rather than silently missing.
            let field = String(fields[1])
            // An address, maybe with a zone; no port, brackets or other text (glibc takes none).
            guard IPAddress.parse(String(field.prefix { $0 != "%" })) != nil else { continue }
            if let address = try? SocketAddress.parse(field, defaultPort: 53) {
                out.append(address)
            } else if let percent = field.firstIndex(of: "%"), let bytes = IPAddress.parse(String(field[..<percent])) {
                out.append(SocketAddress(address: bytes, port: 53))
            }
        }
        return out
    }

    /// Upstreams with our own listening addresses removed, so sinkhole never forwards to itself.
    public static func excludingSelf(_ upstreams: [SocketAddress], listen: [SocketAddress],
                                     hostAddresses: Set<[UInt8]> = ResolvConf.hostAddresses()) -> [SocketAddress] {
        upstreams.filter { upstream in !listen.contains { reaches(upstream, $0, hostAddresses: hostAddresses) } }
    }

    /// Whether a query sent to `upstream` would arrive at the listener `listen`. The upstream is
    /// taken as the kernel routes it: `::ffff:a.b.c.d` is a.b.c.d, and 0.0.0.0 or :: is this
    /// host (Linux delivers it to loopback). A wildcard listener (0.0.0.0 or ::) on a port also
    /// takes loopback addresses on that port, and this host's own addresses of its family
    /// (`hostAddresses`): `--listen 0.0.0.0:53 --upstream <this host's LAN address>` looped.
    public static func reaches(_ upstream: SocketAddress, _ listen: SocketAddress,
                               hostAddresses: Set<[UInt8]> = []) -> Bool {
        guard listen.port == upstream.port else { return false }
        var a = IPAddress.unmapped(upstream.address)
        if IPAddress.isUnspecified(a) { a = a.count == 4 ? [127, 0, 0, 1] : [UInt8](repeating: 0, count: 15) + [1] }
        if a == listen.address { return true }
        guard listen.isUnspecified else { return false }
        return IPAddress.isLoopback(a) || (a.count == listen.address.count && hostAddresses.contains(a))
    }

    /// The addresses of this host's interfaces (getifaddrs), IPv4-mapped ones as IPv4; none when
    /// they cannot be read (`hostAddressProblem` says why).
    public static func hostAddresses() -> Set<[UInt8]> { (try? readHostAddresses()) ?? [] }

    /// Why this host's interface addresses cannot be read for a wildcard listener's loop check,
    /// or nil (no wildcard listener, or they can be). getifaddrs asks the kernel over a netlink
    /// socket: a sandbox that denies AF_NETLINK (systemd's RestrictAddressFamilies without it)
    /// turned the check off with nothing said.
    public static func hostAddressProblem(listen: [SocketAddress],
                                          read: () throws -> Set<[UInt8]> = readHostAddresses) -> String? {
        guard listen.contains(where: \.isUnspecified) else { return nil }
        do {
            _ = try read()
            return nil
        } catch {
            return "cannot read this host's interface addresses (\(error)): an upstream at one of them on a wildcard listener's port would not be seen to loop back to sinkhole (allow AF_NETLINK, as the shipped systemd unit does)"
        }
    }

    public static func readHostAddresses() throws -> Set<[UInt8]> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { throw SystemError("getifaddrs") }
        defer { freeifaddrs(list) }
        var out: Set<[UInt8]> = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ifa_addr,
               Int32(address.pointee.sa_family) == AF_INET || Int32(address.pointee.sa_family) == AF_INET6 {
                var storage = sockaddr_storage()
                let size = Int32(address.pointee.sa_family) == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
                withUnsafeMutableBytes(of: &storage) { $0.baseAddress!.copyMemory(from: address, byteCount: size) }
                if let parsed = SocketAddress(storage: &storage) { out.insert(IPAddress.unmapped(parsed.address)) }
            }
            entry = current.pointee.ifa_next
        }
        return out
    }
}
