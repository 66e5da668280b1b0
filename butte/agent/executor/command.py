"""The built-in executor: runs command tasks (one per process, like Mesos' command executor)
and task groups (like Mesos' default executor) over the executor HTTP API v1.

Run by the agent as ``python -m butte.agent.executor.command`` (or faster, see
`butte.agent.flags.command_executor_argv`) with the Mesos executor environment (docs/protocol.md
§2.2). Flow (docs/protocol.md §2.3)::

    SUBSCRIBE -> SUBSCRIBED, LAUNCH -> TASK_STARTING -> spawn -> TASK_RUNNING
    task exits -> TASK_FINISHED (status 0) / TASK_FAILED / TASK_KILLED (after a KILL)
    ACKNOWLEDGED of every task's terminal update -> exit 0

Each task runs in its own process group inside the executor's session, so KILL can signal the
task's whole tree (SIGTERM, SIGKILL after the grace period) and the agent can still find every
process of the container by session. A task's ``health_check`` is probed by processes of their
own (`butte.agent.executor.health`).

Losing the agent (docs/protocol.md §2.4): without checkpointing the executor kills its tasks and
exits. With checkpointing it keeps its tasks running and retries SUBSCRIBE (also answered
503 while a restarted agent recovers), at most MESOS_SUBSCRIPTION_BACKOFF_MAX/2 apart so two
tries fall within the agent's re-registration window, for up to MESOS_RECOVERY_TIMEOUT;
the SUBSCRIBE carries every task without a terminal update and every unacknowledged update.

The executor is a single thread around one ``epoll``: the SUBSCRIBE stream, a pidfd per task
(and per running health probe) and a signal wake-up pipe. Imports are kept to C modules (see
`butte.agent.executor.lite`) because this process starts once per task.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import os
import select
import sys
import time

from butte.agent.executor import checks as check_runs
from butte.agent.executor import health as health_checks
from butte.agent.executor import lite
from butte.core.recordio import RecordIOReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

EXECUTOR_PATH = "/api/v1/executor"
REQUIRED_ENV = ("MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID")
DEFAULT_KILL_GRACE = 3.0
# Exit anyway this long after the last terminal update if the agent never acknowledges it.
ACK_FAILSAFE = 60.0
_NS = 1e-9
_NO_DEADLINE = float("inf")  # a probe with timeout_seconds 0 (Mesos: no timeout)


def _signal_name(number: int) -> str:
    """Human words for a signal, like strsignal(3) (``Terminated``, ``Killed``)."""
    try:
        return _signal.strsignal(number) or f"signal {number}"
    except ValueError:
        return f"signal {number}"


def describe_exit(status: int) -> str:
    """Mesos' words for a wait status: ``Command exited with status N`` or ``Command
    terminated with signal <name>``."""
    if os.WIFSIGNALED(status):
        return f"Command terminated with signal {_signal_name(os.WTERMSIG(status))}"
    return f"Command exited with status {os.waitstatus_to_exitcode(status)}"


def exit_state(status: int, killed: bool) -> str:
    """The terminal state of a command task that ended with wait ``status``: TASK_KILLED
    after a kill, TASK_FINISHED on exit status 0, else TASK_FAILED."""
    if killed:
        return "TASK_KILLED"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "TASK_FINISHED"
    return "TASK_FAILED"


def kill_grace(kill: dict | None, task: dict) -> float:
    """Grace period of a kill: KILL's kill_policy, else the task's, else 3 seconds."""
    for policy in ((kill or {}).get("kill_policy"), task.get("kill_policy")):
        if isinstance(policy, dict) and isinstance(policy.get("grace_period"), dict):
            nanos = policy["grace_period"].get("nanoseconds")
            if isinstance(nanos, int | float | str):
                try:
                    return max(0.0, float(nanos) * _NS)
                except ValueError:
                    pass
    return DEFAULT_KILL_GRACE


def task_argv(command: dict) -> tuple[str, list[str], bool]:
    """(program, argv, search PATH) of a CommandInfo: ``/bin/sh -c value`` when shell (the
    default), else ``value`` with ``arguments`` as the whole argv."""
    value = command.get("value") or ""
    if command.get("shell", True):
        return "/bin/sh", ["sh", "-c", value], False
    arguments = [str(a) for a in command.get("arguments") or []]
    return value, arguments or [value], True


# What the agent tells the executor about isolating its tasks (not passed on to tasks).
NAMESPACES_ENV = "BUTTE_TASK_NAMESPACES"  # comma-separated: pid, mnt, tmp, net
USER_ENV = "BUTTE_TASK_USER"  # set when tasks switch user: the default user
# The launch plan (JSON) of a task in an image: butte.agent.containerizer.image_runtime.launch_plan;
# of task group members in images, one per task id (a JSON object).
ROOTFS_ENV = "BUTTE_TASK_ROOTFS"
ROOTFS_GROUP_ENV = "BUTTE_MEMBER_ROOTFS"


def secret_value(var: dict) -> str | None:
    """The value of a SECRET variable of type VALUE (base64 ``data``), else None (the agent
    refuses REFERENCE secrets before the task gets here)."""
    secret = var.get("secret")
    if not isinstance(secret, dict) or secret.get("type") != "VALUE":
        return None
    data = (secret.get("value") or {}).get("data")
    if not isinstance(data, str):
        return None
    import binascii

    try:
        return binascii.a2b_base64(data).decode(errors="surrogateescape")
    except (binascii.Error, ValueError):
        return None


def task_environment(base: dict[str, str], command: dict) -> dict[str, str]:
    """The executor's environment plus the task's CommandInfo variables (VALUE ones and
    SECRET ones of type VALUE)."""
    env = dict(base)
    env.pop(NAMESPACES_ENV, None)
    env.pop(USER_ENV, None)
    env.pop(ROOTFS_ENV, None)
    env.pop(ROOTFS_GROUP_ENV, None)
    variables = (command.get("environment") or {}).get("variables") or []
    for var in variables:
        if not isinstance(var, dict):
            continue
        kind = var.get("type", "VALUE")
        if kind == "VALUE" and "value" in var:
            env[str(var["name"])] = str(var["value"])
        elif kind == "SECRET":
            value = secret_value(var)
            if value is not None:
                env[str(var["name"])] = value
    return env


class TaskProcess:
    """One launched task: its process (group), pidfd and kill/ack progress."""

    __slots__ = (
        "info",
        "group",
        "pid",
        "pidfd",
        "killed",
        "kill_deadline",
        "completion_deadline",
        "timed_out",
        "terminal_uuid",
        "done",
        "health",
        "probe_pid",
        "probe_pidfd",
        "probe_deadline",
        "killed_by_health",
        "check",
        "healthy",
    )

    def __init__(self, info: dict, group: bool) -> None:
        self.info = info
        self.group = group
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.killed = False
        self.kill_deadline: float | None = None
        self.completion_deadline: float | None = None  # from max_completion_time
        self.timed_out = False
        self.terminal_uuid: str | None = None  # set once its terminal update was sent
        self.done = False  # terminal update acknowledged
        self.health: health_checks.HealthPolicy | None = None
        self.probe_pid: int | None = None  # the health probe running now
        self.probe_pidfd: int | None = None
        self.probe_deadline: float | None = None
        self.killed_by_health = False
        self.check: check_runs.CheckState | None = None
        self.healthy: bool | None = None  # of its last update (check updates repeat it)

    @property
    def id(self) -> str:
        return self.info["task_id"]["value"]


class AgentLost(Exception):
    """The agent cannot be reached (stream closed, connection refused)."""


class Executor:
    """State and event loop of the executor process; see the module docstring."""

    def __init__(self, environ: dict[str, str]) -> None:
        # ROOTFS_ENV / ROOTFS_GROUP_ENV -> its launch plan(s), decoded (`_image_plan`)
        self._plans: dict[str, dict | None] = {}
        self.environ = environ
        host, _, port = environ["MESOS_AGENT_ENDPOINT"].rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.framework_id = environ["MESOS_FRAMEWORK_ID"]
        self.executor_id = environ["MESOS_EXECUTOR_ID"]
        self.sandbox = environ.get("MESOS_SANDBOX") or os.getcwd()
        self.checkpoint = environ.get("MESOS_CHECKPOINT", "") in ("1", "true")
        self.shutdown_grace = lite.parse_duration(
            environ.get("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"), 5.0
        )
        self.recovery_timeout = lite.parse_duration(
            environ.get("MESOS_RECOVERY_TIMEOUT", "15mins"), 900.0
        )
        self.backoff_max = lite.parse_duration(
            environ.get("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"), 2.0
        )
        # With --authenticate_http_executors the agent wants this token with every call.
        self.token = environ.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", "")
        self.calls = lite.HttpConnection(self.host, self.port, self.token)
        self.poller = select.epoll()
        self.tasks: dict[str, TaskProcess] = {}
        self.by_pidfd: dict[int, TaskProcess] = {}
        self.by_probe_pidfd: dict[int, TaskProcess] = {}
        self.by_check_pidfd: dict[int, TaskProcess] = {}
        self.unacked: dict[str, dict] = {}  # uuid -> status
        self.task_killing_state = False
        # A task group member was reported unhealthy: every later terminal update of the
        # group says healthy=false (Mesos' default executor).
        self.unhealthy = False
        self.shutting_down = False
        self.exit_deadline: float | None = None
        self.stream: Any = None
        self.decoder = lite.ChunkedDecoder()
        self.records = RecordIOReader()
        self.disconnected_since: float | None = None
        self.next_subscribe = 0.0
        self.backoff = 0.1
        self.signal_fd = self._install_signal_pipe()

    # -- plumbing --------------------------------------------------------------------------

    def _install_signal_pipe(self) -> int:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for number in (_signal.SIGTERM, _signal.SIGINT):
            _signal.signal(number, lambda *_: None)
        self.poller.register(read_fd, select.EPOLLIN)
        return read_fd

    def _call(self, body: dict) -> tuple[int, bytes]:
        body.setdefault("framework_id", {"value": self.framework_id})
        body.setdefault("executor_id", {"value": self.executor_id})
        try:
            return self.calls.post(EXECUTOR_PATH, lite.dumps(body))
        except (OSError, lite.HttpError) as e:
            raise AgentLost(str(e)) from None

    def subscribe(self) -> None:
        """Opens the SUBSCRIBE stream (resending what the agent has not acknowledged)."""
        unacked_tasks = [
            t.info for t in self.tasks.values() if not t.done and t.terminal_uuid is None
        ]
        body = {
            "type": "SUBSCRIBE",
            "framework_id": {"value": self.framework_id},
            "executor_id": {"value": self.executor_id},
            "subscribe": {
                "unacknowledged_tasks": unacked_tasks,
                "unacknowledged_updates": [{"status": s} for s in self.unacked.values()],
            },
        }
        try:
            sock = lite.connect(self.host, self.port)
            request = lite.request_bytes(
                self.host, self.port, EXECUTOR_PATH, lite.dumps(body), token=self.token
            )
            sock.sendall(request)
            buffer = bytearray()
            status, headers = lite.read_head(sock, buffer)
        except (OSError, lite.HttpError) as e:
            raise AgentLost(str(e)) from None
        if status == 503:
            sock.close()
            raise AgentLost("the agent is recovering")
        if status != 200:
            sock.close()
            raise SystemExit(f"executor: SUBSCRIBE refused with HTTP {status}")
        sock.settimeout(0.0)
        self.stream = sock
        self.decoder = lite.ChunkedDecoder()
        self.records = RecordIOReader()
        self.poller.register(sock.fileno(), select.EPOLLIN)
        self.disconnected_since = None
        self.backoff = 0.1
        if self.tasks and all(t.terminal_uuid is not None for t in self.tasks.values()):
            self.exit_deadline = time.monotonic() + ACK_FAILSAFE
        if buffer:
            self._on_stream_bytes(bytes(buffer))

    def _read_stream(self) -> None:
        try:
            data = self.stream.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            raise AgentLost("the agent closed the executor stream")
        self._on_stream_bytes(data)

    def _on_stream_bytes(self, data: bytes) -> None:
        payload = self.decoder.feed(data)
        try:
            records = self.records.feed(payload)
        except ValueError as e:
            raise AgentLost(f"the executor stream is not RecordIO: {e}") from None
        for record in records:
            self.handle_event(lite.loads(record))
        if self.decoder.finished:
            raise AgentLost("the agent ended the executor stream")

    def _drop_stream(self) -> None:
        if self.stream is not None:
            self.poller.unregister(self.stream.fileno())
            self.stream.close()
            self.stream = None
        self.calls.close()

    # -- events from the agent -------------------------------------------------------------

    def handle_event(self, event: dict) -> None:
        """One event from the SUBSCRIBE stream."""
        kind = event.get("type")
        if kind == "SUBSCRIBED":
            info = event.get("subscribed", {}).get("framework_info", {})
            capabilities = [c.get("type") for c in info.get("capabilities", [])]
            self.task_killing_state = "TASK_KILLING_STATE" in capabilities
        elif kind == "LAUNCH":
            self.launch(event["launch"]["task"], group=False)
        elif kind == "LAUNCH_GROUP":
            members = event["launch_group"]["task_group"].get("tasks", [])
            failed = [t for t in (self.launch(info, group=True) for info in members) if t]
            if failed:
                self._end_group(failed[0])  # as when a member ends with a non-zero status
        elif kind == "KILL":
            kill = event.get("kill", {})
            self.kill(kill["task_id"]["value"], kill)
        elif kind == "ACKNOWLEDGED":
            self.acknowledged(event["acknowledged"]["uuid"])
        elif kind == "SHUTDOWN":
            self.shutdown()
        elif kind == "ERROR":
            sys.stderr.write(f"executor: error from agent: {event.get('error')}\n")

    def launch(self, info: dict, group: bool) -> TaskProcess | None:
        """Starts one task: TASK_STARTING, spawn, TASK_RUNNING. The task when it could not
        be started (it got TASK_FAILED), else None."""
        task_id = info["task_id"]["value"]
        if task_id in self.tasks or self.shutting_down:
            return None
        task = TaskProcess(info, group)
        self.tasks[task_id] = task
        self._start_check(task)
        self.send_update(task, "TASK_STARTING")
        try:
            task.pid = self._spawn(info, group)
        except OSError as e:
            self.send_update(task, "TASK_FAILED", f"Failed to launch task: {e}")
            return task
        try:
            task.pidfd = os.pidfd_open(task.pid)
        except ProcessLookupError:  # pragma: no cover - exited and reaped already? not ours
            task.pidfd = None
        if task.pidfd is not None:
            self.by_pidfd[task.pidfd] = task
            self.poller.register(task.pidfd, select.EPOLLIN)
        limit = (info.get("max_completion_time") or {}).get("nanoseconds")
        if isinstance(limit, int | float):
            task.completion_deadline = time.monotonic() + float(limit) * _NS
        self.send_update(task, "TASK_RUNNING")
        self._start_health(task)
        return None

    def _task_dir(self, info: dict, group: bool) -> str | None:
        """A task group member's own directory (None: the executor's sandbox)."""
        if not group:
            return None
        return os.path.join(self.sandbox, "tasks", info["task_id"]["value"])

    def _image_plan(self, info: dict, group: bool) -> dict | None:
        """The launch plan of a task in an image (None: it runs on the host's file system):
        a command task's, or a task group member's own."""
        key = ROOTFS_GROUP_ENV if group else ROOTFS_ENV
        if key not in self._plans:  # decoded once: probes ask again every interval
            text = self.environ.get(key)
            if text:
                import json

                self._plans[key] = json.loads(text)
            else:
                self._plans[key] = None
        plan = self._plans[key]
        if plan is None:
            return None
        return plan.get(info["task_id"]["value"]) if group else plan

    def _spawn(self, info: dict, group: bool) -> int:
        plan = self._image_plan(info, group)
        cwd = self._task_dir(info, group)
        if plan is not None:
            stdio = (os.path.join(cwd, "stdout"), os.path.join(cwd, "stderr")) if cwd else None
            return self._spawn_in_image(plan, stdio)
        command = info.get("command") or {}
        program, argv, search = task_argv(command)
        env = task_environment(self.environ, command)
        actions = []
        if cwd is not None:
            os.makedirs(cwd, exist_ok=True)
            env["MESOS_SANDBOX"] = cwd
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            actions = [
                (os.POSIX_SPAWN_OPEN, 1, os.path.join(cwd, "stdout"), flags, 0o644),
                (os.POSIX_SPAWN_OPEN, 2, os.path.join(cwd, "stderr"), flags, 0o644),
            ]
        namespaces = [n for n in self.environ.get(NAMESPACES_ENV, "").split(",") if n]
        user = self._task_user(command)
        if namespaces or user is not None:
            return self._spawn_isolated(program, argv, search, env, cwd, namespaces, user)
        return self._spawn_process(program, argv, search, env, cwd, actions)

    def _spawn_in_image(self, plan: dict, stdio: tuple[str, str] | None) -> int:
        """Starts the task in its image's root filesystem, as the agent planned it (program,
        environment, mounts, user: `butte.agent.containerizer.image_runtime.launch_plan`);
        ``stdio``: a member's own stdout and stderr files (None: the executor's)."""
        from butte.agent.containerizer import linux

        namespaces = [n for n in self.environ.get(NAMESPACES_ENV, "").split(",") if n]
        if "mnt" not in namespaces:
            namespaces.append("mnt")
        program = plan["program"]
        return linux.spawn_isolated(
            program,
            plan["argv"],
            plan["env"],
            search="/" not in program,
            cwd=None,
            sandbox=self.sandbox,
            stdio=stdio,
            namespaces=namespaces,
            user=None,
            rootfs=plan,
        )

    def _task_user(self, command: dict) -> str | None:
        """The user to switch the task to (its CommandInfo.user, else the container's), or
        None: no switching (not asked for, or already that user)."""
        default = self.environ.get(USER_ENV)
        if not default:
            return None
        name = str(command.get("user") or default)
        import pwd

        try:
            if pwd.getpwuid(os.geteuid()).pw_name == name:
                return None
        except KeyError:
            pass
        return name

    def _spawn_isolated(
        self,
        program: str,
        argv: list[str],
        search: bool,
        env: dict[str, str],
        cwd: str | None,
        namespaces: list[str],
        name: str | None,
    ) -> int:
        """Forks the task into its namespaces and as user ``name``
        (`butte.agent.containerizer.linux`)."""
        from butte.agent.containerizer import linux

        user = None
        if name is not None:
            try:
                uid, gid, home = linux.resolve_user(name)
            except KeyError as e:
                raise OSError(e.args[0]) from None
            user = (name, uid, gid, home)
            if cwd is not None:  # a member's directory, with what was fetched for it
                lite.give_tree(cwd, uid, gid)
        stdio = (os.path.join(cwd, "stdout"), os.path.join(cwd, "stderr")) if cwd else None
        return linux.spawn_isolated(
            program,
            argv,
            env,
            search=search,
            cwd=cwd,
            sandbox=cwd or self.sandbox,
            stdio=stdio,
            namespaces=namespaces,
            user=user,
        )

    def _spawn_probe(
        self,
        task: TaskProcess,
        kind: str,
        program: str,
        argv: list[str],
        search: bool,
        stdout: int | None,
        command: dict | None = None,
    ) -> int:
        """Starts a health or check probe: in the task's network namespace when it has its
        own (so 127.0.0.1 is the task's), a COMMAND probe also in its mount namespace (its
        /tmp) and as the task's user, else by posix_spawn. HTTP and TCP probes are butte's own
        program, which must stay on the host's file system (it may live under the host's
        /tmp) and may not be readable by the task's user. ``command`` is a COMMAND probe's
        CommandInfo, which ``program`` and ``argv`` come from (the Docker executor runs it
        with ``docker exec`` instead)."""
        env = task_environment(self.environ, task.info.get("command") or {})
        # In the task's directory, as Mesos runs probes in the sandbox: explicitly, since
        # joining a mount namespace moves a process to that namespace's root.
        cwd = self._task_dir(task.info, task.group) or self.sandbox
        namespaces = [n for n in self.environ.get(NAMESPACES_ENV, "").split(",") if n]
        plan = self._image_plan(task.info, task.group)
        if plan and kind == "COMMAND":
            # A COMMAND probe runs in the task's image, with the task's environment there.
            namespaces.append("mnt")
            env, cwd = plan["env"], plan["cwd"]
        wanted = ("net", "mnt") if kind == "COMMAND" else ("net",)
        joined = [n for n in wanted if n in namespaces]
        user = None
        if kind == "COMMAND" and not plan:
            # Mesos' executor runs as the task's user, and so do the probes it starts.
            user = self._probe_user(task)
        if (joined or user) and task.pid is not None:
            from butte.agent.containerizer import linux

            return linux.spawn_in_namespaces_of(
                task.pid,
                joined,
                program,
                argv,
                env,
                search=search,
                cwd=cwd,
                stdout_fd=stdout,
                user=user,
            )
        out: tuple[Any, ...]
        if stdout is None:
            out = (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)
        else:
            out = (os.POSIX_SPAWN_DUP2, stdout, 1)
        return self._spawn_process(program, argv, search, env, cwd, [out])

    def _probe_user(self, task: TaskProcess) -> tuple[str, int, int] | None:
        """(name, uid, gid) of the user the task was switched to, or None."""
        name = self._task_user(task.info.get("command") or {})
        if name is None:
            return None
        from butte.agent.containerizer import linux

        try:
            uid, gid, _ = linux.resolve_user(name)
        except KeyError as e:  # gone since the task started
            raise OSError(e.args[0]) from None
        return name, uid, gid

    def _spawn_process(
        self,
        program: str,
        argv: list[str],
        search: bool,
        env: dict[str, str],
        cwd: str | None,
        actions: list,
    ) -> int:
        """posix_spawn in a new process group (in ``cwd`` if given)."""
        spawn = os.posix_spawnp if search else os.posix_spawn
        # Python ignores SIGPIPE/SIGXFSZ; the task must get the default dispositions back.
        defaults = [_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGTERM, _signal.SIGINT]
        here = os.getcwd() if cwd else None
        if cwd:
            os.chdir(cwd)  # single-threaded: posix_spawn has no chdir, so borrow ours
        try:
            return spawn(program, argv, env, file_actions=actions, setpgroup=0, setsigdef=defaults)
        finally:
            if here is not None:
                os.chdir(here)

    def kill(self, task_id: str, kill: dict | None, grace: float | None = None) -> None:
        """SIGTERM the task's process group (TASK_KILLING first when the framework wants it),
        SIGKILL after the grace period."""
        task = self.tasks.get(task_id)
        if task is None or task.pid is None or task.terminal_uuid is not None:
            return
        if grace is None:
            grace = kill_grace(kill, task.info)
        deadline = time.monotonic() + grace
        if task.killed:
            # A second kill may only shorten the grace period.
            if task.kill_deadline is not None:
                task.kill_deadline = min(task.kill_deadline, deadline)
            return
        task.killed = True
        # A task being killed gets no more check results, as with Mesos' executors: its
        # running probe is stopped and no new one starts.
        self._stop_check(task, kill=True)
        if self.task_killing_state:
            self.send_update(task, "TASK_KILLING")
        self._signal_task(task, _signal.SIGTERM)
        task.kill_deadline = deadline

    def _signal_task(self, task: TaskProcess, number: int) -> None:
        if task.pid is None:
            return
        try:
            os.killpg(task.pid, number)
        except ProcessLookupError:
            pass

    def shutdown(self) -> None:
        """Kill every task (grace: the shutdown grace minus a second for the updates), then
        exit once their terminal updates are acknowledged."""
        self.shutting_down = True
        grace = max(0.0, self.shutdown_grace - 1.0)
        for task in self.tasks.values():
            self.kill(task.id, None, grace)

    def acknowledged(self, uuid: str) -> None:
        self.unacked.pop(uuid, None)
        for task in self.tasks.values():
            if task.terminal_uuid == uuid:
                task.done = True

    # -- updates -----------------------------------------------------------------------------

    def send_update(
        self,
        task: TaskProcess,
        state: str,
        message: str | None = None,
        reason: str | None = None,
        healthy: bool | None = None,
        derived: bool = False,
    ) -> None:
        """Sends one status update (fresh uuid); it stays unacknowledged until ACKNOWLEDGED.
        As in Mesos' executors, a check or health update is ``derived`` from the task's last
        update: it repeats its ``healthy`` and carries the last check result; any other
        update is made from scratch, and a task with a check then carries an empty
        ``check_status`` of the check's type (Mesos' TaskStatus requires one on every
        update)."""
        status: dict = {
            "task_id": {"value": task.id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "uuid": lite.new_uuid(),
            "timestamp": time.time(),
        }
        if message is not None:
            status["message"] = message
        if reason is not None:
            status["reason"] = reason
        if derived and healthy is None:
            healthy = task.healthy
        if healthy is not None:
            status["healthy"] = healthy
        task.healthy = healthy
        if task.check is not None:
            check = task.check
            status["check_status"] = check.last if derived else check_runs.empty_status(check.spec)
        if state == "TASK_RUNNING":
            status["container_status"] = {"executor_pid": os.getpid()}
            if not derived:
                status.update(self._running_extras())
        if state in ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR"):
            task.terminal_uuid = status["uuid"]
            if all(t.terminal_uuid is not None for t in self.tasks.values()):
                self.exit_deadline = time.monotonic() + ACK_FAILSAFE
        self.unacked[status["uuid"]] = status
        if self.stream is None:
            return  # goes out with the next SUBSCRIBE
        try:
            code, body = self._call({"type": "UPDATE", "update": {"status": status}})
        except AgentLost as e:
            self._agent_lost(str(e))
            return
        if not 200 <= code < 300:
            self.unacked.pop(status["uuid"], None)
            if task.terminal_uuid == status["uuid"]:
                task.done = True  # refused for good: nothing to wait for
            sys.stderr.write(f"executor: agent refused {state} of {task.id}: {code} {body!r}\n")

    def _running_extras(self) -> dict:
        """Fields a task's TASK_RUNNING carries besides the usual (the Docker executor adds
        the container's ``docker inspect``)."""
        return {}

    def task_exited(self, task: TaskProcess) -> None:
        """Reaps the task, kills what is left of its process group, reports the end."""
        assert task.pid is not None
        _, status = os.waitpid(task.pid, 0)
        self._signal_task(task, _signal.SIGKILL)  # leftovers of the task's group
        self._stop_probe(task, kill=True)
        self._stop_check(task, kill=True)
        if task.pidfd is not None:
            self.poller.unregister(task.pidfd)
            self.by_pidfd.pop(task.pidfd, None)
            os.close(task.pidfd)
            task.pidfd = None
        message = describe_exit(status)
        reason = None
        if task.timed_out:
            state, reason = "TASK_FAILED", "REASON_MAX_COMPLETION_TIME_REACHED"
        else:
            state = exit_state(status, task.killed)
        # Mesos marks a kill by the health checker with healthy=false on the terminal update,
        # and in a group any member's end once one of them was unhealthy.
        unhealthy = task.killed_by_health or (task.group and self.unhealthy)
        self.send_update(task, state, message, reason, False if unhealthy else None)
        if task.group and state != "TASK_FINISHED":
            self._end_group(task)

    def _end_group(self, task: TaskProcess) -> None:
        """Like Mesos' default executor: one failed or killed member ends the group."""
        for other in self.tasks.values():
            if other.group and other is not task:
                self.kill(other.id, None)

    # -- main loop ---------------------------------------------------------------------------

    def finished(self) -> bool:
        """All tasks acknowledged terminal (or shut down without tasks)."""
        if self.tasks:
            return all(t.done for t in self.tasks.values())
        return self.shutting_down

    def run(self) -> int:
        """Runs until every task is over and acknowledged; returns the exit status."""
        self._first_subscribe()
        while not self.finished():
            timeout = self._timeout()
            for fd, _ in self.poller.poll(timeout):
                try:
                    self._dispatch(fd)
                except AgentLost as e:
                    self._agent_lost(str(e))
            now = time.monotonic()
            self._escalate_kills(now)
            self._run_health(now)
            self._run_checks(now)
            if self.exit_deadline is not None and now >= self.exit_deadline:
                sys.stderr.write("executor: terminal update never acknowledged; exiting\n")
                return 0
            if self.stream is None and now >= self.next_subscribe:
                self._resubscribe(now)
        return 0

    def _first_subscribe(self) -> None:
        # The agent is up (it started us) but may be slow to accept under a launch storm. With
        # checkpointing it may also have died meanwhile: wait for its restart like later on.
        delay = 0.02
        started = time.monotonic()
        attempts = 0
        while True:
            try:
                self.subscribe()
                return
            except AgentLost as e:
                why = str(e)
            attempts += 1
            if self.checkpoint:
                if time.monotonic() - started > self.recovery_timeout:
                    break
            elif attempts >= 12:
                break
            time.sleep(delay)
            delay = min(delay * 2, self._backoff_cap() if self.checkpoint else 2.0)
        raise SystemExit(f"executor: cannot subscribe to the agent: {why}")

    def _dispatch(self, fd: int) -> None:
        if self.stream is not None and fd == self.stream.fileno():
            self._read_stream()
        elif fd == self.signal_fd:
            try:
                os.read(fd, 512)
            except BlockingIOError:
                pass
            self.shutdown()
        elif fd in self.by_pidfd:
            self.task_exited(self.by_pidfd[fd])
        elif fd in self.by_probe_pidfd:
            self._probe_exited(self.by_probe_pidfd[fd])
        elif fd in self.by_check_pidfd:
            self._check_exited(self.by_check_pidfd[fd])

    def _timeout(self) -> float | None:
        deadlines = [t.kill_deadline for t in self.tasks.values() if t.kill_deadline]
        deadlines += [t.completion_deadline for t in self.tasks.values() if t.completion_deadline]
        for task in self.tasks.values():
            if task.probe_deadline is not None:
                deadlines.append(task.probe_deadline)
            elif task.health is not None and task.terminal_uuid is None and not task.killed:
                deadlines.append(task.health.next_check)
            if task.check is not None and task.terminal_uuid is None:
                check = task.check
                due = check.deadline if check.pid is not None else check.next_check
                if due is not None:
                    deadlines.append(due)
        if self.exit_deadline is not None:
            deadlines.append(self.exit_deadline)
        if self.stream is None:
            deadlines.append(self.next_subscribe)
        first = min(deadlines, default=_NO_DEADLINE)
        if first == _NO_DEADLINE:
            return None
        return max(0.0, first - time.monotonic())

    def _escalate_kills(self, now: float) -> None:
        for task in self.tasks.values():
            if task.completion_deadline is not None and now >= task.completion_deadline:
                task.completion_deadline = None
                if task.terminal_uuid is None and not task.killed:
                    task.timed_out = True
                    self.kill(task.id, None)
            if task.kill_deadline is not None and now >= task.kill_deadline:
                task.kill_deadline = None
                if task.terminal_uuid is None:
                    self._signal_task(task, _signal.SIGKILL)

    # -- checks (TaskInfo.check) ---------------------------------------------------------------

    def _start_check(self, task: TaskProcess) -> None:
        check = task.info.get("check")
        if check is None:
            return
        try:
            spec = check_runs.parse_check(check)
        except ValueError as e:  # the agent refuses these at launch; an older one may not
            sys.stderr.write(f"executor: the check of {task.id} is invalid: {e}\n")
            return
        task.check = check_runs.CheckState(spec, time.monotonic())

    def _run_checks(self, now: float) -> None:
        """Starts due check probes and ends those past their timeout."""
        for task in self.tasks.values():
            check = task.check
            if check is None or task.terminal_uuid is not None or task.killed:
                continue
            if check.pid is not None:
                if check.deadline is not None and now >= check.deadline:
                    self._stop_check(task, kill=True)
                    self._check_result(task, None, b"", now)
            elif now >= check.next_check:
                self._start_check_probe(task, now)

    def _start_check_probe(self, task: TaskProcess, now: float) -> None:
        check = task.check
        assert check is not None
        program, argv, search = check_runs.probe_command(check.spec)
        read_end = write_end = None
        if check.spec.kind == "HTTP":
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            pid = self._spawn_probe(
                task, check.spec.kind, program, argv, search, write_end, check.spec.command
            )
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            sys.stderr.write(f"executor: cannot start the check of {task.id}: {e}\n")
            for fd in (read_end, write_end):
                if fd is not None:
                    os.close(fd)
            self._check_result(task, None, b"", now)
            return
        if write_end is not None:
            os.close(write_end)
        check.pid, check.pidfd, check.pipe = pid, pidfd, read_end
        check.deadline = now + (check.spec.timeout or _NO_DEADLINE)  # 0: no timeout
        self.by_check_pidfd[pidfd] = task
        self.poller.register(pidfd, select.EPOLLIN)

    def _check_exited(self, task: TaskProcess) -> None:
        check = task.check
        assert check is not None and check.pid is not None
        _, status = os.waitpid(check.pid, 0)
        output = b""
        if check.pipe is not None:
            try:
                output = os.read(check.pipe, 256)
            except BlockingIOError:
                pass
        check.pid = None
        self._stop_check(task, kill=False)
        self._check_result(task, status, output, time.monotonic())

    def _stop_check(self, task: TaskProcess, kill: bool) -> None:
        """Forgets the running check probe (killing and reaping it first if ``kill``)."""
        check = task.check
        if check is None:
            return
        if kill and check.pid is not None:
            try:
                os.killpg(check.pid, _signal.SIGKILL)
                os.waitpid(check.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if check.pidfd is not None:
            self.poller.unregister(check.pidfd)
            self.by_check_pidfd.pop(check.pidfd, None)
            os.close(check.pidfd)
        if check.pipe is not None:
            os.close(check.pipe)
        check.pid = check.pidfd = check.pipe = check.deadline = None

    def _check_result(
        self, task: TaskProcess, status: int | None, output: bytes, now: float
    ) -> None:
        """Reports a changed check result (the task's state, with ``check_status``)."""
        check = task.check
        if check is None or task.terminal_uuid is not None or task.killed:
            return
        if check.result(check_runs.result_status(check.spec, status, output), now) is not None:
            self.send_update(task, "TASK_RUNNING", reason=check_runs.REASON, derived=True)

    # -- health checks -----------------------------------------------------------------------

    def _start_health(self, task: TaskProcess) -> None:
        check = task.info.get("health_check")
        if check is None:
            return
        try:
            spec = health_checks.parse_health_check(check)
        except ValueError as e:
            sys.stderr.write(f"executor: ignoring the health check of {task.id}: {e}\n")
            return
        task.health = health_checks.HealthPolicy(spec, time.monotonic())

    def _run_health(self, now: float) -> None:
        """Starts due probes and fails those past their timeout."""
        for task in self.tasks.values():
            if task.health is None or task.terminal_uuid is not None or task.killed:
                continue
            if task.probe_pid is not None:
                if task.probe_deadline is not None and now >= task.probe_deadline:
                    self._stop_probe(task, kill=True)
                    self._health_result(task, False, now)
            elif task.health.due(now):
                self._start_probe(task, now)

    def _start_probe(self, task: TaskProcess, now: float) -> None:
        assert task.health is not None
        program, argv, search = health_checks.probe_command(task.health.spec)
        try:
            spec = task.health.spec
            pid = self._spawn_probe(task, spec.kind, program, argv, search, None, spec.command)
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            sys.stderr.write(f"executor: cannot start the health check of {task.id}: {e}\n")
            self._health_result(task, False, now)
            return
        task.probe_pid, task.probe_pidfd = pid, pidfd
        task.probe_deadline = now + (task.health.spec.timeout or _NO_DEADLINE)  # 0: no timeout
        self.by_probe_pidfd[pidfd] = task
        self.poller.register(pidfd, select.EPOLLIN)

    def _probe_exited(self, task: TaskProcess) -> None:
        assert task.probe_pid is not None
        _, status = os.waitpid(task.probe_pid, 0)
        self._signal_probe(task)  # leftovers of the probe's group
        task.probe_pid = None
        self._stop_probe(task, kill=False)
        healthy = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        self._health_result(task, healthy, time.monotonic())

    def _signal_probe(self, task: TaskProcess) -> None:
        if task.probe_pid is not None:
            try:
                os.killpg(task.probe_pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _stop_probe(self, task: TaskProcess, kill: bool) -> None:
        """Forgets the running probe (killing and reaping it first if ``kill``)."""
        if kill and task.probe_pid is not None:
            self._signal_probe(task)
            try:
                os.waitpid(task.probe_pid, 0)
            except ChildProcessError:
                pass
        if task.probe_pidfd is not None:
            self.poller.unregister(task.probe_pidfd)
            self.by_probe_pidfd.pop(task.probe_pidfd, None)
            os.close(task.probe_pidfd)
        task.probe_pid = task.probe_pidfd = task.probe_deadline = None

    def _health_result(self, task: TaskProcess, healthy: bool, now: float) -> None:
        """Reports a health change (TASK_RUNNING with ``healthy``); kills the task when the
        failures reached ``consecutive_failures``."""
        if task.health is None or task.terminal_uuid is not None or task.killed:
            return
        outcome = task.health.result(healthy, now)
        if outcome is None:
            return
        reason = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
        self.send_update(task, "TASK_RUNNING", reason=reason, healthy=outcome[0], derived=True)
        if task.group and not outcome[0]:
            self.unhealthy = True
        if outcome[1]:
            task.killed_by_health = True
            self.kill(task.id, None)

    def _agent_lost(self, why: str) -> None:
        self._drop_stream()
        self.exit_deadline = None  # the fail-safe waits for a connected agent
        if not self.checkpoint:
            sys.stderr.write(f"executor: {why}; not checkpointing, killing tasks and exiting\n")
            for task in self.tasks.values():
                self._signal_task(task, _signal.SIGKILL)
            raise SystemExit(1)
        now = time.monotonic()
        if self.disconnected_since is None:
            self.disconnected_since = now
        self.next_subscribe = now + self.backoff

    def _backoff_cap(self) -> float:
        return max(0.1, self.backoff_max / 2)

    def _resubscribe(self, now: float) -> None:
        assert self.disconnected_since is not None
        if now - self.disconnected_since > self.recovery_timeout:
            for task in self.tasks.values():
                self._signal_task(task, _signal.SIGKILL)
            raise SystemExit("executor: agent did not come back within the recovery timeout")
        try:
            self.subscribe()
        except AgentLost:
            self.backoff = min(self.backoff * 2, self._backoff_cap())
            self.next_subscribe = now + self.backoff
        except SystemExit:
            # The agent that came back does not know us: our tasks must not outlive us.
            for task in self.tasks.values():
                self._signal_task(task, _signal.SIGKILL)
            raise


def run_executor(environ: dict[str, str], kind: type[Executor] | None = None) -> int:
    """Runs the executor (``kind``: a subclass, e.g. the Docker executor) with ``environ``
    until it is done; its exit status."""
    try:
        return (kind or Executor)(environ).run()
    except SystemExit as e:
        if isinstance(e.code, str):
            sys.stderr.write(e.code + "\n")
            return 1
        return e.code or 0


def main(
    run: Callable[[dict[str, str]], int] = run_executor, required: tuple[str, ...] = REQUIRED_ENV
) -> int:
    """Entry point of a built-in executor (``run`` with this process's environment, which
    must carry ``required``). Exits the process directly when done: nothing needs cleaning
    up, and interpreter teardown is a measurable part of a short task's cost."""
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        sys.stderr.write(f"executor: not started by an agent: {', '.join(missing)} unset\n")
        return 2
    code = run(dict(os.environ))
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
