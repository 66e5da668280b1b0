"""The master's asyncio shell: HTTP endpoints, framework streams, agent connections, timers.

It owns every socket and timer and feeds the master core (`MasterMachine`) events with the
current time, then carries out the effects the core returns (`flush`). Nothing here decides
anything about frameworks, offers or tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import msgspec
from aiohttp import WSMsgType, web

from butte import MESOS_COMPAT_VERSION
from butte.core import internal
from butte.core.clock import Clock, SystemClock
from butte.core.codec import record
from butte.core.ids import IdGenerator
from butte.core.messages import (
    SCHEDULER_CALL_TYPES,
    SCHEDULER_REQUIRED_PAYLOAD,
    DecodeError,
    SchedulerCall,
    decode,
)
from butte.master import state_json, views, webui
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions
from butte.master.effects import (
    CloseAgentConnection,
    CloseFrameworkStream,
    OperatorEvent,
    SendToAgent,
    SendToFramework,
)
from butte.master.http import (
    MAX_BODY,
    PrefixRouter,
    json_reply,
    read_api_body,
    text_reply,
)
from butte.master.machine import MasterMachine, MasterOptions
from butte.master.metrics import master_metrics
from butte.master.operator import OperatorApi
from butte.master.snapshot import StateSnapshots

log = logging.getLogger(__name__)

HEARTBEAT = record({"type": "HEARTBEAT"})


@dataclass(slots=True)
class MasterConfig:
    """Everything the shell needs to start (built from the command-line flags)."""

    ip: str = "127.0.0.1"
    port: int = 5050
    hostname: str | None = None
    work_dir: str = ""
    allocation_interval: float = 1.0
    allocator: AllocatorOptions = field(default_factory=AllocatorOptions)
    master: MasterOptions = field(default_factory=MasterOptions)
    flags: dict[str, str] = field(default_factory=dict)


class _Stream:
    """One framework subscription: a queue of encoded records drained by its handler."""

    __slots__ = ("queue", "closed")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def put(self, data: bytes) -> None:
        if not self.closed:
            self.queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class _AgentLink:
    """One agent WebSocket: outgoing frames are queued so effects never await."""

    __slots__ = ("ws", "queue", "peer_ip")

    def __init__(self, ws: web.WebSocketResponse, peer_ip: str) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer_ip = peer_ip


class MasterServer:
    """Runs one master: `start()`, then `wait_closed()`; `stop()` ends it."""

    def __init__(self, config: MasterConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        hostname = config.hostname or config.ip
        ids = IdGenerator()
        self.master_info = views.master_info(
            ids.master_id, config.ip, config.port, hostname, MESOS_COMPAT_VERSION
        )
        config.allocator.allocation_interval = config.allocation_interval
        self.machine = MasterMachine(
            allocator=HierarchicalDRFAllocator(config.allocator),
            master_info=self.master_info,
            options=config.master,
            ids=ids,
        )
        self.machine.start_time = self.clock.now()
        self.elected_time = self.machine.start_time
        self._streams: dict[str, _Stream] = {}
        self._agents: dict[str, _AgentLink] = {}
        self._allocation_pending = False
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.router = PrefixRouter()
        self.state_snapshots = StateSnapshots()
        self._add_routes()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.router.dispatch)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.ip, self.config.port, reuse_address=True)
        await site.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.config.allocation_interval, self._allocate)),
            loop.create_task(self._every(0.25, self._tick)),
            loop.create_task(self._every(self.config.master.agent_ping_timeout, self._ping_agents)),
            loop.create_task(self._every(self.config.master.heartbeat_interval, self._heartbeat)),
        ]
        log.info(
            "Master %s listening on %s:%d", self.machine.master_id, self.config.ip, self.config.port
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for stream in self._streams.values():
            stream.close()
        for link in self._agents.values():
            link.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def _every(self, period: float, action: object) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                action()  # type: ignore[operator]
            except Exception:
                log.exception("Periodic action failed")

    # -- effects --------------------------------------------------------------------------

    def flush(self) -> None:
        """Carries out what the core asked for, then schedules an allocation if wanted."""
        for effect in self.machine.drain():
            if isinstance(effect, SendToFramework):
                stream = self._streams.get(effect.stream_id)
                if stream is not None:
                    stream.put(record(effect.event))
            elif isinstance(effect, SendToAgent):
                link = self._agents.get(effect.connection_id)
                if link is not None:
                    link.queue.put_nowait(internal.encode(effect.message))
            elif isinstance(effect, CloseFrameworkStream):
                stream = self._streams.pop(effect.stream_id, None)
                if stream is not None:
                    stream.close()
            elif isinstance(effect, CloseAgentConnection):
                link = self._agents.get(effect.connection_id)
                if link is not None:
                    link.queue.put_nowait(None)
            elif isinstance(effect, OperatorEvent):
                self.operator.publish(effect.event)
        if self.machine.allocation_wanted and not self._allocation_pending:
            # Coalesce every trigger of this loop iteration into one allocation run.
            self._allocation_pending = True
            asyncio.get_running_loop().call_soon(self._allocate)

    def _allocate(self) -> None:
        self._allocation_pending = False
        started = time.perf_counter()
        self.machine.allocate(self.clock.now())
        self.machine.counters["allocation_runs"] = (
            self.machine.counters.get("allocation_runs", 0) + 1
        )
        self.last_allocation_seconds = time.perf_counter() - started
        self.machine.allocator.record_allocation_seconds(self.last_allocation_seconds)
        self.flush()

    def _tick(self) -> None:
        self.machine.tick(self.clock.now())
        self.flush()

    def _ping_agents(self) -> None:
        self.machine.ping_agents(self.clock.now())
        self.flush()

    def _heartbeat(self) -> None:
        for stream in self._streams.values():
            stream.put(HEARTBEAT)

    # -- routes ---------------------------------------------------------------------------

    def _add_routes(self) -> None:
        r = self.router
        r.add("/api/v1/scheduler", self.scheduler_api)
        r.add(internal.AGENT_PATH, self.agent_socket)
        r.add("/state", self.state)
        r.add("/state.json", self.state)
        r.add("/version", self.version)
        r.add("/health", self.health)
        r.add("/redirect", self.redirect)
        r.add("/metrics/snapshot", self.metrics_snapshot)
        self.operator = OperatorApi(self)  # operator API, event stream, legacy, files, /metrics
        webui.add_routes(self)  # the web UI at / (and /static/...)

    async def health(self, request: web.Request) -> web.StreamResponse:
        return text_reply(200)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return json_reply(state_json.version_json(MESOS_COMPAT_VERSION))

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        info = self.master_info
        return text_reply(307, headers={"Location": f"//{info['hostname']}:{info['port']}"})

    async def state(self, request: web.Request) -> web.StreamResponse:
        # Encoded once per build and reused (see butte.master.snapshot): a big state must
        # not stall the event loop for every poll.
        data = self.state_snapshots.master_state(
            self.machine, self.config.flags, MESOS_COMPAT_VERSION, self.elected_time
        )
        return json_reply(msgspec.Raw(data), jsonp=request.query.get("jsonp"))

    async def metrics_snapshot(self, request: web.Request) -> web.StreamResponse:
        return json_reply(master_metrics(self.machine, self.clock.now(), self.elected_time))

    # -- scheduler API --------------------------------------------------------------------

    async def scheduler_api(self, request: web.Request) -> web.StreamResponse:
        body = await read_api_body(request)
        if isinstance(body, web.StreamResponse):
            return body
        try:
            call = decode(body, SchedulerCall)
        except DecodeError as e:
            return text_reply(400, f"Failed to validate scheduler::Call: {e}")
        error = _validate_call_shape(call)
        if error:
            return text_reply(400, error)
        now = self.clock.now()
        if call.type == "SUBSCRIBE":
            if "Mesos-Stream-Id" in request.headers:
                return text_reply(
                    400, "Subscribe calls should not include the 'Mesos-Stream-Id' header"
                )
            return await self._subscribe(request, call, now)
        result = self.machine.scheduler_call(call, request.headers.get("Mesos-Stream-Id"), now)
        self.flush()
        if result.body is not None:
            return json_reply(result.body, result.status)
        return text_reply(result.status, result.message)

    async def _subscribe(
        self, request: web.Request, call: SchedulerCall, now: float
    ) -> web.StreamResponse:
        stream_id = str(uuid.uuid4())
        stream = _Stream()
        # Registered before the core runs, so the first events queue up for this stream.
        self._streams[stream_id] = stream
        result = self.machine.subscribe(call, stream_id, now)
        if result.status != 200:
            self._streams.pop(stream_id, None)
            self.flush()
            return text_reply(result.status, result.message)
        if result.stream_error is not None:
            self._streams.pop(stream_id, None)
            stream.put(record(views.error_event(result.stream_error)))
            stream.close()
        self.flush()
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Mesos-Stream-Id": stream_id},
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            while True:
                data = await stream.queue.get()
                if data is None:
                    break
                await response.write(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self._streams.get(stream_id) is stream:
                del self._streams[stream_id]
                self.machine.framework_disconnected(stream_id, self.clock.now())
                self.flush()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    # -- agents ---------------------------------------------------------------------------

    async def agent_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY * 4, autoping=True)
        await ws.prepare(request)
        connection_id = str(uuid.uuid4())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        link = _AgentLink(ws, peer[0] if peer else "")
        self._agents[connection_id] = link
        writer = asyncio.get_running_loop().create_task(self._agent_writer(link))
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    message = internal.decode_agent_message(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    log.warning("Bad message from agent connection %s: %s", connection_id, e)
                    continue
                self.machine.agent_message(connection_id, message, link.peer_ip, self.clock.now())
                self.flush()
        except asyncio.CancelledError:
            pass
        finally:
            self._agents.pop(connection_id, None)
            link.queue.put_nowait(None)
            writer.cancel()
            self.machine.agent_disconnected(connection_id, self.clock.now())
            self.flush()
        return ws

    async def _agent_writer(self, link: _AgentLink) -> None:
        try:
            while True:
                data = await link.queue.get()
                if data is None:
                    await link.ws.close()
                    return
                await link.ws.send_str(data.decode())
        except (ConnectionError, RuntimeError):
            with contextlib.suppress(Exception):
                await link.ws.close()


def _validate_call_shape(call: SchedulerCall) -> str | None:
    """Checks the parts of a call that need no state: known type, payload present."""
    if call.type not in SCHEDULER_CALL_TYPES:
        return f"Failed to validate scheduler::Call: unknown call type '{call.type}'"
    key = SCHEDULER_REQUIRED_PAYLOAD.get(call.type)
    if key is not None and getattr(call, key) is None:
        return f"Expecting '{key}' to be present"
    return None
