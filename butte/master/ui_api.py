"""Read-only endpoints the web UI reads, under ``/master/ui/`` (also ``/ui/``).

None is part of Mesos' API; each exists so that a page shows its first rows quickly at any
cluster size without stalling the master:

* ``GET /master/ui/utilisation[?since=<epoch ms>]``: the last hour of utilisation samples
  (`butte.master.history`);
* ``GET /master/ui/agents?offset=&limit=&q=&sort=&order=asc|des`` and ``?id=<id>&id=...``:
  one page of agents (`butte.master.browse`);
* ``GET /master/ui/frameworks?...[&completed=1]``: one page of frameworks, or of completed
  ones;
* ``GET /master/ui/tasks?offset=&limit=&q=&state=&agent_id=&framework_id=``: one page of
  tasks, newest first, searched and filtered by the master (tasks in the legacy shape of
  ``/master/tasks``);
* ``GET /master/ui/roles``: ``{"roles": [...]}`` as ``/master/roles`` has them (scalar
  amounts), summed by resource shape;
* ``GET /master/ui/changes``: the change summaries the pages refresh on
  (`butte.master.ui_feed`);
* ``GET /master/ui/task-usage?task_id=<id>&task_id=...``: what running tasks really use,
  from their agents (`butte.master.task_usage`);
* ``GET /master/ui/agent-resources?agent_id=<id>``: one agent's reservations and persistent
  volumes and what holds them (`butte.master.ui_reservations`);
* ``GET /master/ui/executors?agent_id=<id>`` or ``?framework_id=<id>``: the executors running
  on one agent or for one framework, from the master's records (`executor_rows`);
* ``GET /master/ui/executor?agent_id=&framework_id=&executor_id=``: one executor with its
  queued, running and completed tasks, from its agent's ``/state`` (`find_executor`);
* ``GET /master/ui/maintenance?offset=&limit=&q=&mode=``: one page of every machine (the
  scheduled ones and the agents'), each with its maintenance mode, window, the frameworks'
  answers to its inverse offers and its agents (`maintenance_view.machine_rows`).

The shell owns one `UiApi`; it calls `sample` every `history.SAMPLE_SECONDS` while leading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web

from butte.core import task_states
from butte.master import (
    browse,
    history,
    maintenance_view,
    state_json,
    task_listing,
    task_usage,
    ui_reservations,
    view_acls,
)
from butte.master.files import agent_credentials, agent_ssl, agent_url
from butte.master.http import json_reply, text_reply
from butte.master.machine import MasterMachine
from butte.master.state import Task
from butte.master.ui_feed import ChangeFeed

if TYPE_CHECKING:
    from butte.master.events import OperatorSubscribers
    from butte.master.shell_api import MasterShell

SAMPLE_SECONDS = history.SAMPLE_SECONDS
# Rows of `/master/ui/executors`: a page lists at most this many executors (and says how
# many there are), so a framework with 100k tasks does not make a 100k-row card.
MAX_EXECUTOR_ROWS = 200
# Tasks of each list (queued, running, completed) `/master/ui/executor` answers; the counts
# say how many there are.
MAX_EXECUTOR_TASKS = 500
# The agent's `/state` is one agent's; a slow agent must not hold the page for long.
AGENT_STATE_TIMEOUT = aiohttp.ClientTimeout(total=5)
MAX_ID_LENGTH = 1024
TASK_LISTS = ("queued_tasks", "tasks", "completed_tasks")


def executor_rows(
    machine: MasterMachine,
    *,
    agent_id: str | None = None,
    framework_id: str | None = None,
    view: view_acls.Viewer | None = None,
    limit: int = MAX_EXECUTOR_ROWS,
) -> tuple[list[dict[str, Any]], int]:
    """The executors on one agent or of one framework that the master knows of: those of
    its live tasks (a command task's executor has the task's id) and those the agents
    reported (`Agent.executors`). One row each: ``agent_id``, ``agent`` (host:port),
    ``framework_id``, ``framework``, ``executor_id``, ``active_tasks`` (its non-terminal
    tasks). Frameworks and executors the caller may not view (``view``) are left out.
    Sorted by agent, framework and executor; the first ``limit`` rows and how many there
    are (rows are built for those only: a framework may have 100k tasks)."""
    active: dict[tuple[str, str, str], int] = {}

    def add(agent: str, fid: str, executor: str, task: Task | None) -> None:
        key = (agent, fid, executor)
        live = task is not None and not task_states.is_terminal(task.state)
        active[key] = active.get(key, 0) + (1 if live else 0)

    if agent_id is not None:
        agent_record = machine.agents.get(agent_id)
        if agent_record is not None:
            for fid, task_id in agent_record.tasks:
                fw = machine.frameworks.get(fid)
                task = fw.tasks.get(task_id) if fw is not None else None
                if task is not None:
                    add(agent_id, fid, task.executor_id or task.task_id, task)
            for fid, executor_id in agent_record.executors:
                add(agent_id, fid, executor_id, None)
    elif framework_id is not None:
        fw = machine.frameworks.get(framework_id)
        if fw is not None:
            for task in fw.tasks.values():
                add(task.agent_id, framework_id, task.executor_id or task.task_id, task)
            for on_agent, executor_ids in fw.executors.items():
                for executor_id in executor_ids:
                    add(on_agent, framework_id, executor_id, None)

    def visible(key: tuple[str, str, str]) -> bool:
        if view is None:
            return True
        on_agent, fid, executor_id = key
        agent_record = machine.agents.get(on_agent)
        info = agent_record.executors.get((fid, executor_id)) if agent_record else None
        plain = msgspec.to_builtins(info.info) if info is not None else {}
        return view.framework(fid) and view.executor(plain, fid)

    keys = sorted(key for key in active if visible(key))
    rows = []
    for key in keys[:limit]:
        on_agent, fid, executor_id = key
        fw = machine.frameworks.get(fid)
        agent_record = machine.agents.get(on_agent)
        host = f"{agent_record.hostname}:{agent_record.port}" if agent_record else ""
        rows.append(
            {
                "agent_id": on_agent,
                "agent": host,
                "framework_id": fid,
                "framework": fw.info.name if fw is not None else "",
                "executor_id": executor_id,
                "active_tasks": active[key],
            }
        )
    return rows, len(keys)


def find_executor(
    state: dict[str, Any], framework_id: str, executor_id: str
) -> dict[str, Any] | None:
    """From an agent's ``/state``: ``{framework, executor}`` for the executor, the running
    one first, else the newest completed one (an executor id may be used again), each with
    ``completed``. The framework comes without its executors; each task list is cut to
    `MAX_EXECUTOR_TASKS` (the newest completed tasks kept), ``counts`` has the full sizes.
    None when the agent does not know the executor."""
    for fw_key in ("frameworks", "completed_frameworks"):
        for fw in state.get(fw_key) or []:
            if not isinstance(fw, dict) or fw.get("id") != framework_id:
                continue
            for ex_key in ("executors", "completed_executors"):
                found = [
                    ex
                    for ex in fw.get(ex_key) or []
                    if isinstance(ex, dict) and ex.get("id") == executor_id
                ]
                if not found:
                    continue
                executor = dict(found[-1])
                counts = {}
                for key in TASK_LISTS:
                    tasks = [t for t in executor.get(key) or [] if isinstance(t, dict)]
                    counts[key] = len(tasks)
                    executor[key] = tasks[-MAX_EXECUTOR_TASKS:]
                executor["counts"] = counts
                executor["completed"] = ex_key == "completed_executors"
                framework = {
                    k: v for k, v in fw.items() if k not in ("executors", "completed_executors")
                }
                framework["completed"] = fw_key == "completed_frameworks"
                return {"framework": framework, "executor": executor}
    return None


def _get_only(request: web.Request) -> web.Response | None:
    if request.method in ("GET", "HEAD"):
        return None
    return text_reply(405, f"Expecting 'GET', received '{request.method}'", {"Allow": "GET"})


class UiApi:
    """The ``/master/ui/*`` handlers of one master (see the module docstring)."""

    def __init__(self, server: MasterShell, events: OperatorSubscribers) -> None:
        self.server = server
        self.machine = server.machine
        self.history = history.UtilisationHistory()
        self.agent_listings = browse.AgentListings(server.machine)
        self.framework_listings = browse.FrameworkListings(server.machine)
        self.task_listings = task_listing.TaskListings(server.machine)
        self.feed = ChangeFeed(events)
        router = server.router
        router.add("/ui/utilisation", self.utilisation)
        router.add("/ui/agents", self.agents)
        router.add("/ui/frameworks", self.frameworks)
        router.add("/ui/tasks", self.tasks)
        router.add("/ui/roles", self.roles)
        router.add("/ui/changes", self.feed.serve)
        router.add("/ui/task-usage", self.task_usage)
        router.add("/ui/agent-resources", self.agent_resources)
        router.add("/ui/executors", self.executors)
        router.add("/ui/executor", self.executor)
        router.add("/ui/maintenance", self.maintenance)

    def sample(self) -> None:
        """Takes one utilisation sample (the shell's timer calls this)."""
        self.history.sample(self.machine, self.server.clock.now())

    def close(self) -> None:
        self.feed.close()

    async def utilisation(self, request: web.Request) -> web.StreamResponse:
        refused = _get_only(request)
        if refused is not None:
            return refused
        since = request.query.get("since")
        try:
            since_ms = float(since) if since is not None else None
        except ValueError:
            return text_reply(400, "'since' must be a number (epoch milliseconds)")
        if not self.history.samples and self.server.leadership.acting():
            self.sample()  # a master that just started leading: a first point at once
        return json_reply(self.history.to_json(since_ms))

    async def agents(self, request: web.Request) -> web.StreamResponse:
        return self._page(
            request,
            self.agent_listings,
            lambda listing: listing,
            lambda ids: browse.agent_rows_by_id(self.machine, ids),
        )

    async def frameworks(self, request: web.Request) -> web.StreamResponse:
        completed = request.query.get("completed", "0")
        if completed not in ("0", "1", "false", "true"):
            return text_reply(400, "'completed' must be 0 or 1")
        done = completed in ("1", "true")
        return self._page(
            request,
            self.framework_listings,
            lambda listings: listings[1 if done else 0],
            lambda ids: browse.framework_rows_by_id(self.machine, ids, done),
            self._viewer(request),
        )

    def _viewer(self, request: web.Request) -> view_acls.Viewer | None:
        """The caller's view under ``--acls`` (None: it may see everything)."""
        return view_acls.viewer(self.server.acls, request.get("principal"), self.machine)

    def _task_filter(self, request: web.Request) -> Callable[[Task], bool] | None:
        """Which tasks the caller may view under ``--acls`` (None: every one)."""
        view = self._viewer(request)
        if view is None:
            return None
        return lambda task: view.task({"framework_id": task.framework_id})

    def _page(
        self,
        request: web.Request,
        listings: browse.Rebuilt[Any],
        pick: Callable[[Any], browse.Listing],
        by_id: Callable[[tuple[str, ...]], list[browse.Row]],
        view: view_acls.Viewer | None = None,
    ) -> web.StreamResponse:
        """One page of a listing, or (``id=``, a hostname or name lookup) just those rows,
        found without building the listing."""
        refused = _get_only(request)
        if refused is not None:
            return refused
        answer: dict[str, Any]
        try:
            query = browse.PageQuery.parse(request.query, request.query.getall("id", []))
            if query.ids:
                rows = by_id(query.ids)
                answer = {"total": None, "count": len(rows), "offset": 0, "limit": len(rows)}
                answer["rows"] = rows
            else:
                answer = pick(listings.current()).page(query)
                answer["snapshot"] = listings.freshness()
        except browse.QueryError as e:
            return text_reply(400, str(e))
        if view is not None:  # --acls: only the frameworks the caller may view
            answer["rows"] = [r for r in answer["rows"] if view.framework(r["id"], r["user"])]
            answer["count"], answer["total"] = len(answer["rows"]), None
        return json_reply(answer)

    async def tasks(self, request: web.Request) -> web.StreamResponse:
        refused = _get_only(request)
        if refused is not None:
            return refused
        try:
            query = task_listing.TaskQuery.parse(request.query)
        except browse.QueryError as e:
            return text_reply(400, str(e))
        allow = self._task_filter(request)
        answer = self.task_listings.current().page(query, state_json.legacy_task, allow)
        answer["snapshot"] = self.task_listings.freshness()
        return json_reply(answer)

    def _role_filter(self, request: web.Request) -> Callable[[Any], bool] | None:
        """Which roles the caller may view under the ``view_roles`` ACL (None: every one),
        as `/master/roles` and GET_ROLES leave the others out."""
        acls = self.server.acls
        if acls.unrestricted("view_roles"):
            return None
        principal = request.get("principal")
        return lambda role: isinstance(role, str) and acls.allowed("view_roles", principal, role)

    async def roles(self, request: web.Request) -> web.StreamResponse:
        refused = _get_only(request)
        if refused is not None:
            return refused
        rows = browse.build_roles(self.machine)
        may_view = self._role_filter(request)
        if may_view is not None:
            rows = [r for r in rows if may_view(r.get("name"))]
        return json_reply({"roles": rows})

    async def task_usage(self, request: web.Request) -> web.StreamResponse:
        refused = _get_only(request)
        if refused is not None:
            return refused
        ids = request.query.getall("task_id", [])
        if not ids:
            return text_reply(400, "Expecting 'task_id' to be present")
        if len(ids) > task_usage.MAX_TASKS:
            return text_reply(400, f"At most {task_usage.MAX_TASKS} 'task_id's at once")
        # A task the caller may not view is answered as an unknown one (as the listing
        # leaves it out); the caller's credentials go on to agents that ask for them.
        allow = self._task_filter(request)
        answer = await task_usage.task_usage(self.machine, ids, allow, agent_credentials(request))
        return json_reply(answer)

    async def agent_resources(self, request: web.Request) -> web.StreamResponse:
        refused = _get_only(request)
        if refused is not None:
            return refused
        agent_id = request.query.get("agent_id")
        if not agent_id:
            return text_reply(400, "Expecting 'agent_id' to be present")
        view = self._viewer(request)

        def may_view(kind: str, framework_id: str) -> bool:
            if view is None:
                return True
            if kind == "task":
                return view.task({"framework_id": framework_id})
            return view.executor({}, framework_id)

        answer = ui_reservations.agent_resources(self.machine, agent_id, may_view)
        if answer is None:
            return text_reply(404, f"No agent found with ID {agent_id[:255]}")
        may_view_role = self._role_filter(request)
        if may_view_role is not None:
            # The reservations and volumes of roles the caller may not view are left out,
            # as `/master/slaves` leaves them out (every role of a refined stack counts).
            for key in ("reservations", "volumes"):
                answer[key] = [
                    row
                    for row in answer[key]
                    if all(may_view_role(role) for role in row.get("roles") or ())
                ]
        return json_reply(answer)

    async def executors(self, request: web.Request) -> web.StreamResponse:
        """``?agent_id=`` or ``?framework_id=``: `executor_rows`, at most `MAX_EXECUTOR_ROWS`
        of them, as ``{executors, total}`` (a framework the caller may not view has none,
        as an unknown one)."""
        refused = _get_only(request)
        if refused is not None:
            return refused
        agent_id = request.query.get("agent_id")
        framework_id = request.query.get("framework_id")
        if bool(agent_id) == bool(framework_id):
            return text_reply(400, "Expecting one of 'agent_id' and 'framework_id'")
        if len(agent_id or framework_id or "") > MAX_ID_LENGTH:
            return text_reply(400, f"An id is at most {MAX_ID_LENGTH} characters")
        view = self._viewer(request)
        if agent_id and agent_id not in self.machine.agents:
            return text_reply(404, f"No agent found with ID {agent_id[:255]}")
        rows, total = executor_rows(
            self.machine, agent_id=agent_id, framework_id=framework_id, view=view
        )
        return json_reply({"executors": rows, "total": total})

    async def executor(self, request: web.Request) -> web.StreamResponse:
        """``?agent_id=&framework_id=&executor_id=``: the executor as its agent's ``/state``
        has it (`find_executor`), with ``agent`` (id, hostname, port). The caller's
        credentials go to the agent, and the master's view ACLs apply on top of the agent's:
        an executor the caller may not view is answered as an unknown one (404), and tasks
        it may not view are left out."""
        refused = _get_only(request)
        if refused is not None:
            return refused
        ids = {}
        for name in ("agent_id", "framework_id", "executor_id"):
            value = request.query.get(name)
            if not value:
                return text_reply(400, f"Expecting '{name}' to be present")
            if len(value) > MAX_ID_LENGTH:
                return text_reply(400, f"'{name}' is at most {MAX_ID_LENGTH} characters")
            ids[name] = value
        agent = self.machine.agents.get(ids["agent_id"])
        if agent is None:
            return text_reply(404, f"No agent found with ID {ids['agent_id'][:255]}")
        unknown = text_reply(
            404,
            f"Agent {agent.agent_id} has no executor {ids['executor_id'][:255]} "
            f"of framework {ids['framework_id'][:255]}",
        )
        view = self._viewer(request)
        if view is not None and not view.framework(ids["framework_id"]):
            return unknown
        if not agent.connected:
            return text_reply(503, f"Agent {agent.agent_id} is not connected")
        try:
            async with (
                aiohttp.ClientSession(timeout=AGENT_STATE_TIMEOUT) as session,
                session.get(
                    f"{agent_url(agent)}/state",
                    headers=agent_credentials(request),
                    ssl=agent_ssl(),
                ) as response,
            ):
                if response.status in (401, 403):
                    # The agent's own authentication or ACLs refused the caller.
                    text = (await response.text())[:500]
                    return text_reply(response.status, f"The agent refused: {text}")
                if response.status != 200:
                    return text_reply(502, f"Agent {agent.agent_id} answered {response.status}")
                state = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            message = str(e) or type(e).__name__
            return text_reply(503, f"Agent {agent.agent_id} did not answer: {message}")
        if not isinstance(state, dict):
            return text_reply(502, f"Agent {agent.agent_id} answered no JSON object")
        if view is not None:
            state = view.agent_state(state)
        found = find_executor(state, ids["framework_id"], ids["executor_id"])
        if found is None:
            return unknown
        found["agent"] = {
            "id": agent.agent_id,
            "hostname": agent.info.hostname,
            "port": agent.info.port,
        }
        return json_reply(found)

    async def maintenance(self, request: web.Request) -> web.StreamResponse:
        """One page of every machine with its maintenance mode (the maintenance page), as
        the caller may see them under ``get_maintenance_statuses``."""
        refused = _get_only(request)
        if refused is not None:
            return refused
        try:
            query = maintenance_view.MachineQuery.parse(request.query)
        except maintenance_view.MachineQueryError as e:
            return text_reply(400, str(e))
        allowed = maintenance_view.machine_filter(
            self.server.acls, maintenance_view.STATUS_ACTION, request.get("principal")
        )
        status = self.machine.maintenance_status(self.server.clock.now())
        answer = maintenance_view.machine_rows(
            self.machine.maintenance, self.machine.agents.values(), status, query, allowed
        )
        return json_reply(answer)
