import Testing
@testable import SinkholeCore

@Suite struct HeaderGateTests {
    /// A 12-byte header followed by a question for `a.` type A class IN.
    func packet(id: UInt16 = 0x1234, flags: UInt16 = 0x0100, qd: UInt16 = 1) -> [UInt8] {
        Header(id: id, flags: flags, qdcount: qd).bytes + [1, 0x61, 0, 0, 1, 0, 1]
    }

    @Test func shorterThanAHeaderIsDropped() {
        #expect(HeaderGate.inspect([0x12, 0x34, 0x01]) == .drop)
        #expect(HeaderGate.inspect([UInt8](repeating: 0, count: 11)) == .drop)
        #expect(HeaderGate.inspect([]) == .drop)
    }

    @Test func responsesAreDropped() {
        #expect(HeaderGate.inspect(packet(flags: 0x8100)) == .drop)
    }

    @Test func otherOpcodesGetNotImp() {
        for opcode: UInt16 in [1, 2, 4, 5, 15] {
            let p = packet(flags: opcode << 11 | 0x0100)
            guard case .reject(let header, let rcode) = HeaderGate.inspect(p) else {
                Issue.record("opcode \(opcode) not rejected")
                continue
            }
            #expect(rcode == Rcode.notImp)
            let reply = HeaderGate.headerOnlyReply(to: header, rcode: rcode)
            #expect(reply.count == 12)
            let h = Header(reply)!
            #expect(h.id == 0x1234)
            #expect(h.isResponse)
            #expect(h.opcode == UInt8(opcode))
            #expect(h.recursionDesired)
            #expect(h.rcode == Rcode.notImp)
            #expect(h.flags & 0x0040 == 0, "Z must be clear")
        }
    }

    @Test func questionCountOtherThanOneGetsFormErr() {
        for qd: UInt16 in [0, 2, 65535] {
            guard case .reject(_, let rcode) = HeaderGate.inspect(packet(qd: qd)) else {
                Issue.record("QDCOUNT \(qd) not rejected")
                continue
            }
            #expect(rcode == Rcode.formErr)
        }
    }

    @Test func wellFormedQueryProceeds() {
        guard case .proceed(let h) = HeaderGate.inspect(packet()) else {
            Issue.record("query did not proceed")
            return
        }
        #expect(h.id == 0x1234)
        #expect(h.qdcount == 1)
    }

    @Test func headerReadsFieldsInNetworkOrder() {
        let h = Header([0xAB, 0xCD, 0x81, 0x83, 0, 1, 0, 2, 0, 3, 0, 4])!
        #expect(h.id == 0xABCD)
        #expect(h.isResponse)
        #expect(h.recursionDesired)
        #expect(h.rcode == 3)
        #expect(h.ancount == 2 && h.nscount == 3 && h.arcount == 4)
        #expect(h.bytes == [0xAB, 0xCD, 0x81, 0x83, 0, 1, 0, 2, 0, 3, 0, 4])
    }
}
