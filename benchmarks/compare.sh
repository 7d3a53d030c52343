#!/usr/bin/env bash
# Side-by-side speed benchmark (issue "Speed"): sinkhole against Unbound, dnsdist and dnsmasq,
# with a bare UDP echo responder as the floor.
#
#   benchmarks/compare.sh            full run: 1k, 100k and 1M-entry lists (about 15 minutes)
#   benchmarks/compare.sh --quick    1k list, 3 s runs, peers that are not installed skipped
#                                    (under 2 minutes once built; meant for CI)
#   benchmarks/compare.sh --check    also fail (exit 1) unless every server that was run has a
#                                    result for each of its paths, and every sinkhole run (of
#                                    every round) got the
#                                    expected answers (NXDOMAIN for blocked names, NOERROR for
#                                    allowed ones) and lost no query. CI runs --quick --check.
#
# Setup, all on loopback (127.0.0.1, ports PORT_BASE … PORT_BASE+5):
#   - NSD serves a synthetic zone, benchzone. (10,000 A records and a wildcard, so any name
#     resolves), as the upstream of every server. NSD shares core 1 with dnsperf.
#   - Each server runs alone, pinned to core 0 (taskset), started fresh for each list size, with
#     the same N-entry blocklist (blocked names get NXDOMAIN, subdomains included) and an answer
#     cache of similar size: sinkhole (default 64 MiB cache, no block log), sinkhole+history (the
#     same with --query-history: cached, unique and mix paths; HISTORY=0 skips it), sinkhole+nocache
#     (the same with --cache-size 0, unique path only: what the cache costs there), sinkhole+log (the
#     same with --block-log, blocked path only; its latency run waits until the log has stopped
#     growing, since the writer falls behind the full-speed run and writes the rest after it),
#     Unbound (forwarder, no validation, 1 thread, 32m+32m caches, local-zone always_nxdomain), dnsdist (SuffixMatchNodeRule → NXDOMAIN,
#     200k-entry packet cache), dnsmasq (address=/name/, cache-size 10000: its documented limit).
#   - dnsperf runs pinned to core 1. For each path it runs twice:
#       throughput: as fast as the server answers (-q 200 outstanding), DURATION seconds;
#       latency:    at a fixed RATE (5,000 qps), LAT_DURATION seconds, p50/p99 from every answer.
# Differences that remain: sinkhole's NXDOMAIN carries an SOA (99-byte answers here), the peers'
# do not (39 bytes); dnsperf sends no EDNS; dnsdist's security poll is turned off (no traffic
# leaves loopback).
# Paths: blocked (names on the list, half of them with an extra subdomain label), cached (1,000
# allowed names repeated, cache warmed first), unique (every name new: cache miss, forwarded to
# NSD), mix (5% blocked, 95% allowed names with Zipf-like popularity over 1M names).
# The echo floor does not look at names: it runs on the mix queries, once per round of each
# list size, and its row is repeated in every table of that size.
#
# Reported per run: queries per second; lost %; p50/p99 latency at RATE; server CPU µs per answer
# (utime+stime from /proc/PID/stat over the run, divided by dnsperf's completed queries) at full
# speed and at RATE; peak RSS during the path (VmHWM, reset through clear_refs before it); and
# sinkhole ÷ peer ratios. Raw dnsperf output: benchmarks/out/compare/raw/, results as TSV in
# benchmarks/out/compare/results.tsv, the tables in benchmarks/out/compare/report.txt.
#
# Environment:
#   DURATION=10       seconds per throughput run (--quick: 3)
#   LAT_DURATION=5    seconds per latency run (--quick: 1)
#   RATE=5000         queries per second of the latency run
#   SETTLE=1          seconds of pause between the two runs of a path (--quick: 0.2)
#   SIZES="1000 100000 1000000"   list sizes (--quick: 1000)
#   ROUNDS=1          rounds per list size: each round runs every server once, one after the
#                     other, so that a noisy stretch of the machine falls on all of them alike
#                     rather than on whichever ran then; results.tsv and the tables hold the
#                     median of the rounds (the most lost of any round); rounds.tsv every round
#   SERVERS="echo sinkhole unbound dnsdist dnsmasq"   which servers to run
#   SINKHOLE_BIN=path use this binary instead of building (swift build -c release)
#   PORT_BASE=25350   first of the six loopback ports used
#   START_TIMEOUT=300 seconds a server may take to load its list and answer
# Needs: dnsperf, nsd, dig, python3, taskset, cc (apt-get install dnsperf nsd bind9-dnsutils
# gcc util-linux); peers: unbound, dnsdist, dnsmasq. Debian may start the packaged services on
# install; this script never uses port 53 and does not touch them. Run as root (clear_refs).
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
export PATH=/opt/swift/usr/bin:$PATH

