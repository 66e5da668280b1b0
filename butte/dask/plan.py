"""Which Dask workers a `ButteCluster` runs: the pure part of the cluster manager.

`WorkerPlan` holds the workers' life cycle as butte tasks, by name (a worker's name is its
task id and its ``dask worker --name``):

* ``pending``: wanted, waiting for an offer that fits `WorkerShape`;
* ``live``: launched and not ended (``running`` once the agent said TASK_RUNNING);
* ``stopping``: asked to stop (scale down, close), waiting for its last update.

`scale` and `scale_down` change the wanted number and answer with the `Stop` effects to
carry out; `place` answers an offer with the `Launch`es it holds; `update` follows task
states: a worker that ends on its own with anything but TASK_FINISHED (its agent was lost,
it crashed, it was killed from outside) is replaced by a new pending one, so the cluster keeps
its size. A worker that exits cleanly was told to by the Dask scheduler (retirement) and is
not replaced. Workers failing before they ever ran are counted: after ``max_failures`` in a
row the plan gives up replacing (a broken worker command would otherwise loop forever).

`restart` stops every launched worker and wants as many new ones, for a replaced scheduler.

`place_scheduler` places the Dask scheduler itself as a task (``scheduler_on_agent``): it
takes its port, and its dashboard's, from the offer, as workers do (a replacement keeps the
ports of the scheduler it replaces where its agent offers them again). `shortfall` says what an
offer lacks for a task of a `WorkerShape`, for the notes of a cluster that waits.
Nothing here does I/O; `butte.dask.cluster` carries the effects out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from butte.core import task_states
from butte.frameworks.offers import OfferView, take_ports


@dataclass(frozen=True)
class WorkerShape:
    """What one worker task takes from an offer: cpus, memory (MiB) and how many ports."""

    cpus: float
    mem: float
    ports: int


@dataclass(frozen=True)
class Launch:
    """Launch worker ``name`` on the offer's agent with these ports."""

    name: str
    agent_id: str
    hostname: str
    ports: tuple[int, ...]


