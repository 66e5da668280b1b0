"""Shared kit of the fault-injection suite: a scheduler process that journals what it sees
(`SchedulerProcess`, running ``scheduler_proc.py``), the analysis of journals against what
each task should have gone through (`check_updates`), and clean-up of stray processes.

Terms used in the suite's table:

* launched: tasks the framework launched.
* lost: tasks whose last reported state is not the one the scenario must end in (or that
  never reached it in time); the tests assert there are none.
* duplicates: extra deliveries of an update the framework already had (same uuid): allowed
  (at-least-once delivery), counted.
* missing: executor/agent updates (those with a uuid) the task must have produced but the
  framework never saw; the tests assert there are none.
* order: the first deliveries of a task's uuid'd updates must follow the task lifecycle
  (STARTING, RUNNING..., KILLING, then one terminal state last).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from butte.core import task_states as ts

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "scheduler_proc.py"

# Fast timings for real processes; agent restarts are on the order of a second.
AGENT_FLAGS = (
    "--registration_backoff_factor=100ms",
    "--status_update_retry_interval_min=200ms",
    "--status_update_retry_interval_max=1secs",
    "--executor_reregistration_timeout=3secs",
    "--executor_shutdown_grace_period=1secs",
)

_RANK = {ts.STAGING: 0, ts.STARTING: 1, ts.RUNNING: 2, ts.KILLING: 3}


def resources(cpus: float = 0.1, mem: float = 32) -> list[dict[str, Any]]:
    return [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]


def command_task(task_id: str, command: str, **extra: Any) -> dict[str, Any]:
    """A TaskInfo template for the built-in command executor."""
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "resources": resources(),
        "command": {"value": command},
        **extra,
    }


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Polls ``predicate`` until truthy; its value. AssertionError naming ``what`` else."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class SchedulerProcess:
    """One run of ``scheduler_proc.py``; several (failovers) may share one journal."""

    def __init__(self, tmp_path: Path, master: str, name: str, **config: Any) -> None:
        self.tmp_path = tmp_path
        self.name = name
        self.journal = tmp_path / f"{name}.journal"
        self.config = {"master": master, "journal": str(self.journal), "name": name, **config}
        self.proc: subprocess.Popen | None = None
        self.log = tmp_path / f"{name}.log"

    def start(self, **overrides: Any) -> SchedulerProcess:
        config = {**self.config, **overrides}
        path = self.tmp_path / f"{self.name}-{int(time.monotonic() * 1000)}.json"
        path.write_text(json.dumps(config))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(path)], stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        """SIGKILL: the framework disappears without a word."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.journal.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e["event"] for e in self.entries() if e.get("event", {}).get("type") == kind]

    def statuses(self, task_id: str | None = None) -> list[dict[str, Any]]:
        out = [e["update"]["status"] for e in self.events("UPDATE")]
        return [s for s in out if task_id is None or s["task_id"]["value"] == task_id]

    def states(self, task_id: str) -> list[str]:
        return [s["state"] for s in self.statuses(task_id)]

    def framework_id(self) -> str | None:
        subscribed = self.events("SUBSCRIBED")
        return subscribed[0]["subscribed"]["framework_id"]["value"] if subscribed else None

    def wait_states(
        self, task_ids: list[str], state: str | set[str], timeout: float = 15.0
    ) -> None:
        """Waits until every task has had an update in ``state`` (one of, if a set)."""
        wanted = {state} if isinstance(state, str) else state

        def reached() -> bool:
            return all(wanted & set(self.states(t)) for t in task_ids)

        wait_until(reached, f"{sorted(wanted)} for {task_ids} in {self.name}", timeout)


@dataclass
class UpdateCheck:
    """What `check_updates` found (see the module docstring for the terms)."""

    launched: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    missing: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.lost, f"tasks lost: {self.lost}"
        assert not self.missing, f"updates missing: {self.missing}"
        assert not self.order, f"updates out of order: {self.order}"


def check_updates(
    statuses: list[dict[str, Any]],
    expected: dict[str, tuple[list[str], str]],
) -> UpdateCheck:
    """Checks the statuses a framework received (arrival order, across its processes)
    against, per task id, (the states its uuid'd updates must include, its final state)."""
    result = UpdateCheck(launched=len(expected))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for status in statuses:
        by_task.setdefault(status["task_id"]["value"], []).append(status)
    for task_id, (must_see, final) in expected.items():
        received = by_task.get(task_id, [])
        first: dict[str, str] = {}
        for status in received:
            uuid = status.get("uuid")
            if uuid is None:
                continue
            if uuid in first:
                result.duplicates += 1
            else:
                first[uuid] = status["state"]
        sequence = list(first.values())
        remaining = list(sequence)
        for state in must_see:
            if state in remaining:
                remaining.remove(state)
            else:
                result.missing.append(f"{task_id}:{state}")
        result.order += _order_problems(task_id, sequence)
        last = received[-1]["state"] if received else None
        if last != final:
            result.lost.append(f"{task_id} ended {last}, expected {final}")
    return result


def _order_problems(task_id: str, sequence: list[str]) -> list[str]:
    problems = []
    for i, state in enumerate(sequence):
        if ts.is_terminal(state) and i != len(sequence) - 1:
            problems.append(f"{task_id}: {sequence[i + 1 :]} after terminal {state}")
        if i and not ts.is_terminal(state):
            before = sequence[i - 1]
            if not ts.is_terminal(before) and _RANK.get(state, 9) < _RANK.get(before, 9):
                if not (before == ts.KILLING and state == ts.RUNNING):
                    problems.append(f"{task_id}: {state} after {before}")
    return problems


def pid_alive(pid: int) -> bool:
    """Running (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def kill_leftovers(root: Path) -> int:
    """SIGKILLs every process whose working directory lies under ``root`` (executors and
    tasks a failed test may leave behind); how many."""
    prefix = str(root.resolve()) + os.sep
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed += 1
    return killed
