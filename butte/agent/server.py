"""The agent's asyncio shell around `AgentMachine`.

It owns the I/O: the HTTP server (`butte.agent.http`), the WebSocket to the master
(`butte.agent.master_link`), the containerizer and the clock. Every event is handed to the core
with ``now``; the effects it returns are carried out in order by `AgentServer.apply` (a
trampoline, so effects caused while applying effects — a launch failing at once — queue
behind the current ones instead of nesting). One timer is kept armed at the core's
`next_deadline`.

Starting: the HTTP server is bound first (executors of a previous run may already be
retrying their SUBSCRIBE: they get 503 until recovery is over), then the checkpoint is read
(`butte.agent.checkpoint`) and the core rebuilt from it (`AgentMachine.recover`): live executor
processes are adopted by the containerizer, every other process found in a sandbox of this
work dir is killed as an orphan. Only then does the master connection open. A checkpoint from
another boot or no ``meta/slaves/latest`` start a new agent (new id); ``--recover=cleanup``
kills what the previous run left and exits, as Mesos' agent does.

Stopping (SIGUSR1, Mesos' signal for it, or the master's order): the core sends
UNREGISTER_AGENT and marks every container for destruction; the shell flushes the master
socket, SIGTERMs every container's processes, SIGKILLs what is left after the shutdown grace
period, forgets the agent id (the next start registers anew, as after Mesos' graceful
shutdown) and closes the HTTP server. SIGTERM and SIGINT end the process as they end Mesos'
agent (an upgrade, a restart by the init system): the checkpoints are made durable and
everything is left running for the next start to recover, as after a crash or SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

import butte
from butte.agent import checkpoint, gc, operator_api, paths, volumes
from butte.agent.compatibility import agent_info_change
from butte.agent.containerizer import docker as docker_containerizer
from butte.agent.containerizer import isolators, logrotate
from butte.agent.containerizer.image_runtime import ImageOptions, ImageRuntime
from butte.agent.containerizer.isolation import Isolation
from butte.agent.containerizer.isolators import DEFAULT_ISOLATION, IsolationOptions, Limitation
from butte.agent.containerizer.launcher import LauncherClient, LauncherRun, LauncherUnavailable
from butte.agent.containerizer.logrotate import RotationPolicy
from butte.agent.containerizer.posix import (
    PosixContainerizer,
    find_sandbox_leaders,
    is_session_leader,
    signal_sessions,
)
from butte.agent.effects import (
    CheckpointAgent,
    CloseExecutorStream,
    DestroyContainer,
    Effect,
    ExecutorRemoved,
    LaunchContainer,
    SendToExecutor,
    SendToMaster,
    StopAgent,
    UpdateContainer,
)
from butte.agent.executor_stream import ExecutorStream
from butte.agent.group_commit import GroupCommit
from butte.agent.http import AgentHttp, uptime_since, version_info
from butte.agent.http_auth import AgentAuth, basic_middleware, sandbox_middleware
from butte.agent.launch_events import executor_mounts, limits_of, scalar_totals
from butte.agent.launched import LaunchedExecutor, direct_task
from butte.agent.launching import (
    logger_environment,
    member_logger_environments,
    shutdown_grace_period,
)
from butte.agent.machine import AgentConfig, AgentMachine, Reply
from butte.agent.master_link import MasterLink
from butte.agent.nested import NestedContainers, recovered_standalone_launches
from butte.agent.records import COMMAND, CUSTOM, DEFAULT, TERMINATED, Executor
from butte.agent.state_json import agent_state
from butte.coord.url import is_zk_url, parse_zk_url
from butte.core import docker_info, internal, resource_ops
from butte.core import task_states as ts
from butte.core.auth import basic_header
from butte.core.clock import Clock, SystemClock
from butte.core.conn_limit import (
    DEFAULT_MAX_CONNECTIONS,
    HEAD_TIMEOUT,
    ConnectionLimit,
    quiet_accept_errors,
    raise_fd_limit,
)
from butte.core.messages import ExecutorCall, to_builtins
from butte.core.resources import Attribute, Resources, parse_resources
from butte.core.tls_listener import TlsListen, plain_paths_only
from butte.master.http import jsonp_middleware

if TYPE_CHECKING:
    from butte.coord.detector import LeaderDetector

log = logging.getLogger("butte.agent")

MiB = 1024 * 1024
# How often the work dir's free space is measured.
DISK_CHECK_INTERVAL = 2.0
# A log rotator that cannot be started is logged about at most this often.
ROTATE_WARNING_INTERVAL = 60.0


def _fast_python(module: str) -> tuple[str, ...]:
    """argv running ``module.main()`` with this interpreter and ``-I -S`` (no site
    initialisation, which costs more than the executor itself), importing butte from where
    this process found it. Equivalent to ``python -m <module>``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(butte.__file__)))
    code = f"import sys;sys.path.insert(0,{root!r});from {module} import main;sys.exit(main())"
    return (sys.executable, "-I", "-S", "-c", code)


def _runs_docker(ex: Executor) -> bool:
    """Whether an executor is a Docker executor (its task is of type DOCKER)."""
    return ex.kind == COMMAND and any(
        docker_info.is_docker(t.info.container) for t in ex.tasks.values()
    )


def command_executor_argv() -> tuple[str, ...]:
    """How the agent starts its built-in executor as a fresh process."""
    return _fast_python("butte.agent.executor.command")


def zygote_argv() -> tuple[str, ...]:
    """How the agent starts the executor zygote (fork server)."""
    return _fast_python("butte.agent.executor.zygote")


def rotator_argv() -> tuple[str, ...]:
    """How the agent starts the log rotator (its work dir and recovery timeout follow)."""
    return _fast_python("butte.agent.executor.rotator")


def launcher_argv() -> tuple[str, ...]:
    """How the agent starts the command launcher (its socket path and recovery timeout
    follow)."""
    return _fast_python("butte.agent.executor.launcher")


class RecoveryRefused(Exception):
    """The checkpoint cannot be recovered with these flags (the checkpointed total was not
    made of ``--resources``, the AgentInfo changed, ...): the agent does not start."""


@dataclass(frozen=True, slots=True)
class StreamBound:
    """An effect on an executor's stream (`SendToExecutor`, `CloseExecutorStream`), tied to
    the stream that was open when the core emitted it. One held behind a checkpoint must not
    reach a stream the executor opened meanwhile (that stream starts with SUBSCRIBED); on
    the old one it would have been lost with its connection, as it is now."""

    effect: SendToExecutor | CloseExecutorStream
    stream: ExecutorStream | LaunchedExecutor | None


# The executor API (butte.agent.http), the one thing served over plain HTTP with TLS on.
EXECUTOR_PATHS = frozenset({"/api/v1/executor", "/slave(1)/api/v1/executor"})


