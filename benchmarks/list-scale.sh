#!/usr/bin/env bash
# Blocklist scale benchmark (issue: "Blocklists by file drop", section Scale).
#
# Measures, for an N-entry domain list (default 1,000,000), on this machine and in one run:
#   - time from process start to answering a blocked name, and resident memory per entry
#     above an empty server;
#   - peak memory while a changed N-entry list is reloaded, against the steady memory,
#     with a query loop running through the reload (every answer must stay right): first the
#     usual update (the second half of the names replaced), then a worst case (every name
#     replaced, so nothing can be shared with the version in force); resident memory after;
#   - server CPU per blocked query (dnsperf) with a 1,000-entry list and with the N-entry list;
#   - the same load time and memory for Unbound given the same names as local-zones.
# Loopback only; every step is bounded in time. Needs: dig, dnsperf, unbound, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
PORT=${PORT:-15390}
UPORT=${UPORT:-15391}
OUT=benchmarks/out/scale
mkdir -p "$OUT"
export PATH=/opt/swift/usr/bin:$PATH

for tool in dig dnsperf unbound python3 taskset; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install bind9-dnsutils dnsperf unbound)"; exit 1; }
done
swift build -c release >/dev/null
BIN=.build/release/sinkhole

python3 - "$OUT" "$N" <<'PY'
import sys, random
out, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
def write(path, count, salt, keep=0.5):
    # The changed list keeps the first half of the names and replaces the second half.
    with open(path, "w") as f:
        f.write("# synthetic benchmark list\n")
        for i in range(count):
            s = salt if i >= int(count * keep) else "a"
            f.write("h%d-%s.bench%d.test\n" % (i, s, i % 1000))
for d in ("empty", "small", "big"):
    import os; os.makedirs(f"{out}/{d}", exist_ok=True)
write(f"{out}/small/list.txt", 1000, "a")
write(f"{out}/big/list.txt", n, "a")
write(f"{out}/big-changed.txt", n, "b")
write(f"{out}/big-all-changed.txt", n, "c", keep=0)
with open(f"{out}/blocked-queries.txt", "w") as f:
    for i in range(20000):
        j = random.randrange(1000)
        f.write("x%d.h%d-a.bench%d.test A\n" % (i, j, j % 1000))
with open(f"{out}/unbound-local-zones.conf", "w") as f:
    for i in range(n):
        f.write('local-zone: "h%d-a.bench%d.test." always_nxdomain\n' % (i, i % 1000))
PY

rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
hwm_kb() { awk '/^VmHWM/ {print $2}' /proc/$1/status; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
now() { date +%s.%N; }

# Waits (bounded: 400 tries, 25 ms apart) until NAME gets NXDOMAIN from 127.0.0.1:PORT.
wait_blocked() {
  local port=$1 name=$2
  for _ in $(seq 400); do
    if dig -p "$port" @127.0.0.1 "$name" +tries=1 +time=1 2>/dev/null | grep -q 'status: NXDOMAIN'; then return 0; fi
    sleep 0.025
  done
  return 1
}

start_sinkhole() {  # $1 = list dir; sets PID and STARTED
  STARTED=$(now)
  taskset -c 0 "$BIN" serve --listen 127.0.0.1:$PORT --upstream 127.0.0.1:9 --blocklist-dir "$1" \
    --log-level warning > "$OUT/sinkhole.log" 2>&1 &
  PID=$!
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# CPU microseconds per query for a dnsperf run against PID on PORT.
cpu_per_query() {
  local pid=$1 port=$2 before after q
  before=$(cpu_ticks "$pid")
  q=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$OUT/blocked-queries.txt" -l 5 -c 4 -Q 20000 2>/dev/null \
      | awk '/Queries completed/ {print $3}')
  after=$(cpu_ticks "$pid")
  python3 -c "print(round(($after-$before)/$(getconf CLK_TCK)*1e6/max(1,$q),2), $q)"
}

echo "== empty server"
start_sinkhole "$OUT/empty"; wait_blocked $PORT never.invalid || true
sleep 1; BASE=$(rss_kb $PID); stop $PID

echo "== 1,000 entries"
start_sinkhole "$OUT/small"; wait_blocked $PORT h1-a.bench1.test
read SMALL_CPU SMALL_Q < <(cpu_per_query $PID $PORT); stop $PID

echo "== $N entries"
start_sinkhole "$OUT/big"; wait_blocked $PORT h1-a.bench1.test
LOAD=$(python3 -c "print(round($(now)-$STARTED,3))")
sleep 1; STEADY=$(rss_kb $PID)
read BIG_CPU BIG_Q < <(cpu_per_query $PID $PORT)

echo "== reload of a changed $N-entry list under queries"
echo 5 > /proc/$PID/clear_refs
STEADY=$(rss_kb $PID)
( for i in $(seq 400); do
    r=$(dig -p $PORT @127.0.0.1 "q$i.h5-a.bench5.test" +tries=1 +time=2 2>/dev/null | grep -o 'status: [A-Z]*' || echo "status: TIMEOUT")
    [ "$r" = "status: NXDOMAIN" ] || echo "$r" ; done > "$OUT/reload-failures.txt" ) &
LOOP=$!
cp "$OUT/big-changed.txt" "$OUT/big/.list.txt.tmp" && SWAPPED=$(now) && mv "$OUT/big/.list.txt.tmp" "$OUT/big/list.txt"
LAST=$((N - 1))
wait_blocked $PORT "h$LAST-b.bench$((LAST % 1000)).test"
RELOADED=$(python3 -c "print(round($(now)-$SWAPPED,3))")
wait $LOOP || true
PEAK=$(hwm_kb $PID)
FAILS=$(wc -l < "$OUT/reload-failures.txt")
sleep 1; AFTER=$(rss_kb $PID)

echo "== reload with every name changed (worst case: nothing shared)"
echo 5 > /proc/$PID/clear_refs
cp "$OUT/big-all-changed.txt" "$OUT/big/.list.txt.tmp" && mv "$OUT/big/.list.txt.tmp" "$OUT/big/list.txt"
wait_blocked $PORT "h$LAST-c.bench$((LAST % 1000)).test"
WORST=$(hwm_kb $PID)
sleep 1; AFTER2=$(rss_kb $PID)
stop $PID

echo "== unbound with the same $N names"
cat > "$OUT/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$UPORT
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  module-config: "iterator"
  include: "$PWD/$OUT/unbound-local-zones.conf"
remote-control:
  control-enable: no
CONF
STARTED=$(now)
taskset -c 0 unbound -d -c "$OUT/unbound.conf" > "$OUT/unbound.log" 2>&1 &
UPID=$!
wait_blocked $UPORT h1-a.bench1.test
ULOAD=$(python3 -c "print(round($(now)-$STARTED,3))")
sleep 1; URSS=$(rss_kb $UPID)
read UCPU UQ < <(cpu_per_query $UPID $UPORT)
stop $UPID

python3 - <<PY
n=$N; base=$BASE; steady=$STEADY; peak=$PEAK; urss=$URSS; after=$AFTER; worst=$WORST; after2=$AFTER2
print()
print(f"list entries                    {n:>12,}")
print(f"sinkhole: start to answering     {$LOAD:>10} s   unbound: {$ULOAD} s   ratio {round($LOAD/$ULOAD,2)}")
print(f"sinkhole: RSS empty / loaded     {base/1024:>8.1f} MiB / {steady/1024:.1f} MiB")
print(f"sinkhole: bytes per entry        {(steady-base)*1024/n:>10.1f}      unbound: {urss*1024/n:.1f} (whole RSS)   ratio {round((steady-base)/urss,2)}")
print(f"reload peak / steady RSS         {peak/steady:>10.2f}  ({peak/1024:.1f} MiB peak)")
print(f"RSS after the reload             {after/1024:>8.1f} MiB")
print(f"file replaced to new list live   {$RELOADED:>10} s")
print(f"failed answers during reload     {$FAILS:>10}")
print(f"worst case, every name changed: peak / steady {worst/steady:.2f}  ({worst/1024:.1f} MiB peak, {after2/1024:.1f} MiB after)")
print(f"CPU us per blocked query, 1k     {$SMALL_CPU:>10}  ({$SMALL_Q} queries)")
print(f"CPU us per blocked query, {n//1000}k   {$BIG_CPU:>10}  ({$BIG_Q} queries)   unbound {n//1000}k: {$UCPU}")
PY