QUICK=0 CHECK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ $QUICK = 1 ]; then
  DURATION=${DURATION:-3}; LAT_DURATION=${LAT_DURATION:-1}; SIZES=${SIZES:-1000}; SETTLE=${SETTLE:-0.2}
else
  DURATION=${DURATION:-10}; LAT_DURATION=${LAT_DURATION:-5}; SIZES=${SIZES:-"1000 100000 1000000"}; SETTLE=${SETTLE:-1}
fi
RATE=${RATE:-5000}
ROUNDS=${ROUNDS:-1}
SERVERS=${SERVERS:-"echo sinkhole unbound dnsdist dnsmasq"}
PORT_BASE=${PORT_BASE:-25350}
START_TIMEOUT=${START_TIMEOUT:-300}
NSD_PORT=$PORT_BASE
OUT=$PWD/benchmarks/out/compare
HERE=$PWD/benchmarks/compare
# Lines per large query file: enough for 200k qps over a whole run without starting over.
QUERIES=$(( (DURATION > LAT_DURATION ? DURATION : LAT_DURATION) * 200000 ))
DNSPERF_OPTS=(-s 127.0.0.1 -c 4 -q 200 -t 2)   # 4 source ports, 200 outstanding, 2 s timeout
HZ=$(getconf CLK_TCK)

port_of() {
  case $1 in echo) echo $((PORT_BASE + 1)) ;; sinkhole|sinkhole+log|sinkhole+history|sinkhole+nocache) echo $((PORT_BASE + 2)) ;;
    unbound) echo $((PORT_BASE + 3)) ;; dnsdist) echo $((PORT_BASE + 4)) ;; dnsmasq) echo $((PORT_BASE + 5)) ;; esac
}

# ---------------------------------------------------------------------------------------------
# Tools, peers, build.
for tool in dnsperf nsd dig python3 taskset cc ss; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install dnsperf nsd bind9-dnsutils python3 util-linux gcc)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (server on core 0, dnsperf on core 1)" >&2; exit 1; }
RUN_SERVERS=""
for s in $SERVERS; do
  case $s in
    echo|sinkhole) RUN_SERVERS="$RUN_SERVERS $s" ;;
    unbound|dnsdist|dnsmasq)
      if command -v $s >/dev/null || [ -x /usr/sbin/$s ]; then RUN_SERVERS="$RUN_SERVERS $s"
      elif [ $QUICK = 1 ]; then echo "note: $s is not installed; skipped (apt-get install $s)"
      else echo "missing $s (apt-get install $s), or leave it out of SERVERS=" >&2; exit 1; fi ;;
    *) echo "unknown server in SERVERS: $s" >&2; exit 1 ;;
  esac
done
export PATH=$PATH:/usr/sbin
for p in $(seq $PORT_BASE $((PORT_BASE + 5))); do
  if ss -Hlun "sport = :$p" | grep -q .; then echo "port $p is in use (set PORT_BASE=)" >&2; exit 1; fi
done

if [ -n "${SINKHOLE_BIN:-}" ]; then
  BIN=$(realpath "$SINKHOLE_BIN")
else
  echo "== building release binary (swift build -c release)"
  swift build -c release >/dev/null
  BIN=$PWD/.build/release/sinkhole
