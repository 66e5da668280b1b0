"""A model master and store around `ChronosCore` for the chronos unit and property tests.

`Harness` plays the shell: it keeps the saved records (what survives a crash), delivers
launches to a model master (`tasks`: task id -> state), answers reconciliation as a master
does (unknown task -> TASK_LOST with REASON_RECONCILIATION), and can "crash" the scheduler
between two steps, optionally losing the ACCEPT of the last step (its records were saved, the
call never left), then restart it from the records alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from butte.frameworks.chronos import core as c
from butte.frameworks.chronos.jobs import parse_job

RUNNING, FINISHED, FAILED, LOST = "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED", "TASK_LOST"


def job(now: float, name: str = "j", **fields: Any) -> Any:
    body = {"name": name, "command": "true", "owner": "o@example.com", **fields}
    return parse_job(body, now, dependency="parents" in fields)


def offer(now: float, n: int = 0, cpus: float = 64, mem: float = 65536, **attrs: str) -> c.Offer:
    return c.Offer(f"o{n}-{now}", f"agent{n}", f"host{n}", "*", cpus, mem, 1e6, dict(attrs), now)


@dataclass
class Harness:
    now: float
    core: c.ChronosCore = field(default_factory=c.ChronosCore)
    jobs: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)  # the master's view
    launches: list[tuple[str, float]] = field(default_factory=list)  # (task id, when)
    kinds: dict[str, str] = field(default_factory=dict)  # task id -> its run's kind
    kills: list[str] = field(default_factory=list)  # task ids the scheduler asked to kill
    pending_launches: list[c.Launch] = field(default_factory=list)
    declined: int = 0

    def __post_init__(self) -> None:
        self.core.on_subscribed(self.now)
        self.apply()

    def apply(self, lose_launches: bool = False) -> None:
        """Carries out the core's effects: records first, then the master calls."""
        self.core.check_invariants()
        effects = self.core.take_effects()
        for e in effects:
            if isinstance(e, c.SaveJob):
                self._save(self.jobs, e.name, e.record)
            elif isinstance(e, c.SaveRun):
                self._save(self.runs, e.task_id, e.record)
        for e in effects:
            if isinstance(e, c.Launch):
                if lose_launches:
                    continue
                for task in e.tasks:
                    tid = task["task_id"]["value"]
                    assert tid not in self.tasks or self.tasks[tid] in (FINISHED, FAILED), (
                        f"{tid} launched while the master still runs it"
                    )
                    self.tasks[tid] = "TASK_STAGING"
                    self.launches.append((tid, self.now))
                    self.kinds[tid] = self.core.runs[tid].kind
            elif isinstance(e, c.Decline):
                self.declined += len(e.offer_ids)
            elif isinstance(e, c.Kill):
                self.kills.append(e.task_id)
            elif isinstance(e, c.Reconcile):
                for tid, agent in e.tasks:
                    state = self.tasks.get(tid)
                    if state is None:
                        self.core.on_status(self.now, tid, LOST, agent, "REASON_RECONCILIATION")
                    else:
                        self.core.on_status(self.now, tid, state, agent, "REASON_RECONCILIATION")
                self.apply()

    @staticmethod
    def _save(table: dict[str, dict], key: str, record: dict | None) -> None:
        if record is None:
            table.pop(key, None)
        else:
            table[key] = copy.deepcopy(record)

    def put(self, spec: Any) -> None:
        self.core.put_job(spec, self.now)
        self.apply()

    def tick(self, now: float | None = None) -> None:
        if now is not None:
            self.now = now
        self.core.tick(self.now)
        self.apply()

    def offers(self, count: int = 1, **kw: Any) -> None:
        self.core.on_offers([offer(self.now, n, **kw) for n in range(count)], self.now)
        self.apply()

    def status(self, tid: str, state: str, reason: str = "") -> None:
        self.tasks[tid] = state
        self.core.on_status(self.now, tid, state, "agent0", reason)
        self.apply()

    def active_tasks(self) -> list[str]:
        return [t for t, s in self.tasks.items() if s in ("TASK_STAGING", RUNNING)]

    def crash_and_restart(self) -> None:
        """A SIGKILL of the scheduler and a fresh one from the stored records (a step
        applied with ``lose_launches`` is a kill between saving a launch and sending it)."""
        self.core = c.ChronosCore()
        self.core.load(list(self.jobs.values()), list(self.runs.values()), self.now)
        self.core.on_subscribed(self.now)
        self.apply()

    def slot_launches(self) -> dict[tuple[str, float], int]:
        """(job, due) -> how many first-attempt launches of that slot reached the master."""
        out: dict[tuple[str, float], int] = {}
        for tid, _ in self.launches:
            # Chronos' ct:<due ms>:<attempt>:<job>:<arguments>; the kind is not in it.
            _, ms, attempt, name, _args = tid.split(":", 4)
            if attempt == "0" and self.kinds[tid] == c.SLOT:
                key = (name, int(ms) / 1000)
                out[key] = out.get(key, 0) + 1
        return out
