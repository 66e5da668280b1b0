"""The legacy ``/master/state`` JSON (docs/protocol.md §3.4): ``slave`` spellings, resources as
name -> value maps, epoch-second timestamps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from butte.core import task_limits, task_states
from butte.core.flags import log_fields
from butte.core.messages import AGENT_CAPABILITIES, to_builtins
from butte.core.resources import Attribute, ResourceError, Resources, from_millis
from butte.master import operator_views, views
from butte.master.machine import MasterMachine
from butte.master.state import Agent, Framework, Task

# Rendering one task; `butte.master.snapshot` passes one that reuses cached JSON fragments.
TaskRenderer = Callable[[Task], Any]

# Resources -> (legacy map, scalar quantities, scalars only). Tasks of one shape share the
# entry, so a /state of 100k tasks computes a handful of maps instead of 100k.
_LEGACY_CACHE: dict[Resources, tuple[dict[str, Any], dict[str, int], bool]] = {}
_LEGACY_CACHE_SIZE = 4096


def _legacy_entry(res: Resources) -> tuple[dict[str, Any], dict[str, int], bool]:
    entry = _LEGACY_CACHE.get(res)
    if entry is None:
        if len(_LEGACY_CACHE) >= _LEGACY_CACHE_SIZE:
            _LEGACY_CACHE.clear()
        quantities = res.quantities()
        scalars_only = all(isinstance(v, int) for _, v in res.items())
        entry = _LEGACY_CACHE[res] = (res.to_legacy_map(), quantities, scalars_only)
    return entry


def legacy_map(res: Resources) -> dict[str, Any]:
    """``res.to_legacy_map()``, memoized (a fresh copy: callers may change it)."""
    return dict(_legacy_entry(res)[0])


_UNRESERVED_CACHE: dict[Resources, dict[str, Any]] = {}


def _legacy_unreserved(total: Resources) -> dict[str, Any]:
    """``total.unreserved().to_legacy_map()``, memoized per agent shape."""
    out = _UNRESERVED_CACHE.get(total)
    if out is None:
        if len(_UNRESERVED_CACHE) >= _LEGACY_CACHE_SIZE:
            _UNRESERVED_CACHE.clear()
        out = _UNRESERVED_CACHE[total] = total.unreserved().to_legacy_map()
    return dict(out)


def legacy_sum(items: Iterable[Resources]) -> dict[str, Any]:
    """The legacy map of the sum of ``items``; scalars are added as integers, without
    building the intermediate Resources (the hot part of /state at scale)."""
    totals: dict[str, int] = {}
    others: list[Resources] = []
    for res in items:
        _, quantities, scalars_only = _legacy_entry(res)
        for name, millis in quantities.items():
            totals[name] = totals.get(name, 0) + millis
        if not scalars_only:
            others.append(res)
    out: dict[str, Any] = {"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0}
    for name, millis in totals.items():
        out[name] = from_millis(millis)
    if others:
        for name, value in operator_views.total(others).to_legacy_map().items():
            if name not in totals and isinstance(value, str):
                out[name] = value
    return out


def legacy_task(task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.task_id,
        "name": task.name,
        "framework_id": task.framework_id,
        "executor_id": task.executor_id or "",
        "slave_id": task.agent_id,
        "state": task.state,
        "resources": legacy_map(task.resources),
        "role": task.role,
        "statuses": [
            {
                "state": s.state,
                "timestamp": s.timestamp,
                # Not in Mesos' legacy JSON: why a task failed, for the web UI and the CLI.
                **({"message": s.message} if s.message else {}),
                **({"reason": s.reason} if s.reason else {}),
                **({"source": s.source} if s.source else {}),
                **({"healthy": s.healthy} if s.healthy is not None else {}),
                **(
                    {"container_status": s.container_status}
                    if s.container_status is not None
                    else {}
                ),
            }
            for s in task.statuses
        ],
    }
    user = views.task_user(task)
    if user is not None:
        out["user"] = user
    info = task.info
    if info is not None:
        if info.labels is not None:
            out["labels"] = to_builtins(info.labels).get("labels", [])
        if info.discovery is not None:
            out["discovery"] = info.discovery
        if info.container is not None:
            out["container"] = info.container
        if info.health_check is not None:
            out["health_check"] = info.health_check
        if info.limits:
            out["limits"] = task_limits.flat_json(info.limits)
    return out


def legacy_framework(
    machine: MasterMachine, fw: Framework, render: TaskRenderer = legacy_task
) -> dict[str, Any]:
    tasks = list(fw.tasks.values())
    live = [t.resources for t in tasks if not task_states.is_terminal(t.state)]
    offered = [machine.offers[o].resources for o in fw.offers if o in machine.offers]
    info = fw.info
    out: dict[str, Any] = {
        "id": fw.framework_id,
        "name": info.name,
        "user": info.user,
        "hostname": info.hostname or "",
        "webui_url": info.webui_url or "",
        "failover_timeout": info.failover_timeout,
        "checkpoint": info.checkpoint,
        "capabilities": sorted(fw.capabilities),
        "active": fw.active,
        "connected": fw.connected,
        "recovered": fw.recovered,
        "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time or 0,
        "used_resources": legacy_sum(live),
        "offered_resources": legacy_sum(offered),
        "resources": legacy_sum(live + offered),
        "tasks": [render(t) for t in tasks],
        "unreachable_tasks": [
            render(t) for t in fw.completed_tasks if t.state == task_states.UNREACHABLE
        ],
        "completed_tasks": [
            render(t) for t in fw.completed_tasks if t.state != task_states.UNREACHABLE
        ],
        "offers": [_legacy_offer(machine, o) for o in sorted(fw.offers) if o in machine.offers],
        "executors": _legacy_executors(machine, fw),
        "labels": to_builtins(info.labels).get("labels", []) if info.labels else [],
    }
    if fw.reregistered_time is not None:
        out["reregistered_time"] = fw.reregistered_time
    if info.principal:
        out["principal"] = info.principal
    if info.has_capability("MULTI_ROLE"):
        out["roles"] = list(info.roles)
    else:
        out["role"] = info.role or "*"
    # Mesos writes the framework's offer constraints always (an empty object without any).
    constraints = fw.offer_constraints
    out["offer_constraints"] = dict(constraints.raw) if constraints is not None else {}
    return out


def _legacy_executors(machine: MasterMachine, fw: Framework) -> list[dict[str, Any]]:
    """The framework's custom and default executors, as Mesos' state lists them: the
    ExecutorInfo with its resources as a map and the agent's id (``slave_id``)."""
    out = []
    for agent_id, executor_ids in fw.executors.items():
        agent = machine.agents.get(agent_id)
        for eid in sorted(executor_ids):
            ex = agent.executors.get((fw.framework_id, eid)) if agent is not None else None
            if ex is None:
                continue
            entry = to_builtins(ex.info)
            entry["executor_id"] = eid
            entry["framework_id"] = fw.framework_id
            entry["name"] = ex.info.name or ""
            entry["resources"] = legacy_map(ex.resources)
            entry["role"] = ex.role
            entry["slave_id"] = agent_id
            out.append(entry)
    return out


