import Glibc

/// The 4 or 16 bytes of an IPv4 or IPv6 address, held inline: copying one allocates nothing
/// and counts no reference, which matters because every query carries its client's.
public struct IPBytes: RandomAccessCollection, Hashable, Sendable {
    /// The bytes in order, zero past `count`.
    private var storage: (UInt64, UInt64) = (0, 0)
    public let count: Int
    /// The bytes as two words in memory order, zero past `count`: for comparing under a mask.
    var words: (UInt64, UInt64) { storage }

    public init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        precondition(bytes.count <= 16, "an IP address has at most 16 bytes")
        count = bytes.count
        withUnsafeMutableBytes(of: &storage) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
    }

    /// From `count` bytes at `pointer` (a sockaddr's address field).
    init(copying pointer: UnsafeRawPointer, count: Int) {
        self.count = count
        withUnsafeMutableBytes(of: &storage) { $0.baseAddress!.copyMemory(from: pointer, byteCount: count) }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public subscript(i: Int) -> UInt8 {
        precondition(i >= 0 && i < count, "index out of range")
        return withUnsafeBytes(of: storage) { $0[i] }
    }

    /// The bytes, for writing into a sockaddr.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        withUnsafeBytes(of: storage) { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }

    public static func == (a: IPBytes, b: IPBytes) -> Bool {
        a.count == b.count && a.storage.0 == b.storage.0 && a.storage.1 == b.storage.1
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        hasher.combine(storage.0)
        hasher.combine(storage.1)
    }
}

/// An IPv4 or IPv6 address and port, convertible to and from `sockaddr` and `ADDR:PORT` text.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address: 4 or 16 bytes, inline.
    public var ip: IPBytes
    public var port: UInt16
    /// The interface of a link-local IPv6 address (`fe80::1%eth0`), as its index; 0 otherwise.
    /// Without it the kernel cannot tell which link such an address is on (connect: EINVAL).
    public var scope: UInt32 = 0

    /// The address as an array (allocates: the query path uses `ip`).
    public var address: [UInt8] {
        get { Array(ip) }
        set { ip = IPBytes(newValue) }
    }

    public init(address: [UInt8], port: UInt16) {
        ip = IPBytes(address)
        self.port = port
    }

    public init(ip: IPBytes, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    public var isIPv6: Bool { ip.count == 16 }
    /// 0.0.0.0 or ::, the wildcard a listener binds to answer on every address of its family.
    public var isUnspecified: Bool { ip.words == (0, 0) }
    public var family: Int32 { isIPv6 ? AF_INET6 : AF_INET }
    public var ipText: String { IPAddress.text(address) }

    /// `127.0.0.1:53`, `[::1]:53` or `[fe80::1%eth0]:53`.
    public var description: String { isIPv6 ? "[\(ipText)\(zoneText)]:\(port)" : "\(ipText):\(port)" }

    /// `%eth0` for a scoped address (its index when the interface has no name now), else empty.
    var zoneText: String {
        guard scope != 0 else { return "" }
        var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        guard if_indextoname(scope, &name) != nil else { return "%\(scope)" }
        return "%" + String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The index of interface `zone` (a name such as `eth0`, or a number); nil when there is none.
    static func interfaceIndex(_ zone: String) -> UInt32? {
        if let number = UInt32(zone), number > 0 { return number }
        let index = if_nametoindex(zone)
        return index == 0 ? nil : index
    }

    public enum ParseError: Error, CustomStringConvertible {
        case bad(String, String)
        public var description: String {
            if case .bad(let text, let why) = self { return "'\(text)': \(why)" }
            return ""
        }
    }

    /// Parses `ADDR:PORT`, `[V6]:PORT`, and, when `defaultPort` is given, `ADDR`, `V6` or `[V6]`.
    public static func parse(_ text: String, defaultPort: UInt16? = nil) throws -> SocketAddress {
        var host = text
        var portText: String?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ParseError.bad(text, "missing ']' after an IPv6 address")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { portText = String(rest.dropFirst()) }
            else if !rest.isEmpty { throw ParseError.bad(text, "expected ':PORT' after ']'") }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            portText = String(text[text.index(after: colon)...])
        }
        // A zone: the interface of a link-local address (`fe80::1%eth0`, as NetworkManager
        // writes router-advertised DNS servers into resolv.conf).
        var scope: UInt32 = 0
        if let percent = host.firstIndex(of: "%") {
            let zone = String(host[host.index(after: percent)...])
            host = String(host[..<percent])
            guard IPAddress.parse(host)?.count == 16, !zone.isEmpty else {
                throw ParseError.bad(text, "a zone (%INTERFACE) belongs only after an IPv6 address")
            }
            guard let index = interfaceIndex(zone) else { throw ParseError.bad(text, "no network interface '\(zone)'") }
            scope = index
        }
        guard let bytes = IPAddress.parse(host) else {
            let port = portText.flatMap(UInt16.init) ?? 53
            throw ParseError.bad(text, "not an IPv4 or IPv6 address literal (use e.g. 127.0.0.1:\(port) or [::1]:\(port))")
        }
        let port: UInt16
        if let portText {
            guard let p = UInt16(portText) else { throw ParseError.bad(text, "port must be a number from 0 to 65535") }
            port = p
        } else if let defaultPort {
            port = defaultPort
        } else if bytes.count == 16 {
            throw ParseError.bad(text, "an IPv6 address with a port needs brackets: \(bracketed(text))")
        } else {
            throw ParseError.bad(text, "missing ':PORT'")
        }
        var parsed = SocketAddress(address: bytes, port: port)
        parsed.scope = scope
        return parsed
    }

    /// The bracketed form of an unbracketed IPv6 `ADDR:PORT` (`::1:5356` → `[::1]:5356`), when
    /// what follows its last colon reads as a port and what precedes it as an address; else
    /// the general form `[ADDR]:PORT`.
    static func bracketed(_ text: String) -> String {
        if let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]),
           let address = IPAddress.parse(String(text[..<colon])), address.count == 16 {
            return "[\(text[..<colon])]:\(port)"
        }
        return "[\(text)]:PORT"
    }

    /// Reads a `sockaddr_storage` filled by the kernel; nil for families other than IPv4/IPv6.
    public init?(storage: UnsafePointer<sockaddr_storage>) {
        switch Int32(storage.pointee.ss_family) {
        case AF_INET:
            let sin = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in.self).pointee
            var a = sin.sin_addr
            ip = withUnsafeBytes(of: &a) { IPBytes(copying: $0.baseAddress!, count: 4) }
            port = UInt16(bigEndian: sin.sin_port)
        case AF_INET6:
            let sin6 = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in6.self).pointee
            var a = sin6.sin6_addr
            ip = withUnsafeBytes(of: &a) { IPBytes(copying: $0.baseAddress!, count: 16) }
            port = UInt16(bigEndian: sin6.sin6_port)
            scope = sin6.sin6_scope_id
        default:
            return nil
        }
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var storage = sockaddr_storage()
        let length = fill(&storage)
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// Writes this address into `storage`; returns the length to pass to the kernel.
    @discardableResult
    public func fill(_ storage: inout sockaddr_storage) -> socklen_t {
        storage = sockaddr_storage()
        return withUnsafeMutableBytes(of: &storage) { raw -> socklen_t in
            if isIPv6 {
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                sin6.sin6_scope_id = scope
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { dst in ip.withBytes { dst.copyMemory(from: $0) } }
                withUnsafeBytes(of: &sin6) { raw.copyMemory(from: $0) }
                return socklen_t(MemoryLayout<sockaddr_in6>.size)
            } else {
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin.sin_addr) { dst in ip.withBytes { dst.copyMemory(from: $0) } }
                withUnsafeBytes(of: &sin) { raw.copyMemory(from: $0) }
                return socklen_t(MemoryLayout<sockaddr_in>.size)
            }
        }
    }

    /// The address the socket is bound to (getsockname).
    public static func local(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        return SocketAddress(storage: &storage)
    }
}

