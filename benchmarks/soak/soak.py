#!/usr/bin/env python3
"""Soak test controller: runs sinkhole under a mixed load with disturbances, then checks.

Started by benchmarks/soak.sh, which builds the binary. Layout of OUT:
  lists/               blocklist dir: crowdstrike-3cx.txt and churn.txt (rewritten every 10 s)
  logs/block.log*      block log and its rotations (block.log.1, .2, ...)
  sinkhole.stderr      sinkhole's operational log
  upstream-N.stderr    each incarnation of the fake upstream
  worker-N/            load generator output (records.tsv, servfail.tsv, summary.json)
  run.json             what the controller did and saw: timings, disturbances, RSS samples, exit
Everything binds to and sends to loopback only. Every child is started here and stopped by PID.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dnswire as W  # noqa: E402
import check  # noqa: E402

STABLE_NAMES = 50
VAR_NAMES = 100


def log(msg):
    print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def port_free(port, v6):
    fams = [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if v6 else [])
    socks = []
    try:
        for fam, addr in fams:
            for typ in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(fam, typ)
                socks.append(s)
                s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def pick_port(v6, avoid=()):
    rng = random.Random()
    for _ in range(200):
        # Below the ephemeral range (32768-60999), so no client socket can hold it.
        p = rng.randrange(20000, 32000)
        if p not in avoid and port_free(p, v6):
            return p
    raise SystemExit("no free loopback port found")


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def write_churn(lists, gen, valid):
    """churn.txt, replaced atomically (hidden temp file + rename: the loader ignores dot files).

    A valid generation holds the 50 stable names (which must stay blocked through every reload),
    100 names of this generation and two bad lines (skipped). An invalid generation has no usable
    line at all: the loader must keep the previous version in force, so the stable names stay
    blocked."""
    tmp = os.path.join(lists, ".churn.txt.tmp")
    with open(tmp, "w") as f:
        f.write("# churn list, generation %d (%s)\n" % (gen, "valid" if valid else "INVALID on purpose"))
        if valid:
            for i in range(STABLE_NAMES):
                f.write("stable-%d.churn.soak.test\n" % i)
            for i in range(VAR_NAMES):
                f.write("gen%d-%d.churn.soak.test\n" % (gen, i))
            f.write("this line is not a domain\n-bad-.churn..test\n")
        else:
            for i in range(20):
                f.write("not a domain line %d\n" % i)
    os.rename(tmp, os.path.join(lists, "churn.txt"))


class Child:
    """A process started here, stopped only by its own PID."""
    def __init__(self, name, argv, stdout, stderr):
        self.name = name
        self.stdout = open(stdout, "wb") if stdout else subprocess.DEVNULL
        self.stderr = open(stderr, "wb")
        self.p = subprocess.Popen(argv, stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def send(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signal, wait at most timeout, then SIGKILL. Returns the exit code (None if killed)."""
        if self.alive():
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
                return None
        return self.p.returncode


def proc_sample(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError):
        return None
    return out


