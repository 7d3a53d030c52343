#!/usr/bin/env bash
# Block-log load test (issue "SOC review", section "A log the SOC can trust").
#
# 1. Sustained load: dnsperf sends blocked queries at RATE (default 20,000/s) for SECONDS
#    (default 60) over UDP; then SIGTERM. The log must hold exactly one valid JSON line per
#    query answered (dnsperf's "Queries completed"), and no more.
# 2. kill -9: a fresh server under load is killed with SIGKILL; every line in the file must be
#    valid JSON except possibly a partial last one, and the lines must cover every query
#    answered more than one second before the kill.
# Loopback only; bounded in time. Needs dnsperf and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-20000}
SECONDS_LOAD=${LOAD_SECONDS:-60}
PORT=${PORT:-15395}
OUT=benchmarks/out/log-load
export PATH=/opt/swift/usr/bin:$PATH
command -v dnsperf >/dev/null || { echo "missing dnsperf (apt-get install dnsperf)"; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/block.log*
[ -n "${SINKHOLE_BIN:-}" ] || swift build -c release >/dev/null
BIN=${SINKHOLE_BIN:-.build/release/sinkhole}

python3 - "$OUT/queries.txt" <<'PY'
import sys, random
random.seed(3)
doms = [l.strip() for l in open("blocklists/crowdstrike-3cx.txt") if l.strip() and not l.startswith("#")]
with open(sys.argv[1], "w") as f:
    for i in range(50000):
        f.write("h%d.%s %s\n" % (i, random.choice(doms), random.choice(["A", "AAAA", "TXT", "HTTPS"])))
PY

start() {
  taskset -c 0 "$BIN" serve --listen 127.0.0.1:$PORT --upstream 127.0.0.1:9 --blocklist-dir blocklists \
    --block-log "$OUT/block.log" --log-level warning 2> "$OUT/server.log" &
  PID=$!
  for _ in $(seq 200); do
    dig -p $PORT @127.0.0.1 msstorageboxes.com +tries=1 +time=1 >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start"; cat "$OUT/server.log"; exit 1
}

check_lines() {  # prints: total valid invalid_last invalid_other
  python3 - "$1" <<'PY'
import json, sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
if lines and lines[-1] == b"": lines.pop()
valid = bad_last = bad_other = 0
for i, l in enumerate(lines):
    try:
        json.loads(l); valid += 1
    except Exception:
        if i == len(lines) - 1: bad_last += 1
        else: bad_other += 1
print(len(lines), valid, bad_last, bad_other)
PY
}

echo "== sustained: $RATE blocked queries/s for $SECONDS_LOAD s"
start
# 1 warm-up query was logged by start(); count it.
CPU0=$(awk '{print $14+$15}' /proc/$PID/stat)
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l "$SECONDS_LOAD" -Q "$RATE" -c 8 -t 2 \
  > "$OUT/dnsperf.txt" 2>&1 || true
CPU1=$(awk '{print $14+$15}' /proc/$PID/stat)
RSS=$(awk '/^VmHWM/ {print $2}' /proc/$PID/status)
kill -TERM $PID; wait $PID || true
COMPLETED=$(awk '/Queries completed/ {print $3}' "$OUT/dnsperf.txt")
SENT=$(awk '/Queries sent/ {print $3}' "$OUT/dnsperf.txt")
QPS=$(awk '/Queries per second/ {print $4}' "$OUT/dnsperf.txt")
read TOTAL VALID BADLAST BADOTHER < <(check_lines "$OUT/block.log")
EXPECTED=$((COMPLETED + 1))
echo "sent $SENT, answered $COMPLETED ($QPS qps), log lines $TOTAL (valid $VALID), expected $EXPECTED"
echo "server CPU per query: $(python3 -c "print(round(($CPU1-$CPU0)/$(getconf CLK_TCK)*1e6/max(1,$COMPLETED),2))") us, peak RSS $((RSS/1024)) MiB"
FAIL=0
[ "$TOTAL" -eq "$EXPECTED" ] && [ "$BADLAST" -eq 0 ] && [ "$BADOTHER" -eq 0 ] || { echo "FAIL: lines != answered queries or invalid lines"; FAIL=1; }

echo "== kill -9 under load"
rm -f "$OUT"/block.log*
start
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l 10 -Q "$RATE" -c 8 -t 2 > "$OUT/dnsperf-kill.txt" 2>&1 &
PERF=$!
sleep 5
LINES_BEFORE=$(wc -l < "$OUT/block.log")   # what was on disk 1 s+ before the kill is a lower bound
sleep 1.2
kill -KILL $PID; wait $PID 2>/dev/null || true
wait $PERF || true
read TOTAL VALID BADLAST BADOTHER < <(check_lines "$OUT/block.log")
echo "after kill -9: $TOTAL lines ($VALID valid, $BADLAST partial last, $BADOTHER invalid elsewhere); $LINES_BEFORE were on disk 1.2 s before the kill"
[ "$BADOTHER" -eq 0 ] && [ "$TOTAL" -ge "$LINES_BEFORE" ] || { echo "FAIL: invalid line before the last, or lines lost"; FAIL=1; }
[ $FAIL -eq 0 ] && echo "PASS" || exit 1
