"""The agent's HTTP endpoints: the executor API v1 and the read-only operator endpoints.

* ``POST /api/v1/executor`` (docs/protocol.md §2.1): SUBSCRIBE answers 200 with a chunked RecordIO
  stream that lives as long as the executor's connection; UPDATE / MESSAGE / HEARTBEAT answer
  202 once the core accepted them. Malformed requests get 400/405/406/415 with a message.
* ``GET /health``, ``/version``, ``/state`` (and ``/slave(1)/...`` forms), ``/flags``,
  ``/metrics/snapshot``, and ``/files/{read,browse,download}`` limited to the work dir.
* ``GET /files/debug``: the paths the files endpoints serve -> real directories, as Mesos'
  agent shows its attached paths, under the ``get_endpoints`` ACL (docs/operating.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

import butte
from butte.agent.files import SandboxFiles
from butte.agent.http_auth import executor_call_problem, state_viewer
from butte.agent.shell_api import AgentShell
from butte.core.codec import encode_json
from butte.core.messages import EXECUTOR_CALL_TYPES, DecodeError, ExecutorCall, decode
from butte.master.acls import endpoint_forbidden, forbidden, without_flags

JSON = "application/json"
_ACCEPTABLE = ("application/json", "application/*", "*/*", "application/recordio")


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A compact JSON response (always with Content-Length)."""
    return web.Response(body=encode_json(obj), status=status, content_type=JSON)


def error(status: int, message: str) -> web.Response:
    """A plain-text error answer."""
    return web.Response(status=status, text=message)


def version_info() -> dict[str, Any]:
    """``/version`` (numeric Mesos version: pymesos parses it)."""
    return {
        "version": butte.MESOS_COMPAT_VERSION,
        "butte_version": butte.__version__,
        "build_date": "",
        "build_time": 0.0,
        "build_user": "",
    }


def _content_problem(request: web.Request) -> web.Response | None:
    """405/400/415/406 for requests the executor API cannot take (docs/protocol.md §0.2)."""
    if request.method != "POST":
        return web.Response(status=405, text="Expecting 'POST'", headers={"Allow": "POST"})
    content_type = request.headers.get("Content-Type")
    if not content_type:
        return error(400, "Expecting 'Content-Type' to be present")
    base = content_type.split(";")[0].strip().lower()
    if base == "application/x-protobuf":
        return error(415, "Only 'application/json' is supported (protobuf is not)")
    if base != JSON:
        return error(415, f"Expecting 'Content-Type' of {JSON}")
    accept = request.headers.get("Accept", "")
    if accept and not any(a in accept for a in _ACCEPTABLE):
        return error(406, f"Expecting 'Accept' to allow {JSON}")
    return None


class AgentHttp:
    """Route handlers bound to one `AgentServer`."""

    def __init__(self, server: AgentShell) -> None:
        self.server = server
        self.files = SandboxFiles(server.options.work_dir, self._agent_id)

    def _agent_id(self) -> str | None:
        machine = self.server.machine
        return machine.agent_id if machine is not None else None

    def routes(self) -> list[web.RouteDef]:
        """Every route, under ``/`` and ``/slave(1)/`` like Mesos."""
        plain = [
            ("/api/v1/executor", self.executor_api, "*"),
            ("/health", self.health, "GET"),
            ("/version", self.version, "GET"),
            ("/state", self.state, "GET"),
            ("/state.json", self.state, "GET"),
            ("/flags", self.flags, "GET"),
            ("/files/debug", self.files_debug, "GET"),
        ]
        out = []
        for path, handler, method in plain:
            for prefix in ("", "/slave(1)"):
                out.append(web.route(method, prefix + path, handler))
        return out

    # -- executor API ------------------------------------------------------------------------

    async def executor_api(self, request: web.Request) -> web.StreamResponse:
        problem = _content_problem(request)
        if problem is not None:
            return problem
        body = await request.read()
        try:
            call = decode(body, ExecutorCall)
        except DecodeError as e:
            return error(400, f"Failed to validate executor::Call: {e}")
        if call.type not in EXECUTOR_CALL_TYPES:
            return error(400, f"Unknown or unsupported executor call type {call.type!r}")
        if call.type == "SUBSCRIBE" and call.subscribe is None:
            return error(400, "Expecting 'subscribe' to be present")
        refusal = executor_call_problem(
            self.server.options.auth,
            request.headers.get("Authorization"),
            call.framework_id.value,
            call.executor_id.value,
            self._container_of,
        )
        if refusal is not None:
            return refusal
        reply = self.server.executor_call(call)
        if reply.status != 200 or reply.container_id is None:
            if reply.message:
                return error(reply.status, reply.message)
            return web.Response(status=reply.status)
        return await self._stream(request, reply.container_id, reply.effects)

    def _container_of(self, framework_id: str, executor_id: str) -> str | None:
        """The container the executor runs in now (None: unknown here)."""
        machine = self.server.machine
        fw = machine.frameworks.get(framework_id) if machine is not None else None
        ex = fw.executors.get(executor_id) if fw is not None else None
        return ex.container_id if ex is not None else None

    async def _stream(
        self, request: web.Request, container_id: str, effects: list
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        stream = self.server.open_executor_stream(container_id)
        self.server.apply(effects)  # SUBSCRIBED, LAUNCH ... into the new stream
        try:
            await response.prepare(request)
            await stream.pump(response)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.server.executor_stream_closed(stream)
        return response

    # -- read-only endpoints -------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return json_response(version_info())

    async def state(self, request: web.Request) -> web.Response:
        acls = self.server.options.auth.acls
        view = state_viewer(acls, request, self.server.framework_user)
        state = self.server.state()
        if view is not None:
            state = view.agent_state(state)
        if not acls.allowed("view_flags", request.get("principal"), None):
            state = without_flags(state)  # as Mesos: the flags only for `view_flags`
        return json_response(state)

    async def flags(self, request: web.Request) -> web.Response:
        """``/flags``: 403 for a principal the ``view_flags`` ACL refuses, as in Mesos."""
        refusal = forbidden(self.server.options.auth.acls, "view_flags", request.get("principal"))
        if refusal is not None:
            return error(403, refusal)
        return json_response({"flags": self.server.flags})

    async def files_debug(self, request: web.Request) -> web.Response:
        """``/files/debug``: what Mesos' files process answers, its virtual paths -> real
        paths (`SandboxFiles.attached`), for a principal the ``get_endpoints`` ACL lets GET
        ``/files/debug`` (403 otherwise), as Mesos' ``FilesProcess::debug`` authorizes it."""
        principal = request.get("principal")
        refusal = endpoint_forbidden(self.server.options.auth.acls, principal, "/files/debug")
        if refusal is not None:
            return error(403, refusal)
        # A walk of the work dir: off the event loop, it may hold many sandboxes.
        return json_response(await asyncio.to_thread(self.files.attached))


def uptime_since(start: float) -> float:
    """Seconds since ``start`` (wall clock), for metrics."""
    return max(0.0, time.time() - start)
