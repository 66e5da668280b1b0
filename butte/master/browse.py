"""Pages of agents and frameworks, and the roles, for the web UI, from a snapshot of the master.

``/master/state-summary`` lists every agent and framework in one document (at 10,000
agents the UI's agents page took 1.5 s to show its first rows from it). The UI asks for
one page instead (``/master/ui/agents?offset=&limit=&q=&sort=&order=``): the master keeps a
`Listing` of compact rows, one per agent or framework, built in one pass over the tasks
(CPU per build at 10k agents and 100k tasks: agents 0.2 s, frameworks 0.05 s), filters,
sorts and slices it, and sends only the page (the task list: `butte.master.task_listing`).
Like ``/master/state`` (`butte.master.snapshot`), a listing whose build took more than
`CHEAP_BUILD` seconds is reused for up to `STALENESS_FACTOR` times its build time, so a UI
that refreshes back to back cannot stall allocation; small clusters are always fresh.

Pure (no I/O) apart from `time.perf_counter` for measuring builds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

from butte.core import task_states
from butte.core.resources import Resources, from_millis
from butte.master import operator_views
from butte.master.machine import MasterMachine
from butte.master.quota import role_quota_json
from butte.master.snapshot import MAX_STALENESS, STALENESS_FACTOR, no_gc
from butte.master.state import Agent, Framework, Task
from butte.master.state_json import legacy_map

CHEAP_BUILD = 0.02
MAX_LIMIT = 1000
SCALARS = ("cpus", "mem", "disk", "gpus")
ACTIVE_STATES = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")

Row = dict[str, Any]
T = TypeVar("T")


class QueryError(ValueError):
    """A query parameter the listing cannot use (the text of the 400)."""


@dataclass(frozen=True, slots=True)
class PageQuery:
    """What one request asks of a listing."""

    offset: int = 0
    limit: int = 50
    q: str = ""
    sort: str = ""
    descending: bool = False
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, query: Mapping[str, str], ids: Iterable[str] = ()) -> PageQuery:
        """From URL query parameters; raises `QueryError` on a bad one."""
        try:
            offset = int(query.get("offset", "0"))
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise QueryError("'offset' and 'limit' must be integers") from None
        if offset < 0 or not 0 <= limit <= MAX_LIMIT:
            raise QueryError(f"'offset' must be >= 0 and 'limit' between 0 and {MAX_LIMIT}")
        order = query.get("order", "asc")
        if order not in ("asc", "des"):
            raise QueryError(f"'order' must be 'asc' or 'des', got '{order[:20]}'")
        return cls(
            offset=offset,
            limit=limit,
            q=query.get("q", "").strip().lower()[:200],
            sort=query.get("sort", ""),
            descending=order == "des",
            ids=tuple(ids)[:MAX_LIMIT],
        )


# -- rows -------------------------------------------------------------------------------------


_ZEROS: dict[str, float] = dict.fromkeys(SCALARS, 0.0)  # shared by rows, never changed


def _scalars(counts: Mapping[Resources, int]) -> dict[str, float]:
    """The scalar totals of resources counted by shape (tasks of one shape share one)."""
    if not counts:
        return _ZEROS
    millis: dict[str, int] = {}
    for res, n in counts.items():
        for name, amount in res.quantities().items():
            millis[name] = millis.get(name, 0) + amount * n
    out = dict.fromkeys(SCALARS, 0.0)
    out.update((name, from_millis(amount)) for name, amount in millis.items())
    return out


@dataclass(slots=True)
class _Tally:
    """Per agent or framework: tasks by state, resources held by live tasks (by shape)."""

    states: dict[str, int] = field(default_factory=dict)
    held: dict[Resources, int] = field(default_factory=dict)

    def add(self, task: Task, live: bool) -> None:
        self.states[task.state] = self.states.get(task.state, 0) + 1
        if live:
            self.held[task.resources] = self.held.get(task.resources, 0) + 1

    def add_held(self, res: Resources) -> None:
        self.held[res] = self.held.get(res, 0) + 1


def _tallies(machine: MasterMachine, by: Callable[[Any], str]) -> dict[str, _Tally]:
    """One pass over every task and executor: tallies by ``by(task or executor)``."""
    out: dict[str, _Tally] = {}
    is_terminal = task_states.is_terminal
    for fw in [*machine.frameworks.values(), *machine.completed_frameworks]:
        for tasks, live_possible in ((fw.tasks.values(), True), (fw.completed_tasks, False)):
            for task in tasks:
                key = by(task)
                tally = out.get(key)
                if tally is None:
                    tally = out[key] = _Tally()
                tally.add(task, live_possible and not is_terminal(task.state))
    for agent in machine.agents.values():
        for executor in agent.executors.values():
            out.setdefault(by(executor), _Tally()).add_held(executor.resources)
    return out


def agent_rows_by_id(machine: MasterMachine, ids: Iterable[str]) -> list[Row]:
    """Rows of the given agents without building the listing (its tallies need every task):
    their tasks are found through the agents' own records, which hold the tasks the master
    has not yet moved to the completed ones."""
    rows = []
    for agent_id in ids:
        agent = machine.agents.get(agent_id)
        if agent is None:
            continue
        tally = _Tally()
        for fid, tid in agent.tasks:
            fw = machine.frameworks.get(fid)
            task = fw.tasks.get(tid) if fw is not None else None
            if task is not None:
                tally.add(task, not task_states.is_terminal(task.state))
        for executor in agent.executors.values():
            tally.add_held(executor.resources)
        rows.append(agent_row(machine, agent, tally))
    return rows


def framework_rows_by_id(machine: MasterMachine, ids: Iterable[str], done: bool) -> list[Row]:
    """Rows of the given frameworks (live, or completed with ``done``), without the listing."""
    wanted = set(ids)
    pool = machine.completed_frameworks if done else machine.frameworks.values()
    rows = []
    for fw in pool:
        if fw.framework_id not in wanted:
            continue
        tally = _Tally()
        for task in fw.tasks.values():
            tally.add(task, not task_states.is_terminal(task.state))
        for task in fw.completed_tasks:
            tally.add(task, False)
        for agent in machine.agents.values():
            for executor in agent.executors.values():
                if executor.framework_id == fw.framework_id:
                    tally.add_held(executor.resources)
        rows.append(framework_row(machine, fw, tally, done))
    return rows


def _offered(machine: MasterMachine, offer_ids: Iterable[str]) -> dict[str, float]:
    counts: dict[Resources, int] = {}
    for offer_id in offer_ids:
        offer = machine.offers.get(offer_id)
        if offer is not None:
            counts[offer.resources] = counts.get(offer.resources, 0) + 1
    return _scalars(counts)


class _Shared:
    """Maps of one build shared by rows with equal inputs: agents of one shape have equal
    totals, and agents running the same tasks hold equal amounts (10k agents, a handful of
    shapes). The rows are only encoded, never changed, so sharing is safe."""

    def __init__(self) -> None:
        self._totals: dict[int, tuple[Resources, dict[str, Any]]] = {}
        self._held: dict[tuple[tuple[int, int], ...], dict[str, float]] = {}

    def total(self, res: Resources) -> dict[str, Any]:
        entry = self._totals.get(id(res))
        if entry is None:
            scalars = {k: v for k, v in legacy_map(res).items() if k in SCALARS}
            entry = self._totals[id(res)] = (res, scalars)  # res kept: its id stays unique
        return entry[1]

    def held(self, counts: dict[Resources, int]) -> dict[str, float]:
        key = tuple((id(res), n) for res, n in counts.items())
        out = self._held.get(key)
        if out is None:
            out = self._held[key] = _scalars(counts)
        return out


def agent_row(
    machine: MasterMachine, agent: Agent, tally: _Tally | None, shared: _Shared | None = None
) -> Row:
    """One agent in the shape of ``/master/state-summary``'s (scalars only)."""
    tally = tally or _Tally()
    shared = shared or _Shared()
    row: Row = {
        "id": agent.agent_id,
        "hostname": agent.hostname,
        "port": agent.port,
        "active": agent.active,
        "connected": agent.connected,
        "registered_time": agent.registered_time,
        "resources": shared.total(agent.total),
        "used_resources": shared.held(tally.held),
        "offered_resources": _offered(machine, agent.offers) if agent.offers else _ZEROS,
    }
    row.update(tally.states)
    return row


