"""Nested containers: commands started inside a running task's container (Mesos'
LAUNCH_NESTED_CONTAINER and its session, attach, wait, kill and remove calls; the HTTP side
is `butte.agent.nested_api`, the process side `butte.agent.containerizer.nested_exec`).

A nested container is one command that enters its parent's namespaces (those of the task
process: its pid, mount, network, IPC and UTS namespaces where they differ from the
agent's), joins the parent's cgroups and runs with the task's credentials, unless the call
names a user. Its stdio are pipes (or a pty with ``tty_info``) held by the agent, which
copies the output to ``<parent sandbox>/containers/<id>/stdout|stderr`` and to every
attached reader, and writes attached input to its stdin.

The registry lives in the agent process only: it is not checkpointed, so after an agent
restart its nested containers are no longer known (they end with their parent: the
parent's pid namespace or cgroups take them down). A finished container is kept, with its
wait status, until it is removed (or, beyond `MAX_FINISHED`, the oldest finished ones are
forgotten); its sandbox stays until REMOVE or the parent's sandbox is collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pwd
import re
import shutil
import signal
import struct
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from butte.agent.containerizer.posix import session_members, signal_sessions

if TYPE_CHECKING:
    from butte.agent.records import Executor
    from butte.agent.shell_api import AgentShell

log = logging.getLogger("butte.agent")

MAX_FINISHED = 1000
# Running nested containers per agent: each holds a launcher process and pipes.
MAX_RUNNING = 256
PARENT_CHECK_INTERVAL = 1.0
# How long output may go on after the command ended (a background child holding its
# stdout) before the streams are closed anyway.
OUTPUT_DRAIN = 1.0
CHUNK = 64 * 1024
# Container ids as Mesos accepts them: no path separators, not '.' or '..'.
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# One piece of output: ("STDOUT"|"STDERR", bytes); None ends a reader's stream.
Output = tuple[str, bytes] | None


class NestedError(Exception):
    """A call that cannot be served: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Command:
    """What to run: a parsed CommandInfo (+ ``tty``, window size) of a launch call."""

    program: str
    argv: list[str]
    env: dict[str, str]
    user: str | None
    tty: bool
    window: tuple[int, int] | None  # (rows, columns)


@dataclass(eq=False)
class NestedContainer:
    """One nested container, running or finished."""

    container_id: str
    parent_id: str
    sandbox: str  # host path
    tty: bool
    session: bool
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None  # the command's pid (the agent's view)
    master_fd: int | None = None  # pty master (tty)
    stdin: asyncio.StreamWriter | None = None  # pipe (no tty)
    readers: list[asyncio.Queue[Output]] = field(default_factory=list)
    output_done: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    wait_status: int | None = None
    sigkilled: bool = False  # the agent sent it SIGKILL (KILL, its session or parent ended)
    input_attached: bool = False
    delivering: int = 0  # output pumps waiting for a reader to take a chunk
    message: str | None = None

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    def wait_result(self) -> dict[str, Any]:
        """WaitNestedContainer/WaitContainer: the raw wait(2) status. No ``state``: Mesos'
        agent gives one only for a container ended by a resource limitation (a nested
        container here has none of its own), and a client such as Mesos' default executor
        takes a given state over the one it works out from the status and its own kill."""
        out: dict[str, Any] = {}
        if self.wait_status is not None:
            out["exit_status"] = self.wait_status
        if self.message:
            out["message"] = self.message
        return out


def parse_command(command: Any, container: dict[str, Any] | None) -> Command:
    """A launch call's CommandInfo and ContainerInfo as a `Command`; NestedError (400) for
    what butte does not do in a nested container."""
    if command is None or (command.value is None and not command.arguments):
        raise NestedError(400, "Expecting 'command' with a 'value'")
    if command.uris:
        raise NestedError(400, "URIs are not fetched for nested containers")
    env: dict[str, str] = {}
    for var in command.environment.variables if command.environment else []:
        if var.type != "VALUE" or var.value is None:
            raise NestedError(400, f"environment variable '{var.name}': only VALUE is supported")
        env[var.name] = var.value
    if command.shell:
        if not command.value:
            raise NestedError(400, "a shell command needs 'value'")
        program, argv = "/bin/sh", ["sh", "-c", command.value]
    else:
        program = command.value or command.arguments[0]
        argv = list(command.arguments) or [program]
    tty, window = False, None
    if container is not None:
        tty, window = _parse_container(container)
    return Command(program, argv, env, command.user, tty, window)


