"""Mesos duration strings (``10secs``, ``200ms``, ``1mins``) for flags and the executor env."""

from __future__ import annotations

import math
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 604800.0,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a Mesos duration string; a bare number means seconds. Raises ValueError."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _PATTERN.match(text)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (expected e.g. 10secs, 200ms, 1mins)")
        number, unit = match.groups()
        if unit and unit not in _UNITS:
            raise ValueError(f"invalid duration unit {unit!r} in {text!r}")
        seconds = float(number) * _UNITS.get(unit or "secs", 1.0)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as stout prints them (``5secs``, ``200ms``, ``15mins``)."""
    for unit, size in (("weeks", 604800), ("days", 86400), ("hrs", 3600), ("mins", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:g}secs"
    return f"{seconds * 1000:g}ms"
