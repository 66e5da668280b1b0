"""The master's maintenance endpoints: the operator calls UPDATE_MAINTENANCE_SCHEDULE,
GET_MAINTENANCE_SCHEDULE, GET_MAINTENANCE_STATUS, START_MAINTENANCE and STOP_MAINTENANCE
(served through `butte.master.operator`), and the legacy ``/maintenance/schedule`` (GET,
POST), ``/maintenance/status`` (GET), ``/machine/down`` and ``/machine/up`` (POST a JSON
array of MachineIDs). Validation and state are the core's (`butte.master.maintenance_events`);
this module parses HTTP, checks ``--acls`` (``get_maintenance_schedules``,
``update_maintenance_schedules``, ``start_maintenances``, ``stop_maintenances``,
``get_maintenance_statuses``) and applies the effects. docs/maintenance.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from butte.master.http import PrefixRouter, json_reply, text_reply
from butte.master.maintenance_view import schedule_for, status_for
from butte.master.shell_api import MasterShell

MAX_BODY = 16 * 1024 * 1024

# action -> ACL action
_CHANGES = {
    "schedule": "update_maintenance_schedules",
    "down": "start_maintenances",
    "up": "stop_maintenances",
}


# Operator call -> ACL action that guards it.
MAINTENANCE_ACTIONS = {
    "GET_MAINTENANCE_SCHEDULE": "get_maintenance_schedules",
    "GET_MAINTENANCE_STATUS": "get_maintenance_statuses",
    "UPDATE_MAINTENANCE_SCHEDULE": "update_maintenance_schedules",
    "START_MAINTENANCE": "start_maintenances",
    "STOP_MAINTENANCE": "stop_maintenances",
}


def maintenance_acl_checks(call_type: str, call: Any) -> list[tuple[str, str | None]]:
    """(ACL action, object) pairs a maintenance operator call must pass: one per machine
    it names. The read-only calls pass none: their answers are filtered instead
    (`butte.master.maintenance_view`)."""
    acl = MAINTENANCE_ACTIONS[call_type]
    if call_type in ("GET_MAINTENANCE_SCHEDULE", "GET_MAINTENANCE_STATUS"):
        return []
    names: list[str] = []
    if call_type == "UPDATE_MAINTENANCE_SCHEDULE":
        payload = call.update_maintenance_schedule or {}
        names = machines_named("schedule", payload.get("schedule"))
    elif call_type in ("START_MAINTENANCE", "STOP_MAINTENANCE"):
        payload = getattr(call, call_type.lower()) or {}
        names = machines_named("down", payload.get("machines"))
    return [(acl, name) for name in names] or [(acl, None)]


def machines_named(action: str, payload: object) -> list[str]:
    """The machines (hostname, else IP) a change names, as ACL objects; malformed entries
    are left to the core's validation."""
    if action == "schedule":
        windows = payload.get("windows") if isinstance(payload, Mapping) else None
        ids: list[Any] = []
        for window in windows if isinstance(windows, list) else []:
            machine_ids = window.get("machine_ids") if isinstance(window, Mapping) else None
            ids.extend(machine_ids if isinstance(machine_ids, list) else [])
    else:
        ids = payload if isinstance(payload, list) else []
    out = []
    for machine in ids:
        if isinstance(machine, Mapping):
            name = machine.get("hostname") or machine.get("ip")
            if isinstance(name, str):
                out.append(name.lower())
    return out


class MaintenanceEndpoints:
    """Maintenance handlers bound to one master shell."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server
        self.machine = server.machine

    def add_routes(self, router: PrefixRouter) -> None:
        router.add("/maintenance/schedule", self.schedule)
        router.add("/maintenance/status", self.status)
        router.add("/machine/down", self.machine_down)
        router.add("/machine/up", self.machine_up)

    # -- shared by the operator API and the legacy endpoints ---------------------------------

    def forbidden(self, action: str, principal: str | None, objects: Iterable[str | None]) -> bool:
        acls = self.server.acls
        return not all(acls.allowed(action, principal, obj) for obj in objects)

    def change(
        self, action: str, payload: object, principal: str | None, check_acl: bool = True
    ) -> web.Response | None:
        """Applies a schedule update (``schedule``), START (``down``) or STOP (``up``):
        None on success, else the 400/403 reply (nothing changed). The operator API checks
        ACLs before (``check_acl=False``)."""
        acl = _CHANGES[action]
        names: list[str | None] = [*machines_named(action, payload)] or [None]
        if check_acl and self.forbidden(acl, principal, names):
            who = principal or "an unauthenticated principal"
            return text_reply(403, f"Forbidden: {who} may not change maintenance ({acl})")
        error, effects = self.machine.maintenance_call(action, payload, self.server.clock.now())
        if error is not None:
            return text_reply(400, error)
        self.server.apply(effects)
        return None

    def schedule_json(self, principal: str | None) -> dict[str, Any]:
        """The schedule, with the machines ``principal`` may see (``--acls``)."""
        return schedule_for(self.server.acls, principal, self.machine.maintenance.schedule_json())

    def status_json(self, principal: str | None) -> dict[str, Any]:
        """The maintenance status, with the machines ``principal`` may see (``--acls``)."""
        status = self.machine.maintenance_status(self.server.clock.now())
        return status_for(self.server.acls, principal, status)

    # -- legacy endpoints --------------------------------------------------------------------

    async def schedule(self, request: web.Request) -> web.StreamResponse:
        principal = request.get("principal")
        if request.method == "GET":
            return json_reply(self.schedule_json(principal))
        if request.method != "POST":
            return text_reply(405, "Expecting 'GET' or 'POST'", {"Allow": "GET, POST"})
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return self.change("schedule", body, principal) or text_reply(200)

    async def status(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return text_reply(405, "Expecting 'GET'", {"Allow": "GET"})
        status = self.status_json(request.get("principal"))
        return json_reply(status)

    async def machine_down(self, request: web.Request) -> web.StreamResponse:
        return await self._machines(request, "down")

    async def machine_up(self, request: web.Request) -> web.StreamResponse:
        return await self._machines(request, "up")

    async def _machines(self, request: web.Request, action: str) -> web.StreamResponse:
        if request.method != "POST":
            return text_reply(405, "Expecting 'POST'", {"Allow": "POST"})
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return self.change(action, body, request.get("principal")) or text_reply(200)


async def _json_body(request: web.Request) -> object:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return text_reply(413, f"Request body larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return text_reply(413, f"Request body larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw or b"null")
    except (ValueError, RecursionError) as e:
        return text_reply(400, f"Failed to parse the body as JSON: {e}")
