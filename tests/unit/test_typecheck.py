"""The type checker passes: mypy over the packages `[tool.mypy]` in pyproject.toml lists,
strict on butte/core and the pure cores (the master machine and allocator, the agent
machine), normal elsewhere. Run as a test so that scripts/test.sh runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from butte.testing.require import require_module

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_passes() -> None:
    require_module("mypy")
    cache = os.environ.get("MYPY_CACHE_DIR", str(ROOT / ".mypy_cache"))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", cache],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout, done.stdout
