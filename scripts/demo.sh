#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh), then start a local cluster (one master, two
# agents, embedded coordination: nothing else to install) and run a demo job on it.
# Extra arguments go to `butte local` (e.g. --port 5051 --agents 3). Ctrl-C stops everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec "$ROOT/.venv/bin/butte" local --agents 2 --demo "$@"
