"""The master's legacy (unversioned) JSON endpoints beyond ``/state`` (docs/protocol.md §3.4):
``/master/state-summary``, ``/master/frameworks``, ``/master/slaves``, ``/master/tasks``,
``/master/roles``, ``/master/weights`` (GET and PUT), ``/master/flags`` and
``/master/teardown``. Shapes follow Mesos' read-only handlers: ``slave`` spellings, resources
as name -> value maps, times in epoch seconds. Every one accepts ``?jsonp=``
(`butte.master.http.jsonp_middleware`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from butte.core.resources import validate_role
from butte.master import operator_views, state_json, view_acls, views
from butte.master.acls import forbidden
from butte.master.http import PrefixRouter, json_reply, text_reply
from butte.master.quota import role_quota_json
from butte.master.shell_api import MasterShell
from butte.master.state import Framework, Task

SUMMARY_STATES = (
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_UNREACHABLE",
)
# Mesos' TASK_LIMIT: the tasks /master/tasks answers when the request names no `limit`.
TASK_LIMIT = 100
_SIZE_T = 2**64
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# stout's numify<int>: boost's lexical_cast of a decimal (sign optional), or a "0x" hexadecimal.
_C_INT = re.compile(r"(-?)0[xX]([0-9a-fA-F]+)|([+-]?)([0-9]+)")


def weights_problem(items: Iterable[tuple[Any, Any]]) -> dict[str, float] | str:
    """Validates (role, weight) pairs as Mesos' weights handler does (a role is trimmed
    first): the weights to apply, or the error message."""
    prefix = "Failed to validate update weights request JSON"
    weights: dict[str, float] = {}
    for role, weight in items:
        if not isinstance(role, str):
            return f"{prefix}: Every weight needs a 'role'"
        role = role.strip()
        error = validate_role(role)
        if error:
            return f"{prefix}: Invalid role '{role}': {error}"
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            return f"{prefix} for role '{role}': Weight must be a number"
        if not math.isfinite(weight) or weight <= 0:
            return (
                f"{prefix} for role '{role}': Invalid weight '{weight:g}': Weights must be positive"
            )
        weights[role] = float(weight)
    return weights


def _counts(tasks: Iterable[Task]) -> dict[str, int]:
    counts = dict.fromkeys(SUMMARY_STATES, 0)
    for task in tasks:
        if task.state in counts:
            counts[task.state] += 1
    return counts


def _all_tasks(fw: Framework) -> list[Task]:
    return [*fw.tasks.values(), *fw.completed_tasks]


class LegacyEndpoints:
    """Handlers bound to one `MasterServer`."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server
        self.machine = server.machine

    def add_routes(self, router: PrefixRouter) -> None:
        router.add("/state-summary", self.state_summary)
        router.add("/frameworks", self.frameworks)
        router.add("/slaves", self.slaves)
        router.add("/tasks", self.tasks)
        router.add("/tasks.json", self.tasks)
        router.add("/roles", self.roles)
        router.add("/roles.json", self.roles)
        router.add("/weights", self.weights)
        router.add("/flags", self.flags)
        router.add("/teardown", self.teardown)

    # -- summaries ---------------------------------------------------------------------------

    async def state_summary(self, request: web.Request) -> web.Response:
        machine = self.machine
        frameworks = [*machine.frameworks.values()]
        by_agent: dict[str, list[Task]] = {}
        fws_by_agent: dict[str, set[str]] = {}
        for fw in frameworks:
            for task in _all_tasks(fw):
                by_agent.setdefault(task.agent_id, []).append(task)
                fws_by_agent.setdefault(task.agent_id, set()).add(fw.framework_id)
        slaves = []
        used = operator_views.all_agents_used(machine)
        for agent in machine.agents.values():
            entry = state_json.legacy_agent(machine, agent, used[agent.agent_id])
            entry.update(_counts(by_agent.get(agent.agent_id, [])))
            entry["framework_ids"] = sorted(fws_by_agent.get(agent.agent_id, ()))
            slaves.append(entry)
        summaries = []
        for fw in frameworks:
            full = state_json.legacy_framework(machine, fw)
            for key in ("tasks", "completed_tasks", "unreachable_tasks", "offers", "executors"):
                full.pop(key, None)
            full.update(_counts(_all_tasks(fw)))
            full["slave_ids"] = sorted({t.agent_id for t in fw.tasks.values()})
            summaries.append(full)
        info = machine.master_info
        doc = {"hostname": info["hostname"], "slaves": slaves, "frameworks": summaries}
        view = self._viewer(request)
        if view is not None:
            doc = view.legacy_agents(doc)
            doc["frameworks"] = view.legacy_frameworks(summaries)
        return json_reply(doc)

    def _viewer(self, request: web.Request) -> view_acls.Viewer | None:
        """The caller's view under ``--acls`` (None: it may see everything), reservations
        (``view_roles``) included."""
        return view_acls.viewer(
            self.server.acls, request.get("principal"), self.machine, roles=True
        )

    async def frameworks(self, request: web.Request) -> web.Response:
        machine = self.machine
        wanted = request.query.get("framework_id")

        def keep(fw: Framework) -> bool:
            return wanted is None or fw.framework_id == wanted

        doc: dict[str, Any] = {
            "frameworks": [
                state_json.legacy_framework(machine, f)
                for f in machine.frameworks.values()
                if keep(f)
            ],
            "completed_frameworks": [
                state_json.legacy_framework(machine, f)
                for f in machine.completed_frameworks
                if keep(f)
            ],
            "unregistered_frameworks": [],
        }
        view = self._viewer(request)
        return json_reply(doc if view is None else view.legacy_state(doc))

    async def slaves(self, request: web.Request) -> web.Response:
        """``/master/slaves[?slave_id=]``: the agents as ``/state`` has them, each with its
        resources in full (`state_json.agent_resources_full`), and the agents the registry
        lists that have not re-registered since this master's election."""
        machine = self.machine
        wanted = request.query.get("slave_id")
        slaves = []
        for agent in machine.agents.values():
            if wanted is None or agent.agent_id == wanted:
                entry = state_json.legacy_agent(machine, agent)
                entry.update(state_json.agent_resources_full(machine, agent))
                slaves.append(entry)
        recovered = [
            state_json.recovered_agent(aid, info)
            for aid, info in sorted(machine.recovered_infos.items())
            if wanted is None or aid == wanted
        ]
        doc = {"slaves": slaves, "recovered_slaves": recovered}
        view = self._viewer(request)
        return json_reply(doc if view is None else view.legacy_agents(doc))

    async def tasks(self, request: web.Request) -> web.Response:
        """``/master/tasks?limit=&offset=&order=asc|des&framework_id=&task_id=``: tasks of
        every framework (live, unreachable, completed) by start time, newest first.

        The parameters are read as Mesos' ``Master::ReadOnlyHandler::tasks`` reads them,
        which never refuses a request: ``limit`` (default 100) and ``offset`` (default 0)
        that are not C ints fall back to their defaults, and both are then used as size_t,
        so a negative ``limit`` means every task (the Mesos CLI's ``mesos task list`` sends
        ``limit=-1``) and a negative ``offset`` none; ``order`` other than ``asc`` is
        ``des``. A task with no status yet counts as the oldest."""
        query = request.query
        limit = _c_int(query.get("limit"), TASK_LIMIT) % _SIZE_T
        offset = _c_int(query.get("offset"), 0) % _SIZE_T
        descending = query.get("order") != "asc"
        fid, tid = query.get("framework_id"), query.get("task_id")
        tasks = [
            task
            for _, task in operator_views.all_tasks(self.machine)
            if (fid is None or task.framework_id == fid) and (tid is None or task.task_id == tid)
        ]
        view = self._viewer(request)
        if view is not None:
            tasks = [t for t in tasks if view.task(_task_probe(t))]
        tasks.sort(key=_start_time, reverse=descending)
        # Mesos' `std::min(offset + limit, tasks.size())`, in size_t arithmetic.
        end = min((offset + limit) % _SIZE_T, len(tasks))
        page = tasks[offset:end] if offset < end else []
        return json_reply({"tasks": [state_json.legacy_task(t) for t in page]})

    # -- roles and weights -------------------------------------------------------------------

    def _role_viewer(self, principal: str | None) -> Callable[[str | None], bool] | None:
        """Which roles ``principal`` may see under the ``view_roles`` ACL (None: all)."""
        acls = self.server.acls
        if acls.unrestricted("view_roles"):
            return None
        return lambda role: acls.allowed("view_roles", principal, role)

    def visible_roles(
        self, principal: str | None, roles: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``roles`` (objects with a ``name``, GET_ROLES' or ``/roles``') that ``principal``
        may view; all of them unless ``view_roles`` restricts it, as Mesos filters them."""
        may_view = self._role_viewer(principal)
        if may_view is None:
            return roles
        return [r for r in roles if may_view(r.get("name"))]

    def visible_weights(self, principal: str | None) -> list[dict[str, Any]]:
        """The weight infos (``[{role, weight}]``) ``principal`` may view (``view_roles``)."""
        infos: list[dict[str, Any]] = operator_views.get_weights(self.machine)["weight_infos"]
        may_view = self._role_viewer(principal)
        if may_view is None:
            return infos
        return [i for i in infos if may_view(i.get("role"))]

    async def roles(self, request: web.Request) -> web.Response:
        machine = self.machine
        weights = machine.allocator.weights
        quotas = machine.allocator.quotas
        consumption = operator_views.quota_consumption(machine)
        out = []
        may_view = self._role_viewer(request.get("principal"))
        for role, (allocated, offered, fids) in operator_views.role_usage(machine).items():
            if may_view is not None and not may_view(role):
                continue
            reserved = operator_views.total(a.total.reserved(role) for a in machine.agents.values())
            out.append(
                {
                    "name": role,
                    "weight": weights.get(role, 1.0),
                    "frameworks": fids,
                    "resources": allocated.to_legacy_map(),
                    "allocated": allocated.to_legacy_map(),
                    "offered": offered.to_legacy_map(),
                    "reserved": reserved.to_legacy_map(),
                    "quota": role_quota_json(role, quotas.get(role), consumption.get(role, {})),
                }
            )
        return json_reply({"roles": out})

    async def weights(self, request: web.Request) -> web.Response:
        """GET: ``[{role, weight}]``; PUT the same shape to change weights."""
        principal = request.get("principal")
        if request.method == "GET":
            return json_reply(self.visible_weights(principal))
        if request.method != "PUT":
            return text_reply(405, "Expecting 'GET' or 'PUT'", {"Allow": "GET, PUT"})
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as e:
            return text_reply(400, f"Failed to parse the body as JSON: {e}")
        if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
            return text_reply(400, "Expecting a JSON array of {role, weight} objects")
        refusal = self.update_weights([(i.get("role"), i.get("weight")) for i in body], principal)
        return refusal or text_reply(200)

    def update_weights(
        self, items: list[tuple[Any, Any]], principal: str | None
    ) -> web.Response | None:
        """``PUT /weights`` and UPDATE_WEIGHTS alike (Mesos' ``WeightsHandler::update``):
        validated (400), then authorized by ``update_weights`` for every role, or for ANY
        role when none is named (403), then applied; None when applied."""
        weights = weights_problem(items)
        if isinstance(weights, str):
            return text_reply(400, weights)
        acls = self.server.acls
        for role in weights or [None]:
            refusal = forbidden(acls, "update_weights", principal, role)
            if refusal is not None:
                return text_reply(403, refusal)
        self.apply_weights(weights)
        return None

    def apply_weights(self, weights: dict[str, float]) -> None:
        """Validated weights: made durable in the registry, then used by the allocator."""
        self.server.apply(self.machine.update_weights(weights))

    # -- flags and teardown ------------------------------------------------------------------

    async def flags(self, request: web.Request) -> web.Response:
        """``/flags``: 403 for a principal the ``view_flags`` ACL refuses (Mesos' ``_flags``)."""
        refusal = forbidden(self.server.acls, "view_flags", request.get("principal"))
        if refusal is not None:
            return text_reply(403, refusal)
        return json_reply({"flags": self.server.config.flags})

    async def teardown(self, request: web.Request) -> web.Response:
        """POST ``frameworkId=<id>`` (form or query) ends a framework and its tasks."""
        if request.method != "POST":
            return text_reply(405, "Expecting 'POST'", {"Allow": "POST"})
        form = await request.post() if request.can_read_body else {}
        fid = form.get("frameworkId") or form.get("framework_id")
        fid = fid or request.query.get("frameworkId") or request.query.get("framework_id")
        if not isinstance(fid, str) or not fid:
            return text_reply(400, "Missing 'frameworkId' in the request body")
        fw = self.machine.frameworks.get(fid)
        owner = fw.info.principal if fw is not None else None
        principal = request.get("principal")
        if not self.server.acls.allowed("teardown_frameworks", principal, owner):
            return text_reply(403, "Forbidden: not authorized to tear this framework down")
        effects = self.machine.teardown_framework(fid, self.server.clock.now())
        if effects is None:
            return text_reply(400, f"No framework found with ID {fid[:255]}")
        self.server.apply(effects)
        return text_reply(200)


def _start_time(task: Task) -> tuple[int, float]:
    """The sort key of ``/master/tasks``: its first status' time; a task without a status
    yet sorts before every other one, as Mesos' ``TaskComparator`` has it (first in ``asc``
    order, last in ``des``)."""
    if not task.statuses:
        return (0, 0.0)
    return (1, task.statuses[0].timestamp or 0.0)


def _c_int(text: str | None, default: int) -> int:
    """``text`` read as stout's ``numify<int>`` reads a query parameter (decimal with an
    optional sign, or hexadecimal with ``0x``, within a C int), else ``default``."""
    if text is None:
        return default
    match = _C_INT.fullmatch(text)
    if match is None:
        return default
    hex_sign, hex_digits, sign, digits = match.groups()
    if hex_digits is not None:
        value = -int(hex_digits, 16) if hex_sign else int(hex_digits, 16)
    else:
        value = -int(digits) if sign == "-" else int(digits)
    return value if _INT_MIN <= value <= _INT_MAX else default


def _task_probe(task: Task) -> dict[str, Any]:
    """What `view_acls.Viewer.task` looks at of a task: its framework and its own user."""
    probe: dict[str, Any] = {"framework_id": task.framework_id}
    user = views.task_user(task)
    if user is not None:
        probe["user"] = user
    return probe
