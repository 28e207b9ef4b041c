#!/usr/bin/env bash
# Installs the system packages the tests and the stream need, with apt (Debian/Ubuntu), in one
# `apt-get update` and one `apt-get install -y`:
#   redis-server  the Redis Streams source and its tests (Redis >= 6.2 for XAUTOCLAIM)
#   chromium      the report rendering test (tests/integration/test_report_render.py)
# Idempotent: installs only what is missing from PATH. It does not start the redis-server service:
# the tests start their own server on a free loopback port, and a shop runs its own broker.
# Quiet: apt's output goes to a log that is shown only if it fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${missing[*]} and this is not an apt system: install them with your package manager" \
         "(Redis >= 6.2; without chromium the report rendering test skips), then retry" >&2
    exit 1
elif [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "missing ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}', then retry" >&2
    exit 1
fi

# policy-rc.d exit 101 keeps apt from starting the redis-server service it installs.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    made_policy=1
fi
log=$(mktemp)
cleanup() {
    rm -f "$log"
    if [ "$made_policy" -eq 1 ]; then "${as_root[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

if ! { "${as_root[@]}" apt-get update -q \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing ${missing[*]} failed (apt output above)" >&2
    exit 1
fi
echo "installed ${missing[*]}"
