#!/usr/bin/env python3
"""Writes the seed corpora in Fuzz/corpus/<target>/ (checked in; rerun only to change them).

Needs dnspython (pip install dnspython) for the DNS messages. Every seed is a file named after
what it is; libFuzzer reads them all and starts from there.

    python3 Fuzz/make-corpus.py
"""
import os
import shutil
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def query(name, rdtype="A", edns=None, payload=1232, do=False, rd=True, cd=False, ad=False, qid=0x1234,
          rdclass="IN", options=None):
    q = dns.message.make_query(name, rdtype, rdclass, use_edns=edns, payload=payload,
                               want_dnssec=do, options=options)
    q.id = qid
    if not rd:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    if ad:
        q.flags |= dns.flags.AD
    return q.to_wire()


def header(qid=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def qname(*labels):
    return b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\0"


OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)           # root owner, OPT, 1232, v0, no rdata
OPT_V1 = b"\x00" + struct.pack("!HHIH", 41, 1232, 0x00010000, 0)  # EDNS version 1
OPT_DO_COOKIE = b"\x00" + struct.pack("!HHIH", 41, 4096, 0x00008000, 12) + struct.pack("!HH", 10, 8) + b"\x01" * 8


def packets():
    """Client queries: the `packet` corpus, and the query half of the `chain` corpus."""
    p = {}
    # Ordinary queries, with and without EDNS, for names that are and are not listed.
    for n in ["example.com", "www.example.org", "blocked.test", "a.b.wild.test", "wild.test", "ads.test",
              "ok.ads.test", "hosts.test", "allowed.blocked.test", "nx.rpz.test", "nodata.rpz.test",
              "drop.rpz.test", "x.below.rpz.test", "local.rpz.test", "pass.wild.test", "TrAcKeR.ExAmPlE"]:
        p["q-" + n] = query(n)
        p["q-edns-" + n] = query(n, edns=0, payload=1232)
    for t in ["AAAA", "MX", "TXT", "HTTPS", "SOA", "ANY", "PTR", "SRV", "CAA", "NS"]:
        p["q-type-" + t] = query("local.rpz.test" if t == "AAAA" else "blocked.test", t)
    p["q-class-ch"] = query("version.bind", "TXT", rdclass="CH")
    p["q-do"] = query("blocked.test", edns=0, do=True)
    p["q-cd-ad"] = query("example.com", cd=True, ad=True, rd=False)
    p["q-edns-512"] = query("example.com", edns=0, payload=512)
    p["q-edns-100"] = query("example.com", edns=0, payload=100)
    p["q-edns-65535"] = query("example.com", edns=0, payload=65535)
    p["q-edns-cookie"] = query("example.com", edns=0, options=[dns.edns.GenericOption(10, b"\x01" * 8)])
    p["q-edns-ecs"] = query("example.com", edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)])
    p["q-edns-v1"] = header(ar=1) + qname("example", "com") + b"\x00\x01\x00\x01" + OPT_V1
    p["q-edns-do-cookie"] = header(ar=1) + qname("blocked", "test") + b"\x00\x01\x00\x01" + OPT_DO_COOKIE
    # Odd headers: opcodes, QR, counts.
    for op in [1, 2, 4, 5, 6, 15]:
        p["op-%d" % op] = header(flags=(op << 11) | 0x0100) + qname("example", "com") + b"\x00\x01\x00\x01"
    p["op-notify-edns"] = header(flags=(4 << 11), ar=1) + qname("example", "com") + b"\x00\x06\x00\x01" + OPT
    p["qr-response"] = header(flags=0x8180) + qname("example", "com") + b"\x00\x01\x00\x01"
    p["qd-0"] = header(qd=0)
    p["qd-0-edns"] = header(qd=0, ar=1) + OPT
    p["qd-2"] = header(qd=2) + qname("a", "test") + b"\x00\x01\x00\x01" + qname("b", "test") + b"\x00\x01\x00\x01"
    p["qd-2-edns"] = header(qd=2, ar=1) + qname("a", "test") + b"\x00\x01\x00\x01" + qname("b", "test") \
        + b"\x00\x01\x00\x01" + OPT
    p["z-bit-tc-aa"] = header(flags=0x0100 | 0x0040 | 0x0200 | 0x0400) + qname("example", "com") + b"\x00\x01\x00\x01"
    # Malformed and edge cases.
    p["runt-0"] = b""
    p["runt-11"] = header()[:11]
    p["header-only"] = header()
    p["trunc-qname"] = header() + b"\x07examp"
    p["trunc-qtype"] = header() + qname("example", "com") + b"\x00"
    p["label-63"] = header() + qname("a" * 63, "test") + b"\x00\x01\x00\x01"
    p["label-64"] = header() + b"\x40" + b"a" * 64 + b"\x04test\x00" + b"\x00\x01\x00\x01"
    long_name = qname(*(["a" * 63] * 3 + ["b" * 61]))
    p["name-255"] = header() + long_name + b"\x00\x01\x00\x01"
    p["name-too-long"] = header() + qname(*(["a" * 63] * 4)) + b"\x00\x01\x00\x01"
    p["root"] = header() + b"\x00\x00\x02\x00\x01"
    p["odd-bytes"] = header() + b"\x05a.b\\c\x05ex\"\x00m\x00\x00\x01\x00\x01"
    p["uppercase"] = header() + qname("BLOCKED", "TEST") + b"\x00\x01\x00\x01"
    # Compression pointers: to the question, to itself (loop), forward, out of range.
    q = header(an=1) + qname("example", "com") + b"\x00\x01\x00\x01"
    p["ptr-answer"] = q + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    p["ptr-loop"] = header() + b"\xc0\x0c\x00\x01\x00\x01"
    p["ptr-forward"] = header() + b"\xc0\x12\x00\x01\x00\x01" + qname("x", "test")
    p["ptr-out"] = header() + b"\xc0\xff\x00\x01\x00\x01"
    p["ptr-chain"] = header(an=1) + qname("a", "test") + b"\x00\x01\x00\x01" + b"\x01b\xc0\x0c" \
        + b"\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04\x01c\xc0\x20"
    p["label-type-01"] = header() + b"\x41abc\x00\x00\x01\x00\x01"
    # OPT placement: two OPTs, OPT in the answer section, OPT with a non-root owner, bad rdlength.
    base = header(ar=2) + qname("example", "com") + b"\x00\x01\x00\x01"
    p["opt-twice"] = base + OPT + OPT
    p["opt-in-answer"] = header(an=1) + qname("example", "com") + b"\x00\x01\x00\x01" + OPT
    p["opt-owner"] = header(ar=1) + qname("example", "com") + b"\x00\x01\x00\x01" + b"\x01x\x00" + OPT[1:]
    p["opt-rdlen"] = header(ar=1) + qname("example", "com") + b"\x00\x01\x00\x01" + OPT[:-2] + b"\x00\x20\x00"
    p["counts-lie"] = header(an=5, ns=3, ar=9) + qname("example", "com") + b"\x00\x01\x00\x01"
    p["trailing-garbage"] = query("example.com") + b"\xde\xad\xbe\xef"
    return p


