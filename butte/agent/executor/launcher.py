"""The command launcher: one long-lived process per agent that starts, watches and reaps the
plain command tasks the agent runs without an executor process of their own (docs/design.md
"The command launcher").

A task's process is started in its sandbox as the leader of a new session (so it is its own
process group, and the agent finds it by session like any executor), with stdout/stderr on
the sandbox files: by ``posix_spawn`` when nothing needs setting up, else by a fork that
joins the container's cgroups, enters its namespaces (with a pid namespace the fork itself
makes the child pid 1 of a new one: `butte.agent.containerizer.linux.fork_into_new_pid_namespace`),
switches user and execs the task. The launcher reaps its tasks and
remembers each exit status until the agent says it has recorded it (``forget``), so exits
that happen while the agent is down are reported to the agent that comes back.

It listens on a unix socket (the agent's ``<work_dir>/launcher.sock``); one agent at a time
is connected (a new connection replaces the old one). Protocol, one compact JSON object per
line:

    launcher -> agent, first   {"snapshot": [{"id", "pid", "exit"?, "killed"?, "kill_in"?},
                                  ...], "kills": true}               what it runs/ran
    agent -> launcher  {"op": "launch", "id", "sandbox", "program", "argv", "search", "env",
                        "cgroups"?, "oom_score_adj"?, "namespaces"?, "user"?, "owner"?,
                        "checkpoint"}
                       {"op": "signal", "id", "signal"}    to the task's process group
                       {"op": "kill", "id", "grace"}       SIGTERM, SIGKILL after grace s
                       {"op": "forget", "id"}              its exit is recorded: drop it
                       {"op": "claim", "ids": [...]}       after recovery: kill the others
                       {"op": "stop"}                      kill everything and exit
    launcher -> agent  {"id", "pid"}       started
                       {"id", "error"}     could not be started (text: why)
                       {"id", "exit"}      ended (raw wait status)

Lines go both ways in batches, never reordered: the launcher queues the answers that one
wake-up's requests and reaps produce and writes them with one send at the end of that loop
iteration (sooner once more than `FLUSH_AT` bytes wait), and the agent sends the requests of
one event-loop callback together.

A kill (``kill``) is the launcher's to finish, as a command executor finishes the kill its
agent asked for: the SIGKILL that ends the grace period comes from here, so a task being
killed is killed even if its agent restarts meanwhile, and the snapshot says which tasks
were killed (``killed``) and how many seconds their grace has left (``kill_in``, while they
run). A second kill only shortens the grace; it sends no second SIGTERM.

When its agent goes away it kills the tasks of frameworks that do not checkpoint (their
executors would do the same) and keeps the others running; it exits once nothing is left to
report, or, with no agent back within the recovery timeout, after killing everything.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import gc
import os
import select
import socket
import sys
import time

from butte.agent.containerizer import linux
from butte.agent.executor import lite
from butte.agent.executor.zygote import prepare_sandbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Python and the launcher ignore these; a task gets the default dispositions back.
_DEFAULT_SIGNALS = (
    _signal.SIGPIPE,
    _signal.SIGXFSZ,
    _signal.SIGTERM,
    _signal.SIGINT,
    _signal.SIGHUP,
)
SEND_TIMEOUT = 30.0  # an agent that reads nothing for this long is dropped
FIRST_CONNECT_TIMEOUT = 30.0  # the agent that started us connects within this
FLUSH_AT = 4096  # queued answers past this many bytes are written before the iteration ends
# What one recv asks for. Not more: Python allocates the whole size first, and past
# malloc's mmap threshold (128 KiB) that made each recv cost 14-18 us instead of 2.5.
READ_SIZE = 1 << 16


def short_address(path: str) -> str:
    """An address for ``path`` that fits a unix socket's 108 bytes: the path itself, or the
    same file through a descriptor of its directory (kept open for the process's life)."""
    if len(os.fsencode(path)) < 100:
        return path
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{directory}/{os.path.basename(path)}"


class Task:
    """One task the launcher started."""

    __slots__ = ("id", "pid", "checkpoint", "init", "exit", "claimed", "stand_in", "kill_at")

    def __init__(self, task_id: str, pid: int, checkpoint: bool, init: bool = False) -> None:
        self.id = task_id
        self.pid = pid
        self.checkpoint = checkpoint
        self.init = init  # pid 1 of a pid namespace of its own (see `Launcher._signal`)
        self.exit: int | None = None  # raw wait status once reaped
        self.claimed = True  # False: the agent did not recover it (forget its end)
        # The signal a SIGKILL stood in for (`Launcher._signal`): the task's end is
        # reported as that signal's.
        self.stand_in: int | None = None
        # The monotonic time of the SIGKILL that ends a kill's grace period (`Launcher._kill`);
        # 0.0 once it was sent. None: the agent never asked to kill the task.
        self.kill_at: float | None = None


class ChildPlan:
    """What a forked task child does before exec, worked out in the launcher before the fork:
    the child runs as little Python as it can (each object it touches costs it a page copy)."""

    __slots__ = (
        "cgroups",
        "oom_score_adj",
        "sandbox",
        "program",
        "argv",
        "env",
        "search",
        "pid_namespace",
        "unshare",
        "tmp",
        "net",
        "user",
    )

    def __init__(self, request: dict[str, Any]) -> None:
        namespaces = request.get("namespaces") or ()
        user = request.get("user")
        self.cgroups: list[str] = request.get("cgroups") or []
        self.oom_score_adj: int | None = request.get("oom_score_adj")
        self.sandbox: str = request["sandbox"]
        self.program: str = request["program"]
        self.argv: list[str] = request["argv"]
        self.env: dict[str, str] = request["env"]
        self.search = bool(request.get("search"))
        # The task is pid 1 of a namespace of its own, made by the fork itself (no holder).
        self.pid_namespace = "pid" in namespaces
        flags = 0
        if "mnt" in namespaces or self.pid_namespace:
            flags |= linux.CLONE_NEWNS  # the fresh /proc must not show in the host's mounts
        if "net" in namespaces:
            flags |= linux.CLONE_NEWNET
        self.unshare = flags
        self.tmp = "tmp" in namespaces
        self.net = "net" in namespaces
        self.user: tuple[str, int, int, str] | None = None
        if user:
            name, home = str(user[0]), str(user[3])
            self.user = (name, int(user[1]), int(user[2]), home)
            self.env = {**self.env, "USER": name, "LOGNAME": name, "HOME": home}


def _child_start(plan: ChildPlan, out: int, err: int, error_fd: int) -> None:
    """In the forked child: cgroups, session, sandbox, namespaces (a fresh /proc as pid 1 of
    its own pid namespace), user, then exec of the task itself. Never returns."""
    try:
        # The launcher's wake-up pipe is not ours (and its number is reused below).
        _signal.set_wakeup_fd(-1)
        for number in _DEFAULT_SIGNALS:
            _signal.signal(number, _signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        # Nothing of the launcher's (its sockets, its epoll) may live on in the task.
        os.closerange(3, error_fd)
        os.closerange(error_fd + 1, 1 << 16)
        linux.join_cgroups(plan.cgroups, plan.oom_score_adj)
        os.setsid()
        os.chdir(plan.sandbox)
        if plan.unshare:
            linux.unshare(plan.unshare)
            if plan.unshare & linux.CLONE_NEWNS:
                linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            if plan.pid_namespace:
                flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
                linux.mount("proc", "/proc", "proc", flags)
            if plan.tmp:
                user = plan.user
                linux.private_tmp(plan.sandbox, *(user[1:3] if user else (None, None)))
            if plan.net:
                linux.loopback_up()
        if plan.user is not None:
            linux.switch_user(plan.user[0], plan.user[1], plan.user[2])
        if plan.search:
            os.execvpe(plan.program, plan.argv, plan.env)
        else:
            os.execve(plan.program, plan.argv, plan.env)
    except BaseException as e:  # noqa: BLE001 - the child must always exit here
        try:
            os.write(error_fd, (str(e) or type(e).__name__).encode())
        except OSError:
            pass
    os._exit(127)


class Launcher:
    """The launcher's state and event loop; see the module docstring."""

    def __init__(self, path: str, recovery_timeout: float) -> None:
        self.recovery_timeout = recovery_timeout
        self.poller = select.epoll()
        self.tasks: dict[str, Task] = {}
        self.by_pid: dict[int, Task] = {}
        self.kills: set[Task] = set()  # tasks whose kill's grace has not ended yet
        self.client: socket.socket | None = None
        self.buffer = bytearray()
        self.out = bytearray()  # answers not yet written (see `send`)
        self.alone_since: float | None = time.monotonic()
        self.stopping = False
        self.connected_once = False
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, lambda *_: None)
        for number in (_signal.SIGINT, _signal.SIGHUP, _signal.SIGTERM):
            _signal.signal(number, _signal.SIG_IGN)  # the agent decides when we stop
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = short_address(path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        mask = os.umask(0o177)  # only the agent's user may connect, from the start
        try:
            self.listener.bind(path)
        finally:
            os.umask(mask)
        self.listener.listen(8)
        self.poller.register(self.listener.fileno(), select.EPOLLIN)
        self.poller.register(self.wake_read, select.EPOLLIN)

    # -- agent connection ------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Queues one line for the agent; `flush` (at the latest at the end of this loop
        iteration) writes it. Dropped when no agent is connected."""
        if self.client is None:
            return
        self.out += lite.dumps(message) + b"\n"
        if len(self.out) > FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Writes every queued line in one go (the agent is dropped if it cannot take them)."""
        if not self.out:
            return
        if self.client is None:
            self.out.clear()
            return
        try:
            self.client.sendall(self.out)
        except OSError:
            self._drop_client()
        self.out.clear()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        if self.client is not None:
            self.flush()  # what the old agent was owed goes out before it is replaced
            self._drop_client()
        sock.settimeout(SEND_TIMEOUT)
        self.client = sock
        self.connected_once = True
        self.buffer = bytearray()
        self.alone_since = None
        self.poller.register(sock.fileno(), select.EPOLLIN)
        snapshot = []
        now = time.monotonic()
        for task in self.tasks.values():
            entry: dict[str, Any] = {"id": task.id, "pid": task.pid}
            if task.exit is not None:
                entry["exit"] = task.exit
            if task.kill_at is not None:
                entry["killed"] = True
                if task.exit is None:
                    entry["kill_in"] = max(0.0, task.kill_at - now)
            snapshot.append(entry)
        self.send({"snapshot": snapshot, "kills": True})

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.out.clear()
        self.poller.unregister(client.fileno())
        client.close()
        self.alone_since = time.monotonic()
        # No agent recovers a framework that does not checkpoint: kill, then forget.
        self._release([t for t in self.tasks.values() if not t.checkpoint])

    def _read(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(READ_SIZE)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.buffer += data
        while self.client is not None:
            end = self.buffer.find(b"\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if not line.strip():
                continue
            try:
                self._handle(lite.loads(line))
            except (ValueError, KeyError, TypeError) as e:  # a bad request must not stop us
                sys.stderr.write(f"launcher: bad request {line[:200]!r}: {e!r}\n")

    def _handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "launch":
            self._launch(request)
        elif op == "signal":
            task = self.tasks.get(request["id"])
            if task is not None and task.exit is None:
                self._signal(task, int(request["signal"]))
        elif op == "kill":
            task = self.tasks.get(request["id"])
            if task is not None and task.exit is None:
                self._kill(task, max(0.0, float(request["grace"])), time.monotonic())
        elif op == "forget":
            task = self.tasks.get(request["id"])
            if task is not None and task.exit is not None:
                del self.tasks[task.id]
        elif op == "claim":
            self._claim(set(request.get("ids") or ()))
        elif op == "stop":
            self.stopping = True
            for task in self.tasks.values():
                if task.exit is None:
                    self._signal(task, _signal.SIGKILL)

    def _claim(self, ids: set[str]) -> None:
        self._release([t for t in self.tasks.values() if t.id not in ids])

    def _release(self, tasks: list[Task]) -> None:
        """Tasks no agent will ask about: killed if still running (forgotten once reaped),
        else forgotten now."""
        for task in tasks:
            task.claimed = False
            if task.exit is None:
                self._signal(task, _signal.SIGKILL)
            else:
                del self.tasks[task.id]

    # -- tasks -------------------------------------------------------------------------------

    def _kill(self, task: Task, grace: float, now: float) -> None:
        """SIGTERM, and SIGKILL once ``grace`` seconds have passed (`_expire_kills`); a task
        already being killed only gets an earlier SIGKILL, if this grace ends sooner."""
        deadline = now + grace
        if task.kill_at is None:
            task.kill_at = deadline
            self._signal(task, _signal.SIGTERM)
        elif task.kill_at and deadline < task.kill_at:
            task.kill_at = deadline
        self.kills.add(task)

    def _expire_kills(self, now: float) -> float:
        """SIGKILLs the tasks whose grace has ended; the seconds until the next such end
        (-1: none is pending)."""
        wait = -1.0
        for task in list(self.kills):
            if task.exit is not None or task.kill_at is None:
                self.kills.discard(task)
            elif task.kill_at <= now:
                task.kill_at = 0.0
                self.kills.discard(task)
                self._signal(task, _signal.SIGKILL)
            elif wait < 0 or task.kill_at - now < wait:
                wait = task.kill_at - now
        return wait

    def _signal(self, task: Task, number: int) -> None:
        """Sends ``number`` to the task's process group. The kernel drops a signal to a pid
        namespace's init that has no handler for it, where any other process would end; so
        when the task is such an init and the signal would end it by default, it is ended
        with SIGKILL, as it would have ended (its namespace's other processes, which got the
        signal too, go with it, as they did when a holder was pid 1 and the task exited)."""
        try:
            os.killpg(task.pid, number)
            if task.init and linux.ends_by_default(task.pid, number):
                if task.stand_in is None and number != _signal.SIGKILL:
                    task.stand_in = number
                os.kill(task.pid, _signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _launch(self, request: dict[str, Any]) -> None:
        task_id = request["id"]
        if task_id in self.tasks:
            self.send({"id": task_id, "error": "already launched"})
            return
        try:
            out, err = prepare_sandbox(request["sandbox"], task_id, request.get("owner"))
        except OSError as e:
            self.send({"id": task_id, "error": f"{type(e).__name__}: {e}"})
            return
        try:
            if any(request.get(k) for k in ("cgroups", "namespaces", "user", "oom_score_adj")):
                pid = self._fork(request, out, err)
            else:
                pid = self._posix_spawn(request, out, err)
        except OSError as e:
            self.send({"id": task_id, "error": str(e) or type(e).__name__})
            return
        finally:
            os.close(out)
            os.close(err)
        init = "pid" in (request.get("namespaces") or ())
        task = Task(task_id, pid, bool(request.get("checkpoint")), init)
        self.tasks[task_id] = task
        self.by_pid[pid] = task
        self.send({"id": task_id, "pid": pid})

    def _posix_spawn(self, request: dict[str, Any], out: int, err: int) -> int:
        spawn = os.posix_spawnp if request.get("search") else os.posix_spawn
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
        ]
        os.chdir(request["sandbox"])  # single-threaded: posix_spawn has no chdir action
        try:
            return spawn(
                request["program"],
                request["argv"],
                request["env"],
                file_actions=actions,
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        finally:
            os.chdir("/")

    def _fork(self, request: dict[str, Any], out: int, err: int) -> int:
        plan = ChildPlan(request)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            if plan.pid_namespace:
                # The task itself is pid 1 there and our child: we reap it and get its own
                # exit status, and signals reach it without a holder to forward them.
                pid = linux.fork_into_new_pid_namespace()
            else:
                pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:
            os.close(read_end)
            _child_start(plan, out, err, write_end)  # never returns
        os.close(write_end)
        return linux.started(pid, read_end)

    def _reap(self) -> None:
        while True:
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if ended is None:
                return
            pid = ended.si_pid
            task = self.by_pid.pop(pid, None)
            if task is not None:
                # Still a zombie, so its pid cannot have been reused: what is left of the
                # task's process group goes with it (as the built-in executor does).
                self._signal(task, _signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if task is None:
                continue
            if task.stand_in is not None and os.WIFSIGNALED(status):
                if os.WTERMSIG(status) == _signal.SIGKILL:
                    # Ended by the SIGKILL that stood in for another signal: reported as
                    # that signal, as it would have ended a task that is not an init.
                    status = task.stand_in | (status & 0x80)
            task.exit = status
            if not task.claimed:
                self.tasks.pop(task.id, None)
                continue
            self.send({"id": task.id, "exit": status})

    # -- main loop ---------------------------------------------------------------------------

    def _done(self, now: float) -> bool:
        if self.stopping:
            return not self.by_pid
        if self.client is not None or self.alone_since is None:
            return False
        if not self.tasks:
            return self.connected_once or now - self.alone_since > FIRST_CONNECT_TIMEOUT
        if now - self.alone_since > self.recovery_timeout:
            # No agent came back for them: like an executor past MESOS_RECOVERY_TIMEOUT.
            for task in self.tasks.values():
                if task.exit is None:
                    self._signal(task, _signal.SIGKILL)
            return True
        return False

    def serve(self) -> int:
        """Serves agents until nothing is left to do (see the module docstring)."""
        listener = self.listener.fileno()
        while not self._done(time.monotonic()):
            timeout = 1.0 if self.client is None or self.stopping else -1.0
            if self.kills:
                pending = self._expire_kills(time.monotonic())
                if pending >= 0 and (timeout < 0 or pending < timeout):
                    timeout = pending
            for fd, _ in self.poller.poll(timeout):
                if fd == self.wake_read:
                    try:
                        while os.read(self.wake_read, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()
                elif fd == listener:
                    self._accept()
                elif self.client is not None and fd == self.client.fileno():
                    self._read()
            # One write for everything this iteration's requests and reaps produced.
            self.flush()
        return 0


def main() -> int:
    """Entry point: ``launcher <socket path> <recovery timeout seconds>``."""
    if len(sys.argv) < 3:
        sys.stderr.write("usage: launcher SOCKET RECOVERY_TIMEOUT\n")
        return 2
    launcher = Launcher(sys.argv[1], float(sys.argv[2]))
    linux.preload()
    gc.collect()
    gc.freeze()
    return launcher.serve()


if __name__ == "__main__":
    sys.exit(main())
