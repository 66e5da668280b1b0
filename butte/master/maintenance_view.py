"""What a principal may see of maintenance under ``--acls``: the read calls
GET_MAINTENANCE_SCHEDULE / ``GET /maintenance/schedule`` (ACL ``get_maintenance_schedules``)
and GET_MAINTENANCE_STATUS / ``GET /maintenance/status`` (``get_maintenance_statuses``) are
never refused; as in Mesos, the answer holds only the machines the principal is authorized
for (the ACL object is the machine: its hostname, else its IP, lowercase, as for the
changing calls). A schedule window left without machines is left out; the status keeps the
draining and down machines allowed. Pure functions over the JSON documents.

`machine_rows` is the web UI's listing of every machine (``GET /master/ui/maintenance``):
the scheduled and DOWN machines and those of the registered agents, each with its mode, its
window, the frameworks' answers and its agents, narrowed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from butte.master import maintenance
from butte.master.acls import Acls
from butte.master.state import Agent

SCHEDULE_ACTION = "get_maintenance_schedules"
STATUS_ACTION = "get_maintenance_statuses"

MachineFilter = Callable[[Any], bool]


def machine_object(machine: Any) -> str | None:
    """The ACL object of a MachineID JSON object (None if it names nothing usable)."""
    if not isinstance(machine, Mapping):
        return None
    name = machine.get("hostname") or machine.get("ip")
    return name.lower() if isinstance(name, str) and name else None


def machine_filter(acls: Acls, action: str, principal: str | None) -> MachineFilter | None:
    """Whether ``principal`` may see a machine under ``action``; None when no rule can hide
    any machine from anyone (the answer is served whole, at no per-machine cost)."""
    if acls.unrestricted(action):
        return None

    def allowed(machine: Any) -> bool:
        return acls.allowed(action, principal, machine_object(machine))

    return allowed


def filter_schedule(schedule: Mapping[str, Any], allowed: MachineFilter) -> dict[str, Any]:
    """A maintenance Schedule with only the machines allowed; windows left empty go."""
    windows = []
    for window in schedule.get("windows") or []:
        machines = [m for m in window.get("machine_ids") or [] if allowed(m)]
        if machines:
            windows.append({**window, "machine_ids": machines})
    return {**schedule, "windows": windows}


def filter_status(status: Mapping[str, Any], allowed: MachineFilter) -> dict[str, Any]:
    """A maintenance ClusterStatus with only the draining and down machines allowed."""
    draining = [d for d in status.get("draining_machines") or [] if allowed(d.get("id"))]
    down = [m for m in status.get("down_machines") or [] if allowed(m)]
    return {**status, "draining_machines": draining, "down_machines": down}


def schedule_for(acls: Acls, principal: str | None, schedule: dict[str, Any]) -> dict[str, Any]:
    """The schedule as ``principal`` may see it."""
    allowed = machine_filter(acls, SCHEDULE_ACTION, principal)
    return schedule if allowed is None else filter_schedule(schedule, allowed)


def status_for(acls: Acls, principal: str | None, status: dict[str, Any]) -> dict[str, Any]:
    """The maintenance status as ``principal`` may see it."""
    allowed = machine_filter(acls, STATUS_ACTION, principal)
    return status if allowed is None else filter_status(status, allowed)


# -- the web UI's machines listing (``GET /master/ui/maintenance``) -------------------------

MODES = (maintenance.DOWN, maintenance.DRAINING, maintenance.UP)
# Rows of one page of `/master/ui/maintenance` (the page's default and the most it asks).
DEFAULT_MACHINE_ROWS = 500
MAX_MACHINE_ROWS = 1000
# Agents listed on one machine's row (a machine with more says how many it has).
MAX_AGENTS_PER_MACHINE = 20
MAX_QUERY_LENGTH = 256


class MachineQueryError(ValueError):
    """A bad query of `/master/ui/maintenance`; the message is fit for a 400 answer."""


@dataclass(frozen=True, slots=True)
class MachineQuery:
    """``offset``, ``limit``, ``q`` (a substring of hostname, IP or an agent's id) and
    ``mode`` (UP, DRAINING or DOWN; empty: every mode) of `/master/ui/maintenance`."""

    offset: int = 0
    limit: int = DEFAULT_MACHINE_ROWS
    q: str = ""
    mode: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> MachineQuery:
        unknown = set(query) - {"offset", "limit", "q", "mode"}
        if unknown:
            raise MachineQueryError(f"Unknown parameter(s): {', '.join(sorted(unknown))[:200]}")

        def number(name: str, default: int, top: int) -> int:
            raw = query.get(name)
            if raw is None or raw == "":
                return default
            if not raw.isdigit() or len(raw) > 12 or int(raw) > top:
                raise MachineQueryError(f"'{name}' must be an integer from 0 to {top}")
            return int(raw)

        mode = query.get("mode", "").upper()
        if mode and mode not in MODES:
            raise MachineQueryError("'mode' must be UP, DRAINING or DOWN")
        q = query.get("q", "")
        if len(q) > MAX_QUERY_LENGTH:
            raise MachineQueryError(f"'q' is longer than {MAX_QUERY_LENGTH} characters")
        return cls(
            offset=number("offset", 0, 10**9),
            limit=number("limit", DEFAULT_MACHINE_ROWS, MAX_MACHINE_ROWS),
            q=q.lower(),
            mode=mode,
        )


def machine_rows(
    state: maintenance.Maintenance,
    agents: Iterable[Agent],
    status: Mapping[str, Any],
    query: MachineQuery,
    allowed: MachineFilter | None = None,
) -> dict[str, Any]:
    """One page of every machine the master knows, the web UI's maintenance listing: the
    machines of the schedule, the DOWN ones and those of the registered agents (an agent in
    no window is on its own machine, hostname and IP, UP). Each row is
    ``{hostname, ip, mode, unavailability, statuses, agents, agent_count}``: the window's
    unavailability (None when UP), the frameworks' answers to the inverse offers
    (``statuses`` of GET_MAINTENANCE_STATUS's draining machine), and the agents on it
    (``{id, hostname, port, connected}``, at most `MAX_AGENTS_PER_MACHINE`). Rows run DOWN,
    DRAINING (by window start), then UP, each by hostname and IP; ``counts`` gives how many
    of each mode match ``q``. ``allowed`` (`machine_filter` under ``get_maintenance_statuses``)
    leaves out the machines the caller may not see, agents' machines included."""
    on: dict[maintenance.MachineKey, list[Agent]] = {}
    for key in state.down:
        on.setdefault(key, [])
    for each in state.windows:
        for key in each.machines:
            on.setdefault(key, [])
    for agent in agents:
        key = state.machine_of(agent.hostname, agent.ip) or (agent.hostname.lower(), agent.ip)
        on.setdefault(key, []).append(agent)
    answers = {
        maintenance.parse_machine(d["id"]): d.get("statuses") or []
        for d in status.get("draining_machines") or []
        if isinstance(d, Mapping) and isinstance(d.get("id"), Mapping)
    }
    order = {mode: i for i, mode in enumerate(MODES)}
    counts = dict.fromkeys(MODES, 0)
    matching: list[tuple[tuple[int, int, str, str], maintenance.MachineKey, str]] = []
    for key, here in on.items():
        if allowed is not None and not allowed(maintenance.machine_json(key)):
            continue
        if query.q and not (
            query.q in key[0] or query.q in key[1] or any(query.q in a.agent_id for a in here)
        ):
            continue
        mode = state.mode(key)
        counts[mode] += 1
        if query.mode and mode != query.mode:
            continue
        scheduled = state.window_of(key)
        start = scheduled.start_ns if scheduled is not None else 0
        matching.append(((order[mode], start, key[0], key[1]), key, mode))
    matching.sort(key=lambda row: row[0])
    rows = []
    for _, key, mode in matching[query.offset : query.offset + query.limit]:
        window = state.window_of(key)
        here = sorted(on[key], key=lambda a: (a.hostname, a.port, a.agent_id))
        rows.append(
            {
                "hostname": key[0],
                "ip": key[1],
                "mode": mode,
                "unavailability": window.unavailability_json() if window else None,
                "statuses": answers.get(key, []),
                "agents": [
                    {
                        "id": a.agent_id,
                        "hostname": a.hostname,
                        "port": a.port,
                        "connected": a.connected,
                    }
                    for a in here[:MAX_AGENTS_PER_MACHINE]
                ],
                "agent_count": len(here),
            }
        )
    return {
        "total": len(matching),
        "offset": query.offset,
        "limit": query.limit,
        "counts": counts,
        "rows": rows,
    }
