"""The agent's legacy ``/state`` JSON (``/slave(1)/state``), built from the core's records.

Shape per Mesos' agent state endpoint (docs/protocol.md §3.4): resources are name -> value maps,
attributes a name -> value map, frameworks carry executors carrying tasks. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from butte.agent.launching import allocated_role
from butte.agent.records import COMMAND, CUSTOM, Executor, Framework, Task
from butte.core import task_limits
from butte.core.flags import log_fields
from butte.core.messages import AGENT_CAPABILITIES
from butte.core.resources import ResourceError, Resources

if TYPE_CHECKING:
    from butte.agent.machine import AgentMachine


def parsed_resources(resources: list[dict[str, Any]]) -> Resources:
    """A JSON Resource list parsed (empty if unparsable): for views, which must not fail."""
    try:
        return Resources.from_json(resources)
    except (ResourceError, TypeError, ValueError, AttributeError):
        return Resources()


def container_resources(ex: Executor) -> Resources:
    """What an executor's container holds, as Mesos counts it: the executor's own resources
    and those of its tasks that have not ended (its limits under isolation)."""
    total = parsed_resources(ex.info.resources)
    for task in ex.live_tasks():
        total = total + parsed_resources(task.info.resources)
    return total


def task_json(agent: AgentMachine, fw: Framework, ex: Executor, task: Task) -> dict[str, Any]:
    """One task as the agent's state endpoint shows it."""
    info = task.info
    out: dict[str, Any] = {
        "id": info.task_id.value,
        "name": info.name,
        "framework_id": fw.id,
        # Mesos leaves executor_id empty for command tasks.
        "executor_id": "" if ex.kind == COMMAND else ex.id,
        "slave_id": agent.agent_id or "",
        "state": task.state,
        "resources": parsed_resources(info.resources).to_legacy_map(),
        "statuses": [_status_json(s) for s in task.statuses],
    }
    role = allocated_role(info.resources)
    if role is not None:
        out["role"] = role
    if info.labels is not None:
        # A plain array, as Mesos' json(Labels) writes it (mesos_exporter reads it so).
        out["labels"] = msgspec.to_builtins(info.labels).get("labels", [])
    for name in ("discovery", "container"):
        value = getattr(info, name)
        if value is not None:
            out[name] = msgspec.to_builtins(value)
    if info.limits:
        out["limits"] = task_limits.flat_json(info.limits)
    return out


def _status_json(status: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"state": status.state, "timestamp": status.timestamp}
    if status.container_status is not None:
        out["container_status"] = status.container_status
    if status.healthy is not None:
        out["healthy"] = status.healthy
    return out


def executor_json(agent: AgentMachine, fw: Framework, ex: Executor) -> dict[str, Any]:
    """One executor with its tasks (launched, queued, completed)."""
    info = ex.info
    live = ex.live_tasks()
    role = allocated_role(info.resources)
    return {
        "id": ex.id,
        "name": info.name or "",
        "source": info.source or "",
        "container": ex.container_id,
        "directory": ex.sandbox,
        "type": "CUSTOM" if ex.kind == CUSTOM else "DEFAULT",
        "resources": container_resources(ex).to_legacy_map(),
        **({"role": role} if role is not None else {}),
        "tasks": [task_json(agent, fw, ex, t) for t in live if t.launched],
        "queued_tasks": [task_json(agent, fw, ex, t) for t in live if not t.launched],
        "completed_tasks": [
            task_json(agent, fw, ex, t)
            for t in [*ex.completed_tasks, *(t for t in ex.tasks.values() if t not in live)]
        ],
    }


def framework_json(agent: AgentMachine, fw: Framework) -> dict[str, Any]:
    """One framework with its executors."""
    info = fw.info
    out: dict[str, Any] = {
        "id": fw.id,
        "name": info.name,
        "user": info.user,
        "failover_timeout": info.failover_timeout,
        "checkpoint": info.checkpoint,
        "hostname": info.hostname or "",
        "capabilities": [c.type for c in info.capabilities],
        "executors": [executor_json(agent, fw, ex) for ex in fw.executors.values()],
        "completed_executors": [executor_json(agent, fw, ex) for ex in fw.completed_executors],
    }
    if info.has_capability("MULTI_ROLE"):
        out["roles"] = list(info.roles)
    else:
        out["role"] = info.role if info.role is not None else "*"
    if info.principal is not None:
        out["principal"] = info.principal
    return out


def agent_state(
    agent: AgentMachine,
    *,
    start_time: float,
    master_hostname: str,
    flags: dict[str, str],
    build: dict[str, Any],
) -> dict[str, Any]:
    """The whole ``/state`` document."""
    config = agent.config
    total = agent.total_resources()
    resources = total.to_legacy_map()
    domain = {"domain": config.domain} if config.domain else {}
    return {
        **build,
        "start_time": start_time,
        "id": agent.agent_id or "",
        "pid": f"slave(1)@{config.ip}:{config.port}",
        "hostname": config.hostname,
        "port": config.port,
        "capabilities": list(AGENT_CAPABILITIES),
        **domain,
        "resources": resources,
        "unreserved_resources": total.unreserved().to_legacy_map(),
        "reserved_resources": {
            role: total.reserved(role).to_legacy_map()
            for role in sorted(total.roles())
            if role != "*"
        },
        "attributes": {a.name: a.legacy_value() for a in config.attributes},
        "master_hostname": master_hostname,
        "flags": flags,
        **log_fields(flags),
        "frameworks": [framework_json(agent, fw) for fw in agent.frameworks.values()],
        "completed_frameworks": [framework_json(agent, fw) for fw in agent.completed_frameworks],
    }
