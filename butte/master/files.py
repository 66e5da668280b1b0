"""Sandbox files through the master: ``/files/browse``, ``/files/read``, ``/files/download``
and the operator calls LIST_FILES / READ_FILE, answered by the agent that holds the path.

The master keeps no files of its own here; it finds the agent and forwards the request to
that agent's own files API (`butte.agent.files`), which decides what may be read. A path
names its agent in one of three ways:

* ``/slaves/<agent_id>/frameworks/<fw>/executors/<ex>/runs/latest[/...]``: explicit; the
  ``/slaves/<agent_id>`` prefix is dropped and the rest is the agent's virtual path. This is
  the address of a task's sandbox that the CLI and the web UI use: everything in it is in
  GET_TASKS (agent, framework, executor id, or the task id for a command task).
* ``/frameworks/<fw>/executors/<ex>/runs/...``: Mesos' virtual path; the agent is found from
  the master's records of the framework's tasks and executors (the newest wins if an executor
  id was used on several agents).
* a real sandbox path, ``<agent work_dir>/slaves/<agent_id>/frameworks/...`` (the
  ``directory`` that agents' ``/state`` shows): sent unchanged to that agent.

``/slaves/<agent_id>/slave/log`` is that agent's own log (``/slave/log``, attached when the
agent runs with ``--log_dir`` or ``--external_log_file``), forwarded like a sandbox but guarded
by ``access_mesos_logs`` rather than ``access_sandboxes``: the web UI reads agents' logs this
way, as it reads their sandboxes, through the master.

Anything else is 404; an agent that is not connected answers 503.

The master's own log is its one attached file, as in Mesos: ``/master/log`` when it runs with
``--log_dir`` or ``--external_log_file`` (`butte.daemon_log`; 404 without either), served by
the master itself with the agent's file code (`SandboxFiles` with ``sandboxes=False``) to a
principal the ``access_mesos_logs`` ACL lets read it (403 otherwise). ``/files/debug`` is the
master's own, as Mesos' files process serves it: the attached virtual paths -> real paths
(``{}`` without a log), guarded as Mesos guards it, by the ``get_endpoints`` ACL.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
import ssl
from typing import Any

import aiohttp
from aiohttp import web

from butte import daemon_log
from butte.agent.files import FileError, SandboxFiles
from butte.core import task_states
from butte.core.codec import encode_json
from butte.core.tls import client_context_for
from butte.master.acls import endpoint_forbidden, forbidden
from butte.master.http import PrefixRouter, json_reply, text_reply
from butte.master.shell_api import MasterShell
from butte.master.state import Agent

_TIMEOUT = aiohttp.ClientTimeout(total=15)


@functools.cache
def _agent_tls() -> ssl.SSLContext | None:
    """The client context for agents: with LIBPROCESS_SSL_ENABLED they speak TLS too."""
    return client_context_for("", os.environ)


def agent_url(agent: Agent) -> str:
    """Where the master reaches an agent's HTTP API (https with LIBPROCESS_SSL_ENABLED)."""
    scheme = "http" if _agent_tls() is None else "https"
    return f"{scheme}://{agent.ip or agent.hostname}:{agent.port}"


def agent_ssl() -> ssl.SSLContext | bool:
    """The ``ssl`` argument of aiohttp requests to agents (`agent_url`)."""
    return _agent_tls() or True


_REAL = re.compile(r"/slaves/([^/]+)/frameworks/")
_OWNER = re.compile(r"/frameworks/([^/]+)/executors/")
# The request being served by an operator call (LIST_FILES / READ_FILE), whose principal
# and credentials go with the forwarded request.
OPERATOR_REQUEST: contextvars.ContextVar[web.Request | None] = contextvars.ContextVar(
    "operator_request", default=None
)
_VIRTUAL = re.compile(r"^/frameworks/([^/]+)/executors/([^/]+)/runs(/|$)")