def framework_row(machine: MasterMachine, fw: Framework, tally: _Tally | None, done: bool) -> Row:
    """One framework in the shape of ``/master/state-summary``'s, with ``completed``."""
    tally = tally or _Tally()
    info = fw.info
    row: Row = {
        "id": fw.framework_id,
        "name": info.name,
        "user": info.user,
        "hostname": info.hostname or "",
        "principal": info.principal or "",
        "webui_url": info.webui_url or "",
        "roles": list(info.roles) if info.has_capability("MULTI_ROLE") else [info.role or "*"],
        "active": fw.active,
        "connected": fw.connected,
        "completed": done,
        "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time or 0,
        "used_resources": _scalars(tally.held) if not done else dict.fromkeys(SCALARS, 0.0),
        "offered_resources": _offered(machine, fw.offers),
    }
    row.update(tally.states)
    return row


def _active_tasks(row: Row) -> int:
    return sum(row.get(state, 0) for state in ACTIVE_STATES)


def _share(name: str) -> Callable[[Row], float]:
    def value(row: Row) -> float:
        total = row.get("resources", {}).get(name, 0.0)
        return row["used_resources"].get(name, 0.0) / total if total else 0.0

    return value


def _used(name: str) -> Callable[[Row], float]:
    return lambda row: row["used_resources"].get(name, 0.0)


