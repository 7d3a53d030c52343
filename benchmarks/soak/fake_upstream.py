#!/usr/bin/env python3
"""Fake upstream resolver for the soak test: UDP and TCP on one loopback address and port.

Answers every well-formed query itself, at once (standard library only):
  A     -> 192.0.2.1      AAAA -> 2001:db8::1      other types -> NODATA (NOERROR, no answer)
  first label 'tc-*'     -> over UDP: TC=1 and no answer (sinkhole must retry over TCP);
                            over TCP: the normal answer
  first label 'cloak-*'  -> CNAME to edge.MsStorageBoxes.com plus an A for it
                            (CNAME cloaking: sinkhole must replace it with a block answer)
An OPT record is echoed when the query had one. Never answers NXDOMAIN, so every NXDOMAIN the
load generator sees was made by sinkhole. Runs until killed (the soak kills it with SIGKILL on
purpose) or until --max-seconds pass.
"""
import argparse
import os
import selectors
import socket
import struct
import sys
import time

CLOAK_TARGET = b"\x04edge\x0eMsStorageBoxes\x03com\x00"


def answer(query, tcp):
    if len(query) < 12:
        return None
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", query[:12])
    if flags & 0x8000 or qd != 1 or (flags >> 11) & 0xF:
        return None
    off = 12
    labels = []
    try:
        while True:
            length = query[off]
            if length == 0:
                off += 1
                break
            if length & 0xC0:
                return None
            labels.append(query[off + 1:off + 1 + length])
            off += 1 + length
        qtype, qclass = struct.unpack("!HH", query[off:off + 4])
    except (IndexError, struct.error):
        return None
    question = query[12:off + 4]
    first = labels[0].lower() if labels else b""
    rflags = 0x8000 | (flags & 0x0110) | 0x0080          # QR, RD and CD copied, RA
    records = []
    if first.startswith(b"tc-") and not tcp:
        rflags |= 0x0200
    elif first.startswith(b"cloak-"):
        records.append(b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(CLOAK_TARGET)) + CLOAK_TARGET)
        if qtype == 1:
            records.append(CLOAK_TARGET + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 2]))
    elif qtype == 1 and qclass == 1:
        records.append(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1]))
    elif qtype == 28 and qclass == 1:
        records.append(b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16)
                       + bytes([0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [1]))
    opt = b""
    if ar >= 1:
        opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return (struct.pack("!HHHHHH", qid, rflags, 1, len(records), 0, 1 if opt else 0)
            + question + b"".join(records) + opt)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--max-seconds", type=float, default=7200)
    args = p.parse_args()
    if not (args.addr.startswith("127.") or args.addr == "::1"):
        sys.exit("fake upstream: loopback addresses only")
    family = socket.AF_INET6 if ":" in args.addr else socket.AF_INET

    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind((args.addr, args.port))
    udp.setblocking(False)
    lst = socket.socket(family, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.addr, args.port))
    lst.listen(64)
    lst.setblocking(False)

    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ, "udp")
    sel.register(lst, selectors.EVENT_READ, "listen")
    conns = {}   # socket -> [buffer, last activity]
    with open(args.ready_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(args.ready_file + ".tmp", args.ready_file)

    deadline = time.monotonic() + args.max_seconds
    answered = 0
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.data == "udp":
                for _ in range(256):          # bounded drain per wake-up
                    try:
                        data, peer = udp.recvfrom(65535)
                    except BlockingIOError:
                        break
                    reply = answer(data, tcp=False)
                    if reply:
                        try:
                            udp.sendto(reply, peer)
                            answered += 1
                        except OSError:
                            pass
            elif key.data == "listen":
                for _ in range(64):
                    try:
                        c, _peer = lst.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c] = [b"", time.monotonic()]
                    sel.register(c, selectors.EVENT_READ, "tcp")
            else:
                c = key.fileobj
                try:
                    data = c.recv(65535)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    c.close()
                    conns.pop(c, None)
                    continue
                state = conns[c]
                state[0] += data
                state[1] = time.monotonic()
                buf = state[0]
                while len(buf) >= 2 and len(buf) >= 2 + (buf[0] << 8 | buf[1]):
                    n = buf[0] << 8 | buf[1]
                    reply = answer(buf[2:2 + n], tcp=True)
                    buf = buf[2 + n:]
                    if reply:
                        try:
                            c.setblocking(True)
                            c.settimeout(1)
                            c.sendall(struct.pack("!H", len(reply)) + reply)
                            c.setblocking(False)
                        except OSError:
                            break
                state[0] = buf
        now = time.monotonic()
        for c in [c for c, s in conns.items() if now - s[1] > 10]:
            sel.unregister(c)
            c.close()
            del conns[c]


if __name__ == "__main__":
    main()