fi
rm -rf "$OUT"; mkdir -p "$OUT/raw" "$OUT/logs"
cc -O2 -o "$OUT/echo" "$HERE/echo.c"

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: every process this script starts is recorded and killed by PID on exit.
STARTED_PIDS=()
cleanup() {
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }     # utime + stime, all threads
core0_busy() { awk '$1 == "cpu0" {print $2 + $3 + $4}' /proc/stat; }   # user+nice+system, same unit
cpu_steal() { awk '$1 == "cpu" {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }   # steal, all
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
reset_hwm() { echo 5 > "/proc/$1/clear_refs"; }               # peak RSS := current RSS
now() { date +%s.%N; }

# rcode NAME PORT: the status dig gets (NOERROR, NXDOMAIN, …), or NONE.
rcode() {
  dig -p "$2" @127.0.0.1 "$1" A +tries=1 +time=1 2>/dev/null | sed -n 's/.*status: \([A-Z]*\).*/\1/p' | grep . || echo NONE
}

# wait_ready NAME PORT PID SIZE: until the last name of the SIZE-entry list gets NXDOMAIN and an
# allowed name NOERROR (the echo floor: any answer), at most START_TIMEOUT seconds. Fails if the
# process died.
wait_ready() {
  local name=$1 port=$2 pid=$3 last="c$(($4 - 1)).grp$((($4 - 1) % 997)).bad" deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    if [ "$name" = echo ]; then
      [ "$(rcode w1.benchzone "$port")" != NONE ] && return 0
    elif [ "$(rcode "$last" "$port")" = NXDOMAIN ] && [ "$(rcode w1.benchzone "$port")" = NOERROR ]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# The upstream: NSD with the synthetic zone, on core 1 next to dnsperf (core 0 is the server's).
echo "== generating zone and query files ($QUERIES lines per large file)"
python3 "$HERE/gen.py" common "$OUT" "$QUERIES"
cat > "$OUT/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$OUT/nsd"
  database: ""
  zonelistfile: "$OUT/nsd/zone.list"
  xfrdfile: "$OUT/nsd/xfrd.state"
  pidfile: "$OUT/nsd/nsd.pid"
  logfile: "$OUT/logs/nsd.log"
  verbosity: 0
  minimal-responses: yes
  # NSD's response rate limiting (on by default in Debian) would throttle the wildcard answers.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "benchzone."
  zonefile: "benchzone.zone"
CONF
taskset -c 1 nsd -d -c "$OUT/nsd/nsd.conf" > "$OUT/logs/nsd.out" 2>&1 &
NSD_PID=$!; STARTED_PIDS+=($NSD_PID)
deadline=$((SECONDS + 30))
until [ "$(rcode w1.benchzone $NSD_PORT)" = NOERROR ]; do
  [ $SECONDS -lt $deadline ] && kill -0 $NSD_PID 2>/dev/null || { echo "NSD did not start:" >&2; cat "$OUT/logs/nsd.out" >&2; exit 1; }
  sleep 0.1
done

# ---------------------------------------------------------------------------------------------
# Servers. start_server NAME SIZE sets PID (0 when it failed to start) and writes its config.
start_server() {
  local name=$1 size=$2 port; port=$(port_of "$name")
  local lists=$OUT/lists/$size conf=$OUT/conf/$name-$size; mkdir -p "$conf"
  local log=$OUT/logs/$name-$size.log
  local t0; t0=$(now)
  case $name in
    echo)
      taskset -c 0 "$OUT/echo" 127.0.0.1 "$port" > "$log" 2>&1 & ;;
    sinkhole|sinkhole+log|sinkhole+history|sinkhole+nocache)
      local extra=()
      [ "$name" = sinkhole+log ] && extra=(--block-log "$OUT/block.log")
      [ "$name" = sinkhole+history ] && extra=(--query-history "$OUT/history.db")
      [ "$name" = sinkhole+nocache ] && extra=(--cache-size 0)
      taskset -c 0 "$BIN" serve --listen 127.0.0.1:"$port" --upstream 127.0.0.1:$NSD_PORT \
        --blocklist-dir "$lists/sinkhole" --log-level warning "${extra[@]}" > "$log" 2>&1 & ;;
    unbound)
      cat > "$conf/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$port
  num-threads: 1
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  do-not-query-localhost: no
  module-config: "iterator"
  msg-cache-size: 32m
  rrset-cache-size: 32m
  include: "$lists/unbound-blocklist.conf"
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$NSD_PORT
remote-control:
  control-enable: no
CONF
      taskset -c 0 unbound -d -c "$conf/unbound.conf" > "$log" 2>&1 & ;;
    dnsdist)
      cat > "$conf/dnsdist.conf" <<CONF
setSecurityPollSuffix("")   -- no version check over the network
setLocal("127.0.0.1:$port")
setACL({"127.0.0.0/8"})
newServer({address="127.0.0.1:$NSD_PORT", name="nsd", checkName="w0.benchzone."})
smn = newSuffixMatchNode()
for line in io.lines("$lists/sinkhole/list.txt") do
  if line ~= "" and line:sub(1, 1) ~= "#" then smn:add(line) end
end
addAction(SuffixMatchNodeRule(smn, true), RCodeAction(DNSRCode.NXDOMAIN))
pc = newPacketCache(200000, {maxTTL=86400, minTTL=0})
getPool(""):setCache(pc)
CONF
      taskset -c 0 dnsdist --supervised --disable-syslog -C "$conf/dnsdist.conf" > "$log" 2>&1 & ;;
    dnsmasq)
      cat > "$conf/dnsmasq.conf" <<CONF
