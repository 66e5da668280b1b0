"""The legacy ``/master/state`` JSON (PROTOCOL.md 3.4): ``slave`` spellings, resources as
name -> value maps, epoch-second timestamps."""

from __future__ import annotations

from typing import Any

from butte.core import task_states
from butte.core.messages import to_builtins
from butte.core.resources import Resources
from butte.master.machine import MasterMachine
from butte.master.state import Agent, Framework, Task


def legacy_task(task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.task_id,
        "name": task.name,
        "framework_id": task.framework_id,
        "executor_id": task.executor_id or "",
        "slave_id": task.agent_id,
        "state": task.state,
        "resources": task.resources.to_legacy_map(),
        "role": task.role,
        "statuses": [
            {
                "state": s.state,
                "timestamp": s.timestamp,
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
    info = task.info
    if info is not None:
        if info.labels is not None:
            out["labels"] = to_builtins(info.labels).get("labels", [])
        if info.discovery is not None:
            out["discovery"] = info.discovery
        if info.container is not None:
            out["container"] = info.container
    return out


def _sum(items: list[Resources]) -> Resources:
    total = Resources()
    for r in items:
        total = total + r
    return total


def legacy_framework(machine: MasterMachine, fw: Framework) -> dict[str, Any]:
    tasks = list(fw.tasks.values())
    live = [t for t in tasks if not task_states.is_terminal(t.state)]
    used = _sum([t.resources for t in live])
    offered = _sum([machine.offers[o].resources for o in fw.offers if o in machine.offers])
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
        "used_resources": used.to_legacy_map(),
        "offered_resources": offered.to_legacy_map(),
        "resources": (used + offered).to_legacy_map(),
        "tasks": [legacy_task(t) for t in tasks],
        "unreachable_tasks": [
            legacy_task(t) for t in fw.completed_tasks if t.state == task_states.UNREACHABLE
        ],
        "completed_tasks": [
            legacy_task(t) for t in fw.completed_tasks if t.state != task_states.UNREACHABLE
        ],
        "offers": [_legacy_offer(machine, o) for o in sorted(fw.offers) if o in machine.offers],
        "executors": [],
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


def legacy_agent(machine: MasterMachine, agent: Agent) -> dict[str, Any]:
    used: list[Resources] = []
    for fid, tid in agent.tasks:
        task = machine.frameworks[fid].tasks.get(tid)
        if task is not None and not task_states.is_terminal(task.state):
            used.append(task.resources)
    used.extend(e.resources for e in agent.executors.values())
    offered = _sum([machine.offers[o].resources for o in agent.offers if o in machine.offers])
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
        "resources": agent.total.to_legacy_map(),
        "used_resources": _sum(used).to_legacy_map(),
        "offered_resources": offered.to_legacy_map(),
        "reserved_resources": reserved,
        "unreserved_resources": agent.total.unreserved().to_legacy_map(),
        "active": agent.active,
        "deactivated": not agent.active,
        "version": agent.version,
        "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
    }
    if agent.reregistered_time is not None:
        out["reregistered_time"] = agent.reregistered_time
    if agent.info.domain:
        out["domain"] = agent.info.domain
    return out


def master_state(
    machine: MasterMachine, flags: dict[str, str], version: str, elected_time: float
) -> dict[str, Any]:
    """The whole ``/master/state`` document."""
    info = machine.master_info
    leader = {
        "id": info["id"],
        "pid": info["pid"],
        "port": info["port"],
        "hostname": info["hostname"],
    }
    agents = list(machine.agents.values())
    return {
        "version": version,
        "build_date": "",
        "build_time": 0,
        "build_user": "",
        "start_time": machine.start_time,
        "elected_time": elected_time,
        "id": machine.master_id,
        "pid": info["pid"],
        "hostname": info["hostname"],
        "capabilities": [c["type"] for c in info["capabilities"]],
        "activated_slaves": sum(1 for a in agents if a.active),
        "deactivated_slaves": sum(1 for a in agents if not a.active),
        "unreachable_slaves": len(machine.unreachable_agents),
        "leader": info["pid"],
        "leader_info": leader,
        "flags": flags,
        "slaves": [legacy_agent(machine, a) for a in agents],
        "recovered_slaves": [],
        "frameworks": [legacy_framework(machine, f) for f in machine.frameworks.values()],
        "completed_frameworks": [
            legacy_framework(machine, f) for f in machine.completed_frameworks
        ],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    }


def version_json(version: str) -> dict[str, Any]:
    return {"version": version, "build_date": "", "build_time": 0, "build_user": ""}
