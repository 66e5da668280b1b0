"""Checks (``TaskInfo.check``, Mesos' CheckInfo) run by the built-in executor.

Unlike a health check, a check only reports: its latest result goes to the scheduler as
``check_status`` in a status update (the task's current state, reason
``REASON_TASK_CHECK_STATUS_UPDATED``) whenever it changes, and the task's TASK_RUNNING
carries an empty one of the check's type. It never kills the task.

    COMMAND  {"command": {"command": CommandInfo}}  -> {"command": {"exit_code": N}}
    HTTP     {"http": {"port": N, "path": "/x"}}    -> {"http": {"status_code": N}}
    TCP      {"tcp": {"port": N}}                   -> {"tcp": {"succeeded": true|false}}

Timing (Mesos' defaults): first ``delay_seconds`` (15) after the task started, then every
``interval_seconds`` (10) after each result; a probe still running after ``timeout_seconds``
(20; 0: no timeout) is killed and its result is empty (no exit or status code; TCP
``succeeded: false``).
Each probe is a process of its own (HTTP and TCP through `butte.agent.executor.probe`), like
health checks. Imports stay light: this module loads in every executor.
"""

from __future__ import annotations

from butte.agent.executor import health

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KINDS = ("COMMAND", "HTTP", "TCP")
REASON = "REASON_TASK_CHECK_STATUS_UPDATED"


class CheckSpec:
    """A parsed CheckInfo."""

    __slots__ = ("kind", "command", "port", "path", "delay", "interval", "timeout")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.command: dict = {}
        self.port = 0
        self.path = "/"
        self.delay = health.DEFAULT_DELAY
        self.interval = health.DEFAULT_INTERVAL
        self.timeout = health.DEFAULT_TIMEOUT


def parse_check(check: Any) -> CheckSpec:
    """A CheckSpec from TaskInfo.check JSON; ValueError says what is wrong."""
    if not isinstance(check, dict):
        raise ValueError("check must be an object")
    kind = check.get("type")
    if kind not in KINDS:
        raise ValueError(f"unsupported check type {kind!r}")
    spec = CheckSpec(kind)
    body = check.get(kind.lower())
    if not isinstance(body, dict):
        raise ValueError(f"'{kind.lower()}' is required for a {kind} check")
    if kind == "COMMAND":
        command = body.get("command")
        if not isinstance(command, dict) or not command.get("value"):
            raise ValueError("a COMMAND check needs 'command': {'command': {'value': ...}}")
        spec.command = command
    else:
        port = body.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"the check needs a 'port' in 1-65535, got {port!r}")
        spec.port = port
        if kind == "HTTP":
            spec.path = str(body.get("path") or "/")
            if not spec.path.startswith("/"):
                spec.path = "/" + spec.path
    spec.delay = health._number(check, "delay_seconds", health.DEFAULT_DELAY)
    spec.interval = health._number(check, "interval_seconds", health.DEFAULT_INTERVAL)
    spec.timeout = health._number(check, "timeout_seconds", health.DEFAULT_TIMEOUT)
    return spec


def probe_command(spec: CheckSpec) -> tuple[str, list[str], bool]:
    """(program, argv, search PATH) of one probe process."""
    if spec.kind == "TCP":
        args = ["tcp", "127.0.0.1", str(spec.port), str(spec.timeout)]
    else:
        args = ["http-status", f"http://127.0.0.1:{spec.port}{spec.path}", str(spec.timeout)]
    return health.probe_process(spec.kind, spec.command, args)


def empty_status(spec: CheckSpec) -> dict:
    """The check_status of a check that has no result yet."""
    return {"type": spec.kind, spec.kind.lower(): {}}


def result_status(spec: CheckSpec, wait_status: int | None, output: bytes) -> dict:
    """The check_status of one probe: ``wait_status`` None means it timed out."""
    import os

    exited = wait_status is not None and os.WIFEXITED(wait_status)
    code = os.WEXITSTATUS(wait_status) if exited and wait_status is not None else None
    if spec.kind == "COMMAND":
        return {"type": "COMMAND", "command": {} if code is None else {"exit_code": code}}
    if spec.kind == "TCP":
        # Timed out: no result, as for the other kinds (Mesos leaves the message empty).
        return {"type": "TCP", "tcp": {} if wait_status is None else {"succeeded": code == 0}}
    text = output.decode(errors="replace").strip()
    if code == 0 and text.isdigit():
        return {"type": "HTTP", "http": {"status_code": int(text)}}
    return {"type": "HTTP", "http": {}}


class CheckState:
    """One task's check: when the next probe is due, the running probe, the last result."""

    __slots__ = ("spec", "next_check", "pid", "pidfd", "pipe", "deadline", "last")

    def __init__(self, spec: CheckSpec, started: float) -> None:
        self.spec = spec
        self.next_check = started + spec.delay
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.pipe: int | None = None  # read end of an HTTP probe's stdout
        self.deadline: float | None = None
        self.last: dict = empty_status(spec)

    def result(self, status: dict, now: float) -> dict | None:
        """Takes a probe's check_status; returns it if it changed (to be reported)."""
        self.next_check = now + self.spec.interval
        if status == self.last:
            return None
        self.last = status
        return status