AGENT_SORTS: dict[str, Callable[[Row], Any]] = {
    "hostname": lambda r: (r["hostname"], r["port"]),
    "id": lambda r: r["id"],
    "cpus": _share("cpus"),
    "mem": _share("mem"),
    "disk": _share("disk"),
    "tasks": _active_tasks,
    "active": lambda r: (r["active"], r["connected"]),
    "registered": lambda r: r["registered_time"],
}
FRAMEWORK_SORTS: dict[str, Callable[[Row], Any]] = {
    "name": lambda r: (r["name"], r["id"]),
    "id": lambda r: r["id"],
    "role": lambda r: ",".join(r["roles"]),
    "user": lambda r: r["user"],
    "state": lambda r: (r["active"], r["connected"]),
    "tasks": _active_tasks,
    "cpus": _used("cpus"),
    "mem": _used("mem"),
    "offered": lambda r: r["offered_resources"].get("cpus", 0.0),
    "registered": lambda r: r["unregistered_time"] if r["completed"] else r["registered_time"],
}


# -- listings ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Listing:
    """Rows of one kind at one moment, with the search text and sorted orders it has been
    asked for (computed on first use, kept as long as the listing)."""

    rows: list[Row]
    search: list[str]
    sorts: Mapping[str, Callable[[Row], Any]]
    default_sort: str
    built_at: float = 0.0
    _orders: dict[str, list[int]] = field(default_factory=dict)

    def order(self, key: str) -> list[int]:
        """Row indexes in ascending order of ``key``."""
        out = self._orders.get(key)
        if out is None:
            value = self.sorts[key]
            out = sorted(range(len(self.rows)), key=lambda i: value(self.rows[i]))
            self._orders[key] = out
        return out

    def page(self, query: PageQuery) -> dict[str, Any]:
        """``{total, count, offset, limit, rows}``: the rows that match, sorted, sliced."""
        key = query.sort or self.default_sort
        if key not in self.sorts:
            raise QueryError(f"'sort' must be one of {', '.join(sorted(self.sorts))}")
        order = self.order(key)
        if query.descending:
            order = order[::-1]
        if query.q:
            q = query.q
            search = self.search
            order = [i for i in order if q in search[i]]
        chosen = [self.rows[i] for i in order[query.offset : query.offset + query.limit]]
        return _answer(len(self.rows), len(order), query.offset, query.limit, chosen)


def _answer(total: int, count: int, offset: int, limit: int, rows: list[Row]) -> dict[str, Any]:
    return {"total": total, "count": count, "offset": offset, "limit": limit, "rows": rows}


def build_agent_listing(machine: MasterMachine, now: float) -> Listing:
    """The agents of ``machine`` now."""
    with no_gc():
        tallies = _tallies(machine, attrgetter("agent_id"))
        shared = _Shared()
        rows = [
            agent_row(machine, a, tallies.get(a.agent_id), shared) for a in machine.agents.values()
        ]
    search = [f"{r['hostname']}:{r['port']} {r['id']}".lower() for r in rows]
    return Listing(rows, search, AGENT_SORTS, "hostname", now)


def build_framework_listings(machine: MasterMachine, now: float) -> tuple[Listing, Listing]:
    """(frameworks, completed frameworks) of ``machine`` now."""
    with no_gc():
        tallies = _tallies(machine, attrgetter("framework_id"))
        live = [
            framework_row(machine, f, tallies.get(f.framework_id), False)
            for f in machine.frameworks.values()
        ]
        done = [
            framework_row(machine, f, tallies.get(f.framework_id), True)
            for f in machine.completed_frameworks
        ]

    def listing(rows: list[Row]) -> Listing:
        search = [f"{r['name']} {r['id']} {','.join(r['roles'])}".lower() for r in rows]
        return Listing(rows, search, FRAMEWORK_SORTS, "registered", now)

    return listing(live), listing(done)


