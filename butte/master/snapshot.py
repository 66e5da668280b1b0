"""Read-only state documents served without stalling the master's event loop.

The master is one event loop; building ``/master/state`` for 10k agents and 100k tasks from
the records took over a second, during which no offer, update or acknowledgement moved, and
a web UI polls it every few seconds. Two things keep it cheap here:

* **Per-task JSON fragments.** A task's JSON changes only when its state or statuses do, so
  each task's encoded form is kept (as `msgspec.Raw`) and reused while ``(state, number of
  statuses, latest status)`` is unchanged; a build encodes only what changed since the last
  one and copies the rest. Fragments of tasks no longer shown are dropped at each build.
* **A bounded rebuild rate for big documents.** A document that took more than
  `CHEAP_BUILD` seconds to build is reused for up to `STALENESS_FACTOR` times its build time,
  so back-to-back polling spends at most about 1/(1+factor) of the loop on it. Small
  documents (every test cluster) are rebuilt on every request, so they are always fresh.

Pure apart from `time.perf_counter` for measuring builds (no I/O); the shell owns one
`StateSnapshots` per master and serves the bytes it returns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import msgspec

from butte.master import state_json
from butte.master.machine import MasterMachine
from butte.master.state import Task

CHEAP_BUILD = 0.05
STALENESS_FACTOR = 4.0

_encoder = msgspec.json.Encoder()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def encode_ascii(obj: Any) -> bytes:
    """Compact ASCII-only JSON (PROTOCOL.md 0.3), also for documents holding `msgspec.Raw`
    fragments: non-ASCII characters can only sit inside strings, so escaping them in the
    encoded text keeps it valid."""
    data = _encoder.encode(obj)
    if data.isascii():
        return data
    return _NON_ASCII.sub(_escape, data.decode("utf-8")).encode("ascii")


class TaskFragments:
    """Encoded JSON of tasks, reused while a task is unchanged (see the module docstring)."""

    def __init__(self, render: Callable[[Task], dict[str, Any]]) -> None:
        self._render = render
        # id(task) -> (task, version, fragment). The task is held so its id is not reused
        # while the entry lives; entries not used by a build are dropped after it.
        self._cache: dict[int, tuple[Task, tuple[Any, ...], msgspec.Raw]] = {}
        self._used: dict[int, tuple[Task, tuple[Any, ...], msgspec.Raw]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, task: Task) -> msgspec.Raw:
        key = id(task)
        statuses = task.statuses
        version = (task.state, len(statuses), statuses[-1] if statuses else None)
        entry = self._cache.get(key)
        if (
            entry is not None
            and entry[0] is task
            and entry[1][0] == version[0]
            and entry[1][1] == version[1]
            and entry[1][2] is version[2]
        ):
            self.hits += 1
        else:
            self.misses += 1
            entry = (task, version, msgspec.Raw(encode_ascii(self._render(task))))
        self._used[key] = entry
        return entry[2]

    def finish_build(self) -> None:
        """Keeps only the fragments the last build used."""
        self._cache, self._used = self._used, {}


class StateSnapshots:
    """The ``/master/state`` bytes of one master, built as the module docstring says."""

    def __init__(
        self, cheap_build: float = CHEAP_BUILD, staleness_factor: float = STALENESS_FACTOR
    ) -> None:
        self.cheap_build = cheap_build
        self.staleness_factor = staleness_factor
        self._legacy_tasks = TaskFragments(state_json.legacy_task)
        self._state: bytes | None = None
        self._built_at = 0.0
        self.build_seconds = 0.0
        self.builds = 0

    def master_state(
        self, machine: MasterMachine, flags: dict[str, str], version: str, elected_time: float
    ) -> bytes:
        """The encoded ``/master/state`` document (possibly reused, see the docstring)."""
        now = time.perf_counter()
        if (
            self._state is not None
            and self.build_seconds > self.cheap_build
            and now - self._built_at < self.staleness_factor * self.build_seconds
        ):
            return self._state
        doc = state_json.master_state(machine, flags, version, elected_time, self._legacy_tasks)
        data = encode_ascii(doc)
        self._legacy_tasks.finish_build()
        done = time.perf_counter()
        self._state, self._built_at, self.build_seconds = data, done, done - now
        self.builds += 1
        return data

    def statistics(self) -> dict[str, float]:
        """Build count, last build time and fragment reuse, for metrics and benchmarks."""
        return {
            "state_builds": float(self.builds),
            "state_build_seconds": self.build_seconds,
            "task_fragment_hits": float(self._legacy_tasks.hits),
            "task_fragment_misses": float(self._legacy_tasks.misses),
        }
