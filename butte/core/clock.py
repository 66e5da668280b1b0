"""Injected time. Cores take `now` as an argument; shells read it from a Clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of seconds since the epoch."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time for the shells."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to, for deterministic tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now
