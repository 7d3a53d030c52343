#!/usr/bin/env python3
"""Checks a soak run and prints the summary table. Usage: check.py OUT (the soak's output dir).

Exit status 0 when every check passes, 1 otherwise. Can be re-run on a finished run's OUT.
"""
import calendar
import glob
import json
import os
import re
import sys

# Anomalies the load generator reports that are wrong answers (failures), as opposed to
# incidents worth reporting (late replies, client-side socket errors).
HARD_ANOMALIES = {
    "listed-name-not-blocked", "cname-cloaking-not-blocked", "churn-name-wrong-answer",
    "forwarded-name-wrong-answer", "forwarded-answer-empty", "reply-question-mismatch",
    "reply-not-a-response", "unexpected-tc", "malformed-answered-but-must-be-dropped",
    "malformed-wrong-rcode",
}
MAX_UNANSWERED_PCT = float(os.environ.get("SOAK_MAX_UNANSWERED_PCT", "1.0"))
MAX_STRAY_SERVFAIL_PCT = float(os.environ.get("SOAK_MAX_STRAY_SERVFAIL_PCT", "1.0"))

TCP_IDLE_TIMEOUT = 10.0
EXPECTED_RULESET = {"block-apex": "crowdstrike-3cx.txt", "block-sub": "crowdstrike-3cx.txt",
                    "churn-stable": "churn.txt", "churn-var": "churn.txt", "cloak": "crowdstrike-3cx.txt"}
TS = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$")


