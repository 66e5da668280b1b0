"""Mesos duration strings (``10secs``, ``200ms``, ``1mins``) for flags and the executor env.

Imports nothing but ``math`` so the per-task executor process can use it without paying for
``re`` at start-up."""

from __future__ import annotations

import math

UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 604800.0,
}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a Mesos duration string; a bare number means seconds. Raises ValueError."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        stripped = text.strip()
        end = len(stripped)
        while end and stripped[end - 1].isalpha():
            end -= 1
        number, unit = stripped[:end].strip(), stripped[end:] or "secs"
        if unit not in UNITS:
            raise ValueError(f"invalid duration unit {unit!r} in {text!r}")
        try:
            seconds = float(number) * UNITS[unit]
        except ValueError:
            raise ValueError(
                f"invalid duration {text!r} (expected e.g. 10secs, 200ms, 1mins)"
            ) from None
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
