"""The master's asyncio shell: HTTP endpoints, framework streams, agent connections, timers.

It owns every socket and timer and feeds the master core (`MasterMachine`) events with the
current time, then carries out the effects the core returns (`apply`). Nothing here decides
anything about frameworks, offers or tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from butte import MESOS_COMPAT_VERSION
from butte.coord import make_contender
from butte.coord.interface import Contender, RegistryError
from butte.coord.leadership import Leadership, Role
from butte.core import domains, internal
from butte.core.clock import Clock, SystemClock
from butte.core.codec import encode_json, record
from butte.core.conn_limit import (
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimit,
    quiet_accept_errors,
    raise_fd_limit,
)
from butte.core.container_info import required_fields_problem
from butte.core.ids import IdGenerator
from butte.core.messages import (
    SCHEDULER_CALL_TYPES,
    SCHEDULER_REQUIRED_PAYLOAD,
    DecodeError,
    SchedulerCall,
    call_decode_problem,
    decode,
)
from butte.core.tls_listener import TlsListen
from butte.core.websocket import CLOSE_POLICY
from butte.master import fast_http, state_json, ui_api, view_acls, views, webui
from butte.master.accept import launched_containers, unreported_refusal
from butte.master.acls import Acls, endpoint_forbidden, without_flags
from butte.master.agent_socket import AgentUpgrade, AgentWebSocket
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions
from butte.master.auth import (
    AuthConfig,
    Authenticator,
    agent_registration_refusal,
    framework_principal_error,
)
from butte.master.effects import (
    CloseAgentConnection,
    CloseFrameworkStream,
    Effect,
    OperatorEvent,
    RegistryWrite,
    SendToAgent,
    SendToFramework,
)
from butte.master.events import MAX_SUBSCRIBERS
from butte.master.http import (
    MAX_BODY,
    PrefixRouter,
    RecordStream,
    api_request_error,
    json_reply,
    jsonp_middleware,
    metrics_query_problem,
    read_api_body,
    text_reply,
)
from butte.master.machine import MasterMachine, MasterOptions
from butte.master.operator import METRICS_PATH, OperatorApi
from butte.master.registrar import RegistrarMetrics
from butte.master.snapshot import StateSnapshots
from butte.master.task_kill import TaskKill

log = logging.getLogger(__name__)

HEARTBEAT = record({"type": "HEARTBEAT"})
# Bytes of events a scheduler's stream may fall behind before the master drops it (the
# framework re-subscribes; until then it is disconnected, as after any broken stream).
MAX_SCHEDULER_BACKLOG = 64 * 1024 * 1024
# Exit status of a master that lost leadership (Mesos aborts; a supervisor restarts it).
EXIT_LEADERSHIP_LOST = 1
# Seconds an abdicating master may take to close connections before it is forced out.
_ABDICATION_GRACE = 5.0
# Agent connections whose held messages go to the core per loop iteration once the registry
# is recovered (the loop keeps serving between batches).
_HELD_AGENTS_BATCH = 100


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
    # --zk URL (None: the embedded standalone coordination), its session timeout, and
    # --registry (in_memory keeps nothing across restarts).
    zk: str | None = None
    zk_session_timeout: float = 10.0
    registry: str = "replicated_log"
    # --http_header_timeout: how long a request head may take to arrive (slow clients).
    http_header_timeout: float = fast_http.HEADER_TIMEOUT
    # --max_stream_backlog: bytes a scheduler stream may fall behind before it is dropped.
    max_stream_backlog: int = MAX_SCHEDULER_BACKLOG
    # --max_operator_event_stream_subscribers: open operator streams (the oldest goes).
    max_operator_event_stream_subscribers: int = MAX_SUBSCRIBERS
    # --max_connections: open connections accepted at once (0: no limit).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # --authenticate_* and the credentials (butte.master.auth).
    auth: AuthConfig = field(default_factory=AuthConfig)
    # LIBPROCESS_SSL_*: the listener speaks TLS (None: plain HTTP).
    tls: TlsListen | None = None


class _AgentLink:
    """One agent WebSocket served by aiohttp (the lean path's is `AgentWebSocket`):
    outgoing frames are queued so effects never await."""

    __slots__ = ("ws", "queue", "peer_ip", "principal", "refusal")

    def __init__(self, ws: web.WebSocketResponse, peer_ip: str, principal: str | None) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer_ip = peer_ip
        # The agent's authenticated principal (None without --authenticate_agents).
        self.principal = principal
        # Why its registration was refused: the reason of the close frame, for its log.
        self.refusal: str | None = None

    def send(self, data: bytes) -> None:
        """Queues one text message."""
        self.queue.put_nowait(data)

    def close(self) -> None:
        """Closes the socket once what is queued is out."""
        self.queue.put_nowait(None)


class MasterServer:
    """Runs one master: `start()`, then `wait_closed()`; `stop()` ends it."""

    def __init__(
        self, config: MasterConfig, clock: Clock | None = None, contender: Contender | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        hostname = config.hostname or config.ip
        ids = IdGenerator()
        self.master_info = views.master_info(
            ids.master_id, config.ip, config.port, hostname, MESOS_COMPAT_VERSION
        )
        if config.master.domain is not None:
            self.master_info["domain"] = config.master.domain  # MasterInfo.domain
        config.allocator.allocation_interval = config.allocation_interval
        self.machine = MasterMachine(
            allocator=HierarchicalDRFAllocator(config.allocator),
            master_info=self.master_info,
            options=config.master,
            ids=ids,
        )
        self.machine.start_time = self.clock.now()
        self.elected_time: float | None = None  # set once this master leads
        # Mesos' registrar/* metrics: the registry's load at election, its writes, its size.
        self.registrar = RegistrarMetrics()
        self._streams: dict[str, RecordStream] = {}
        # Scheduler streams dropped because their reader fell too far behind.
        self.slow_streams_closed = 0
        # --max_connections (replaced by the listener's own when it is bound).
        self.connection_limit = ConnectionLimit(0)
        self._agents: dict[str, _AgentLink | AgentWebSocket] = {}
        self._agent_connections = itertools.count(1)
        # Messages of agents that connected while the registry was being recovered, per
        # connection in arrival order: the core sees them once it knows the registry.
        self._held_agent_messages: dict[str, list[internal.AgentMessage]] = {}
        self._allocation_pending = False
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        # The listener (scheduler calls served by butte.master.fast_http, the rest handed
        # to aiohttp) and its connections that are still on the fast path.
        self._listener: asyncio.Server | None = None
        self._fast_connections: set[fast_http.SchedulerFastPath] = set()
        self._stopped = asyncio.Event()
        self.router = PrefixRouter()
        self.auth = Authenticator(config.auth)
        self.state_snapshots = StateSnapshots()
        self._add_routes()
        self.exit_code = 0
        self.contender = contender or make_contender(
            config.zk, config.work_dir, config.registry, config.zk_session_timeout
        )
        self.leadership = Leadership(
            self.contender,
            self.master_info,
            on_elected=self._on_elected,
            on_lost=self._on_leadership_lost,
            on_leader=self._on_leader_changed,
            # A loop frozen this long may have outlived its ZooKeeper session.
            stall_limit=config.zk_session_timeout / 3 if config.zk else None,
        )
        self.machine.leader_info = None  # unknown until the election says

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[jsonp_middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def agents_or_aiohttp() -> asyncio.Protocol:
            # Agents' WebSockets on the lean path (butte.master.agent_socket), the rest aiohttp.
            return AgentUpgrade(self, server, MAX_BODY * 4)

        fast_connections = self._fast_connections

        # A deep accept queue: thousands of agents reconnect at once after a failover, and
        # a full queue (128 by default) drops their SYNs for a 1 s retransmit each.
        def fast_path() -> asyncio.Protocol:
            return fast_http.SchedulerFastPath(
                self,
                agents_or_aiohttp,
                fast_connections,
                MAX_BODY,
                header_timeout=self.config.http_header_timeout,
            )

        tls = self.config.tls
        raise_fd_limit()
        quiet_accept_errors(asyncio.get_running_loop())
        self.connection_limit = ConnectionLimit(self.config.max_connections, tls is None)
        self._listener = await asyncio.get_running_loop().create_server(
            self.connection_limit.wrap(fast_path if tls is None else tls.wrap(fast_path)),
            self.config.ip,
            self.config.port,
            reuse_address=True,
            backlog=4096,
        )
        try:
            await self.contender.start(self.master_info, self.leadership)
        except BaseException:
            self._listener.close()
            await self._runner.cleanup()
            raise
        loop = asyncio.get_running_loop()
        self._tasks += [  # += : the election may already have started registry recovery
            loop.create_task(self._every(0.1, self.leadership.beat, always=True)),
            loop.create_task(self._every(self.config.allocation_interval, self._allocate)),
            loop.create_task(self._every(0.25, self._tick)),
            loop.create_task(self._every(self.config.master.agent_ping_timeout, self._ping_agents)),
            loop.create_task(self._every(self.config.master.heartbeat_interval, self._heartbeat)),
            loop.create_task(self._every(ui_api.SAMPLE_SECONDS, self.ui_api.sample)),
        ]
        log.info(
            "Master %s listening on %s:%d%s",
            self.machine.master_id,
            self.config.ip,
            self.config.port,
            "" if self.config.tls is None else " (TLS)",
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            # Resigns at once (the next master takes over) unless ZooKeeper is unreachable.
            await asyncio.wait_for(self.contender.stop(), 3.0)
        for stream in self._streams.values():
            stream.close()
        self.ui_api.close()
        for link in list(self._agents.values()):
            link.close()
        if self._listener is not None:
            self._listener.close()
        for connection in list(self._fast_connections):
            connection.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def _every(
        self, period: float, action: Callable[[], object], always: bool = False
    ) -> None:
        while True:
            await asyncio.sleep(period)
            if not always and not self.leadership.acting():
                continue  # timers of the core run only while leading
            try:
                action()
            except Exception:
                log.exception("Periodic action failed")

    # -- effects --------------------------------------------------------------------------

    def apply(self, effects: list[Effect]) -> None:
        """Carries out the effects an event method of the core returned, then schedules an
        allocation if the core wants one."""
        for effect in self._committed(effects):
            if isinstance(effect, SendToFramework):
                stream = self._streams.get(effect.stream_id)
                if stream is not None:
                    stream.put(record(effect.event))
            elif isinstance(effect, SendToAgent):
                link = self._agents.get(effect.connection_id)
                if link is not None:
                    link.send(internal.encode(effect.message))
            elif isinstance(effect, CloseFrameworkStream):
                stream = self._streams.pop(effect.stream_id, None)
                if stream is not None:
                    stream.close()
            elif isinstance(effect, CloseAgentConnection):
                link = self._agents.get(effect.connection_id)
                if link is not None:
                    link.close()
            elif isinstance(effect, OperatorEvent):
                self.operator.publish(effect.event)
        if self.machine.allocation_wanted and not self._allocation_pending:
            # Coalesce every trigger of this loop iteration into one allocation run.
            self._allocation_pending = True
            asyncio.get_running_loop().call_soon(self._allocate)

    def _committed(self, effects: list[Effect]) -> list[Effect]:
        """The effects to carry out: none unless this master acts as leader, and only once
        the registry writes among them are durable (one transaction for all of them, before
        any effect is delivered; a failed write aborts the master)."""
        if not self.leadership.acting():
            return []
        operations = [e.operation for e in effects if isinstance(e, RegistryWrite)]
        if operations:
            started = time.perf_counter()
            try:
                self.contender.registry.apply(operations)
            except RegistryError as e:
                self.leadership.leadership_lost(f"registry write failed ({e})")
                return []
            store_ms = (time.perf_counter() - started) * 1000
            self.registrar.stored(operations, store_ms, self.clock.now())
        return effects

    # -- leadership -----------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Routes a request; those that need the leader get 307/503 elsewhere, and those of
        a realm that needs credentials 401 without them (`butte.master.auth`)."""
        principal, unauthorized = self.auth.check(
            request.path, request.method, request.headers.get("Authorization")
        )
        if unauthorized is not None:
            return text_reply(401, unauthorized.message, unauthorized.headers)
        request["principal"] = principal
        if _needs_leader(request) and not self._agent_during_recovery(request):
            refusal = self.leadership.refusal(request.path_qs)
            if refusal is not None and refusal[0] == 307:
                # Checked against ZooKeeper first: never send a client to an ex-leader.
                leader = await self._current_leader()
                refusal = self.leadership.refusal(request.path_qs, leader)
            if refusal is not None:
                status, text, headers = refusal
                return text_reply(status, text, headers)
        return await self.router.dispatch(request)

    async def _current_leader(self) -> Mapping[str, Any] | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(None, self.contender.current_leader), 2.0
            )
        except TimeoutError:
            return None

    def _on_elected(self) -> None:
        task = asyncio.get_running_loop().create_task(self._recover_registry())
        self._tasks.append(task)

    async def _recover_registry(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            registry = await loop.run_in_executor(None, self.contender.registry.load)
        except RegistryError as e:
            self.leadership.leadership_lost(f"registry recovery failed ({e})")
            return
        if self.leadership.role is not Role.RECOVERING:
            return
        self.registrar.recovered(registry, (time.perf_counter() - started) * 1000)
        now = self.clock.now()
        effects = self.machine.recover_registry(registry, now)
        self.machine.leader_info = self.master_info
        self.elected_time = now
        self.leadership.recovered()
        log.info(
            "Leading master %s: registry recovered in %.3fs (%d agents expected back)",
            self.machine.master_id,
            time.perf_counter() - started,
            len(self.machine.recovering_agents),
        )
        self.apply(effects)
        await self._release_held_agents()

    def _agent_during_recovery(self, request: web.Request) -> bool:
        """An agent connecting while this master, just elected, recovers the registry: it is
        let in and its messages are held until recovery ends. Refusing it (503) would send
        it into its exponential registration backoff, and at 10k agents those retries
        compete with the recovery they wait for."""
        return request.path == internal.AGENT_PATH and self.leadership.role is Role.RECOVERING

    async def _release_held_agents(self) -> None:
        """Feeds the core, in arrival order, what agents sent during recovery (a re-
        registration of an agent the registry lists needs no write), a batch of connections
        per loop iteration. Messages that arrive meanwhile on a held connection queue
        behind its held ones."""
        pending = list(self._held_agent_messages)
        for start in range(0, len(pending), _HELD_AGENTS_BATCH):
            if not self.leadership.acting():
                break
            effects: list[Effect] = []
            for connection_id in pending[start : start + _HELD_AGENTS_BATCH]:
                messages = self._held_agent_messages.pop(connection_id, None)
                link = self._agents.get(connection_id)
                if link is None or not messages:
                    continue  # closed meanwhile: the core never heard of it
                for message in messages:
                    effects += self.machine.agent_message(
                        connection_id, message, link.peer_ip, self.clock.now()
                    )
            self.apply(effects)
            await asyncio.sleep(0)
        self._held_agent_messages.clear()

    def _on_leader_changed(self, leader: Mapping[str, Any] | None) -> None:
        # /state shows who leads; this master's own info only once it serves as leader.
        if leader is None or leader.get("id") != self.master_info["id"]:
            self.machine.leader_info = dict(leader) if leader is not None else None

    def _on_leadership_lost(self, reason: str) -> None:
        """Stops acting as leader at once and ends the process (non-zero exit status)."""
        self.exit_code = EXIT_LEADERSHIP_LOST
        self.machine.leader_info = None
        for stream in list(self._streams.values()):
            stream.close()
        self._streams.clear()
        for link in list(self._agents.values()):
            link.close()
        # Forced out if closing hangs (e.g. on a ZooKeeper that does not answer).
        timer = threading.Timer(_ABDICATION_GRACE, os._exit, args=(EXIT_LEADERSHIP_LOST,))
        timer.daemon = True
        timer.start()
        asyncio.get_running_loop().create_task(self.stop())

    def _allocate(self) -> None:
        self._allocation_pending = False
        started = time.perf_counter()
        effects = self.machine.allocate(self.clock.now())
        self.last_allocation_seconds = time.perf_counter() - started
        self.machine.allocator.record_allocation_seconds(self.last_allocation_seconds)
        self.apply(effects)

    def _tick(self) -> None:
        self.apply(self.machine.tick(self.clock.now()))

    def _ping_agents(self) -> None:
        self.apply(self.machine.ping_agents(self.clock.now()))

    def _slow_scheduler_stream(self) -> None:
        self.slow_streams_closed += 1

    def _heartbeat(self) -> None:
        for stream in self._streams.values():
            stream.put(HEARTBEAT)
        self.machine.heartbeats_sent()

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
        TaskKill(self).add_routes(r)  # POST /master/kill-task: the web UI's kill button
        # What the web UI reads, under /master/ui/.
        self.ui_api = ui_api.UiApi(self, self.operator.events)
        webui.add_routes(self)  # the web UI at / (and /static/...)

    async def health(self, request: web.Request) -> web.StreamResponse:
        return text_reply(200)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return json_reply(state_json.version_json(MESOS_COMPAT_VERSION))

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        if self.leadership.leading:
            info = self.master_info
            return text_reply(307, headers={"Location": f"//{info['hostname']}:{info['port']}"})
        base = self.leadership.redirect_base(await self._current_leader())
        if base is None:
            return text_reply(503, "No leader elected")
        return text_reply(307, headers={"Location": base})

    async def state(self, request: web.Request) -> web.StreamResponse:
        # Encoded once per build and reused (see butte.master.snapshot): a big state must
        # not stall the event loop for every poll.
        data = self.state_snapshots.master_state(
            self.machine, self.config.flags, MESOS_COMPAT_VERSION, self.elected_time
        )
        principal = request.get("principal")
        view = view_acls.viewer(self.acls, principal, self.machine, roles=True)
        # Mesos shows the flags in /state only to a principal allowed to `view_flags`.
        hide_flags = not self.acls.allowed("view_flags", principal, None)
        if view is not None or hide_flags:  # --acls restrict views: this principal's copy
            narrowed = msgspec.json.decode(data)
            if view is not None:
                narrowed = view.legacy_state(narrowed)
            return json_reply(without_flags(narrowed) if hide_flags else narrowed)
        return json_reply(msgspec.Raw(data))

    async def metrics_snapshot(self, request: web.Request) -> web.StreamResponse:
        refusal = endpoint_forbidden(self.acls, request.get("principal"), METRICS_PATH)
        if refusal is not None:  # the get_endpoints ACL, as libprocess' authorization callback
            return text_reply(403, refusal)
        return metrics_query_problem(request) or json_reply(self.operator.metrics())

    # -- scheduler API --------------------------------------------------------------------

    async def scheduler_api(self, request: web.Request) -> web.StreamResponse:
        body = await read_api_body(request)
        if isinstance(body, web.StreamResponse):
            return body
        call = parse_scheduler_call(body)
        if isinstance(call, tuple):
            return text_reply(*call)
        principal = request.get("principal")
        if call.type == "SUBSCRIBE":
            if "Mesos-Stream-Id" in request.headers:
                return text_reply(400, _SUBSCRIBE_WITH_STREAM_ID)
            invalid = self._principal_error(call, principal)
            if invalid is not None:
                return text_reply(400, invalid)
            call = _with_principal(call, principal)
            refusal = self._registration_refusal(call)
            if refusal is not None:
                return await self._refuse_subscription(request, call, refusal)
            return await self._subscribe(request, call, self.clock.now())
        reply = self._run_scheduler_call(call, request.headers.get("Mesos-Stream-Id"), principal)
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
        )

    def scheduler_reply(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> fast_http.Reply | None:
        """The fast path's entry (`fast_http.CallHandler`): the answer to one call that
        carries a ``Mesos-Stream-Id``, exactly as `scheduler_api` gives it; None while this
        master does not act as leader (aiohttp then answers 307/503)."""
        if not self.leadership.acting():
            return None
        allowed, principal = self.auth.scheduler_principal(headers.get("authorization"))
        if not allowed:
            return None  # the full path answers 401 with its challenge
        error = api_request_error(
            "POST", headers.get("content-type"), headers.get("accept", ""), len(body)
        )
        if error is not None:
            return fast_http.text(error[0], error[1])
        call = parse_scheduler_call(body)
        if isinstance(call, tuple):
            return fast_http.text(*call)
        if call.type == "SUBSCRIBE":
            return fast_http.text(400, _SUBSCRIBE_WITH_STREAM_ID)
        return self._run_scheduler_call(call, headers["mesos-stream-id"], principal)

    def _run_scheduler_call(
        self, call: SchedulerCall, stream_id: str | None, principal: str | None = None
    ) -> fast_http.Reply:
        """Runs a non-SUBSCRIBE call through the core and carries out its effects."""
        invalid = self._principal_error(call, principal)
        if invalid is not None:
            return fast_http.text(400, invalid)
        result, effects = self.machine.scheduler_call(call, stream_id, self.clock.now())
        self.apply(effects)
        if result.body is not None:
            return fast_http.Reply(result.status, "application/json", encode_json(result.body))
        return fast_http.text(result.status, result.message)

    @property
    def acls(self) -> Acls:
        """``--acls`` (`butte.master.acls`), also checked by the core at launch."""
        return self.config.master.acls

    def _registration_refusal(self, call: SchedulerCall) -> str | None:
        """Why a SUBSCRIBE (its FrameworkInfo already given the authenticated principal) may
        not register in its roles under the ``register_frameworks`` ACL, or None; the text
        of Mesos' ``checkSubscribeAuthorization``."""
        assert call.subscribe is not None
        info = call.subscribe.framework_info
        if self.acls.unrestricted("register_frameworks"):
            return None
        roles = info.role_list()
        if all(self.acls.allowed("register_frameworks", info.principal, r) for r in roles):
            return None
        fid = info.id.value if info.id is not None else ""
        listed = ", ".join(sorted(roles))
        return f"Not authorized to register framework {fid} with roles {{ {listed} }}"

    async def _refuse_subscription(
        self, request: web.Request, call: SchedulerCall, message: str
    ) -> web.StreamResponse:
        """As Mesos refuses a subscription once the stream is open: 200, one ERROR event,
        and the stream closed."""
        assert call.subscribe is not None
        log.info(
            "Refusing subscription of framework '%s': %s",
            call.subscribe.framework_info.name,
            message,
        )
        stream = RecordStream(line_flush=HEARTBEAT)
        stream.put(record(views.error_event(message)))
        stream.close()
        return await stream.serve(request, {"Mesos-Stream-Id": str(uuid.uuid4())})

    def _principal_error(self, call: SchedulerCall, principal: str | None) -> str | None:
        """Why the authenticated ``principal`` may not make ``call`` for its framework
        (`framework_principal_error`: Mesos answers 400)."""
        if principal is None:
            return None
        fid = call.framework_id
        if fid is None and call.subscribe is not None:
            fid = call.subscribe.framework_info.id
        fw = self.machine.frameworks.get(fid.value) if fid is not None else None
        return framework_principal_error(call, principal, fw.info.principal if fw else False)

    async def _subscribe(
        self, request: web.Request, call: SchedulerCall, now: float
    ) -> web.StreamResponse:
        stream_id = str(uuid.uuid4())
        stream = RecordStream(
            line_flush=HEARTBEAT,
            max_backlog_bytes=self.config.max_stream_backlog,
            on_overflow=self._slow_scheduler_stream,
        )
        # Registered before the core runs, so the first events queue up for this stream.
        self._streams[stream_id] = stream
        result, effects = self.machine.subscribe(call, stream_id, now)
        if result.status != 200:
            self._streams.pop(stream_id, None)
            self.apply(effects)
            return text_reply(result.status, result.message)
        if result.stream_error is not None:
            self._streams.pop(stream_id, None)
            stream.put(record(views.error_event(result.stream_error)))
            stream.close()
        self.apply(effects)
        try:
            return await stream.serve(request, {"Mesos-Stream-Id": stream_id})
        finally:
            if self._streams.get(stream_id) is stream:
                del self._streams[stream_id]
                self.apply(self.machine.framework_disconnected(stream_id, self.clock.now()))

    # -- agents ---------------------------------------------------------------------------

    async def agent_socket(self, request: web.Request) -> web.StreamResponse:
        """The agents' WebSocket through aiohttp (`AgentUpgrade` serves the usual shape of
        the upgrade itself; this takes the rest, e.g. under the ``/master`` prefix)."""
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY * 4, autoping=True)
        await ws.prepare(request)
        connection_id = f"agent-{next(self._agent_connections)}"
        peer = request.transport.get_extra_info("peername") if request.transport else None
        link = _AgentLink(ws, peer[0] if peer else "", request.get("principal"))
        self._agents[connection_id] = link
        writer = asyncio.get_running_loop().create_task(self._agent_writer(link))
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                self._agent_message(connection_id, link.peer_ip, msg.data, link.principal)
        except asyncio.CancelledError:
            pass
        finally:
            link.close()
            writer.cancel()
            self._agent_gone(connection_id)
        return ws

    # AgentSocketOwner (the lean path)

    def accepts_agents(self) -> bool:
        """Agents may connect while this master leads, and while it recovers the registry
        (see `_agent_during_recovery`). With --authenticate_agents the full path takes them,
        where their credentials are checked, and so does it when the ``register_agents`` ACL
        may refuse some agent (its refusal then tells the agent why, `_refuse_agent`)."""
        if self.config.auth.agents or not self.acls.unrestricted("register_agents"):
            return False
        return self.leadership.role is Role.RECOVERING or self.leadership.acting()

    def agent_opened(self, link: AgentWebSocket) -> None:
        link.connection_id = f"agent-{next(self._agent_connections)}"
        self._agents[link.connection_id] = link

    def agent_data(self, link: AgentWebSocket, data: bytes) -> None:
        self._agent_message(link.connection_id, link.peer_ip, data)

    def agent_closed(self, link: AgentWebSocket) -> None:
        self._agent_gone(link.connection_id)

    def _agent_message(
        self, connection_id: str, peer_ip: str, data: bytes | str, principal: str | None = None
    ) -> None:
        """One message from an agent: to the core, or held while the registry is being
        recovered (and behind what is held of its connection). A (re-)registration the ACLs
        refuse goes no further (`_refuse_agent`)."""
        try:
            messages = internal.decode_agent_messages(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("Bad message from agent connection %s: %s", connection_id, e)
            return
        for message in messages:
            if isinstance(message, internal.RegisterAgent):
                info = message.agent_info
                refusal = agent_registration_refusal(
                    self.acls, principal, info
                ) or domains.registration_refusal(
                    self.config.master.domain, self.config.master.require_agent_domain, info.domain
                )
                if refusal is not None:
                    self._refuse_agent(connection_id, peer_ip, info, refusal)
                    return
            held = self._held_agent_messages.get(connection_id)
            if held is not None:
                held.append(message)
            elif self.leadership.role is Role.RECOVERING:
                self._held_agent_messages[connection_id] = [message]
            else:
                self.apply(
                    self.machine.agent_message(connection_id, message, peer_ip, self.clock.now())
                )

    def _refuse_agent(
        self, connection_id: str, peer_ip: str, info: internal.AgentInfo, refusal: str
    ) -> None:
        """As Mesos does with an agent the authorizer refuses: it is not registered (nor
        shut down: its tasks keep running) and retries with its backoff. Its connection is
        closed with a policy-violation close frame whose reason the agent logs."""
        agent = f"agent {info.id.value} " if info.id is not None else "agent "
        log.warning(
            "Refusing %s of %sat %s (%s): %s",
            "re-registration" if info.id is not None else "registration",
            agent,
            peer_ip,
            info.hostname,
            refusal,
        )
        link = self._agents.get(connection_id)
        if isinstance(link, _AgentLink):
            link.refusal = refusal
            link.close()
        elif link is not None:  # the lean path (register_agents unrestricted): a static
            link.close(CLOSE_POLICY)  # reservation refused; its close frame has no reason

    def _agent_gone(self, connection_id: str) -> None:
        if self._agents.pop(connection_id, None) is None:
            return
        if self._held_agent_messages.pop(connection_id, None) is None:
            # (A connection whose messages were all held never reached the core.)
            self.apply(self.machine.agent_disconnected(connection_id, self.clock.now()))

    async def _agent_writer(self, link: _AgentLink) -> None:
        try:
            while True:
                data = await link.queue.get()
                if data is None:
                    if link.refusal is not None:
                        # A close frame's reason fits in 123 bytes.
                        reason = link.refusal.encode()[:123].decode(errors="ignore")
                        await link.ws.close(code=CLOSE_POLICY, message=reason.encode())
                    else:
                        await link.ws.close()
                    return
                await link.ws.send_str(data.decode())
        except (ConnectionError, RuntimeError):
            with contextlib.suppress(Exception):
                await link.ws.close()


def _with_principal(call: SchedulerCall, principal: str | None) -> SchedulerCall:
    """A SUBSCRIBE whose FrameworkInfo names no principal takes the authenticated one."""
    sub = call.subscribe
    if principal is None or sub is None or sub.framework_info.principal is not None:
        return call
    info = msgspec.structs.replace(sub.framework_info, principal=principal)
    return msgspec.structs.replace(
        call, subscribe=msgspec.structs.replace(sub, framework_info=info)
    )


def _needs_leader(request: web.Request) -> bool:
    """The v1 APIs (scheduler, operator, the agents' socket) and anything that changes
    state need the leading master; reads such as /state are served by every master."""
    path = request.path
    if path.startswith("/master/"):
        path = path[len("/master") :]
    if path.startswith("/api/v1"):
        return True
    return request.method not in ("GET", "HEAD", "OPTIONS")


_SUBSCRIBE_WITH_STREAM_ID = "Subscribe calls should not include the 'Mesos-Stream-Id' header"


def parse_scheduler_call(body: bytes) -> SchedulerCall | tuple[int, str]:
    """The call in a request body, or the status and text that refuse it (Mesos' words)."""
    try:
        call = decode(body, SchedulerCall)
    except DecodeError as e:
        return 400, call_decode_problem(e, "scheduler")
    if call.type == "UNKNOWN":
        return 501, "Call type UNKNOWN is not implemented"  # Mesos: NotImplemented
    problem = _validate_call_shape(call)
    return call if problem is None else (400, problem)


def _validate_call_shape(call: SchedulerCall) -> str | None:
    """Checks the parts of a call that need no state: known type, payload present."""
    if call.type not in SCHEDULER_CALL_TYPES:
        # Mesos drops an enum value it does not know: the call has no type then.
        return "Failed to validate scheduler::Call: Expecting 'type' to be present"
    key = SCHEDULER_REQUIRED_PAYLOAD.get(call.type)
    if key is not None and getattr(call, key) is None:
        return f"Failed to validate scheduler::Call: Expecting '{key}' to be present"
    if call.accept is not None:
        for container in launched_containers(call.accept.operations):
            problem = required_fields_problem(container)
            if problem is not None:
                return f"Failed to validate scheduler::Call: {problem}"
        problem = unreported_refusal(call.accept.operations)
        if problem is not None:
            return f"Failed to validate scheduler::Call: {problem}"
    return None
