"""``butte task info|cat|tail|ls|kill ID``: one task and its sandbox, through the master.

The task is looked up with GET_TASKS (live, unreachable and completed tasks; an exact id, or
a prefix that names one task). Its sandbox is read through the master's LIST_FILES and
READ_FILE, which forward to the agent holding it (`butte.master.files`): the executor's
``runs/latest`` directory, or ``tasks/<id>`` inside it for a member of a task group.

``task tail -f`` follows the file until the task has ended and everything it wrote was
printed (or until Ctrl-C). It rides out the task's agent restarting (and the master failing
over): a read that fails meanwhile is retried with the same offset, since the agent keeps the
sandbox, and it gives up (exit 1) only once the task is gone for good: ended (or unknown to
the master) with its sandbox no longer readable.

``task kill`` takes Mesos' operator path: KILL_CONTAINER (default signal SIGKILL, as in
Mesos) on the v1 operator API of the agent running the task, found from the master's
GET_AGENTS, with the container id from the task's latest status. The container is the
task's executor (a custom executor's other tasks end with it). It then waits until the
master reports the task ended and prints its final state.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat as stat_module
import sys
import time
from typing import Any

from rich.table import Table

from butte.cli.common import CliError, apply_env_defaults
from butte.cli.output import (
    NOT_FOUND,
    add_common,
    client,
    guarded,
    ns_seconds,
    print_json,
    progress,
    scalars,
    stdout,
)
from butte.client.operator import (
    MasterUnreachable,
    OperatorClient,
    OperatorError,
    sandbox_path,
)
from butte.core import task_states

CHUNK = 1 << 20
FOLLOW_INTERVAL = 0.5
# While `tail -f` cannot read the file, how often it asks the master how the task is, and how
# long a task the master does not know is waited for (a master that failed over learns its
# tasks again as their agents re-register).
STATE_CHECK_SECONDS = 2.0
UNKNOWN_TASK_GRACE_SECONDS = 15.0
# Answers that pass while an agent restarts or a master fails over: the agent is registered
# but not connected (503), did not answer in time (503, 504), a proxy between failed (502).
_PASSING_STATUSES = (502, 503, 504)


def add_commands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds ``task`` and its actions; returns the actions (`butte.cli.task_exec` adds more)."""
    parent = commands.add_parser("task", help="one task: info, cat, tail, ls, kill, exec, attach")
    actions = parent.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="details and status history of a task")
    cat = actions.add_parser("cat", help="print a file of the task's sandbox (stdout default)")
    tail = actions.add_parser("tail", help="print the end of a sandbox file; -f follows it")
    ls = actions.add_parser("ls", help="list the task's sandbox (or a directory in it)")
    kill = actions.add_parser(
        "kill",
        help="kill the task's container on its agent (KILL_CONTAINER)",
        description="Sends KILL_CONTAINER for the task's container to the agent running it "
        "(its executor: a custom executor's other tasks end too), then waits until the "
        "master reports the task ended.",
    )
    handlers = ((info, cmd_info), (cat, cmd_cat), (tail, cmd_tail), (ls, cmd_ls), (kill, cmd_kill))
    for sub, handler in handlers:
        add_common(sub, json_flag=sub in (info, ls, kill))
        sub.add_argument("task_id", metavar="TASK_ID", help="task id (or a unique prefix)")
        sub.add_argument("--framework", help="framework id (prefix), if the id is ambiguous")
        sub.set_defaults(handler=guarded(handler))
    for sub in (cat, tail):
        sub.add_argument("file", nargs="?", default=None, help="file in the sandbox (stdout)")
        sub.add_argument("--stderr", action="store_true", help="the task's stderr")
    tail.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new output until the task has ended and all of it was printed; "
        "a restart of the task's agent (or a master failover) is waited out, the read "
        "going on where it stopped; it ends with an error once the task is gone for good",
    )
    tail.add_argument("-n", "--lines", type=int, default=10, help="lines to show (10)")
    ls.add_argument("path", nargs="?", default="", help="directory inside the sandbox")
    kill.add_argument(
        "--signal",
        type=_signal_number,
        default=int(signal.SIGKILL),
        help="signal: KILL (the default, as in Mesos), TERM, 15 ...",
    )
    kill.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the task to end (default 30; 0: do not wait)",
    )
    for sub in (info, cat, tail, ls, kill):
        apply_env_defaults(sub, os.environ)
    return actions


