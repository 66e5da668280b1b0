"""JSON shapes of the operator API v1 (docs/protocol.md §3.1, 3.2): GetAgents.Agent,
GetFrameworks.Framework, GetTasks, GetRoles, and the master event stream's events.

Pure functions from the master's records to JSON-able dicts. The core builds its operator
events with them (only while an operator is subscribed); the operator endpoint builds its
answers with them. Unlike the legacy endpoints, v1 says ``agent``, resources are Resource
lists and times are ``TimeInfo`` nanoseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from butte.core import task_states
from butte.core.messages import AGENT_CAPABILITIES, TaskStatus, to_builtins
from butte.core.resources import ResourceError, Resources
from butte.master import views
from butte.master.allocator.interface import Allocator
from butte.master.allocator.quota import (
    add_into,
    reserved_quantities,
    unreserved_quantities,
    within,
)
from butte.master.quota import role_quota_json
from butte.master.state import Agent, Framework, Offer, Task


class MasterRecords(Protocol):
    """What these views read of the master core (`butte.master.core.MasterCore` has it):
    a narrow interface, so that the core can build operator events with them without the
    views depending on the core."""

    @property
    def frameworks(self) -> dict[str, Framework]: ...

    @property
    def completed_frameworks(self) -> deque[Framework]: ...

    @property
    def agents(self) -> dict[str, Agent]: ...

    @property
    def recovered_infos(self) -> dict[str, dict[str, Any]]: ...

    @property
    def offers(self) -> dict[str, Offer]: ...

    @property
    def allocator(self) -> Allocator: ...


def time_info(seconds: float) -> dict[str, int]:
    """A ``TimeInfo``: epoch nanoseconds."""
    return {"nanoseconds": int(seconds * 1e9)}


def total(items: Iterable[Resources]) -> Resources:
    """The sum of some resources (empty for none). Tasks of one shape share one interned
    `Resources`, so equal objects are counted first and each shape is added once, times its
    count; scalars are summed as integers in one dict, ranges and sets by Resources
    addition."""
    counts: dict[int, list] = {}  # id -> [resources, count]; holding it keeps the id unique
    for r in items:
        entry = counts.get(id(r))
        if entry is None:
            counts[id(r)] = [r, 1]
        else:
            entry[1] += 1
    sums: dict = {}
    rest = Resources()
    for r, count in counts.values():
        for key, value in r.items():
            if type(value) is int:
                sums[key] = sums.get(key, 0) + value * count
            else:
                for _ in range(count):
                    rest = rest + Resources({key: value})
    return Resources(sums) + rest if sums else rest


# -- agents ----------------------------------------------------------------------------------


def agent_used(machine: MasterRecords, agent: Agent) -> Resources:
    """What the live tasks and the executors on an agent hold."""
    used: list[Resources] = []
    for fid, tid in agent.tasks:
        fw = machine.frameworks.get(fid)
        task = fw.tasks.get(tid) if fw is not None else None
        if task is not None and not task_states.is_terminal(task.state):
            used.append(task.resources)
    used.extend(e.resources for e in agent.executors.values())
    return total(used)


def all_agents_used(machine: MasterRecords) -> dict[str, Resources]:
    """`agent_used` of every agent, in one pass over the frameworks' tasks (cheaper than
    looking each agent's tasks up one by one when all agents are shown)."""
    held: dict[str, list[Resources]] = {agent_id: [] for agent_id in machine.agents}
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            resources = held.get(task.agent_id)
            if resources is not None and not task_states.is_terminal(task.state):
                resources.append(task.resources)
    for agent_id, agent in machine.agents.items():
        held[agent_id].extend(e.resources for e in agent.executors.values())
    return {agent_id: total(resources) for agent_id, resources in held.items()}


def agent_offered(machine: MasterRecords, agent: Agent) -> Resources:
    return total(machine.offers[o].resources for o in agent.offers if o in machine.offers)


# -- resources by allocation role ------------------------------------------------------------

