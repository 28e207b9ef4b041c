#!/usr/bin/env bash
# Installs redis-server (Debian/Ubuntu apt) for the Redis Streams source and its tests.
# Idempotent: does nothing when redis-server is already on PATH. It does not start the system
# service: the tests start their own server on a free loopback port, and a shop runs its own broker.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing and this is not an apt system: install Redis >= 6.2 with your package manager, then retry" >&2
    exit 1
elif [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "redis-server is missing: run 'sudo apt-get install -y redis-server' (or install Redis >= 6.2 another way), then retry" >&2
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
cleanup() { if [ "$made_policy" -eq 1 ]; then "${as_root[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
command -v redis-server >/dev/null