class Rebuilt(Generic[T]):
    """A value rebuilt on demand, reused while stale by less than the bounded rate of the
    module docstring (a cheap build is never reused)."""

    def __init__(
        self,
        build: Callable[[], T],
        cheap_build: float = CHEAP_BUILD,
        staleness_factor: float = STALENESS_FACTOR,
    ) -> None:
        self._build = build
        self.cheap_build = cheap_build
        self.staleness_factor = staleness_factor
        self._value: T | None = None
        self._built_at = 0.0
        self.build_seconds = 0.0
        self.builds = 0

    def _window(self) -> float:
        """Seconds a build is reused for (0: never)."""
        if self.build_seconds <= self.cheap_build:
            return 0.0
        return min(self.staleness_factor * self.build_seconds, MAX_STALENESS)

    def current(self) -> T:
        now = time.perf_counter()
        if self._value is not None and now - self._built_at < self._window():
            return self._value
        self._value = self._build()
        done = time.perf_counter()
        self._built_at, self.build_seconds = done, done - now
        self.builds += 1
        return self._value

    def freshness(self) -> dict[str, float]:
        """``{age_seconds, rebuilt_in_seconds}`` of the value `current` gave last: a page
        that saw a change after the build asks again once a rebuild is allowed (a change
        feed says what changed, not that the next answer will show it)."""
        age = time.perf_counter() - self._built_at
        return {
            "age_seconds": round(age, 3),
            "rebuilt_in_seconds": round(max(0.0, self._window() - age), 3),
        }


class AgentListings(Rebuilt[Listing]):
    """The agent listing of one master, rebuilt when stale."""

    def __init__(self, machine: MasterMachine, cheap_build: float = CHEAP_BUILD) -> None:
        super().__init__(lambda: build_agent_listing(machine, time.time()), cheap_build)


class FrameworkListings(Rebuilt[tuple[Listing, Listing]]):
    """(frameworks, completed frameworks) of one master, rebuilt when stale."""

    def __init__(self, machine: MasterMachine, cheap_build: float = CHEAP_BUILD) -> None:
        super().__init__(lambda: build_framework_listings(machine, time.time()), cheap_build)


# -- roles ------------------------------------------------------------------------------------


def _count(counts: dict[Resources, int], res: Resources) -> None:
    counts[res] = counts.get(res, 0) + 1


def build_roles(machine: MasterMachine) -> list[Row]:
    """Every role as ``/master/roles`` shows it (scalars only): weight, frameworks, what
    tasks and executors hold, what is offered and what agents reserve for it. Amounts are
    counted by resource shape and each shape is summed once (``/master/roles`` adds 100k
    tasks' resources one by one, and asks each of 10k agents for each role's reservation)."""
    allocated: dict[str, dict[Resources, int]] = {}
    offered: dict[str, dict[Resources, int]] = {}
    frameworks: dict[str, list[str]] = {}
    agent_shapes: dict[Resources, int] = {}
    with no_gc():
        for fw in machine.frameworks.values():
            for role in fw.roles:
                frameworks.setdefault(role, []).append(fw.framework_id)
            for task in fw.tasks.values():
                if not task_states.is_terminal(task.state):
                    _count(allocated.setdefault(task.role, {}), task.resources)
        for agent in machine.agents.values():
            _count(agent_shapes, agent.total)
            for executor in agent.executors.values():
                _count(allocated.setdefault(executor.role, {}), executor.resources)
        for offer in machine.offers.values():
            _count(offered.setdefault(offer.role, {}), offer.resources)
    weights = machine.allocator.weights
    shape_roles = {shape: shape.roles() for shape in agent_shapes}
    # As `operator_views.role_names`: of frameworks, with a weight, a quota or reservations.
    quotas = machine.allocator.quotas
    consumption = operator_views.quota_consumption(machine)
    names = set(weights) | set(frameworks) | set(quotas)
    for roles in shape_roles.values():
        names |= roles
    rows = []
    for role in sorted(names):
        reserved: dict[Resources, int] = {}
        for shape, n in agent_shapes.items():
            if role in shape_roles[shape]:
                part = shape.reserved(role)
                reserved[part] = reserved.get(part, 0) + n
        held = _scalars(allocated.get(role, {}))
        rows.append(
            {
                "name": role,
                "weight": weights.get(role, 1.0),
                "frameworks": frameworks.get(role, []),
                "resources": held,
                "allocated": held,
                "offered": _scalars(offered.get(role, {})),
                "reserved": _scalars(reserved),
                "quota": role_quota_json(role, quotas.get(role), consumption.get(role, {})),
            }
        )
    return rows
