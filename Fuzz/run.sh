#!/usr/bin/env bash
# Builds the fuzz targets (Fuzz/build.sh) and runs each one for a bounded time.
#
# Usage: Fuzz/run.sh [--seconds N] [--jobs J] [--ci] [--no-build] [target ...]
#   --seconds N  -max_total_time per target (default: $FUZZ_SECONDS or 600)
#   --jobs J     targets run at the same time (default: $FUZZ_JOBS or 1)
#   --ci         start from the seeds only, in a temporary corpus (nothing kept), with a fixed
#                seed, deterministic hashing and a fixed number of runs per target (ci_runs),
#                so CI replays the same inputs a developer's `make fuzz-ci` ran (on a slower
#                machine, the time limit stops it early: a prefix of the same inputs)
#   --no-build   use the executables already built
#   target       any of Fuzz/targets/*.swift (default: all)
#
# For each target, first every saved crash in Fuzz/regressions/<target>/ is replayed (each
# must now pass), then libFuzzer runs from the seeds in Fuzz/corpus/<target>/ plus the corpus
# it grew before in Fuzz/work/<target>/ (gitignored). A crash leaves its input in
# Fuzz/out/<target>/ (gitignored) and makes the exit status non-zero; the log is
# Fuzz/out/<target>/fuzz.log. Reproduce with: <bin>/fuzz-<target> <crash file>.
set -euo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-1}
CI=0
BUILD=1
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_PER_TARGET=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --ci) CI=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
if [ ${#TARGETS[@]} -eq 0 ]; then
    for f in "$FUZZ_DIR"/targets/*.swift; do TARGETS+=("$(basename "$f" .swift)"); done
fi

if [ "$BUILD" = 1 ]; then
    BIN=$("$FUZZ_DIR/build.sh" "${TARGETS[@]}" | tail -1)
else
    BIN="${FUZZ_SCRATCH:-$(dirname "$FUZZ_DIR")/.build-fuzz}/${FUZZ_CONFIG:-release}"
fi

# Runs per target in --ci mode: about 20 s each on the 2-core development machine.
ci_runs() {
    case "$1" in
        blocklog) echo 150000 ;;
        packet) echo 100000 ;;
        config) echo 60000 ;;
        chain) echo 40000 ;;
        *) echo 30000 ;;
    esac
}

# Largest input per target: DNS messages are small; lists, zones and configs get more room.
max_len() {
    case "$1" in
        packet) echo 1024 ;;
        chain) echo 2048 ;;
        *) echo 4096 ;;
    esac
}

export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/opt/swift/usr/bin/llvm-symbolizer}
# A smaller quarantine keeps RSS flat over long runs; use-after-free is still caught.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64:detect_leaks=1:abort_on_error=0}

TMP_CORPORA=$(mktemp -d /tmp/sinkhole-fuzz-corpus.XXXXXX)
trap 'rm -rf "$TMP_CORPORA"' EXIT

run_one() {
    local t=$1
    local exe="$BIN/fuzz-$t" out="$FUZZ_DIR/out/$t" seeds="$FUZZ_DIR/corpus/$t" regressions="$FUZZ_DIR/regressions/$t"
    mkdir -p "$out"
    [ -x "$exe" ] || { echo "[$t] no executable $exe" >&2; return 1; }
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions" 2>/dev/null)" ]; then
        if ! (cd "$out" && timeout 300 "$exe" -timeout=10 "$regressions"/* > "$out/regressions.log" 2>&1); then
            echo "[$t] FAIL: a saved crash in Fuzz/regressions/$t still fails; see $out/regressions.log" >&2
            return 1
        fi
        echo "[$t] regressions: $(ls "$regressions" | wc -l) saved input(s) pass"
    fi
    local work extra=()
    if [ "$CI" = 1 ]; then
        work="$TMP_CORPORA/$t"
        extra=(-seed=1 -runs="$(ci_runs "$t")")
    else
        work="$FUZZ_DIR/work/$t"
    fi
    mkdir -p "$work" "$seeds"
    local rc=0
    touch "$out/.started"
    # Hard stop well after -max_total_time, in case an input hangs past libFuzzer's own -timeout.
    (cd "$out" && timeout --signal=INT --kill-after=30 $((SECONDS_PER_TARGET + 120)) \
        env ${extra:+SWIFT_DETERMINISTIC_HASHING=1} "$exe" "${extra[@]}" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
        -print_final_stats=1 -artifact_prefix="$out/" "$work" "$seeds" > "$out/fuzz.log" 2>&1) || rc=$?
    local done_line runs cov
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$out/fuzz.log" | tail -1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz.log" | tail -1)
    if [ "$rc" -ne 0 ]; then
        echo "[$t] CRASH after ${runs:-?} runs (exit $rc): $(grep -m1 -E 'ERROR:|Fatal error|SUMMARY' "$out/fuzz.log" || true)" >&2
        find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
            -newer "$out/.started" | sed 's/^/    input: /' >&2
        echo "    log: $out/fuzz.log; reproduce: $exe <input>; save it under Fuzz/regressions/$t/" >&2
        return 1
    fi
    cov=$(echo "$done_line" | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*(exec\/s: [0-9]+).*/\1 \2/')
    echo "[$t] ok: ${runs:-?} runs (at most ${SECONDS_PER_TARGET} s), $cov"
}

echo "fuzzing ${TARGETS[*]} for ${SECONDS_PER_TARGET} s each, $JOBS at a time (binaries in $BIN)"
failed=0
pids=()
names=()
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    pids+=($!)
    names+=("$t")
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
    echo "$failed target(s) failed" >&2
    exit 1
fi
echo "all ${#TARGETS[@]} target(s) passed"
