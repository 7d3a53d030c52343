#!/bin/sh
# Checks deploy/sinkhole.service with `systemd-analyze verify`.
#
# Usage: deploy/verify.sh            (from anywhere; needs no root, no running systemd)
#
# The unit is copied to a temporary directory. When /usr/local/bin/sinkhole is not installed,
# the copy's ExecStart points at a stub executable instead, because `systemd-analyze verify`
# refuses a unit whose command does not exist. Any message about the unit counts as a
# failure, warnings included (systemd-analyze itself exits 0 on "Unknown key name" and the like).
#
# Exit status: 0 the unit is valid; 1 it is not; 77 systemd-analyze is not installed
# (apt-get install systemd).
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
unit="$here/sinkhole.service"
binary=/usr/local/bin/sinkhole

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify.sh: systemd-analyze not found (apt-get install systemd)" >&2
    exit 77
fi
[ -r "$unit" ] || { echo "verify.sh: cannot read $unit" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sinkhole-verify.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

if [ -x "$binary" ]; then
    cp "$unit" "$tmp/sinkhole.service"
else
    printf '#!/bin/sh\nexit 0\n' >"$tmp/sinkhole-stub"
    chmod 0755 "$tmp/sinkhole-stub"
    sed "s|$binary|$tmp/sinkhole-stub|g" "$unit" >"$tmp/sinkhole.service"
fi

# --man=no: the unit has no Documentation= man pages to look up. timeout keeps a test bounded.
status=0
if command -v timeout >/dev/null 2>&1; then
    timeout 60 systemd-analyze verify --man=no "$tmp/sinkhole.service" >"$tmp/out" 2>&1 || status=$?
else
    systemd-analyze verify --man=no "$tmp/sinkhole.service" >"$tmp/out" 2>&1 || status=$?
fi

# Only lines about this unit matter; other units on the machine may have their own warnings.
problems=$(grep -E 'sinkhole(\.service|-stub)' "$tmp/out" || true)
if [ "$status" -ne 0 ] || [ -n "$problems" ]; then
    echo "verify.sh: systemd-analyze verify failed (exit $status) for $unit:" >&2
    sed -e "s|$tmp/sinkhole-stub|$binary|g" -e "s|$tmp/sinkhole.service|$unit|g" "$tmp/out" >&2
    exit 1
fi
echo "verify.sh: $unit OK ($(systemd-analyze --version | head -n 1))"
