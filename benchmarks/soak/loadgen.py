#!/usr/bin/env python3
"""Load generator for the soak test (one worker process; soak.py starts several).

Sends a paced mix of queries to sinkhole over UDP and TCP from many loopback source addresses,
matches every reply to its query (by socket and DNS ID, then by the echoed question), checks the
reply against what the kind of query must get, and writes:

  records.tsv   one line per query that sinkhole may log (blocked names, churn-list names,
                CNAME-cloaked names): kind, transport, source ip, source port, DNS ID, name as
                sent, outcome, send and answer times (CLOCK_MONOTONIC)
  servfail.tsv  send and answer time of every SERVFAIL (to tell upstream restarts from the rest)
  summary.json  counts by kind, transport and outcome; anomalies with samples; TCP statistics

Kinds (weights out of 100): block-apex 15, block-sub 10, churn-stable 5, churn-var 4,
allow-repeat 30, allow-unique 24, cloak 2, tc 2, malformed 8. Traffic goes only to the
loopback server address given (127.0.0.0/8 or ::1).
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnswire as W  # noqa: E402

KINDS = [("block-apex", 15), ("block-sub", 10), ("churn-stable", 5), ("churn-var", 4),
         ("allow-repeat", 30), ("allow-unique", 24), ("cloak", 2), ("tc", 2), ("malformed", 8)]
LOGGABLE = {"block-apex", "block-sub", "churn-stable", "churn-var", "cloak"}
MUST_BLOCK = {"block-apex", "block-sub", "churn-stable"}
FORWARDED = {"allow-repeat", "allow-unique", "tc"}
QTYPES_BLOCKED = ["A", "A", "A", "AAAA", "AAAA", "TXT", "HTTPS", "MX"]
QTYPES_ALLOWED = ["A", "A", "A", "AAAA", "TXT"]
MAX_SAMPLES = 20


class IDs:
    """DNS IDs for one socket or connection: a full-period affine sequence, never repeating."""
    def __init__(self, rng):
        self.start = rng.randrange(65536)
        self.step = rng.randrange(1, 65536, 2)
        self.k = 0

    def next(self):
        if self.k >= 65536:
            return None
        v = (self.start + self.k * self.step) & 0xFFFF
        self.k += 1
        return v


class Entry:
    __slots__ = ("kind", "sub", "transport", "ip", "port", "id", "qname", "qtype", "question", "sent", "expect", "owner")


class UdpSock:
    def __init__(self, family, ip, rng):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.ip = ip
        self.port = self.sock.getsockname()[1]
        self.ids = IDs(rng)
        self.pending = {}
        self.transport = "udp"


class TcpConn:
    def __init__(self, ip, server, rng, quota):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(2)
        self.sock.connect(server)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ip = ip
        self.port = self.sock.getsockname()[1]
        self.ids = IDs(rng)
        self.pending = {}
        self.quota = quota
        self.sent = 0
        self.buf = b""
        self.transport = "tcp"
        self.last = time.monotonic()


class Worker:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed * 1000 + a.worker)
        self.server4 = ("127.0.0.1", a.port)
        self.server6 = ("::1", a.port) if a.ipv6 else None
        self.domains = [l.strip() for l in open(a.list_file) if l.strip() and not l.startswith("#")]
        self.sel = selectors.DefaultSelector()
        self.counts = {}          # kind -> transport -> outcome -> n
        self.anomalies = {}       # name -> [count, samples]
        self.stats = {"sent": 0, "tcp_connections": 0, "tcp_connect_errors": 0, "tcp_send_errors": 0,
                      "tcp_closed_by_server_with_pending": 0, "unknown_replies": 0, "udp_send_errors": 0,
                      "udp_sockets": 0, "tcp_partial_sent": 0, "tcp_idle_opened": 0, "tcp_idle_closed_after": []}
        self.seq = 0
        self.records = open(os.path.join(a.out, "records.tsv"), "w", buffering=1 << 20)
        self.servfails = open(os.path.join(a.out, "servfail.tsv"), "w", buffering=1 << 16)
        # Source addresses: the /24s 127.0.1-50 are split between the workers for UDP,
        # 127.0.51-70 for TCP; four hosts per /24 for UDP, ten for TCP.
        lo, hi = 1 + 50 * a.worker // a.workers, 50 * (a.worker + 1) // a.workers
        self.udp_addrs = ["127.0.%d.%d" % (x, y) for x in range(lo, hi + 1) for y in range(1, 5)]
        tlo, thi = 51 + 20 * a.worker // a.workers, 50 + 20 * (a.worker + 1) // a.workers
        self.tcp_addrs = ["127.0.%d.%d" % (x, y) for x in range(tlo, thi + 1) for y in range(1, 11)]
        self.spare_udp = 0
        self.udp = [self.new_udp(ip, socket.AF_INET) for ip in self.udp_addrs]
        self.udp6 = [self.new_udp("::1", socket.AF_INET6)] if a.ipv6 else []
        self.retired = []         # UDP sockets whose IDs ran out: kept open so their port is not reused
        self.tcp = []
        self.tcp_next = 0
        self.idle = []            # (socket, opened) connections left idle on purpose
        self.stopping = False     # SIGTERM: stop sending, drain briefly, still write the summary
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))

    # ---- sockets --------------------------------------------------------------------------
    def new_udp(self, ip, family):
        s = UdpSock(family, ip, self.rng)
        self.sel.register(s.sock, selectors.EVENT_READ, s)
        self.stats["udp_sockets"] += 1
        return s

    def udp_id(self, group, index):
        s = group[index]
        qid = s.ids.next()
        if qid is None:          # 65,536 queries from this socket: replace it, keep the old one open
            self.retired.append(s)
            s = group[index] = self.new_udp(s.ip, socket.AF_INET6 if ":" in s.ip else socket.AF_INET)
            qid = s.ids.next()
        return s, qid

    def open_tcp(self):
        ip = self.tcp_addrs[self.tcp_next % len(self.tcp_addrs)]
        self.tcp_next += 1
        try:
            c = TcpConn(ip, self.server4, self.rng, self.rng.randrange(5, 60))
        except OSError as e:
            self.stats["tcp_connect_errors"] += 1
            self.anomaly("tcp-connect-error", str(e))
            return None
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self.tcp.append(c)
        self.stats["tcp_connections"] += 1
        return c

    def close_tcp(self, c, reason_noanswer=None):
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        if c in self.tcp:
            self.tcp.remove(c)
        for e in list(c.pending.values()):
            self.finish(e, None, None)
        c.pending.clear()

    def pick_tcp(self):
        usable = [c for c in self.tcp if c.sent < c.quota]
        if len(usable) < 4 and len(self.tcp) < 12:
            c = self.open_tcp()
            if c:
                usable.append(c)
        return self.rng.choice(usable) if usable else None

    # ---- bookkeeping -----------------------------------------------------------------------
    def anomaly(self, name, sample):
        a = self.anomalies.setdefault(name, [0, []])
        a[0] += 1
        if len(a[1]) < MAX_SAMPLES:
            a[1].append(sample)

    def count(self, kind, transport, outcome):
        t = self.counts.setdefault(kind, {}).setdefault(transport, {})
        t[outcome] = t.get(outcome, 0) + 1

    def describe(self, e):
        return "%s %s %s:%s id=%d %s %s" % (e.kind if not e.sub else e.kind + "/" + e.sub, e.transport,
                                             e.ip, e.port, e.id, e.qname, e.qtype)

    def finish(self, e, msg, now):
        """Classifies the reply (msg None = no reply) and records it."""
        if msg is None:
            outcome = "dropped" if e.expect == "drop" else "noanswer"
        else:
            r = W.parse_reply(msg)
            if r is None or not r.qr:
                self.anomaly("reply-not-a-response", self.describe(e))
                outcome = "bad-reply"
            elif e.kind == "malformed":
                outcome = W.RCODE_NAMES.get(r.ext_rcode, "rcode-%d" % r.ext_rcode)
                if e.expect == "drop":
                    self.anomaly("malformed-answered-but-must-be-dropped", "%s got %s" % (self.describe(e), outcome))
                elif e.expect != "any" and r.ext_rcode != e.expect:
                    self.anomaly("malformed-wrong-rcode", "%s got %s, want %s" % (self.describe(e), outcome, W.RCODE_NAMES[e.expect]))
            else:
                if r.question != e.question:
                    self.anomaly("reply-question-mismatch", self.describe(e))
                if r.tc:
                    self.anomaly("unexpected-tc", self.describe(e))
                if W.is_sinkhole_block(msg, r):
                    outcome = "NXDOMAIN"
                elif r.rcode == W.NXDOMAIN:
                    outcome = "NXDOMAIN-not-sinkhole"
                else:
                    outcome = W.RCODE_NAMES.get(r.ext_rcode, "rcode-%d" % r.ext_rcode)
                if e.kind in MUST_BLOCK and outcome != "NXDOMAIN":
                    self.anomaly("listed-name-not-blocked", "%s got %s" % (self.describe(e), outcome))
                elif e.kind == "cloak" and outcome not in ("NXDOMAIN", "SERVFAIL"):
                    self.anomaly("cname-cloaking-not-blocked", "%s got %s" % (self.describe(e), outcome))
                elif e.kind == "churn-var" and outcome not in ("NXDOMAIN", "NOERROR", "SERVFAIL"):
                    self.anomaly("churn-name-wrong-answer", "%s got %s" % (self.describe(e), outcome))
                elif e.kind in FORWARDED:
                    if outcome not in ("NOERROR", "SERVFAIL"):
                        self.anomaly("forwarded-name-wrong-answer", "%s got %s" % (self.describe(e), outcome))
                    elif outcome == "NOERROR" and e.qtype in ("A", "AAAA") and r.an < 1:
                        self.anomaly("forwarded-answer-empty", self.describe(e))
                if outcome == "SERVFAIL":
                    self.servfails.write("%.4f\t%.4f\t%s\t%s\n" % (e.sent, now, e.kind, e.transport))
        self.count(e.kind if not e.sub else "malformed/" + e.sub, e.transport, outcome)
        if e.kind in LOGGABLE:
            self.records.write("%s\t%s\t%s\t%d\t%d\t%s\t%s\t%.4f\t%s\n" % (
                e.kind, e.transport, e.ip, e.port, e.id, e.qname, outcome, e.sent,
                "%.4f" % now if now is not None else "-"))

    # ---- queries ---------------------------------------------------------------------------
    def mixcase(self, name):
        if self.rng.random() < 0.5:
            return name
        return "".join(c.upper() if self.rng.random() < 0.5 else c for c in name)

    def choose(self):
        """(kind, sub, qname, qtype, edns, malformed builder, expect)."""
        rng = self.rng
        x = rng.randrange(100)
        for kind, weight in KINDS:
            if x < weight:
                break
            x -= weight
        self.seq += 1
        tag = "w%d-%d" % (self.a.worker, self.seq)
        edns = None if rng.random() < 0.3 else (rng.choice([512, 1232, 4096]), rng.random() < 0.3)
        if kind == "malformed":
            sub, builder, expect = rng.choice(W.MALFORMED)
            return kind, sub, "-", "-", None, builder, expect
        if kind == "block-apex":
            return kind, None, self.mixcase(rng.choice(self.domains)), rng.choice(QTYPES_BLOCKED), edns, None, "answer"
        if kind == "block-sub":
            label = rng.choice(["cdn", "update", "api", "www", "x"])
            return kind, None, "%s.%s.%s" % (tag, label, self.mixcase(rng.choice(self.domains))), rng.choice(QTYPES_BLOCKED), edns, None, "answer"
        if kind == "churn-stable":
            return kind, None, "q%s.stable-%d.churn.soak.test" % (tag, rng.randrange(50)), rng.choice(QTYPES_BLOCKED), edns, None, "answer"
        if kind == "churn-var":
            gen = max(0, int((time.monotonic() - self.a.start_at) / self.a.churn_interval) + rng.choice([-1, 0, 0, 1]))
            return kind, None, "q%s.gen%d-%d.churn.soak.test" % (tag, gen, rng.randrange(100)), "A", edns, None, "answer"
        if kind == "allow-repeat":
            return kind, None, "www%d.popular.soak.test" % rng.randrange(40), rng.choice(QTYPES_ALLOWED), edns, None, "answer"
        if kind == "allow-unique":
            return kind, None, "n%s.unique.soak.test" % tag, rng.choice(QTYPES_ALLOWED), edns, None, "answer"
        if kind == "cloak":
            return kind, None, "cloak-%s.soak.test" % tag, "A", edns, None, "answer"
        return kind, None, "tc-%s.soak.test" % tag, "A", edns, None, "answer"

    def send_one(self, now):
        kind, sub, qname, qtype, edns, builder, expect = self.choose()
        r = self.rng.random()
        use_tcp = r < (0.2 if kind == "malformed" else 0.15)
        use_v6 = not use_tcp and self.udp6 and r > 0.96
        if use_tcp:
            owner = self.pick_tcp()
            if owner is None:
                use_tcp = False
        if use_tcp:
            qid = owner.ids.next()
            if qid is None:
                owner.quota = 0
                return
            owner.sent += 1
        elif use_v6:
            owner, qid = self.udp_id(self.udp6, 0)
        else:
            owner, qid = self.udp_id(self.udp, self.rng.randrange(len(self.udp)))
        if builder is not None:
            msg = builder(qid, self.rng) if sub == "garbage" else builder(qid)
            question = b""
        else:
            msg, question = W.build_query(qid, qname, qtype, edns=edns)
        e = Entry()
        e.kind, e.sub, e.transport, e.ip, e.port, e.id = kind, sub, owner.transport, owner.ip, owner.port, qid
        e.qname, e.qtype, e.question, e.sent, e.expect, e.owner = qname, qtype, question, now, expect, owner
        owner.pending[qid] = e
        self.stats["sent"] += 1
        if use_tcp:
            try:
                owner.sock.sendall(struct.pack("!H", len(msg)) + msg)
                owner.last = now
            except OSError as ex:
                self.stats["tcp_send_errors"] += 1
                self.anomaly("tcp-send-error", "%s: %s" % (self.describe(e), ex))
                self.close_tcp(owner)
        else:
            try:
                owner.sock.sendto(msg, self.server6 if use_v6 else self.server4)
            except OSError as ex:
                self.stats["udp_send_errors"] += 1
                self.anomaly("udp-send-error", "%s: %s" % (self.describe(e), ex))

    # ---- replies ---------------------------------------------------------------------------
    def on_udp(self, s, now):
        for _ in range(64):
            try:
                msg, _peer = s.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(msg) < 2:
                self.stats["unknown_replies"] += 1
                continue
            e = s.pending.pop(msg[0] << 8 | msg[1], None)
            if e is None:
                self.stats["unknown_replies"] += 1
                self.anomaly("reply-to-unknown-or-expired-query", "udp %s:%d id=%d" % (s.ip, s.port, msg[0] << 8 | msg[1]))
                continue
            self.finish(e, msg, now)

    def on_tcp(self, c, now):
        try:
            data = c.sock.recv(65535)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError:
            data = b""
        if not data:
            if c.pending:
                self.stats["tcp_closed_by_server_with_pending"] += 1
            self.close_tcp(c)
            return
        c.buf += data
        c.last = now
        while len(c.buf) >= 2 and len(c.buf) >= 2 + (c.buf[0] << 8 | c.buf[1]):
            n = c.buf[0] << 8 | c.buf[1]
            msg, c.buf = c.buf[2:2 + n], c.buf[2 + n:]
            e = c.pending.pop(msg[0] << 8 | msg[1], None) if len(msg) >= 2 else None
            if e is None:
                self.stats["unknown_replies"] += 1
                self.anomaly("reply-to-unknown-or-expired-query", "tcp %s:%d" % (c.ip, c.port))
                continue
            self.finish(e, msg, now)
        if c.sent >= c.quota and not c.pending:
            self.close_tcp(c)

    def on_idle(self, sock, now):
        try:
            data = sock.recv(16)
        except OSError:
            data = b""
        if not data:
            opened = [o for s, o in self.idle if s is sock][0]
            self.stats["tcp_idle_closed_after"].append(round(now - opened, 2))
            self.sel.unregister(sock)
            sock.close()
            self.idle = [(s, o) for s, o in self.idle if s is not sock]

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout=timeout):
            now = time.monotonic()
            d = key.data
            if isinstance(d, UdpSock):
                self.on_udp(d, now)
            elif isinstance(d, TcpConn):
                self.on_tcp(d, now)
            else:
                self.on_idle(key.fileobj, now)

    def expire(self, now, force=False):
        limit = now - self.a.timeout
        for group in (self.udp, self.udp6, self.retired, list(self.tcp)):
            for s in group:
                old = [qid for qid, e in s.pending.items() if force or e.sent < limit]
                for qid in old:
                    self.finish(s.pending.pop(qid), None, None)
        for c in list(self.tcp):
            if c.sent >= c.quota and not c.pending:
                self.close_tcp(c)

    # ---- odd TCP clients ---------------------------------------------------------------------
    def tcp_partial(self):
        """A client that sends half a message and hangs up: must cost sinkhole nothing."""
        try:
            s = socket.create_connection(self.server4, timeout=1, source_address=(self.rng.choice(self.tcp_addrs), 0))
            msg, _ = W.build_query(1, "partial.soak.test")
            s.sendall(struct.pack("!H", len(msg)) + msg[:len(msg) // 2])
            s.close()
            self.stats["tcp_partial_sent"] += 1
        except OSError as e:
            self.anomaly("tcp-partial-error", str(e))

    def tcp_idle(self, now):
        """A client that connects and says nothing: sinkhole must close it at --tcp-idle-timeout."""
        try:
            s = socket.create_connection(self.server4, timeout=1, source_address=(self.rng.choice(self.tcp_addrs), 0))
        except OSError as e:
            self.anomaly("tcp-idle-error", str(e))
            return
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, "idle")
        self.idle.append((s, now))
        self.stats["tcp_idle_opened"] += 1

    # ---- main ------------------------------------------------------------------------------
    def run(self):
        a = self.a
        while time.monotonic() < a.start_at:
            time.sleep(min(0.05, max(0.0, a.start_at - time.monotonic())))
        t0 = a.start_at
        end = t0 + a.duration
        sent = 0
        next_expire = t0 + 0.25
        next_partial = t0 + 3
        next_idle = t0 + 5
        max_iterations = int(a.duration * 5000) + 1000   # the loop is bounded by time and count
        for _ in range(max_iterations):
            now = time.monotonic()
            if now >= end or self.stopping:
                break
            due = min(int((now - t0) * a.qps) - sent, 400)
            for _ in range(max(0, due)):
                self.send_one(now)
                sent += 1
            self.poll(0.002)
            if now >= next_expire:
                self.expire(now)
                next_expire = now + 0.25
            if now >= next_partial:
                self.tcp_partial()
                next_partial = now + 3
            if now >= next_idle and now < end - a.idle_check_margin:
                self.tcp_idle(now)
                next_idle = now + 20
        elapsed = time.monotonic() - t0
        # Drain: wait for the replies still due (bounded by the reply timeout).
        drain_end = time.monotonic() + (1.0 if self.stopping else a.timeout + 0.5)
        for _ in range(100000):
            now = time.monotonic()
            if now >= drain_end or not self.any_pending():
                break
            self.poll(0.01)
            self.expire(now)
        self.expire(time.monotonic(), force=True)
        for c in list(self.tcp):
            self.close_tcp(c)
        for s, o in self.idle:
            self.stats.setdefault("tcp_idle_still_open_at_end", []).append(round(time.monotonic() - o, 2))
            s.close()
        self.records.close()
        self.servfails.close()
        summary = {"worker": a.worker, "elapsed": elapsed, "stopped_early": self.stopping, "target_qps": a.qps, "counts": self.counts,
                   "anomalies": self.anomalies, "stats": self.stats}
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)

    def any_pending(self):
        return any(s.pending for g in (self.udp, self.udp6, self.retired, self.tcp) for s in g)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--qps", type=float, required=True)
    p.add_argument("--start-at", type=float, required=True, help="CLOCK_MONOTONIC time to start")
    p.add_argument("--churn-interval", type=float, default=10)
    p.add_argument("--timeout", type=float, default=4)
    p.add_argument("--idle-check-margin", type=float, default=15)
    p.add_argument("--list-file", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    Worker(a).run()


if __name__ == "__main__":
    main()
