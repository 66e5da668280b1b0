"""What a simulated agent keeps per framework and task, and each task's update stream.

A real agent runs a process per task and a status update manager per task; a simulated one
keeps only this: the task's identity and resources (to report on re-registration), the
statuses it produced, and a compact update stream with the same rules as the real agent's
(``butte.agent.status_updates``): updates leave in order, only the oldest unacknowledged one
is in flight, it is resent with exponential backoff until the master relays the scheduler's
acknowledgement of exactly its uuid, and the task is forgotten once its terminal update is
acknowledged. Plain records, no I/O.
"""

from __future__ import annotations

import asyncio
from collections import deque

from butte.core import internal, task_states
from butte.core.messages import ID, TaskInfo, TaskStatus


class SimTask:
    """One task on a simulated agent (see the module docstring)."""

    __slots__ = (
        "framework_id",
        "task_id",
        "name",
        "resources",
        "executor_id",
        "info",
        "state",
        "statuses",
        "pending",
        "sent",
        "interval",
        "next_retry",
        "timer",
    )

    def __init__(
        self,
        framework_id: str,
        task_id: str,
        name: str,
        resources: list[dict],
        executor_id: str | None,
        info: TaskInfo | None = None,
    ) -> None:
        self.framework_id = framework_id
        self.task_id = task_id
        self.name = name
        self.resources = resources
        # Set for tasks of a custom or default executor; command tasks report none.
        self.executor_id = executor_id
        self.info = info
        self.state = task_states.STAGING
        self.statuses: list[TaskStatus] = []
        # Updates not yet acknowledged, oldest (in flight) first; None when empty (most tasks
        # most of the time, so no deque is kept for them).
        self.pending: deque[TaskStatus] | None = None
        self.sent = False
        self.interval = 0.0
        self.next_retry = 0.0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.framework_id, self.task_id)

    @property
    def terminal(self) -> bool:
        return task_states.is_terminal(self.state)

    @property
    def head(self) -> TaskStatus | None:
        """The update in flight (the oldest unacknowledged one), if any."""
        return self.pending[0] if self.pending else None

    def add(self, status: TaskStatus) -> None:
        """Records a new status; it is queued behind any unacknowledged one."""
        self.state = status.state
        self.statuses.append(status)
        if self.pending is None:
            self.pending = deque()
        self.pending.append(status)

    def due(self, now: float, retry_min: float, retry_max: float) -> TaskStatus | None:
        """The update to send at ``now`` (first send or a retry) or None; arms the retry."""
        if not self.pending:
            return None
        if not self.sent:
            self.sent = True
            self.interval = retry_min
        elif now >= self.next_retry:
            self.interval = min(self.interval * 2, retry_max)
        else:
            return None
        self.next_retry = now + self.interval
        return self.pending[0]

    def ack(self, uuid: str) -> bool:
        """Acknowledges the update in flight if ``uuid`` names it (else ignored)."""
        if not self.pending or self.pending[0].uuid != uuid:
            return False
        self.pending.popleft()
        if not self.pending:
            self.pending = None
        self.sent = False
        return True

    def rewind(self) -> None:
        """A new master connection: the head goes out again, backoff reset."""
        self.sent = False

    @property
    def done(self) -> bool:
        """The terminal update was acknowledged: the agent forgets the task."""
        return self.terminal and self.pending is None

    def report(self, agent_id: str) -> internal.Task:
        """The task as REGISTER_AGENT reports it after a reconnect."""
        head = self.head
        info = self.info
        return internal.Task(
            name=self.name,
            task_id=ID(self.task_id),
            framework_id=ID(self.framework_id),
            agent_id=ID(agent_id),
            state=self.state,
            resources=self.resources,
            executor_id=ID(self.executor_id) if self.executor_id else None,
            statuses=self.statuses,
            status_update_state=head.state if head is not None else None,
            status_update_uuid=head.uuid if head is not None else None,
            labels=info.labels if info is not None else None,
        )
