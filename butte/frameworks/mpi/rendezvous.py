"""Where ``mpirun`` meets the node tasks: a small HTTP service run by ``butte mpi``.

Open MPI starts one daemon (``orted``) per node through a remote-shell program, normally ssh.
``butte mpi`` gives it `butte.frameworks.mpi.launcher` instead, which hands the daemon's
command line to this service; the node task on that agent (`butte.frameworks.mpi.proxy`)
fetches it from here, runs it in its sandbox and reports its exit status back, which the
launcher then exits with, as ssh would. Routes (JSON)::

    POST /mpi/v1/nodes/NODE/launch   {"command": "..."}    launcher (launch token)
    GET  /mpi/v1/nodes/NODE/command                        proxy (node token), long poll:
         200 {"command": ...} | 204 not yet | 410 the job is over
    POST /mpi/v1/nodes/NODE/exit     {"status": N}         proxy (node token)
    GET  /mpi/v1/nodes/NODE/exit                           launcher (launch token), long poll:
         200 {"status": N} | 204 not yet
    POST /mpi/v1/nodes/NODE/rank_failed {"rank": R, "status": N}   a rank's wrapper (node token)

Each caller proves who it is with a token in ``X-Butte-Mpi-Token``: the launch token lives
only in the environment of ``mpirun`` on the client, each node token only in its node task's,
so whoever else reaches the port can neither run commands nor steal them.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from butte.frameworks.mpi.wire import TOKEN_HEADER

POLL_SECONDS = 20.0
MAX_COMMAND = 64 << 10


@dataclass
class NodeSlot:
    """One node's rendezvous: the command for it and the exit status of it."""

    token: str
    command: str | None = None
    status: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Rendezvous:
    """The service for one job (see the module docstring)."""

    def __init__(
        self, nodes: list[str], on_rank_failed: Callable[[str, int, int], None] | None = None
    ) -> None:
        self.on_rank_failed = on_rank_failed
        self.launch_token = secrets.token_hex(16)
        self.nodes = {name: NodeSlot(secrets.token_hex(16)) for name in nodes}
        self.closed = False
        self._closed_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def node_token(self, name: str) -> str:
        return self.nodes[name].token

    async def start(self, host: str, port: int = 0) -> int:
        """Listens on ``host:port`` (0: any free port); returns the port."""
        app = web.Application(client_max_size=MAX_COMMAND)
        app.router.add_post("/mpi/v1/nodes/{node}/launch", self._post_launch)
        app.router.add_get("/mpi/v1/nodes/{node}/command", self._get_command)
        app.router.add_post("/mpi/v1/nodes/{node}/exit", self._post_exit)
        app.router.add_get("/mpi/v1/nodes/{node}/exit", self._get_exit)
        app.router.add_post("/mpi/v1/nodes/{node}/rank_failed", self._post_rank_failed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    def close(self) -> None:
        """The job is over: waiting proxies are told so (410) and stop."""
        self.closed = True
        self._closed_event.set()
        for slot in self.nodes.values():
            slot.poke()

    async def stop(self) -> None:
        self.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -----------------------------------------------------------------------------

    def _slot(self, request: web.Request, launcher: bool) -> NodeSlot:
        slot = self.nodes.get(request.match_info["node"])
        if slot is None:
            raise web.HTTPNotFound(text=f"no node {request.match_info['node']!r} in this job\n")
        expected = self.launch_token if launcher else slot.token
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise web.HTTPForbidden(text="bad or missing token\n")
        return slot

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON\n") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object\n")
        return body

    async def _post_launch(self, request: web.Request) -> web.Response:
        slot = self._slot(request, launcher=True)
        command = (await self._json(request)).get("command")
        if not isinstance(command, str) or not command.strip():
            raise web.HTTPBadRequest(text="'command' must be a non-empty string\n")
        if self.closed:
            raise web.HTTPGone(text="the job is over\n")
        if slot.command is not None:
            raise web.HTTPConflict(text="this node was launched already\n")
        slot.command = command
        slot.poke()
        return web.json_response({"accepted": True}, status=202)

    async def _wait(self, slot: NodeSlot, ready: Any) -> bool:
        """Waits up to POLL_SECONDS for ``ready()``; True if it became true."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POLL_SECONDS
        while not ready() and not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await slot.changed.wait()
            except TimeoutError:
                return bool(ready())
        return bool(ready())

    async def _get_command(self, request: web.Request) -> web.Response:
        slot = self._slot(request, launcher=False)
        if await self._wait(slot, lambda: slot.command is not None):
            return web.json_response({"command": slot.command})
        if self.closed:
            raise web.HTTPGone(text="the job is over\n")
        return web.Response(status=204)

    async def _post_exit(self, request: web.Request) -> web.Response:
        slot = self._slot(request, launcher=False)
        status = (await self._json(request)).get("status")
        if type(status) is not int or not -255 <= status <= 255:
            raise web.HTTPBadRequest(text="'status' must be an integer exit status\n")
        slot.status = status
        slot.poke()
        return web.json_response({"recorded": True})

    async def _get_exit(self, request: web.Request) -> web.Response:
        slot = self._slot(request, launcher=True)
        if await self._wait(slot, lambda: slot.status is not None):
            return web.json_response({"status": slot.status})
        if self.closed:
            return web.json_response({"status": 255})
        return web.Response(status=204)

    async def _post_rank_failed(self, request: web.Request) -> web.Response:
        self._slot(request, launcher=False)
        body = await self._json(request)
        rank, status = body.get("rank"), body.get("status")
        if type(rank) is not int or type(status) is not int or not 0 < status <= 255:
            raise web.HTTPBadRequest(text="'rank' and 'status' (1-255) must be integers\n")
        if self.on_rank_failed is not None:
            self.on_rank_failed(request.match_info["node"], rank, status)
        return web.json_response({"recorded": True})
