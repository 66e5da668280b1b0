"""What the agent core's event handler groups share: its configuration (`AgentConfig`) and
the interface each group may use of the whole core (`AgentCore`).

`AgentMachine` (`butte.agent.machine`) is made of handler groups split by the events they
handle: the executor API (`butte.agent.executor_api.ExecutorApi`), launches
(`butte.agent.launch_events.LaunchEvents`) and recovery (`butte.agent.recovery.Recovery`).
Each group is typed against `AgentCore`, never against `AgentMachine`, so none imports the
machine (no import cycle) and what a group needs from the others is written down here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import butte
from butte.agent.containerizer.logrotate import RotationPolicy
from butte.agent.effects import Effect, LaunchContainer, SendToExecutor
from butte.agent.launching import EXECUTOR_REREGISTRATION_TIMEOUT, RECOVERY_TIMEOUT
from butte.agent.records import Executor, Framework, Task
from butte.agent.status_updates import StatusUpdateStream
from butte.core import internal
from butte.core.messages import TaskInfo, TaskStatus
from butte.core.resources import Attribute, Resources


@dataclass(frozen=True)
class AgentConfig:
    """What the core needs to know about its agent (from flags and the bound server)."""

    hostname: str
    ip: str
    port: int
    work_dir: str
    resources: Resources
    attributes: tuple[Attribute, ...] = ()
    domain: dict[str, Any] | None = None  # its fault domain (--domain), in its AgentInfo
    executor_registration_timeout: float = 60.0
    executor_shutdown_grace_period: float = 5.0
    status_update_retry_interval_min: float = 10.0
    status_update_retry_interval_max: float = 600.0
    # How long recovered executors have to re-subscribe after an agent restart, and how long
    # checkpointing executors keep trying to reach a restarted agent (their environment).
    executor_reregistration_timeout: float = EXECUTOR_REREGISTRATION_TIMEOUT
    recovery_timeout: float = RECOVERY_TIMEOUT
    # argv of the built-in command/default executor program.
    command_executor_argv: tuple[str, ...] = ("butte-command-executor",)
    # The containerizers of --containerizers that this agent offers ("docker" only where
    # its daemon answered), why "docker" was asked for but is not offered (None: it was
    # not asked for, or it is offered), the Docker executor's argv and what it is told
    # about the daemon (its environment; docs/docker.md).
    containerizers: tuple[str, ...] = ("mesos",)
    docker_unavailable: str | None = None
    docker_executor_argv: tuple[str, ...] = ()
    docker_environment: Mapping[str, str] = field(default_factory=dict)
    # Environment every executor inherits (the agent's own, like Mesos).
    base_environment: Mapping[str, str] = field(default_factory=dict)
    version: str = butte.MESOS_COMPAT_VERSION
    # --executor_secret_key: executors get a token signed with it (None: no token).
    executor_secret_key: bytes | None = None
    # The resources whose TaskInfo.limits this agent's isolators enforce ("cpus" with
    # cgroups/cpu, "mem" with cgroups/mem), and --cgroups_enable_cfs (butte.core.task_limits).
    limited_resources: frozenset[str] = frozenset()
    cgroups_enable_cfs: bool = False
    # --container_logger=logrotate: the rotation every container gets unless its
    # environment overrides it (checked at launch; None: logs are not rotated).
    log_rotation: RotationPolicy | None = None


class AgentCore(ABC):
    """The agent core as its handler groups see it: the records, and the handlers one
    group calls in another. A type only: the groups derive from it while type checking,
    and `AgentMachine` (which has all of it) is checked against it."""

    config: AgentConfig
    agent_id: str | None
    master_id: str | None
    connected: bool
    registered: bool
    stopping: bool
    # Why launches are refused for lack of disk space (None: there is enough).
    disk_problem: str | None
    frameworks: dict[str, Framework]
    completed_frameworks: deque[Framework]
    containers: dict[str, Executor]
    task_executor: dict[tuple[str, str], Executor]
    streams: dict[tuple[str, str], StatusUpdateStream]
    counters: dict[str, int]
    _streams_per_framework: dict[str, int]
    _new_container_id: Callable[[], str]
    _new_status_uuid: Callable[[], str]
    _resources_json: list[dict[str, Any]]
    _executor_agent_info: dict[str, Any] | None
    _checkpointed_agent_id: str | None
    _unreported_exits: list[internal.ExecutorExited]

    @abstractmethod
    def _count(self, name: str, amount: int = 1) -> None: ...

    @abstractmethod
    def _push_timer(self, when: float, kind: str, key: Any) -> None: ...

    @abstractmethod
    def _add_stream(self, stream: StatusUpdateStream) -> None: ...

    @abstractmethod
    def _arm_shutdown(self, ex: Executor, deadline: float) -> None: ...

    @abstractmethod
    def _accept_update(
        self, fw: Framework, task: Task | None, status: TaskStatus, now: float
    ) -> list[Effect]: ...

    @abstractmethod
    def _orphan_update(
        self, fw: Framework, task_id: str, state: str, reason: str, message: str, now: float
    ) -> list[Effect]: ...

    @abstractmethod
    def _cleanup_framework(self, fw: Framework) -> list[Effect]: ...

    @abstractmethod
    def _executor_terminated(
        self, ex: Executor, status: int | None, now: float
    ) -> list[Effect]: ...

    @abstractmethod
    def _claim_delivered(self, ex: Executor, known: set[str]) -> None: ...

    @abstractmethod
    def _delivery(self, ex: Executor, task_ids: list[str]) -> SendToExecutor: ...

    @abstractmethod
    def _register_launch(
        self, fw: Framework, ex: Executor, role: str, tasks: list[TaskInfo], now: float
    ) -> LaunchContainer: ...
