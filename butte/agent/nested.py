"""Nested containers: commands started inside a running task's container (Mesos'
LAUNCH_NESTED_CONTAINER and its session, attach, wait, kill and remove calls; the HTTP side
is `butte.agent.nested_api`, the process side `butte.agent.containerizer.nested_exec`).

A nested container is one command that enters its parent's namespaces (those of the task
process: its pid, mount, network, IPC and UTS namespaces where they differ from the
agent's), joins the parent's cgroups and runs with the task's credentials, unless the call
names a user. Its stdio are pipes (or a pty with ``tty_info``) held by the agent, which
copies the output to ``<parent sandbox>/containers/<id>/stdout|stderr`` and to every
attached reader, and writes attached input to its stdin. The launcher keeps a copy of the
input end too, for an agent that restarts: end of input on a pipe closes both copies.
Each command runs under a launcher process of its own
(`butte.agent.containerizer.nested_exec`), which leads the command's session: signals go
to that session's processes.

Checkpoint and recovery, after Mesos' containerizer (``recover`` in
src/slave/containerizer/mesos/containerizer.cpp, the runtime directory of
src/slave/containerizer/mesos/paths.hpp): every nested container, of any framework, is
checkpointed under its parent's id in ``meta/containers`` (`butte.agent.paths`): its
``nested.info`` (`NestedRecord`) is durable before the launcher may start the command, the
launcher writes the command's wait status (``status``) when it ends, and the agent its
answer to WAIT (``termination``) before it gives that answer. An agent that restarts
(`NestedContainers.recover`, once its executors are recovered) finds each one's launcher by
pid, start time and boot id and decides by `recovery_action`:

- running under a recovered parent: adopted. KILL signals it, WAIT and GET_CONTAINERS see
  it, its end comes from its launcher's ``status`` (no status: SIGKILL, as Mesos reads a
  missing status file); its output, which its launcher copied to the sandbox files once the
  agent was gone, is followed there by ATTACH_CONTAINER_OUTPUT. Its input end (stdin pipe
  or pty master), which its launcher kept, is fetched back from the launcher's socket
  (`launcher_request`): ATTACH_CONTAINER_INPUT writes to it and sizes its terminal as
  before; one whose launcher cannot hand it back takes no input (ATTACH_CONTAINER_INPUT:
  409).
- a session's (LAUNCH_NESTED_CONTAINER_SESSION, Mesos' DEBUG class, destroyed on
  recovery since its connection is gone): killed, and WAIT reports SIGKILL with a message.
- ended while the agent was down, or before: kept as ended, WAIT answers as before.
- of a parent that was not recovered: killed and forgotten, with the parent's checkpoint.

A finished container is kept, with its wait status, until it is removed (or, beyond
`MAX_FINISHED`, the oldest finished ones are forgotten); its sandbox stays until REMOVE or
the parent's sandbox is collected, its checkpoint until REMOVE or its parent's end.

Standalone containers (LAUNCH_CONTAINER without a parent; docs/protocol.md "Standalone
containers") are in the same registry, with ``standalone`` set and no parent (""): the
same launcher runs the command, entering no namespaces (the agent's), joining the cgroups
the agent's isolators made for it (`NestedContainers._isolate`: limited by its resources;
an agent whose isolators give containers namespaces of their own refuses them), in its
sandbox ``<work_dir>/containers/<id>``. It is checkpointed in ``meta/standalone/<id>``
like a nested container; a restarted agent's shell keeps its cgroups
(`recovered_standalone_launches`) and `NestedContainers.recover` adopts it, or keeps its
end if it ended meanwhile. No parent watches it: it runs until it ends or is killed, and
is kept once ended until REMOVE_CONTAINER deletes its sandbox and checkpoint.
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
import select
import shutil
import signal
import socket
import struct
import sys
import termios
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from butte.agent import paths
from butte.agent.containerizer.isolators import LaunchRefused, Limitation
from butte.agent.containerizer.nested_exec import IO_SOCKET
from butte.agent.containerizer.posix import session_members
from butte.agent.effects import LaunchContainer

if TYPE_CHECKING:
    from butte.agent.containerizer.isolation import Isolation
    from butte.agent.containerizer.isolators import ContainerSetup
    from butte.agent.records import Executor
    from butte.agent.shell_api import AgentShell

log = logging.getLogger("butte.agent")

MAX_FINISHED = 1000
# Running nested containers per agent: each holds a launcher process and pipes.
MAX_RUNNING = 256
PARENT_CHECK_INTERVAL = 1.0
# How long output may go on after the command ended (a background child holding its
# stdout) before the streams are closed anyway; output already waiting to be read extends
# that up to OUTPUT_DRAIN_MAX (an agent starved of CPU past OUTPUT_DRAIN must not cut off
# the last lines the command wrote before it ended).
OUTPUT_DRAIN = 1.0
OUTPUT_DRAIN_MAX = 10.0
# How often the sandbox files of a recovered container are looked at for new output.
FOLLOW_INTERVAL = 0.25
# How long recovery waits for the launchers of the containers it kills to be gone.
RECOVERY_KILL_WAIT = 5.0
CHUNK = 64 * 1024
# How long a request to a launcher's input socket may take (it answers at once; recovery
# asks each running container's launcher in turn).
LAUNCHER_TIMEOUT = 2.0
# Container ids as Mesos accepts them: no path separators, not '.' or '..'.
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# A standalone container's PATH (it inherits no environment, as in Mesos).
STANDALONE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The messages of ends the agent brought about (WAIT's ``message``).
PARENT_ENDED = "the parent container ended"
CLIENT_GONE = "the session's client went away"
SESSION_LOST = "the agent restarted: a session's container ends with its connection"
NOT_RECORDED = "it ended while the agent was down and its exit status was not recorded"

# What recovery does with a checkpointed nested container (`recovery_action`).
ADOPT = "adopt"
DESTROY = "destroy"
ORPHAN = "orphan"
ENDED = "ended"
FORGET = "forget"

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
    process: asyncio.subprocess.Process | None = None  # its launcher (not after a restart)
    pid: int | None = None  # the command's pid (the agent's view)
    launcher_pid: int | None = None  # leads the command's session
    master_fd: int | None = None  # pty master (tty)
    stdin_fd: int | None = None  # pipe (no tty); None once closed
    outputs: list[tuple[str, int]] = field(default_factory=list)  # ("STDOUT", fd), ...
    readers: list[asyncio.Queue[Output]] = field(default_factory=list)
    output_done: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    wait_status: int | None = None
    sigkilled: bool = False  # the agent sent it SIGKILL (KILL, its session or parent ended)
    input_attached: bool = False
    delivering: int = 0  # output pumps waiting for a reader to take a chunk
    message: str | None = None
    checkpoint: str | None = None  # its directory under meta/containers
    recovered: bool = False  # adopted from a previous agent run: output from the files
    input_lost: bool = False  # recovered, but its launcher did not hand its input back
    standalone: bool = False  # LAUNCH_CONTAINER without a parent (``parent_id`` is "")
    # A standalone container's scalar resources, enforced by the agent's isolators.
    resources: tuple[tuple[str, float], ...] = ()
    isolated: bool = False  # it has cgroups of its own (the agent's isolation)
    limitation: Limitation | None = None  # a limit it went over (it was killed for it)

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
        if self.limitation is not None:
            # As Mesos' containerizer ends a container an isolator limited.
            out.update(
                state="TASK_FAILED",
                reason=self.limitation.reason,
                message=self.limitation.message,
            )
        return out


# -- the checkpoint (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class NestedRecord:
    """A nested container's ``nested.info``: what a restarted agent needs to find it again.
    ``launcher_start`` (the launcher's start time in clock ticks since boot, /proc/<pid>/stat)
    and ``boot_id`` tell its launcher from a later process that got the same pid."""

    container_id: str
    parent_id: str
    sandbox: str
    session: bool
    tty: bool
    launcher_pid: int
    launcher_start: int
    boot_id: str | None
    # A standalone container's (``parent_id`` ""): its resources and whether it has cgroups.
    resources: tuple[tuple[str, float], ...] = ()
    isolated: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "container_id": self.container_id,
                "parent_id": self.parent_id,
                "sandbox": self.sandbox,
                "session": self.session,
                "tty": self.tty,
                "launcher_pid": self.launcher_pid,
                "launcher_start": self.launcher_start,
                "boot_id": self.boot_id,
                "resources": [list(r) for r in self.resources],
                "isolated": self.isolated,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NestedRecord | None:
        """The record ``data`` holds; None if it is not one (torn, or not ours)."""
        try:
            raw = json.loads(data)
            record = cls(
                container_id=str(raw["container_id"]),
                parent_id=str(raw["parent_id"]),
                sandbox=str(raw["sandbox"]),
                session=bool(raw["session"]),
                tty=bool(raw["tty"]),
                launcher_pid=int(raw["launcher_pid"]),
                launcher_start=int(raw["launcher_start"]),
                boot_id=None if raw.get("boot_id") is None else str(raw["boot_id"]),
                resources=tuple((str(n), float(v)) for n, v in raw.get("resources") or []),
                isolated=bool(raw.get("isolated", False)),
            )
        except (ValueError, TypeError, KeyError):
            return None
        # A standalone container has no parent ("").
        parent_ok = record.parent_id == "" or _ID.fullmatch(record.parent_id)
        if not (_ID.fullmatch(record.container_id) and parent_ok):
            return None
        return record if record.launcher_pid > 0 else None


def recovery_action(
    *, readable: bool, launcher_alive: bool, session: bool, parent_recovered: bool
) -> str:
    """What a restarted agent does with a checkpointed nested container (module docstring):
    `ADOPT` it, `DESTROY` it (a session's: killed, kept as ended), kill an `ORPHAN` (its
    parent was not recovered) and forget it, keep it as `ENDED`, or `FORGET` it. A record
    that cannot be read was never complete, so its command never started (the launcher
    waits for it to be durable)."""
    if not readable:
        return FORGET
    if launcher_alive:
        if not parent_recovered:
            return ORPHAN
        return DESTROY if session else ADOPT
    return ENDED if parent_recovered else FORGET


def recovered_end(termination: bytes | None, status: bytes | None) -> tuple[int, str | None]:
    """(wait status, message) of a container that ended: the agent's own ``termination``
    if it wrote one, else the launcher's ``status``, else SIGKILL, as Mesos' containerizer
    reads a missing status file (the launcher was killed before it could write it)."""
    if termination is not None:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            raw = json.loads(termination)
            message = raw.get("message")
            return int(raw["exit_status"]), None if message is None else str(message)
    if status is not None:
        with contextlib.suppress(ValueError):
            return int(status.strip()), None
    return int(signal.SIGKILL), NOT_RECORDED


def termination_json(container: NestedContainer) -> bytes:
    """The ``termination`` file of an ended container: its WAIT answer."""
    return json.dumps(container.wait_result(), sort_keys=True).encode()


def parse_command(command: Any, container: dict[str, Any] | None) -> Command:
    """A launch call's CommandInfo and ContainerInfo as a `Command`; NestedError (400) for
    what butte does not do in a nested or standalone container."""
    if command is None or (command.value is None and not command.arguments):
        raise NestedError(400, "Expecting 'command' with a 'value'")
    if command.uris:
        raise NestedError(400, "URIs are not fetched for nested or standalone containers")
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
        raise NestedError(
            400,
            f"containers of type {str(kind)[:20]} are not supported here: nested and "
            "standalone containers are MESOS ones",
        )
    unsupported = sorted(set(container) - {"type", "tty_info", "mesos"})
    mesos = container.get("mesos")
    if unsupported or (mesos is not None and mesos != {}):
        what = ", ".join(unsupported) or "mesos.image"
        raise NestedError(400, f"not supported in a nested or standalone container: {what}")
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
        raw = (size["rows"], size["columns"])
    except (TypeError, KeyError):
        raise NestedError(400, "window_size needs integer 'rows' and 'columns'") from None
    # Integers as protobuf's JSON mapping gives them (a number, a whole float, a string of
    # digits), as the typed decoding of an input stream takes them; no booleans, fractions.
    try:
        if any(isinstance(v, bool) or not float(v).is_integer() for v in raw):
            raise ValueError
        rows, columns = int(float(raw[0])), int(float(raw[1]))
    except (TypeError, ValueError, OverflowError):
        raise NestedError(400, "window_size needs integer 'rows' and 'columns'") from None
    # 0x0 is valid: Mesos' CLI sends it first to make the remote side redraw.
    if not (0 <= rows <= 0xFFFF and 0 <= columns <= 0xFFFF):
        raise NestedError(400, f"window size {rows}x{columns} out of range")
    return rows, columns


def check_id(value: str) -> None:
    if not _ID.fullmatch(value) or value in (".", ".."):
        raise NestedError(400, f"invalid container id '{value[:80]}'")


@dataclass
class Checkpointed:
    """One nested container's checkpoint as recovery reads it (`read_checkpoints`)."""

    parent_id: str
    container_id: str
    directory: str
    record: NestedRecord | None
    status: bytes | None
    termination: bytes | None


def _recovered(item: Checkpointed, record: NestedRecord, **state: Any) -> NestedContainer:
    """The registry's entry for a container a previous run of the agent checkpointed."""
    return NestedContainer(
        record.container_id,
        record.parent_id,
        record.sandbox,
        record.tty,
        record.session,
        launcher_pid=record.launcher_pid,
        checkpoint=item.directory,
        recovered=True,
        standalone=record.parent_id == "",
        resources=record.resources,
        isolated=record.isolated,
        **state,
    )


def read_checkpoints(work_dir: str) -> tuple[list[Checkpointed], list[str]]:
    """Every nested container checkpointed under ``work_dir``, and the parents' directories
    that hold none (left to remove)."""
    found: list[Checkpointed] = []
    empty: list[str] = []
    root = paths.meta_containers_dir(work_dir)
    for parent_id in _listdir(root):
        parent_dir = paths.nested_parent_dir(work_dir, parent_id)
        names = [n for n in _listdir(os.path.join(parent_dir, "containers")) if _ID.fullmatch(n)]
        if not names:
            empty.append(parent_dir)
        for name in names:
            directory = paths.nested_dir(work_dir, parent_id, name)
            info = _read_bytes(paths.nested_info_path(directory))
            record = NestedRecord.from_json(info) if info is not None else None
            if record is not None and (record.parent_id, record.container_id) != (parent_id, name):
                record = None  # not where its own ids say: not trusted
            found.append(
                Checkpointed(
                    parent_id,
                    name,
                    directory,
                    record,
                    _read_bytes(paths.nested_status_path(directory)),
                    _read_bytes(paths.nested_termination_path(directory)),
                )
            )
    return found, empty


def read_standalone_checkpoints(work_dir: str) -> list[Checkpointed]:
    """Every standalone container checkpointed under ``work_dir`` (parent id "")."""
    found = []
    root = paths.meta_standalone_dir(work_dir)
    for name in _listdir(root):
        if not _ID.fullmatch(name):
            continue
        directory = paths.standalone_dir(work_dir, name)
        info = _read_bytes(paths.nested_info_path(directory))
        record = NestedRecord.from_json(info) if info is not None else None
        if record is not None and (record.parent_id, record.container_id) != ("", name):
            record = None  # not where its own ids say: not trusted
        found.append(
            Checkpointed(
                "",
                name,
                directory,
                record,
                _read_bytes(paths.nested_status_path(directory)),
                _read_bytes(paths.nested_termination_path(directory)),
            )
        )
    return found


def standalone_launch(
    container_id: str, sandbox: str, resources: Any, user: str | None = None
) -> LaunchContainer:
    """What the agent's isolators get of a standalone container: its id, sandbox, scalar
    resources and the user its command names (no framework, no executor)."""
    return LaunchContainer(
        container_id, "", "", sandbox, (), {}, resources=tuple(resources), user=user
    )


def recovered_standalone_launches(work_dir: str) -> dict[str, LaunchContainer]:
    """The isolated standalone containers whose launchers still run, as the agent's
    isolation recovery takes them: their cgroups are kept (not destroyed as orphans) and
    watched again. Called by the agent shell's recovery before it destroys orphan groups."""
    boot = _boot_id()
    out = {}
    for item in read_standalone_checkpoints(work_dir):
        record = item.record
        if record is None or not record.isolated or record.boot_id != boot:
            continue
        if _start_time(record.launcher_pid) == record.launcher_start:
            out[record.container_id] = standalone_launch(
                record.container_id, record.sandbox, record.resources
            )
    return out


# -- the registry ------------------------------------------------------------------------------


class NestedContainers:
    """The agent's nested containers (see the module docstring); one per agent shell
    (`of`), shared by the operator API and the shell's recovery."""

    _of: weakref.WeakKeyDictionary[Any, NestedContainers] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, server: AgentShell) -> NestedContainers:
        """The registry of ``server``'s nested containers (made on first use)."""
        registry = cls._of.get(server)
        if registry is None:
            registry = cls._of[server] = cls(server)
        return registry

    def __init__(self, server: AgentShell) -> None:
        self.server = server
        self.containers: dict[str, NestedContainer] = {}
        self._watchdog: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        # Parents with a checkpoint directory, removed once they have ended.
        self._parents: set[str] = set()
        self._recovered = asyncio.Event()
        self._recovered.set()  # until `recover` runs: nothing to wait for

    async def ready(self) -> None:
        """Returns once the nested containers of a previous run are recovered: calls about
        them wait for that rather than answer 404 during the agent's start."""
        # The shell's own recovery comes first (`recover` needs its containers).
        while getattr(self.server, "recovering", False):
            await asyncio.sleep(0.05)
        await self._recovered.wait()

    # -- lookups -----------------------------------------------------------------------------

    def get(self, container_id: str, parent_id: str | None = None) -> NestedContainer:
        container = self.containers.get(container_id)
        if container is None or (parent_id is not None and container.parent_id != parent_id):
            raise NestedError(404, f"Container {container_id[:80]} not found")
        return container

    def parent_executor(self, parent_id: str) -> Executor:
        """The live executor of top-level container ``parent_id`` (NestedError otherwise)."""
        known = self.containers.get(parent_id)
        if known is not None and known.standalone:
            raise NestedError(
                400,
                f"container {parent_id[:80]} is a standalone container: nested containers "
                "run in tasks' containers only",
            )
        if known is not None:
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

    def _checkpoint_dir(self, parent_id: str, container_id: str) -> str:
        return paths.nested_dir(self.server.options.work_dir, parent_id, container_id)

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
                what = "is a standalone container" if existing.standalone else "has another parent"
                raise NestedError(409, f"container {container_id[:80]} {what}")
            return existing, False
        executor = self.parent_executor(parent_id)
        assert executor.pid is not None
        if sum(c.running for c in self.containers.values()) >= MAX_RUNNING:
            raise NestedError(429, f"{MAX_RUNNING} nested containers run already on this agent")
        target = await asyncio.to_thread(task_process, executor.pid)
        sandbox = paths.nested_sandbox(executor.sandbox, container_id)
        container = NestedContainer(container_id, parent_id, sandbox, command.tty, session)
        container.checkpoint = self._checkpoint_dir(parent_id, container_id)
        self.containers[container_id] = container
        # Its checkpoint directory goes with the parent's, even if this launch fails.
        self._parents.add(parent_id)
        cgroup_procs = self._cgroup_procs(executor)
        try:
            await self._start(
                container,
                command,
                lambda: _spec(target, executor.sandbox, container, command, cgroup_procs),
            )
        except NestedError:
            del self.containers[container_id]
            raise
        finally:
            self._watch()
        self._forget_old()
        return container, True

    def _isolation(self) -> Isolation | None:
        containerizer = self.server.containerizer
        return containerizer.isolation if containerizer is not None else None

    async def launch_standalone(
        self, container_id: str, command: Command, resources: tuple[tuple[str, float], ...]
    ) -> tuple[NestedContainer | None, bool]:
        """Starts a standalone container (module docstring "Standalone containers"):
        (container, False) when one of that id runs already, (None, False) when a task's
        container has that id."""
        check_id(container_id)
        existing = self.containers.get(container_id)
        if existing is not None:
            if not existing.standalone:
                raise NestedError(409, f"container id {container_id[:80]} is a nested container's")
            if not existing.running:
                raise NestedError(
                    409,
                    f"standalone container {container_id[:80]} has ended: REMOVE_CONTAINER it "
                    "before launching that id again",
                )
            return existing, False
        containerizer = self.server.containerizer
        if containerizer is not None and container_id in containerizer.containers:
            # Mesos' containerizer answers ALREADY_LAUNCHED for any container it knows.
            return None, False
        if sum(c.running for c in self.containers.values()) >= MAX_RUNNING:
            raise NestedError(429, f"{MAX_RUNNING} containers run already on this agent")
        work_dir = self.server.options.work_dir
        sandbox = paths.standalone_sandbox(work_dir, container_id)
        container = NestedContainer(container_id, "", sandbox, command.tty, False)
        container.standalone = True
        container.resources = resources
        container.checkpoint = paths.standalone_dir(work_dir, container_id)
        setup = self._isolate(container, command.user)
        self.containers[container_id] = container
        try:
            await self._start(
                container, command, lambda: _standalone_spec(container, command, setup)
            )
        except NestedError:
            del self.containers[container_id]
            self._release(container)
            # Nothing known of it is left to REMOVE_CONTAINER: its sandbox goes now.
            await asyncio.to_thread(shutil.rmtree, sandbox, True)
            raise
        isolation = self._isolation()
        if container.isolated and isolation is not None:
            isolation.started(container_id, self._limited)
        self._forget_old()
        return container, True

    def _isolate(self, container: NestedContainer, user: str | None) -> ContainerSetup | None:
        """The agent's isolators prepare the standalone container (its cgroups and their
        limits); NestedError (400) for what they refuse, and for namespaces of its own,
        which butte does not give a standalone container."""
        isolation = self._isolation()
        if isolation is None:
            return None
        spec = standalone_launch(
            container.container_id, container.sandbox, container.resources, user
        )
        try:
            setup = isolation.prepare(spec)
        except LaunchRefused as e:
            raise NestedError(400, f"cannot isolate the standalone container: {e}") from None
        if setup.task_namespaces:
            isolation.cleanup(container.container_id)
            isolation.release(container.container_id)
            raise NestedError(
                400,
                "standalone containers run in the agent's namespaces, and this agent's "
                f"isolators ({', '.join(isolation.names)}) give containers namespaces of "
                f"their own ({', '.join(setup.task_namespaces)}): not supported",
            )
        container.isolated = True  # `_release` undoes what prepare did
        return setup

    def _limited(self, container_id: str, limitation: Limitation) -> None:
        """An isolator saw a standalone container go over a limit: it is killed, and WAIT
        reports the limitation."""
        container = self.containers.get(container_id)
        if container is None or not container.running or container.limitation is not None:
            return
        container.limitation = limitation
        self._spawn(asyncio.to_thread(self.kill, container, signal.SIGKILL))

    def _release(self, container: NestedContainer) -> None:
        """A standalone container's isolation ends (its limits read first: see `_finish`)."""
        isolation = self._isolation()
        if container.isolated and isolation is not None:
            container.isolated = False
            isolation.cleanup(container.container_id)
            isolation.release(container.container_id)

    async def _start(
        self,
        container: NestedContainer,
        command: Command,
        make_spec: Callable[[], dict[str, Any]],
    ) -> None:
        try:
            spec = await asyncio.to_thread(make_spec)
        except OSError as e:  # the task's processes went away meanwhile, a full disk ...
            raise NestedError(500, f"cannot prepare the nested container: {e}") from None
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        child_ends, hold = self._open_stdio(container, command)
        input_end = container.master_fd if command.tty else container.stdin_fd
        spec.update(
            status_fd=status_w,
            go_fd=go_r,
            agent_pid=os.getpid(),
            hold=hold,
            logs={kind: os.path.join(container.sandbox, kind.lower()) for _, kind in hold},
            checkpoint=container.checkpoint,
            input=input_end,
        )
        code = (
            f"import sys;sys.path.insert(0,{_ROOT!r});"
            "from butte.agent.containerizer.nested_exec import main;sys.exit(main())"
        )
        argv = [sys.executable, "-I", "-S", "-c", code, json.dumps(spec)]
        stdin, stdout, stderr = child_ends
        try:
            # In / : the launcher leads a session, and a session leader working in a
            # sandbox would pass for an executor at the next recovery (see nested_exec).
            process = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=tuple({status_w, go_r, *(fd for fd, _ in hold), *_fds(input_end)}),
                close_fds=True,
                cwd="/",
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        except OSError as e:
            for fd in (status_r, go_w):
                os.close(fd)
            self._close_fds(container)
            raise NestedError(500, f"cannot start the nested container: {e}") from None
        finally:
            for fd in {status_w, go_r, *child_ends}:
                os.close(fd)
        container.process = process
        container.launcher_pid = process.pid
        try:
            await asyncio.to_thread(self._checkpoint_launch, container, process.pid)
        except OSError as e:
            os.close(go_w)  # EOF: the launcher exits without running anything
            await process.wait()
            os.close(status_r)
            self._close_fds(container)
            raise NestedError(500, f"cannot checkpoint the nested container: {e}") from None
        try:
            os.write(go_w, b"g")
        except OSError:
            pass  # it died already: its report says why
        os.close(go_w)
        report = await asyncio.to_thread(_read_all, status_r)
        try:
            answer = json.loads(report) if report.strip() else {"error": "launcher died"}
        except ValueError:
            answer = {"error": f"launcher said {report[:200]!r}"}
        if "pid" not in answer:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self._close_fds(container)
            await asyncio.to_thread(_remove_checkpoint, container.checkpoint)
            raise NestedError(400, f"cannot launch the nested container: {answer['error']}")
        container.pid = int(answer["pid"])
        self._spawn(self._pump_and_wait(container))

    def _open_stdio(
        self, container: NestedContainer, command: Command
    ) -> tuple[tuple[int, int, int], list[list[Any]]]:
        """The command's stdio: the ends its launcher gets as fds 0-2, and the agent's
        output ends that the launcher holds too (``hold``: [fd, "STDOUT"|"STDERR"]).
        The agent's ends are kept on ``container``, non-blocking."""
        if command.tty:
            master, slave = os.openpty()
            os.set_blocking(master, False)
            if command.window:
                resize(master, *command.window)
            container.master_fd = master
            container.outputs = [("STDOUT", master)]
            return (slave, slave, slave), [[master, "STDOUT"]]
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (stdin_w, out_r, err_r):
            os.set_blocking(fd, False)
        container.stdin_fd = stdin_w
        container.outputs = [("STDOUT", out_r), ("STDERR", err_r)]
        return (stdin_r, out_w, err_w), [[out_r, "STDOUT"], [err_r, "STDERR"]]

    def _checkpoint_launch(self, container: NestedContainer, launcher_pid: int) -> None:
        """Makes ``nested.info`` durable (the launcher runs nothing before)."""
        directory = container.checkpoint
        assert directory is not None
        start = _start_time(launcher_pid)
        if start is None:
            raise OSError(errno.ESRCH, "the launcher is gone")
        record = NestedRecord(
            container.container_id,
            container.parent_id,
            container.sandbox,
            container.session,
            container.tty,
            launcher_pid,
            start,
            _boot_id(),
            container.resources,
            container.isolated,
        )
        _make_dirs(directory)
        for stale in (
            paths.nested_status_path(directory),
            paths.nested_termination_path(directory),
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)  # of an earlier container of that id, removed half-way
        _write_atomically(paths.nested_info_path(directory), record.to_json())

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

    def _watch(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch_parents())

    # -- output, exit ------------------------------------------------------------------------

    async def _pump_and_wait(self, container: NestedContainer) -> None:
        process = container.process
        assert process is not None
        os.makedirs(container.sandbox, exist_ok=True)
        pumps = [self._pump(container, kind, _fd_reader(fd)) for kind, fd in container.outputs]
        pumping = asyncio.gather(*pumps)
        returncode = await process.wait()
        if returncode == 255 and container.sigkilled:
            # asyncio's watcher says 255 for a child something else reaped first (an old
            # Popen polling a pid the launcher reused): after our SIGKILL, that ended it.
            returncode = -signal.SIGKILL
        container.wait_status = returncode << 8 if returncode >= 0 else -returncode
        fds = [fd for _, fd in container.outputs]
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTPUT_DRAIN_MAX
        while not pumping.done():
            try:
                await asyncio.wait_for(asyncio.shield(pumping), OUTPUT_DRAIN)
            except TimeoutError:
                # Still handing output to slow readers, or output (or its end) waits to be
                # read: wait on. Else the pipes are held open by something the command left
                # behind: stop reading them.
                if container.delivering:
                    continue
                if not (output_pending(fds) and loop.time() < until):
                    break
        if not pumping.done():
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        self._close_fds(container)
        await self._finish(container)

    async def _finish(self, container: NestedContainer) -> None:
        """The end: checkpointed first (what WAIT answers holds after a restart), then the
        readers' streams end and WAIT is answered."""
        isolation = self._isolation()
        if container.isolated and isolation is not None:
            # A limit it went over (an OOM kill) is read before its cgroups go.
            if container.limitation is None:
                container.limitation = isolation.limitation(container.container_id)
            self._release(container)
        if container.checkpoint is not None:
            path = paths.nested_termination_path(container.checkpoint)
            try:
                await asyncio.to_thread(_write_atomically, path, termination_json(container))
            except OSError as e:
                log.warning("cannot checkpoint the end of nested container %s: %s", path, e)
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
                await self._deliver(container, kind, data)

    async def _deliver(self, container: NestedContainer, kind: str, data: bytes) -> None:
        container.delivering += 1
        try:
            for queue in list(container.readers):
                await queue.put((kind, data))
        finally:
            container.delivering -= 1

    def _close_fds(self, container: NestedContainer) -> None:
        """Closes the agent's ends of the command's stdio (once)."""
        fds = {fd for _, fd in container.outputs}
        fds |= {fd for fd in (container.master_fd, container.stdin_fd) if fd is not None}
        container.outputs, container.master_fd, container.stdin_fd = [], None, None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

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
        ended or closed its input already is no error: the client's EOF can race its exit.
        A container recovered after an agent restart whose launcher did not hand its input
        back has none (409)."""
        closed = container.master_fd is None and container.stdin_fd is None
        if not data and (closed or not container.running):
            return
        if not container.running:
            raise NestedError(409, f"container {container.container_id[:80]} has ended")
        if container.input_lost:
            raise NestedError(
                409,
                f"container {container.container_id[:80]} takes no input: the agent "
                "restarted since its launch and its launcher did not hand the input back",
            )
        if container.master_fd is not None:
            await _write_fd(lambda: container.master_fd, data or b"\x04")
            return
        if container.stdin_fd is None:
            raise NestedError(409, "the container's input is closed")
        if data:
            await _write_fd(lambda: container.stdin_fd, data)
        else:
            fd, container.stdin_fd = container.stdin_fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
            await self._end_launcher_input(container)

    async def _end_launcher_input(self, container: NestedContainer) -> None:
        """Makes the launcher close its copy of the stdin pipe: only then the command sees
        the end of its input."""
        if container.checkpoint is None:
            return
        try:
            await asyncio.to_thread(launcher_request, container.checkpoint, b"E")
        except OSError:
            pass  # no socket: the launcher holds no copy (or it has ended)

    def resize(self, container: NestedContainer, rows: int, columns: int) -> None:
        """Sets the size of the container's terminal (TIOCSWINSZ on its pty master)."""
        if container.input_lost and container.tty:
            raise NestedError(
                409,
                "the container's terminal is not held by the agent: it restarted since the "
                "launch and the launcher did not hand the terminal back",
            )
        if container.master_fd is None:
            raise NestedError(400, "the container has no TTY: window sizes do not apply")
        resize(container.master_fd, rows, columns)

    # -- kill, wait, remove ------------------------------------------------------------------

    def kill(self, container: NestedContainer, number: int = signal.SIGKILL) -> None:
        """Signals every process of the command's session (and, with SIGKILL, its
        launcher, which leads that session)."""
        if not container.running:
            return
        container.sigkilled = container.sigkilled or number == signal.SIGKILL
        if container.launcher_pid is not None:
            signal_container(container.launcher_pid, number)
        isolation = self._isolation()
        if container.isolated and isolation is not None and number == signal.SIGKILL:
            isolation.kill(container.container_id)  # what left its session goes too
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
        await asyncio.to_thread(_remove_checkpoint, container.checkpoint)

    def children(self, parent_id: str) -> list[NestedContainer]:
        return [c for c in self.containers.values() if c.parent_id == parent_id]

    def _forget_old(self) -> None:
        finished = [c for c in self.containers.values() if not c.running]
        for container in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self.containers[container.container_id]
            # Forgotten here, forgotten after a restart too.
            self._spawn(asyncio.to_thread(_remove_checkpoint, container.checkpoint))

    async def _watch_parents(self) -> None:
        """Kills nested containers whose parent is gone (a task that ended without pid
        namespace or cgroups leaves them running otherwise) and, once none of a parent's
        runs, removes that parent's checkpoints, as Mesos removes a top-level container's
        runtime directory when it is destroyed."""
        while any(c.running for c in self.containers.values()) or self._parents:
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
            containerizer = self.server.containerizer
            alive = set(containerizer.containers) if containerizer is not None else set()
            for container in list(self.containers.values()):
                if container.standalone:
                    continue  # no parent: it runs until it ends or is killed
                if container.running and container.parent_id not in alive:
                    container.message = PARENT_ENDED
                    self.kill(container)
            for parent_id in list(self._parents):
                if parent_id in alive or any(c.running for c in self.children(parent_id)):
                    continue
                self._parents.discard(parent_id)
                work_dir = self.server.options.work_dir
                directory = paths.nested_parent_dir(work_dir, parent_id)
                await asyncio.to_thread(shutil.rmtree, directory, True)

    # -- recovery ----------------------------------------------------------------------------

    async def recover(self) -> None:
        """Recovers the nested containers a previous agent process left (module docstring).
        Called by the agent shell once its own containers are recovered; calls about nested
        containers wait until it is done (`ready`)."""
        self._recovered.clear()
        try:
            await self._recover()
        finally:
            self._recovered.set()

    async def _recover(self) -> None:
        work_dir = self.server.options.work_dir
        await self._recover_standalone(work_dir)
        found, empty = await asyncio.to_thread(read_checkpoints, work_dir)
        for directory in empty:
            await asyncio.to_thread(shutil.rmtree, directory, True)
        if not found:
            return
        containerizer = self.server.containerizer
        parents = set(containerizer.containers) if containerizer is not None else set()
        boot = _boot_id()
        counts: dict[str, int] = {}
        killed: list[tuple[Checkpointed, str]] = []
        for item in found:
            record = item.record
            alive = _launcher_alive(record, boot)
            action = recovery_action(
                readable=record is not None,
                launcher_alive=alive,
                session=record is not None and record.session,
                parent_recovered=item.parent_id in parents,
            )
            counts[action] = counts.get(action, 0) + 1
            if record is not None and action in (DESTROY, ORPHAN):
                signal_container(record.launcher_pid, signal.SIGKILL)
                killed.append((item, action))
            elif record is not None and action == ADOPT:
                await self._adopt(item, record)
            elif record is not None and action == ENDED:
                wait_status, message = recovered_end(item.termination, item.status)
                self._add_ended(item, record, wait_status, message)
                if item.termination is None:
                    await self._finish(self.containers[record.container_id])
            else:
                await asyncio.to_thread(_remove_checkpoint, item.directory)
        await self._reap(killed)
        orphaned = {item.parent_id for item in found} - parents
        for parent_id in orphaned:
            directory = paths.nested_parent_dir(work_dir, parent_id)
            await asyncio.to_thread(shutil.rmtree, directory, True)
        self._parents |= {item.parent_id for item in found} & parents
        self._forget_old()
        self._watch()
        log.info(
            "nested containers recovered: %d running, %d ended; killed %d session(s) and "
            "%d of parents not recovered; %d forgotten",
            *(counts.get(a, 0) for a in (ADOPT, ENDED, DESTROY, ORPHAN, FORGET)),
        )

    async def _recover_standalone(self, work_dir: str) -> None:
        """Standalone containers of the previous run: a running one is adopted (its
        cgroups were kept by the shell's recovery: `recovered_standalone_launches`), an
        ended one is kept as ended until REMOVE_CONTAINER, an unreadable record forgotten."""
        found = await asyncio.to_thread(read_standalone_checkpoints, work_dir)
        boot = _boot_id()
        counts = {ADOPT: 0, ENDED: 0, FORGET: 0}
        for item in found:
            record = item.record
            alive = _launcher_alive(record, boot)
            action = recovery_action(
                readable=record is not None,
                launcher_alive=alive,
                session=False,
                parent_recovered=True,
            )
            counts[action] += 1
            if record is not None and action == ADOPT:
                await self._adopt(item, record)
                container = self.containers[record.container_id]
                if self._isolation() is None:
                    container.isolated = False  # this run of the agent isolates nothing
                # Else the shell's recovery watches its cgroups again; a limit it goes over
                # is read at its end (`_finish`).
            elif record is not None and action == ENDED:
                wait_status, message = recovered_end(item.termination, item.status)
                self._add_ended(item, record, wait_status, message)
                container = self.containers[record.container_id]
                container.isolated = False  # its groups went as orphans, if it had any
                if item.termination is None:
                    await self._finish(container)
            else:
                await asyncio.to_thread(_remove_checkpoint, item.directory)
        if found:
            log.info(
                "standalone containers recovered: %d running, %d ended; %d forgotten",
                counts[ADOPT],
                counts[ENDED],
                counts[FORGET],
            )

    async def _reap(self, killed: list[tuple[Checkpointed, str]]) -> None:
        """Waits (a while) for the launchers recovery killed to be gone; a session's
        container is then kept as ended, an orphan forgotten."""
        deadline = asyncio.get_running_loop().time() + RECOVERY_KILL_WAIT
        for item, action in killed:
            record = item.record
            assert record is not None
            while _start_time(record.launcher_pid) == record.launcher_start:
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("nested container %s outlived its SIGKILL", record.container_id)
                    break
                await asyncio.sleep(0.02)
            if action == DESTROY:
                self._add_ended(item, record, int(signal.SIGKILL), SESSION_LOST)
                await self._finish(self.containers[record.container_id])

    def _add_ended(
        self, item: Checkpointed, record: NestedRecord, wait_status: int, message: str | None
    ) -> None:
        container = _recovered(item, record, wait_status=wait_status, message=message)
        container.output_done.set()
        container.exited.set()
        self.containers[record.container_id] = container

    async def _adopt(self, item: Checkpointed, record: NestedRecord) -> None:
        container = _recovered(item, record, pid=_command_pid(record.launcher_pid))
        self.containers[record.container_id] = container
        await self._fetch_input(container)
        pidfd: int | None = None
        with contextlib.suppress(OSError):  # gone since it was looked at: ended, then
            pidfd = os.pidfd_open(record.launcher_pid)
        if pidfd is not None and _start_time(record.launcher_pid) != record.launcher_start:
            os.close(pidfd)  # ended, and its pid taken already: not our process
            pidfd = None
        self._spawn(self._watch_recovered(container, pidfd))

    async def _fetch_input(self, container: NestedContainer) -> None:
        """Takes a recovered container's input end back from its launcher (stdin pipe or
        pty master); without it the container takes no input (``input_lost``)."""
        assert container.checkpoint is not None
        try:
            answer, fd = await asyncio.to_thread(launcher_request, container.checkpoint, b"F")
        except OSError as e:
            log.warning(
                "nested container %s takes no input after the restart: its launcher did not "
                "hand it back (%s)",
                container.container_id,
                e,
            )
            container.input_lost = True
            return
        if fd is None:
            return  # its input had ended (``C``)
        os.set_blocking(fd, False)
        if container.tty:
            container.master_fd = fd  # for input and the window size; output is the files'
        else:
            container.stdin_fd = fd

    async def _watch_recovered(self, container: NestedContainer, pidfd: int | None) -> None:
        """Follows a recovered container's output in its sandbox files (its launcher writes
        them) until its launcher ends, then reports the end the launcher checkpointed."""
        loop = asyncio.get_running_loop()
        files = {
            kind: os.path.join(container.sandbox, kind.lower()) for kind in ("STDOUT", "STDERR")
        }
        offsets = {kind: file_size(path) for kind, path in files.items()}
        if pidfd is not None:
            ended = loop.create_future()
            loop.add_reader(pidfd, _set_once, ended)
            try:
                while not ended.done():
                    await asyncio.wait([ended], timeout=FOLLOW_INTERVAL)
                    await self._follow(container, files, offsets)
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        while await self._follow(container, files, offsets):
            pass
        assert container.checkpoint is not None
        status = await asyncio.to_thread(
            _read_bytes, paths.nested_status_path(container.checkpoint)
        )
        container.wait_status, message = recovered_end(None, status)
        if container.message is None and not container.sigkilled:
            container.message = message
        self._close_fds(container)
        await self._finish(container)

    async def _follow(
        self, container: NestedContainer, files: dict[str, str], offsets: dict[str, int]
    ) -> bool:
        """Hands what the files have past ``offsets`` to the readers (without readers the
        offsets just move to the files' ends); True if there was something."""
        more = False
        for kind, path in files.items():
            if not container.readers:
                offsets[kind] = max(offsets[kind], file_size(path))
                continue
            data = await asyncio.to_thread(read_from, path, offsets[kind])
            if data:
                more = True
                offsets[kind] += len(data)
                await self._deliver(container, kind, data)
        return more


