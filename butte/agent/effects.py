"""What the agent core asks its shell to do. Each effect is an immutable instruction; the shell
carries them out in order and feeds the results back as events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from butte.core.internal import AgentMessage


@dataclass(frozen=True, slots=True)
class SendToMaster:
    """Send one message on the master WebSocket (dropped by the shell if it is down)."""

    message: AgentMessage


@dataclass(frozen=True, slots=True)
class SendToExecutor:
    """Write one event (a JSON-able dict) as a RecordIO record on the executor's stream."""

    container_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseExecutorStream:
    """End the executor's SUBSCRIBE stream (it exited or is being replaced)."""

    container_id: str


@dataclass(frozen=True, slots=True)
class LaunchContainer:
    """Create the sandbox (and ``runs/latest``) and start the executor process in it, in a new
    session, with stdout/stderr going to the sandbox files. The shell answers with
    ``container_started`` or ``container_failed``, and later ``container_exited``."""

    container_id: str
    framework_id: str
    executor_id: str
    sandbox: str
    argv: tuple[str, ...]
    env: dict[str, str]
    # Program to execute instead of argv[0] (searched in PATH), for non-shell commands.
    executable: str | None = None
    # The built-in executor (argv is then `command_executor_argv`): may be forked from the
    # zygote instead of started as a fresh interpreter.
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class DestroyContainer:
    """Kill every process of the container: SIGTERM, then SIGKILL after ``grace`` seconds."""

    container_id: str
    grace: float


@dataclass(frozen=True, slots=True)
class StopAgent:
    """The master told the agent to stop for good (after its containers are destroyed)."""

    message: str


Effect = SendToMaster | SendToExecutor | CloseExecutorStream | LaunchContainer
Effect = Effect | DestroyContainer | StopAgent
