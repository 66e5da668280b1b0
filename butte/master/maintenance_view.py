"""What a principal may see of maintenance under ``--acls``: the read calls
GET_MAINTENANCE_SCHEDULE / ``GET /maintenance/schedule`` (ACL ``get_maintenance_schedules``)
and GET_MAINTENANCE_STATUS / ``GET /maintenance/status`` (``get_maintenance_statuses``) are
never refused; as in Mesos, the answer holds only the machines the principal is authorized
for (the ACL object is the machine: its hostname, else its IP, lowercase, as for the
changing calls). A schedule window left without machines is left out; the status keeps the
draining and down machines allowed. Pure functions over the JSON documents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from butte.master.acls import Acls

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