def _parse_container(container: dict[str, Any]) -> tuple[bool, tuple[int, int] | None]:
    if not isinstance(container, dict):
        raise NestedError(400, "'container' must be an object")
    kind = container.get("type", "MESOS")
    if kind != "MESOS":
        raise NestedError(400, f"nested containers of type {str(kind)[:20]} are not supported")
    unsupported = sorted(set(container) - {"type", "tty_info", "mesos"})
    mesos = container.get("mesos")
    if unsupported or (mesos is not None and mesos != {}):
        what = ", ".join(unsupported) or "mesos.image"
        raise NestedError(400, f"not supported in a nested container: {what}")
    tty_info = container.get("tty_info")
    if tty_info is None:
        return False, None
    if not isinstance(tty_info, dict):
        raise NestedError(400, "'tty_info' must be an object")
    size = tty_info.get("window_size")
    if size is None:
        return True, None
    return True, window_size(size)


def window_size(size: Any) -> tuple[int, int]:
    """(rows, columns) of a TTYInfo.WindowSize object; NestedError when not sensible."""
    try:
        rows, columns = int(size["rows"]), int(size["columns"])
    except (TypeError, KeyError, ValueError):
        raise NestedError(400, "window_size needs integer 'rows' and 'columns'") from None
    # 0x0 is valid: Mesos' CLI sends it first to make the remote side redraw.
    if not (0 <= rows <= 0xFFFF and 0 <= columns <= 0xFFFF):
        raise NestedError(400, f"window size {rows}x{columns} out of range")
    return rows, columns


def check_id(value: str) -> None:
    if not _ID.fullmatch(value) or value in (".", ".."):
        raise NestedError(400, f"invalid container id '{value[:80]}'")


