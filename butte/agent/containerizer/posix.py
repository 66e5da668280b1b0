"""POSIX containerizer: a container is an executor process in its own session.

Launching: a framework's executor is started with ``subprocess.Popen(start_new_session=True)``
(fast spawn path; docs/design.md) after creating the sandbox (and ``runs/latest``) and opening
its ``stdout``/``stderr`` files, in a small thread pool: Popen returns only once the child
has exec'd, which on a loaded machine is milliseconds of waiting that must not stall the
event loop (the GIL is released meanwhile). The built-in executor is instead forked by the
executor zygote (`butte.agent.containerizer.zygote`), which skips the interpreter start-up.

Watching: a pidfd per executor process on the event loop (no SIGCHLD handler, no watcher
thread). The raw wait status is reported: from ``waitpid`` for our own children, from the
zygote for its children.

Destroying: every process of the container is signalled, i.e. the executor's process group
and every other process in its session (tasks run in their own process groups inside the
executor's session): SIGTERM first, SIGKILL after the grace period. Finding session members
means scanning /proc; that is done off the event loop and only on the destroy path.

Fetching: a launch with CommandInfo.URIs first runs `butte.agent.fetcher` in a worker thread;
a failure fails the launch (the tasks go TASK_FAILED, REASON_CONTAINER_LAUNCH_FAILED).

Isolation: with an `Isolation` (the isolators of ``--isolation``), a launch is first
prepared (user, cgroups and limits; a refusal fails the launch), the executor's first
process joins the container's cgroups before it runs anything (the zygote child, or a
``preexec_fn`` for a spawned executor), kills also go through the cgroups (freezer or
``cgroup.kill``: no process escapes), and a container that goes over a limit is reported
through ``on_limited`` (at once when an isolator watches for it, else checked when the
executor ends; an end by a SIGKILL the agent did not send, with an OOM possible, is reported
only after the OOM counter was read again: the kernel counts an OOM kill after its SIGKILL).
Its groups are then removed by the isolation's releaser thread (`Isolation.release`).

Recovery (after an agent restart): executors outlive the agent (own sessions; the zygote exits
without touching its children). `find_sandbox_leaders` finds every live session leader whose
working directory is a sandbox of this work dir; the agent `adopt`s those it recovered (they
are watched by pidfd like any other, exit status unknown) and kills the rest as orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from butte.agent import paths
from butte.agent.containerizer import linux
from butte.agent.containerizer.image_runtime import ImageRuntime, member_id
from butte.agent.containerizer.images import ImageError
from butte.agent.containerizer.isolation import Isolation
from butte.agent.containerizer.isolators import ContainerSetup, LaunchRefused, Limitation
from butte.agent.containerizer.isolators.cgroups_mem import OOM_RECHECKS
from butte.agent.containerizer.launcher import LauncherClient
from butte.agent.containerizer.zygote import ZygoteClient
from butte.agent.effects import LaunchContainer, UpdateContainer
from butte.agent.executor.command import (
    ROOTFS_ENV,
    ROOTFS_GROUP_ENV,
    task_argv,
    task_environment,
)
from butte.agent.fetcher import FetchError, fetch_all, give_to
from butte.agent.launching import command_environment
from butte.agent.placement import make_sandbox
from butte.core.container_info import image_of
from butte.core.messages import to_builtins

log = logging.getLogger("butte.agent")
_spread: set[str] = set()  # executors directories given the placement hint

# How long to wait for the zygote's report of an exit after the process is seen gone.
ZYGOTE_EXIT_WAIT = 2.0

StartedCallback = Callable[[str, int], None]
FailedCallback = Callable[[str, str], None]
ExitedCallback = Callable[[str, int | None], None]
LimitedCallback = Callable[[str, Limitation], None]


@dataclass(slots=True, eq=False)
class Container:
    """One running (or launching) container."""

    container_id: str
    pid: int | None = None
    popen: subprocess.Popen | None = None
    pidfd: int | None = None
    exit_status: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when destroy was asked before the process existed: its grace period.
    destroy_on_start: float | None = None
    zygote: bool = False  # forked by the executor zygote (not our child)
    recovered: bool = False  # adopted after an agent restart (not our child)
    launcher: bool = False  # a task the command launcher runs (no executor process)
    setup: ContainerSetup | None = None  # what the isolators asked for (None: no isolation)
    killing: bool = False  # the agent itself is killing it (destroy, shutdown)
    settling: bool = False  # ended; its OOM counter is being read again before it is told


def prepare_sandbox(spec: LaunchContainer, owner: tuple[int, int] | None = None) -> tuple[int, int]:
    """Creates the sandbox and ``runs/latest`` (the sandbox owned by ``owner`` (uid, gid) if
    given); returns fds of its stdout and stderr files."""
    make_sandbox(spec.sandbox, _spread)
    if owner is not None:
        os.chown(spec.sandbox, *owner)
    link = paths.latest_link(spec.sandbox)
    try:
        os.symlink(spec.container_id, link)
    except FileExistsError:
        temporary = f"{link}.{spec.container_id}"
        os.symlink(spec.container_id, temporary)
        os.replace(temporary, link)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(paths.stdout_path(spec.sandbox), flags, 0o644)
    try:
        err = os.open(paths.stderr_path(spec.sandbox), flags, 0o644)
    except OSError:
        os.close(out)
        raise
    if owner is not None:
        os.fchown(out, *owner)
        os.fchown(err, *owner)
    return out, err


def _owner(setup: ContainerSetup | None) -> tuple[int, int] | None:
    return None if setup is None or setup.user is None else (setup.user[1], setup.user[2])


def start_process(spec: LaunchContainer, setup: ContainerSetup | None = None) -> subprocess.Popen:
    """Starts the executor process of ``spec`` in a new session inside its sandbox (in its
    cgroups, and for a custom executor in its namespaces and as its user)."""
    out, err = prepare_sandbox(spec, _owner(setup))
    env = spec.env if setup is None or not setup.env else {**spec.env, **setup.env}
    try:
        return subprocess.Popen(
            list(spec.argv),
            executable=spec.executable,
            cwd=spec.sandbox,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_preexec(spec, setup),
        )
    finally:
        os.close(out)
        os.close(err)


def _preexec(spec: LaunchContainer, setup: ContainerSetup | None) -> Callable[[], None] | None:
    """What the executor's process does before exec: join the cgroups; a custom executor
    also enters its namespaces and becomes its user (the built-in one does that per task)."""
    if setup is None:
        return None
    procs = list(setup.cgroup_procs)
    custom = not spec.builtin
    namespaces = list(setup.task_namespaces) if custom else []
    user = setup.user if custom else None
    oom_score_adj = setup.oom_score_adj
    if not procs and not namespaces and user is None and oom_score_adj is None:
        return None

    def preexec() -> None:
        linux.join_cgroups(procs, oom_score_adj)
        if namespaces:
            linux.enter_namespaces(namespaces, spec.sandbox, user)
        if user is not None:
            linux.switch_user(user[0], user[1], user[2])

    return preexec


def session_members(sessions: Iterable[int]) -> dict[int, list[int]]:
    """Pids of the live processes in each of ``sessions`` (by /proc scan)."""
    wanted = set(sessions)
    found: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces) start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3:
            session = int(fields[3])
            if session in wanted:
                found.setdefault(session, []).append(int(name))
    return found


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def is_session_leader(pid: int) -> bool:
    """Whether ``pid`` runs and leads its own session (every executor does)."""
    fields = _stat_fields(pid)
    return (
        fields is not None
        and len(fields) > 3
        and fields[0] not in (b"Z", b"X", b"x")
        and int(fields[3]) == pid
    )


def find_sandbox_leaders(work_dir: str) -> dict[str, int]:
    """Container id -> pid of every live session leader whose working directory is a
    sandbox under ``work_dir`` (executors start there; see `paths.parse_sandbox`)."""
    found: dict[str, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or not is_session_leader(int(name)):
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        parsed = paths.parse_sandbox(work_dir, cwd)
        if parsed is not None:
            found[parsed[3]] = int(name)
    return found


def signal_sessions(sessions: Iterable[int], number: int) -> None:
    """Sends ``number`` to every process of every session (leaders are their own groups)."""
    sessions = list(sessions)
    for leader in sessions:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, number)
    for members in session_members(sessions).values():
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, number)


class PosixContainerizer:
    """Launches, watches and destroys containers for the agent shell (see module doc)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_started: StartedCallback,
        on_failed: FailedCallback,
        on_exited: ExitedCallback,
        launch_threads: int = 8,
        zygote_argv: Sequence[str] | None = None,
        fetcher_cache_dir: str | None = None,
        isolation: Isolation | None = None,
        on_limited: LimitedCallback | None = None,
        images: ImageRuntime | None = None,
    ) -> None:
        self._loop = loop
        self.isolation = isolation
        # --image_providers docker: tasks in images (None: such a task fails to launch).
        self.images = images
        self._on_limited = on_limited or (lambda cid, limitation: None)
        self._on_started = on_started
        self._on_failed = on_failed
        self._on_exited = on_exited
        self.containers: dict[str, Container] = {}
        self.launched = 0
        self.failed = 0
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self._pool = ThreadPoolExecutor(launch_threads, thread_name_prefix="launch")
        self._fetcher_cache_dir = fetcher_cache_dir
        self._zygote: ZygoteClient | None = None
        # The command launcher (set by the agent once connected; None: not used).
        self.launcher: LauncherClient | None = None
        # Container id -> (task's CommandInfo as JSON, checkpointing) of launcher launches.
        self._direct: dict[str, tuple[dict, bool]] = {}
        if zygote_argv:
            self._zygote = ZygoteClient(
                loop,
                zygote_argv,
                on_started=self._zygote_started,
                on_failed=self._launch_failed,
                on_exited=self._zygote_exited,
                on_lost=self._zygote_lost,
            )

    async def start(self) -> None:
        """Starts the executor zygote (if configured)."""
        if self._zygote is not None:
            try:
                await self._zygote.start()
            except OSError as e:
                log.error("cannot start the executor zygote (%s); not using it", e)
                self._zygote = None

    def launch(self, spec: LaunchContainer, direct: tuple[dict, bool] | None = None) -> None:
        """Starts a container: a built-in executor is forked by the zygote; anything else is
        spawned in a worker thread (a spawn waits for the child's exec, which would stall
        the event loop on a busy machine). ``direct``: (CommandInfo as JSON, checkpointing)
        of a task the command launcher starts itself, without an executor process. Results
        come through the callbacks, on the loop."""
        container = Container(spec.container_id, launcher=direct is not None)
        self.containers[spec.container_id] = container
        if direct is not None:
            self._direct[spec.container_id] = direct
        if self.isolation is not None and spec.containerizer == "mesos":
            try:
                container.setup = self.isolation.prepare(spec)
            except LaunchRefused as e:
                self._launch_failed(spec.container_id, str(e))
                return
        image = image_of(spec.container)
        if image is None and spec.member_images:
            image = image_of(spec.member_images[0][1])
        if image is not None and self.images is None:
            self._launch_failed(
                spec.container_id,
                f"Cannot run image '{image}': this agent has no --image_providers",
            )
            return
        if spec.fetch or image is not None:
            future = self._loop.run_in_executor(self._pool, self._fetch, spec, container)
            future.add_done_callback(lambda f: self._fetched(container, spec, f))
            return
        self._start(container, spec)

    def _start(self, container: Container, spec: LaunchContainer) -> None:
        if container.launcher:
            self._start_direct(container, spec)
            return
        if spec.builtin and self._zygote is not None and self._zygote.alive:
            container.zygote = True
            self._zygote.launch(spec, container.setup)
            return
        future = self._loop.run_in_executor(self._pool, start_process, spec, container.setup)
        future.add_done_callback(lambda f: self._spawned(container, f))

    def _start_direct(self, container: Container, spec: LaunchContainer) -> None:
        """Asks the command launcher for the task's process (see `launch`)."""
        command, checkpoint = self._direct.pop(spec.container_id)
        if self.launcher is None or not self.launcher.alive:
            self._launch_failed(spec.container_id, "the command launcher exited")
            return
        setup = container.setup
        env = spec.env if setup is None or not setup.env else {**spec.env, **setup.env}
        program, argv, search = task_argv(command)
        request: dict[str, Any] = {
            "id": spec.container_id,
            "sandbox": spec.sandbox,
            "program": program,
            "argv": argv,
            "search": search,
            "env": task_environment(env, command),
            "checkpoint": checkpoint,
        }
        if setup is not None:
            if setup.cgroup_procs:
                request["cgroups"] = setup.cgroup_procs
            if setup.oom_score_adj is not None:
                request["oom_score_adj"] = setup.oom_score_adj
            if setup.task_namespaces:
                request["namespaces"] = setup.task_namespaces
            if setup.user is not None:
                request["user"] = list(setup.user)
                request["owner"] = [setup.user[1], setup.user[2]]
        self.launcher.launch(request)

    def adopt_launched(self, container_id: str, pid: int) -> None:
        """Tracks a task the launcher still runs (or ran) for a recovered container; its
        end comes from the launcher."""
        setup = ContainerSetup() if self.isolation is not None else None
        container = Container(container_id, pid=pid, recovered=True, launcher=True, setup=setup)
        self.containers[container_id] = container

    def launcher_started(self, container_id: str, pid: int) -> None:
        container = self.containers.get(container_id)
        if container is not None and container.launcher:
            self._started(container, pid)

    def launcher_failed(self, container_id: str, message: str) -> None:
        container = self.containers.get(container_id)
        if container is not None and container.launcher and container.pid is None:
            self._launch_failed(container_id, message)

    def launcher_exited(self, container_id: str, status: int | None) -> None:
        container = self.containers.get(container_id)
        if container is not None and container.launcher:
            self._finish(container, status)

    def launcher_lost(self) -> None:
        """The launcher died: its tasks' processes are killed and end with no status (as
        when an executor dies), those not yet started fail to launch."""
        for container in list(self.containers.values()):
            if not container.launcher:
                continue
            if container.pid is None:
                self._launch_failed(container.container_id, "the command launcher exited")
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(container.pid, signal.SIGKILL)
                self._finish(container, None)

    def _fetch(self, spec: LaunchContainer, container: Container) -> None:
        """Runs in a worker thread: the sandbox, then every URI into it, then the image's
        root filesystem (its launch plan goes to the executor in its environment)."""
        make_sandbox(spec.sandbox, _spread)
        if spec.fetch:
            fetch_all(spec.fetch, self._fetcher_cache_dir)
            user = container.setup.user if container.setup is not None else None
            if user is not None:
                give_to(spec.fetch, user[1], user[2])
        if self.images is not None and image_of(spec.container) is not None:
            assert spec.container is not None
            command = to_builtins(spec.command) if spec.command is not None else {}
            # Like any task, its CommandInfo's or framework's user only with --switch_user
            # (the image's User is not used, as in Mesos).
            switching = self.isolation is not None and self.isolation.switch_user
            plan = self.images.prepare(
                spec.container_id,
                spec.container,
                command,
                spec.sandbox,
                spec.env,
                command_environment(spec.command),
                spec.user if switching else None,
            )
            if container.setup is None:
                container.setup = ContainerSetup()
            container.setup.env[ROOTFS_ENV] = json.dumps(plan)
        if self.images is not None and spec.member_images:
            switching = self.isolation is not None and self.isolation.switch_user
            plans = {}
            for index, (task_id, info, command_info) in enumerate(spec.member_images):
                own = paths.task_sandbox(spec.sandbox, task_id)
                os.makedirs(own, exist_ok=True)
                plans[task_id] = self.images.prepare(
                    member_id(spec.container_id, index),
                    info,
                    to_builtins(command_info),
                    own,
                    spec.env,
                    command_environment(command_info),
                    (command_info.user or spec.user) if switching else None,
                    parent=spec.sandbox,
                )
            if container.setup is None:
                container.setup = ContainerSetup()
            container.setup.env[ROOTFS_GROUP_ENV] = json.dumps(plans)

    def _fetched(self, container: Container, spec: LaunchContainer, future: Any) -> None:
        try:
            future.result()
        except (FetchError, ImageError, OSError) as e:
            self._launch_failed(container.container_id, str(e))
            return
        if self._closing:
            self._launch_failed(container.container_id, "the agent is shutting down")
        elif self.containers.get(container.container_id) is container:
            self._start(container, spec)

    def adopt(self, container_id: str, pid: int, isolated: bool = True) -> bool:
        """Watches a recovered executor process (not our child); False if it is gone.
        ``isolated``: whether the isolators set it up (not a Docker executor's)."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        setup = ContainerSetup() if self.isolation is not None and isolated else None
        container = Container(container_id, pid=pid, pidfd=pidfd, recovered=True, setup=setup)
        self.containers[container_id] = container
        self._loop.add_reader(pidfd, self._pidfd_ready, container)
        return True

    def _spawned(self, container: Container, future: asyncio.Future) -> None:
        try:
            popen: subprocess.Popen = future.result()
        except (OSError, subprocess.SubprocessError) as e:
            self._launch_failed(container.container_id, f"{type(e).__name__}: {e}")
            return
        container.popen = popen
        self._started(container, popen.pid)

    def _zygote_started(self, container_id: str, pid: int) -> None:
        container = self.containers.get(container_id)
        if container is not None:
            self._started(container, pid)

    def _started(self, container: Container, pid: int) -> None:
        container.pid = pid
        try:
            # The launcher reports its tasks' ends itself.
            container.pidfd = None if container.launcher else os.pidfd_open(pid)
        except OSError:
            container.pidfd = None  # already gone: the zygote reports its exit
        if container.pidfd is not None:
            self._loop.add_reader(container.pidfd, self._pidfd_ready, container)
        self.launched += 1
        if container.setup is not None and self.isolation is not None:
            self.isolation.started(container.container_id, self._limited)
        self._on_started(container.container_id, pid)
        if self._closing:
            self._spawn(self._kill([container], 0.0))
        elif container.destroy_on_start is not None:
            self._spawn(self.destroy(container.container_id, container.destroy_on_start))

    def _launch_failed(self, container_id: str, message: str) -> None:
        self._direct.pop(container_id, None)
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        self.failed += 1
        container.exited.set()
        if container.setup is not None and self.isolation is not None:
            self.isolation.cleanup(container_id)
            self.isolation.release(container_id)
        self._release_rootfs(container_id)
        self._on_failed(container_id, message)

    def _release_rootfs(self, container_id: str) -> None:
        if self.images is not None:
            self._spawn(asyncio.to_thread(self.images.release, container_id))

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pidfd_ready(self, container: Container) -> None:
        """The process ended. Our own child is reaped here; a zygote child's status comes
        from the zygote (waited for briefly, in case the zygote died meanwhile)."""
        if container.popen is None:
            self._stop_watching(container)
            if container.recovered or self._zygote is None or not self._zygote.alive:
                self._finish(container, None)
            else:
                self._loop.call_later(ZYGOTE_EXIT_WAIT, self._finish, container, None)
            return
        assert container.pid is not None
        try:
            pid, status = os.waitpid(container.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = container.pid, None
        if pid == 0:
            return  # spurious wake-up
        # We reaped it: keep Popen from waiting on a pid that may be reused.
        container.popen.returncode = -1 if status is None else os.waitstatus_to_exitcode(status)
        self._finish(container, status)

    def _zygote_exited(self, container_id: str, status: int | None) -> None:
        container = self.containers.get(container_id)
        if container is not None:
            self._finish(container, status)

    def _zygote_lost(self) -> None:
        for container in list(self.containers.values()):
            if container.zygote and container.pid is None:
                self._launch_failed(container.container_id, "the executor zygote exited")
            elif container.zygote and container.pidfd is None:
                self._finish(container, None)  # already gone; nobody will report it now

    def _stop_watching(self, container: Container) -> None:
        if container.pidfd is not None:
            self._loop.remove_reader(container.pidfd)
            os.close(container.pidfd)
            container.pidfd = None

    def _finish(self, container: Container, status: int | None) -> None:
        if container.exited.is_set() or container.settling:
            return
        self._stop_watching(container)
        assert container.pid is not None
        # Whatever the executor left in its own process group goes with it (the launcher
        # does that for its tasks before it reaps them, while their pids are still theirs).
        # After an abnormal exit its tasks may live on in other groups of the session:
        # sweep the session too.
        if not container.launcher:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container.pid, signal.SIGKILL)
        if status is None or not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            self._spawn(asyncio.to_thread(signal_sessions, [container.pid], signal.SIGKILL))
        limitation = None
        if container.setup is not None and self.isolation is not None:
            # A limit it went over is told before its end, so its tasks fail with it.
            limitation = self.isolation.limitation(container.container_id)
            if limitation is None and self._maybe_oom_killed(container, status):
                container.settling = True
                self._loop.call_later(OOM_RECHECKS[0], self._settle, container, status, 1)
                return
        self._finished(container, status, limitation)

    def _maybe_oom_killed(self, container: Container, status: int | None) -> bool:
        """Did it end by a SIGKILL that the agent did not send, with an OOM possible? The
        kernel counts an OOM kill only after sending its SIGKILL, so the counter may not
        show it yet (never guessed from the status alone: only re-read)."""
        if status is None or container.killing or not os.WIFSIGNALED(status):
            return False
        if os.WTERMSIG(status) != signal.SIGKILL:
            return False
        assert self.isolation is not None
        return self.isolation.limitation_possible(container.container_id)

    def _settle(self, container: Container, status: int | None, attempt: int) -> None:
        """Re-reads the OOM counter of an ended container (`_maybe_oom_killed`), at 10, 60,
        260 and 1260 ms after its end, until it shows the OOM or the last read is done."""
        assert self.isolation is not None
        limitation = self.isolation.limitation(container.container_id)
        if limitation is None and attempt < len(OOM_RECHECKS):
            delay = OOM_RECHECKS[attempt]
            self._loop.call_later(delay, self._settle, container, status, attempt + 1)
            return
        container.settling = False
        self._finished(container, status, limitation)

    def _finished(
        self, container: Container, status: int | None, limitation: Limitation | None
    ) -> None:
        """Its end is known (and any limit it went over): tell, and clean up after it."""
        container.exit_status = status
        container.exited.set()
        self.containers.pop(container.container_id, None)
        if container.setup is not None and self.isolation is not None:
            if limitation is not None:
                self._on_limited(container.container_id, limitation)
            self.isolation.cleanup(container.container_id)
            self.isolation.release(container.container_id)
        self._release_rootfs(container.container_id)
        self._on_exited(container.container_id, status)

    def _limited(self, container_id: str, limitation: Limitation) -> None:
        if container_id in self.containers:
            self._on_limited(container_id, limitation)

    def limitation(self, container_id: str) -> Limitation | None:
        """A limit the running container went over (read now; None without isolation)."""
        container = self.containers.get(container_id)
        if container is None or container.setup is None or self.isolation is None:
            return None
        return self.isolation.limitation(container_id)

    def update(self, change: UpdateContainer) -> None:
        """Tasks joined or left a running container: its limits follow them (an isolation
        failure is logged; its tasks run on under the limits it had)."""
        container = self.containers.get(change.container_id)
        if container is None or container.setup is None or self.isolation is None:
            return
        try:
            self.isolation.update(change)
        except (LaunchRefused, OSError) as e:
            log.warning("cannot update the limits of container %s: %s", change.container_id, e)

    def usage(self, container_id: str) -> dict[str, float] | None:
        """ResourceStatistics fields of a running container (None: not isolated)."""
        container = self.containers.get(container_id)
        if container is None or container.setup is None or self.isolation is None:
            return None
        return self.isolation.usage(container_id)

    def recover_isolation(self, recovered: dict[str, LaunchContainer]) -> list[str]:
        """Re-watches the recovered containers' limits; returns orphan cgroup ids."""
        if self.isolation is None:
            return []
        return self.isolation.recover(recovered, self._limited)

    async def destroy(self, container_id: str, grace: float) -> None:
        """Kills the container's processes: SIGTERM, SIGKILL after ``grace`` seconds."""
        container = self.containers.get(container_id)
        if container is None:
            return
        if container.pid is None:
            container.destroy_on_start = grace
            return
        await self._kill([container], grace)

    async def destroy_all(self, grace: float) -> None:
        """Kills every container (agent shutdown), including those still being launched."""
        self._closing = True
        await self._kill(list(self.containers.values()), grace)

    async def _kill(self, containers: list[Container], grace: float) -> None:
        # A settling one has ended already (its pid may be another process's by now).
        live = [
            c for c in containers if c.pid is not None and not c.exited.is_set() and not c.settling
        ]
        if not live:
            return
        for c in live:
            c.killing = True  # its SIGKILL is ours: no OOM to wait for (`_maybe_oom_killed`)
        sessions = [c.pid for c in live if c.pid is not None]
        if grace > 0:
            await asyncio.to_thread(signal_sessions, sessions, signal.SIGTERM)
            waits = [asyncio.ensure_future(c.exited.wait()) for c in live]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for waiter in pending:
                waiter.cancel()
        # SIGKILL the whole sessions even if the leaders exited: tasks may linger.
        await asyncio.to_thread(signal_sessions, sessions, signal.SIGKILL)
        isolation = self.isolation
        if isolation is not None:
            for c in live:
                if c.setup is not None:
                    await asyncio.to_thread(isolation.kill, c.container_id)

    async def close(self) -> None:
        """Stops the zygote and the launch threads (after the last launch), once the
        clean-ups under way (cgroups being removed) are done."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._zygote is not None:
            await self._zygote.close()
        if self.launcher is not None:
            await self.launcher.close(stop=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def wait_all(self, timeout: float) -> None:
        """Waits (at most ``timeout``) until every container has exited."""
        waits = [asyncio.ensure_future(c.exited.wait()) for c in self.containers.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for waiter in pending:
                waiter.cancel()

    def statistics(self) -> dict[str, int]:
        """Counters for metrics endpoints."""
        return {
            "containers_running": len(self.containers),
            "containers_launched": self.launched,
            "containers_launch_failed": self.failed,
        }