def agent_credentials(request: web.Request | None) -> dict[str, str]:
    """The caller's own ``Authorization``, passed on to an agent run with
    ``--authenticate_http_*`` (the agent checks it against its ``--http_credentials``)."""
    value = request.headers.get("Authorization") if request is not None else None
    return {"Authorization": value} if value else {}


class FilesError(Exception):
    """Why a path cannot be served: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MasterFiles:
    """Locates sandboxes and forwards file requests to agents (see the module docstring)."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server
        # The master's attached files (its log), nothing else.
        self.local = SandboxFiles(os.curdir, lambda: None, sandboxes=False)

    def add_routes(self, router: PrefixRouter) -> None:
        for name in ("browse", "read", "download"):
            router.add(f"/files/{name}", self.http_forward)
            router.add(f"/files/{name}.json", self.http_forward)
        router.add("/files/debug", self.http_debug)

    async def http_debug(self, request: web.Request) -> web.Response:
        """``/files/debug``: the master's attached paths (none, module docstring); 403 for a
        principal the ``get_endpoints`` ACL refuses, as Mesos' ``FilesProcess::debug``."""
        if request.method not in ("GET", "HEAD"):
            return text_reply(405, "Expecting 'GET' for /files/debug", {"Allow": "GET"})
        refusal = endpoint_forbidden(self.server.acls, request.get("principal"), "/files/debug")
        if refusal is not None:
            return text_reply(403, refusal)
        return json_reply(self.local.attached())

    # -- locating ----------------------------------------------------------------------------

    def sandbox_problem(self, path: str, principal: str | None) -> FilesError | None:
        """403 when ``--acls`` do not let ``principal`` read this sandbox
        (``access_sandboxes``, its object the framework's user), else None."""
        acls = self.server.acls
        if acls.unrestricted("access_sandboxes"):
            return None
        owner = _OWNER.search(path)
        user: str | None = None
        if owner is not None:
            machine = self.server.machine
            fw = machine.frameworks.get(owner.group(1)) or next(
                (f for f in machine.completed_frameworks if f.framework_id == owner.group(1)),
                None,
            )
            user = fw.info.user if fw is not None else None
        if acls.allowed("access_sandboxes", principal, user):
            return None
        who = principal or "an unauthenticated principal"
        return FilesError(403, f"Forbidden: {who} may not access this sandbox")

    def locate(self, path: str | None, principal: str | None = None) -> tuple[Agent, str]:
        """(the agent, the path to ask it for); raises FilesError (403: ``principal`` may
        not read it)."""
        if not path:
            raise FilesError(400, "Expecting 'path' to be present")
        if ".." in path.split("/"):
            raise FilesError(400, f"Path traversal ('..') is not allowed: {path}")
        agent_id: str | None = None
        forwarded = path
        if path.startswith("/slaves/"):
            _, _, agent_id, *rest = path.split("/", 3)
            forwarded = "/" + (rest[0] if rest else "")
        elif (real := _REAL.search(path)) is not None:
            agent_id = real.group(1)
        elif (virtual := _VIRTUAL.match(path)) is not None:
            agent_id = self._agent_of_executor(virtual.group(1), virtual.group(2))
        if agent_id is None:
            raise FilesError(404, f"No file or directory found at path '{path}'")
        parts = [p for p in forwarded.split("/") if p not in ("", ".")]
        if parts[:2] == ["slave", "log"]:  # the agent's log (`/slave//log` too), not a sandbox
            refusal = self._log_refusal(principal)
            if refusal is not None:
                raise FilesError(403, refusal)
        else:
            problem = self.sandbox_problem(path, principal)
            if problem is not None:
                raise problem
        agent = self.server.machine.agents.get(agent_id)
        if agent is None:
            raise FilesError(404, f"Agent {agent_id} of path '{path}' is not registered")
        if not agent.connected:
            raise FilesError(503, f"Agent {agent_id} is disconnected")
        return agent, forwarded

    def _log_refusal(self, principal: str | None) -> str | None:
        """Why ``principal`` may not read an agent's log by the master's ACLs, or None."""
        acls = self.server.acls
        if acls.unrestricted(daemon_log.LOG_ACTION):
            return None
        return forbidden(acls, daemon_log.LOG_ACTION, principal)

    def _agent_of_executor(self, framework_id: str, executor_id: str) -> str | None:
        machine = self.server.machine
        for agent in machine.agents.values():
            if (framework_id, executor_id) in agent.executors:
                return agent.agent_id
        fw = machine.frameworks.get(framework_id)
        if fw is None:
            fw = next(
                (f for f in machine.completed_frameworks if f.framework_id == framework_id), None
            )
        if fw is None:
            return None
        found: str | None = None
        for task in [*fw.completed_tasks, *fw.tasks.values()]:  # newest last
            if (task.executor_id or task.task_id) == executor_id:
                found = task.agent_id
                if not task_states.is_terminal(task.state):
                    return found
        return found

    # -- forwarding --------------------------------------------------------------------------

    async def http_forward(self, request: web.Request) -> web.StreamResponse:
        """``/files/<op>?path=...``: the agent's answer, passed through (the master's log: its
        own)."""
        operation = request.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        if daemon_log.find(request.query.get("path") or "") is not None:
            if operation == "browse":
                return await self.local.http_browse(request)
            if operation == "read":
                return await self.local.http_read(request)
            return await self.local.http_download(request)
        try:
            agent, path = self.locate(request.query.get("path"), request.get("principal"))
        except FilesError as e:
            return text_reply(e.status, e.message)
        params = {**request.query, "path": path}
        url = f"{agent_url(agent)}/files/{operation}"
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                async with session.get(
                    url, params=params, headers=agent_credentials(request), ssl=agent_ssl()
                ) as upstream:
                    headers = {
                        k: v
                        for k, v in upstream.headers.items()
                        if k.lower() in ("content-type", "content-disposition")
                    }
                    response = web.StreamResponse(status=upstream.status, headers=headers)
                    if upstream.content_length is not None:
                        response.content_length = upstream.content_length
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_chunked(1 << 16):
                        await response.write(chunk)
                    await response.write_eof()
                    return response
        except (aiohttp.ClientError, TimeoutError) as e:
            return text_reply(503, f"Agent {agent.agent_id} did not answer: {e or type(e)}")

    async def operator_call(self, call_type: str, payload: dict[str, Any]) -> web.Response:
        """LIST_FILES / READ_FILE: the same call sent to the agent's operator API."""
        request = OPERATOR_REQUEST.get()
        principal = request.get("principal") if request is not None else None
        if daemon_log.find(str(payload.get("path") or "")) is not None:
            return self._local_call(call_type, payload, principal)
        try:
            agent, path = self.locate(payload.get("path"), principal)
        except FilesError as e:
            return text_reply(e.status, e.message)
        body = {"type": call_type, call_type.lower(): {**payload, "path": path}}
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                async with session.post(
                    f"{agent_url(agent)}/api/v1",
                    data=encode_json(body),
                    headers={"Content-Type": "application/json", **agent_credentials(request)},
                    ssl=agent_ssl(),
                ) as upstream:
                    data = await upstream.read()
                    ctype = upstream.headers.get("Content-Type", "text/plain")
                    return web.Response(
                        status=upstream.status, body=data, headers={"Content-Type": ctype}
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            return text_reply(503, f"Agent {agent.agent_id} did not answer: {e or type(e)}")

    def _local_call(
        self, call_type: str, payload: dict[str, Any], principal: str | None
    ) -> web.Response:
        """LIST_FILES / READ_FILE of the master's own log."""
        path = str(payload["path"])
        try:
            if call_type == "LIST_FILES":
                result = self.local.list_files(path, principal)
            else:
                length = payload.get("length")
                result = self.local.read_file(
                    path,
                    int(payload.get("offset") or 0),
                    None if length is None else int(length),
                    principal,
                )
        except FileError as e:
            return text_reply(e.status, e.message)
        return json_reply({"type": call_type, call_type.lower(): result})
