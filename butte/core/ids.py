"""Identifier rules and generators in Mesos' formats (docs/protocol.md §0.2)."""

from __future__ import annotations

import uuid


def validate_id(value: object, kind: str = "id") -> str | None:
    """Returns why ``value`` is not a valid Mesos id, or None when it is fine."""
    if not isinstance(value, str):
        return f"{kind} must be a string"
    if not value:
        return f"{kind} must not be empty"
    if len(value) > 255:
        return f"{kind} is longer than 255 characters"
    if value in (".", ".."):
        return f"{kind} must not be '.' or '..'"
    if "/" in value or "\\" in value:
        return f"{kind} {value!r} must not contain '/' or '\\'"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{kind} {value!r} must not contain control characters"
    return None


class IdGenerator:
    """Makes master-scoped ids: ``<master>-0000`` frameworks, ``<master>-S<n>`` agents,
    ``<master>-O<n>`` offers, like Mesos."""

    def __init__(self, master_id: str | None = None) -> None:
        self.master_id = master_id or str(uuid.uuid4())
        self._frameworks = 0
        self._agents = 0
        self._offers = 0

    def framework(self) -> str:
        value = f"{self.master_id}-{self._frameworks:04d}"
        self._frameworks += 1
        return value

    def agent(self) -> str:
        value = f"{self.master_id}-S{self._agents}"
        self._agents += 1
        return value

    def offer(self) -> str:
        value = f"{self.master_id}-O{self._offers}"
        self._offers += 1
        return value