def ts_epoch(text):
    m = TS.match(text or "")
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def get(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def line_problem(o):
    """Why a parsed block-log line does not follow schema version 1 (None when it does)."""
    if not isinstance(o, dict):
        return "not a JSON object"
    need = [("@timestamp", str), ("source.ip", str), ("source.port", int), ("network.transport", str),
            ("dns.id", int), ("dns.question.name", str), ("dns.question.type", str), ("rule.ruleset", str),
            ("event.action", str), ("sinkhole.schema_version", int), ("sinkhole.match", str)]
    for path, typ in need:
        v = get(o, path)
        if not isinstance(v, typ) or isinstance(v, bool):
            return "field %s missing or not %s" % (path, typ.__name__)
    if ts_epoch(o["@timestamp"]) is None:
        return "bad @timestamp %r" % o["@timestamp"]
    if get(o, "network.transport") not in ("udp", "tcp"):
        return "bad network.transport"
    if get(o, "event.dataset") != "sinkhole.block" or get(o, "sinkhole.schema_version") != 1:
        return "bad event.dataset or schema_version"
    if not 0 <= get(o, "dns.id") <= 65535 or not 0 < get(o, "source.port") <= 65535:
        return "dns.id or source.port out of range"
    return None


def pct(a, b):
    return 100.0 * a / b if b else 0.0


def main(out):
    out = os.path.abspath(out)
    run = json.load(open(os.path.join(out, "run.json")))
    checks = []          # (name, ok, detail)
    notes = []

    def check(name, ok, detail):
        checks.append((name, bool(ok), detail))

    if "start_mono" not in run:
        # The load never started: nothing else to check.
        print("\nsoak did not start the load:")
        for f in run.get("failures", []) or ["unknown reason"]:
            print("  FAIL  " + f)
        print("\nRESULT: FAIL")
        return 1
    start = run["start_mono"]
    seconds = run["seconds"]

    # ---- load generator summaries ----------------------------------------------------------
    counts, anomalies, stats = {}, {}, {}
    elapsed = []
    for path in sorted(glob.glob(os.path.join(out, "worker-*", "summary.json"))):
        s = json.load(open(path))
        elapsed.append(s["elapsed"])
        for kind, by_t in s["counts"].items():
            for t, by_o in by_t.items():
                for o, n in by_o.items():
                    d = counts.setdefault(kind, {}).setdefault(t, {})
                    d[o] = d.get(o, 0) + n
        for name, (n, samples) in s["anomalies"].items():
            a = anomalies.setdefault(name, [0, []])
            a[0] += n
            a[1].extend(samples[: max(0, 10 - len(a[1]))])
        for k, v in s["stats"].items():
            if isinstance(v, list):
                stats.setdefault(k, []).extend(v)
            else:
                stats[k] = stats.get(k, 0) + v
    workers_expected = run.get("workers", 0)
    check("load generators finished", len(elapsed) == workers_expected,
          "%d of %d worker summaries" % (len(elapsed), workers_expected))

    # ---- table of queries ------------------------------------------------------------------
    cols = ["NXDOMAIN", "NOERROR", "SERVFAIL", "FORMERR", "NOTIMP", "BADVERS", "dropped", "noanswer"]
    total = 0
    answered = 0
    noanswer = 0
    need_answer = 0
    rows = []
    for kind in sorted(counts, key=lambda k: (k.startswith("malformed"), k)):
        for t in sorted(counts[kind]):
            d = counts[kind][t]
            n = sum(d.values())
            total += n
            other = n - sum(d.get(c, 0) for c in cols)
            rows.append([kind, t, n] + [d.get(c, 0) for c in cols] + [other])
            noanswer += d.get("noanswer", 0)
            answered += n - d.get("noanswer", 0) - d.get("dropped", 0)
            if not kind.startswith("malformed/runt") and not kind.startswith("malformed/qr-set"):
                need_answer += n
    dur = max(elapsed) if elapsed else 0
    print()
    print("=" * 100)
    print("sinkhole soak: %g s of load, %d workers, target %g qps, achieved %.0f qps; output %s"
          % (seconds, run.get("workers", 0), run.get("qps", 0), total / dur if dur else 0, out))
    print("=" * 100)
    hdr = ["kind", "transport", "sent"] + cols + ["other"]
    widths = [24, 9, 8] + [9] * len(cols) + [6]
    fmt = " ".join("%%%s%ds" % ("-" if i < 2 else "", w) for i, w in enumerate(widths))
    print(fmt % tuple(hdr))
    sums = [0] * (len(cols) + 2)
    for r in rows:
        print(fmt % tuple(str(x) for x in r))
        for i, v in enumerate(r[2:]):
            sums[i] += v
    print(fmt % tuple(["TOTAL", ""] + [str(x) for x in sums]))
    print("(NXDOMAIN = sinkhole's own block answer; 'other' = any other reply, mostly random garbage)")

    # ---- SERVFAILs vs upstream restarts ------------------------------------------------------
    ev = run.get("events", [])
    kills = [e["mono"] for e in ev if e["event"] == "upstream_kill"]
    readies = [e["mono"] for e in ev if e["event"] == "upstream_ready"]
    # Each outage lasts from a kill to the next time the upstream answered again.
    downs = [(k, min([r for r in readies if r > k], default=run.get("end_mono", k + 10))) for k in kills]
    windows = [(k - 0.5, r + run.get("upstream_timeout", 2) + 0.5) for k, r in downs]
    sf_in, sf_out, sf_out_samples = 0, 0, []
    down_latency = []   # SERVFAIL latency of queries sent while the upstream was down
    for path in glob.glob(os.path.join(out, "worker-*", "servfail.tsv")):
        for line in open(path):
            sent, ans, kind, t = line.rstrip("\n").split("\t")
            sent, ans = float(sent), float(ans)
            if any(k + 0.1 <= sent <= r for k, r in downs):
                down_latency.append(ans - sent)
            if any(lo <= ans <= hi for lo, hi in windows):
                sf_in += 1
            else:
                sf_out += 1
                if len(sf_out_samples) < 5:
                    sf_out_samples.append("%s/%s answered at +%.2f s" % (kind, t, ans - start))
    forwarded = sum(sum(d.values()) for k in ("allow-repeat", "allow-unique", "tc", "cloak", "churn-var")
                    for d in counts.get(k, {}).values())
    print()
    print("upstream restarts: %d (down %g s each; killed at %s s)" % (
        len(kills), run.get("upstream_down", 0), ", ".join("+%.0f" % (k - start) for k in kills)))
    print("SERVFAIL: %d during upstream restarts (not errors), %d outside them (%.3f%% of %d forwarded queries)"
          % (sf_in, sf_out, pct(sf_out, forwarded), forwarded))
    if down_latency:
        down_latency.sort()
        q = lambda f: down_latency[min(len(down_latency) - 1, int(f * len(down_latency)))]
        print("SERVFAIL latency of queries sent while the upstream was down: median %.3f s, p10 %.3f s, p90 %.3f s "
              "(%d queries; --upstream-timeout %g s)" % (q(0.5), q(0.1), q(0.9), len(down_latency), run.get("upstream_timeout", 2)))
        if q(0.5) >= 0.9 * run.get("upstream_timeout", 2):
            notes.append("queries sent while the upstream port was closed waited the whole --upstream-timeout before "
                         "SERVFAIL: the ICMP port unreachable (ECONNREFUSED) was not acted on")
    check("SERVFAIL only around upstream restarts", pct(sf_out, forwarded) <= MAX_STRAY_SERVFAIL_PCT,
          "%d outside restart windows (limit %g%%)%s" % (sf_out, MAX_STRAY_SERVFAIL_PCT,
                                                        "; e.g. " + "; ".join(sf_out_samples) if sf_out_samples else ""))

    # ---- block log -------------------------------------------------------------------------
    logs = os.path.join(out, "logs")
    rotated = sorted(glob.glob(os.path.join(logs, "block.log.*")), key=lambda p: int(p.rsplit(".", 1)[1]))
    files = rotated + ([os.path.join(logs, "block.log")] if os.path.exists(os.path.join(logs, "block.log")) else [])
    rotations = {e["file"]: e["wall"] for e in ev if e["event"] == "rotate"}
    logged = {}
    line_info = {}
    invalid, invalid_samples = 0, []
    lines_total = 0
    per_file = []
    late_in_old, early_in_new = 0, 0
    prev_rotation_wall = None
    for path in files:
        name = os.path.basename(path)
        n = 0
        rot_wall = rotations.get(name)
        with open(path, "rb") as f:
            for raw in f:
                n += 1
                try:
                    o = json.loads(raw)
                    why = line_problem(o)
                except ValueError as e:
                    o, why = None, "invalid JSON: %s" % e
                if why:
                    invalid += 1
                    if len(invalid_samples) < 5:
                        invalid_samples.append("%s:%d: %s: %r" % (name, n, why, raw[:200]))
                    continue
                key = (o["network"]["transport"], o["source"]["ip"], o["source"]["port"], o["dns"]["id"],
                       o["dns"]["question"]["name"])
                logged[key] = logged.get(key, 0) + 1
                line_info[key] = (o["rule"]["ruleset"], o["sinkhole"]["match"], o["event"]["action"],
                                  o["dns"].get("response_code"), o["sinkhole"].get("matched_name"))
                t = ts_epoch(o["@timestamp"])
                if rot_wall is not None and t > rot_wall + 1.0:
                    late_in_old += 1
                if prev_rotation_wall is not None and t < prev_rotation_wall - 1.0:
                    early_in_new += 1
        lines_total += n
        per_file.append("%s %d" % (name, n))
        if rot_wall is not None:
            prev_rotation_wall = rot_wall
    print()
    print("block log: %d files, %d lines (%s)" % (len(files), lines_total, ", ".join(per_file)))
    check("every block-log line is valid JSON (schema v1)", invalid == 0 and lines_total > 0,
          "%d lines, %d invalid%s" % (lines_total, invalid, "; " + "; ".join(invalid_samples) if invalid_samples else ""))
    nrot = len([e for e in ev if e["event"] == "rotate"])
    check("rotation: SIGHUP reopens the log", late_in_old == 0 and early_in_new == 0 and len(files) == nrot + 1,
          "%d rotations, %d files; %d lines written to a rotated file >1 s after its rotation, %d lines in a newer "
          "file dated >1 s before the rotation that started it" % (nrot, len(files), late_in_old, early_in_new))

    # ---- match what was sent with what was logged -----------------------------------------
    sent = {}   # key -> [nx, noanswer, other, kind]
    for path in glob.glob(os.path.join(out, "worker-*", "records.tsv")):
        for line in open(path):
            kind, t, ip, port, qid, name, outcome, _s, _a = line.rstrip("\n").split("\t")
            key = (t, ip, int(port), int(qid), name)
            rec = sent.get(key)
            if rec is None:
                rec = sent[key] = [0, 0, 0, kind]
            if outcome == "NXDOMAIN":
                rec[0] += 1
            elif outcome == "noanswer":
                rec[1] += 1
            else:
                rec[2] += 1
    nx_total = sum(r[0] for r in sent.values())
    matched, missing, duplicates, phantom, logged_not_nx = 0, 0, 0, 0, 0
    un_total, un_logged = 0, 0
    samples = {"missing": [], "duplicate": [], "phantom": [], "logged-but-not-blocked": [], "wrong-fields": []}
    wrong_fields = 0
    for key, (nx, un, other, kind) in sent.items():
        n = logged.get(key, 0)
        un_total += un
        matched += min(n, nx)
        if n < nx:
            missing += nx - n
            if len(samples["missing"]) < 5:
                samples["missing"].append("%s %s" % (kind, key))
        extra = n - nx
        if extra > 0:
            take = min(extra, un)
            un_logged += take
            extra -= take
        if extra > 0:
            if nx == 0 and un == 0:
                logged_not_nx += extra
                if len(samples["logged-but-not-blocked"]) < 5:
                    samples["logged-but-not-blocked"].append("%s %s" % (kind, key))
            else:
                duplicates += extra
                if len(samples["duplicate"]) < 5:
                    samples["duplicate"].append("%s %s logged %d times" % (kind, key, n))
        if n:
            ruleset, match, action, rcode, matched_name = line_info[key]
            want_match = "cname" if kind == "cloak" else "qname"
            if ruleset != EXPECTED_RULESET[kind] or match != want_match or action != "nxdomain" or rcode != "NXDOMAIN" \
                    or (kind == "cloak" and (matched_name or "").lower() != "edge.msstorageboxes.com"):
                wrong_fields += 1
                if len(samples["wrong-fields"]) < 5:
                    samples["wrong-fields"].append("%s %s: %s" % (kind, key, line_info[key]))
    for key, n in logged.items():
        if key not in sent:
            phantom += n
            if len(samples["phantom"]) < 5:
                samples["phantom"].append(str(key))
    print("blocked queries answered NXDOMAIN: %d; found in the log exactly once: %d; missing %d; duplicated %d; "
          "logged but never sent %d; logged but answered otherwise %d"
          % (nx_total, matched, missing, duplicates, phantom, logged_not_nx))
    print("loggable queries with no answer: %d (of which logged: %d, not logged: %d) - reported, not failures"
          % (un_total, un_logged, un_total - un_logged))
    check("every blocked query answered NXDOMAIN is logged exactly once",
          missing == 0 and duplicates == 0 and nx_total > 0,
          "%d answered, %d missing, %d duplicated%s" % (nx_total, missing, duplicates,
                                                       "; " + "; ".join(samples["missing"] + samples["duplicate"]) if missing or duplicates else ""))
    check("no log line without a blocked query behind it", phantom == 0 and logged_not_nx == 0,
          "%d never sent, %d answered with something else%s" % (phantom, logged_not_nx,
                                                               "; " + "; ".join(samples["phantom"] + samples["logged-but-not-blocked"]) if phantom or logged_not_nx else ""))
    check("log lines name the right list, rule kind and answer", wrong_fields == 0,
          "%d wrong%s" % (wrong_fields, "; " + "; ".join(samples["wrong-fields"]) if wrong_fields else ""))

    # ---- answers ---------------------------------------------------------------------------
    hard = {k: v for k, v in anomalies.items() if k in HARD_ANOMALIES}
    soft = {k: v for k, v in anomalies.items() if k not in HARD_ANOMALIES}
    check("every answer is the right one for its query", not hard,
          "; ".join("%s x%d (e.g. %s)" % (k, v[0], " | ".join(v[1][:3])) for k, v in hard.items()) or "no wrong answers")
    for k, v in soft.items():
        notes.append("%s x%d (e.g. %s)" % (k, v[0], " | ".join(v[1][:3])))
    check("queries answered (no reply at most %g%%)" % MAX_UNANSWERED_PCT, pct(noanswer, need_answer) <= MAX_UNANSWERED_PCT,
          "%d of %d got no reply within the timeout (%.3f%%)" % (noanswer, need_answer, pct(noanswer, need_answer)))
    idle = stats.get("tcp_idle_closed_after", [])
    still = [x for x in stats.get("tcp_idle_still_open_at_end", []) if x > TCP_IDLE_TIMEOUT + 3]
    check("idle TCP clients closed at --tcp-idle-timeout", all(x <= TCP_IDLE_TIMEOUT + 3 for x in idle) and not still,
          "%d idle connections closed after %s s; %d still open too long" % (len(idle), sorted(set(idle))[:6], len(still)))

    # ---- process ---------------------------------------------------------------------------
    died = [e for e in ev if e["event"] == "sinkhole_died"]
    check("sinkhole stayed up for the whole load", not died,
          "exited at +%.1f s with status %s" % (died[0]["mono"] - start, died[0].get("status")) if died else
          "alive at every check (every 50 ms)")
    check("SIGTERM: graceful stop, exit status 0", run.get("exit_code") == 0 and not died,
          "exit status %s after %s s" % (run.get("exit_code"), run.get("stop_seconds")))

    # ---- memory and file descriptors ---------------------------------------------------------
    samples_all = [s for s in run.get("samples", []) if not s.get("final")]
    print()
    print("sinkhole RSS (MiB) / open fds / threads, every %g s:" % run.get("rss_interval", 5))
    line = []
    for s in run.get("samples", []):
        line.append("+%4.0fs %6.1f/%d/%d%s" % (s["t"], s["VmRSS"] / 1024, s["fds"], s["Threads"], "*" if s.get("final") else ""))
        if len(line) == 6:
            print("  " + "   ".join(line))
            line = []
    if line:
        print("  " + "   ".join(line))
    print("  (* = after the load, before SIGTERM; VmHWM peak %.1f MiB)"
          % (max((s.get("VmHWM", 0) for s in run.get("samples", [])), default=0) / 1024))
    with_cpu = [s for s in run.get("samples", []) if "cpu" in s and not s.get("final")]
    if len(with_cpu) >= 2:
        a, b = with_cpu[0], with_cpu[-1]
        steps = sorted((pct(y["cpu"] - x["cpu"], y["t"] - x["t"]), y["t"]) for x, y in zip(with_cpu, with_cpu[1:]) if y["t"] > x["t"])
        print("  sinkhole CPU: %.1f s over %.0f s of load (%.0f%% of one core); per %g-s interval: median %.0f%%, max %.0f%% (at +%.0f s)"
              % (b["cpu"] - a["cpu"], b["t"] - a["t"], pct(b["cpu"] - a["cpu"], b["t"] - a["t"]), run.get("rss_interval", 5),
                 steps[len(steps) // 2][0], steps[-1][0], steps[-1][1]))
    rss_growth = run.get("rss_growth", 1.2)
    third = seconds / 3.0
    mid = [s for s in samples_all if third <= s["t"] < 2 * third]
    last = [s for s in samples_all if s["t"] >= 2 * third]
    if mid and last:
        m2, m3 = max(s["VmRSS"] for s in mid), max(s["VmRSS"] for s in last)
        check("RSS levelled off (last third max <= %.0f%% of middle third max)" % (rss_growth * 100), m3 <= m2 * rss_growth,
              "middle third max %.1f MiB, last third max %.1f MiB (%+.1f%%)" % (m2 / 1024, m3 / 1024, pct(m3 - m2, m2)))
        f2, f3 = max(s["fds"] for s in mid), max(s["fds"] for s in last)
        check("open file descriptors levelled off", f3 <= f2 * 1.2 + 20,
              "middle third max %d, last third max %d" % (f2, f3))
    else:
        check("RSS levelled off", False, "not enough RSS samples (%d)" % len(samples_all))

    # ---- sinkhole's own log ------------------------------------------------------------------
    err = os.path.join(out, "sinkhole.stderr")
    text = open(err, errors="replace").read() if os.path.exists(err) else ""
    tally = {k: text.count(k) for k in ("upstream try failed", "marked down", "answering again", "block log reopened",
                                        "list not loaded", "list loaded", "fell behind", "cannot write to block log",
                                        "cannot reopen block log", "still in flight", "critical")}
    print()
    print("sinkhole stderr: " + ", ".join("%s: %d" % (k, v) for k, v in tally.items() if v))
    bad = [k for k in ("fell behind", "cannot write to block log", "cannot reopen block log", "still in flight", "critical") if tally[k]]
    invalid_gens = len([e for e in ev if e["event"] == "churn" and not e["valid"]])
    check("no block-log loss or errors reported by sinkhole", not bad, ", ".join(bad) or "none")
    check("bad list versions rejected, previous kept", tally["list not loaded"] >= invalid_gens,
          "%d invalid churn versions written, %d 'list not loaded' errors" % (invalid_gens, tally["list not loaded"]))
    check("block log reopened once per SIGHUP", tally["block log reopened"] == nrot,
          "%d rotations, %d reopen messages" % (nrot, tally["block log reopened"]))

    for f in run.get("failures", []):
        check("controller", False, f)
    if stats:
        notes.append("TCP: %d connections, %d connect errors, %d send errors, %d closed by sinkhole with queries "
                     "pending, %d half-message clients; UDP sockets %d; replies to unknown/expired queries %d"
                     % (stats.get("tcp_connections", 0), stats.get("tcp_connect_errors", 0), stats.get("tcp_send_errors", 0),
                        stats.get("tcp_closed_by_server_with_pending", 0), stats.get("tcp_partial_sent", 0),
                        stats.get("udp_sockets", 0), stats.get("unknown_replies", 0)))
    print()
    print("%-62s %s" % ("check", "result"))
    print("-" * 100)
    for name, ok, detail in checks:
        print("%-62s %s  %s" % (name[:62], "PASS" if ok else "FAIL", detail))
    for n in notes:
        print("note: " + n)
    failed = [c for c in checks if not c[1]]
    print()
    print("RESULT: %s (%d checks, %d failed)" % ("FAIL" if failed else "PASS", len(checks), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