/// A failed system call, with the operator-readable reason from strerror.
public struct SystemError: Error, CustomStringConvertible {
    public var operation: String
    public var code: Int32

    public init(_ operation: String, _ code: Int32 = errno) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Small wrappers over the socket calls used by the listeners and the forwarder.
public enum Socket {
    public static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A new non-blocking socket bound to `address`. For IPv6 the socket is IPv6-only, so that
    /// `0.0.0.0:53` and `[::]:53` can both be listened on.
    public static func bound(_ address: SocketAddress, type: Int32, reusePort: Bool = false) throws -> Int32 {
        let fd = socket(address.family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        if reusePort { setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
        // TCP only: lets a restart bind while old connections sit in TIME_WAIT. On UDP it would let
        // a second process share the port silently, so a port in use must fail instead.
        if type == Int32(SOCK_STREAM.rawValue) { setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
        if address.isIPv6 { setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        let rc = address.withSockAddr { bind(fd, $0, $1) }
        if rc != 0 {
            let code = errno
            close(fd)
            throw SystemError("bind \(address)", code)
        }
        setNonBlocking(fd)
        return fd
    }

    /// A bound, listening, non-blocking TCP socket and the address it got.
    public static func listening(_ address: SocketAddress, backlog: Int32) throws -> (fd: Int32, address: SocketAddress) {
        let fd = try bound(address, type: Int32(SOCK_STREAM.rawValue))
        guard listen(fd, backlog) == 0 else {
            let code = errno
            close(fd)
            throw SystemError("listen \(address)", code)
        }
        return (fd, SocketAddress.local(of: fd) ?? address)
    }
}
