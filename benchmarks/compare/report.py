#!/usr/bin/env python3
"""Helpers for benchmarks/compare.sh.

  report.py idle                       percent of CPU idle over one second, all cores
  report.py row SIZE PATH SERVER THROUGHPUT_RAW LATENCY_RAW TICKS_T TICKS_L HZ RSS_KB LINES OTHER_T OTHER_L [STEAL_T STEAL_L]
                                       one results.tsv line from two dnsperf outputs (TICKS: the
                                       server's CPU ticks; OTHER: other ticks on core 0; STEAL:
                                       percent of the machine's CPU time the hypervisor took)
  report.py tables RESULTS STARTUP DURATION LAT_DURATION RATE
                                       the Markdown tables printed at the end
  report.py median ROUNDS               one row per size, path and server from every round's rows:
                                       the median of each figure, the most lost of any round
  report.py check RESULTS SERVER...    exit 1 unless each SERVER has a row for each of its paths,
                                       every row got answers, and every sinkhole row got the
                                       expected answers and lost no query (compare.sh --check)
"""
import re
import sys
import time

COLUMNS = ["size", "path", "server", "qps", "lost_pct", "p50_ms", "p99_ms", "cpu_us",
           "cpu_us_rate", "rss_kb", "lat_lost_pct", "lat_qps", "answers", "notes",
           "other_core0_pct", "other_core0_pct_rate", "steal_pct", "steal_pct_rate"]
PATHS = [
    ("blocked", "blocked names (half with an extra subdomain label)", "NXDOMAIN"),
    ("cached", "repeated allowed names (cache hits)", "NOERROR"),
    ("unique", "unique allowed names (cache misses, forwarded to NSD)", "NOERROR"),
    ("mix", "realistic mix (5% blocked, Zipf-like repetition over 1M names)", None),
]
SERVERS = ["echo", "sinkhole", "sinkhole+history", "sinkhole+log", "sinkhole+nocache", "unbound", "dnsdist", "dnsmasq"]
PEERS = ["echo", "unbound", "dnsdist", "dnsmasq"]


def idle():
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return f[3] + f[4], sum(f)
    i0, t0 = snap()
    time.sleep(1)
    i1, t1 = snap()
    print(round(100 * (i1 - i0) / max(1, t1 - t0)))


def parse(path):
    """Completed, lost, qps, {rcode: count} and per-answer latencies (s) from dnsperf output."""
    text = open(path, errors="replace").read()
    def num(label):
        m = re.search(label + r":\s+([\d.]+)", text)
        return float(m.group(1)) if m else 0.0
    rcodes = {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+) \([\d.]+%\)",
                                                 (re.search(r"Response codes:(.*)", text) or [None, ""])[1])}
    # -v lines: "> NOERROR name A 0.000123" per answer, "> T name A" per timeout (skipped here).
    lat = [float(m.group(1)) for m in re.finditer(r"^> [A-Z]+ .* ([\d.]+)$", text, re.M)]
    return num("Queries completed"), num("Queries lost"), num("Queries per second"), rcodes, lat


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def run_time(path):
    m = re.search(r"Run time \(s\):\s+([\d.]+)", open(path, errors="replace").read())
    return float(m.group(1)) if m else float("nan")


def row(size, path, server, raw_t, raw_l, ticks_t, ticks_l, hz, rss_kb, lines, other_t, other_l,
        steal_t="", steal_l=""):
    hz = float(hz)
    comp, lost, qps, rcodes, _ = parse(raw_t)
    lcomp, llost, lqps, lrcodes, lat = parse(raw_l)
    lat.sort()
    cpu = int(ticks_t) / hz * 1e6 / comp if comp else float("nan")
    cpu_rate = int(ticks_l) / hz * 1e6 / lcomp if lcomp else float("nan")
    total = sum(rcodes.values()) or 1
    answers = " ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(rcodes.items(), key=lambda kv: -kv[1]))
    notes = []
    expect = {p: e for p, _, e in PATHS}.get(path)
    if server != "echo" and expect and rcodes.get(expect, 0) != total:
        notes.append(f"unexpected answers ({answers})")
    if server != "echo" and path == "mix" and abs(100 * rcodes.get("NXDOMAIN", 0) / total - 5) > 1:
        notes.append(f"NXDOMAIN share off ({answers})")
    if path in ("unique", "mix") and comp + lost > int(lines):
        notes.append(f"query file wrapped ({int(comp + lost):,} queries > {int(lines):,} lines): repeats were cache hits")
    if not comp:
        notes.append("no answers")
    fields = [size, path, server, f"{qps:.0f}", f"{100 * lost / max(1, comp + lost):.2f}",
              f"{1000 * pct(lat, 50):.3f}", f"{1000 * pct(lat, 99):.3f}", f"{cpu:.2f}", f"{cpu_rate:.2f}",
              rss_kb, f"{100 * llost / max(1, lcomp + llost):.2f}", f"{lqps:.0f}", answers, "; ".join(notes),
              f"{max(0, 100 * int(other_t) / hz / run_time(raw_t)):.0f}",
              f"{max(0, 100 * int(other_l) / hz / run_time(raw_l)):.0f}", steal_t, steal_l]
    print("\t".join(str(f) for f in fields))


