"""What the master core asks its shell to do. The core returns these; it performs no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from butte.coord.interface import Operation


@dataclass(frozen=True, slots=True)
class SendToFramework:
    """Write one scheduler event (a JSON-able dict) to the framework's stream."""

    stream_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseFrameworkStream:
    """End the framework's subscription stream (after ERROR, teardown, failover)."""

    stream_id: str


@dataclass(frozen=True, slots=True)
class SendToAgent:
    """Send one internal protocol message on the agent's connection."""

    connection_id: str
    message: msgspec.Struct


@dataclass(frozen=True, slots=True)
class CloseAgentConnection:
    connection_id: str


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    """An event for the operator SUBSCRIBE stream (TASK_ADDED, AGENT_REMOVED, ...)."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RegistryWrite:
    """Make a registry change durable (`butte.coord.interface.Operation`). The core emits it
    before the message that acknowledges the change; the shell applies it synchronously in
    order, before delivering any later effect, and aborts the master if it fails."""

    operation: Operation


Effect = (
    SendToFramework
    | CloseFrameworkStream
    | SendToAgent
    | CloseAgentConnection
    | OperatorEvent
    | RegistryWrite
)
