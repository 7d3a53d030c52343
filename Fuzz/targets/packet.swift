// Fuzz target `packet`: one DNS message as a client would send it.
//
// Runs the raw bytes through the header gate, the ldns decoder, the OPT check, re-encoding,
// the block log's JSON encoding of the question, and the whole QueryChain (gate, access
// policy, decode, EDNS version, blocking, reply building) over UDP and TCP and for a refused
// client. The chain is built with maxInFlight 0, so anything not blocked is answered SERVFAIL
// at once instead of being sent upstream: no network traffic per input (see the `chain`
// target for the path through the forwarder to a fake upstream).
//
// Checked on every reply: `respond` is called exactly once and synchronously here, the reply
// has the query's ID and QR, decodes again, and over UDP fits the client's size.
import Foundation
import SinkholeCore
import Synchronization

private let store = FuzzSupport.makeStore()
private let blocking = BlockingStage(store: store, policy: BlockPolicy(mode: .sinkhole, sinkholeIPv4: [192, 0, 2, 99]), log: nil)
private let nxBlocking = BlockingStage(store: store, policy: BlockPolicy(mode: .nxdomain, ttl: 30), log: nil)
// Never used: maxInFlight 0 answers SERVFAIL before anything is forwarded.
private let forwarder = Forwarder(upstreams: [SocketAddress(address: [127, 0, 0, 1], port: 9)], timeout: 0.05,
                                  payloadSize: 1232, logger: FuzzSupport.silentLogger)
private let chain = QueryChain(blocking: blocking, forwarder: forwarder, replies: ReplyBuilder(payloadSize: 1232),
                               maxInFlight: 0, logger: FuzzSupport.silentLogger)
private let nxChain = QueryChain(blocking: nxBlocking, forwarder: forwarder, replies: ReplyBuilder(payloadSize: 4096),
                                 maxInFlight: 0, logger: FuzzSupport.silentLogger)
private let refusingChain = QueryChain(blocking: blocking, forwarder: forwarder, replies: ReplyBuilder(payloadSize: 512),
                                       access: try! AccessPolicy(allow: ["10.0.0.0/8"], deny: []),
                                       maxInFlight: 0, logger: FuzzSupport.silentLogger)
private let localClient = SocketAddress(address: [127, 0, 0, 1], port: 40_000)
private let v6Client = SocketAddress(address: [UInt8](repeating: 0, count: 15) + [1], port: 40_001)
private let outsideClient = SocketAddress(address: [192, 0, 2, 7], port: 40_002)

private func run(_ chain: QueryChain, _ packet: [UInt8], _ client: SocketAddress, _ transport: Transport, _ stage: String) {
    let replies = Mutex<[[UInt8]]>([])
    chain.handle(packet, client: client, transport: transport) { reply in
        replies.withLock { $0.append(reply) }
    }
    let got = replies.withLock { $0 }
    guard got.count == 1 else {
        fatalError("\(stage): respond called \(got.count) times (expected once, synchronously); query \(FuzzSupport.hex(packet))")
    }
    FuzzSupport.checkReply(got[0], to: packet, transport: transport, where: stage)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let packet = FuzzSupport.bytes(data, size)

    // The stages one by one, as the chain would call them.
    let verdict = HeaderGate.inspect(packet)
    let optValid = OPTCheck.isValid(packet)
    if let message = Message(wire: packet) {
        _ = message.question
        _ = message.edns
        for section in [Message.Section.answer, .authority, .additional] { _ = message.records(section) }
        // What the relay path does to an upstream message: re-encode it.
        if let wire = message.wire(), Message(wire: wire) == nil {
            fatalError("ldns cannot decode its own encoding of \(FuzzSupport.hex(packet)): \(FuzzSupport.hex(wire))")
        }
        if let question = message.question {
            // The block log line for this question must stay one valid JSON object.
            let match = RuleMatch(rule: WireName.text(question.name), list: "fuzz.txt", line: 1, zone: question.name)
            let answer = BlockPolicy(mode: .sinkhole).answer(for: question, match: match)
            let event = BlockEvent(client: localClient, transport: .udp, id: message.id, qname: question.name,
                                   qtype: question.type, qclass: question.qclass, answer: answer,
                                   matchedOn: "cname", matchedName: question.name, chainPosition: 1)
            let line = event.jsonLine()
            guard let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)), json is [String: Any] else {
                fatalError("block log line is not a JSON object: \(line); query \(FuzzSupport.hex(packet))")
            }
        }
        if case .proceed(let header) = verdict, optValid, let question = message.question {
            let query = Query(header: header, question: question, edns: message.edns,
                              client: localClient, transport: .udp)
            let builder = ReplyBuilder(payloadSize: 1232)
            let failure = builder.reply(to: query, .failure(rcode: 2, reason: "fuzz"))
            FuzzSupport.checkReply(failure, to: packet, transport: .udp, where: "reply(.failure)")
            let badVersion = builder.reply(to: query, .badVersion)
            FuzzSupport.checkReply(badVersion, to: packet, transport: .udp, where: "reply(.badVersion)")
        }
    }
    if case .reject(let header, let rcode) = verdict {
        let reply = ReplyBuilder(payloadSize: 1232).rejection(to: header, packet: packet, rcode: rcode)
        FuzzSupport.checkReply(reply, to: packet, transport: .udp, where: "rejection")
    }

    FuzzSupport.checkReplyReader(packet)

    // The whole chain.
    run(chain, packet, localClient, .udp, "chain/udp")
    run(nxChain, packet, v6Client, .tcp, "chain/tcp")
    run(refusingChain, packet, outsideClient, .udp, "chain/refused")
    return 0
}