@dataclass(frozen=True)
class SchedulerLaunch:
    """Launch the Dask scheduler on the offer's agent: it listens on ``port``, its dashboard
    (None: no dashboard) on ``dashboard_port``, both taken from the offer."""

    agent_id: str
    hostname: str
    port: int
    dashboard_port: int | None

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the scheduler task takes from its offer."""
        return (self.port,) if self.dashboard_port is None else (self.port, self.dashboard_port)

    @property
    def address(self) -> str:
        """The address the scheduler listens on, as Dask writes it."""
        return f"tcp://{self.hostname}:{self.port}"


def shortfall(offer: OfferView, shape: WorkerShape) -> str | None:
    """What ``offer`` lacks for one task of ``shape`` (None: it holds one)."""
    lacks = []
    if offer.cpus + 1e-9 < shape.cpus:
        lacks.append(f"{offer.cpus:g} of {shape.cpus:g} cpus")
    if offer.mem + 1e-9 < shape.mem:
        lacks.append(f"{offer.mem:g} of {shape.mem:g} MiB mem")
    if offer.port_count() < shape.ports:
        lacks.append(f"{offer.port_count()} of {shape.ports} ports")
    return ", ".join(lacks) or None


def place_scheduler(
    offer: OfferView, shape: WorkerShape, prefer: SchedulerLaunch | None = None
) -> SchedulerLaunch | None:
    """The scheduler task on this offer, if it holds ``shape`` (``shape.ports``: 2 with a
    dashboard, 1 without): its ports are the offer's lowest, or those of ``prefer`` (the
    scheduler it replaces) where the offer is of that one's agent and holds them all, so
    that the replacement keeps its address; None when it does not fit."""
    if shape.ports not in (1, 2):
        raise ValueError(f"the scheduler takes 1 or 2 ports, not {shape.ports}")
    if shortfall(offer, shape) is not None:
        return None
    if (
        prefer is not None
        and prefer.agent_id == offer.agent_id
        and len(prefer.ports) == shape.ports
        and all(any(b <= p <= e for b, e in offer.ports) for p in prefer.ports)
    ):
        return SchedulerLaunch(offer.agent_id, offer.hostname, prefer.port, prefer.dashboard_port)
    taken, _ = take_ports(offer.ports, shape.ports)
    dashboard = taken[1] if shape.ports == 2 else None
    return SchedulerLaunch(offer.agent_id, offer.hostname, taken[0], dashboard)


@dataclass(frozen=True)
class Stop:
    """Stop worker ``name``: retire it at the Dask scheduler first when ``retire`` (it is
    connected and may hold data), then kill its task (``agent_id`` None: never launched)."""

    name: str
    agent_id: str | None
    retire: bool


@dataclass
class WorkerPlan:
    """The workers of one cluster; see the module docstring."""

    prefix: str
    shape: WorkerShape
    max_failures: int = 3
    pending: list[str] = field(default_factory=list)
    live: dict[str, str] = field(default_factory=dict)  # name -> agent id
    running: set[str] = field(default_factory=set)
    stopping: dict[str, str] = field(default_factory=dict)  # name -> agent id
    failures: int = 0
    gave_up: bool = False
    closed: bool = False
    replaced: int = 0
    restarted: int = 0  # workers stopped and started again for a new scheduler (`restart`)
    _counter: itertools.count = field(default_factory=itertools.count)

    # -- what the cluster looks like -------------------------------------------------------

    def planned(self) -> list[str]:
        """Every worker that should exist: launched ones first, then the pending."""
        return [*self.live, *self.pending]

    def wants_offers(self) -> bool:
        return bool(self.pending) and not self.closed and not self.gave_up

    def done(self) -> bool:
        """Nothing launched is left (after `close`: every task has ended)."""
        return not self.live and not self.stopping

    # -- decisions -------------------------------------------------------------------------

    def scale(self, n: int, connected: Iterable[str] = ()) -> list[Stop]:
        """Wants ``n`` workers. Growing adds pending workers; shrinking drops pending ones
        first, then launched ones that have not connected yet, then the newest connected."""
        if n < 0:
            raise ValueError(f"cannot scale to {n} workers")
        if self.closed:
            return []
        if n > len(self.pending) + len(self.live):
            self.gave_up = False  # an explicit request to grow tries again
            self.failures = 0
            while len(self.pending) + len(self.live) < n:
                self.pending.append(self._new_name())
            return []
        excess = len(self.pending) + len(self.live) - n
        dropped = min(excess, len(self.pending))
        del self.pending[len(self.pending) - dropped :]
        excess -= dropped
        connected = set(connected)
        launched = list(self.live)
        order = [w for w in launched if w not in connected] + [
            w for w in reversed(launched) if w in connected
        ]
        return self.scale_down(order[:excess], connected)

    def scale_down(self, names: Iterable[str], connected: Iterable[str] = ()) -> list[Stop]:
        """Stops these workers (unknown names are ignored: Dask may name workers that are
        already gone)."""
        connected = set(connected)
        stops = []
        for name in names:
            if name in self.pending:
                self.pending.remove(name)
            elif name in self.live:
                agent = self.live.pop(name)
                self.running.discard(name)
                self.stopping[name] = agent
                stops.append(Stop(name, agent, retire=name in connected))
        return stops

    def place(self, offer: OfferView) -> list[Launch]:
        """The pending workers this offer holds, as launches (they become live)."""
        if not self.wants_offers():
            return []
        cpus, mem, ports = offer.cpus, offer.mem, list(offer.ports)
        launches = []
        shape = self.shape
        while self.pending and cpus + 1e-9 >= shape.cpus and mem + 1e-9 >= shape.mem:
            try:
                taken, ports = take_ports(ports, shape.ports)
            except ValueError:
                break
            name = self.pending.pop(0)
            cpus -= shape.cpus
            mem -= shape.mem
            self.live[name] = offer.agent_id
            launches.append(Launch(name, offer.agent_id, offer.hostname, tuple(taken)))
        return launches

    def update(self, name: str, state: str) -> list[Stop]:
        """Follows a task state; returns a `Stop` for a task this plan does not want (one
        that comes back after it was given up as lost, or started after `close`)."""
        terminal = task_states.is_terminal(state)
        if name in self.stopping:
            if terminal:
                del self.stopping[name]
            return []
        if name not in self.live:
            return [] if terminal else [Stop(name, None, retire=False)]
        if not terminal:
            if state == task_states.RUNNING:
                self.running.add(name)
                self.failures = 0
            return []
        del self.live[name]
        ran = name in self.running
        self.running.discard(name)
        if state == task_states.FINISHED or self.closed:
            return []
        if not ran:
            self.failures += 1
            if self.failures >= self.max_failures:
                self.gave_up = True
        if not self.gave_up:
            self.pending.append(self._new_name())
            self.replaced += 1
        return []

    def launch_failed(self, names: Iterable[str]) -> None:
        """The master refused these launches: they count as failures before running."""
        for name in names:
            self.update(name, task_states.ERROR)

    def restart(self) -> list[Stop]:
        """The Dask scheduler was replaced: every launched worker is stopped (the old
        scheduler's address is on its command line) and a new pending worker takes each one's
        place, to be launched against the new scheduler. Pending workers stay pending."""
        if self.closed:
            return []
        stops = self.scale_down(list(self.live))
        self.pending[:0] = [self._new_name() for _ in stops]
        self.restarted += len(stops)
        return stops

    def close(self) -> list[Stop]:
        """Wants nothing any more: every launched worker is stopped, nothing is replaced."""
        self.pending.clear()
        stops = self.scale_down(list(self.live))
        self.closed = True
        return stops

    def _new_name(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"
