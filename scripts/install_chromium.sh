#!/usr/bin/env bash
# Installs Debian's chromium (apt) for the report rendering test (tests/integration/test_report_render.py),
# which opens the HTML report headless and checks the screenshot. Idempotent: does nothing when
# chromium is already on PATH. Quiet: apt's progress goes to a log unless it fails.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing and this is not an apt system: install Chromium with your package manager, then retry (the report test skips without it)" >&2
    exit 1
elif [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "chromium is missing: run 'sudo apt-get install -y chromium', then retry (the report test skips without it)" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -q \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing chromium failed (apt output above)" >&2
    exit 1
fi
command -v chromium >/dev/null
