"""Benchmark frameworks: asyncio schedulers built on `butte.client.scheduler.SchedulerClient`.

`LaunchingFramework` keeps launching small tasks for as long as it runs, like a batch
framework with an endless queue: it holds the offers it gets, launches up to
``tasks_per_offer`` tasks on an offer whenever fewer than ``max_inflight`` of its tasks are
between ACCEPT and TASK_RUNNING (the rest of the offer goes back with ``refuse_seconds``),
acknowledges every update that carries a uuid, and records for each task the time from just
before its ACCEPT was sent to its TASK_RUNNING event arriving.

With ``full_batches`` it launches only whole batches of ``tasks_per_offer`` (fewer only when
an offer fits fewer, or when fewer are left to launch): it waits until that many slots are
free rather than spending a whole offer on the one task a TASK_RUNNING made room for. Without
it, a framework that keeps its in-flight budget full launches one task per offer in steady
state, and then launches no faster than offers arrive (one allocation interval apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import ROOT  # noqa: F401 - puts the repository on sys.path

from butte.client.scheduler import SchedulerClient


@dataclass
class TaskShape:
    """Resources and command of the tasks a framework launches."""

    cpus: float = 0.1
    mem: float = 32.0
    command: str = "true"

    def resources(self) -> list[dict[str, Any]]:
        return [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": self.cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": self.mem}},
        ]


def offer_scalars(offer: dict[str, Any]) -> dict[str, float]:
    """Scalar totals of an offer (``cpus``, ``mem`` ...)."""
    out: dict[str, float] = {}
    for r in offer.get("resources", ()):
        if r.get("type") == "SCALAR":
            out[r["name"]] = out.get(r["name"], 0.0) + r["scalar"]["value"]
    return out


@dataclass
class LaunchStats:
    """What one framework saw."""

    launched: int = 0
    running: int = 0
    finished: int = 0
    errors: int = 0
    offers: int = 0
    # (time TASK_RUNNING arrived, seconds since the ACCEPT was sent)
    latencies: list[tuple[float, float]] = field(default_factory=list)
    first_offer_at: float | None = None


class LaunchingFramework:
    """See the module docstring."""

    def __init__(
        self,
        master: str,
        name: str,
        shape: TaskShape | None = None,
        tasks_per_offer: int = 4,
        max_inflight: int = 200,
        max_tasks: int | None = None,
        refuse_seconds: float = 0.0,
        role: str = "*",
        on_update: Callable[[dict[str, Any]], None] | None = None,
        until_terminal: bool = False,
        hold_offers: bool = True,
        full_batches: bool = False,
        credential: tuple[str, str] | None = None,
        checkpoint: bool = True,
    ) -> None:
        self.client = SchedulerClient(
            master,
            {"name": name, "role": role, "checkpoint": checkpoint, "failover_timeout": 0.0},
            call_timeout=60.0,
            principal=credential[0] if credential else None,
            secret=credential[1] if credential else None,
        )
        self.name = name
        self.shape = shape or TaskShape()
        # One resource list shared by every TaskInfo (only ever encoded, never changed).
        self._resources = self.shape.resources()
        self.tasks_per_offer = tasks_per_offer
        self.max_inflight = max_inflight
        self.max_tasks = max_tasks
        self.refuse_seconds = refuse_seconds
        self.on_update = on_update
        # In flight until TASK_RUNNING (default) or until a terminal update.
        self.until_terminal = until_terminal
        self.done = asyncio.Event()
        # Keep offers it cannot use yet (True), or decline them at once (a polite framework).
        self.hold_offers = hold_offers
        self.full_batches = full_batches
        self.stats = LaunchStats()
        self.launching = True
        self._held: deque[dict[str, Any]] = deque()
        self._sent_at: dict[str, float] = {}
        self._inflight = 0
        self._counter = 0
        self._calls: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        """Subscribes and handles events until cancelled (or the stream ends)."""
        await self.client.subscribe()
        try:
            async for event in self.client:
                kind = event["type"]
                if kind == "OFFERS":
                    self._on_offers(event["offers"]["offers"])
                elif kind == "UPDATE":
                    self._on_update(event["update"]["status"])
        finally:
            await self.close()

    async def close(self) -> None:
        for call in list(self._calls):
            call.cancel()
        with contextlib.suppress(Exception):
            await self.client.close()

    def stop_launching(self) -> None:
        """Launches nothing more and declines what it holds."""
        self.launching = False
        held, self._held = list(self._held), deque()
        if held:
            self._call(self.client.decline(held, refuse_seconds=self.refuse_seconds))

    def _call(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._calls.add(task)
        task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task[Any]) -> None:
        self._calls.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.errors += 1

    def _on_offers(self, offers: list[dict[str, Any]]) -> None:
        if self.stats.first_offer_at is None:
            self.stats.first_offer_at = time.monotonic()
        self.stats.offers += len(offers)
        if not self.launching:
            self._call(self.client.decline(offers, refuse_seconds=self.refuse_seconds))
            return
        self._held.extend(offers)
        self._pump()
        if not self.hold_offers and self._held:
            held, self._held = list(self._held), deque()
            self._call(self.client.decline(held, refuse_seconds=self.refuse_seconds))

    def _room(self) -> int:
        room = self.max_inflight - self._inflight
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - self.stats.launched)
        return room

    def _pump(self) -> None:
        """Launches on held offers while the in-flight budget allows."""
        while self._held and self.launching and self._room() >= self._smallest_batch():
            offer = self._held.popleft()
            have = offer_scalars(offer)
            fits = int(
                min(
                    have.get("cpus", 0.0) / self.shape.cpus if self.shape.cpus else 1e9,
                    have.get("mem", 0.0) / self.shape.mem if self.shape.mem else 1e9,
                )
                + 1e-9
            )
            count = min(self.tasks_per_offer, fits, self._room())
            tasks = [self._task(offer) for _ in range(max(count, 0))]
            self._call(self.client.launch(offer, tasks, refuse_seconds=self.refuse_seconds))

    def _smallest_batch(self) -> int:
        """The fewest free slots worth spending an offer on."""
        if not self.full_batches:
            return 1
        batch = min(self.tasks_per_offer, self.max_inflight)
        if self.max_tasks is not None:
            batch = min(batch, self.max_tasks - self.stats.launched)
        return max(batch, 1)

    def _task(self, offer: dict[str, Any]) -> dict[str, Any]:
        self._counter += 1
        tid = f"{self.name}-{self._counter}"
        self._sent_at[tid] = time.monotonic()
        self._inflight += 1
        self.stats.launched += 1
        return {
            "name": tid,
            "task_id": {"value": tid},
            "agent_id": offer["agent_id"],
            "resources": self._resources,
            "command": {"value": self.shape.command},
        }

    def _on_update(self, status: dict[str, Any]) -> None:
        if status.get("uuid") and "agent_id" in status:
            self._call(self.client.acknowledge_status(status))
        if self.on_update is not None:
            self.on_update(status)
        state = status["state"]
        tid = status["task_id"]["value"]
        if state == "TASK_STARTING":
            return
        now = time.monotonic()
        if state == "TASK_RUNNING":
            sent = self._sent_at.get(tid)
            if sent is not None:
                self.stats.running += 1
                self.stats.latencies.append((now, now - sent))
            if self.until_terminal:
                return
        elif state == "TASK_FINISHED":
            self.stats.finished += 1
        elif state != "TASK_KILLED":
            self.stats.errors += 1
        if self._sent_at.pop(tid, None) is not None:
            self._inflight -= 1
            if self.max_tasks is not None and self.stats.launched >= self.max_tasks:
                if self._inflight == 0:
                    self.done.set()
            self._pump()


async def finish_rate(fw: LaunchingFramework, timeout: float) -> float:
    """Runs ``fw`` until its tasks are done (``until_terminal``) and returns the tasks it
    finished per second, from the first launch to now."""
    runner = asyncio.create_task(fw.run())
    try:
        await asyncio.wait_for(fw.done.wait(), timeout)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    first = min((t - lat for t, lat in fw.stats.latencies), default=time.monotonic())
    return fw.stats.finished / (time.monotonic() - first)
