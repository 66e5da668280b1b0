"""How long a simulated task runs: the ``--task_duration`` spec of ``butte sim``.

Forms (durations in Mesos spelling, a bare number is seconds):

* ``10secs``, ``0``, ``250ms`` -- every task runs exactly that long (``0``: it finishes as
  soon as its TASK_RUNNING is acknowledged);
* ``uniform:1-5secs`` or ``uniform:500ms-2mins`` -- uniformly random between the two bounds
  (a unit on the upper bound only applies to both);
* ``forever`` -- tasks run until they are killed.

A task whose command is ``sleep N`` (N in seconds, as the shell's ``sleep`` reads it) runs N
seconds whatever the spec says, so one framework can ask for a precise duration.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from butte.core.durations import parse_duration

_SLEEP = re.compile(r"^\s*(?:/bin/|/usr/bin/)?sleep\s+([0-9]*\.?[0-9]+)\s*;?\s*$")


@dataclass(frozen=True, slots=True)
class TaskDuration:
    """A parsed ``--task_duration`` spec; `sample` draws one task's run time."""

    low: float | None  # None = forever
    high: float | None

    @classmethod
    def parse(cls, spec: str) -> TaskDuration:
        """Parses a spec (see the module docstring); raises ValueError with the reason."""
        text = spec.strip()
        if text == "forever":
            return cls(None, None)
        if text.startswith("uniform:"):
            bounds = text[len("uniform:") :]
            low_text, sep, high_text = bounds.partition("-")
            if not sep:
                raise ValueError(f"task duration {spec!r}: expected uniform:LOW-HIGH")
            unit = re.sub(r"^[0-9.eE+]*", "", high_text.strip())
            if low_text.strip() and not re.search(r"[a-z]", low_text):
                low_text += unit
            low, high = parse_duration(low_text), parse_duration(high_text)
            if low > high:
                raise ValueError(f"task duration {spec!r}: lower bound above upper bound")
            return cls(low, high)
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise ValueError(
                f"task duration {spec!r}: {e}; use e.g. 10secs, 0, uniform:1-5secs or forever"
            ) from None
        return cls(seconds, seconds)

    def sample(self, rng: random.Random, command: str | None = None) -> float | None:
        """Seconds one task runs (None = until killed); ``sleep N`` commands run N s."""
        if command:
            match = _SLEEP.match(command)
            if match:
                return float(match.group(1))
        if self.low is None or self.high is None:
            return None
        if self.low == self.high:
            return self.low
        return rng.uniform(self.low, self.high)

    def __str__(self) -> str:
        if self.low is None:
            return "forever"
        if self.low == self.high:
            return f"{self.low:g}s"
        return f"uniform {self.low:g}-{self.high:g}s"
