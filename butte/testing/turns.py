"""Turns between test processes that share one machine: many at a time, or one alone.

The test suite runs in two pytest-xdist workers (tests/conftest.py). A test whose timeouts
are short enough that a busy neighbour could fail it takes its turn alone; every other test
takes a shared turn beside whatever else runs. Turns are `fcntl.flock` locks on a file in a
directory every worker sees; a second lock, the gate, is held by whoever waits for a turn
alone, so shared takers that come later cannot keep it waiting for ever.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Turns:
    """One process's handle on the turns kept in ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._gate = os.open(directory / "turns.gate", os.O_RDWR | os.O_CREAT, 0o600)
        self._turn = os.open(directory / "turns.lock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def held(self, alone: bool) -> Iterator[None]:
        """Waits for a turn (``alone``: with no other holder), holds it for the block."""
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._turn, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self._gate, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._gate)
        os.close(self._turn)