def _legacy_offer(machine: MasterMachine, offer_id: str) -> dict[str, Any]:
    offer = machine.offers[offer_id]
    return {
        "id": offer.offer_id,
        "framework_id": offer.framework_id,
        "slave_id": offer.agent_id,
        "resources": offer.resources.to_legacy_map(),
        "allocation_info": {"role": offer.role},
    }


def legacy_agent(
    machine: MasterMachine, agent: Agent, used: Resources | None = None
) -> dict[str, Any]:
    """One agent of ``/master/state`` and ``/master/slaves`` (``used``: what
    `operator_views.agent_used` gives, when the caller has it already)."""
    if used is None:
        used = operator_views.agent_used(machine, agent)
    offered = [machine.offers[o].resources for o in agent.offers if o in machine.offers]
    reserved: dict[str, dict] = {}
    for role in agent.total.roles() - {"*"}:
        reserved[role] = agent.total.reserved(role).to_legacy_map()
    out: dict[str, Any] = {
        "id": agent.agent_id,
        "hostname": agent.hostname,
        "port": agent.port,
        "pid": agent.pid,
        "attributes": {a.name: a.legacy_value() for a in agent.attributes},
        "registered_time": agent.registered_time,
        "resources": legacy_map(agent.total),
        "used_resources": legacy_sum([used]),
        "offered_resources": legacy_sum(offered),
        "reserved_resources": reserved,
        "unreserved_resources": _legacy_unreserved(agent.total),
        "active": agent.active,
        # Deactivated (or drained) by an operator, as Mesos' `slaves.deactivated`: an agent
        # that is merely disconnected is inactive but not deactivated.
        "deactivated": agent.deactivated,
        "version": agent.version,
        "capabilities": list(AGENT_CAPABILITIES),
    }
    if agent.reregistered_time is not None:
        out["reregistered_time"] = agent.reregistered_time
    if agent.info.domain:
        out["domain"] = agent.info.domain
    if agent.drain is not None:
        out["drain_info"] = agent.drain.to_json()
    return out


