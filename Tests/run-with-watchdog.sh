#!/usr/bin/env bash
# Runs `swift test` with a deadline, so that a test run that hangs fails in minutes with the
# evidence instead of running until CI's own limit cuts it off with nothing to show.
#
# Usage: Tests/run-with-watchdog.sh [swift test arguments...]   (make test passes --skip-build,
#        having built the tests first, so that compiling never counts against the deadline)
#   TEST_TIMEOUT  seconds one run may take (default 240; a whole run takes well under a minute)
#
# On a hang it prints the tests that started and never finished and every thread's stack of
# the test process (gdb, when installed), kills the run, and runs the tests once more: the
# second run decides the exit status, and the report of the hang stays at the top of the log.
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${TEST_TIMEOUT:-240}
log=$(mktemp "${TMPDIR:-/tmp}/sinkhole-tests.XXXXXX")
summary="$log.hang"
trap 'rm -f "$log" "$summary"' EXIT

report_hang() {
    local pid=$1
    echo
    echo "=== test run still going after ${limit} s: a hang. Tests started and not finished:"
    grep -oE '◇ Test [^ ]+\)' "$log" | sed 's/◇ Test //' | sort -u >"$log.started"
    # Ended: passed or failed (a test that recorded an issue may still be running).
    grep -E '^[✔✘] Test .*(passed|failed) after' "$log" | grep -oE 'Test [^ ]+\)' | sed 's/^Test //' | sort -u >"$log.ended"
    comm -23 "$log.started" "$log.ended" | sed 's/^/  /' >"$log.unfinished"
    cat "$log.unfinished"
    head -n 40 "$log.unfinished" >>"$summary"
    rm -f "$log.unfinished"
    rm -f "$log.started" "$log.ended"
    local xctest
    xctest=$(pgrep -P "$pid" -f 'PackageTests.xctest' | head -n 1 || true)
    if [ -n "$xctest" ]; then
        echo "=== child processes of the test process:"
        ps -o pid,etimes,args --ppid "$xctest" 2>/dev/null | sed 's/^/  /'
        if command -v gdb >/dev/null 2>&1; then
            echo "=== thread stacks of the test process ($xctest):"
            # gdb's own complaints (ptrace refused, say) are kept; its chatter is not.
            timeout 120 gdb -batch -p "$xctest" -ex 'thread apply all bt 30' 2>&1 \
                | grep -E '^(Thread|#)|ptrace|[Cc]ould not attach|not permitted' | cut -c1-300 | sed 's/^/  /' >"$log.stacks"
            cat "$log.stacks"
            # For the summary: each thread's frames in this package's code, without the rest.
            echo "  frames in sinkhole's code, per thread:" >>"$summary"
            awk '/^  Thread/ { t = $2 } / at \/.*\/(Sources|Tests)\// { sub(/^ +/, ""); print "  thread " t ": " $0 }' \
                "$log.stacks" | cut -c1-240 | head -n 60 >>"$summary"
            rm -f "$log.stacks"
        else
            echo "=== (gdb not installed: no stacks)"
        fi
    fi
    # The whole tree: swift test, the test process (SwiftPM starts it in a process group of its
    # own) and everything it started; stopped first so that nothing new is started meanwhile.
    local tree
    tree="$(descendants "$pid") $pid"
    kill -STOP $tree 2>/dev/null
    # Again after the stop, for any child started while the first list was taken.
    tree="$tree $(descendants "$pid")"
    kill -KILL $tree 2>/dev/null
}

descendants() {
    local child
    for child in $(pgrep -P "$1"); do
        descendants "$child"
        echo "$child"
    done
}

run_once() {
    : >"$log"
    # stdbuf keeps the output line by line, so what a CI log shows is what had happened when
    # it was cut off.
    stdbuf -oL -eL swift test "$@" >"$log" 2>&1 &
    local pid=$!
    tail -n +1 -f --pid="$pid" "$log" &
    local follower=$! waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$limit" ]; then
            sleep 1   # lets the follower print the last lines first
            kill "$follower" 2>/dev/null
            report_hang "$pid"
            wait "$pid" 2>/dev/null
            return 124
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$pid"
    local status=$?
    wait "$follower" 2>/dev/null
    return "$status"
}

run_once "$@"
status=$?
if [ "$status" -eq 124 ]; then
    echo "=== running the tests once more after the hang above"
    run_once "$@"
    status=$?
    [ "$status" -eq 124 ] && echo "=== the test run hung twice"
fi
if [ -s "$summary" ]; then
    # Again at the end, where a log cut to its last lines still shows it.
    echo "=== a test run hung (see above); tests that had not finished, then stack frames in our code:"
    cat "$summary"
fi
exit "$status"