# -- finding the task and its sandbox -----------------------------------------------------------


def find_task(master: OperatorClient, task_id: str, framework: str | None) -> dict[str, Any]:
    """The v1 Task named ``task_id`` (exact, else unique prefix); CliError if none or many."""
    with progress("Looking the task up..."):
        answer = master.call("GET_TASKS")
    every = [
        *answer.get("tasks", []),
        *answer.get("unreachable_tasks", []),
        *answer.get("completed_tasks", []),
    ]
    if framework:
        every = [t for t in every if t["framework_id"]["value"].startswith(framework)]
    exact = [t for t in every if t["task_id"]["value"] == task_id]
    found = exact or [t for t in every if t["task_id"]["value"].startswith(task_id)]
    if not found:
        raise CliError(f"no task '{task_id}'", NOT_FOUND)
    keys = {(t["framework_id"]["value"], t["task_id"]["value"]) for t in found}
    if len(keys) > 1:
        names = ", ".join(sorted(f"{tid} ({fid})" for fid, tid in keys)[:5])
        raise CliError(f"'{task_id}' names several tasks: {names}; be more precise", NOT_FOUND)
    # The same task may show up live and completed (a re-launch): the live one first.
    return found[0]


def task_sandbox(master: OperatorClient, task: dict[str, Any]) -> str:
    """The master-side path of the task's own sandbox directory."""
    base = sandbox_path(task)
    if task.get("executor_id"):
        own = f"{base}/tasks/{task['task_id']['value']}"
        try:
            master.list_files(own)
            return own
        except OperatorError:
            pass
    return base


def _file_of(args: argparse.Namespace) -> str:
    name = args.file or ("stderr" if args.stderr else "stdout")
    if name.startswith("/") or ".." in name.split("/"):
        raise CliError(f"'{name}' is not a path inside the sandbox", 2)
    return name


def _open(args: argparse.Namespace) -> tuple[OperatorClient, dict[str, Any], str]:
    master = client(args)
    task = find_task(master, args.task_id, args.framework)
    try:
        sandbox = task_sandbox(master, task)
    except OperatorError as e:
        raise CliError(f"cannot reach the sandbox of {args.task_id}: {e.message}") from None
    return master, task, sandbox


# -- subcommands --------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    master = client(args)
    task = find_task(master, args.task_id, args.framework)
    if args.json:
        print_json(task)
        return 0
    res = scalars(task.get("resources", []))
    rows = [
        ("ID", task["task_id"]["value"]),
        ("Name", task.get("name", "")),
        ("State", task.get("state", "?")),
        ("Framework", task["framework_id"]["value"]),
        ("Agent", task.get("agent_id", {}).get("value", "")),
        ("Executor", (task.get("executor_id") or {}).get("value", "(command executor)")),
        ("Resources", ", ".join(f"{k}:{v:g}" for k, v in sorted(res.items())) or "-"),
        # A task group member's own directory, as `task cat` reads it (and Mesos' UI shows).
        ("Sandbox", task_sandbox(master, task)),
    ]
    console = stdout()
    for key, value in rows:
        console.print(f"[bold]{key + ':':<11}[/bold] {value}", highlight=False)
    table = Table("TIME", "STATE", "SOURCE", "REASON", "MESSAGE", title="Status history")
    for status in task.get("statuses", []):
        stamp = status.get("timestamp")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"
        table.add_row(
            when,
            status.get("state", ""),
            status.get("source", "").removeprefix("SOURCE_"),
            status.get("reason", "").removeprefix("REASON_"),
            status.get("message", ""),
        )
    console.print(table)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    master, _, sandbox = _open(args)
    path = args.path.strip("/")
    if ".." in path.split("/"):
        raise CliError(f"'{args.path}' is not a path inside the sandbox", 2)
    target = f"{sandbox}/{path}" if path else sandbox
    try:
        entries = master.list_files(target)
    except OperatorError as err:
        raise CliError(f"cannot list '{args.path or '.'}': {err.message}", NOT_FOUND) from None
    if args.json:
        print_json(entries)
        return 0
    table = Table("MODE", "NLINK", "UID", "GID", "SIZE", "MTIME", "NAME", box=None)
    for e in entries:
        mtime = ns_seconds(e.get("mtime")) or 0
        table.add_row(
            stat_module.filemode(int(e.get("mode", 0))),
            str(e.get("nlink", "")),
            str(e.get("uid", "")),
            str(e.get("gid", "")),
            str(e.get("size", "")),
            time.strftime("%b %d %H:%M", time.localtime(mtime)),
            e.get("path", "").rsplit("/", 1)[-1],
        )
    stdout().print(table)
    return 0


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def cmd_cat(args: argparse.Namespace) -> int:
    master, _, sandbox = _open(args)
    path = f"{sandbox}/{_file_of(args)}"
    offset = 0
    while True:
        try:
            size, data = master.read_file(path, offset, CHUNK)
        except OperatorError as e:
            raise CliError(f"cannot read {_file_of(args)}: {e.message}", NOT_FOUND) from None
        _write(data)
        offset += len(data)
        if not data or offset >= size:
            return 0


