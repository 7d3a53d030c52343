#!/usr/bin/env bash
# Query history benchmark (issue "Retro-hunt", section 4).
#
#   benchmarks/history-scale.sh          ingest cost (via compare.sh), disk per million rows,
#                                        hunting a 100k-entry list over 10M rows
#   ROWS=1000000 benchmarks/history-scale.sh --no-ingest    smaller, scale part only
#
# 1. Ingest cost: server CPU per query without and with --query-history, in alternating runs
#    (ROUNDS, default 3) on a cached and a mixed path, medians compared (skipped with
#    --no-ingest). benchmarks/compare.sh also runs a sinkhole+history row beside the peers.
# 2. Disk: a history file is created by sinkhole itself (serve --query-history, then stopped),
#    then filled with ROWS rows (default 10,000,000) over 1,000,000 distinct names, 2,000
#    clients and the last 30 days, the way serve aggregates them (one row per name, client,
#    type and hour). The file size is read after 1,000,000 rows and after ROWS rows.
# 3. Hunt: `sinkhole hunt` with a 100,000-entry list (10,000 of its names in the history, 90,000
#    not) and with the 20-name 3CX list, timed; then a running sinkhole with that history gets
#    the 100k list dropped into its directory: the list answers at once, and the log says when
#    the background hunt finished and how many retro-hits it found.
# Loopback only; every step is bounded in time. Needs python3 (sqlite3 module), dig, dnsperf.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
export PATH=/opt/swift/usr/bin:$PATH
. benchmarks/lib/nsd.sh
ROWS=${ROWS:-10000000}
PORT=${PORT:-25370}
INGEST=1
for arg in "$@"; do
  case $arg in
    --no-ingest) INGEST=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
OUT=$PWD/benchmarks/out/history
rm -rf "$OUT"; mkdir -p "$OUT/lists" "$OUT/empty"
swift build -c release >/dev/null
BIN=${SINKHOLE_BIN:-.build/release/sinkhole}

if [ $INGEST = 1 ]; then
  # Alternating runs, server without and with --query-history, ROUNDS times each, on two paths:
  # cached (1,000 names repeated: every answer recorded, few rows) and mixed (80% of queries from
  # 10,000 repeated names, 20% names never seen before: a new row each). Server on core 0,
  # dnsperf and NSD on core 1; CPU per query = the server's utime+stime / answered queries.
  # The median of each is compared, so one disturbed run does not decide the ratio.
  ROUNDS=${ROUNDS:-3}
  echo "== 1. ingest cost: server CPU per query without and with --query-history ($ROUNDS alternating rounds of ${INGEST_SECONDS:=8} s per path)"
  mkdir -p "$OUT/nsd" "$OUT/empty"
  python3 - "$OUT" <<'PY'
import sys, random
out = sys.argv[1]
random.seed(5)
with open(f"{out}/cached.txt", "w") as f:
    for i in range(200000): f.write(f"w{i % 1000}.histbench A\n")
with open(f"{out}/mixed.txt", "w") as f:
    for i in range(2000000):
        f.write(f"u{i}.histbench A\n" if i % 5 == 0 else f"r{random.randrange(10000)}.histbench A\n")
PY
  nsd_wildcard_zone "$OUT/nsd/bench.zone" histbench
  nsd_conf "$OUT/nsd" $((PORT + 1)) histbench bench.zone
  taskset -c 1 nsd -d -c "$OUT/nsd/nsd.conf" > "$OUT/nsd.out" 2>&1 &
  NSD=$!
  ingest_run() {   # ingest_run PATH FILE on|off -> CPU µs per query
    local extra=() pid t0 t1 done
    [ "$3" = on ] && { rm -f "$OUT"/ingest.db*; extra=(--query-history "$OUT/ingest.db"); }
    taskset -c 0 "$BIN" serve --listen 127.0.0.1:$PORT --upstream 127.0.0.1:$((PORT + 1)) \
      --blocklist-dir "$OUT/empty" --log-level warning "${extra[@]}" > "$OUT/ingest-$3.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do dig -p $PORT @127.0.0.1 +tries=1 +time=1 w1.histbench 2>/dev/null | grep -q 192.0.2.1 && break; sleep 0.05; done
    [ "$1" = cached ] && timeout 60 taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$2" -n 1 -q 50 > /dev/null 2>&1
    t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    timeout $((INGEST_SECONDS + 20)) taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$2" -c 4 -q 200 -l "$INGEST_SECONDS" > "$OUT/ingest.dnsperf" 2>&1 || true
    t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    kill -TERM $pid; wait $pid || true
    done=$(awk '/Queries completed/ {print $3}' "$OUT/ingest.dnsperf")
    echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $done" | bc -l
  }
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
  for path in cached mixed; do
    off=(); on=()
    for _ in $(seq "$ROUNDS"); do
      off+=("$(ingest_run $path "$OUT/$path.txt" off)")
      on+=("$(ingest_run $path "$OUT/$path.txt" on)")
    done
    mo=$(median "${off[@]}"); mn=$(median "${on[@]}")
    printf "   %-6s without: %s µs/q (median of %s)  with: %s µs/q (median of %s)  ratio %.2f\n" "$path" \
      "$(printf %.2f "$mo")" "$(printf '%.2f ' "${off[@]}")" "$(printf %.2f "$mn")" "$(printf '%.2f ' "${on[@]}")" \
      "$(echo "$mn / $mo" | bc -l)"
  done
  kill $NSD; wait $NSD 2>/dev/null || true
  echo "   (benchmarks/compare.sh also runs sinkhole+history beside sinkhole and the peers, once per path)"
fi

