"""The master's operator API v1 (``POST /api/v1``, also ``/api/v1/operator`` and anything
else under ``/api/v1`` that no longer prefix claims; docs/protocol.md §3.1, 3.2).

`OperatorApi` is created by the server's ``_add_routes`` and registers every operator-facing
route: the v1 endpoint, the event stream (`butte.master.events`), the legacy endpoints
(`butte.master.legacy`), sandbox files through agents (`butte.master.files`) and ``GET
/metrics`` (Prometheus text of ``/metrics/snapshot``).

Calls served: GET_HEALTH, GET_FLAGS, GET_VERSION, GET_METRICS, GET_LOGGING_LEVEL,
SET_LOGGING_LEVEL, LIST_FILES, READ_FILE, GET_STATE, GET_AGENTS, GET_FRAMEWORKS,
GET_EXECUTORS, GET_TASKS, GET_ROLES, GET_WEIGHTS, UPDATE_WEIGHTS, GET_MASTER, TEARDOWN,
MARK_AGENT_GONE, DEACTIVATE_AGENT, REACTIVATE_AGENT, DRAIN_AGENT, SUBSCRIBE, the maintenance
calls (GET_MAINTENANCE_SCHEDULE, UPDATE_MAINTENANCE_SCHEDULE, GET_MAINTENANCE_STATUS,
START_MAINTENANCE, STOP_MAINTENANCE: `butte.master.maintenance_http`), the quota calls
(GET_QUOTA, UPDATE_QUOTA, SET_QUOTA, REMOVE_QUOTA: `butte.master.quota_api`), and
GET_OPERATIONS, RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES, DESTROY_VOLUMES,
GROW_VOLUME, SHRINK_VOLUME (`butte.master.operations_api`).
Anything else answers 400. Synchronous answers are ``{"type": CALL, "<call>": {...}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from butte import MESOS_COMPAT_VERSION
from butte.core.messages import to_builtins
from butte.core.operator import (
    MASTER_CALL_TYPES,
    OperatorCall,
    parse_call,
)
from butte.master import operations_api, operator_views, state_json, view_acls
from butte.master.acls import endpoint_forbidden
from butte.master.effects import Effect
from butte.master.events import OperatorSubscribers
from butte.master.files import OPERATOR_REQUEST, MasterFiles
from butte.master.http import json_reply, read_api_body, text_reply
from butte.master.legacy import LegacyEndpoints
from butte.master.maintenance_http import (
    MAINTENANCE_ACTIONS,
    MaintenanceEndpoints,
    maintenance_acl_checks,
)
from butte.master.metrics import master_metrics
from butte.master.quota_api import QuotaApi
from butte.master.shell_api import MasterShell
from butte.operator_common import PROMETHEUS_CONTENT_TYPE, LoggingLevel, prometheus_text

Answer = dict[str, Any] | web.Response | None

# The object of the ``get_endpoints`` ACL for the metrics, whatever the prefix (Mesos serves
# them from libprocess' ``/metrics/snapshot``).
METRICS_PATH = "/metrics/snapshot"

# The authenticated principal of the request being served (each request runs in its own task,
# so its own context): calls whose answer depends on ACLs per object read it.
_PRINCIPAL: ContextVar[str | None] = ContextVar("operator_principal", default=None)


# Operator calls on agents and the ACL action that guards each.
_AGENT_ACTIONS = {
    "MARK_AGENT_GONE": "mark_agents_gone",
    "DRAIN_AGENT": "drain_agents",
    "DEACTIVATE_AGENT": "deactivate_agents",
    "REACTIVATE_AGENT": "deactivate_agents",
}


class OperatorApi:
    """Operator-facing routes of one master (see the module docstring)."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server
        self.machine = server.machine
        self.events = OperatorSubscribers(
            self.machine, limit=server.config.max_operator_event_stream_subscribers
        )
        self.files = MasterFiles(server)
        self.legacy = LegacyEndpoints(server)
        self.maintenance = MaintenanceEndpoints(server)
        self.quota = QuotaApi(server)
        self.logging = LoggingLevel()
        router = server.router
        router.add("/api/v1", self.api)
        router.add("/metrics", self.prometheus)
        self.files.add_routes(router)
        self.legacy.add_routes(router)
        self.maintenance.add_routes(router)
        self.quota.add_routes(router)
        operations_api.LegacyOperations(server).add_routes()

    def publish(self, event: dict[str, Any]) -> None:
        """An `OperatorEvent` from the core, for every subscriber."""
        self.events.publish(event)

    def now(self) -> float:
        return self.server.clock.now()

    def metrics(self) -> dict[str, float]:
        """The ``/metrics/snapshot`` figures."""
        out = master_metrics(self.machine, self.now(), self.server.leadership.leading)
        out["master/scheduler_streams_closed_slow"] = float(self.server.slow_streams_closed)
        out["master/connections_refused"] = float(self.server.connection_limit.refused)
        out.update(self.server.registrar.metrics(self.now()))
        return out

    # -- HTTP --------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        body = await read_api_body(request)
        if isinstance(body, web.StreamResponse):
            return body
        call = parse_call(body, "master")
        if isinstance(call, tuple):
            return text_reply(*call)
        view = view_acls.viewer(
            self.server.acls, request.get("principal"), self.machine, roles=True
        )
        if call.type == "SUBSCRIBE":
            return await self.events.serve(request, self.get_state, view)
        handler = MASTER_CALLS.get(call.type)
        if handler is None:
            return text_reply(400, f"Unsupported master::Call type '{call.type[:60]}'")
        operations_api.PRINCIPAL.set(request.get("principal"))
        forbidden = self._unauthorized(call, request.get("principal"))
        if forbidden is not None:
            return text_reply(403, forbidden)
        OPERATOR_REQUEST.set(request)  # this request's task only: LIST_FILES / READ_FILE
        _PRINCIPAL.set(request.get("principal"))
        answer = await handler(self, call)
        if isinstance(answer, web.Response):
            return answer
        if answer is None:
            return text_reply(200)
        if view is not None:  # --acls restrict views: only what this principal may see
            answer = view.answer(call.type, answer)
        return json_reply({"type": call.type, call.type.lower(): answer})

    def _unauthorized(self, call: OperatorCall, principal: str | None) -> str | None:
        """Why ``principal`` may not make ``call`` under ``--acls``, or None."""
        acls = self.server.acls
        checks: list[tuple[str, str | None]] = []
        if call.teardown is not None:
            fw = self.machine.frameworks.get(call.teardown.framework_id.value)
            checks.append(("teardown_frameworks", fw.info.principal if fw else None))
        elif call.type in _AGENT_ACTIONS:
            checks.append((_AGENT_ACTIONS[call.type], None))
        elif call.type == "SET_LOGGING_LEVEL":
            checks.append(("set_log_level", None))
        elif call.type == "GET_FLAGS":  # Mesos' `getFlags`: Forbidden without VIEW_FLAGS
            checks.append(("view_flags", None))
        elif call.type in MAINTENANCE_ACTIONS:
            checks += maintenance_acl_checks(call.type, call)
        for action, obj in checks:
            if not acls.allowed(action, principal, obj):
                who = principal or "an unauthenticated principal"
                return f"Forbidden: {who} may not {call.type} ({action})"
        return None

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        """``/metrics``: ``/metrics/snapshot`` as Prometheus text, so guarded as that path
        by the ``get_endpoints`` ACL."""
        refusal = endpoint_forbidden(self.server.acls, request.get("principal"), METRICS_PATH)
        if refusal is not None:
            return text_reply(403, refusal)
        return web.Response(
            body=prometheus_text(self.metrics(), "Mesos master metric"),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )

    def get_state(self) -> dict[str, Any]:
        """GetState: tasks, executors, frameworks and agents."""
        # Built by butte.master.snapshot: each task's JSON is reused while it is unchanged.
        return self.server.state_snapshots.get_state(self.machine)

    # -- read-only calls ---------------------------------------------------------------------

    async def call_get_health(self, call: OperatorCall) -> Answer:
        return {"healthy": True}

    async def call_get_flags(self, call: OperatorCall) -> Answer:
        flags = self.server.config.flags
        return {"flags": [{"name": k, "value": v} for k, v in sorted(flags.items())]}

    async def call_get_version(self, call: OperatorCall) -> Answer:
        return {"version_info": state_json.version_json(MESOS_COMPAT_VERSION)}

    async def call_get_metrics(self, call: OperatorCall) -> Answer:
        return {"metrics": [{"name": k, "value": v} for k, v in sorted(self.metrics().items())]}

    async def call_get_logging_level(self, call: OperatorCall) -> Answer:
        return {"level": self.logging.level}

    async def call_get_state(self, call: OperatorCall) -> Answer:
        return self.get_state()

    async def call_get_agents(self, call: OperatorCall) -> Answer:
        return operator_views.get_agents(self.machine)

    async def call_get_frameworks(self, call: OperatorCall) -> Answer:
        return operator_views.get_frameworks(self.machine)

    async def call_get_executors(self, call: OperatorCall) -> Answer:
        return operator_views.get_executors(self.machine)

    async def call_get_tasks(self, call: OperatorCall) -> Answer:
        return operator_views.get_tasks(self.machine)

    async def call_get_roles(self, call: OperatorCall) -> Answer:
        answer = operator_views.get_roles(self.machine)
        roles = self.legacy.visible_roles(_PRINCIPAL.get(), answer["roles"])
        return answer if roles is answer["roles"] else {**answer, "roles": roles}

    async def call_get_weights(self, call: OperatorCall) -> Answer:
        return {"weight_infos": self.legacy.visible_weights(_PRINCIPAL.get())}

    async def call_get_master(self, call: OperatorCall) -> Answer:
        out = {"master_info": self.machine.master_info, "start_time": self.machine.start_time}
        if self.server.elected_time is not None:  # a standby has none, as in Mesos
            out["elected_time"] = self.server.elected_time
        return out

    async def call_get_operations(self, call: OperatorCall) -> Answer:
        return {"operations": self.machine.operations_json()}

    async def call_get_quota(self, call: OperatorCall) -> Answer:
        return {"status": self.quota.status(_PRINCIPAL.get())}

    async def call_update_quota(self, call: OperatorCall) -> Answer:
        payload = call.update_quota
        assert payload is not None
        return self.quota.update(payload.quota_configs, payload.force, _PRINCIPAL.get())

    async def call_set_quota(self, call: OperatorCall) -> Answer:
        assert call.set_quota is not None
        return self.quota.set(call.set_quota.quota_request, _PRINCIPAL.get())

    async def call_remove_quota(self, call: OperatorCall) -> Answer:
        assert call.remove_quota is not None
        return self.quota.remove(call.remove_quota.role, _PRINCIPAL.get())

    async def call_get_maintenance_status(self, call: OperatorCall) -> Answer:
        return {"status": self.maintenance.status_json(_PRINCIPAL.get())}

    async def call_get_maintenance_schedule(self, call: OperatorCall) -> Answer:
        return {"schedule": self.maintenance.schedule_json(_PRINCIPAL.get())}

    async def call_update_maintenance_schedule(self, call: OperatorCall) -> Answer:
        payload = call.update_maintenance_schedule
        assert payload is not None
        if "schedule" not in payload:
            return text_reply(400, "Expecting 'update_maintenance_schedule.schedule'")
        return self.maintenance.change("schedule", payload["schedule"], None, check_acl=False)

    async def call_start_maintenance(self, call: OperatorCall) -> Answer:
        payload = call.start_maintenance
        assert payload is not None
        return self.maintenance.change("down", payload.get("machines"), None, check_acl=False)

    async def call_stop_maintenance(self, call: OperatorCall) -> Answer:
        payload = call.stop_maintenance
        assert payload is not None
        return self.maintenance.change("up", payload.get("machines"), None, check_acl=False)

    async def call_list_files(self, call: OperatorCall) -> Answer:
        assert call.list_files is not None
        return await self.files.operator_call("LIST_FILES", to_builtins(call.list_files))

    async def call_read_file(self, call: OperatorCall) -> Answer:
        assert call.read_file is not None
        return await self.files.operator_call("READ_FILE", to_builtins(call.read_file))

    # -- calls that change something ---------------------------------------------------------

    async def call_set_logging_level(self, call: OperatorCall) -> Answer:
        payload = call.set_logging_level
        assert payload is not None
        error = self.logging.set(payload.level, payload.duration.nanoseconds / 1e9)
        return text_reply(400, error) if error else None

    async def call_update_weights(self, call: OperatorCall) -> Answer:
        assert call.update_weights is not None
        infos = call.update_weights.weight_infos
        return self.legacy.update_weights([(i.role, i.weight) for i in infos], _PRINCIPAL.get())

    async def call_teardown(self, call: OperatorCall) -> Answer:
        assert call.teardown is not None
        fid = call.teardown.framework_id.value
        effects = self.machine.teardown_framework(fid, self.now())
        if effects is None:
            return text_reply(400, f"No framework found with ID {fid[:255]}")
        self.server.apply(effects)
        return None

    async def call_deactivate_agent(self, call: OperatorCall) -> Answer:
        assert call.deactivate_agent is not None
        return self._agent_action(
            call.deactivate_agent.agent_id.value, self.machine.deactivate_agent
        )

    async def call_reactivate_agent(self, call: OperatorCall) -> Answer:
        assert call.reactivate_agent is not None
        error, effects = self.machine.reactivate_agent(
            call.reactivate_agent.agent_id.value, self.now()
        )
        if error is not None:
            return text_reply(400, error)
        self.server.apply(effects)
        return None

    async def call_drain_agent(self, call: OperatorCall) -> Answer:
        drain = call.drain_agent
        assert drain is not None
        grace = None
        if drain.max_grace_period is not None:
            if drain.max_grace_period.nanoseconds < 0:
                return text_reply(400, "'max_grace_period' must not be negative")
            grace = drain.max_grace_period.nanoseconds / 1e9
        return self._agent_action(
            drain.agent_id.value,
            lambda agent_id, now: self.machine.drain_agent(agent_id, grace, drain.mark_gone, now),
        )

    def _agent_action(
        self,
        agent_id: str,
        action: Callable[[str, float], list[Effect] | None],
        unknown: Answer = None,
    ) -> Answer:
        """Runs an operator action on one agent; ``unknown`` (default: Mesos' 400 "Unknown
        agent") answers when the master does not know the agent."""
        effects = action(agent_id, self.now())
        if effects is None:
            return unknown or text_reply(400, "Unknown agent")
        self.server.apply(effects)
        return None

    # -- reservations and volumes (butte.master.operations_api) ------------------------------

    async def call_reserve_resources(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.reserve_resources)

    async def call_unreserve_resources(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.unreserve_resources)

    async def call_create_volumes(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.create_volumes)

    async def call_destroy_volumes(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.destroy_volumes)

    async def call_grow_volume(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.grow_volume)

    async def call_shrink_volume(self, call: OperatorCall) -> Answer:
        return operations_api.v1_call(self.server, call.type, call.shrink_volume)

    async def call_mark_agent_gone(self, call: OperatorCall) -> Answer:
        assert call.mark_agent_gone is not None
        agent_id = call.mark_agent_gone.agent_id.value
        return self._agent_action(
            agent_id,
            self.machine.mark_agent_gone,
            text_reply(404, f"Agent '{agent_id[:255]}' not found"),
        )