def upstream_templates():
    """Reply templates for the fake upstream of the `chain` target. build: header flags/counts
    plus record bytes; the fake upstream puts the forwarder's ID and question in front."""
    t = {}
    ttl = b"\x00\x00\x00\x3c"
    def rr(owner, rtype, rdata, rclass=1):
        return owner + struct.pack("!HH", rtype, rclass) + ttl + struct.pack("!H", len(rdata)) + rdata
    def hdr(flags=0x8180, an=0, ns=0, ar=0):
        return struct.pack("!HHHHHH", 0, flags, 1, an, ns, ar)
    q = b"\xc0\x0c"                         # pointer to the question name
    t["noerror-a"] = hdr(an=1) + rr(q, 1, b"\xc0\x00\x02\x01")
    t["noerror-aaaa"] = hdr(an=1) + rr(q, 28, b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01")
    t["nxdomain-soa"] = hdr(flags=0x8183, ns=1) + rr(q, 6, qname("ns", "test") + qname("root", "test")
                                                      + struct.pack("!IIIII", 1, 3600, 600, 86400, 60))
    t["servfail"] = hdr(flags=0x8182)
    t["refused"] = hdr(flags=0x8185)
    t["empty"] = b""
    t["cname-to-blocked"] = hdr(an=2) + rr(q, 5, qname("blocked", "test")) + rr(qname("blocked", "test"), 1, b"\x01\x02\x03\x04")
    t["cname-to-wild"] = hdr(an=1) + rr(q, 5, qname("deep", "x", "wild", "test"))
    t["cname-chain"] = hdr(an=3) + rr(q, 5, qname("cdn", "example")) + rr(qname("cdn", "example"), 5, qname("ads", "test")) \
        + rr(qname("ads", "test"), 1, b"\x01\x02\x03\x04")
    t["dname-to-blocked"] = hdr(an=1) + rr(q, 39, qname("tracker", "example"))
    t["cname-allowed"] = hdr(an=1) + rr(q, 5, qname("ok", "ads", "test"))
    t["cname-ptr"] = hdr(an=2) + rr(q, 5, b"\x03cdn\xc0\x0c") + rr(b"\xc0\x1c", 1, b"\x01\x02\x03\x04")
    t["truncated-tc"] = hdr(flags=0x8380)
    t["truncated-tc-answer"] = hdr(flags=0x8380, an=1) + rr(q, 1, b"\xc0\x00\x02\x01")
    t["with-opt"] = hdr(an=1, ar=1) + rr(q, 1, b"\xc0\x00\x02\x01") + OPT_DO_COOKIE
    t["ext-rcode"] = hdr(ar=1) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0x01000000, 0)
    t["big-answer"] = hdr(an=40) + b"".join(rr(q, 16, bytes([60]) + b"t" * 60) for _ in range(40))
    t["counts-lie"] = hdr(an=9)
    t["bad-rdlength"] = hdr(an=1) + q + b"\x00\x01\x00\x01" + ttl + b"\x00\xff\x01"
    t["ptr-loop"] = hdr(an=1) + b"\xc0\x1d" + b"\x00\x01\x00\x01" + ttl + b"\x00\x04\x01\x02\x03\x04"
    t["every-section"] = hdr(an=1, ns=1, ar=1) + rr(q, 1, b"\x01\x02\x03\x04") + rr(q, 2, qname("ns", "test")) \
        + rr(qname("ns", "test"), 1, b"\x05\x06\x07\x08")
    return t