@dataclass(frozen=True)
class AgentOptions:
    """Everything the agent process is configured with (from its flags)."""

    master: str  # host:port
    work_dir: str
    resources: Resources
    ip: str = "127.0.0.1"
    port: int = 5051
    hostname: str | None = None
    attributes: tuple[Attribute, ...] = ()
    domain: dict[str, Any] | None = None  # --domain (butte.core.domains)
    executor_registration_timeout: float = 60.0
    executor_shutdown_grace_period: float = 5.0
    status_update_retry_interval_min: float = 10.0
    status_update_retry_interval_max: float = 600.0
    registration_backoff_factor: float = 1.0
    # With --master zk://...: the detector's ZooKeeper session timeout.
    zk_session_timeout: float = 10.0
    # None: executors inherit the agent's environment (Mesos' default).
    executor_environment: Mapping[str, str] | None = None
    # Fork built-in executors from a pre-started zygote instead of starting interpreters.
    executor_zygote: bool = True
    # Run plain command tasks through the command launcher, without an executor process
    # each (docs/design.md "The command launcher").
    command_launcher: bool = True
    # reconnect: recover checkpointed executors; cleanup: kill them and exit.
    recover: str = "reconnect"
    strict: bool = False  # Mesos' --strict: a checkpoint problem stops the start
    # What may change across a recovering restart: equal or additive (compatibility.py).
    reconfiguration_policy: str = "equal"
    executor_reregistration_timeout: float = 2.0
    recovery_timeout: float = 900.0
    fetcher_cache_dir: str | None = None  # default: <work_dir>/fetcher-cache
    # --credential: (principal, secret) sent to a master that authenticates agents.
    credential: tuple[str, str] | None = None
    # --isolation and the isolators' flags (docs/isolation.md).
    isolation: str = DEFAULT_ISOLATION
    isolation_options: IsolationOptions = field(default_factory=IsolationOptions)
    switch_user: bool = False
    # --image_providers docker and its flags (docs/containers.md; None: no images).
    images: ImageOptions | None = None
    # --allowed_host_path_volumes: what HOST_PATH volumes of tasks without an image may be.
    allowed_host_paths: tuple[str, ...] = ()
    # --container_logger=logrotate (None: stdout/stderr are not rotated).
    log_rotation: RotationPolicy | None = None
    # Sandbox garbage collection (butte.agent.gc).
    gc_delay: float = 7 * 86400.0
    gc_disk_headroom: float = 0.1
    disk_watermark_interval: float = 60.0
    # --work_dir_min_free: launches are refused while the work dir has less free.
    work_dir_min_free: int = 64 * 1024 * 1024
    flags: dict[str, str] = field(default_factory=dict)
    # LIBPROCESS_SSL_*: the HTTP server speaks TLS (None: plain), and the client context
    # for the master (None: plain http://).
    tls: TlsListen | None = None
    master_tls: ssl.SSLContext | None = None
    # --authenticate_http_*, --http_credentials, --executor_secret_key, --acls.
    auth: AgentAuth = field(default_factory=AgentAuth)
    # --max_connections: open HTTP connections accepted at once (0: no limit of its own).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # --http_header_timeout: how long a connection's first request head may take.
    http_header_timeout: float = HEAD_TIMEOUT
    # --containerizers and the docker flags (docs/docker.md).
    docker: docker_containerizer.DockerOptions = field(
        default_factory=docker_containerizer.DockerOptions
    )


# A container's log rotation, and its task group members' by task id.
_Rotation = tuple[RotationPolicy, dict[str, RotationPolicy]]


def _rotation(policy: RotationPolicy, ex: Executor) -> _Rotation:
    """``policy`` as container ``ex``'s environment overrides it, and as each of its task
    group members' does (checked at launch; a container an older agent launched may still
    carry invalid settings: those keep the agent's)."""
    tasks = [t.info for t in (*ex.tasks.values(), *ex.completed_tasks)]

    def own(environment: dict[str, str], whose: str) -> RotationPolicy:
        try:
            return policy.for_environment(environment)
        except ValueError as e:
            log.warning("%s keeps the default log rotation: %s", whose, e)
            return policy

    container = own(
        logger_environment(None if ex.kind == COMMAND else ex.info, tasks),
        f"container {ex.container_id}",
    )
    if ex.kind != DEFAULT:
        return container, {}
    members = member_logger_environments(tasks)
    return container, {t: own(env, f"task {t}") for t, env in members.items()}


