"""``butte task exec [-i] [-t] ID -- CMD [ARG...]`` and ``butte task attach ID``: a command
inside a running task's container, and a running task's output (docs/exec.md).

Both find the task and its agent through the master (GET_TASKS, GET_AGENTS), then talk to
the agent's v1 operator API directly:

- exec: LAUNCH_NESTED_CONTAINER_SESSION (a nested container under the task's container,
  its output streamed back as RecordIO ProcessIO records and printed as it comes),
  ATTACH_CONTAINER_INPUT on a second connection (with ``-i`` what this command reads on
  stdin, window sizes with ``-t``, heartbeats; without ``-i`` just the end of input), then
  WAIT_NESTED_CONTAINER for the exit status, which becomes this command's (128+N for a
  signal), and REMOVE_NESTED_CONTAINER. ``-t`` puts the local terminal in raw mode and
  sends its size at the start (in the launch, and again first on the input stream, in case
  it changed in between) and on every SIGWINCH, with or without ``-i`` (without it the
  input stream carries the end of input and then window sizes only). Ctrl-C without ``-t``
  ends the session: the agent kills the command when the session's connection closes.
- attach: ATTACH_CONTAINER_OUTPUT of the task's container: its stdout and stderr from now
  until it ends (tasks have no TTY, so there is no input to attach to).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import queue
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from butte.cli.common import CliError, apply_env_defaults
from butte.cli.output import NOT_FOUND, UNREACHABLE, add_common, client, guarded
from butte.cli.task import agent_address, find_task
from butte.client.operator import OperatorClient, OperatorError
from butte.core import task_states
from butte.core.recordio import RecordIOReader

HEARTBEAT_INTERVAL = 30.0
STREAM_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/recordio",
    "Message-Accept": "application/json",
}


def add_commands(actions: argparse._SubParsersAction) -> None:
    """Adds ``exec`` and ``attach`` to ``butte task``'s actions."""
    run = actions.add_parser(
        "exec",
        help="run a command inside a running task's container",
        description="Runs CMD in a nested container of the task: in its namespaces and "
        "cgroups, as its user. Prints the command's output and exits with its status.",
    )
    run.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    run.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    run.add_argument("--user", default=None, help="run as this user (default: the task's)")
    attach = actions.add_parser(
        "attach", help="print a running task's output as it comes, until it ends"
    )
    for sub, handler in ((run, cmd_exec), (attach, cmd_attach)):
        add_common(sub, json_flag=False)
        sub.add_argument("task_id", metavar="TASK_ID", help="task id (or a unique prefix)")
        sub.add_argument("--framework", help="framework id (prefix), if the id is ambiguous")
        sub.set_defaults(handler=guarded(handler))
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]")
    for sub in (run, attach):
        apply_env_defaults(sub, os.environ)


# -- finding the container -------------------------------------------------------------------


def task_container(args: argparse.Namespace) -> tuple[OperatorClient, str, str]:
    """(agent client, the task's top-level container id, task id) of a running task."""
    master = client(args)
    task = find_task(master, args.task_id, args.framework)
    task_id = task["task_id"]["value"]
    if task_states.is_terminal(task.get("state", "")):
        raise CliError(f"task {task_id} has ended ({task['state']})", NOT_FOUND)
    container = None
    for status in reversed(task.get("statuses") or []):
        found = (status.get("container_status") or {}).get("container_id") or {}
        # A task group member's container is nested in its executor's: use the executor's.
        while found.get("parent"):
            found = found["parent"]
        if found.get("value"):
            container = str(found["value"])
            break
    if container is None:
        raise CliError(f"task {task_id} has no container yet; try again", NOT_FOUND)
    address = agent_address(master, task["agent_id"]["value"])
    agent = OperatorClient(
        address,
        timeout=master.timeout,
        principal=getattr(args, "principal", None),
        secret=getattr(args, "secret", None),
    )
    return agent, container, task_id


def _open_stream(agent: OperatorClient, body: dict[str, Any], what: str) -> Any:
    """(connection, response) of a call answered with a stream; CliError unless 200."""
    host, port = agent.address
    conn = agent.connection(None)
    try:
        conn.request("POST", "/api/v1", json.dumps(body).encode(), {**agent.auth, **STREAM_HEADERS})
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise CliError(f"cannot reach agent {host}:{port}: {e}", UNREACHABLE) from None
    if response.status != 200:
        error = _refused(response, what)
        conn.close()
        raise error
    return conn, response


