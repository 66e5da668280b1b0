"""An agent's reservations and persistent volumes as rows to show an operator, with what
live tasks and executors hold of each: ``butte reservations`` and ``butte volumes`` build
them from GET_STATE, the web UI's agent page from ``/master/ui/agent-resources``
(docs/reservations.md "Looking at them").

A reservation row is one reservation stack (``eng``, or ``eng`` refined to ``eng/web``) of
one agent with everything reserved under it, persistent volumes included; a volume row is
one persistent volume. Both are plain JSON-able dicts, so the CLI's ``--json`` and the UI
show the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from butte.core import task_states
from butte.core.resources import Reservation, ResourceError, ResourceKey, Resources, Value

# Who holds resources on an agent (a task id, or ``executor <id>``) and what it holds.
Holder = tuple[str, Resources]
Stack = tuple[Reservation, ...]


def parse_list(items: Any) -> Resources:
    """A v1 Resource list as Resources, leaving out entries this version cannot read (a newer
    master's resource kinds must not make the whole listing fail)."""
    out = Resources()
    for raw in items if isinstance(items, list) else ():
        try:
            out = out + Resources.from_json([raw])
        except ResourceError:
            continue
    return out


def labels_of(reservation: Reservation) -> dict[str, str]:
    return dict(reservation.labels)


def plain_text(resources: Resources) -> str:
    """What ``resources`` amount to, without roles or volumes: ``cpus:1;disk:64``, the text
    form ``butte reserve`` takes; ``-`` when empty."""
    plain = Resources()
    for (name, _, _), value in resources.items():
        plain = plain + Resources({(name, (), None): value})
    return plain.to_text() or "-"


def _holders_of(holders: Sequence[Holder], match: Any) -> list[str]:
    return sorted({who for who, held in holders if any(match(k) for k, _ in held.items())})


def reservation_rows(
    agent_id: str, hostname: str, total: Resources, holders: Sequence[Holder]
) -> list[dict[str, Any]]:
    """One row per reservation stack on the agent (static ones included), ordered by role."""
    groups: dict[Stack, dict[ResourceKey, Value]] = {}
    for key, value in total.items():
        if key[1]:
            groups.setdefault(key[1], {})[key] = value
    rows = []
    for stack, items in sorted(groups.items(), key=lambda g: [s.role for s in g[0]]):
        reserved = Resources(items)
        used = Resources()
        for _, held in holders:
            for key, value in held.items():
                if key[1] == stack:
                    used = used + Resources({key: value})
        last = stack[-1]
        rows.append(
            {
                "agent_id": agent_id,
                "hostname": hostname,
                "role": last.role,
                "roles": [s.role for s in stack],
                "type": last.type,
                "principal": last.principal,
                "labels": labels_of(last),
                "reservations": [s.to_json() for s in stack],
                "resources": reserved.to_json("post"),
                "text": plain_text(reserved),
                "used": plain_text(used) if used else "",
                "used_by": _holders_of(holders, lambda k, st=stack: k[1] == st),
                "volumes": sorted(_volume_id(k) for k in items if _volume_id(k)),
            }
        )
    return rows


def _volume_id(key: ResourceKey) -> str:
    """The persistence id of a volume's key; empty for anything else."""
    return key[2].persistence_id or "" if key[2] is not None else ""


def volume_rows(
    agent_id: str, hostname: str, total: Resources, holders: Sequence[Holder]
) -> list[dict[str, Any]]:
    """One row per persistent volume on the agent, ordered by role and id."""
    rows = []
    for key, value in total.items():
        name, stack, disk = key
        if disk is None or disk.persistence_id is None or not isinstance(value, int):
            continue
        rows.append(
            {
                "agent_id": agent_id,
                "hostname": hostname,
                "id": disk.persistence_id,
                "role": stack[-1].role if stack else "*",
                "roles": [s.role for s in stack],
                "principal": disk.principal,
                "size": Resources({key: value}).scalar(name),
                "source": disk.source,
                "root": disk.root,
                "container_path": disk.container_path,
                "mode": disk.mode,
                "used_by": _holders_of(holders, lambda k, mine=key: k == mine),
                "resource": Resources({key: value}).to_json("post")[0],
            }
        )
    rows.sort(key=lambda r: (r["role"], r["id"]))
    return rows


def _value(obj: Any) -> str:
    if isinstance(obj, Mapping) and isinstance(obj.get("value"), str):
        return str(obj["value"])
    return ""


def holders_from_state(state: Mapping[str, Any]) -> dict[str, list[Holder]]:
    """agent id -> what its live tasks and executors hold, from a GET_STATE answer."""
    out: dict[str, list[Holder]] = {}
    tasks = state.get("get_tasks", {}).get("tasks", [])
    for task in tasks if isinstance(tasks, list) else ():
        if not isinstance(task, Mapping) or task_states.is_terminal(str(task.get("state", ""))):
            continue
        who = _value(task.get("task_id"))
        resources = parse_list(task.get("resources"))
        out.setdefault(_value(task.get("agent_id")), []).append((who, resources))
    executors = state.get("get_executors", {}).get("executors", [])
    for executor in executors if isinstance(executors, list) else ():
        info = executor.get("executor_info", {}) if isinstance(executor, Mapping) else {}
        who = "executor " + _value(info.get("executor_id"))
        resources = parse_list(info.get("resources"))
        out.setdefault(_value(executor.get("agent_id")), []).append((who, resources))
    return out


def rows_from_state(
    state: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(reservation rows, volume rows) of every agent of a GET_STATE answer."""
    holders = holders_from_state(state)
    reservations: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    agents = state.get("get_agents", {}).get("agents", [])
    for agent in agents if isinstance(agents, list) else ():
        info = agent.get("agent_info", {}) if isinstance(agent, Mapping) else {}
        agent_id, hostname = _value(info.get("id")), str(info.get("hostname", ""))
        total = parse_list(agent.get("total_resources"))
        held = holders.get(agent_id, [])
        reservations += reservation_rows(agent_id, hostname, total, held)
        volumes += volume_rows(agent_id, hostname, total, held)
    return reservations, volumes


def stacks_for(total: Resources, roles: Iterable[str]) -> list[Stack]:
    """The distinct reservation stacks on an agent whose last role is one of ``roles``."""
    wanted = set(roles)
    found = {key[1] for key, _ in total.items() if key[1] and key[1][-1].role in wanted}
    return sorted(found, key=lambda st: [(s.role, s.principal or "", s.labels) for s in st])