def probe(port, timeout=0.5):
    """One forwarded query (never logged): True when sinkhole answers it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        msg, _ = W.build_query(random.randrange(65536), "ready.probe.soak.test")
        s.sendto(msg, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
        return len(data) >= 12
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--qps", type=float, default=2500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--churn-interval", type=float, default=10)
    ap.add_argument("--rotate-interval", type=float, default=60)
    ap.add_argument("--upstream-restart-interval", type=float, default=30)
    ap.add_argument("--upstream-down", type=float, default=2)
    ap.add_argument("--rss-interval", type=float, default=5)
    ap.add_argument("--upstream-timeout", type=float, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache-mib", type=int, default=8, help="--cache-size for sinkhole, if it has an answer cache")
    ap.add_argument("--rss-growth", type=float, default=1.2,
                    help="RSS check: last third's max must be at most this times the middle third's max")
    a = ap.parse_args()

    out = os.path.abspath(a.out)
    lists, logs = os.path.join(out, "lists"), os.path.join(out, "logs")
    os.makedirs(lists)
    os.makedirs(logs)
    shutil.copy(os.path.join(a.repo, "blocklists", "crowdstrike-3cx.txt"), lists)
    write_churn(lists, 0, True)
    v6 = ipv6_loopback()
    uport = pick_port(False)
    port = pick_port(v6, avoid=(uport,))
    block_log = os.path.join(logs, "block.log")
    run = {"seconds": a.seconds, "qps": a.qps, "workers": a.workers, "port": port, "upstream_port": uport,
           "ipv6": v6, "churn_interval": a.churn_interval, "rotate_interval": a.rotate_interval,
           "upstream_restart_interval": a.upstream_restart_interval, "upstream_down": a.upstream_down,
           "upstream_timeout": a.upstream_timeout, "rss_interval": a.rss_interval, "rss_growth": a.rss_growth,
           "events": [], "samples": [], "failures": []}
    children = []

    def event(name, **kw):
        e = {"event": name, "mono": time.monotonic(), "wall": time.time()}
        e.update(kw)
        run["events"].append(e)
        return e

    def cleanup(*_):
        for c in children:
            if c.alive():
                c.stop(signal.SIGKILL, timeout=5)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGTERM, cleanup)

    upstream_n = [0]

    def start_upstream():
        """Starts the fake upstream on its port; True when it is answering. The port is free
        while the upstream is down, so another program on the host may take it for a moment:
        retry (at most 40 times, 0.25 s apart) before giving up."""
        ready = os.path.join(out, "upstream.ready")
        for attempt in range(40):
            upstream_n[0] += 1
            if os.path.exists(ready):
                os.unlink(ready)
            c = Child("upstream", [sys.executable, os.path.join(HERE, "fake_upstream.py"), "--port", str(uport),
                                   "--ready-file", ready, "--max-seconds", str(a.seconds + 600)],
                      None, os.path.join(out, "upstream-%d.stderr" % upstream_n[0]))
            children.append(c)
            for _ in range(100):
                if os.path.exists(ready) or not c.alive():
                    break
                time.sleep(0.05)
            if os.path.exists(ready) and c.alive():
                if attempt:
                    event("upstream_retried", attempts=attempt + 1)
                return c, True
            c.stop(signal.SIGKILL, timeout=5)
            time.sleep(0.25)
        run["failures"].append("fake upstream could not be (re)started on port %d (see upstream-%d.stderr)"
                               % (uport, upstream_n[0]))
        return c, False

    upstream, _ = start_upstream()
    argv = [a.bin, "serve", "--listen", "127.0.0.1:%d" % port]
    if v6:
        argv += ["--listen", "[::1]:%d" % port]
    argv += ["--upstream", "127.0.0.1:%d" % uport, "--blocklist-dir", lists, "--block-log", block_log,
             "--upstream-timeout", "%gs" % a.upstream_timeout, "--log-level", "info"]
    # A small answer cache (where the binary has one) fills within the first minute, so the
    # rest of the run exercises eviction and the RSS check sees the plateau, not the cache filling.
    try:
        help_text = subprocess.run([a.bin, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        help_text = ""
    if "--cache-size" in help_text:
        argv += ["--cache-size", str(a.cache_mib)]
        run["cache_mib"] = a.cache_mib
    run["sinkhole_argv"] = argv
    log("sinkhole: %s" % " ".join(argv))
    sink = Child("sinkhole", argv, None, os.path.join(out, "sinkhole.stderr"))
    children.append(sink)
    run["sinkhole_pid"] = sink.pid
    ready = False
    for _ in range(200):   # at most ~20 s
        if not sink.alive():
            break
        if probe(port):
            ready = True
            break
        time.sleep(0.1)
    if not ready:
        run["failures"].append("sinkhole did not start answering (exit %s; see sinkhole.stderr)" % sink.p.poll())
        for c in children:
            c.stop(signal.SIGKILL, 5)
        run["exit_code"] = sink.p.returncode
        json.dump(run, open(os.path.join(out, "run.json"), "w"), indent=1)
        sys.exit(check.main(out))

    start_at = time.monotonic() + 1.0
    end = start_at + a.seconds
    run["start_mono"], run["end_mono"] = start_at, end
    per_worker = a.qps / a.workers
    workers = []
    for w in range(a.workers):
        wout = os.path.join(out, "worker-%d" % w)
        wargv = [sys.executable, os.path.join(HERE, "loadgen.py"), "--worker", str(w), "--workers", str(a.workers),
                 "--port", str(port), "--duration", str(a.seconds), "--qps", str(per_worker),
                 "--start-at", repr(start_at), "--churn-interval", str(a.churn_interval),
                 "--timeout", str(a.upstream_timeout + 2), "--list-file", os.path.join(lists, "crowdstrike-3cx.txt"),
                 "--seed", str(a.seed), "--out", wout]
        if v6:
            wargv.append("--ipv6")
        os.makedirs(wout)
        c = Child("worker-%d" % w, wargv, None, os.path.join(wout, "stderr"))
        children.append(c)
        workers.append(c)
    log("load: %d workers, %g qps for %g s on 127.0.0.1:%d%s; upstream 127.0.0.1:%d; output %s"
        % (a.workers, a.qps, a.seconds, port, " and [::1]:%d" % port if v6 else "", uport, out))

    # Disturbance schedule, relative to the start of the load.
    churn_gen = [0]
    next_churn = start_at + a.churn_interval
    next_rotate = start_at + a.rotate_interval
    next_kill = start_at + a.upstream_restart_interval / 2
    restart_at = None
    next_sample = start_at
    rotation = 0
    died = None
    t_first = None
    max_iterations = int((a.seconds + 120) * 20)   # the loop runs every 50 ms, and is bounded
    for _ in range(max_iterations):
        now = time.monotonic()
        if not sink.alive():
            died = now
            run["failures"].append("sinkhole exited during the load at +%.1f s with status %s"
                                   % (now - start_at, sink.p.returncode))
            event("sinkhole_died", status=sink.p.returncode)
            break
        if now >= end:
            break
        if now >= next_sample:
            s = proc_sample(sink.pid)
            if s:
                s["t"] = round(now - start_at, 1)
                run["samples"].append(s)
                if t_first is None:
                    t_first = s
                log("t=+%5.0fs  RSS %7.1f MiB  fds %4d  threads %3d" % (s["t"], s["VmRSS"] / 1024, s["fds"], s["Threads"]))
            next_sample += a.rss_interval
        if now >= next_churn and now < end - 1:
            churn_gen[0] += 1
            g = churn_gen[0]
            valid = g % 4 != 3
            write_churn(lists, g, valid)
            event("churn", gen=g, valid=valid)
            next_churn += a.churn_interval
        if now >= next_rotate and now < end - 2:
            rotation += 1
            dest = "%s.%d" % (block_log, rotation)
            os.rename(block_log, dest)
            sink.send(signal.SIGHUP)
            event("rotate", n=rotation, file=os.path.basename(dest))
            log("rotated block log to %s, SIGHUP sent" % os.path.basename(dest))
            next_rotate += a.rotate_interval
        if restart_at is None and now >= next_kill and now < end - a.upstream_down - 3:
            upstream.stop(signal.SIGKILL, timeout=5)
            event("upstream_kill")
            restart_at = now + a.upstream_down
            next_kill += a.upstream_restart_interval
        if restart_at is not None and now >= restart_at:
            upstream, ok = start_upstream()
            last_kill = [e for e in run["events"] if e["event"] == "upstream_kill"][-1]["mono"]
            if ok:
                event("upstream_ready")
                log("fake upstream killed and restarted (down %.1f s)" % (time.monotonic() - last_kill))
            else:
                log("fake upstream killed and could NOT be restarted; trying again at the next restart")
            restart_at = None
        time.sleep(0.05)
    if restart_at is not None:
        upstream, ok = start_upstream()
        if ok:
            event("upstream_ready")

    if died is not None:
        # Workers stop sending on SIGTERM and still write what they saw, for the checks.
        for c in workers:
            c.send(signal.SIGTERM)
    # Workers drain for at most the reply timeout; wait for them, bounded.
    for c in workers:
        try:
            c.p.wait(timeout=max(5, end - time.monotonic()) + a.upstream_timeout + 20)
        except subprocess.TimeoutExpired:
            run["failures"].append("%s did not finish; killed" % c.name)
            c.stop(signal.SIGKILL, 5)
        if c.p.returncode not in (0, None) and died is None:
            run["failures"].append("%s exited with status %s (see %s/stderr)" % (c.name, c.p.returncode, c.name))
    if sink.alive():
        s = proc_sample(sink.pid)
        if s:
            s["t"] = round(time.monotonic() - start_at, 1)
            s["final"] = True
            run["samples"].append(s)
            log("t=+%5.0fs  RSS %7.1f MiB  fds %4d  threads %3d (after the load)" % (s["t"], s["VmRSS"] / 1024, s["fds"], s["Threads"]))
        event("sigterm")
        t = time.monotonic()
        code = sink.stop(signal.SIGTERM, timeout=a.upstream_timeout + 15)
        run["stop_seconds"] = round(time.monotonic() - t, 2)
        run["exit_code"] = code
        if code is None:
            run["failures"].append("sinkhole did not stop within %g s of SIGTERM; killed" % (a.upstream_timeout + 15))
        log("SIGTERM: sinkhole exited with status %s after %.2f s" % (code, run["stop_seconds"]))
    else:
        run["exit_code"] = sink.p.returncode
    upstream.stop(signal.SIGKILL, timeout=5)
    for c in children:
        if c.alive():
            c.stop(signal.SIGKILL, timeout=5)
    run["upstream_incarnations"] = upstream_n[0]
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(run, f, indent=1)
    sys.exit(check.main(out))


if __name__ == "__main__":
    main()
