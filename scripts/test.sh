#!/usr/bin/env bash
# Ensure the environment (scripts/setup.sh), then run pytest.
#   scripts/test.sh                 # whole suite (testpaths from pyproject.toml)
#   scripts/test.sh tests/unit -k x # extra args are passed to pytest
#   BUTTE_TEST_WORKERS=0 scripts/test.sh   # in this process, one test at a time
# Tests run in BUTTE_TEST_WORKERS pytest-xdist workers (default 2; see tests/conftest.py for
# the tests marked serial, which run alone).
# Exit status is pytest's; "no tests collected" (pytest rc 5) counts as failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh --test

set +e
"$ROOT/.venv/bin/python" -m pytest -q -ra -n "${BUTTE_TEST_WORKERS:-2}" --dist loadscope "$@"
rc=$?
set -e

if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests (exit 5): treating as failure" >&2
fi
exit "$rc"
