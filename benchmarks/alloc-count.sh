#!/usr/bin/env bash
# Allocations per query (issue "Speed", section 2): malloc/calloc/realloc calls of the sinkhole
# process per answered query, on the blocked, cached and unique (forwarded) paths, counted by an
# LD_PRELOAD shim (benchmarks/alloc/malloc-count.c) read before and after each dnsperf run.
# Loopback only (NSD as the upstream, as in compare.sh); each run lasts DURATION seconds.
# Needs: dnsperf, nsd, dig, cc, python3.
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/.."
export PATH=/opt/swift/usr/bin:$PATH
. benchmarks/lib/nsd.sh
DURATION=${DURATION:-5}
PORT=${PORT:-25380}
NSD_PORT=${NSD_PORT:-25381}
OUT=$PWD/benchmarks/out/alloc
rm -rf "$OUT"; mkdir -p "$OUT/lists" "$OUT/nsd"
swift build -c release >/dev/null
BIN=${SINKHOLE_BIN:-.build/release/sinkhole}
cc -O2 -shared -fPIC -o "$OUT/malloc-count.so" benchmarks/alloc/malloc-count.c

python3 - "$OUT" <<'PY'
import sys, random
out = sys.argv[1]
random.seed(3)
with open(f"{out}/lists/list.txt", "w") as f:
    for i in range(1000): f.write(f"c{i}.bad.test\n")
with open(f"{out}/blocked.txt", "w") as f:
    for i in range(100000):
        j = random.randrange(1000); f.write((f"x{i}." if i % 2 else "") + f"c{j}.bad.test A\n")
with open(f"{out}/cached.txt", "w") as f:
    for i in range(100000): f.write(f"w{i % 1000}.allocbench A\n")
with open(f"{out}/unique.txt", "w") as f:
    for i in range(1000000): f.write(f"u{i}.allocbench A\n")
PY
nsd_wildcard_zone "$OUT/nsd/bench.zone" allocbench
nsd_conf "$OUT/nsd" $NSD_PORT allocbench bench.zone
taskset -c 1 nsd -d -c "$OUT/nsd/nsd.conf" > "$OUT/nsd.out" 2>&1 &
NSD=$!
trap 'kill $NSD $SH 2>/dev/null || true' EXIT
SH=0
MALLOC_COUNT_FILE=$OUT/count LD_PRELOAD=$OUT/malloc-count.so taskset -c 0 "$BIN" serve \
  --listen 127.0.0.1:$PORT --upstream 127.0.0.1:$NSD_PORT --blocklist-dir "$OUT/lists" \
  --log-level warning ${SINKHOLE_ARGS:-} > "$OUT/sinkhole.log" 2>&1 &
SH=$!
for _ in $(seq 200); do dig -p $PORT @127.0.0.1 +tries=1 +time=1 w1.allocbench 2>/dev/null | grep -q 192.0.2.1 && break; sleep 0.05; done

count() { : > "$OUT/count"; kill -USR2 $SH; for _ in $(seq 100); do [ -s "$OUT/count" ] && break; sleep 0.01; done; cat "$OUT/count"; }
run() {   # run PATH FILE
  local before after done
  [ "$1" = cached ] && timeout 60 taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$2" -n 1 -q 50 > /dev/null 2>&1
  before=$(count)
  timeout $((DURATION + 20)) taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$2" -q 100 -l "$DURATION" > "$OUT/$1.dnsperf" 2>&1 || true
  after=$(count)
  done=$(awk '/Queries completed/ {print $3}' "$OUT/$1.dnsperf")
  printf "  %-8s %9s queries  %6.2f allocations per query\n" "$1" "$done" "$(echo "($after - $before) / $done" | bc -l)"
}
echo "== allocations per answered query (malloc + calloc + realloc), ${DURATION} s per path"
run blocked "$OUT/blocked.txt"
run cached "$OUT/cached.txt"
run unique "$OUT/unique.txt"
