"""Operator calls that change an agent's resources: v1 RESERVE_RESOURCES,
UNRESERVE_RESOURCES, CREATE_VOLUMES, DESTROY_VOLUMES, GROW_VOLUME, SHRINK_VOLUME and the
legacy ``/reserve``, ``/unreserve``, ``/create-volumes``, ``/destroy-volumes`` endpoints
(form-encoded ``slaveId`` and a JSON ``resources`` or ``volumes`` list, as Mesos).

Each becomes the matching offer operation on the agent's unused resources
(`MasterMachine.operator_operation`); answers: 202 done, 400 malformed, 403 not allowed by
``--acls``, 404 unknown agent, 409 the resources are not unused on the agent (or a volume is
in use). The core checks the ACLs; the principal of the request comes through `PRINCIPAL`.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from butte.master.http import text_reply
from butte.master.offer_ops import OperatorRefusal
from butte.master.shell_api import MasterShell

# The authenticated principal of the operator request being served (set per request task).
PRINCIPAL: ContextVar[str | None] = ContextVar("operator_principal", default=None)

# v1 call -> (its payload key, the offer operation it performs).
V1_CALLS = {
    "RESERVE_RESOURCES": ("reserve_resources", "RESERVE"),
    "UNRESERVE_RESOURCES": ("unreserve_resources", "UNRESERVE"),
    "CREATE_VOLUMES": ("create_volumes", "CREATE"),
    "DESTROY_VOLUMES": ("destroy_volumes", "DESTROY"),
    "GROW_VOLUME": ("grow_volume", "GROW_VOLUME"),
    "SHRINK_VOLUME": ("shrink_volume", "SHRINK_VOLUME"),
}

# Legacy endpoint -> (the form field holding the JSON list, the offer operation).
LEGACY_ENDPOINTS = {
    "/reserve": ("resources", "RESERVE"),
    "/unreserve": ("resources", "UNRESERVE"),
    "/create-volumes": ("volumes", "CREATE"),
    "/destroy-volumes": ("volumes", "DESTROY"),
}


def operate(
    server: MasterShell, agent_id: str, kind: str, payload: dict[str, Any], principal: str | None
) -> web.Response:
    """Carries out one operator operation and answers it."""
    try:
        effects = server.machine.operator_operation(
            agent_id, kind, payload, principal, server.clock.now()
        )
    except OperatorRefusal as e:
        return text_reply(e.status, e.message)
    server.apply(effects)
    return text_reply(202)


def v1_call(server: MasterShell, call_type: str, payload: dict[str, Any] | None) -> web.Response:
    """A v1 operator call of `V1_CALLS` (its payload already known to be present)."""
    key, kind = V1_CALLS[call_type]
    if not isinstance(payload, dict):
        return text_reply(400, f"Expecting '{key}' to be present")
    agent = payload.get("agent_id")
    agent_id = agent.get("value") if isinstance(agent, dict) else None
    if not isinstance(agent_id, str) or not agent_id:
        return text_reply(400, f"Expecting '{key}.agent_id' to be present")
    if payload.get("resource_provider_id") is not None:
        return text_reply(400, "No resource provider is known to this master")
    return operate(server, agent_id, kind, payload, PRINCIPAL.get())


class LegacyOperations:
    """The legacy endpoints of `LEGACY_ENDPOINTS`."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server

    def add_routes(self) -> None:
        for path, (field, kind) in LEGACY_ENDPOINTS.items():
            self.server.router.add(path, self._handler(field, kind))

    def _handler(self, field: str, kind: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method != "POST":
                return text_reply(405, "Expecting 'POST'", {"Allow": "POST"})
            form = await request.post() if request.can_read_body else {}
            agent_id = form.get("slaveId") or form.get("agentId")
            raw = form.get(field)
            if not isinstance(agent_id, str) or not agent_id:
                return text_reply(400, "Missing 'slaveId' in the request body")
            if not isinstance(raw, str) or not raw:
                return text_reply(400, f"Missing '{field}' in the request body")
            try:
                items = json.loads(raw)
            except ValueError as e:
                return text_reply(400, f"Failed to parse '{field}' as JSON: {e}")
            if not isinstance(items, list):
                return text_reply(400, f"'{field}' must be a JSON array of resources")
            return operate(self.server, agent_id, kind, {field: items}, request.get("principal"))

        return handle
