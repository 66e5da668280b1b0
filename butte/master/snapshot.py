"""Read-only state documents served without stalling the master's event loop.

The master is one event loop; building ``/master/state`` for 10k agents and 100k tasks from
the records took over a second, during which no offer, update or acknowledgement moved, and
a web UI polls it every few seconds. Two things keep it cheap here:

* **Per-task JSON fragments.** A task's JSON changes only when its state or statuses do, so
  each task's encoded form is kept (as `msgspec.Raw`) and reused while ``(state, number of
  statuses, latest status)`` is unchanged; a build encodes only what changed since the last
  one and copies the rest. Fragments of tasks no longer shown are dropped at each build.
* **A bounded rebuild rate for big documents.** A document that took more than
  `CHEAP_BUILD` seconds to build is reused for up to `STALENESS_FACTOR` times its build time
  (at most `MAX_STALENESS` seconds), so back-to-back polling spends at most about
  1/(1+factor) of the loop on it. Small documents (every test cluster) are rebuilt on every
  request, so they are always fresh. The operator API's GET_STATE reuses the task fragments
  but is always rebuilt.
* **No cyclic GC during a build** (`no_gc`).

Pure apart from `time.perf_counter` for measuring builds (no I/O); the shell owns one
`StateSnapshots` per master and serves the bytes it returns.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from butte.core.codec import encode_json
from butte.master import operator_views, state_json, views
from butte.master.machine import MasterMachine
from butte.master.state import Task

CHEAP_BUILD = 0.05
STALENESS_FACTOR = 4.0
MAX_STALENESS = 5.0


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a document is built. A build makes
    hundreds of thousands of short-lived dicts (freed by reference counting as soon as it is
    encoded); with the collector on, they trigger full collections that walk every record of
    a big master (1.5M objects at 100k tasks), which more than doubled the build time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
            entry = (task, version, msgspec.Raw(encode_json(self._render(task))))
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
        self._v1_tasks = TaskFragments(views.task_json)
        self._state: bytes | None = None
        self._built_at = 0.0
        self.build_seconds = 0.0
        self.builds = 0

    def master_state(
        self,
        machine: MasterMachine,
        flags: dict[str, str],
        version: str,
        elected_time: float | None,
    ) -> bytes:
        """The encoded ``/master/state`` document (possibly reused, see the docstring)."""
        now = time.perf_counter()
        if (
            self._state is not None
            and self.build_seconds > self.cheap_build
            and now - self._built_at
            < min(self.staleness_factor * self.build_seconds, MAX_STALENESS)
        ):
            return self._state
        with no_gc():
            doc = state_json.master_state(machine, flags, version, elected_time, self._legacy_tasks)
            data = encode_json(doc)
            del doc
        self._legacy_tasks.finish_build()
        done = time.perf_counter()
        self._state, self._built_at, self.build_seconds = data, done, done - now
        self.builds += 1
        return data

    def get_tasks(self, machine: MasterMachine) -> dict[str, list[Any]]:
        """The operator API's ``GetTasks`` with each task's JSON reused while unchanged (the
        bulk of GET_STATE and of an operator SUBSCRIBE's first event)."""
        out: dict[str, list[Any]] = {"tasks": [], "unreachable_tasks": [], "completed_tasks": []}
        with no_gc():
            for kind, task in operator_views.all_tasks(machine):
                out.setdefault(kind, []).append(self._v1_tasks(task))
        self._v1_tasks.finish_build()
        return out

    def get_state(self, machine: MasterMachine) -> dict[str, Any]:
        """The operator API's ``GetState`` (tasks, executors, frameworks, agents)."""
        with no_gc():
            return {
                "get_tasks": self.get_tasks(machine),
                "get_executors": operator_views.get_executors(machine),
                "get_frameworks": operator_views.get_frameworks(machine),
                "get_agents": operator_views.get_agents(machine),
            }

    def statistics(self) -> dict[str, float]:
        """Build count, last build time and fragment reuse, for metrics and benchmarks."""
        return {
            "state_builds": float(self.builds),
            "state_build_seconds": self.build_seconds,
            "task_fragment_hits": float(self._legacy_tasks.hits + self._v1_tasks.hits),
            "task_fragment_misses": float(self._legacy_tasks.misses + self._v1_tasks.misses),
        }