class AgentServer:
    """One running agent; see the module docstring."""

    def __init__(self, options: AgentOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.flags = dict(options.flags)
        self.clock = clock or SystemClock()
        self.start_time = time.time()
        self.machine: AgentMachine | None = None
        self.containerizer: PosixContainerizer | None = None
        # The Docker containerizer's side of DOCKER tasks (None: not offered).
        self.docker: docker_containerizer.DockerContainerizer | None = None
        self.docker_unavailable: str | None = None
        self.master_link: MasterLink | None = None
        # Follows the leading master when --master is zk://... (None: a fixed address).
        self.detector: LeaderDetector | None = None
        # Executors' SUBSCRIBE streams; an in-agent command executor is its own stream.
        self.streams: dict[str, ExecutorStream | LaunchedExecutor] = {}
        self.exit_code = 0
        self._runner: web.AppRunner | None = None
        # The HTTP listener (plain or TLS) and its --max_connections gate.
        self._tls_listener: asyncio.Server | None = None
        self.connection_limit = ConnectionLimit(0)
        self._link_task: asyncio.Task | None = None
        self._gc_task: asyncio.Task | None = None
        self._disk_task: asyncio.Task | None = None
        # The work dir's free bytes, as last measured (None: not yet).
        self.work_dir_free: int | None = None
        self._rotate_task: asyncio.Task | None = None
        # --container_logger=logrotate: the agent's link to its log rotator process.
        self._rotator: logrotate.RotatorClient | None = None
        self._stop = asyncio.Event()
        self._pending: deque[Effect] = deque()
        # container id -> (sandbox, volumes attached there), detached when it ends.
        self._attached: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {}
        self._applying = False
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._background: set[asyncio.Task] = set()
        self.checkpoints: checkpoint.CheckpointWriter | None = None
        # Writes checkpoints in batches off the loop and holds back what must follow them.
        self.commit: GroupCommit | None = None
        # What may go ahead of the held effects while a batch waits for disk space.
        self.overtaking = checkpoint.Overtaking()
        # True until the checkpoint has been recovered: executor calls get 503 meanwhile.
        self.recovering = True
        self.recovery_seconds: float | None = None  # start to recovered (slave/recovery_time_secs)
        self.leaving = False  # SIGTERM/SIGINT: exit, leaving the containers (`leave`)
        self.recovery_errors = 0  # what the checkpoint read could not (slave/recovery_errors)
        # The age past which a finished sandbox goes, as last worked out (butte.agent.gc).
        self.sandbox_max_age = options.gc_delay
        # The in-agent command executors of tasks the command launcher runs, by container.
        self.launched: dict[str, LaunchedExecutor] = {}
        # What the launcher reported at start-up, by container id.
        self._launcher_snapshot: dict[str, LauncherRun] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Binds the HTTP server, builds the core, starts talking to the master."""
        raise_fd_limit()
        quiet_accept_errors(asyncio.get_running_loop())
        if is_zk_url(self.options.master):
            # First, so an unreachable ensemble fails the start before anything is bound.
            from butte.coord.detector import LeaderDetector  # kazoo: only when asked for

            timeout = self.options.zk_session_timeout
            self.detector = LeaderDetector(
                parse_zk_url(self.options.master),
                session_timeout=timeout,
                connect_timeout=2 * timeout,
                on_change=self._leader_changed,
            )
            await self.detector.start()
        os.makedirs(self.options.work_dir, exist_ok=True)
        loop = asyncio.get_running_loop()
        # Before anything is bound: an isolator this machine lacks stops the start.
        isolation = self._isolation(loop)
        app = web.Application(client_max_size=16 << 20, middlewares=[jsonp_middleware])
        if self.options.tls is not None and not self.options.tls.downgrade:
            # Executors of this machine speak plain HTTP to the executor API, nobody else.
            app.middlewares.append(plain_paths_only(EXECUTOR_PATHS))
        auth = self.options.auth
        if auth.any_basic:
            app.middlewares.append(basic_middleware(auth))
        if not auth.acls.unrestricted("access_sandboxes"):
            app.middlewares.append(sandbox_middleware(auth.acls, self.framework_user))
        app.add_routes(operator_api.routes(self))
        app.add_routes(AgentHttp(self).routes())
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        port = await self._listen(self._runner)
        await self._start_docker()
        self.machine = AgentMachine(self._config(port, isolation))
        work_dir = self._core.config.work_dir
        self.checkpoints = checkpoint.CheckpointWriter(work_dir)
        self.commit = GroupCommit(
            loop, self.checkpoints.write_batch, self._release, self._checkpoint_failed
        )
        self.containerizer = PosixContainerizer(
            loop,
            self._container_started,
            self._container_failed,
            self._container_exited,
            zygote_argv=zygote_argv() if self.options.executor_zygote else None,
            fetcher_cache_dir=self.options.fetcher_cache_dir or paths.fetcher_cache_dir(work_dir),
            isolation=isolation,
            on_limited=self._container_limited,
            images=self._images(work_dir),
        )
        self.master_link = MasterLink(
            self._master_url(self.master_address()),
            on_open=lambda: self.apply(self._core.master_connected(self.now())),
            on_message=self._master_message,
            on_close=lambda: self.apply(self._core.master_disconnected(self.now())),
            backoff_factor=self.options.registration_backoff_factor,
            follow_redirects=self.detector is None,
            headers=(
                {"Authorization": basic_header(*self.options.credential)}
                if self.options.credential
                else None
            ),
            ssl_context=self.options.master_tls,
        )
        self._recover_resources(work_dir)
        self._recover_operations(work_dir)
        launcher = self._connect_launcher(loop, work_dir)
        await self._recover(work_dir)
        if launcher is not None:
            self.containerizer.launcher = launcher
            launcher.attach()
            self._resume_launched()
        # Nested containers of the previous run: adopted, or killed (sessions, orphans).
        await NestedContainers.of(self).recover()
        await self.containerizer.start()
        if self.options.recover == "cleanup":
            # Mesos: "kill any old live executors and exit" (for an incompatible upgrade).
            log.info("--recover=cleanup: the previous run's executors are killed; exiting")
            logrotate.stop_rotator(work_dir)
            self.request_stop()
            return
        self._link_task = asyncio.create_task(self.master_link.run())
        self._gc_task = asyncio.create_task(self._collect_garbage())
        self._disk_task = asyncio.create_task(self._watch_disk())
        if self.options.log_rotation is not None:
            self._rotator = logrotate.RotatorClient(
                rotator_argv(), work_dir, self.options.recovery_timeout
            )
            self._rotate_task = asyncio.create_task(self._rotate_logs(self.options.log_rotation))
        else:  # one a run with --container_logger=logrotate left must not go on rotating
            logrotate.stop_rotator(work_dir)
        log.info("agent listening on %s:%d, master %s", self.options.ip, port, self.options.master)

    def _connect_launcher(
        self, loop: asyncio.AbstractEventLoop, work_dir: str
    ) -> LauncherClient | None:
        """Reaches the command launcher (one a previous run left, or a new one) and keeps
        what it runs and ran for the recovery. None: not used, or it could not start."""
        if not self.options.command_launcher:
            return None
        containerizer = self.containerizer
        assert containerizer is not None
        client = LauncherClient(
            loop,
            launcher_argv(),
            os.path.abspath(work_dir),
            self.options.recovery_timeout,
            on_started=containerizer.launcher_started,
            on_failed=containerizer.launcher_failed,
            on_exited=containerizer.launcher_exited,
            on_lost=containerizer.launcher_lost,
        )
        try:
            self._launcher_snapshot = client.connect()
        except (LauncherUnavailable, OSError) as e:
            log.error("not using the command launcher: %s", e)
            return None
        return client

    def _resume_launched(self) -> None:
        """Hands the recovered launcher tasks to in-agent executors, which re-subscribe
        and report what happened while the agent was away; the launcher kills the rest."""
        assert self.containerizer is not None and self.containerizer.launcher is not None
        core, claimed = self._core, []
        for container_id, run in self._launcher_snapshot.items():
            ex = core.containers.get(container_id)
            container = self.containerizer.containers.get(container_id)
            if ex is None or container is None or not container.launcher:
                continue
            task = next(iter(ex.tasks.values()))
            claimed.append(container_id)
            executor = self._new_launched(ex, task.info)
            if run.exit is not None:
                # First: a limit it went over (read from its cgroups as it ends) is then
                # known before its end is reported.
                self.containerizer.launcher_exited(container_id, run.exit)
            executor.resume(run)
        self.containerizer.launcher.claim(claimed)
        self._launcher_snapshot = {}

    def _new_launched(self, ex: Executor, task: Any) -> LaunchedExecutor:
        executor = LaunchedExecutor(
            self,
            asyncio.get_running_loop(),
            ex.container_id,
            ex.framework_id,
            ex.id,
            task,
            shutdown_grace_period(ex.info, self.options.executor_shutdown_grace_period),
        )
        self.launched[ex.container_id] = executor
        return executor

    # -- the in-agent command executors' needs (butte.agent.launched.LaunchedShell) --------

    def subscribe_launched(self, executor: LaunchedExecutor, call: ExecutorCall) -> bool:
        """SUBSCRIBE of an in-agent executor: it becomes the container's stream."""
        reply = self.executor_call(call)
        if reply.status != 200 or reply.container_id is None:
            return False
        old = self.streams.get(reply.container_id)
        if old is not None and old is not executor:
            old.close()
        self.streams[reply.container_id] = executor
        self.apply(reply.effects)
        return True

    def launcher_signal(self, container_id: str, number: int) -> None:
        containerizer = self.containerizer
        if containerizer is not None and containerizer.launcher is not None:
            containerizer.launcher.signal(container_id, number)

    def launcher_kill(self, container_id: str, grace: float) -> None:
        containerizer = self.containerizer
        if containerizer is not None and containerizer.launcher is not None:
            containerizer.launcher.kill(container_id, grace)

    def launched_task_state(self, container_id: str, task_id: str) -> str | None:
        ex = self._core.containers.get(container_id)
        task = ex.tasks.get(task_id) if ex is not None else None
        return task.state if task is not None else None

    def container_signalled(self, container_id: str, number: int) -> None:
        """A launcher task has no executor process to receive an operator's signal: its
        in-agent executor is told instead (docs/design.md "The command launcher")."""
        executor = self.launched.get(container_id)
        if executor is not None:
            executor.signalled(number)

    def launched_done(self, container_id: str) -> None:
        """An in-agent executor is done: its container ends as an executor exiting 0."""
        self.launched.pop(container_id, None)
        containerizer = self.containerizer
        if containerizer is not None and containerizer.launcher is not None:
            containerizer.launcher.forget(container_id)
        self.apply(self._core.container_exited(container_id, 0, self.now()))

    def _recover_resources(self, work_dir: str) -> None:
        """Starts from the total the master last checkpointed here (dynamic reservations,
        persistent volumes), if any; it must have been made of these ``--resources``."""
        try:
            saved = checkpoint.checkpointed_resources(work_dir)
            total = Resources.from_json(saved) if saved is not None else None
        except ValueError as e:
            raise RecoveryRefused(f"unusable checkpointed resources: {e}") from None
        if saved is None or total is None:
            return
        made_of, declared = resource_ops.declared(total), self.options.resources
        if made_of != declared and self.options.reconfiguration_policy == "additive":
            # Resources added under --reconfiguration_policy=additive: the reservations and
            # volumes stay as they were, the added part joins them (Mesos applies the
            # checkpointed resources to the new --resources). What was removed or cannot
            # be split from the volumes is refused below as under `equal`.
            grown = total + (declared - made_of)
            if declared.contains(made_of) and resource_ops.declared(grown) == declared:
                total, made_of, saved = grown, declared, grown.to_json("endpoint")
        if made_of != declared:
            raise RecoveryRefused(
                f"checkpointed resources {total.to_text()} (made of {made_of.to_text()}) do not "
                f"match --resources {declared.to_text()} "
                f"(--reconfiguration_policy={self.options.reconfiguration_policy}): start with "
                f"the resources they were made of, or remove "
                f"{paths.resources_info_path(work_dir)} "
                "(dropping the agent's reservations and volumes)"
            )
        self._core.recover_resources(saved)
        log.info("recovered checkpointed resources %s", total.to_text())

    def _recover_operations(self, work_dir: str) -> None:
        """The offer operations whose status the framework had not acknowledged: reported
        when the agent re-registers (an unreadable file is a checkpoint problem: the agent
        does not start, as for its other checkpoints)."""
        try:
            reports = checkpoint.checkpointed_operations(work_dir)
        except ValueError as e:
            raise RecoveryRefused(f"unusable checkpointed operations: {e}") from None
        if reports:
            self._core.recover_operations(reports)
            log.info("recovered %d unacknowledged operation status(es)", len(reports))

    async def _start_docker(self) -> None:
        """Offers the docker containerizer if it is asked for and its daemon answers."""
        options = self.options.docker
        if not options.wanted:
            return
        work_dir = os.path.abspath(self.options.work_dir)
        docker = docker_containerizer.DockerContainerizer(options, work_dir)
        self.docker_unavailable = await docker.probe()
        if self.docker_unavailable is None:
            self.docker = docker
        else:
            log.error(
                "not offering the docker containerizer: %s; DOCKER tasks will fail",
                self.docker_unavailable,
            )

    async def _listen(self, runner: web.AppRunner) -> int:
        """Binds the HTTP server; returns its port. With TLS, executors on this machine
        may still speak plain HTTP (the built-in executor does; docs/operating.md "TLS")."""
        server = runner.server
        assert server is not None
        tls = self.options.tls
        self.connection_limit = ConnectionLimit(
            self.options.max_connections, tls is None, self.options.http_header_timeout
        )
        factory = server if tls is None else tls.wrap(server, plain_from_local=True)
        self._tls_listener = await asyncio.get_running_loop().create_server(
            self.connection_limit.wrap(factory),
            self.options.ip,
            self.options.port,
            reuse_address=True,
            backlog=4096,
        )
        return self._tls_listener.sockets[0].getsockname()[1]

    def _images(self, work_dir: str) -> ImageRuntime | None:
        """The image store and provisioner of --image_providers (None: not asked for)."""
        options = self.options.images
        if options is None:
            return None
        runtime = ImageRuntime(
            work_dir, options.registry, options.backend, options.allowed_host_paths, options.gc
        )
        log.info("images: docker archives in %s, %s backend", options.registry, options.backend)
        return runtime

    def _isolation(self, loop: asyncio.AbstractEventLoop) -> Isolation | None:
        """The isolators of --isolation (None when they enforce nothing: the posix ones
        and no user switching)."""
        names = isolators.parse_isolation(self.options.isolation)
        built, cgroups = isolators.build(names, self.options.isolation_options, loop)
        isolation = Isolation(built, cgroups, switch_user=self.options.switch_user)
        self._offer_gpus(built)
        if isolation.refuses_other_users:
            log.warning(
                "--switch_user needs root: tasks of users other than uid %d will fail",
                os.geteuid(),
            )
        enforcing = [n for n in names if not n.startswith("posix/")]
        if not enforcing and not self.options.switch_user:
            return None
        log.info(
            "isolation: %s%s%s",
            ",".join(names),
            f" (cgroups v{cgroups.version} under {cgroups.root})" if cgroups else "",
            ", switching users" if isolation.switch_user else "",
        )
        return isolation

    def _offer_gpus(self, built: list[isolators.Isolator]) -> None:
        """With gpu/nvidia: offers the GPUs it found as ``gpus`` (``--resources gpus:N``
        must match them)."""
        from butte.agent.containerizer.isolators.gpu_nvidia import NvidiaGpu

        gpus = [len(i.gpus) for i in built if isinstance(i, NvidiaGpu)]
        resources = self.options.resources
        if not gpus:
            if resources.scalar("gpus"):
                # Offered as Mesos offers them then: accounted for, but neither found nor
                # given to containers; say so rather than leave the operator guessing.
                log.warning(
                    "--resources offers gpus:%g without gpu/nvidia in --isolation: tasks are "
                    "given no GPU devices and are not kept from any",
                    resources.scalar("gpus"),
                )
            return
        if resources.has("gpus"):
            if resources.scalar("gpus") != gpus[0]:
                raise isolators.IsolatorUnavailable(
                    f"--resources gpus:{resources.scalar('gpus'):g} does not match the "
                    f"{gpus[0]} GPU device(s) gpu/nvidia uses"
                )
            return
        if gpus[0]:
            extra = parse_resources(f"gpus:{gpus[0]}")
            self.options = dataclasses.replace(self.options, resources=resources + extra)

    def _config(self, port: int, isolation: Isolation | None) -> AgentConfig:
        options = self.options
        # What of TaskInfo.limits the isolators enforce.
        limiting = {"cgroups/cpu": "cpus", "cgroups/mem": "mem"}
        names = isolation.names if isolation is not None else []
        env = options.executor_environment
        return AgentConfig(
            hostname=options.hostname or options.ip,
            ip=options.ip,
            port=port,
            work_dir=os.path.abspath(options.work_dir),
            resources=options.resources,
            attributes=options.attributes,
            domain=options.domain,
            executor_registration_timeout=options.executor_registration_timeout,
            executor_shutdown_grace_period=options.executor_shutdown_grace_period,
            status_update_retry_interval_min=options.status_update_retry_interval_min,
            status_update_retry_interval_max=options.status_update_retry_interval_max,
            executor_reregistration_timeout=options.executor_reregistration_timeout,
            recovery_timeout=options.recovery_timeout,
            command_executor_argv=command_executor_argv(),
            base_environment=dict(os.environ if env is None else env),
            executor_secret_key=options.auth.executor_key,
            log_rotation=options.log_rotation,
            limited_resources=frozenset(limiting[n] for n in names if n in limiting),
            cgroups_enable_cfs=options.isolation_options.cgroups_enable_cfs,
            containerizers=tuple(
                name
                for name in options.docker.containerizers
                if name != "docker" or self.docker is not None
            ),
            docker_unavailable=self.docker_unavailable,
            docker_executor_argv=_fast_python("butte.agent.executor.docker"),
            docker_environment=docker_containerizer.executor_environment(
                options.docker, os.path.abspath(options.work_dir)
            ),
        )

    async def _recover(self, work_dir: str) -> None:
        """Rebuilds the core from the checkpoint (see the module docstring)."""
        assert self.containerizer is not None and self.checkpoints is not None
        leaders = find_sandbox_leaders(work_dir)
        state = None
        if self.options.recover == "cleanup":
            log.info("--recover=cleanup: killing every executor found")
            checkpoint.forget_agent(work_dir)
        else:
            state = checkpoint.read_state(work_dir)
            boot, saved = checkpoint.current_boot_id(), checkpoint.checkpointed_boot_id(work_dir)
            if state is not None and boot and saved and boot != saved:
                log.warning("the checkpoint is from another boot: starting as a new agent")
                checkpoint.forget_agent(work_dir)
                state = None
            if state is not None and state.agent_info is not None:
                current = to_builtins(self._core.agent_info())
                policy = self.options.reconfiguration_policy
                check_port = self.options.port != 0
                change = agent_info_change(state.agent_info, current, check_port, policy)
                if change is not None:
                    raise RecoveryRefused(
                        f"Failed to perform recovery: incompatible agent info: {change} "
                        f"(--reconfiguration_policy={policy}). To recover agent "
                        f"{state.agent_id} and its executors, start it with the flags it had; "
                        "to start as a new agent instead (its old executors are killed): "
                        f"rm -f {paths.latest_agent_link(work_dir)}"
                    )
        effects: list[Effect] = []
        if state is not None and state.problems and self.options.strict:
            raise RecoveryRefused(
                "Failed to perform recovery (--strict): "
                + "; ".join(state.problems)
                + ". To recover what can be read (the rest of its executors are killed), "
                "start with --strict=false; to start as a new agent: "
                f"rm -f {paths.latest_agent_link(work_dir)}"
            )
        if state is not None:
            self.recovery_errors = len(state.problems)
            for problem in state.problems:
                log.warning("checkpoint: %s", problem)
            leader_pids = set(leaders.values())
            for run in state.runs:
                if run.container_id in self._launcher_snapshot:
                    # The launcher runs (or ran) its task: running or ended, it is recovered.
                    run.pid = self._launcher_snapshot[run.container_id].pid
                    continue
                pid = leaders.get(run.container_id)
                if pid is None and run.pid not in leader_pids and run.pid is not None:
                    # The executor may have left its sandbox: trust the checkpointed pid if
                    # it still leads a session (every executor does).
                    pid = run.pid if is_session_leader(run.pid) else None
                if pid is None and run.pid is None:
                    # No pid checkpointed and no sandbox: its launch was never carried out
                    # (the launcher creates the sandbox before it forks, and the zygote
                    # starts nothing once the agent that asked is gone).
                    sandbox = paths.sandbox_dir(
                        work_dir,
                        state.agent_id,
                        run.framework_id,
                        run.executor_id,
                        run.container_id,
                    )
                    run.never_started = not os.path.lexists(sandbox)
                run.pid = pid
            self.checkpoints.agent_id = state.agent_id
            effects = self._core.recover(state, self.now())
            info = to_builtins(self._core.agent_info())
            if state.agent_info is not None and agent_info_change(
                state.agent_info, info, self.options.port != 0
            ):
                # Changed as --reconfiguration_policy=additive allows: the next restart is
                # checked against what this one registers with (which the master records).
                log.info("recovered with a changed agent info: it is checkpointed anew")
                effects.insert(0, CheckpointAgent(state.agent_id, info))
            log.info(
                "recovered agent %s: %d executor(s) running, %d framework(s)",
                state.agent_id,
                sum(ex.pid is not None for ex in self._core.containers.values()),
                len(self._core.frameworks),
            )
        await self._adopt_or_kill(leaders)
        self.recovering = False
        self.recovery_seconds = time.time() - self.start_time
        self.apply(effects)

    async def _adopt_or_kill(self, leaders: dict[str, int]) -> None:
        """Watches the executors the core recovered; kills every other sandbox process."""
        assert self.containerizer is not None
        core, now = self._core, self.now()
        adopted: set[int] = set()
        for ex in list(core.containers.values()):
            if ex.pid is None or ex.state == TERMINATED:
                continue
            if ex.container_id in self._launcher_snapshot and len(ex.tasks) == 1:
                # The launcher's: its end comes from the launcher once it is attached.
                self.containerizer.adopt_launched(ex.container_id, ex.pid)
                adopted.add(ex.pid)
                continue
            if self.containerizer.adopt(ex.container_id, ex.pid, not _runs_docker(ex)):
                adopted.add(ex.pid)
                if self.docker is not None and _runs_docker(ex):
                    self.docker.track(ex.container_id)
            else:
                self.apply(core.container_exited(ex.container_id, None, now))
        orphans = [pid for pid in leaders.values() if pid not in adopted]
        if orphans:
            log.info("killing %d executor(s) this agent does not recover", len(orphans))
            await asyncio.to_thread(signal_sessions, orphans, signal.SIGKILL)
        if self.docker is not None and self.options.docker.docker_kill_orphans:
            await self.docker.remove_orphans()
        recovered = {
            cid: self._recovered_launch(cid)
            for cid, c in self.containerizer.containers.items()
            if c.recovered and cid in core.containers and not _runs_docker(core.containers[cid])
        }
        for cid in recovered:
            # Its mounts are still there (the kernel keeps them): undone when it ends.
            ex = core.containers[cid]
            tasks = [t.info for t in ex.tasks.values()]
            mounts = executor_mounts(
                core.config.work_dir, ex.kind, ex.info, tasks, ex.sandbox, False
            )
            attached = tuple(m for group in mounts for m in group)
            if attached:
                self._attached[cid] = (ex.sandbox, attached)
        images = self.containerizer.images
        if images is not None:
            removed = await asyncio.to_thread(images.remove_orphans, set(recovered))
            if removed:
                log.info("removed the root filesystems of %d ended container(s)", len(removed))
        if self.containerizer.isolation is not None:
            # Standalone containers still running keep their cgroups (butte.agent.nested).
            work_dir = self.options.work_dir
            recovered.update(await asyncio.to_thread(recovered_standalone_launches, work_dir))
        orphan_groups = self.containerizer.recover_isolation(recovered)
        isolation = self.containerizer.isolation
        if orphan_groups and isolation is not None:
            log.info("destroying %d orphan container cgroup(s)", len(orphan_groups))
            for container_id in orphan_groups:
                await asyncio.to_thread(isolation.destroy_groups, container_id)

    def _recovered_launch(self, container_id: str) -> LaunchContainer:
        """What isolators need of a recovered container: its sandbox and resources."""
        ex = self._core.containers[container_id]
        resources = [*ex.info.resources, *(r for t in ex.tasks.values() for r in t.info.resources)]
        return LaunchContainer(
            container_id,
            ex.framework_id,
            ex.id,
            ex.sandbox,
            (),
            {},
            builtin=ex.kind != CUSTOM,
            resources=scalar_totals(resources),
            limits=limits_of(
                ex.info,
                [t.info for t in ex.tasks.values()],
                self.options.isolation_options.cgroups_enable_cfs,
            ),
        )

    async def _rotate_logs(self, policy: RotationPolicy) -> None:
        """Keeps the log rotator (`butte.agent.executor.rotator`) running, a new one started
        if it died, and told which live containers' stdout/stderr to rotate, each by
        ``policy`` as its environment overrides it, and each task group member's by
        ``policy`` as its own task's environment does. The rotator rotates on its own clock,
        so rotation goes on while the agent is down (docs/isolation.md)."""
        rotator = self._rotator
        assert rotator is not None
        failed_at = -ROTATE_WARNING_INTERVAL  # when a failure to start it was last logged

        def current(known: _Rotation | None, ex: Executor) -> _Rotation:
            # A task group launched into a running default executor brings new members.
            if known is None or (ex.kind == DEFAULT and not ex.tasks.keys() <= known[1].keys()):
                return _rotation(policy, ex)
            return known

        policies: dict[str, _Rotation] = {}  # container id -> its rotation
        sent: list[logrotate.Work] | None = None  # what the rotator was told last
        while True:
            assert self.containerizer is not None
            core = self._core
            live = [
                core.containers[c] for c in self.containerizer.containers if c in core.containers
            ]
            policies = {ex.container_id: current(policies.get(ex.container_id), ex) for ex in live}
            work = [(ex.sandbox, *policies[ex.container_id]) for ex in live]
            for said in rotator.poll():
                log.warning("log rotator: %s", said)
            if not rotator.connected:
                sent = None
                try:
                    adopted = await asyncio.to_thread(rotator.connect)
                except (logrotate.RotatorUnavailable, OSError) as e:
                    now = time.monotonic()
                    if now - failed_at >= ROTATE_WARNING_INTERVAL:
                        failed_at = now
                        log.error(
                            "logs are not rotated: %s (tried every second, said at most once a "
                            "minute)",
                            e,
                        )
                else:
                    how = "adopted the" if adopted else "started a"
                    log.info("%s log rotator (pid %s)", how, rotator.pid)
            if rotator.connected and work != sent:
                await asyncio.to_thread(rotator.send, work)
                sent = work if rotator.connected else None
            await asyncio.sleep(logrotate.CHECK_INTERVAL)

    async def _watch_disk(self) -> None:
        """Measures the work dir's free space every `DISK_CHECK_INTERVAL` seconds and tells
        the core when it crosses --work_dir_min_free (statvfs: a few microseconds)."""
        minimum = self.options.work_dir_min_free
        reported: str | None = None
        while True:
            try:
                st = os.statvfs(self._core.config.work_dir)
                self.work_dir_free = st.f_bavail * st.f_frsize
            except OSError as e:
                log.warning("cannot measure the work dir's free space: %s", e)
            else:
                problem = None
                if self.work_dir_free < minimum:
                    problem = (
                        f"the agent's work_dir has {self.work_dir_free // MiB} MB free, "
                        f"under --work_dir_min_free ({minimum // MiB} MB)"
                    )
                if problem != reported:
                    log.warning("%s", problem or "the work_dir has enough free space again")
                    reported = problem
                    self.apply(self._core.disk_space(problem, self.now()))
            await asyncio.sleep(DISK_CHECK_INTERVAL)

    async def _collect_garbage(self) -> None:
        """Removes finished sandboxes every --disk_watermark_interval (butte.agent.gc)."""
        options = self.options
        work_dir = self._core.config.work_dir
        while True:
            await asyncio.sleep(options.disk_watermark_interval)
            try:
                found = await asyncio.to_thread(gc.scan, work_dir)
                fraction = await asyncio.to_thread(gc.used_fraction, work_dir)
                age = gc.max_age(options.gc_delay, options.gc_disk_headroom, fraction)
                self.sandbox_max_age = age
                assert self.containerizer is not None
                stalled = self.checkpoints is not None and self.checkpoints.stalled is not None
                live = gc.live(self._core.containers, self.containerizer.containers, stalled)
                doomed = gc.select(found, live, time.time(), age)
                for sandbox in doomed:
                    await asyncio.to_thread(gc.remove, sandbox, self._core.agent_id)
                if doomed:
                    log.info("removed %d finished sandbox(es) (max age %.0fs)", len(doomed), age)
            except Exception:  # noqa: BLE001 - a failed sweep must not stop the next ones
                log.exception("sandbox garbage collection failed")

    @property
    def _core(self) -> AgentMachine:
        assert self.machine is not None
        return self.machine

    @property
    def port(self) -> int:
        """The bound HTTP port."""
        return self._core.config.port

    def request_stop(self) -> None:
        """Asks `wait_stopped` to return for a graceful stop (`shutdown`): SIGUSR1, the
        master's order, ``--recover=cleanup``."""
        self._stop.set()

    def request_exit(self) -> None:
        """Asks `wait_stopped` to return for an exit that leaves the containers running
        (`leave`): SIGTERM and SIGINT, as they end Mesos' agent."""
        self.leaving = True
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def master_address(self) -> str | None:
        """``host:port`` of the master: the flag's, or the detected leader (None: unknown)."""
        if self.detector is not None:
            return self.detector.leader
        return self.options.master

    def _master_url(self, address: str | None) -> str | None:
        scheme = "http" if self.options.master_tls is None else "https"
        return f"{scheme}://{address}{internal.AGENT_PATH}" if address else None

    def _leader_changed(self, address: str | None) -> None:
        """A new leading master was detected: re-register with it at once."""
        log.info("leading master is now %s", address or "unknown")
        if self.master_link is not None:
            self.master_link.retarget(self._master_url(address))

    async def leave(self) -> None:
        """Ends the agent the way a crash would, minus the crash: the checkpoints written so
        far are made durable, the master connection is closed (the master sees the agent
        disconnect), and every container keeps running. As with Mesos' agent killed for an
        upgrade, the next start recovers the executors of checkpointing frameworks; those of
        the others end themselves once the agent is gone (the command launcher and the
        executors kill their tasks). A checkpoint that waits for disk space is given up on."""
        if self.checkpoints is not None:
            self.checkpoints.give_up()
        if self.detector is not None:
            await self.detector.stop()
        if self.commit is not None:
            await self.commit.wait_idle()
            self.commit.close()
        if self.master_link is not None:
            await self.master_link.close()
        if self.containerizer is not None and self.containerizer.launcher is not None:
            await self.containerizer.launcher.close(stop=False)
        await self._close_http()

    async def _close_http(self) -> None:
        """Ends the executors' streams (the HTTP server would wait for them; an executor
        that loses its stream sees its agent gone) and closes the HTTP server."""
        for stream in list(self.streams.values()):
            stream.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def shutdown(self) -> None:
        """Graceful stop; see the module docstring."""
        self._stopping = True
        if self.detector is not None:
            await self.detector.stop()
        self.apply(self._core.shutdown(self.now()))
        if self.checkpoints is not None:
            # Everything is killed and forgotten: no waiting for disk space (the
            # UNREGISTER_AGENT goes ahead of a checkpoint that waits: `checkpoint.Overtaking`).
            self.checkpoints.give_up()
        assert self.master_link is not None and self.containerizer is not None
        assert self.commit is not None
        await self.commit.wait_idle()  # the UNREGISTER_AGENT may wait behind a checkpoint
        await self.master_link.close()
        await self.containerizer.destroy_all(self.options.executor_shutdown_grace_period)
        await self.containerizer.wait_all(2.0)
        for container_id in list(self._attached):  # killed, if not yet seen to end
            self._detach_volumes(container_id)
        if self._background:
            await asyncio.wait(list(self._background), timeout=10.0)  # containers removed
        await self.containerizer.close()
        if self.containerizer.isolation is not None:
            await asyncio.to_thread(self.containerizer.isolation.close)
        await self.commit.wait_idle()
        self.commit.close()
        if self.checkpoints is not None:
            # Waits for the trash thread to delete what it was given (blocking: off the loop).
            await asyncio.to_thread(self.checkpoints.close)
        # Everything was killed: a later start must not try to recover this agent.
        checkpoint.forget_agent(self._core.config.work_dir)
        for task in (self._gc_task, self._rotate_task, self._disk_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._rotator is not None:  # the containers are gone: so is their rotation
            await asyncio.to_thread(self._rotator.stop)
        if self._link_task is not None:
            self._link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._link_task
        if self._timer is not None:
            self._timer.cancel()
        await self._close_http()

    # -- effects -----------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def apply(self, effects: list[Effect]) -> None:
        """Carries out effects in order (see the module docstring), then re-arms the timer.
        Checkpoints, and what must wait for them, go to the group commit."""
        self._pending.extend(effects)
        if self._applying:
            return
        self._applying = True
        try:
            self._drain()
        finally:
            self._applying = False
        self._arm_timer()

    def _drain(self) -> None:
        assert self.commit is not None
        while self._pending:
            effect = self._pending.popleft()
            if self.commit.holding and self._overtakes(effect):
                self._carry_out(effect)
            elif isinstance(effect, SendToExecutor | CloseExecutorStream) and self.commit.holding:
                bound = StreamBound(effect, self.streams.get(effect.container_id))
                self.commit.admit(bound)
                self.overtaking.held(effect)
            elif self.commit.admit(effect):
                self.overtaking.held(effect)
            else:
                self._carry_out(effect)

    def _overtakes(self, effect: Effect) -> bool:
        """Whether ``effect`` goes ahead of those held behind a checkpoint batch that waits
        for disk space (`checkpoint.Overtaking`)."""
        writer = self.checkpoints
        if writer is None or writer.stalled is None:
            return False
        return self.overtaking.may_overtake(effect)

    def _carry_out(self, effect: Effect | StreamBound) -> None:
        try:
            if isinstance(effect, StreamBound):
                if self.streams.get(effect.effect.container_id) is not effect.stream:
                    return  # its stream is gone (see StreamBound)
                effect = effect.effect
            self._apply_one(effect)
        except Exception:  # noqa: BLE001 - one bad effect must not stop the agent
            log.exception("failed to apply %r", effect)

    def _release(self, effects: list[Effect | StreamBound]) -> None:
        """The checkpoints before ``effects`` are durable: carries them out in order, ahead of
        whatever they cause."""
        self._applying = True
        try:
            for effect in effects:
                self.overtaking.released(
                    effect.effect if isinstance(effect, StreamBound) else effect
                )
                self._carry_out(effect)
            self._drain()
        finally:
            self._applying = False
        self._arm_timer()

    def _apply_one(self, effect: Effect) -> None:
        if isinstance(effect, SendToExecutor):
            stream = self.streams.get(effect.container_id)
            if stream is not None:
                stream.put(effect.event)
        elif isinstance(effect, SendToMaster):
            assert self.master_link is not None
            self.master_link.send(effect.message)
        elif isinstance(effect, LaunchContainer):
            assert self.containerizer is not None
            if effect.volumes or effect.sandbox_volumes or effect.host_volumes:
                owner = self._volume_owner(effect)
                try:
                    volumes.attach(effect.sandbox, effect.volumes, owner)
                except OSError as e:
                    self._container_failed(effect.container_id, f"persistent volume: {e}")
                    return
                attached = (*effect.volumes, *effect.sandbox_volumes, *effect.host_volumes)
                self._attached[effect.container_id] = (effect.sandbox, attached)
                try:
                    volumes.attach(
                        effect.sandbox, effect.sandbox_volumes, owner, sources_in_sandbox=True
                    )
                    volumes.attach_host_paths(
                        effect.sandbox, effect.host_volumes, self.options.allowed_host_paths
                    )
                except OSError as e:
                    self._container_failed(effect.container_id, f"volume: {e}")
                    return
            if effect.containerizer == "docker" and self.docker is not None:
                self.docker.track(effect.container_id)
            self.containerizer.launch(effect, self._direct(effect))
        elif isinstance(effect, UpdateContainer):
            assert self.containerizer is not None
            self.containerizer.update(effect)
        elif isinstance(effect, CloseExecutorStream):
            stream = self.streams.pop(effect.container_id, None)
            if stream is not None:
                stream.close()
        elif isinstance(effect, DestroyContainer):
            if not self._stopping:  # shutdown destroys everything at once
                assert self.containerizer is not None
                self._spawn(self.containerizer.destroy(effect.container_id, effect.grace))
        elif isinstance(effect, ExecutorRemoved):
            gc.mark_finished(effect.sandbox)
        elif isinstance(effect, StopAgent):
            log.warning("master asked this agent to stop: %s", effect.message)
            self.request_stop()

    def _direct(self, spec: LaunchContainer) -> tuple[dict, bool] | None:
        """For a plain command task the launcher can run: its CommandInfo and whether its
        framework checkpoints (an in-agent executor is set up for it). None: an executor
        process runs it."""
        launcher = self.containerizer.launcher if self.containerizer is not None else None
        if launcher is None or not launcher.alive:
            return None
        ex = self._core.containers.get(spec.container_id)
        task = direct_task(spec, ex) if ex is not None else None
        if ex is None or task is None or task.command is None:
            return None
        fw = self._core.frameworks.get(ex.framework_id)
        self._new_launched(ex, task)
        return to_builtins(task.command), bool(fw is not None and fw.info.checkpoint)

    def _checkpoint_failed(self, error: BaseException) -> None:
        """A checkpoint batch could not be written, and not for want of space (the writer
        waits that out: `CheckpointWriter.write_batch`). Fatal, as in Mesos: what follows (an
        ACKNOWLEDGED, a launch) would promise durability it does not have. The process exits
        at once, leaving executors running for a restarted agent to recover. A batch given
        up on because the agent is exiting anyway just ends the waiting."""
        if isinstance(error, checkpoint.CheckpointAbandoned):
            log.warning("exiting without the checkpoint that waits for space: %s", error)
            return
        log.critical(
            "cannot write the checkpoint under %s (%s): exiting (status 70) to keep it "
            "consistent; its executors keep running for the next start to recover",
            self._core.config.work_dir,
            error,
        )
        logging.shutdown()
        os._exit(70)

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _arm_timer(self) -> None:
        deadline = self._core.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.apply(self._core.tick(self.now()))

    # -- events into the core ------------------------------------------------------------------

    def _master_message(self, message: internal.MasterMessage) -> None:
        try:
            effects = self._core.handle_master(message, self.now())
        except Exception:  # noqa: BLE001 - a message the core cannot take must not kill us
            log.exception("failed to handle %s from master", type(message).__name__)
            return
        self.apply(effects)

    def framework_user(self, framework_id: str) -> str | None:
        """The user a framework runs as here (None: unknown), for ``--acls``."""
        fw = self.machine.frameworks.get(framework_id) if self.machine is not None else None
        return fw.info.user if fw is not None else None

    def executor_call(self, call: ExecutorCall) -> Reply:
        """Runs one executor API call through the core. A successful SUBSCRIBE's effects are
        left to the caller, which first opens the stream they are written to."""
        if self.recovering or self.machine is None:
            return Reply(503, "Agent is recovering")
        if call.type in ("UPDATE", "SUBSCRIBE"):
            self._check_limitation(call)
        try:
            reply = self._core.executor_call(call, self.now())
        except Exception:  # noqa: BLE001
            log.exception("failed to handle executor %s call", call.type)
            return Reply(500, "Internal error handling the call")
        if reply.container_id is None:
            self.apply(reply.effects)
        return reply

    def open_executor_stream(self, container_id: str) -> ExecutorStream:
        """Registers a new SUBSCRIBE stream, ending the executor's previous one."""
        old = self.streams.get(container_id)
        if old is not None:
            # As in Mesos, the newest subscription wins; without --authenticate_http_executors
            # anyone who can reach the agent may subscribe (docs/security.md).
            log.warning(
                "container %s: a new executor subscription replaces the open one", container_id
            )
            old.close()
        stream = ExecutorStream(container_id)
        self.streams[container_id] = stream
        return stream

    def executor_stream_closed(self, stream: ExecutorStream) -> None:
        """The stream's HTTP connection ended."""
        if self.streams.get(stream.container_id) is stream:
            del self.streams[stream.container_id]
            self.apply(self._core.executor_disconnected(stream.container_id, self.now()))

    def _container_started(self, container_id: str, pid: int) -> None:
        self.apply(self._core.container_started(container_id, pid, self.now()))
        executor = self.launched.get(container_id)
        if executor is not None:
            executor.started(pid)

    def _volume_owner(self, spec: LaunchContainer) -> tuple[int, int] | None:
        """With --switch_user as root, the task's user owns the volumes it uses."""
        if not (self.options.switch_user and spec.user and os.geteuid() == 0):
            return None
        from butte.agent.containerizer.linux import resolve_user

        try:
            uid, gid, _ = resolve_user(spec.user)
        except KeyError:
            return None  # the launch itself fails with the reason
        return uid, gid

    def _detach_volumes(self, container_id: str) -> None:
        attached = self._attached.pop(container_id, None)
        if attached is not None:
            volumes.detach(*attached)

    def _container_failed(self, container_id: str, message: str) -> None:
        self.launched.pop(container_id, None)
        self._detach_volumes(container_id)
        log.warning("container %s failed to launch: %s", container_id, message)
        self._docker_ended(container_id)
        self.apply(self._core.container_failed(container_id, message, self.now()))

    def _container_limited(self, container_id: str, limitation: Limitation) -> None:
        effects = self._core.container_limited(
            container_id, limitation.reason, limitation.message, self.now()
        )
        if effects:  # the first report of it (the executor's end and the exit may both see it)
            log.warning("container %s: %s", container_id, limitation.message)
        self.apply(effects)

    def _check_limitation(self, call: ExecutorCall) -> None:
        """Before a task's end from its executor is taken: did its container go over a limit
        (the kernel's counters say so before the executor can)? Then the end is reported as
        that limitation. The end may also come with a re-subscription, among the updates
        the executor could not deliver while the agent was away."""
        assert self.containerizer is not None
        if call.update is not None:
            statuses = [call.update.status]
        elif call.subscribe is not None:
            statuses = [u.status for u in call.subscribe.unacknowledged_updates]
        else:
            return
        if self.containerizer.isolation is None or not any(
            ts.is_terminal(s.state) for s in statuses
        ):
            return
        fw = self._core.frameworks.get(call.framework_id.value)
        ex = fw.executors.get(call.executor_id.value) if fw is not None else None
        if ex is None or ex.limitation is not None:
            return
        limitation = self.containerizer.limitation(ex.container_id)
        if limitation is not None:
            self._container_limited(ex.container_id, limitation)

    def _docker_ended(self, container_id: str) -> None:
        if self.docker is not None:
            removal = self.docker.ended(container_id)
            if removal is not None:
                self._spawn(removal)

    def _container_exited(self, container_id: str, status: int | None) -> None:
        self._detach_volumes(container_id)
        self._docker_ended(container_id)
        executor = self.launched.get(container_id)
        if executor is not None:
            if status is not None:
                executor.ended(status)  # it reports the end, then "exits"
                return
            del self.launched[container_id]  # the launcher died: as an executor crash
        self.apply(self._core.container_exited(container_id, status, self.now()))

    # -- read-only views -----------------------------------------------------------------------

    def state(self) -> dict:
        """The legacy ``/state`` document."""
        master_host = (self.master_address() or "").rpartition(":")[0]
        return agent_state(
            self._core,
            start_time=self.start_time,
            master_hostname=master_host,
            flags=self.flags,
            build=version_info(),
        )

    def metrics(self) -> dict[str, float]:
        """The shell's part of ``/metrics/snapshot`` (`AgentOperatorApi.metrics` adds the
        resources, executor states and frameworks)."""
        core = self._core
        states: dict[str, int] = {}
        for ex in core.executors():
            for task in ex.tasks.values():
                states[task.state] = states.get(task.state, 0) + 1
        out: dict[str, float] = {
            "slave/uptime_secs": uptime_since(self.start_time),
            "slave/connections_refused": float(self.connection_limit.refused),
            "slave/work_dir_free_bytes": float(self.work_dir_free or 0),
            "slave/work_dir_low": 1.0 if core.disk_problem is not None else 0.0,
            "slave/recovery_errors": float(self.recovery_errors),
            "slave/executor_directory_max_allowed_age_secs": self.sandbox_max_age,
        }
        if self.recovery_seconds is not None:
            # As Mesos' agent: there once recovery is done, the seconds from start to then.
            out["slave/recovery_time_secs"] = self.recovery_seconds
        for state in sorted(ts.ALL_STATES):
            name = state[5:].lower()
            # As Mesos' agent: live states are gauges of the tasks in them now; terminal
            # ones count every task that ended so (executors and their tasks come and go).
            value = core.counters.get(f"updates_{name}", 0) if ts.is_terminal(state) else None
            out[f"slave/tasks_{name}"] = float(states.get(state, 0) if value is None else value)
        for name, value in sorted(core.counters.items()):
            out[f"slave/{name}"] = float(value)
        assert self.containerizer is not None
        for name, value in self.containerizer.statistics().items():
            out[f"containerizer/{name}"] = float(value)
        out["slave/container_launch_errors"] = out["containerizer/containers_launch_failed"]
        return out


async def serve(options: AgentOptions) -> int:
    """Runs an agent until SIGUSR1 (or the master tells it to stop, or ``--recover=cleanup``
    is done), or SIGTERM/SIGINT (an exit leaving the containers running); exit status."""
    server = AgentServer(options)
    await server.start()
    loop = asyncio.get_running_loop()
    # As for Mesos' agent: SIGUSR1 shuts it down (everything killed, the agent unregistered);
    # SIGTERM and SIGINT end the process and leave the containers for the next start.
    loop.add_signal_handler(signal.SIGUSR1, server.request_stop)
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, server.request_exit)
    try:
        await server.wait_stopped()
    finally:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(number)
        if server.leaving:
            log.info("agent exiting; its containers keep running (SIGUSR1 stops them all)")
            await server.leave()
        else:
            log.info("agent stopping")
            await server.shutdown()
    return server.exit_code