def agent_resources_full(machine: MasterMachine, agent: Agent) -> dict[str, Any]:
    """What Mesos' ``/slaves`` adds to each agent (and ``/state`` does not): its reserved,
    unreserved, used and offered resources as whole Resource objects (reservations, volumes,
    the role each is allocated to), so that operators can unreserve and destroy volumes
    from them. ``reserved_resources_full`` maps each reservation role to its resources."""
    offers = (machine.offers[o] for o in agent.offers if o in machine.offers)
    return {
        "reserved_resources_full": {
            role: agent.total.reserved(role).to_json("endpoint")
            for role in sorted(agent.total.roles() - {"*"})
        },
        "unreserved_resources_full": agent.total.unreserved().to_json("endpoint"),
        "used_resources_full": operator_views.allocated_json(
            operator_views.agent_held(machine, agent)
        ),
        "offered_resources_full": operator_views.allocated_json(operator_views.offers_held(offers)),
    }


def recovered_agent(agent_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """An agent the registry lists that has not re-registered since this master's election,
    as Mesos' ``/state`` shows a SlaveInfo (``info``: the registry's AgentInfo JSON)."""
    out: dict[str, Any] = {"id": agent_id}
    for key in ("hostname", "port"):
        if key in info:
            out[key] = info[key]
    try:
        out["resources"] = legacy_map(Resources.from_json(info.get("resources") or []))
        out["attributes"] = {
            a.name: a.legacy_value() for a in map(Attribute.from_json, info.get("attributes") or [])
        }
    except (ResourceError, TypeError, ValueError, AttributeError):
        pass  # a record this master cannot read: the id and address still say which agent
    return out


def master_state(
    machine: MasterMachine,
    flags: dict[str, str],
    version: str,
    elected_time: float | None,
    render: TaskRenderer = legacy_task,
) -> dict[str, Any]:
    """The whole ``/master/state`` document (``render`` draws each task)."""
    info = machine.master_info
    # Who leads: this master, another one (this one is a standby), or nobody known.
    leading = machine.leader_info
    leader = None
    if leading is not None:
        keys = ("id", "pid", "port", "hostname", "ip", "address", "version", "domain")
        leader = {k: leading[k] for k in keys if k in leading}
    agents = list(machine.agents.values())
    used = operator_views.all_agents_used(machine)
    doc: dict[str, Any] = {
        "version": version,
        "build_date": "",
        "build_time": 0,
        "build_user": "",
        "start_time": machine.start_time,
        "id": machine.master_id,
        "pid": info["pid"],
        "hostname": info["hostname"],
        "capabilities": [c["type"] for c in info["capabilities"]],
        "activated_slaves": sum(1 for a in agents if a.active),
        "deactivated_slaves": sum(1 for a in agents if not a.active),
        "unreachable_slaves": len(machine.unreachable_agents),
        "leader": leader.get("pid", "") if leader is not None else None,
        "leader_info": leader,
        "flags": flags,
        **log_fields(flags),
        "slaves": [legacy_agent(machine, a, used[a.agent_id]) for a in agents],
        # Agents the registry lists that have not re-registered since this master's election.
        "recovered_slaves": [
            recovered_agent(aid, info) for aid, info in sorted(machine.recovered_infos.items())
        ],
        "frameworks": [legacy_framework(machine, f, render) for f in machine.frameworks.values()],
        "completed_frameworks": [
            legacy_framework(machine, f, render) for f in machine.completed_frameworks
        ],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    }
    if leader is None:
        del doc["leader"], doc["leader_info"]  # Mesos omits them while no leader is known
    if "domain" in info:
        doc["domain"] = info["domain"]
    if elected_time is not None:  # Mesos shows it once this master was elected
        doc["elected_time"] = elected_time
    return doc


def version_json(version: str) -> dict[str, Any]:
    return {"version": version, "build_date": "", "build_time": 0, "build_user": ""}