class NestedContainers:
    """The agent's nested containers (see the module docstring)."""

    def __init__(self, server: AgentShell) -> None:
        self.server = server
        self.containers: dict[str, NestedContainer] = {}
        self._watchdog: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lookups -----------------------------------------------------------------------------

    def get(self, container_id: str, parent_id: str | None = None) -> NestedContainer:
        container = self.containers.get(container_id)
        if container is None or (parent_id is not None and container.parent_id != parent_id):
            raise NestedError(404, f"Container {container_id[:80]} not found")
        return container

    def parent_executor(self, parent_id: str) -> Executor:
        """The live executor of top-level container ``parent_id`` (NestedError otherwise)."""
        if parent_id in self.containers:
            raise NestedError(
                400, "nested containers of nested containers are not supported (one level only)"
            )
        machine = self.server.machine
        containerizer = self.server.containerizer
        executor = None
        if machine is not None:
            executor = next(
                (ex for ex in machine.executors() if ex.container_id == parent_id), None
            )
        running = containerizer is not None and parent_id in containerizer.containers
        if executor is None or not running or executor.pid is None:
            raise NestedError(404, f"Container {parent_id[:80]} not found")
        if _container_type(executor) != "MESOS":
            raise NestedError(
                400,
                f"container {parent_id[:80]} is a {_container_type(executor)} container: "
                "nested containers run in the mesos containerizer's containers only",
            )
        return executor

    # -- launch ------------------------------------------------------------------------------

    async def launch(
        self, container_id: str, parent_id: str, command: Command, *, session: bool
    ) -> tuple[NestedContainer, bool]:
        """Starts the command; (container, False) when one of that id exists already."""
        check_id(container_id)
        check_id(parent_id)
        existing = self.containers.get(container_id)
        if existing is not None:
            if existing.parent_id != parent_id:
                raise NestedError(409, f"container {container_id[:80]} has another parent")
            return existing, False
        executor = self.parent_executor(parent_id)
        assert executor.pid is not None
        if sum(c.running for c in self.containers.values()) >= MAX_RUNNING:
            raise NestedError(429, f"{MAX_RUNNING} nested containers run already on this agent")
        target = await asyncio.to_thread(task_process, executor.pid)
        sandbox = os.path.join(executor.sandbox, "containers", container_id)
        container = NestedContainer(container_id, parent_id, sandbox, command.tty, session)
        self.containers[container_id] = container
        try:
            await self._start(container, executor, target, command)
        except NestedError:
            del self.containers[container_id]
            raise
        self._forget_old()
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch_parents())
        return container, True

    async def _start(
        self, container: NestedContainer, executor: Executor, target: int, command: Command
    ) -> None:
        try:
            spec = await asyncio.to_thread(
                _spec, target, executor.sandbox, container, command, self._cgroup_procs(executor)
            )
        except OSError as e:  # the task's processes went away meanwhile, a full disk ...
            raise NestedError(500, f"cannot prepare the nested container: {e}") from None
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        spec["status_fd"] = status_w
        code = (
            f"import sys;sys.path.insert(0,{_ROOT!r});"
            "from butte.agent.containerizer.nested_exec import main;sys.exit(main())"
        )
        argv = [sys.executable, "-I", "-S", "-c", code, json.dumps(spec)]
        slave = None
        try:
            if command.tty:
                container.master_fd, slave = os.openpty()
                os.set_blocking(container.master_fd, False)
                if command.window:
                    resize(container.master_fd, *command.window)
                stdio: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": slave}
            else:
                stdio = {
                    "stdin": asyncio.subprocess.PIPE,
                    "stdout": asyncio.subprocess.PIPE,
                    "stderr": asyncio.subprocess.PIPE,
                }
            process = await asyncio.create_subprocess_exec(
                *argv, pass_fds=(status_w,), close_fds=True, **stdio
            )
        except OSError as e:
            os.close(status_r)
            self._close_master(container)
            raise NestedError(500, f"cannot start the nested container: {e}") from None
        finally:
            os.close(status_w)
            if slave is not None:
                os.close(slave)
        container.process = process
        container.stdin = process.stdin
        report = await asyncio.to_thread(_read_all, status_r)
        try:
            answer = json.loads(report) if report.strip() else {"error": "launcher died"}
        except ValueError:
            answer = {"error": f"launcher said {report[:200]!r}"}
        if "pid" not in answer:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self._close_master(container)
            raise NestedError(400, f"cannot launch the nested container: {answer['error']}")
        container.pid = int(answer["pid"])
        self._spawn(self._pump_and_wait(container))

    def _cgroup_procs(self, executor: Executor) -> list[str]:
        containerizer = self.server.containerizer
        isolation = containerizer.isolation if containerizer is not None else None
        if isolation is None or isolation.cgroups is None:
            return []
        dirs = isolation.cgroups.container_dirs(isolation.controllers, executor.container_id)
        return [os.path.join(d, "cgroup.procs") for d in dirs]

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- output, exit ------------------------------------------------------------------------

    async def _pump_and_wait(self, container: NestedContainer) -> None:
        process = container.process
        assert process is not None
        os.makedirs(container.sandbox, exist_ok=True)
        pumps = []
        if container.master_fd is not None:
            pumps.append(self._pump(container, "STDOUT", _pty_reader(container.master_fd)))
        else:
            assert process.stdout is not None and process.stderr is not None
            pumps.append(self._pump(container, "STDOUT", process.stdout.read))
            pumps.append(self._pump(container, "STDERR", process.stderr.read))
        pumping = asyncio.gather(*pumps)
        returncode = await process.wait()
        if returncode == 255 and container.sigkilled:
            # asyncio's watcher says 255 for a child something else reaped first (an old
            # Popen polling a pid the launcher reused): after our SIGKILL, that ended it.
            returncode = -signal.SIGKILL
        container.wait_status = returncode << 8 if returncode >= 0 else -returncode
        while not pumping.done():
            try:
                await asyncio.wait_for(asyncio.shield(pumping), OUTPUT_DRAIN)
            except TimeoutError:
                # Still handing output to slow readers: wait on. Else the pipes are held
                # open by something the command left behind: stop reading them.
                if not container.delivering:
                    break
        if not pumping.done():
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        self._close_master(container)
        if container.stdin is not None:
            container.stdin.close()
        container.output_done.set()
        for queue in list(container.readers):
            # A reader whose queue is full sees output_done once it has emptied it.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        container.exited.set()

    async def _pump(
        self, container: NestedContainer, kind: str, read: Callable[[int], Any]
    ) -> None:
        path = os.path.join(container.sandbox, kind.lower())
        with open(path, "ab", buffering=0) as log_file:
            while True:
                try:
                    data = await read(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                with contextlib.suppress(OSError):
                    log_file.write(data)
                container.delivering += 1
                try:
                    for queue in list(container.readers):
                        await queue.put((kind, data))
                finally:
                    container.delivering -= 1

    def _close_master(self, container: NestedContainer) -> None:
        if container.master_fd is not None:
            with contextlib.suppress(OSError):
                os.close(container.master_fd)
            container.master_fd = None

    def attach_output(self, container: NestedContainer) -> asyncio.Queue[Output]:
        """A new reader of the container's output from now on (None at its end)."""
        queue: asyncio.Queue[Output] = asyncio.Queue(maxsize=64)
        if container.output_done.is_set():
            queue.put_nowait(None)
        else:
            container.readers.append(queue)
        return queue

    def detach_output(self, container: NestedContainer, queue: asyncio.Queue[Output]) -> None:
        with contextlib.suppress(ValueError):
            container.readers.remove(queue)
        # Frees an output pump blocked on this (full) queue.
        while not queue.empty():
            queue.get_nowait()

    # -- input -------------------------------------------------------------------------------

    async def write_input(self, container: NestedContainer, data: bytes) -> None:
        """Writes to the command's stdin (an empty ``data`` closes it: end of input; on a
        pty it is the terminal's end-of-file character). End of input to a command that has
        ended or closed its input already is no error: the client's EOF can race its exit."""
        closed = container.stdin is not None and container.stdin.is_closing()
        if not data and (closed or not container.running):
            return
        if not container.running:
            raise NestedError(409, f"container {container.container_id[:80]} has ended")
        if container.master_fd is not None:
            await _write_fd(container.master_fd, data or b"\x04")
            return
        stdin = container.stdin
        if stdin is None or stdin.is_closing():
            raise NestedError(409, "the container's input is closed")
        try:
            if data:
                stdin.write(data)
                await stdin.drain()
            else:
                stdin.close()
        except (ConnectionError, OSError) as e:
            raise NestedError(409, f"the container's input is closed: {e}") from None

    def resize(self, container: NestedContainer, rows: int, columns: int) -> None:
        if container.master_fd is None:
            raise NestedError(400, "the container has no TTY: window sizes do not apply")
        resize(container.master_fd, rows, columns)

    # -- kill, wait, remove ------------------------------------------------------------------

    def kill(self, container: NestedContainer, number: int = signal.SIGKILL) -> None:
        """Signals every process of the command's session (and its launcher)."""
        if not container.running:
            return
        container.sigkilled = container.sigkilled or number == signal.SIGKILL
        if container.pid is not None:
            signal_sessions([container.pid], number)
        if container.process is not None and number == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                container.process.kill()

    async def wait(self, container: NestedContainer) -> dict[str, Any]:
        await container.exited.wait()
        return container.wait_result()

    async def remove(self, container: NestedContainer) -> None:
        if container.running:
            raise NestedError(409, f"container {container.container_id[:80]} is still running")
        self.containers.pop(container.container_id, None)
        await asyncio.to_thread(shutil.rmtree, container.sandbox, True)

    def children(self, parent_id: str) -> list[NestedContainer]:
        return [c for c in self.containers.values() if c.parent_id == parent_id]

    def _forget_old(self) -> None:
        finished = [c for c in self.containers.values() if not c.running]
        for container in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self.containers[container.container_id]

    async def _watch_parents(self) -> None:
        """Kills nested containers whose parent is gone (a task that ended without pid
        namespace or cgroups leaves them running otherwise)."""
        while any(c.running for c in self.containers.values()):
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
            containerizer = self.server.containerizer
            alive = set(containerizer.containers) if containerizer is not None else set()
            for container in list(self.containers.values()):
                if container.running and container.parent_id not in alive:
                    container.message = "the parent container ended"
                    self.kill(container)


# -- process helpers ---------------------------------------------------------------------------


def _container_type(executor: Executor) -> str:
    """The ContainerInfo type of the executor's container (of its task for a command
    executor); MESOS when none is given."""
    for info in [executor.info.container, *(t.info.container for t in executor.tasks.values())]:
        if isinstance(info, dict) and info.get("type"):
            return str(info["type"])[:20]
    return "MESOS"


def _ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _nspid(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[1:]
    except OSError:
        pass
    return []


def task_process(executor_pid: int) -> int:
    """The process whose namespaces, credentials and environment a nested command takes:
    the task's pid 1 where the task has a pid namespace, else a process of the container's
    session in a mount namespace of its own, else the executor's first child, else the
    executor itself."""
    levels = _nspid(executor_pid)
    if len(levels) > 1 and levels[-1] == "1":
        # The container's process is itself a task's pid 1 (a command launcher task, which
        # has no executor or holder process above it).
        return executor_pid
    members = sorted(set(session_members([executor_pid]).get(executor_pid, [])) - {executor_pid})
    own_pid_ns, own_mnt_ns = _ns_inode(executor_pid, "pid"), _ns_inode(executor_pid, "mnt")
    for pid in members:
        if _ns_inode(pid, "pid") not in (None, own_pid_ns) and _nspid(pid)[-1:] == ["1"]:
            return pid
    for pid in members:
        if _ns_inode(pid, "mnt") not in (None, own_mnt_ns):
            return pid
    # No namespaces of its own: the executor's first child (its task) has the task's
    # environment and user.
    for pid in members:
        if _ppid(pid) == executor_pid:
            return pid
    return executor_pid


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _credentials(pid: int) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) of a process."""
    uid = gid = 0
    groups: list[int] = []
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
            elif line.startswith("Groups:"):
                groups = [int(g) for g in line.split()[1:]]
    return uid, gid, groups


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _spec(
    target: int,
    parent_sandbox: str,
    container: NestedContainer,
    command: Command,
    cgroup_procs: list[str],
) -> dict[str, Any]:
    """The launcher's SPEC_JSON (`butte.agent.containerizer.nested_exec`)."""
    if _ns_inode(target, "mnt") is None:
        raise NestedError(404, f"the processes of container {container.parent_id[:80]} are gone")
    env = _environ(target)
    inside = env.get("MESOS_SANDBOX") or parent_sandbox  # the sandbox as the task sees it
    own_sandbox = os.path.join(inside, "containers", container.container_id)
    uid, gid, groups = _credentials(target)
    if command.user is not None:
        try:
            entry = pwd.getpwnam(command.user)
        except KeyError:
            raise NestedError(400, f"user '{command.user[:60]}' does not exist") from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise NestedError(400, "the agent runs as another user: it cannot switch users")
        uid, gid, groups = entry.pw_uid, entry.pw_gid, os.getgrouplist(command.user, entry.pw_gid)
        env.update(USER=command.user, LOGNAME=command.user, HOME=entry.pw_dir)
    os.makedirs(container.sandbox, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(container.sandbox, uid, gid)
    if not container.session:
        env["MESOS_SANDBOX"] = own_sandbox
    env.update(command.env)
    if command.tty:
        env.setdefault("TERM", "xterm")
    namespaces = [k for k in _NAMESPACES if _ns_inode(target, k) != _ns_inode("self", k)]
    switch = os.geteuid() == 0 and (uid, gid) != (os.geteuid(), os.getegid())
    return {
        "program": command.program,
        "argv": command.argv,
        "env": env,
        # A session (a debug shell) starts in the task's sandbox, others in their own.
        "cwd": inside if container.session else own_sandbox,
        "target": target,
        "namespaces": namespaces,
        "cgroup_procs": cgroup_procs,
        "uid": uid if switch else None,
        "gid": gid if switch else None,
        "groups": groups if switch else None,
        "tty": command.tty,
    }


def _read_all(fd: int) -> str:
    try:
        out = b""
        while chunk := os.read(fd, 4096):
            out += chunk
        return out.decode(errors="replace")
    finally:
        os.close(fd)


def resize(fd: int, rows: int, columns: int) -> None:
    """TIOCSWINSZ on a pty master: the command's terminal gets the size (and SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _pty_reader(fd: int) -> Callable[[int], Any]:
    """An async ``read(n)`` of a non-blocking pty master: b"" once the command's side is
    closed (EIO)."""
    loop = asyncio.get_running_loop()

    async def read(size: int) -> bytes:
        while True:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""
                raise
            ready = loop.create_future()
            loop.add_reader(fd, _set_once, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    return read


def _set_once(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _write_fd(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to a non-blocking fd, waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        except OSError as e:
            raise NestedError(409, f"the container's terminal is closed: {e}") from None
        view = view[written:]
