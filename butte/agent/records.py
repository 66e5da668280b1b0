"""The agent core's bookkeeping: frameworks, their executors, and the executors' tasks.

An executor moves through a small lifecycle, kept as data here (like the task table in
`butte.core.task_states`)::

    REGISTERING --subscribe--> RUNNING --shutdown/kill--> TERMINATING --exit--> TERMINATED
         |  \\________________________________________________/^                  ^
         |                     (timeout, kill before launch)                      |
         \\------------------------------ exit -----------------------------------/

A task belongs to exactly one executor. It is *queued* until its executor subscribes and
gets the LAUNCH (or LAUNCH_GROUP), then *launched*. It stays in ``Executor.tasks`` after it
turned terminal until the master acknowledged that terminal update; then it moves to the
executor's bounded ``completed_tasks``. An executor that is TERMINATED and has no tasks left
moves to its framework's ``completed_executors``; a framework without executors or pending
updates is removed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus
from butte.core.task_states import is_terminal

REGISTERING = "REGISTERING"
RUNNING = "RUNNING"
TERMINATING = "TERMINATING"
TERMINATED = "TERMINATED"

EXECUTOR_TRANSITIONS: dict[str, frozenset[str]] = {
    REGISTERING: frozenset({RUNNING, TERMINATING, TERMINATED}),
    RUNNING: frozenset({RUNNING, TERMINATING, TERMINATED}),
    TERMINATING: frozenset({TERMINATED}),
    TERMINATED: frozenset(),
}

# Kinds of executor: the built-in command executor (one command task), the built-in executor
# running a task group (Mesos' default executor), or a framework's own executor program.
COMMAND = "command"
DEFAULT = "default"
CUSTOM = "custom"

MAX_COMPLETED_TASKS_PER_EXECUTOR = 200
MAX_COMPLETED_EXECUTORS_PER_FRAMEWORK = 150
MAX_COMPLETED_FRAMEWORKS = 50
MAX_STATUSES_PER_TASK = 10

FRAMEWORK_RUNNING = "RUNNING"
FRAMEWORK_TERMINATING = "TERMINATING"


class IllegalExecutorTransition(ValueError):
    """An executor state change the lifecycle table does not allow."""


@dataclass(slots=True, eq=False)
class Task:
    """One task on this agent and what the agent knows of it."""

    info: TaskInfo
    framework_id: str
    executor_id: str
    state: str = "TASK_STAGING"
    statuses: list[TaskStatus] = field(default_factory=list)
    launched: bool = False  # the executor was given the task (LAUNCH / LAUNCH_GROUP)
    group: bool = False  # part of a task group
    draining: bool = False  # killed by a drain: its KILLING/KILLED say REASON_AGENT_DRAINING

    @property
    def id(self) -> str:
        return self.info.task_id.value


@dataclass(slots=True, eq=False)
class Executor:
    """One executor (one container run) of a framework."""

    info: ExecutorInfo
    framework_id: str
    container_id: str
    sandbox: str
    kind: str
    state: str = REGISTERING
    tasks: dict[str, Task] = field(default_factory=dict)
    # Deliveries waiting for the executor to subscribe; each is the task ids sent together
    # (one id and a LAUNCH, or a task group and a LAUNCH_GROUP).
    queued: list[list[str]] = field(default_factory=list)
    completed_tasks: deque[Task] = field(
        default_factory=lambda: deque(maxlen=MAX_COMPLETED_TASKS_PER_EXECUTOR)
    )
    pid: int | None = None
    subscribed: bool = False
    # (state, reason, message) given to its unfinished tasks when it terminates.
    pending_termination: tuple[str, str, str] | None = None
    # (reason, message) of a limit the container went over (memory, disk): its tasks' ends
    # are reported as TASK_FAILED with it, whatever the executor says.
    limitation: tuple[str, str] | None = None
    registration_deadline: float | None = None
    shutdown_deadline: float | None = None
    exit_status: int | None = None
    # Rebuilt from a checkpoint after an agent restart: it must re-subscribe (within
    # --executor_reregistration_timeout) rather than subscribe for the first time.
    recovered: bool = False
    # KILLs of its launched tasks that came while it had yet to re-subscribe after an agent
    # restart (task id -> the KILL event's body): sent once it subscribes.
    pending_kills: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.executor_id.value

    def move(self, new_state: str) -> None:
        """Changes state along `EXECUTOR_TRANSITIONS`, raising on an illegal move."""
        if new_state not in EXECUTOR_TRANSITIONS[self.state]:
            raise IllegalExecutorTransition(
                f"executor {self.id} cannot move from {self.state} to {new_state}"
            )
        self.state = new_state

    def live_tasks(self) -> list[Task]:
        """Tasks that have not reached a terminal state."""
        return [t for t in self.tasks.values() if not is_terminal(t.state)]


@dataclass(slots=True, eq=False)
class Framework:
    """A framework with executors (or pending updates) on this agent."""

    info: FrameworkInfo
    state: str = FRAMEWORK_RUNNING
    executors: dict[str, Executor] = field(default_factory=dict)
    completed_executors: deque[Executor] = field(
        default_factory=lambda: deque(maxlen=MAX_COMPLETED_EXECUTORS_PER_FRAMEWORK)
    )

    @property
    def id(self) -> str:
        assert self.info.id is not None
        return self.info.id.value