def cmd_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise CliError("--lines must not be negative", 2)
    master, task, sandbox = _open(args)
    path = f"{sandbox}/{_file_of(args)}"
    reader = _Reader(master, path, task, _file_of(args), args.follow)
    try:
        size, _ = reader.read(0, 0)
        offset = _print_last_lines(reader, size, args.lines)
        while args.follow:
            offset = _follow(master, path, offset, task, reader)
            if offset < 0:
                return 0
    except OperatorError as e:
        raise CliError(f"cannot read {_file_of(args)}: {e.message}", NOT_FOUND) from None
    return 0


class _Reader:
    """Reads one file of a task's sandbox through the master for ``task tail``.

    With ``follow``, a read that fails for a reason that passes is retried, with the same
    offset, until it succeeds: the master unreachable (it restarts or fails over), the agent
    disconnected or not answering (it restarts; it keeps the sandbox), and, once the file has
    been read, not found (an agent the master removed may re-register; a file may be briefly
    missing while its agent recovers). One note on stderr says the reads stopped, one that
    they go on. It gives up (CliError) once the task is gone for good: the file cannot be
    found and the master reports the task ended, or has not known it for
    `UNKNOWN_TASK_GRACE_SECONDS`."""

    def __init__(
        self, master: OperatorClient, path: str, task: dict[str, Any], name: str, follow: bool
    ) -> None:
        self.master = master
        self.path = path
        self.task_id = task["task_id"]["value"]
        self.framework = task["framework_id"]["value"]
        self.name = name
        self.follow = follow
        self.read_once = False
        self.failing_since: float | None = None
        self.last_check: float | None = None
        self.unknown_since: float | None = None

    def read(self, offset: int, length: int) -> tuple[int, bytes]:
        """(file size, bytes from ``offset``); raises OperatorError or MasterUnreachable
        for failures that do not pass (or all of them, without ``follow``)."""
        while True:
            try:
                answer = self.master.read_file(self.path, offset, length)
            except (OperatorError, MasterUnreachable) as e:
                if not self.follow or not self._passes(e):
                    raise
                self._wait(e, offset)
                continue
            self.read_once = True
            if self.failing_since is not None:
                self.failing_since = self.unknown_since = None
                _note(f"reading {self.name} of {self.task_id} again from byte {offset}")
            return answer

    def state(self) -> str | None:
        """The task's state at the master (None: it does not know the task)."""
        return _state_of(self.master, self.framework, self.task_id)

    def _passes(self, error: OperatorError | MasterUnreachable) -> bool:
        if isinstance(error, MasterUnreachable):
            return True
        return error.status in _PASSING_STATUSES or (error.status == 404 and self.read_once)

    def _wait(self, error: OperatorError | MasterUnreachable, offset: int) -> None:
        """One failed read: says so the first time, gives up if the task is gone for good,
        else waits a moment before the next try."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            _note(
                f"cannot read {self.name} of {self.task_id} ({_reason(error)}); still "
                f"following: retrying from byte {offset} while its agent (or the master) "
                "comes back"
            )
        if self.last_check is None or now - self.last_check >= STATE_CHECK_SECONDS:
            self.last_check = now
            gone = self._gone(error, offset, now)
            if gone is not None:
                raise CliError(gone, NOT_FOUND)
        time.sleep(FOLLOW_INTERVAL)

    def _gone(
        self, error: OperatorError | MasterUnreachable, offset: int, now: float
    ) -> str | None:
        """Why the task is gone for good, or None while its output may still be read."""
        if not isinstance(error, OperatorError) or error.status != 404:
            # The agent is registered (the master decides soon whether it is back or removed)
            # or the master is away: nothing is known yet.
            return None
        try:
            state = self.state()
        except (OperatorError, MasterUnreachable):
            return None
        printed = f"{self.name} was printed up to byte {offset}"
        if state is None:
            self.unknown_since = self.unknown_since if self.unknown_since is not None else now
            if now - self.unknown_since < UNKNOWN_TASK_GRACE_SECONDS:
                return None
            return (
                f"task {self.task_id} is no longer known to the master and its sandbox cannot "
                f"be read ({error.message}); {printed}"
            )
        self.unknown_since = None
        if task_states.is_terminal(state):
            return (
                f"task {self.task_id} ended ({state}) and its sandbox cannot be read any more "
                f"({error.message}); {printed}"
            )
        return None


def _reason(error: OperatorError | MasterUnreachable) -> str:
    return error.message if isinstance(error, OperatorError) else str(error)


def _note(message: str) -> None:
    """A note of ``tail -f`` on stderr (stdout carries the file alone)."""
    print(f"butte: {message}", file=sys.stderr, flush=True)


def _print_last_lines(reader: _Reader, size: int, lines: int) -> int:
    """Prints the last ``lines`` lines of the file (looking back at most CHUNK bytes);
    returns the offset where the file ended."""
    window = 4096
    while True:
        start = max(0, size - window)
        _, data = reader.read(start, size - start)
        if start == 0 or window >= CHUNK or data.count(b"\n") > lines:
            break
        window *= 4
    if lines > 0:
        body = data[:-1] if data.endswith(b"\n") else data
        kept = body.split(b"\n")[-lines:]
        _write(b"\n".join(kept) + (b"\n" if data.endswith(b"\n") else b""))
    return start + len(data)


def _rest_of_rotated(master: OperatorClient, path: str, offset: int) -> int:
    """Prints ``path`` from ``offset`` to its end (nothing if it is gone); returns 0, where
    reading the truncated file starts again."""
    while True:
        try:
            _, data = master.read_file(path, offset, CHUNK)
        except OperatorError:
            return 0
        if not data:
            return 0
        _write(data)
        offset += len(data)


def _follow(
    master: OperatorClient,
    path: str,
    offset: int,
    task: dict[str, Any],
    reader: _Reader | None = None,
) -> int:
    """Prints what was appended to ``path`` until the task ends (read through ``reader``, by
    default one that follows); -1 once it ended and all was printed."""
    if reader is None:
        reader = _Reader(master, path, task, path.rsplit("/", 1)[-1], follow=True)
    last_check = 0.0
    while True:
        size, data = reader.read(offset, CHUNK)
        if data:
            _write(data)
            offset += len(data)
            continue
        if size < offset:
            # Rotated (--container_logger=logrotate): the rest of what we were reading is
            # now the start of <file>.1; print it, then go on from the new file's start.
            offset = _rest_of_rotated(master, path + ".1", offset)
            continue
        now = time.monotonic()
        if now - last_check > STATE_CHECK_SECONDS:
            last_check = now
            try:
                state = reader.state()
            except MasterUnreachable:
                continue  # the next read waits for the master
            if state is None or task_states.is_terminal(state):
                size, data = reader.read(offset, CHUNK)
                if not data and size >= offset:
                    return -1
                continue
        time.sleep(FOLLOW_INTERVAL)


def _state_of(master: OperatorClient, framework: str, task_id: str) -> str | None:
    tasks = master.get_json("/master/tasks", framework_id=framework, task_id=task_id, limit=1)
    found = tasks.get("tasks", [])
    return found[0].get("state") if found else None


# -- kill ---------------------------------------------------------------------------------------


def _signal_number(text: str) -> int:
    """``KILL``, ``SIGTERM``, ``15`` -> the signal's number."""
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
    else:
        try:
            number = int(signal.Signals["SIG" + name.removeprefix("SIG")])
        except KeyError:
            raise argparse.ArgumentTypeError(f"unknown signal '{text}'") from None
    if number not in {int(s) for s in signal.valid_signals()} or number == 0:
        raise argparse.ArgumentTypeError(f"invalid signal {text}")
    return number