port=$port
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
server=127.0.0.1#$NSD_PORT
cache-size=10000
dns-forward-max=1000
pid-file=$conf/dnsmasq.pid
log-facility=-
conf-file=$lists/dnsmasq-blocklist.conf
CONF
      taskset -c 0 dnsmasq -k -C "$conf/dnsmasq.conf" > "$log" 2>&1 & ;;
  esac
  PID=$!; STARTED_PIDS+=($PID)
  if ! wait_ready "$name" "$port" "$PID" "$size"; then
    echo "   $name did not start within $START_TIMEOUT s (log: $log)"; tail -5 "$log" | sed 's/^/   | /'
    stop_pid "$PID"; PID=0; return
  fi
  if [ "${ROUND:-1}" = 1 ]; then   # start-up figures from the first round
    printf '%s\t%s\t%.2f\t%s\n' "$size" "$name" "$(python3 -c "print($(now)-$t0)")" "$(hwm_kb $PID)" >> "$OUT/startup.tsv"
  fi
}

# dnsperf_run PID PORT FILE RAW [extra dnsperf options]: one dnsperf run on core 1; prints the
# server's CPU ticks over the run, the user+system ticks other processes took on core 0
# meanwhile (interference from whatever else runs on the machine), and the percent of all CPU
# time the hypervisor took from this virtual machine (steal: the host's own load). (Softirq time, where the kernel
# delivers the loopback packets, is charged to no process and counted in neither.)
dnsperf_run() {
  local pid=$1 port=$2 file=$3 raw=$4; shift 4
  local t0 b0 t1 b1 s0 a0 s1 a1
  t0=$(cpu_ticks "$pid"); b0=$(core0_busy); read -r s0 a0 < <(cpu_steal)
  timeout $((DURATION + LAT_DURATION + 30)) taskset -c 1 dnsperf "${DNSPERF_OPTS[@]}" -p "$port" -d "$file" "$@" > "$raw" 2>&1 || true
  t1=$(cpu_ticks "$pid"); b1=$(core0_busy); read -r s1 a1 < <(cpu_steal)
  echo "$((t1 - t0)) $((b1 - b0 - (t1 - t0))) $(( (s1 - s0) * 100 / (a1 - a0 > 0 ? a1 - a0 : 1) ))"
}

# run_path NAME SIZE PATH FILE LATFILE: throughput run, then latency run; appends to results.tsv.
run_path() {
  local name=$1 size=$2 path=$3 file=$4 latfile=$5 port; port=$(port_of "$name")
  local raw=$OUT/raw/$size-$path-$name-r$ROUND
  if [ "$path" = cached ]; then   # warm the cache: every name of the working set once
    timeout 60 taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$file" -n 1 -q 50 > "$raw.warm.txt" 2>&1 || true
  fi
  reset_hwm "$PID"
  local k1 o1 k2 o2 st1 st2
  read -r k1 o1 st1 < <(dnsperf_run "$PID" "$port" "$file" "$raw.throughput.txt" -l "$DURATION")
  sleep "$SETTLE"   # let the server drain what the throughput run left queued
  # The block-log writer falls behind a full-speed flood and writes its backlog afterwards: wait
  # (at most 60 s) until the log stops growing, so the latency run's CPU is its own.
  if [ "$name" = sinkhole+log ] && [ -f "$OUT/block.log" ]; then
    local log_bytes=-1 now_bytes deadline=$((SECONDS + 60))
    while now_bytes=$(stat -c %s "$OUT/block.log") && [ "$now_bytes" != "$log_bytes" ] && [ $SECONDS -lt $deadline ]; do
      log_bytes=$now_bytes; sleep 0.5
    done
  fi
  read -r k2 o2 st2 < <(dnsperf_run "$PID" "$port" "$latfile" "$raw.latency.txt" -l "$LAT_DURATION" -Q "$RATE" -v)
  local lines; lines=$(wc -l < "$file")
  python3 "$HERE/report.py" row "$size" "$path" "$name" "$raw.throughput.txt" "$raw.latency.txt" \
    "$k1" "$k2" "$HZ" "$(hwm_kb "$PID")" "$lines" "$o1" "$o2" "$st1" "$st2" >> "$OUT/rounds.tsv" \
    || echo "   could not read the dnsperf output $raw.*.txt" >&2
  tail -1 "$OUT/rounds.tsv" | awk -F'\t' '{printf "   %-13s %-8s %9s qps  p50 %s ms  p99 %s ms  %s µs/q  %s  %s\n", $3, $2, $4, $6, $7, $8, $13, $14}'
}