# -- checkpoint files --------------------------------------------------------------------------


def _listdir(path: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.endswith(".tmp"))
    except OSError:
        return []


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: str) -> None:
    """``os.makedirs`` whose new entries are durable (each new directory's parent synced)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        _fsync_dir(os.path.dirname(directory))


def _write_atomically(path: str, data: bytes) -> None:
    """Replaces ``path`` with ``data``: temp file, fsync, rename, fsync of the directory."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    _fsync_dir(os.path.dirname(path))


def _remove_checkpoint(directory: str | None) -> None:
    """Removes a nested container's checkpoint: ``nested.info`` first, so that a removal
    cut short leaves nothing recovery would take for a container."""
    if directory is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.nested_info_path(directory))
    shutil.rmtree(directory, ignore_errors=True)


def _launcher_alive(record: NestedRecord | None, boot: str | None) -> bool:
    """Whether the launcher a checkpoint ``record`` names still runs: same boot, and its pid
    still the process that started then (not a reused pid)."""
    return (
        record is not None
        and record.boot_id == boot
        and _start_time(record.launcher_pid) == record.launcher_start
    )


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """A live process's start time (clock ticks since boot); None if it is gone (or a
    zombie: it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X", b"x"):
            return None
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _command_pid(launcher_pid: int) -> int | None:
    """The launcher's child (the command), if it runs."""
    members = session_members([launcher_pid]).get(launcher_pid, [])
    return next((pid for pid in sorted(members) if _ppid(pid) == launcher_pid), None)


