import Dispatch
import Foundation
import Glibc
import Synchronization

/// Why one try at one upstream gave no usable answer.
public enum UpstreamFailure: Error, Sendable, CustomStringConvertible {
    case timeout
    case network(String)
    case badReply(String)
    /// Not the upstream's doing: sinkhole could not make the try (its TCP retries are all busy).
    /// Not counted against the upstream.
    case local(String)

    /// The `reason` label of `sinkhole_upstream_errors_total`.
    public var kind: String {
        switch self {
        case .timeout: return "timeout"
        case .network: return "network"
        case .badReply: return "bad_reply"
        case .local: return "local"
        }
    }

    public var description: String {
        switch self {
        case .timeout: return "timed out"
        case .network(let why): return why
        case .badReply(let why): return "bad reply: \(why)"
        case .local(let why): return why
        }
    }
}

/// An upstream's reply as received, read once from its bytes: relayed, cached and inspected
/// from them. Most replies are laid out by `CachedReply` without ldns; the others (record types
/// whose data it does not check, say) are decoded by ldns once here, for the same facts, and
/// again, into a message of their own, each time one is relayed (`message()`). Immutable, so the
/// queries coalesced on one upstream query share it.
public final class UpstreamAnswer: Sendable {
    public let wire: [UInt8]
    /// The reply laid out for relaying from the bytes; nil when ldns must encode it again.
    public let prepared: CachedReply?
    public let facts: ReplyFacts
    /// For replies that ldns decoded: the question, and the answer section's records.
    private let decoded: (question: Question, answer: [(type: UInt16, rdata: [UInt8])])?
    /// An error reply without a question (`questionless(_:)`): it answers whatever its ID asked.
    public let withoutQuestion: Bool
    /// The reply carried an OPT record: its sender knows EDNS (RFC 6891 7).
    public let hasOPT: Bool

    /// Nil when neither `CachedReply` nor ldns can read the bytes as a message with one question.
    /// A TTL with the top bit set is taken as 0 (RFC 2181 8), in the bytes kept: it was relayed
    /// as it came (4294967295, "forever", to downstream caches) and kept a day in the cache.
    public init?(wire: [UInt8]) {
        withoutQuestion = false
        if var prepared = CachedReply(wire) {
            var wire = wire
            if prepared.hasTopBitTTL {
                wire = prepared.withTTLs { $0 > 0x7FFF_FFFF ? 0 : $0 }
                guard let fixed = CachedReply(wire) else { return nil }
                prepared = fixed
            }
            self.wire = wire
            self.prepared = prepared
            facts = prepared.facts
            decoded = nil
            hasOPT = prepared.opt != nil
        } else {
            // One OPT at most, owned by the root, in the additional section (RFC 6891 6.1.1):
            // an OPT in the answer section was relayed there, and clients refused the reply.
            // (`CachedReply` lays out only such replies; the others come here.)
            guard OPTCheck.isValid(wire), let message = Message(wire: wire), message.questionCount == 1,
                  let question = message.question else { return nil }
            if message.changeTTLs({ $0 > 0x7FFF_FFFF ? 0 : $0 }) {
                guard let fixed = message.wire() else { return nil }
                self.wire = fixed
            } else {
                self.wire = wire
            }
            prepared = nil
            facts = ReplyFacts(message)
            decoded = (question, message.records(.answer).map { ($0.type, $0.rdata) })
            hasOPT = message.edns != nil
        }
    }

    /// A message made into an answer (tests, and cached answers that ldns had to age).
    public convenience init?(message: Message) {
        guard let wire = message.wire() else { return nil }
        self.init(wire: wire)
    }

    /// The upstream's Extended DNS Errors (RFC 8914), as its OPT record carried them.
    public var extendedErrors: [UInt8] {
        if let prepared { return prepared.extendedErrors }
        guard !withoutQuestion, let message = message(), message.edns != nil else { return [] }
        return ExtendedErrors.options(message.ednsOptions)
    }

    /// A SERVFAIL by which a validating upstream says the data failed DNSSEC validation (an
    /// Extended DNS Error of RFC 8914 4.7-4.13): its verdict on the data, which another
    /// upstream would give too, not a failure of the upstream.
    public var isValidationFailure: Bool {
        rcode == Rcode.servFail && ExtendedErrors.codes(extendedErrors).contains(where: ExtendedErrors.isValidationFailure)
    }

    /// The reply's ID.
    public var id: UInt16 { UInt16(wire[0]) << 8 | UInt16(wire[1]) }

    public var rcode: UInt8 { facts.rcode }