CallHandler = Callable[[OperatorApi, OperatorCall], Awaitable[Answer]]

# The calls served, by type (SUBSCRIBE, a stream, is taken before this table). Grep a call
# type to find its handler.
MASTER_CALLS: dict[str, CallHandler] = {
    "GET_HEALTH": OperatorApi.call_get_health,
    "GET_FLAGS": OperatorApi.call_get_flags,
    "GET_VERSION": OperatorApi.call_get_version,
    "GET_METRICS": OperatorApi.call_get_metrics,
    "GET_LOGGING_LEVEL": OperatorApi.call_get_logging_level,
    "SET_LOGGING_LEVEL": OperatorApi.call_set_logging_level,
    "LIST_FILES": OperatorApi.call_list_files,
    "READ_FILE": OperatorApi.call_read_file,
    "GET_STATE": OperatorApi.call_get_state,
    "GET_AGENTS": OperatorApi.call_get_agents,
    "GET_FRAMEWORKS": OperatorApi.call_get_frameworks,
    "GET_EXECUTORS": OperatorApi.call_get_executors,
    "GET_TASKS": OperatorApi.call_get_tasks,
    "GET_ROLES": OperatorApi.call_get_roles,
    "GET_WEIGHTS": OperatorApi.call_get_weights,
    "UPDATE_WEIGHTS": OperatorApi.call_update_weights,
    "GET_MASTER": OperatorApi.call_get_master,
    "GET_OPERATIONS": OperatorApi.call_get_operations,
    "GET_QUOTA": OperatorApi.call_get_quota,
    "UPDATE_QUOTA": OperatorApi.call_update_quota,
    "SET_QUOTA": OperatorApi.call_set_quota,
    "REMOVE_QUOTA": OperatorApi.call_remove_quota,
    "GET_MAINTENANCE_STATUS": OperatorApi.call_get_maintenance_status,
    "GET_MAINTENANCE_SCHEDULE": OperatorApi.call_get_maintenance_schedule,
    "UPDATE_MAINTENANCE_SCHEDULE": OperatorApi.call_update_maintenance_schedule,
    "START_MAINTENANCE": OperatorApi.call_start_maintenance,
    "STOP_MAINTENANCE": OperatorApi.call_stop_maintenance,
    "TEARDOWN": OperatorApi.call_teardown,
    "MARK_AGENT_GONE": OperatorApi.call_mark_agent_gone,
    "DEACTIVATE_AGENT": OperatorApi.call_deactivate_agent,
    "REACTIVATE_AGENT": OperatorApi.call_reactivate_agent,
    "DRAIN_AGENT": OperatorApi.call_drain_agent,
    "RESERVE_RESOURCES": OperatorApi.call_reserve_resources,
    "UNRESERVE_RESOURCES": OperatorApi.call_unreserve_resources,
    "CREATE_VOLUMES": OperatorApi.call_create_volumes,
    "DESTROY_VOLUMES": OperatorApi.call_destroy_volumes,
    "GROW_VOLUME": OperatorApi.call_grow_volume,
    "SHRINK_VOLUME": OperatorApi.call_shrink_volume,
}

# Calls of the protocol butte does not implement (docs/operating.md "Not yet"): answered 400.
UNSUPPORTED_MASTER_CALLS: frozenset[str] = frozenset()

# Every call type of the protocol is either served or refused on purpose; a new one (or a
# typo) fails here, at import.
if MASTER_CALLS.keys() | UNSUPPORTED_MASTER_CALLS | {"SUBSCRIBE"} != MASTER_CALL_TYPES or (
    MASTER_CALLS.keys() & UNSUPPORTED_MASTER_CALLS
):
    raise ImportError("master operator call table out of step with MASTER_CALL_TYPES")