def launcher_request(directory: str, request: bytes) -> tuple[bytes, int | None]:
    """Sends a one-byte ``request`` to the input socket of the launcher whose checkpoint
    directory is ``directory`` (`butte.agent.containerizer.nested_exec`, "Input across an
    agent restart"): its one-byte answer and the fd it handed over, if any. OSError where
    no launcher answers (none listens: it has ended, or it holds no input)."""
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(LAUNCHER_TIMEOUT)
            # By the directory's fd: its path may be longer than a socket address may be.
            sock.connect(f"/proc/self/fd/{dir_fd}/{IO_SOCKET}")
            sock.sendall(request)
            answer, fds, _flags, _address = socket.recv_fds(sock, 1, 1, socket.MSG_CMSG_CLOEXEC)
    finally:
        os.close(dir_fd)
    if not answer:
        for fd in fds:
            os.close(fd)
        raise OSError(errno.ECONNRESET, "the launcher answered nothing")
    for fd in fds[1:]:
        os.close(fd)
    return answer, fds[0] if fds else None


def _fds(fd: int | None) -> list[int]:
    return [] if fd is None else [fd]


def signal_container(launcher_pid: int, number: int) -> None:
    """Sends ``number`` to every process of a nested container's session: the command and
    what it started, not the launcher, which would forward it to the command a second time,
    except SIGKILL, which ends the launcher too."""
    members = session_members([launcher_pid]).get(launcher_pid, [])
    for pid in members:
        if pid != launcher_pid or number == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, number)


