"""Many simulated agents in one asyncio process, speaking the real agent <-> master protocol.

`SimulatedCluster` runs N agents against a master address. Each agent keeps one WebSocket to
the master (``butte.core.internal``) exactly like ``butte agent``: it registers (or
re-registers with its id, tasks and frameworks after a reconnect), answers PING with PONG,
accepts RUN_TASK / RUN_TASK_GROUP / KILL_TASK / SHUTDOWN_FRAMEWORK / SHUTDOWN_EXECUTOR, and
reports TASK_STARTING, TASK_RUNNING and, after the task's duration, TASK_FINISHED, each with a
uuid, one update in flight per task, resent with backoff until acknowledged. No process is
started: a task is a timer. Reconnects use Mesos' registration backoff (random delay in
``[0, b]``, b doubling from ``registration_backoff_factor`` up to a minute).

Used by ``butte sim`` and by the benchmarks::

    cluster = SimulatedCluster("127.0.0.1:5050", 10_000, SimOptions(task_duration=...))
    await cluster.start()
    await cluster.wait_registered(timeout=60)
    print(cluster.statistics())
    await cluster.stop()

Costs are kept per event, never per agent: a lean WebSocket client (`butte.sim.websocket`:
frames parsed in the protocol callback, sends written straight to the socket), connection
attempts bounded by a semaphore, one sweeper coroutine for retries and master silence
instead of a timer per agent, and the file descriptor limit raised to the hard limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from yarl import URL

import butte
from butte.core import internal, task_states
from butte.core.conn_limit import raise_fd_limit
from butte.core.messages import ID, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus
from butte.core.resources import Attribute, Resources, parse_attributes, parse_resources
from butte.sim.durations import TaskDuration
from butte.sim.tasks import SimTask
from butte.sim.websocket import WebSocketClient, WebSocketError

log = logging.getLogger("butte.sim")

DEFAULT_RESOURCES = "cpus:4;mem:8192;disk:65536;ports:[31000-32000]"
MAX_BACKOFF = 60.0
# The master pings every 15 s; five missed pings and the agent reconnects (as `butte agent`).
SILENCE_TIMEOUT = 75.0
STABLE_CONNECTION = 10.0
SWEEP_INTERVAL = 0.25


@dataclass(slots=True)
class SimOptions:
    """How the simulated agents look and behave (``butte sim`` flags)."""

    resources: Resources = field(default_factory=lambda: parse_resources(DEFAULT_RESOURCES))
    attributes: tuple[Attribute, ...] = ()
    task_duration: TaskDuration = field(default_factory=lambda: TaskDuration.parse("10secs"))
    hostname_prefix: str = "sim"
    registration_backoff_factor: float = 1.0
    status_update_retry_interval_min: float = 10.0
    status_update_retry_interval_max: float = 600.0
    # Connection attempts in progress at once (the rest wait their turn).
    connect_concurrency: int = 256
    # Each agent starts as if it had been running this many tasks of `preload_framework_id`
    # before a master failover: it registers with an id and reports them.
    preload_tasks: int = 0
    preload_framework_id: str = "sim-preload-framework"
    preload_task_resources: str = "cpus:0.1;mem:32"
    seed: int | None = None

    @classmethod
    def from_text(
        cls, resources: str = DEFAULT_RESOURCES, attributes: str = "", **kwargs: Any
    ) -> SimOptions:
        """Options from flag strings; raises ValueError (ResourceError) on bad input."""
        return cls(
            resources=parse_resources(resources),
            attributes=parse_attributes(attributes),
            **kwargs,
        )


class SimulatedAgent:
    """One simulated agent: identity, connection and tasks."""

    __slots__ = (
        "index",
        "agent_id",
        "hostname",
        "ws",
        "registered",
        "shutdown",
        "frameworks",
        "executors",
        "tasks",
        "last_heard",
        "connected_at",
    )

    def __init__(self, index: int, hostname: str) -> None:
        self.index = index
        self.agent_id: str | None = None
        self.hostname = hostname
        self.ws: WebSocketClient | None = None
        self.registered = False
        # Told SHUTDOWN_AGENT (marked gone or refused): it stops for good.
        self.shutdown = False
        self.frameworks: dict[str, FrameworkInfo] = {}
        self.executors: dict[tuple[str, str], ExecutorInfo] = {}
        self.tasks: dict[tuple[str, str], SimTask] = {}
        self.last_heard = 0.0
        self.connected_at = 0.0


CONNECT_TIMEOUT = 10.0


def master_ws_urls(master: str) -> list[str]:
    """WebSocket URLs of ``--master`` (``host:port``, ``http://host:port``, comma-separated
    for several masters tried in turn). zk:// is handled by the caller."""
    urls = []
    for part in filter(None, (p.strip() for p in master.split(","))):
        url = URL(part if "//" in part else f"http://{part}")
        if not url.host:
            raise ValueError(f"bad master address {part!r}: expected HOST:PORT")
        urls.append(f"ws://{url.host}:{url.explicit_port or 5050}{internal.AGENT_PATH}")
    if not urls:
        raise ValueError("no master address given")
    return urls