def chain_seeds(pkts, templates):
    seeds = {}
    picked = ["q-example.com", "q-edns-example.com", "q-do", "q-type-AAAA", "q-edns-512", "q-cd-ad", "q-edns-v1",
              "q-blocked.test", "op-4", "qd-2", "q-class-ch", "trunc-qname", "q-TrAcKeR.ExAmPlE", "q-edns-cookie"]
    for name in picked:
        for tname, tbytes in templates.items():
            if name != "q-example.com" and name != "q-edns-example.com" and tname not in ("noerror-a", "cname-to-blocked", "truncated-tc"):
                continue
            pkt = pkts[name]
            seeds["%s--%s" % (name, tname)] = struct.pack("!H", len(pkt)) + pkt + tbytes
    return seeds


LINES = {
    "plain": "example.com\nads.example.net\nwww.tracker.example.\n",
    "plain-crlf": "example.com\r\nads.example.net\r\n",
    "hosts": "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 ads.example.com tracker.example.com\n"
             "0.0.0.0\tmetrics.example # trailing comment\n",
    "hosts-ipv6": "::  ad.example\n2001:db8::1 a.example b.example\n",
    "wildcard": "*.ads.example\n*.example.org\n",
    "adblock": "[Adblock Plus 2.0]\n! Title: fuzz\n||ads.example^\n||tracker.example^$third-party\n@@||ok.ads.example^\n"
               "||example.com/path^\n||*.bad.example^\n||noclose.example\n",
    "comments": "# comment\n\n   \n; not a comment here\n! adblock comment\nexample.com # tail\n",
    "bom": "\ufeffexample.com\nexample.org\n",
    "bad": "-bad.example\nbad-.example\nex..ample\n" + "a" * 64 + ".example\n" + ("a" * 63 + ".") * 4 + "com\n"
           "1.2.3.4\n::1\nexample.com extra\nexämple.com\nex ample.com\n.example\n",
    "underscore": "_dmarc.example.com\n_sip._tcp.example.com\n",
    "mixed": "0.0.0.0 a.example\n*.b.example\n||c.example^\nd.example\n@@||e.example^\n",
    "dots": ".\n..\nexample.com..\n",
    "no-newline": "example.com",
    "numeric": "123.example\n1.2.3.4.example\n0x1.example\n",
    "long-name": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + "\n",
}