def ratio(a, b, digits=2):
    try:
        a, b = float(a), float(b)
        return f"{a / b:.{digits}f}" if b else "–"
    except ValueError:
        return "–"


def median(rounds):
    """Collapses the rows of several rounds: per size, path and server, the median of each
    figure (so that one round's stall or noisy stretch does not decide a row), the most lost
    of any round (a loss is never averaged away), text from the first round."""
    groups = {}
    for l in open(rounds):
        if l.strip():
            r = dict(zip(COLUMNS, l.rstrip("\n").split("\t")))
            groups.setdefault((r["size"], r["path"], r["server"]), []).append(r)
    worst = {"lost_pct", "lat_lost_pct", "rss_kb"}
    text = {"size", "path", "server", "answers", "notes"}
    for rs in groups.values():
        out = dict(rs[0])
        for c in COLUMNS:
            if c in text:
                continue
            vals = []
            for r in rs:
                try:
                    vals.append(float(r[c]))
                except (KeyError, ValueError):
                    pass
            if not vals:
                continue
            v = max(vals) if c in worst else sorted(vals)[len(vals) // 2] if len(vals) % 2 else \
                sum(sorted(vals)[len(vals) // 2 - 1:len(vals) // 2 + 1]) / 2
            digits = len(rs[0][c].split(".")[1]) if "." in rs[0][c] else 0
            out[c] = f"{v:.{digits}f}"
        if len(rs) > 1:
            cpus = "/".join(r["cpu_us"] for r in rs)
            out["notes"] = (out["notes"] + "; " if out["notes"] else "") + f"rounds' CPU µs/q {cpus}"
        print("\t".join(out.get(c, "") for c in COLUMNS))


def tables(results, startup, duration, lat_duration, rate):
    rows = [dict(zip(COLUMNS, l.rstrip("\n").split("\t"))) for l in open(results) if l.strip()]
    echoes = {r["size"]: r for r in rows if r["server"] == "echo"}
    sizes = list(dict.fromkeys(r["size"] for r in rows if r["server"] != "echo"))
    print(f"Throughput: dnsperf as fast as answers come ({duration} s, 200 outstanding). Latency: "
          f"{rate} qps for {lat_duration} s. CPU µs/q = server utime+stime per answered query, at full speed "
          f"and at {rate} qps. RSS = peak resident memory during the path. Server on core 0, dnsperf and "
          f"NSD on core 1. echo = bare recvmmsg/sendmmsg UDP responder (run on the mix queries, shown for every path). "
          f"core-0 other % = user+system CPU time other processes took on the server's core, throughput "
          f"run / latency run: a measure of interference from other work on the machine. steal % = "
          f"the share of the machine's CPU time the hypervisor gave to others (the host's load), "
          f"throughput run / latency run: over a few percent, latencies and CPU figures are the host's.")
    def steals(column):
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(column) or ""))
            except ValueError:
                pass
        return vals
    thr, lat = steals("steal_pct"), steals("steal_pct_rate")
    if thr or lat:
        print(f"\nHypervisor steal (median of rounds, per run): throughput runs up to {max(thr, default=0):.0f}%, "
              f"latency runs up to {max(lat, default=0):.0f}%"
              + (" — the host was busy: read the p99s and the CPU figures of such runs with care." if max(thr + lat) > 5 else "."))
    for size in sizes:
        for path, title, _ in PATHS:
            rs = {r["server"]: r for r in rows if r["size"] == size and r["path"] == path}
            echo = echoes.get(size) or next(iter(echoes.values()), None)
            if echo:
                rs["echo"] = echo
            present = [s for s in SERVERS if s in rs]
            if len(present) <= (1 if echo else 0):
                continue
            print(f"\n### {int(size):,}-entry list — {title}\n")
            print(f"| server | qps | lost % | p50 ms | p99 ms | CPU µs/q | CPU µs/q @{rate} | peak RSS MiB | answers | core-0 other % | steal % |")
            print("|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|")
            notes = []
            for s in present:
                r = rs[s]
                print(f"| {s} | {int(r['qps']):,} | {r['lost_pct']} | {r['p50_ms']} | {r['p99_ms']} | "
                      f"{r['cpu_us']} | {r['cpu_us_rate']} | {int(r['rss_kb']) / 1024:.1f} | {r['answers']} | "
                      f"{r['other_core0_pct']} / {r['other_core0_pct_rate']} | "
                      f"{r.get('steal_pct') or '–'} / {r.get('steal_pct_rate') or '–'} |")
                if r["notes"]:
                    notes.append(f"{s}: {r['notes']}")
                if float(r["lat_lost_pct"]) > 0.5:
                    notes.append(f"{s}: {r['lat_lost_pct']}% lost in the {rate} qps run")
            sh = rs.get("sinkhole")
            peers = [p for p in PEERS if p in rs]
            if sh and peers:
                print(f"\n| sinkhole ÷ peer | qps | p50 | p99 | CPU µs/q | CPU µs/q @{rate} | peak RSS |")
                print("|---|--:|--:|--:|--:|--:|--:|")
                for p in peers:
                    r = rs[p]
                    print(f"| ÷ {p} | {ratio(sh['qps'], r['qps'])} | {ratio(sh['p50_ms'], r['p50_ms'])} | "
                          f"{ratio(sh['p99_ms'], r['p99_ms'])} | {ratio(sh['cpu_us'], r['cpu_us'])} | "
                          f"{ratio(sh['cpu_us_rate'], r['cpu_us_rate'])} | {ratio(sh['rss_kb'], r['rss_kb'])} |")
            hist = rs.get("sinkhole+history")
            if sh and hist:
                print(f"\nquery history cost: sinkhole+history ÷ sinkhole = CPU µs/q {ratio(hist['cpu_us'], sh['cpu_us'])} "
                      f"at full speed, {ratio(hist['cpu_us_rate'], sh['cpu_us_rate'])} at {rate} qps; "
                      f"qps {ratio(hist['qps'], sh['qps'])}")
            nocache = rs.get("sinkhole+nocache")
            if sh and nocache:
                print(f"\nanswer cache cost on this path: sinkhole ÷ sinkhole+nocache = CPU µs/q "
                      f"{ratio(sh['cpu_us'], nocache['cpu_us'])} at full speed, "
                      f"{ratio(sh['cpu_us_rate'], nocache['cpu_us_rate'])} at {rate} qps")
            for n in notes:
                print(f"\nnote — {n}")
    st = [l.rstrip("\n").split("\t") for l in open(startup) if l.strip()]
    if st:
        print("\n### Start-up: time from exec to answering a listed and an allowed name; peak RSS then\n")
        print("| list | server | seconds | peak RSS MiB |")
        print("|--:|---|--:|--:|")
        for size, server, secs, kb in st:
            print(f"| {int(size):,} | {server} | {secs} | {int(kb) / 1024:.1f} |")


# The paths compare.sh runs for each server (the echo floor runs on the mix queries only).
SERVER_PATHS = {"echo": ["any"], "sinkhole+log": ["blocked"], "sinkhole+nocache": ["unique"],
                "sinkhole+history": ["cached", "unique", "mix"]}


def check(results, *servers):
    rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
    problems = []
    for server in servers:
        for path in SERVER_PATHS.get(server, [p for p, _, _ in PATHS]):
            if not any(r[2] == server and r[1] == path for r in rows):
                problems.append(f"{server} {path}: no result (did it start? see benchmarks/out/compare/logs/)")
    for r in rows:
        size, path, server, lost, lat_lost, answers, notes = r[0], r[1], r[2], r[4], r[10], r[12], r[13]
        where = f"{server} {path} ({size}-entry list)"
        if "no answers" in notes:
            problems.append(f"{where}: no answers")
        elif server.startswith("sinkhole"):
            if notes:
                problems.append(f"{where}: {notes}")
            if float(lost) > 0 or float(lat_lost) > 0:
                problems.append(f"{where}: lost {lost}% at full speed, {lat_lost}% at the fixed rate")
    for p in problems:
        print(f"check failed: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check passed: {len(rows)} runs, every sinkhole run answered as expected and lost nothing")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "idle":
        idle()
    elif cmd == "row":
        row(*sys.argv[2:16])
    elif cmd == "tables":
        tables(*sys.argv[2:7])
    elif cmd == "median":
        median(sys.argv[2])
    elif cmd == "check":
        check(*sys.argv[2:])
    else:
        sys.exit(__doc__)