class _Connector:
    """Opens agent connections (``ws_connect(url)``, the call shape of aiohttp's session
    that code built on earlier versions of this module uses)."""

    async def ws_connect(self, url: str, **_: object) -> WebSocketClient:
        target = URL(url)
        return await WebSocketClient.connect(
            target.host or "127.0.0.1",
            target.port or 5050,
            target.path,
            lambda data: None,  # `_serve` binds the agent's handler before registering
            CONNECT_TIMEOUT,
        )


class SimulatedCluster:
    """N simulated agents against one master (see the module docstring)."""

    def __init__(self, master: str, agents: int, options: SimOptions | None = None) -> None:
        if agents < 0:
            raise ValueError("the number of agents must not be negative")
        self.options = options or SimOptions()
        self._urls = master_ws_urls(master)
        self._url_index = 0
        self._rng = random.Random(self.options.seed)
        self.run_id = uuid.uuid4().hex[:8]
        prefix = self.options.hostname_prefix
        self.agents = [SimulatedAgent(i, f"{prefix}-{i}") for i in range(agents)]
        self._info_json = self.options.resources.to_json("endpoint")
        self._attributes_json = [a.to_json() for a in self.options.attributes]
        self._runners: list[asyncio.Task[None]] = []
        # Set (and replaced) by `retarget`: wakes agents waiting out a reconnect backoff.
        self._leader_changed = asyncio.Event()
        self._session: _Connector | None = None
        self._connect_slots: asyncio.Semaphore | None = None
        self._stopping = False
        self._changed = asyncio.Event()
        # Agents registered right now, kept as they change: `wait_registered` scans the
        # agents only once this many could satisfy it (a scan per registration would make a
        # mass re-registration quadratic).
        self._registered_now = 0
        # Tasks whose head update is out and unacknowledged: the sweeper's retry list.
        self._inflight: dict[SimTask, SimulatedAgent] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "registrations",
                "reregistrations",
                "connection_failures",
                "disconnections",
                "tasks_launched",
                "tasks_finished",
                "tasks_killed",
                "tasks_lost",
                "updates_sent",
                "updates_retried",
                "updates_acknowledged",
                "messages_received",
            ),
            0,
        )
        self._handlers: dict[type, Callable[[SimulatedAgent, Any], None]] = {
            internal.AgentRegistered: self._on_registered,
            internal.AgentReregistered: self._on_registered,
            internal.RunTask: self._on_run_task,
            internal.RunTaskGroup: self._on_run_task_group,
            internal.KillTask: self._on_kill_task,
            internal.StatusUpdateAck: self._on_ack,
            internal.Ping: self._on_ping,
            internal.ShutdownFramework: self._on_shutdown_framework,
            internal.ShutdownExecutor: self._on_shutdown_executor,
            internal.UpdateFramework: self._on_update_framework,
            internal.ShutdownAgent: self._on_shutdown_agent,
            internal.FrameworkToExecutor: lambda agent, msg: None,
        }
        if self.options.preload_tasks:
            self._preload()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts connecting every agent (returns at once; see `wait_registered`)."""
        raise_fd_limit()
        self._session = _Connector()
        self._leader_changed = asyncio.Event()
        self._connect_slots = asyncio.Semaphore(max(1, self.options.connect_concurrency))
        loop = asyncio.get_running_loop()
        self._runners = [loop.create_task(self._run_agent(a)) for a in self.agents]
        self._runners.append(loop.create_task(self._sweep()))

    async def stop(self) -> None:
        """Closes every connection (the master sees the agents disconnect) and stops."""
        self._stopping = True
        for agent in self.agents:
            for task in agent.tasks.values():
                if task.timer is not None:
                    task.timer.cancel()
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        for agent in self.agents:
            if agent.ws is not None:
                agent.ws.close()
        await asyncio.sleep(0)  # let the close frames go out

    async def wait_registered(
        self, count: int | None = None, timeout: float = 60.0, since: float = 0.0
    ) -> float:
        """Waits until ``count`` (default all) agents are registered with the master they are
        connected to (and, if ``since`` is given, connected after that `time.monotonic`);
        returns the seconds waited. Raises TimeoutError."""
        want = len(self.agents) if count is None else count
        started = time.monotonic()
        deadline = started + timeout
        while self._registered_now < want or self.registered_count(since) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.registered_count(since)}/{want} agents registered after {timeout}s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.1)
        return time.monotonic() - started

    @property
    def masters(self) -> list[str]:
        """``host:port`` of the master(s) the agents connect to."""
        return [url.split("/api/")[0].removeprefix("ws://") for url in self._urls]

    def registered_count(self, since: float = 0.0) -> int:
        return sum(1 for a in self.agents if a.registered and a.connected_at >= since)

    async def retarget(self, master: str) -> None:
        """Points every agent at another master (a failover) and drops current connections;
        they reconnect at once (a backoff that grew while the old leader was gone is cut
        short, as ``butte agent`` does on a ZooKeeper leader change) with a fresh backoff,
        and re-register with their tasks."""
        self._urls = master_ws_urls(master)
        self._url_index = 0
        for agent in self.agents:
            if agent.ws is not None:
                agent.ws.close()
        changed, self._leader_changed = self._leader_changed, asyncio.Event()
        changed.set()
        await asyncio.sleep(0)

    def statistics(self) -> dict[str, float]:
        """Counters and gauges of the simulated agents (one flat dict)."""
        running = staging = pending = 0
        for agent in self.agents:
            for task in agent.tasks.values():
                if task.state == task_states.RUNNING:
                    running += 1
                elif not task.terminal:
                    staging += 1
                if task.pending is not None:
                    pending += 1
        return {
            "agents": float(len(self.agents)),
            "agents_connected": float(sum(1 for a in self.agents if a.ws is not None)),
            "agents_registered": float(self.registered_count()),
            "tasks_running": float(running),
            "tasks_starting": float(staging),
            "tasks_awaiting_ack": float(pending),
            **{k: float(v) for k, v in self.counters.items()},
        }

    # -- connections --------------------------------------------------------------------------

    async def _run_agent(self, agent: SimulatedAgent) -> None:
        factor = self.options.registration_backoff_factor
        backoff = factor
        loop = asyncio.get_running_loop()
        assert self._connect_slots is not None and self._session is not None
        while not self._stopping and not agent.shutdown:
            url = self._urls[self._url_index % len(self._urls)]
            changed = self._leader_changed
            ws = None
            async with self._connect_slots:
                try:
                    ws = await self._session.ws_connect(url)
                except (TimeoutError, WebSocketError, OSError) as e:
                    log.debug("agent %d cannot reach %s: %s", agent.index, url, e)
                    self.counters["connection_failures"] += 1
                    if len(self._urls) > 1:
                        self._url_index += 1
            started = loop.time()
            if ws is not None:
                await self._serve(agent, ws)
            if self._stopping or agent.shutdown:
                break
            if loop.time() - started >= STABLE_CONNECTION:
                backoff = factor
            delay = self._rng.uniform(0, backoff)
            backoff = min(max(backoff * 2, factor), MAX_BACKOFF)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), delay)
            if changed.is_set():
                backoff = factor

    async def _serve(self, agent: SimulatedAgent, ws: WebSocketClient) -> None:
        ws.on_message = functools.partial(self._deliver, agent)
        agent.ws = ws
        self._set_registered(agent, False)
        agent.connected_at = time.monotonic()
        agent.last_heard = agent.connected_at
        self._send(agent, self._register_message(agent))
        try:
            await ws.closed
        finally:
            ws.close()
            agent.ws = None
            self._set_registered(agent, False)
            self.counters["disconnections"] += 1
            self._notify()

    def _deliver(self, agent: SimulatedAgent, data: str | bytes) -> None:
        agent.last_heard = time.monotonic()
        self.counters["messages_received"] += 1
        try:
            message = internal.decode_master_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("agent %d: ignoring bad message from master: %s", agent.index, e)
            return
        self._handlers[type(message)](agent, message)

    def _send(self, agent: SimulatedAgent, message: msgspec.Struct) -> None:
        """Writes one message on the agent's socket (dropped while disconnected: what
        matters is resent after re-registration)."""
        if agent.ws is not None:
            agent.ws.send_text(internal.encode(message))

    def _register_message(self, agent: SimulatedAgent) -> internal.RegisterAgent:
        info = internal.AgentInfo(
            hostname=agent.hostname,
            port=5051,
            resources=self._info_json,
            attributes=self._attributes_json,
            id=ID(agent.agent_id) if agent.agent_id is not None else None,
        )
        if agent.agent_id is None:
            return internal.RegisterAgent(agent_info=info, version=butte.__version__)
        return internal.RegisterAgent(
            agent_info=info,
            version=butte.__version__,
            frameworks=list(agent.frameworks.values()),
            executors=list(agent.executors.values()),
            tasks=[t.report(agent.agent_id) for t in agent.tasks.values()],
        )

    def _notify(self) -> None:
        self._changed.set()

    def _set_registered(self, agent: SimulatedAgent, registered: bool) -> None:
        if agent.registered != registered:
            agent.registered = registered
            self._registered_now += 1 if registered else -1

    async def _sweep(self) -> None:
        """Every `SWEEP_INTERVAL`: resends updates whose retry is due; every few seconds,
        drops connections to a master silent for `SILENCE_TIMEOUT` (they reconnect)."""
        last_silence_check = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for task, agent in list(self._inflight.items()):
                if agent.registered and task.sent and now >= task.next_retry:
                    self.counters["updates_retried"] += 1
                    self._send_head(agent, task, now)
            if now - last_silence_check < 5.0:
                continue
            last_silence_check = now
            for agent in self.agents:
                if agent.ws is not None and now - agent.last_heard > SILENCE_TIMEOUT:
                    log.warning("agent %d: master silent; reconnecting", agent.index)
                    self._close_soon(agent)

    def _close_soon(self, agent: SimulatedAgent) -> None:
        if agent.ws is not None:
            agent.ws.close()

    # -- master messages ----------------------------------------------------------------------

    def _on_registered(
        self, agent: SimulatedAgent, msg: internal.AgentRegistered | internal.AgentReregistered
    ) -> None:
        first = agent.agent_id is None
        agent.agent_id = msg.agent_id.value
        self._set_registered(agent, True)
        self.counters["registrations" if first else "reregistrations"] += 1
        now = time.monotonic()
        for task in agent.tasks.values():
            if task.pending is not None:
                task.rewind()
                self._send_head(agent, task, now)
        self._notify()

    def _on_ping(self, agent: SimulatedAgent, msg: internal.Ping) -> None:
        self._send(agent, internal.Pong())

    def _on_run_task(self, agent: SimulatedAgent, msg: internal.RunTask) -> None:
        info = msg.task
        executor = info.executor
        self._launch(agent, msg.framework, [info], executor)

    def _on_run_task_group(self, agent: SimulatedAgent, msg: internal.RunTaskGroup) -> None:
        self._launch(agent, msg.framework, list(msg.task_group.tasks), msg.executor)

    def _launch(
        self,
        agent: SimulatedAgent,
        framework: FrameworkInfo,
        infos: list[TaskInfo],
        executor: ExecutorInfo | None,
    ) -> None:
        fid = framework.id.value if framework.id is not None else ""
        agent.frameworks[fid] = framework
        if executor is not None:
            agent.executors[(fid, executor.executor_id.value)] = executor
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for info in infos:
            key = (fid, info.task_id.value)
            if key in agent.tasks:
                continue  # a duplicate RUN_TASK; the task already runs
            eid = executor.executor_id.value if executor is not None else None
            task = SimTask(fid, info.task_id.value, info.name, info.resources, eid, info)
            agent.tasks[key] = task
            self.counters["tasks_launched"] += 1
            self._update(agent, task, task_states.STARTING, now)
            self._update(agent, task, task_states.RUNNING, now)
            command = info.command.value if info.command is not None else None
            seconds = self.options.task_duration.sample(self._rng, command)
            if seconds is not None:
                task.timer = loop.call_later(seconds, self._finish, agent, task)

    def _finish(self, agent: SimulatedAgent, task: SimTask) -> None:
        task.timer = None
        if not task.terminal and agent.tasks.get(task.key) is task:
            self.counters["tasks_finished"] += 1
            message = "Command exited with status 0"
            self._update(agent, task, task_states.FINISHED, time.monotonic(), message)

    def _on_kill_task(self, agent: SimulatedAgent, msg: internal.KillTask) -> None:
        key = (msg.framework_id.value, msg.task_id.value)
        task = agent.tasks.get(key)
        now = time.monotonic()
        if task is None:
            # Unknown here (the launch never arrived): say so, as Mesos' agent does.
            task = SimTask(key[0], key[1], key[1], [], None)
            agent.tasks[key] = task
            self.counters["tasks_lost"] += 1
            self._update(agent, task, task_states.LOST, now, "Task unknown to the agent")
            return
        self._kill(agent, task, now)

    def _kill(self, agent: SimulatedAgent, task: SimTask, now: float) -> None:
        if task.terminal:
            return
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        self.counters["tasks_killed"] += 1
        self._update(agent, task, task_states.KILLED, now, "Command terminated with signal")

    def _on_shutdown_framework(
        self, agent: SimulatedAgent, msg: internal.ShutdownFramework
    ) -> None:
        fid = msg.framework_id.value
        now = time.monotonic()
        for task in [t for t in agent.tasks.values() if t.framework_id == fid]:
            self._kill(agent, task, now)
        for key in [k for k in agent.executors if k[0] == fid]:
            del agent.executors[key]

    def _on_shutdown_executor(self, agent: SimulatedAgent, msg: internal.ShutdownExecutor) -> None:
        key = (msg.framework_id.value, msg.executor_id.value)
        now = time.monotonic()
        for task in list(agent.tasks.values()):
            if (task.framework_id, task.executor_id) == key:
                self._kill(agent, task, now)
        agent.executors.pop(key, None)

    def _on_update_framework(self, agent: SimulatedAgent, msg: internal.UpdateFramework) -> None:
        if msg.framework.id is not None:
            agent.frameworks[msg.framework.id.value] = msg.framework

    def _on_shutdown_agent(self, agent: SimulatedAgent, msg: internal.ShutdownAgent) -> None:
        log.warning("agent %d told to shut down: %s", agent.index, msg.message)
        agent.shutdown = True
        for task in agent.tasks.values():
            if task.timer is not None:
                task.timer.cancel()
        for task in agent.tasks.values():
            self._inflight.pop(task, None)
        agent.tasks.clear()
        self._close_soon(agent)

    def _on_ack(self, agent: SimulatedAgent, msg: internal.StatusUpdateAck) -> None:
        task = agent.tasks.get((msg.framework_id.value, msg.task_id.value))
        if task is None or not task.ack(msg.uuid):
            return
        self._inflight.pop(task, None)
        self.counters["updates_acknowledged"] += 1
        if task.done:
            del agent.tasks[task.key]
            self._forget_framework_if_idle(agent, task.framework_id)
            return
        self._send_head(agent, task, time.monotonic())

    def _forget_framework_if_idle(self, agent: SimulatedAgent, fid: str) -> None:
        # Only when nothing of it is left (the common case is a busy agent, so this stays
        # cheap: it stops at the first task of the framework).
        if any(t.framework_id == fid for t in agent.tasks.values()):
            return
        if any(k[0] == fid for k in agent.executors):
            return
        agent.frameworks.pop(fid, None)

    # -- status updates -----------------------------------------------------------------------

    def _update(
        self, agent: SimulatedAgent, task: SimTask, state: str, now: float, message: str = ""
    ) -> None:
        status = TaskStatus(
            task_id=ID(task.task_id),
            state=state,
            message=message or None,
            source="SOURCE_EXECUTOR",
            agent_id=ID(agent.agent_id) if agent.agent_id else None,
            executor_id=ID(task.executor_id or task.task_id),
            timestamp=time.time(),
            uuid=base64.b64encode(self._rng.randbytes(16)).decode("ascii"),
        )
        in_flight = task.pending is not None
        task.add(status)
        if not in_flight:
            self._send_head(agent, task, now)

    def _send_head(self, agent: SimulatedAgent, task: SimTask, now: float) -> None:
        if not agent.registered:
            return  # sent after the next (re-)registration
        opts = self.options
        status = task.due(
            now, opts.status_update_retry_interval_min, opts.status_update_retry_interval_max
        )
        if status is not None:
            self._inflight[task] = agent
            self.counters["updates_sent"] += 1
            self._send(
                agent, internal.StatusUpdate(framework_id=ID(task.framework_id), status=status)
            )

    # -- preloaded tasks ----------------------------------------------------------------------

    def _preload(self) -> None:
        """Gives every agent an id and running tasks, as if a master had failed over."""
        opts = self.options
        fid = opts.preload_framework_id
        framework = FrameworkInfo(
            user="sim",
            name="sim-preload",
            id=ID(fid),
            checkpoint=True,
            failover_timeout=7 * 24 * 3600.0,
        )
        resources = parse_resources(opts.preload_task_resources).to_json("endpoint")
        master_like = f"sim{self.run_id}"
        now = time.time()
        for agent in self.agents:
            agent.agent_id = f"{master_like}-S{agent.index}"
            agent.frameworks[fid] = framework
            for n in range(opts.preload_tasks):
                tid = f"preload-{agent.index}-{n}"
                task = SimTask(fid, tid, tid, resources, None)
                task.state = task_states.RUNNING
                task.statuses.append(
                    TaskStatus(
                        task_id=ID(tid),
                        state=task_states.RUNNING,
                        source="SOURCE_EXECUTOR",
                        agent_id=ID(agent.agent_id),
                        timestamp=now,
                    )
                )
                agent.tasks[task.key] = task