echo "== 2. disk: $ROWS rows"
DB=$OUT/history.db
# sinkhole creates the schema; it is stopped once it answers.
"$BIN" serve --listen 127.0.0.1:$PORT --upstream 127.0.0.1:9 --blocklist-dir "$OUT/empty" \
  --query-history "$DB" --log-level warning > "$OUT/create.log" 2>&1 &
PID=$!
for _ in $(seq 200); do dig -p $PORT @127.0.0.1 +tries=1 +time=1 probe.test >/dev/null 2>&1 && break; sleep 0.05; done
kill -TERM $PID; wait $PID || true

python3 - "$DB" "$ROWS" "$OUT" <<'PY'
import sqlite3, sys, time, os
db, rows, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NAMES, CLIENTS = 1_000_000, 2_000
per_name = max(1, rows // NAMES)
names = min(NAMES, rows)
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
now_ms = int(time.time() * 1000); now_hour = now_ms // 3_600_000
for table in ("history", "names", "clients", "retro_reported"):   # the start-up probe's own row
    c.execute(f"DELETE FROM {table}")
t0 = time.time()
c.executemany("INSERT INTO clients(id, address) VALUES (?, ?)",
              ((i + 1, "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)) for i in range(CLIENTS)))
c.executemany("INSERT INTO names(id, name) VALUES (?, ?)",
              ((i + 1, "n%d.site%d.test" % (i, i % 5000)) for i in range(names)))
def gen(lo, hi):
    for n in range(lo, hi):
        for k in range(per_name):
            r = n * per_name + k
            hour = now_hour - 1 - (k * 72 + r % 72)   # distinct hours per k; all inside 30 days for k < 10
            first = hour * 3_600_000 + (r * 7919) % 3_000_000
            yield (n + 1, (r * 31 + k) % CLIENTS + 1, 28 if r % 4 == 0 else 1, hour, 1 + r % 20, first, first + (r % 600_000))
def size():
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(db)
first_million = min(names, 1_000_000 // per_name)
c.executemany("INSERT INTO history VALUES (?,?,?,?,?,?,?)", gen(0, first_million)); c.commit()
s1 = size(); r1 = first_million * per_name
c.executemany("INSERT INTO history VALUES (?,?,?,?,?,?,?)", gen(first_million, names)); c.commit()
s2 = size(); r2 = names * per_name
print(f"   {r1:,} rows: {s1 / 2**20:.1f} MiB ({s1 / r1:.1f} bytes per row, names and clients included)")
print(f"   {r2:,} rows: {s2 / 2**20:.1f} MiB ({s2 / r2:.1f} bytes per row) = {s2 / r2 * 1e6 / 2**20:.1f} MiB per million rows "
      f"({names:,} names, {CLIENTS:,} clients); filled in {time.time() - t0:.0f} s")
# The 100k list: every 100th history name (10,000 in the history) and 90,000 names that are not.
with open(f"{out}/lists/hunt-100k.txt", "w") as f:
    f.write("# benchmark list: 10,000 names in the history, 90,000 not\n")
    for i in range(0, 1_000_000, 100):
        f.write("n%d.site%d.test\n" % (i, i % 5000))
    for i in range(90_000):
        f.write("absent%d.feed.test\n" % i)
PY

echo "== 3. hunt"
t0=$(date +%s.%N)
timeout 300 "$BIN" hunt --query-history "$DB" --format csv "$OUT/lists/hunt-100k.txt" > "$OUT/hunt-100k.csv" || true
t1=$(date +%s.%N)
echo "   sinkhole hunt, 100,000-entry list over $ROWS rows: $(echo "$t1 - $t0" | bc) s, $(( $(wc -l < "$OUT/hunt-100k.csv") - 1 )) (client, name) hits"
t0=$(date +%s.%N)
timeout 300 "$BIN" hunt --query-history "$DB" --format csv blocklists/crowdstrike-3cx.txt > "$OUT/hunt-3cx.csv" || true
t1=$(date +%s.%N)
echo "   sinkhole hunt, the 3CX list over $ROWS rows: $(echo "$t1 - $t0" | bc) s"

# The background hunt of a running server, when that list is dropped in.
mkdir -p "$OUT/live"
"$BIN" serve --listen 127.0.0.1:$PORT --upstream 127.0.0.1:9 --blocklist-dir "$OUT/live" \
  --query-history "$DB" --block-log "$OUT/block.log" > "$OUT/serve.log" 2>&1 &
PID=$!
for _ in $(seq 200); do grep -q 'retro-hunt done\|listening on' "$OUT/serve.log" && break; sleep 0.05; done
t0=$(date +%s.%N)
cp "$OUT/lists/hunt-100k.txt" "$OUT/live/.tmp" && mv "$OUT/live/.tmp" "$OUT/live/hunt-100k.txt"
for _ in $(seq 200); do
  dig -p $PORT @127.0.0.1 +tries=1 +time=1 n100.site100.test 2>/dev/null | grep -q NXDOMAIN && break; sleep 0.01
done
t1=$(date +%s.%N)
echo "   running server: the dropped list answered NXDOMAIN after $(echo "$t1 - $t0" | bc) s"
DONE='hunt-100k.*retro-hunt done'
for _ in $(seq 1200); do grep -q "$DONE" "$OUT/serve.log" && break; sleep 0.1; done
grep "$DONE" "$OUT/serve.log" | sed 's/^/   /' | cut -c1-240 || echo "   the background hunt did not finish in 120 s"
kill -TERM $PID; wait $PID || true   # a graceful stop writes out the block log
echo "   retro-hit lines in the block log: $(grep -c '"retro-hit"' "$OUT/block.log" || true)"
rm -f "$DB" "$DB"-wal "$DB"-shm