def file_size(path: str) -> int:
    """The size of ``path`` (0 if it cannot be read)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_from(path: str, offset: int) -> bytes:
    """Up to 1 MiB of ``path`` from ``offset`` (b"" when there is nothing)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except OSError:
        return b""


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


def _standalone_spec(
    container: NestedContainer, command: Command, setup: ContainerSetup | None
) -> dict[str, Any]:
    """The launcher's SPEC_JSON of a standalone container: in the agent's namespaces, in
    its own cgroups (``setup``: the isolators'), working in its sandbox, as the agent's user
    unless the isolation switches users (--switch_user: the command's ``user``)."""
    env = {"PATH": STANDALONE_PATH, "MESOS_SANDBOX": container.sandbox}
    uid = gid = None
    groups: list[int] | None = None
    if setup is not None and setup.user is not None:
        name, uid, gid, home = setup.user
        groups = os.getgrouplist(name, gid)
        env.update(USER=name, LOGNAME=name, HOME=home)
    os.makedirs(container.sandbox, exist_ok=True)
    if uid is not None and gid is not None:
        os.chown(container.sandbox, uid, gid)
    if setup is not None:
        env.update(setup.env)
    env.update(command.env)
    if command.tty:
        env.setdefault("TERM", "xterm")
    return {
        "program": command.program,
        "argv": command.argv,
        "env": env,
        "cwd": container.sandbox,
        "target": None,
        "namespaces": [],
        "cgroup_procs": list(setup.cgroup_procs) if setup is not None else [],
        "uid": uid,
        "gid": gid,
        "groups": groups,
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


def output_pending(fds: list[int]) -> bool:
    """Whether any of the output fds has something to read now: data, or its end (EOF, a
    pty master's EIO). A closed fd has nothing."""
    poller = select.poll()  # not select(): an agent's fds may be past FD_SETSIZE
    for fd in fds:
        poller.register(fd, select.POLLIN)
    readable = select.POLLIN | select.POLLHUP | select.POLLERR
    return any(events & readable for _, events in poller.poll(0))


def _fd_reader(fd: int) -> Callable[[int], Any]:
    """An async ``read(n)`` of a non-blocking pipe or pty master: b"" at the end (EOF; EIO
    of a pty master once the command's side is closed)."""
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


async def _write_fd(current: Callable[[], int | None], data: bytes) -> None:
    """Writes all of ``data`` to a non-blocking fd, waiting while it is full. ``current``
    gives the fd each time: the container's end may close it meanwhile, and its number
    must not be written to after that."""
    view = memoryview(data)
    while view:
        fd = current()
        if fd is None:
            raise NestedError(409, "the container's input is closed")
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        except OSError as e:
            raise NestedError(409, f"the container's input is closed: {e}") from None
        view = view[written:]