def agent_address(master: OperatorClient, agent_id: str) -> str:
    """``IP:PORT`` of an agent's HTTP API, from the master's GET_AGENTS (its ``pid``,
    ``slave(1)@IP:PORT``, else hostname and port)."""
    for agent in master.call("GET_AGENTS").get("agents", []):
        info = agent.get("agent_info", {})
        if info.get("id", {}).get("value") != agent_id:
            continue
        pid = str(agent.get("pid", ""))
        if "@" in pid:
            return pid.rsplit("@", 1)[1]
        return f"{info.get('hostname')}:{info.get('port', 5051)}"
    raise CliError(f"agent {agent_id} is not registered with the master", NOT_FOUND)


def container_id(task: dict[str, Any]) -> str:
    """The id of the task's container, from its latest status that names one."""
    for status in reversed(task.get("statuses") or []):
        container = (status.get("container_status") or {}).get("container_id") or {}
        if container.get("parent"):
            raise CliError(
                f"task {task['task_id']['value']} runs in a nested container (a task group "
                "member); the agent kills only top-level containers",
                NOT_FOUND,
            )
        if container.get("value"):
            return str(container["value"])
    raise CliError(f"task {task['task_id']['value']} has no container yet; try again", NOT_FOUND)


def cmd_kill(args: argparse.Namespace) -> int:
    if args.wait < 0:
        raise CliError("--wait must not be negative", 2)
    master = client(args)
    task = find_task(master, args.task_id, args.framework)
    task_id, framework = task["task_id"]["value"], task["framework_id"]["value"]
    if task_states.is_terminal(task.get("state", "")):
        raise CliError(f"task {task_id} has already ended ({task['state']})", NOT_FOUND)
    address = agent_address(master, task["agent_id"]["value"])
    payload = {"container_id": {"value": container_id(task)}, "signal": args.signal}
    # The operator's credentials go to the agent too (one run with --authenticate_http_*).
    principal, secret = master.credentials()
    agent = OperatorClient(address, timeout=master.timeout, principal=principal, secret=secret)
    try:
        with progress(f"Killing {task_id} on {address}..."):
            agent.call("KILL_CONTAINER", payload)
    except OperatorError as e:
        raise CliError(f"agent {address} refused to kill {task_id}: {e.message}") from None
    except MasterUnreachable as e:
        reason = str(e).split(": ", 1)[-1]  # the client words it for a master
        raise CliError(f"cannot reach agent {address}: {reason}", 2) from None
    state = _wait_ended(master, framework, task_id, args.wait)
    if args.json:
        print_json({"task_id": task_id, "framework_id": framework, "state": state})
    elif state is None:
        print(f"Sent signal {args.signal} to {task_id}; it has not ended yet")
    else:
        print(f"Task {task_id} ended: {state}")
    return 0


def _wait_ended(master: OperatorClient, framework: str, task_id: str, wait: float) -> str | None:
    """The task's terminal state once the master reports it (None after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while wait > 0:
        state = _state_of(master, framework, task_id)
        if state is not None and task_states.is_terminal(state):
            return state
        if time.monotonic() > deadline:
            return None
        time.sleep(FOLLOW_INTERVAL / 2)
    return None