RPZ = {
    "basic.rpz": """$TTL 300
@ IN SOA localhost. root.localhost. ( 2024010101 3600 600 86400 300 )
  IN NS localhost.
ads.example.com        CNAME .
*.ads.example.com      CNAME .
nodata.example.com     CNAME *.
allowed.example.com    CNAME rpz-passthru.
drop.example.com       CNAME rpz-drop.
tcp.example.com        CNAME rpz-tcp-only.
redirect.example.com   CNAME walled-garden.example.
local.example.com      A     192.0.2.1
local.example.com      AAAA  2001:db8::1
local.example.com      TXT   "not supported"
""",
    "origin.rpz": """$ORIGIN rpz.example.
$TTL 60
@ SOA ns.rpz.example. hostmaster.rpz.example. 1 1h 10m 1d 1m
@ NS ns.rpz.example.
bad.example CNAME .
bad.example.rpz.example. CNAME .
$ORIGIN sub.rpz.example.
x CNAME .
""",
    "no-soa.rpz": "$ORIGIN feed.\nads.example CNAME .\n*.tracker.example CNAME .\n",
    "triggers.rpz": """$TTL 60
@ SOA a. b. 1 2 3 4 5
32.1.2.0.192.rpz-ip CNAME .
ns.example.rpz-nsdname CNAME .
24.0.2.0.192.rpz-client-ip CNAME .
32.1.2.0.192.rpz-nsip CNAME .
@ CNAME .
""",
    "broken.rpz": """$TTL 60
@ SOA a. b. 1 2 3 4 5
bad record here
( unbalanced
name A 300.1.1.1
name AAAA zz::1
$INCLUDE /etc/passwd
$GENERATE 1-10 host$ CNAME .
"quoted name" CNAME .
\\# 3 abcdef
name 99999999999 IN A 1.2.3.4
""",
    "escapes.rpz": "$ORIGIN rpz.\n@ SOA a. b. 1 2 3 4 5\n\\046dot CNAME .\na\\.b CNAME .\n\\255\\000 CNAME .\n",
    "long.rpz": "$ORIGIN rpz.\n" + ("a" * 63 + ".") * 3 + "b CNAME .\n" + "x" * 70 + " CNAME .\n",
    "case.rpz": "$ORIGIN RPZ.Example.\n@ SOA a. b. 1 2 3 4 5\nADS.Example CNAME .\n",
    "empty.rpz": "",
    "comments.rpz": "; only comments\n;\n\n",
}

CONFIG = {
    "empty.yaml": "",
    "full.yaml": """listen:
  - 127.0.0.1:53
  - "[::1]:53"
upstream: [192.0.2.53, "2001:db8::53", 198.51.100.1:5353]
allow: [127.0.0.0/8, 10.0.0.0/8, "::1/128"]
deny: [10.9.0.0/16]
blocklist-dir: /etc/sinkhole/blocklists
block-log: /var/log/sinkhole/block.log
block-mode: sinkhole
sinkhole-ipv4: 0.0.0.0
sinkhole-ipv6: "::"
block-ttl: 5m
upstream-timeout: 2s
tcp-idle-timeout: 10s
tcp-max-connections: 256
tcp-max-per-client: 16
tcp-max-queries: 1000
edns-buffer-size: 1232
log-level: info
refuse-action: drop
rate-limit: 100
rate-limit-burst: 200
rate-limit-action: truncate
max-inflight: 2048
""",
    "minimal.yaml": "upstream: 192.0.2.1\n",
    "bad-key.yaml": "listen: 127.0.0.1:53\nnot-a-key: 1\n",
    "bad-values.yaml": "block-mode: redirect\nblock-ttl: forever\nedns-buffer-size: 100000\nupstream: 127.0.0.1:0\n",
    "nested.yaml": "listen:\n  address: 127.0.0.1\n  port: 53\n",
    "list-for-single.yaml": "block-mode: [nxdomain, sinkhole]\n",
    "anchors.yaml": "upstream: &u [192.0.2.1]\nlisten: *u\nallow: &a 10.0.0.0/8\ndeny: *a\n",
    "tags.yaml": "--- !!map\nupstream: !!str 192.0.2.1\nblock-ttl: !!int 60\nlog-level: !custom debug\n",
    "multi-doc.yaml": "upstream: 192.0.2.1\n---\nupstream: 192.0.2.2\n...\n",
    "flow.yaml": "{upstream: [192.0.2.1, 192.0.2.2], block-mode: nxdomain, log-level: 'warning'}\n",
    "scalars.yaml": "upstream: 192.0.2.1\nblock-ttl: 0x10\nrate-limit: 1e3\nmax-inflight: ~\nlog-level: null\n"
                    "refuse-action: |\n  refuse\nblock-log: >-\n  /tmp/\n  block.log\n",
    "top-list.yaml": "- listen\n- upstream\n",
    "top-scalar.yaml": "just a string\n",
    "quotes.yaml": "upstream: \"192.0.2.1\\x00\"\nblock-log: 'it''s'\nsinkhole-ipv6: \"\\u00e9\"\n",
    "self-loop.yaml": "listen: [127.0.0.1:53]\nupstream: [127.0.0.1:53]\n",
    "merge.yaml": "base: &b {upstream: 192.0.2.1}\n<<: *b\n",
}