    /// A header-only error reply: the header alone, its rcode FORMERR, SERVFAIL, NOTIMP or
    /// REFUSED, no records. Servers send these without the question (RFC 1035 does not ask them
    /// to repeat it): NSD refuses a class it does not serve so, and a server without EDNS says
    /// FORMERR so. Taken as the answer of the query with its ID, not left to time out: a client
    /// could otherwise hold a query slot for the whole deadline with each such question, and get
    /// a healthy upstream marked down.
    private init(headerOnly wire: [UInt8]) {
        // The header alone, its counts 0: an OPT it may carry is not ours to relay.
        hasOPT = wire[10] != 0 || wire[11] != 0
        self.wire = Array(wire[0..<4]) + [UInt8](repeating: 0, count: Header.size - 4)
        prepared = nil
        decoded = nil
        withoutQuestion = true
        facts = ReplyFacts(rcode: wire[3] & 0x0F, truncated: false, answerCount: 0, lowestTTL: nil, soa: nil)
    }

    static func questionless(_ bytes: [UInt8]) -> UpstreamAnswer? {
        guard bytes.count >= Header.size, bytes[2] & 0x78 == 0,   // opcode QUERY
              bytes[4...9].allSatisfy({ $0 == 0 }),                // no question, answer or authority
              [Rcode.formErr, Rcode.servFail, Rcode.notImp, Rcode.refused].contains(bytes[3] & 0x0F) else { return nil }
        return UpstreamAnswer(headerOnly: bytes)
    }

    /// A reply from an upstream: QR set, opcode QUERY (ours, which a reply copies: RFC 1035
    /// 4.1.1) and readable; nil for anything else (ignored). A reply of opcode STATUS was
    /// relayed and cached as it came, and clients refused it for the whole TTL.
    static func received(_ bytes: [UInt8]) -> UpstreamAnswer? {
        guard bytes.count >= Header.size, bytes[2] & 0x80 != 0, bytes[2] & 0x78 == 0 else { return nil }
        if bytes[4] == 0 && bytes[5] == 0 { return questionless(bytes) }
        return UpstreamAnswer(wire: bytes)
    }

    /// True when the reply's question is the one asked (name ignoring case, type and class).
    func answers(_ question: Question) -> Bool {
        if withoutQuestion { return true }
        if let prepared { return prepared.answers(question) }
        return decoded?.question.matches(question) ?? false
    }

    /// The reply when it answers our query (ID and question); nil for anything else.
    static func validated(_ bytes: [UInt8], id: UInt16, question: Question) -> UpstreamAnswer? {
        guard let answer = received(bytes), answer.id == id, answer.answers(question) else { return nil }
        return answer
    }

    /// The targets of the answer section's CNAME and DNAME records, in order.
    public var aliasTargets: [[UInt8]] {
        if let prepared { return prepared.aliasTargets }
        return decoded?.answer.filter { $0.type == RRType.cname || $0.type == RRType.dname }.map(\.rdata) ?? []
    }

    /// The addresses of the answer section's A and AAAA records, in order.
    public var answerAddresses: [[UInt8]] {
        if let prepared { return prepared.answerAddresses }
        return decoded?.answer.filter { $0.type == RRType.a || $0.type == RRType.aaaa }.map(\.rdata) ?? []
    }

    /// A message of its own decoded by ldns, for the reply builder to change and encode.
    public func message() -> Message? {
        Message(wire: wire)
    }
}

/// A blocking DNS-over-TCP exchange with a deadline, used for the rare retry after a truncated
/// UDP reply. It runs on a global queue, never on a listener's.
enum TCPExchange {
    static func run(upstream: SocketAddress, query: [UInt8], timeout: Double) -> Result<[UInt8], UpstreamFailure> {
        let deadline = DispatchTime.now() + timeout
        let fd = socket(upstream.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .failure(.network(SystemError("socket").description)) }
        defer { close(fd) }

        func wait(_ events: Int16) -> Bool {
            let left = Int64(deadline.uptimeNanoseconds) - Int64(DispatchTime.now().uptimeNanoseconds)
            guard left > 0 else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            return poll(&p, 1, Int32(max(1, left / 1_000_000))) == 1
        }

        let rc = upstream.withSockAddr { connect(fd, $0, $1) }
        if rc != 0 {
            guard errno == EINPROGRESS, wait(Int16(POLLOUT)) else { return .failure(.timeout) }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { return .failure(.network(SystemError("TCP connect \(upstream)", error).description)) }
        }
        var framed = [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query
        while !framed.isEmpty {
            let n = framed.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { framed.removeFirst(n); continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                guard wait(Int16(POLLOUT)) else { return .failure(.timeout) }
                continue
            }
            return .failure(.network(SystemError("TCP send to \(upstream)").description))
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            if received.count >= 2 {
                let length = Int(received[0]) << 8 | Int(received[1])
                if received.count >= 2 + length { return .success(Array(received[2..<(2 + length)])) }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += chunk[0..<n]; continue }
            if n == 0 { return .failure(.network("TCP connection to \(upstream) closed before a whole reply")) }
            if errno == EAGAIN || errno == EINTR {
                guard wait(Int16(POLLIN)) else { return .failure(.timeout) }
                continue
            }
            return .failure(.network(SystemError("TCP receive from \(upstream)").description))
        }
    }
}