# Role -> what is allocated to (or offered to) it, each kept as the `Resources` of its holders.
Held = dict[str, list[Resources]]


def hold(held: Held, role: str, resources: Resources) -> None:
    held.setdefault(role, []).append(resources)


def allocated_json(held: Held) -> list[dict[str, Any]]:
    """Mesos' allocated (or offered) ``Resource`` list: each role's sum, every resource with
    its ``allocation_info`` (the role it is allocated to), as Mesos keeps allocated resources
    (`Resources::sum` of them keeps one entry per role)."""
    out: list[dict[str, Any]] = []
    for role in sorted(held):
        out.extend(views.resources_json(total(held[role]), "endpoint", role))
    return out


def agent_held(machine: MasterRecords, agent: Agent) -> Held:
    """What the live tasks and the executors on an agent hold, by role."""
    held: Held = {}
    for fid, tid in agent.tasks:
        fw = machine.frameworks.get(fid)
        task = fw.tasks.get(tid) if fw is not None else None
        if task is not None and not task_states.is_terminal(task.state):
            hold(held, task.role, task.resources)
    for ex in agent.executors.values():
        hold(held, ex.role, ex.resources)
    return held


def all_agents_held(machine: MasterRecords) -> dict[str, Held]:
    """`agent_held` of every agent, in one pass over the frameworks' tasks."""
    out: dict[str, Held] = {agent_id: {} for agent_id in machine.agents}
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            held = out.get(task.agent_id)
            if held is not None and not task_states.is_terminal(task.state):
                hold(held, task.role, task.resources)
    for agent_id, agent in machine.agents.items():
        for ex in agent.executors.values():
            hold(out[agent_id], ex.role, ex.resources)
    return out


def offers_held(offers: Iterable[Offer]) -> Held:
    """What some offers hold, by the role each is made to."""
    held: Held = {}
    for offer in offers:
        hold(held, offer.role, offer.resources)
    return held


# -- an agent's own resources ----------------------------------------------------------------


