#!/usr/bin/env bash
# Query history benchmark (issue "Retro-hunt", section 4).
#
#   benchmarks/history-scale.sh          ingest cost (via compare.sh), disk per million rows,
#                                        hunting a 100k-entry list over 10M rows
#   ROWS=1000000 benchmarks/history-scale.sh --no-ingest    smaller, scale part only
#
# 1. Ingest cost: benchmarks/compare.sh with SERVERS="sinkhole unbound" and a 1k list runs
#    sinkhole without and with --query-history on the cached, unique and mix paths in the same
#    run (server on core 0, dnsperf on core 1) and prints "query history cost" ratios of server
#    CPU per query. (Skipped with --no-ingest.)
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
  echo "== 1. ingest cost (compare.sh, sinkhole with and without --query-history, and Unbound)"
  SERVERS="sinkhole unbound" SIZES=1000 SINKHOLE_BIN=$BIN benchmarks/compare.sh | tee "$OUT/ingest.txt" \
    | grep -E '^(###|query history cost|\| (sinkhole|sinkhole\+history|unbound) )' || true
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
