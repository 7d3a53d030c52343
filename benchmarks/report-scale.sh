#!/usr/bin/env bash
# `sinkhole report` scale benchmark.
#
# Generates an N-line block log (default 1,000,000 lines, schema version 1, as `serve` writes
# it: 2,000 clients, 50,000 names over 3 lists, a month of timestamps, a few garbage lines and a
# truncated last line), then times the release-built `sinkhole report` on it: each grouping, the
# filters, and the same log gzip-compressed. Prints seconds per run. Needs: python3, gzip.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
OUT=benchmarks/out/report
mkdir -p "$OUT"
export PATH=/opt/swift/usr/bin:$PATH

for tool in python3 gzip; do
  command -v $tool >/dev/null || { echo "missing $tool"; exit 1; }
done
swift build -c release --scratch-path .build-report > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
BIN=.build-report/release/sinkhole

LOG="$OUT/block.log"
if [ ! -s "$LOG" ] || [ "$(cat "$OUT/lines" 2>/dev/null)" != "$N" ]; then
  python3 - "$LOG" "$N" <<'PY'
import sys, random, time, zlib
path, n = sys.argv[1], int(sys.argv[2])
random.seed(11)
lists = ["crowdstrike-3cx.txt", "urlhaus.txt", "feed.rpz"]
names = ["h%d.bench%d.test" % (i, i % 977) for i in range(50000)]
names[0], names[1] = "msstorageboxes.com", "sbmsa.wiki"
clients = ["10.%d.%d.%d" % (20 + i // 60000, (i // 250) % 240, i % 250 + 1) for i in range(1900)]
clients += ["fd00:20::%x" % (i + 1) for i in range(100)]
start = 1_793_000_000_000  # 2026-10-26
with open(path, "w") as f:
    t = start
    for i in range(n):
        t += random.randrange(0, 5200)
        ms = t % 1000
        s = t // 1000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % ms
        q = names[min(int(random.paretovariate(1.2)) - 1, len(names) - 1) if random.random() < 0.5 else random.randrange(len(names))]
        if random.random() < 0.3:
            q = "www." + q
        if random.random() < 0.05:
            q = q.upper()
        c = clients[random.randrange(len(clients))]
        lst = lists[zlib.crc32(q.lower().encode()) % 3]
        rule = q.lower()[4:] if q.lower().startswith("www.") else q.lower()
        action = "nxdomain"
        f.write('{"@timestamp":"%s","ecs":{"version":"8.11.0"},"event":{"kind":"event","category":"network","type":"denied","action":"%s","dataset":"sinkhole.block"},"source":{"ip":"%s","port":%d},"network":{"transport":"udp","protocol":"dns"},"dns":{"type":"answer","id":%d,"question":{"name":"%s","type":"A","class":"IN"},"response_code":"NXDOMAIN"},"rule":{"name":"%s","ruleset":"%s"},"sinkhole":{"schema_version":1,"match":"qname","rule_line":%d,"ttl":60}}\n'
                % (ts, action, c, random.randrange(1024, 65536), random.randrange(65536), q, rule, lst, random.randrange(1, 50000)))
        if i % 100000 == 99999:
            f.write("garbage: not a block log line\n")
    f.write('{"@timestamp":"2026-11-26T21:00:30.875Z","ecs":{"vers')
PY
  echo "$N" > "$OUT/lines"
  gzip -1 -c "$LOG" > "$LOG.gz"
fi

LINES=$(wc -l < "$LOG")
SIZE=$(du -m "$LOG" | cut -f1)
GZSIZE=$(du -m "$LOG.gz" | cut -f1)
echo "log: $LINES lines, $SIZE MiB ($GZSIZE MiB gzip-compressed), $(nproc) CPUs"

# Best of 3 runs of `sinkhole report ARGS…` (wall-clock seconds, and the CPU seconds of that
# run: user + system); the output goes to a file, not the terminal.
TIMEFORMAT='%R %U %S'
run() {
  local best="" cpu=""
  for _ in 1 2 3; do
    local wall user sys
    read -r wall user sys < <( { time "$BIN" report "$@" > "$OUT/out.txt" 2> "$OUT/err.txt" ; } 2>&1 )
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $wall < $best else 1)"; then
      best=$wall
      cpu=$(python3 -c "print(round($user + $sys, 2))")
    fi
  done
  local args="$*"
  printf '%-84s %6s s  (CPU %5s s)  %6s output lines\n' "report ${args//$OUT\//}" "$best" "$cpu" "$(wc -l < "$OUT/out.txt")"
}

run "$LOG"
run --by domain "$LOG"
run --by list "$LOG"
run --by client --domain msstorageboxes.com --domain sbmsa.wiki "$LOG"
run --since 2026-11-01 --until 2026-11-15 --client 10.20.0.0/16 "$LOG"
run --by domain --format json "$LOG"
run --by domain --format csv "$LOG"
run "$LOG.gz"
echo "stderr: $(cat "$OUT/err.txt")"
