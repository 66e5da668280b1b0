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
  volumes and what holds them (`butte.master.ui_reservations`).

The shell owns one `UiApi`; it calls `sample` every `history.SAMPLE_SECONDS` while leading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from butte.master import (
    browse,
    history,
    state_json,
    task_listing,
    task_usage,
    ui_reservations,
    view_acls,
)
from butte.master.files import agent_credentials
from butte.master.http import json_reply, text_reply
from butte.master.state import Task
from butte.master.ui_feed import ChangeFeed

if TYPE_CHECKING:
    from butte.master.events import OperatorSubscribers
    from butte.master.shell_api import MasterShell

SAMPLE_SECONDS = history.SAMPLE_SECONDS


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
