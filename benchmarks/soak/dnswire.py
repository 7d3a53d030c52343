"""Minimal DNS wire helpers for the soak test (standard library only).

Hand-rolled rather than dnspython so that a Python load generator can build and check a few
thousand messages a second on a 2-core machine without becoming the bottleneck.
"""
import struct

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "OPT": 41, "HTTPS": 65}

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}

# MNAME of sinkhole's block SOA: present in every NXDOMAIN that sinkhole itself makes.
SINKHOLE_SOA_MNAME = b"\x08sinkhole\x07invalid\x00"


def encode_name(name):
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def opt_record(payload=1232, version=0, do=False, owner=b"\x00"):
    ttl = (version << 16) | (0x8000 if do else 0)
    return owner + struct.pack("!HHIH", 41, payload, ttl, 0)


def header(qid, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def build_query(qid, name, qtype="A", rd=True, edns=None):
    """edns: None or (payload, do). Returns (message, question_section)."""
    question = encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)
    flags = 0x0100 if rd else 0
    if edns is None:
        return header(qid, flags) + question, question
    payload, do = edns
    return header(qid, flags, ar=1) + question + opt_record(payload, 0, do), question


def skip_name(msg, off):
    """Offset just past a (possibly compressed) name; raises ValueError when malformed."""
    n = len(msg)
    while True:
        if off >= n:
            raise ValueError("name runs past the end")
        length = msg[off]
        if length == 0:
            return off + 1
        if length & 0xC0 == 0xC0:
            if off + 2 > n:
                raise ValueError("pointer runs past the end")
            return off + 2
        if length & 0xC0:
            raise ValueError("bad label type")
        off += 1 + length


class Reply:
    """The parts of a reply the soak test checks."""
    __slots__ = ("id", "flags", "rcode", "qd", "an", "ns", "ar", "question", "ext_rcode", "has_opt", "ok")

    @property
    def qr(self):
        return bool(self.flags & 0x8000)

    @property
    def aa(self):
        return bool(self.flags & 0x0400)

    @property
    def tc(self):
        return bool(self.flags & 0x0200)


def parse_reply(msg):
    """Header, raw question section and extended rcode; None when shorter than a header."""
    if len(msg) < 12:
        return None
    r = Reply()
    r.id, r.flags, r.qd, r.an, r.ns, r.ar = struct.unpack("!HHHHHH", msg[:12])
    r.rcode = r.flags & 0xF
    r.question = b""
    r.ext_rcode = r.rcode
    r.has_opt = False
    r.ok = True
    try:
        off = 12
        qstart = off
        for _ in range(r.qd):
            off = skip_name(msg, off) + 4
        r.question = bytes(msg[qstart:off])
        for i in range(r.an + r.ns + r.ar):
            end = skip_name(msg, off)
            if end + 10 > len(msg):
                raise ValueError("record header runs past the end")
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[end:end + 10])
            if rtype == 41 and i >= r.an + r.ns:
                r.has_opt = True
                r.ext_rcode = ((ttl >> 24) << 4) | r.rcode
            off = end + 10 + rdlen
            if off > len(msg):
                raise ValueError("rdata runs past the end")
    except ValueError:
        r.ok = False
    return r


def is_sinkhole_block(msg, r):
    """NXDOMAIN made by sinkhole: AA set and its SOA in the authority section."""
    return r.rcode == NXDOMAIN and r.aa and r.ns >= 1 and SINKHOLE_SOA_MNAME in msg


# ---- malformed queries --------------------------------------------------------------------
# Each returns the message bytes. Expected outcome: "drop" (no reply), an rcode, or "any".
def _q(qid, name="malformed.soak.test", qtype="A"):
    return build_query(qid, name, qtype)[0]


def mal_runt(qid):
    return struct.pack("!HH", qid, 0x0100) + b"\x00"         # 5 bytes: shorter than a header


def mal_qr(qid):
    m = bytearray(_q(qid))
    m[2] |= 0x80                                            # a response sent to the server
    return bytes(m)


def mal_opcode(qid):
    m = bytearray(_q(qid))
    m[2] = (m[2] & 0x87) | (2 << 3)                         # opcode STATUS
    return bytes(m)


def mal_qd0(qid):
    return header(qid, qd=0)


def mal_qd2(qid):
    q = encode_name("a.soak.test") + struct.pack("!HH", 1, 1)
    return header(qid, qd=2) + q + q


def mal_trunc_question(qid):
    return header(qid) + encode_name("truncated.soak.test")[:9]


def mal_ptr_loop(qid):
    return header(qid) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)   # name points at itself


def mal_two_opt(qid):
    return header(qid, ar=2) + encode_name("twoopt.soak.test") + struct.pack("!HH", 1, 1) + opt_record() + opt_record()


def mal_opt_owner(qid):
    return header(qid, ar=1) + encode_name("optowner.soak.test") + struct.pack("!HH", 1, 1) + opt_record(owner=encode_name("x.test"))


def mal_edns_v1(qid):
    return header(qid, ar=1) + encode_name("ednsv1.soak.test") + struct.pack("!HH", 1, 1) + opt_record(version=1)


def mal_bad_label(qid):
    return header(qid) + b"\x41abc\x00" + struct.pack("!HH", 1, 1)  # label type 01 (reserved)


def mal_garbage(qid, rng):
    n = rng.randrange(12, 120)
    m = bytearray(rng.getrandbits(8) for _ in range(n))
    m[0], m[1] = qid >> 8, qid & 0xFF
    m[2] &= 0x7F                                            # QR=0, or it is simply dropped
    return bytes(m)


MALFORMED = [
    # name, builder, expected
    ("runt", mal_runt, "drop"),
    ("qr-set", mal_qr, "drop"),
    ("opcode-status", mal_opcode, NOTIMP),
    ("qdcount-0", mal_qd0, FORMERR),
    ("qdcount-2", mal_qd2, FORMERR),
    ("truncated-question", mal_trunc_question, FORMERR),
    ("pointer-loop", mal_ptr_loop, FORMERR),
    ("bad-label-type", mal_bad_label, FORMERR),
    ("two-opt", mal_two_opt, FORMERR),
    ("opt-not-root", mal_opt_owner, FORMERR),
    ("edns-version-1", mal_edns_v1, BADVERS),
    ("garbage", mal_garbage, "any"),
]
