#!/usr/bin/env bash
# How long a newcomer's setup takes: clones this checkout's HEAD into a temporary directory
# and times `scripts/setup.sh` (what `scripts/demo.sh` runs) and `scripts/setup.sh --test`
# (what `scripts/test.sh` runs), each in a fresh clone with a fresh .venv and no pip cache.
# Debian packages already installed stay installed (nothing system-wide is removed); the
# Mesos CLI's virtualenv goes to a temporary directory too. Prints one line per mode.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/butte-setup-time.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PIP_NO_CACHE_DIR=1
export BUTTE_AVMESOS_VENV="$WORK/avmesos-venv"
for mode in run test; do
    clone="$WORK/clone-$mode"
    git clone -q "$ROOT" "$clone"
    flag=()
    [ "$mode" = test ] && flag=(--test)
    start=$(date +%s.%N)
    bash "$clone/scripts/setup.sh" "${flag[@]}" >"$WORK/$mode.log" 2>&1 \
        || { tail -n 20 "$WORK/$mode.log" >&2; exit 1; }
    end=$(date +%s.%N)
    printf 'setup.sh %-6s %6.1f s   (load %s)\n' "${flag[*]:-}" "$(echo "$end - $start" | bc)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
done