def _records(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON records of a RecordIO response body, as they arrive."""
    reader = RecordIOReader()
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
        for record in reader.feed(chunk):
            yield json.loads(record)


def _print_output(response: http.client.HTTPResponse) -> None:
    """Writes ProcessIO DATA records to stdout/stderr as they come."""
    for record in _records(response):
        data = record.get("data") or {}
        if record.get("type") != "DATA" or not data.get("data"):
            continue
        out = sys.stderr if data.get("type") == "STDERR" else sys.stdout
        out.buffer.write(base64.b64decode(data["data"]))
        out.buffer.flush()


def _refused(response: http.client.HTTPResponse, what: str) -> CliError:
    text = response.read().decode(errors="replace").strip()
    return CliError(f"agent refused {what}: {response.status} {text[:300]}", NOT_FOUND)


# -- exec --------------------------------------------------------------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise CliError("give the command to run after '--': butte task exec ID -- CMD", 2)
    if args.tty and not os.isatty(0):
        raise CliError("-t needs a terminal on stdin", 2)
    agent, parent, task_id = task_container(args)
    container_id = {"value": str(uuid.uuid4()), "parent": {"value": parent}}
    launch: dict[str, Any] = {
        "container_id": container_id,
        "command": {"shell": False, "value": command[0], "arguments": command},
    }
    if args.user:
        launch["command"]["user"] = args.user
    if args.tty:
        term = {"name": "TERM", "value": os.environ.get("TERM") or "xterm"}
        launch["command"]["environment"] = {"variables": [term]}
        size = os.get_terminal_size(0)
        launch["container"] = {
            "type": "MESOS",
            "tty_info": {"window_size": {"rows": size.lines, "columns": size.columns}},
        }
    body = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": launch}
    conn, response = _open_stream(agent, body, f"to run a command in {task_id}")
    inputs = _Input(agent, container_id, tty=args.tty)
    restore = _raw_mode() if args.tty else None
    try:
        inputs.start(forward=args.interactive)
        _print_output(response)
    except KeyboardInterrupt:
        return 130
    finally:
        conn.close()
        if restore is not None:
            restore()
    return _wait_and_remove(agent, container_id)


def _wait_and_remove(agent: OperatorClient, container_id: dict[str, Any]) -> int:
    try:
        result = agent.call("WAIT_NESTED_CONTAINER", {"container_id": container_id})
        agent.call("REMOVE_NESTED_CONTAINER", {"container_id": container_id})
    except OperatorError as e:
        raise CliError(f"agent refused to report the command's end: {e.message}") from None
    status = result.get("exit_status")
    if status is None:
        return 1
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _raw_mode() -> Any:
    """Puts the terminal on stdin in raw mode; returns what restores it."""
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0, termios.TCSANOW)  # keeps what was typed ahead

    def restore() -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)

    return restore


class _Input:
    """ATTACH_CONTAINER_INPUT on a connection of its own (a streamed request body), fed by
    a thread reading stdin, SIGWINCH and a heartbeat timer."""

    def __init__(self, agent: OperatorClient, container_id: dict[str, Any], tty: bool) -> None:
        self.agent = agent
        self.container_id = container_id
        self.tty = tty
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def start(self, forward: bool) -> None:
        if self.tty:
            # Window sizes go along whether stdin is forwarded or not: the stream stays open
            # for them (a full-screen command without input still redraws).
            signal.signal(signal.SIGWINCH, lambda *_: self._window_size())
            self._window_size()
        if forward:
            threading.Thread(target=self._read_stdin, daemon=True).start()
        else:
            self.queue.put(_stdin(b""))
            if not self.tty:
                self.queue.put(None)
        threading.Thread(target=self._send, daemon=True).start()

    def _read_stdin(self) -> None:
        while True:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            self.queue.put(_stdin(data))
            if not data:
                self.queue.put(None)
                return

    def _window_size(self) -> None:
        try:
            size = os.get_terminal_size(0)
        except OSError:
            return  # stdin is no terminal any more: no size to send
        window = {"rows": size.lines, "columns": size.columns}
        control = {"type": "TTY_INFO", "tty_info": {"window_size": window}}
        self.queue.put({"type": "CONTROL", "control": control})

    def _body(self) -> Iterator[bytes]:
        yield _record({"type": "CONTAINER_ID", "container_id": self.container_id})
        while True:
            try:
                item = self.queue.get(timeout=HEARTBEAT_INTERVAL)
            except queue.Empty:
                interval = {"nanoseconds": int(HEARTBEAT_INTERVAL * 1e9)}
                item = {"type": "CONTROL", "control": {"type": "HEARTBEAT", "heartbeat": {}}}
                item["control"]["heartbeat"]["interval"] = interval
            if item is None:
                return
            yield _record({"type": "PROCESS_IO", "process_io": item})

    def _send(self) -> None:
        """Sends the input stream; its answer does not matter once the command ended."""
        try:
            conn = self.agent.connection(None)
            headers = {
                **self.agent.auth,
                "Content-Type": "application/recordio",
                "Message-Content-Type": "application/json",
            }
            conn.request("POST", "/api/v1", self._body(), headers, encode_chunked=True)
            conn.getresponse().read()
            conn.close()
        except (OSError, http.client.HTTPException):
            pass


def _stdin(data: bytes) -> dict[str, Any]:
    return {"type": "DATA", "data": {"type": "STDIN", "data": base64.b64encode(data).decode()}}


def _record(payload: dict[str, Any]) -> bytes:
    body = json.dumps(
        {"type": "ATTACH_CONTAINER_INPUT", "attach_container_input": payload}
    ).encode()
    return str(len(body)).encode() + b"\n" + body


# -- attach ------------------------------------------------------------------------------------


def cmd_attach(args: argparse.Namespace) -> int:
    agent, container, task_id = task_container(args)
    body = {
        "type": "ATTACH_CONTAINER_OUTPUT",
        "attach_container_output": {"container_id": {"value": container}},
    }
    conn, response = _open_stream(agent, body, f"to attach to {task_id}")
    try:
        _print_output(response)
    except KeyboardInterrupt:
        return 130
    finally:
        conn.close()
    return 0
