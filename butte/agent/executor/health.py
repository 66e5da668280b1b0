"""Health checks run by the built-in executor (Mesos' health checker; docs/protocol.md §1.8,
health-checks.md).

A task's ``health_check`` names one probe: ``COMMAND`` (a shell command or argv in the task's
environment and sandbox; exit 0 = healthy), ``HTTP`` (GET ``<scheme>://127.0.0.1:<port><path>``;
a status in ``statuses``, else 200-399, = healthy) or ``TCP`` (a connection to
``127.0.0.1:<port>`` = healthy). Every probe is a process of its own, like Mesos (which runs
``curl`` and ``mesos-tcp-connect``), so a stuck probe never blocks the executor: it is killed
after ``timeout_seconds`` (0: never, as in Mesos) and counts as a failure.

`HealthPolicy` is the timing and counting, pure and fed ``now``: the first probe runs
``delay_seconds`` after the task started, the next ``interval_seconds`` after each result.
Failures within ``grace_period_seconds`` of the start are ignored until the task was healthy
once. Each counted failure is reported (TASK_RUNNING, ``healthy: false``); the first success,
and the first after failures, are reported (``healthy: true``); when ``consecutive_failures``
failures in a row are reached the executor kills the task (its TASK_KILLED carries
``healthy: false``). Imports stay light: this module loads in every executor.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DELAY = 15.0
DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 20.0
DEFAULT_CONSECUTIVE_FAILURES = 3
DEFAULT_GRACE_PERIOD = 10.0
KINDS = ("COMMAND", "HTTP", "TCP")
# The directory butte is imported from (probe processes import it from there too).
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class HealthSpec:
    """A parsed ``HealthCheck``: what to probe and its timings (Mesos defaults)."""

    __slots__ = (
        "kind",
        "command",
        "port",
        "path",
        "scheme",
        "statuses",
        "delay",
        "interval",
        "timeout",
        "consecutive_failures",
        "grace_period",
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.command: dict = {}
        self.port = 0
        self.path = "/"
        self.scheme = "http"
        self.statuses: list[int] = []
        self.delay = DEFAULT_DELAY
        self.interval = DEFAULT_INTERVAL
        self.timeout = DEFAULT_TIMEOUT
        self.consecutive_failures = DEFAULT_CONSECUTIVE_FAILURES
        self.grace_period = DEFAULT_GRACE_PERIOD


def _number(check: dict, name: str, default: float) -> float:
    value = check.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a number") from None
    if number < 0:
        raise ValueError(f"'{name}' must not be negative")
    return number


def parse_health_check(check: Any) -> HealthSpec:
    """A HealthSpec from TaskInfo.health_check JSON; ValueError says what is wrong. Without
    ``type``, the one of ``command``/``http``/``tcp`` that is present decides (old style)."""
    if not isinstance(check, dict):
        raise ValueError("health_check must be an object")
    kind = check.get("type")
    if kind is None:
        present = [k.upper() for k in ("command", "http", "tcp") if isinstance(check.get(k), dict)]
        kind = present[0] if len(present) == 1 else None
    if kind not in KINDS:
        raise ValueError(f"unsupported health check type {kind!r}")
    spec = HealthSpec(kind)
    body = check.get(kind.lower())
    if not isinstance(body, dict):
        raise ValueError(f"'{kind.lower()}' is required for a {kind} health check")
    if kind == "COMMAND":
        if not body.get("value"):
            raise ValueError("the health check command has no 'value'")
        spec.command = body
    else:
        port = body.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"the health check needs a 'port' in 1-65535, got {port!r}")
        spec.port = port
        if kind == "HTTP":
            spec.path = str(body.get("path") or "/")
            if not spec.path.startswith("/"):
                spec.path = "/" + spec.path
            spec.scheme = str(body.get("scheme") or "http").lower()
            if spec.scheme not in ("http", "https"):
                raise ValueError(f"unsupported health check scheme {spec.scheme!r}")
            spec.statuses = [int(s) for s in body.get("statuses") or []]
    spec.delay = _number(check, "delay_seconds", DEFAULT_DELAY)
    spec.interval = _number(check, "interval_seconds", DEFAULT_INTERVAL)
    spec.timeout = _number(check, "timeout_seconds", DEFAULT_TIMEOUT)
    spec.grace_period = _number(check, "grace_period_seconds", DEFAULT_GRACE_PERIOD)
    failures = int(_number(check, "consecutive_failures", DEFAULT_CONSECUTIVE_FAILURES))
    spec.consecutive_failures = max(1, failures)
    return spec


def probe_command(spec: HealthSpec) -> tuple[str, list[str], bool]:
    """(program, argv, search PATH) of one probe process for ``spec``."""
    if spec.kind == "TCP":
        args = ["tcp", "127.0.0.1", str(spec.port), str(spec.timeout)]
    else:
        url = f"{spec.scheme}://127.0.0.1:{spec.port}{spec.path}"
        args = ["http", url, str(spec.timeout), ",".join(str(s) for s in spec.statuses)]
    return probe_process(spec.kind, spec.command, args)


def probe_process(
    kind: str, command: dict[str, Any], probe_args: list[str]
) -> tuple[str, list[str], bool]:
    """(program, argv, search PATH) of a probe: the COMMAND itself, or for TCP and HTTP the
    small `butte.agent.executor.probe` program with ``probe_args`` (health checks and
    ``TaskInfo.check`` share it)."""
    if kind == "COMMAND":
        if command.get("shell", True):
            return "/bin/sh", ["sh", "-c", str(command["value"])], False
        arguments = [str(a) for a in command.get("arguments") or []]
        return str(command["value"]), arguments or [str(command["value"])], True
    code = (
        f"import sys;sys.path.insert(0,{_ROOT!r});"
        "from butte.agent.executor.probe import main;sys.exit(main())"
    )
    return sys.executable, [sys.executable, "-I", "-S", "-c", code, *probe_args], False


class HealthPolicy:
    """When to probe and what a result means (see the module docstring); times in seconds
    on one clock, passed in."""

    __slots__ = ("spec", "started", "next_check", "consecutive_failures", "initializing")

    def __init__(self, spec: HealthSpec, started: float) -> None:
        self.spec = spec
        self.started = started
        self.next_check = started + spec.delay
        self.consecutive_failures = 0
        self.initializing = True  # never healthy yet

    def due(self, now: float) -> bool:
        """Whether the next probe should start."""
        return now >= self.next_check

    def result(self, healthy: bool, now: float) -> tuple[bool, bool] | None:
        """Takes one probe's outcome; returns ``(healthy, kill_task)`` to report, or None
        when nothing is reported. Schedules the next probe."""
        self.next_check = now + self.spec.interval
        if healthy:
            report = self.initializing or self.consecutive_failures > 0
            self.initializing = False
            self.consecutive_failures = 0
            return (True, False) if report else None
        in_grace = now - self.started <= self.spec.grace_period
        if self.initializing and self.spec.grace_period > 0 and in_grace:
            return None
        self.consecutive_failures += 1
        return False, self.consecutive_failures >= self.spec.consecutive_failures
