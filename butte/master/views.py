"""JSON shapes the master sends: scheduler events, offers, task statuses, MasterInfo.

Pure functions from master records to JSON-able dicts, shared by the core (events it emits)
and the HTTP shell (state endpoints).
"""

from __future__ import annotations

import socket
from typing import Any

from butte.core import task_limits
from butte.core.messages import FrameworkInfo, TaskStatus, to_builtins
from butte.core.resources import Resources
from butte.master.state import Agent, Framework, Offer, Task


def value(v: str) -> dict[str, str]:
    """A Mesos id object."""
    return {"value": v}


def resource_format(info: FrameworkInfo) -> str:
    """Frameworks with RESERVATION_REFINEMENT get the ``reservations`` form
    (docs/protocol.md §1.6)."""
    return "post" if info.has_capability("RESERVATION_REFINEMENT") else "pre"


def ip_as_int(ip: str) -> int:
    """MasterInfo.ip: the IPv4 address bytes read as a little-endian uint32
    (docs/protocol.md §4.2)."""
    try:
        return int.from_bytes(socket.inet_aton(ip), "little")
    except OSError:
        return 0


def master_info(master_id: str, ip: str, port: int, hostname: str, version: str) -> dict:
    return {
        "id": master_id,
        "ip": ip_as_int(ip),
        "port": port,
        "pid": f"master@{ip}:{port}",
        "hostname": hostname,
        "version": version,
        "address": {"hostname": hostname, "ip": ip, "port": port},
        "capabilities": [{"type": "AGENT_UPDATE"}, {"type": "AGENT_DRAINING"}],
    }


# (resources, format, role) -> JSON list. Offers of agents of one shape repeat every cycle
# and state views repeat the same few shapes; encoding each once saves most of their cost.
_RESOURCES_JSON: dict[tuple[Resources, str, str | None], list[dict]] = {}
_MAX_RESOURCES_JSON = 4096


def resources_json(res: Resources, fmt: str, role: str | None = None) -> list[dict]:
    """``res.to_json(fmt, allocation_role=role)``, memoized. The list is shared: read-only."""
    key = (res, fmt, role)
    out = _RESOURCES_JSON.get(key)
    if out is None:
        if len(_RESOURCES_JSON) >= _MAX_RESOURCES_JSON:
            _RESOURCES_JSON.clear()
        out = _RESOURCES_JSON[key] = res.to_json(fmt, allocation_role=role)
    return out


def offer_json(offer: Offer, agent: Agent, framework: Framework, agent_ip: str) -> dict:
    out: dict[str, Any] = {
        "id": value(offer.offer_id),
        "framework_id": value(offer.framework_id),
        "agent_id": value(offer.agent_id),
        "hostname": agent.hostname,
        "url": {
            "scheme": "http",
            "address": {"hostname": agent.hostname, "ip": agent_ip, "port": agent.port},
            "path": "/slave(1)",
        },
        "allocation_info": {"role": offer.role},
        "resources": resources_json(offer.resources, resource_format(framework.info), offer.role),
    }
    if agent.attributes:
        out["attributes"] = [a.to_json() for a in agent.attributes]
    executor_ids = framework.executors.get(agent.agent_id)
    if executor_ids:
        out["executor_ids"] = [value(e) for e in sorted(executor_ids)]
    if agent.info.domain:
        out["domain"] = agent.info.domain
    return out


def status_json(status: TaskStatus) -> dict[str, Any]:
    return to_builtins(status)


def update_event(status: TaskStatus) -> dict[str, Any]:
    return {"type": "UPDATE", "update": {"status": status_json(status)}}


def error_event(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "error": {"message": message}}


def task_user(task: Task) -> str | None:
    """The user a task runs as when its TaskInfo names one, as Mesos' ``Task.user`` (the
    command's ``user``, else its executor's command's); None: its framework's user."""
    info = task.info
    if info is None:
        return None
    if info.command is not None and info.command.user is not None:
        return info.command.user
    executor = info.executor
    if executor is not None and executor.command is not None:
        return executor.command.user
    return None


def task_json(task: Task, fmt: str = "endpoint") -> dict[str, Any]:
    """A task in the v1 ``Task`` shape (operator API, agent re-registration)."""
    out: dict[str, Any] = {
        "name": task.name,
        "task_id": value(task.task_id),
        "framework_id": value(task.framework_id),
        "agent_id": value(task.agent_id),
        "state": task.state,
        "resources": task.resources.to_json(fmt, allocation_role=task.role),
        "statuses": [status_json(s) for s in task.statuses],
    }
    if task.executor_id is not None:
        out["executor_id"] = value(task.executor_id)
    if task.status_update_state:
        out["status_update_state"] = task.status_update_state
    if task.status_update_uuid:
        out["status_update_uuid"] = task.status_update_uuid
    user = task_user(task)
    if user is not None:
        out["user"] = user
    info = task.info
    if info is not None:
        for key in ("labels", "discovery", "container", "health_check", "kill_policy"):
            v = getattr(info, key)
            if v is not None:
                out[key] = v if isinstance(v, dict) else to_builtins(v)
        if info.limits:
            out["limits"] = task_limits.v1_json(info.limits)
    return out


def framework_info_json(info: FrameworkInfo) -> dict[str, Any]:
    """FrameworkInfo with the explicit proto defaults Mesos always writes."""
    out = to_builtins(info)
    out.setdefault("failover_timeout", info.failover_timeout)
    out.setdefault("checkpoint", info.checkpoint)
    return out