BLOCKLOG = {
    "escaped": '{"@timestamp":"2026-11-26T21:00:30.875Z","source":{"ip":"10.0.0.1"},"dns":{"question":{"name":"a\\\\.b\\u0041\\"c"}},'
               '"rule":{"name":"x","ruleset":"l.txt"},"event":{"action":"nxdomain"}}',
    "offset-time": '{"@timestamp":"2026-11-26T23:00:30+02:00","source":{"ip":"::1"},"dns":{"question":{"name":"x.test"}}}',
    "minimal": '{"@timestamp":"2026-01-01T00:00:00Z","source":{"ip":"1.2.3.4"},"dns":{"question":{"name":"n"}}}',
    "nested-deep": '{"a":[[[[{"b":[1,2.5e-3,true,false,null,"s"]}]]]],"@timestamp":"2026-01-01T00:00:00Z",'
                   '"source":{"ip":"1.2.3.4"},"dns":{"question":{"name":"n"}}}',
    "cut-short": '{"@timestamp":"2026-01-01T00:00:00Z","source":{"ip":"1.2.3.4"},"dns":{"question":{"name":"n"',
    "garbage-after": '{"@timestamp":"2026-01-01T00:00:00Z","source":{"ip":"1.2.3.4"},"dns":{"question":{"name":"n"}}} x',
    "not-object": '["@timestamp"]',
    "surrogates": '{"@timestamp":"2026-01-01T00:00:00Z","source":{"ip":"1.2.3.4"},"dns":{"question":{"name":"\\ud83d\\ude00"}}}',
}


def main():
    for target in ["packet", "chain", "lines", "rpz", "config", "blocklog"]:
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
    pkts = packets()
    for name, data in pkts.items():
        write("packet", name, data)
    for name, data in chain_seeds(pkts, upstream_templates()).items():
        write("chain", name, data)
    for name, text in LINES.items():
        write("lines", name + ".txt", text)
    for name, text in RPZ.items():
        write("rpz", name, text)
    # The shipped list, and the deployment's config, as seeds too.
    repo = os.path.dirname(HERE)
    for src, target, name in [("blocklists/crowdstrike-3cx.txt", "lines", "shipped-crowdstrike-3cx.txt"),
                              ("deploy/sinkhole.yaml", "config", "shipped-deploy.yaml")]:
        path = os.path.join(repo, src)
        if os.path.exists(path):
            with open(path, "rb") as f:
                write(target, name, f.read())
    for name, text in CONFIG.items():
        write("config", name, text)
    for name, text in BLOCKLOG.items():
        write("blocklog", name + ".json", text)
    doc = os.path.join(repo, "docs", "block-log.md")
    if os.path.exists(doc):
        with open(doc) as f:
            examples = [l.strip() for l in f if l.startswith('{"@timestamp"')]
        for i, line in enumerate(examples):
            write("blocklog", "doc-%d.json" % i, line)
    for target in sorted(os.listdir(CORPUS)):
        print("%-8s %3d seeds" % (target, len(os.listdir(os.path.join(CORPUS, target)))))


if __name__ == "__main__":
    main()
