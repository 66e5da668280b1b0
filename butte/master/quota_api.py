"""The master's quota endpoints (docs/quota.md): the operator calls GET_QUOTA, UPDATE_QUOTA,
SET_QUOTA and REMOVE_QUOTA (`butte.master.operator` delegates here) and the legacy ``/quota``
endpoint (GET; POST a QuotaRequest; DELETE ``/quota/<role>``). Validation is
`butte.master.quota`'s; a valid change goes to the core, which persists it in the registry
before the allocator uses it. ACLs: ``get_quotas`` filters what GET shows by role,
``update_quotas`` guards every change (403 naming the role).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from butte.master.allocator.quota import Quota
from butte.master.http import PrefixRouter, json_reply, text_reply
from butte.master.operator_views import quota_consumption
from butte.master.quota import QuotaError, apply_updates, parse_configs, parse_request, status_json
from butte.master.shell_api import MasterShell


class QuotaApi:
    """Quota calls and routes of one master shell."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server
        self.machine = server.machine

    def add_routes(self, router: PrefixRouter) -> None:
        router.add("/quota", self.endpoint)

    # -- the calls (principal: who asks, None when unauthenticated) ---------------------------

    def status(self, principal: str | None) -> dict[str, Any]:
        """QuotaStatus of the roles the principal may see (``get_quotas``)."""
        acls = self.server.acls
        quotas = {
            role: quota
            for role, quota in self.machine.allocator.quotas.items()
            if acls.allowed("get_quotas", principal, role)
        }
        return status_json(quotas)

    def update(self, raw_configs: Any, force: bool, principal: str | None) -> web.Response:
        """UPDATE_QUOTA: all or nothing."""
        try:
            updates = parse_configs(raw_configs)
        except QuotaError as e:
            return text_reply(400, f"Failed to validate UPDATE_QUOTA: {e}")
        return self._apply(updates, force, principal)

    def set(self, raw_request: Any, principal: str | None) -> web.Response:
        """SET_QUOTA / ``POST /quota``: guarantees (and limits equal to them) for a role that
        has no quota yet."""
        try:
            role, quota, force = parse_request(raw_request)
        except QuotaError as e:
            return text_reply(400, f"Failed to validate set quota request: {e}")
        if role in self.machine.allocator.quotas:
            return text_reply(
                400, f"Failed to validate set quota request: role '{role}' already has quota"
            )
        return self._apply([(role, quota)], force, principal)

    def remove(self, role: str, principal: str | None) -> web.Response:
        """REMOVE_QUOTA / ``DELETE /quota/<role>``."""
        if role not in self.machine.allocator.quotas:
            return text_reply(400, f"Failed to remove quota: role '{role[:255]}' has no quota set")
        return self._apply([(role, Quota())], True, principal)

    def _apply(
        self, updates: list[tuple[str, Quota]], force: bool, principal: str | None
    ) -> web.Response:
        forbidden = self._forbidden((role for role, _ in updates), principal)
        if forbidden is not None:
            return text_reply(403, forbidden)
        machine = self.machine
        whitelist = machine.options.roles
        for role, _ in updates:
            if whitelist is not None and role not in whitelist:
                return text_reply(400, f"Role '{role}' is not present in the master's --roles")
        used = quota_consumption(machine)
        try:
            result = apply_updates(
                machine.allocator.quotas,
                updates,
                force=force,
                cluster_total=_cluster_total(machine),
                consumed=lambda role: used.get(role, {}),
            )
        except QuotaError as e:
            return text_reply(400, str(e))
        self.server.apply(machine.update_quotas(result, self.server.clock.now()))
        return text_reply(200)

    def _forbidden(self, roles: Iterable[str], principal: str | None) -> str | None:
        for role in roles:
            if not self.server.acls.allowed("update_quotas", principal, role):
                who = principal or "an unauthenticated principal"
                return f"Forbidden: {who} may not update the quota of role '{role}'"
        return None

    # -- the legacy endpoint -----------------------------------------------------------------

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        """``/quota``: GET the status, POST a QuotaRequest, DELETE ``/quota/<role>``."""
        principal = request.get("principal")
        role = _role_in_path(request.path)
        if request.method == "GET" and role is None:
            return json_reply(self.status(principal))
        if request.method == "POST" and role is None:
            try:
                body = json.loads(await request.read() or b"null")
            except ValueError as e:
                return text_reply(400, f"Failed to parse the body as JSON: {e}")
            return self.set(body, principal)
        if request.method == "DELETE":
            if not role:
                return text_reply(400, "Expecting DELETE /quota/<role>")
            return self.remove(role, principal)
        return text_reply(405, "Expecting GET, POST or DELETE", {"Allow": "GET, POST, DELETE"})


def _role_in_path(path: str) -> str | None:
    """``/quota/eng/web`` (or ``/master/quota/...``) -> ``eng/web``; None for ``/quota``."""
    _, sep, rest = path.partition("/quota")
    rest = rest.strip("/")
    return rest if sep and rest else None


def _cluster_total(machine: Any) -> dict[str, int]:
    """Scalar totals of every registered agent (thousandths)."""
    out: dict[str, int] = {}
    for agent in machine.agents.values():
        for name, value in agent.total.quantities().items():
            out[name] = out.get(name, 0) + value
    return out