def agent_info_resources(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The resources of an agent's ``AgentInfo`` as Mesos shows them: what the agent was
    started with (``--resources``, static reservations included), without what operations
    made of them since. butte's records keep the agent's total, dynamic reservations and
    persistent volumes included (the registry and the agent protocol carry that); taking
    the DYNAMIC reservations off every stack and the persistence and volume off every disk
    gives back what ``--resources`` declared, since RESERVE only pushes a DYNAMIC
    reservation, CREATE only adds them to a disk and the other operations undo or resize
    those. ``resources``: Resource JSON (any format); answered in the post-refinement
    format, as Mesos keeps an AgentInfo."""
    static: list[dict[str, Any]] = []
    for raw in resources:
        res = dict(raw)
        res.pop("role", None)
        res.pop("reservation", None)
        stack = [r for r in res.get("reservations") or () if r.get("type") != "DYNAMIC"]
        legacy_role = raw.get("role")
        if not raw.get("reservations") and legacy_role not in (None, "*"):
            # The pre-refinement form: one reservation, dynamic when it names a principal
            # or labels (as Mesos upgrades it), else static.
            dynamic = isinstance(raw.get("reservation"), dict)
            stack = [] if dynamic else [{"type": "STATIC", "role": legacy_role}]
        if stack:
            res["reservations"] = stack
        else:
            res.pop("reservations", None)
        disk = res.get("disk")
        if isinstance(disk, dict):
            disk = {k: v for k, v in disk.items() if k not in ("persistence", "volume")}
            if disk:
                res["disk"] = disk
            else:
                del res["disk"]
        static.append(res)
    try:
        return Resources.from_json(static).to_json("post")
    except ResourceError:
        return static  # not ours to refuse here: shown as near to what was declared as can be


# Agent total -> `agent_info_resources` of it. Agents of one shape share the entry, so a
# GET_AGENTS of 10k agents works out a handful of them.
_AGENT_INFO_RESOURCES: dict[Resources, list[dict[str, Any]]] = {}
_MAX_AGENT_INFO_RESOURCES = 4096


def agent_info_resources_of(total: Resources) -> list[dict[str, Any]]:
    """`agent_info_resources` of an agent's total, memoized. The list is shared: read-only."""
    out = _AGENT_INFO_RESOURCES.get(total)
    if out is None:
        if len(_AGENT_INFO_RESOURCES) >= _MAX_AGENT_INFO_RESOURCES:
            _AGENT_INFO_RESOURCES.clear()
        out = _AGENT_INFO_RESOURCES[total] = agent_info_resources(total.to_json("post"))
    return out


def agent_json(machine: MasterRecords, agent: Agent, held: Held | None = None) -> dict[str, Any]:
    """``GetAgents.Agent`` (``held``: `agent_held`, when the caller has it already)."""
    if held is None:
        held = agent_held(machine, agent)
    info = to_builtins(agent.info)
    info["resources"] = agent_info_resources_of(agent.total)
    offers = (machine.offers[o] for o in agent.offers if o in machine.offers)
    out: dict[str, Any] = {
        "agent_info": info,
        "active": agent.active,
        "deactivated": agent.deactivated,
        "version": agent.version,
        "pid": agent.pid,
        "registered_time": time_info(agent.registered_time),
        "total_resources": views.resources_json(agent.total, "endpoint"),
        "allocated_resources": allocated_json(held),
        "offered_resources": allocated_json(offers_held(offers)),
        "capabilities": [{"type": c} for c in AGENT_CAPABILITIES],
    }
    if agent.reregistered_time is not None:
        out["reregistered_time"] = time_info(agent.reregistered_time)
    if agent.drain is not None:
        out["drain_info"] = agent.drain.to_json()
    return out


def recovered_agent_json(agent_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """An agent the registry lists that has not re-registered since this master's election:
    its AgentInfo, with the resources it was started with (`agent_info_resources`)."""
    if not info:
        return {"id": {"value": agent_id}}
    resources = info.get("resources")
    if not isinstance(resources, list):
        return info
    try:
        return {**info, "resources": agent_info_resources(resources)}
    except (AttributeError, TypeError):  # a record this master cannot read: shown as it is
        return info


def get_agents(machine: MasterRecords) -> dict[str, Any]:
    """``GetAgents``."""
    held = all_agents_held(machine)
    return {
        "agents": [agent_json(machine, a, held[a.agent_id]) for a in machine.agents.values()],
        # Listed by the registry, not re-registered since this master's election.
        "recovered_agents": [
            recovered_agent_json(aid, info) for aid, info in sorted(machine.recovered_infos.items())
        ],
    }


# -- frameworks ------------------------------------------------------------------------------


def framework_held(fw: Framework, machine: MasterRecords) -> Held:
    """What a framework's live tasks and executors hold, by role."""
    held: Held = {}
    for task in fw.tasks.values():
        if not task_states.is_terminal(task.state):
            hold(held, task.role, task.resources)
    for agent_id, executor_ids in fw.executors.items():
        agent = machine.agents.get(agent_id)
        if agent is None:
            continue
        for eid in executor_ids:
            ex = agent.executors.get((fw.framework_id, eid))
            if ex is not None:
                hold(held, ex.role, ex.resources)
    return held


def framework_used(fw: Framework, machine: MasterRecords) -> Resources:
    return total(r for parts in framework_held(fw, machine).values() for r in parts)


def framework_json(machine: MasterRecords, fw: Framework) -> dict[str, Any]:
    """``GetFrameworks.Framework``, as Mesos' ``model(Framework)`` writes it: times that are
    set (``reregistered_time`` is the registration's until the framework subscribes again,
    ``unregistered_time`` is set when it is removed), allocated and offered resources with
    the role each is allocated to, and the offer constraints (empty when it has none)."""
    offers = [machine.offers[o] for o in sorted(fw.offers) if o in machine.offers]
    out: dict[str, Any] = {
        "framework_info": views.framework_info_json(fw.info),
        "active": fw.active,
        "connected": fw.connected,
        "recovered": fw.recovered,
        "registered_time": time_info(fw.registered_time),
        "reregistered_time": time_info(fw.reregistered_time or fw.registered_time),
        "allocated_resources": allocated_json(framework_held(fw, machine)),
        "offered_resources": allocated_json(offers_held(offers)),
        "offer_constraints": (
            dict(fw.offer_constraints.raw) if fw.offer_constraints is not None else {}
        ),
    }
    if fw.unregistered_time is not None:
        out["unregistered_time"] = time_info(fw.unregistered_time)
    agent_offers = []
    for offer in offers:
        agent = machine.agents.get(offer.agent_id)
        if agent is not None:
            agent_offers.append(views.offer_json(offer, agent, fw, agent.ip or agent.hostname))
    if agent_offers:
        out["offers"] = agent_offers
    return out


def get_frameworks(machine: MasterRecords) -> dict[str, Any]:
    """``GetFrameworks``."""
    return {
        "frameworks": [framework_json(machine, f) for f in machine.frameworks.values()],
        "completed_frameworks": [framework_json(machine, f) for f in machine.completed_frameworks],
    }


# -- executors and tasks ---------------------------------------------------------------------


def get_executors(machine: MasterRecords) -> dict[str, Any]:
    """``GetExecutors``: the executors the master knows of (custom and default ones)."""
    out = []
    for agent in machine.agents.values():
        for ex in agent.executors.values():
            info = to_builtins(ex.info)
            info.setdefault("framework_id", views.value(ex.framework_id))
            out.append({"executor_info": info, "agent_id": views.value(agent.agent_id)})
    return {"executors": out}


def all_tasks(machine: MasterRecords) -> Iterator[tuple[str, Task]]:
    """Every task the master remembers as (kind, task): kind is ``tasks``,
    ``unreachable_tasks`` or ``completed_tasks`` (GetTasks' field names)."""
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            yield "tasks", task
    for fw in [*machine.frameworks.values(), *machine.completed_frameworks]:
        for task in fw.completed_tasks:
            if task.state == task_states.UNREACHABLE:
                yield "unreachable_tasks", task
            else:
                yield "completed_tasks", task


def get_tasks(machine: MasterRecords) -> dict[str, Any]:
    """``GetTasks`` (``pending_tasks`` and ``orphan_tasks`` never exist here)."""
    out: dict[str, list] = {"tasks": [], "unreachable_tasks": [], "completed_tasks": []}
    for kind, task in all_tasks(machine):
        out.setdefault(kind, []).append(views.task_json(task))
    return out


# -- roles -----------------------------------------------------------------------------------


def role_names(machine: MasterRecords) -> list[str]:
    """Roles worth showing: those of frameworks, with a weight, a quota or reservations."""
    names: set[str] = set(machine.allocator.weights)
    names.update(machine.allocator.quotas)
    for fw in machine.frameworks.values():
        names.update(fw.roles)
    for agent in machine.agents.values():
        names.update(agent.total.roles())
    return sorted(names)


def role_usage(machine: MasterRecords) -> dict[str, tuple[Resources, Resources, list[str]]]:
    """role -> (allocated, offered, framework ids)."""
    allocated: dict[str, list[Resources]] = {}
    offered: dict[str, list[Resources]] = {}
    frameworks: dict[str, list[str]] = {}
    for fw in machine.frameworks.values():
        for role in fw.roles:
            frameworks.setdefault(role, []).append(fw.framework_id)
        for task in fw.tasks.values():
            if not task_states.is_terminal(task.state):
                allocated.setdefault(task.role, []).append(task.resources)
    for agent in machine.agents.values():
        for ex in agent.executors.values():
            allocated.setdefault(ex.role, []).append(ex.resources)
    for offer in machine.offers.values():
        offered.setdefault(offer.role, []).append(offer.resources)
    return {
        role: (
            total(allocated.get(role, ())),
            total(offered.get(role, ())),
            frameworks.get(role, []),
        )
        for role in role_names(machine)
    }


def quota_consumption(machine: MasterRecords) -> dict[str, dict[str, int]]:
    """Consumed quota of every role path (thousandths), as Mesos' master reports it and
    checks UPDATE_QUOTA against (RoleResourceBreakdown::consumedQuota): what tasks and
    executors of the role's subtree use of unreserved resources, plus everything reserved to
    it. Offers do not count here, unlike in the allocator's own view
    (`allocator.consumed_quota`), which enforces limits and counts them as allocated."""
    out: dict[str, dict[str, int]] = {}
    for agent in machine.agents.values():
        for role, quantities in reserved_quantities(agent.total).items():
            add_into(out, role, quantities, 1)
        for ex in agent.executors.values():
            add_into(out, ex.role, unreserved_quantities(ex.resources), 1)
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            if not task_states.is_terminal(task.state):
                add_into(out, task.role, unreserved_quantities(task.resources), 1)
    return out


def get_roles(machine: MasterRecords) -> dict[str, Any]:
    """``GetRoles``."""
    weights = machine.allocator.weights
    quotas = machine.allocator.quotas
    consumption = quota_consumption(machine)
    usage = role_usage(machine)
    # Mesos' `resources`: what the role's subtree has allocated or offered, as quantities of
    # cpus, mem, disk and gpus (no role, no reservations).
    held: dict[str, dict[str, int]] = {}
    for name, (allocated, offered, _) in usage.items():
        for path in usage:
            if within(name, path):
                mine = held.setdefault(path, {})
                for key, value in (allocated + offered).quantities().items():
                    mine[key] = mine.get(key, 0) + value
    roles = []
    for role, (allocated, offered, fids) in usage.items():
        reserved = total(a.total.reserved(role) for a in machine.agents.values())
        entry: dict[str, Any] = {
            "name": role,
            "weight": weights.get(role, 1.0),
            "resources": [
                {"name": name, "type": "SCALAR", "scalar": {"value": value / 1000}}
                for name, value in sorted(held.get(role, {}).items())
                if name in ("cpus", "mem", "disk", "gpus") and value > 0
            ],
            "allocated": allocated.to_json("endpoint"),
            "offered": offered.to_json("endpoint"),
            "reserved": reserved.to_json("endpoint"),
            "quota": role_quota_json(role, quotas.get(role), consumption.get(role, {})),
        }
        if fids:
            entry["frameworks"] = [views.value(f) for f in fids]
        roles.append(entry)
    return {"roles": roles}


def get_weights(machine: MasterRecords) -> dict[str, Any]:
    """``GetWeights``."""
    weights = machine.allocator.weights
    return {"weight_infos": [{"role": r, "weight": w} for r, w in sorted(weights.items())]}


# -- the event stream (built by the core while an operator is subscribed) --------------------


def _event(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, kind.lower(): payload}


def task_added(task: Task) -> dict[str, Any]:
    return _event("TASK_ADDED", {"task": views.task_json(task)})


def task_updated(task: Task, status: TaskStatus) -> dict[str, Any]:
    return _event(
        "TASK_UPDATED",
        {
            "framework_id": views.value(task.framework_id),
            "status": views.status_json(status),
            "state": task.state,
        },
    )


def agent_added(machine: MasterRecords, agent: Agent) -> dict[str, Any]:
    return _event("AGENT_ADDED", {"agent": agent_json(machine, agent)})


def agent_removed(agent_id: str) -> dict[str, Any]:
    return _event("AGENT_REMOVED", {"agent_id": views.value(agent_id)})


def framework_added(machine: MasterRecords, fw: Framework) -> dict[str, Any]:
    return _event("FRAMEWORK_ADDED", {"framework": framework_json(machine, fw)})


def framework_updated(machine: MasterRecords, fw: Framework) -> dict[str, Any]:
    return _event("FRAMEWORK_UPDATED", {"framework": framework_json(machine, fw)})


def framework_removed(fw: Framework) -> dict[str, Any]:
    return _event("FRAMEWORK_REMOVED", {"framework_info": views.framework_info_json(fw.info)})
