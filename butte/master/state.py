"""The master's records of frameworks, agents, tasks and offers.

Plain mutable records owned by the master core (`machine.MasterMachine`); nothing here does
I/O. The shell and the JSON views read them but never write them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from butte.core.internal import AgentInfo
from butte.core.messages import ExecutorInfo, FrameworkInfo, KillPolicy, TaskInfo, TaskStatus
from butte.core.resources import Attribute, Resources
from butte.master.offer_constraints import OfferConstraints


@dataclass(slots=True)
class Task:
    """A task the master knows about, with its status history."""

    task_id: str
    framework_id: str
    agent_id: str
    name: str
    role: str
    resources: Resources
    state: str
    executor_id: str | None
    info: TaskInfo | None = None
    statuses: list[TaskStatus] = field(default_factory=list)
    # Latest status the agent sent (its uuid is what the scheduler must acknowledge).
    status_update_state: str | None = None
    status_update_uuid: str | None = None
    unreachable_time: float | None = None

    def latest_status(self) -> TaskStatus | None:
        return self.statuses[-1] if self.statuses else None


@dataclass(slots=True)
class Executor:
    """A custom or default executor on an agent, holding its own resources."""

    executor_id: str
    framework_id: str
    agent_id: str
    info: ExecutorInfo
    role: str
    resources: Resources


@dataclass(slots=True)
class Offer:
    """Resources of one agent offered to one framework under one role."""

    offer_id: str
    framework_id: str
    agent_id: str
    role: str
    resources: Resources
    # When it was made (for --offer_timeout).
    created: float = 0.0


@dataclass(slots=True)
class OperationRecord:
    """An operation with an id that a framework asked for, and its statuses."""

    operation_id: str
    framework_id: str
    agent_id: str | None
    info: dict[str, Any]
    statuses: list[dict[str, Any]] = field(default_factory=list)
    # uuid of the latest status until the framework acknowledges it.
    unacknowledged: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "framework_id": {"value": self.framework_id},
            "info": self.info,
            "latest_status": self.statuses[-1] if self.statuses else {},
            "statuses": self.statuses,
        }
        if self.agent_id is not None:
            out["agent_id"] = {"value": self.agent_id}
        last = self.statuses[-1] if self.statuses else {}
        if "uuid" in last:
            out["uuid"] = last["uuid"]
        return out


@dataclass(slots=True)
class Framework:
    """A subscribed (or recovered, or disconnected) framework."""

    framework_id: str
    info: FrameworkInfo
    registered_time: float
    stream_id: str | None = None
    connected: bool = False
    active: bool = False
    # Learnt from a re-registering agent after a master restart; not yet re-subscribed.
    recovered: bool = False
    reregistered_time: float | None = None
    unregistered_time: float | None = None
    failover_deadline: float | None = None
    suppressed_roles: set[str] = field(default_factory=set)
    tasks: dict[str, Task] = field(default_factory=dict)
    offers: set[str] = field(default_factory=set)
    # agent_id -> executor ids of this framework running there
    executors: dict[str, set[str]] = field(default_factory=dict)
    completed_tasks: deque[Task] = field(default_factory=lambda: deque(maxlen=1000))
    # SUBSCRIBE / UPDATE_FRAMEWORK ``offer_constraints`` (butte.master.offer_constraints).
    offer_constraints: OfferConstraints | None = None
    # Offer operations with an id, by id, until their terminal status is acknowledged.
    operations: dict[str, OperationRecord] = field(default_factory=dict)
    # Mesos' per-framework counters (butte/master/metrics.py serves them): scheduler calls
    # and events sent by type as the wire names them, and ``offers/sent`` ...,
    # ``tasks/terminal/<state>``, ``operations/<type>`` by metric name. Kept on the record so
    # that they last while the master knows the framework and die with a failover.
    calls: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return self.info.role_list()

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(c.type for c in self.info.capabilities)

    @property
    def partition_aware(self) -> bool:
        return self.info.has_capability("PARTITION_AWARE")


@dataclass(slots=True)
class Drain:
    """An operator's DRAIN_AGENT in progress (DRAINING) or done (DRAINED)."""

    max_grace_period: float | None
    mark_gone: bool
    state: str = "DRAINING"

    def to_json(self) -> dict[str, Any]:
        """Mesos' DrainInfo (shown by GET_AGENTS, kept in the registry)."""
        config: dict[str, Any] = {"mark_gone": self.mark_gone}
        if self.max_grace_period is not None:
            config["max_grace_period"] = {"nanoseconds": int(self.max_grace_period * 1e9)}
        return {"state": self.state, "config": config}

    @classmethod
    def from_json(cls, info: Mapping[str, Any]) -> Drain:
        """The inverse of `to_json` (a registry record this master wrote)."""
        config = info.get("config") or {}
        grace = (config.get("max_grace_period") or {}).get("nanoseconds")
        return cls(
            None if grace is None else grace / 1e9,
            bool(config.get("mark_gone")),
            str(info.get("state") or "DRAINING"),
        )


@dataclass(slots=True)
class Agent:
    """A registered agent and what runs on it."""

    agent_id: str
    info: AgentInfo
    total: Resources
    attributes: tuple[Attribute, ...]
    registered_time: float
    connection_id: str | None
    ip: str = ""
    version: str = ""
    reregistered_time: float | None = None
    connected: bool = True
    # Offers come from an agent only while it is connected and not deactivated.
    active: bool = True
    # DEACTIVATE_AGENT / DRAIN_AGENT by an operator; survives reconnections.
    deactivated: bool = False
    drain: Drain | None = None
    # Missed PINGs in a row; PONG resets it.
    missed_pings: int = 0
    awaiting_pong: bool = False
    disconnected_at: float | None = None
    # (framework_id, task_id) of tasks on this agent
    tasks: set[tuple[str, str]] = field(default_factory=set)
    # (framework_id, executor_id) -> Executor
    executors: dict[tuple[str, str], Executor] = field(default_factory=dict)
    offers: set[str] = field(default_factory=set)
    # Kills asked for while the agent was disconnected, (framework_id, task_id) -> kill
    # policy: sent when it re-registers (Mesos' `killedTasks`).
    pending_kills: dict[tuple[str, str], KillPolicy | None] = field(default_factory=dict)

    @property
    def hostname(self) -> str:
        return self.info.hostname

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def pid(self) -> str:
        return f"slave(1)@{self.ip or self.info.hostname}:{self.info.port}"
