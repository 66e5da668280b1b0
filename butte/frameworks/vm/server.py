"""The asyncio shell of the VM scheduler (``butte vm serve``): a framework on
`butte.client.scheduler.SchedulerClient`, a REST API, and the state file (docs/vm.md).

Routes (JSON; errors are ``{"error": message}`` with a 4xx status)::

    GET    /api/v1/vms                     every VM
    POST   /api/v1/vms                     create {"name", "cpus", "mem", "kernel", ...}
    GET    /api/v1/vms/NAME                one VM
    POST   /api/v1/vms/NAME/start|stop|restart   (stop may carry {"grace_seconds": N})
    DELETE /api/v1/vms/NAME
    GET    /api/v1/vms/NAME/console?offset=N&length=M
           the guest's serial console, read from the agent's /files API

The records live in ``<work_dir>/vms.json`` (written atomically before a request is
answered), together with the framework id: a restarted server re-subscribes with it
(``failover_timeout`` keeps the framework and its guests alive meanwhile) and reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from butte.client.scheduler import CallError, SchedulerClient, SchedulerError
from butte.frameworks.vm import planner as plan
from butte.frameworks.vm.guest import CONSOLE_FILE

log = logging.getLogger("butte.vm")

STATE_FILE = "vms.json"
FAILOVER_TIMEOUT = 7 * 24 * 3600.0
MAX_CONSOLE_READ = 1 << 20


def write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class VmServer:
    """One ``butte vm serve`` process."""

    def __init__(
        self,
        master: str,
        work_dir: str,
        http_host: str,
        http_port: int,
        executor_argv: tuple[str, ...] | None = None,
        name: str = "butte-vm",
    ) -> None:
        self.master = master
        self.work_dir = work_dir
        self.http_host = http_host
        self.http_port = http_port
        self.name = name
        self.planner = plan.VmPlanner(
            executor_argv=executor_argv or (sys.executable, "-m", "butte.frameworks.vm.executor")
        )
        self.client: SchedulerClient | None = None
        self.session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None

    @property
    def state_path(self) -> str:
        return os.path.join(self.work_dir, STATE_FILE)

    def load(self) -> None:
        try:
            with open(self.state_path, "rb") as f:
                self.planner.restore(json.loads(f.read()))
        except FileNotFoundError:
            pass

    def persist(self) -> None:
        data = json.dumps(self.planner.snapshot(), indent=1, sort_keys=True).encode()
        write_atomically(self.state_path, data)

    # -- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        os.makedirs(self.work_dir, exist_ok=True)
        self.load()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        info: dict[str, Any] = {
            "name": self.name,
            "checkpoint": True,
            "failover_timeout": FAILOVER_TIMEOUT,
        }
        if self.planner.framework_id:
            info["id"] = {"value": self.planner.framework_id}
        self.client = SchedulerClient(self.master, info, retry_timeout=None)
        await self._start_http()
        log.info("VM scheduler API on http://%s:%d", self.http_host, self.http_port)
        try:
            await self.client.subscribe()
            async for event in self.client:
                await self._on_event(event)
        finally:
            await self.client.close()
            if self._runner is not None:
                await self._runner.cleanup()
            await self.session.close()
        return 0

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        async with self._lock:
            if kind == "SUBSCRIBED":
                fid = event["subscribed"]["framework_id"]["value"]
                log.info("subscribed as %s", fid)
                await self._apply(self.planner.on_subscribed(fid))
            elif kind == "OFFERS":
                await self._apply(self.planner.on_offers(event["offers"].get("offers", [])))
            elif kind == "UPDATE":
                status = event["update"]["status"]
                await self._apply(self.planner.on_update(status))
                with contextlib.suppress(CallError):
                    assert self.client is not None
                    await self.client.acknowledge_status(status)
            elif kind == "ERROR":
                log.error("the master ended the subscription: %s", event.get("error"))

    async def _apply(self, effects: list[plan.Effect]) -> None:
        client = self.client
        assert client is not None
        for effect in effects:
            try:
                await self._apply_one(client, effect)
            except CallError as e:
                log.warning("%s: %s", type(effect).__name__, e)

    async def _apply_one(self, client: SchedulerClient, effect: plan.Effect) -> None:
        match effect:
            case plan.Persist():
                self.persist()
            case plan.Launch(offer_ids, task):
                operation = {"type": "LAUNCH", "launch": {"task_infos": [task]}}
                await client.accept(offer_ids, [operation], refuse_seconds=1.0)
            case plan.Decline(offer_ids, refuse):
                await client.decline(offer_ids, refuse_seconds=refuse)
            case plan.Kill(task_id, agent_id, grace):
                await client.kill(task_id, agent_id, grace_period=grace)
            case plan.Message(agent_id, executor_id, data):
                await client.message(agent_id, executor_id, data)
            case plan.Revive():
                await client.revive()
            case plan.Suppress():
                await client.suppress()
            case plan.Reconcile(tasks):
                await client.reconcile(list(tasks))

    # -- REST API ---------------------------------------------------------------------------

    async def _start_http(self) -> None:
        app = web.Application(client_max_size=64 << 10, middlewares=[_errors])
        app.router.add_get("/api/v1/vms", self._list)
        app.router.add_post("/api/v1/vms", self._create)
        app.router.add_get("/api/v1/vms/{name}", self._show)
        app.router.add_delete("/api/v1/vms/{name}", self._delete)
        app.router.add_post("/api/v1/vms/{name}/{action}", self._action)
        app.router.add_get("/api/v1/vms/{name}/console", self._console)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.http_port)
        await site.start()

    async def _request(self, operation: Any, *args: Any) -> web.Response:
        """Runs a planner request under the lock, carries out its effects, answers the VM."""
        if self.client is None or self.client.framework_id is None:
            raise plan.VmError(503, "not subscribed to the master yet")
        async with self._lock:
            vm, effects = operation(*args)
            await self._apply(effects)
            return web.json_response(vm.view())

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"vms": self.planner.snapshot()["vms"]})

    async def _show(self, request: web.Request) -> web.Response:
        return web.json_response(self.planner.get(request.match_info["name"]).view())

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise plan.VmError(400, "body is not valid JSON") from None
        response = await self._request(self.planner.create, body)
        response.set_status(201)
        return response

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._request(self.planner.delete, request.match_info["name"])

    async def _action(self, request: web.Request) -> web.Response:
        operations = {
            "start": self.planner.start,
            "stop": self.planner.stop,
            "restart": self.planner.restart,
        }
        action = request.match_info["action"]
        operation = operations.get(action)
        if operation is None:
            raise plan.VmError(404, f"unknown action {action!r}")
        body = await _optional_json(request)
        allowed = {"grace_seconds"} if action == "stop" else set()
        unknown = set(body) - allowed
        if unknown:
            raise plan.VmError(400, f"unknown fields {sorted(unknown)} for {action}")
        if "grace_seconds" in body:
            grace = body["grace_seconds"]
            if (
                isinstance(grace, bool)
                or not isinstance(grace, int | float)
                or not 0 <= grace <= 3600
            ):
                raise plan.VmError(400, "'grace_seconds' must be a number from 0 to 3600")
            return await self._request(operation, request.match_info["name"], float(grace))
        return await self._request(operation, request.match_info["name"])

    async def _console(self, request: web.Request) -> web.Response:
        vm = self.planner.get(request.match_info["name"])
        offset = _int_query(request, "offset", 0, 1 << 62)
        length = _int_query(request, "length", MAX_CONSOLE_READ, MAX_CONSOLE_READ)
        if vm.executor_id is None or vm.agent_address is None or self.client is None:
            raise plan.VmError(404, f"VM {vm.name!r} has never run: no console yet")
        path = (
            f"/frameworks/{self.client.framework_id}/executors/{vm.executor_id}"
            f"/runs/latest/{CONSOLE_FILE}"
        )
        query = urllib.parse.urlencode({"path": path, "offset": offset, "length": length})
        assert self.session is not None
        try:
            async with self.session.get(f"http://{vm.agent_address}/files/read?{query}") as r:
                if r.status == 404:
                    return web.json_response({"data": "", "offset": offset})
                if r.status != 200:
                    raise plan.VmError(502, f"agent answered {r.status}: {await r.text()}")
                answer = await r.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise plan.VmError(502, f"agent {vm.agent_address} unreachable: {e}") from None
        return web.json_response({"data": answer.get("data", ""), "offset": offset})


async def _optional_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body of an action (an empty body is {})."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise plan.VmError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise plan.VmError(400, "body must be a JSON object")
    return body


def _int_query(request: web.Request, key: str, default: int, high: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) > high:
        raise plan.VmError(400, f"'{key}' must be an integer from 0 to {high}")
    return int(text)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except plan.VmError as e:
        return web.json_response({"error": e.message}, status=e.status)
    except SchedulerError as e:
        return web.json_response({"error": str(e)}, status=503)