# ---------------------------------------------------------------------------------------------
echo "== idle CPU before start: $(python3 "$HERE/report.py" idle)% of $(nproc) cores (other work on the machine skews the figures)"
echo "== servers:$RUN_SERVERS; throughput runs $DURATION s, latency runs $LAT_DURATION s at $RATE qps; $ROUNDS round(s) per list size"
: > "$OUT/results.tsv"; : > "$OUT/rounds.tsv"; : > "$OUT/startup.tsv"
T_START=$SECONDS
for size in $SIZES; do
  echo "== $size-entry list: generating"
  python3 "$HERE/gen.py" list "$OUT" "$size" "$QUERIES"
  L=$OUT/lists/$size Q=$OUT/queries
  for ROUND in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "== $size-entry list: round $ROUND of $ROUNDS"
  for name in $RUN_SERVERS; do
    echo "-- $name"
    start_server "$name" "$size"
    [ "$PID" = 0 ] && continue
    if [ "$name" = echo ]; then
      run_path echo "$size" any "$L/mix.txt" "$L/mix-lat.txt"
    else
      run_path "$name" "$size" blocked "$L/blocked.txt" "$L/blocked.txt"
      run_path "$name" "$size" cached "$Q/cached.txt" "$Q/cached.txt"
      run_path "$name" "$size" unique "$Q/unique.txt" "$Q/unique-lat.txt"
      run_path "$name" "$size" mix "$L/mix.txt" "$L/mix-lat.txt"
    fi
    stop_pid "$PID"
    if [ "$name" = sinkhole ]; then   # the cost of the block log, on the blocked path
      echo "-- sinkhole+log (--block-log)"
      rm -f "$OUT/block.log"
      start_server sinkhole+log "$size"
      if [ "$PID" != 0 ]; then
        run_path sinkhole+log "$size" blocked "$L/blocked.txt" "$L/blocked.txt"
        stop_pid "$PID"
      fi
      rm -f "$OUT/block.log"
      # What the answer cache itself costs on the cache-miss path, where every answer is new
      # and a full cache evicts one for each it stores (dnsdist's packet cache stops storing
      # when full): the same server with --cache-size 0.
      echo "-- sinkhole+nocache (--cache-size 0)"
      start_server sinkhole+nocache "$size"
      if [ "$PID" != 0 ]; then
        run_path sinkhole+nocache "$size" unique "$Q/unique.txt" "$Q/unique-lat.txt"
        stop_pid "$PID"
      fi
      # The cost of the query history (every answered, unblocked query recorded), on the paths
      # it records: the same server with --query-history, against the row without it above.
      if [ "${HISTORY:-1}" = 1 ]; then
        echo "-- sinkhole+history (--query-history)"
        rm -f "$OUT"/history.db*
        start_server sinkhole+history "$size"
        if [ "$PID" != 0 ]; then
          run_path sinkhole+history "$size" cached "$Q/cached.txt" "$Q/cached.txt"
          run_path sinkhole+history "$size" unique "$Q/unique.txt" "$Q/unique-lat.txt"
          run_path sinkhole+history "$size" mix "$L/mix.txt" "$L/mix-lat.txt"
          stop_pid "$PID"
          echo "   history file: $(du -k "$OUT/history.db" | cut -f1) KiB + WAL $(du -k "$OUT/history.db-wal" 2>/dev/null | cut -f1) KiB"
        fi
        rm -f "$OUT"/history.db*
      fi
    fi
  done
  done
  rm -rf "$L"   # the big lists and query files are only needed for this size
done
stop_pid $NSD_PID
rm -f "$OUT"/queries/unique*.txt   # large and regenerated on every run
echo "== done in $((SECONDS - T_START)) s (after the build)"
python3 "$HERE/report.py" median "$OUT/rounds.tsv" > "$OUT/results.tsv"
echo
python3 "$HERE/report.py" tables "$OUT/results.tsv" "$OUT/startup.tsv" "$DURATION" "$LAT_DURATION" "$RATE" | tee "$OUT/report.txt"
if [ $CHECK = 1 ]; then
  echo
  python3 "$HERE/report.py" check "$OUT/rounds.tsv" $RUN_SERVERS \
    $(case " $RUN_SERVERS " in *" sinkhole "*) echo sinkhole+log sinkhole+nocache; [ "${HISTORY:-1}" = 1 ] && echo sinkhole+history ;; esac)
fi
