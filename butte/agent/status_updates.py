"""Reliable delivery of one task's status updates to the master (Mesos' status update manager).

Each task has a `StatusUpdateStream`: a FIFO of the updates its executor (or the agent) produced.
Only the oldest unacknowledged update is in flight; it is resent with exponential backoff
(``min`` doubling up to ``max``) until the master relays the scheduler's acknowledgement of
exactly that uuid, then the next one goes out. Updates whose uuid was already accepted are
duplicates and are dropped. Once a terminal update was accepted the stream takes no more, and
it is finished when that terminal update is acknowledged.

Pure and clock-free: callers pass ``now`` (seconds) in.
"""

from __future__ import annotations

from collections import deque

from butte.core.messages import TaskStatus
from butte.core.task_states import is_terminal


class StatusUpdateStream:
    """The queue of one task's updates and the retry state of the one in flight."""

    __slots__ = (
        "framework_id",
        "task_id",
        "min_interval",
        "max_interval",
        "pending",
        "received",
        "sent",
        "interval",
        "next_retry",
        "terminated",
    )

    def __init__(
        self, framework_id: str, task_id: str, min_interval: float, max_interval: float
    ) -> None:
        self.framework_id = framework_id
        self.task_id = task_id
        self.min_interval = min_interval
        self.max_interval = max(max_interval, min_interval)
        self.pending: deque[TaskStatus] = deque()
        self.received: set[str] = set()
        # Whether the head has gone out on the current master connection.
        self.sent = False
        self.interval = min_interval
        self.next_retry: float | None = None
        self.terminated = False

    def add(self, status: TaskStatus) -> bool:
        """Queues an update; False (and nothing queued) for a duplicate uuid or an update
        after the terminal one."""
        assert status.uuid is not None, "only updates with a uuid are streamed"
        if status.uuid in self.received or self.terminated:
            return False
        self.received.add(status.uuid)
        self.pending.append(status)
        if is_terminal(status.state):
            self.terminated = True
        return True

    def is_duplicate(self, uuid: str) -> bool:
        """Whether an update with this uuid was accepted before."""
        return uuid in self.received

    @property
    def head(self) -> TaskStatus | None:
        """The oldest unacknowledged update (the one in flight), if any."""
        return self.pending[0] if self.pending else None

    def due(self, now: float) -> TaskStatus | None:
        """The update to send at ``now`` (first send or a retry), or None if nothing is due.
        Sending arms the next retry: ``min`` after the first send, doubling up to ``max``."""
        if not self.pending:
            return None
        if not self.sent:
            self.sent = True
            self.interval = self.min_interval
        elif self.next_retry is not None and now >= self.next_retry:
            self.interval = min(self.interval * 2, self.max_interval)
        else:
            return None
        self.next_retry = now + self.interval
        return self.pending[0]

    def ack(self, uuid: str) -> TaskStatus | None:
        """Acknowledges the update in flight if ``uuid`` names it; returns it, else None
        (stale or duplicate acknowledgements are ignored)."""
        if not self.pending or self.pending[0].uuid != uuid:
            return None
        acked = self.pending.popleft()
        self.rewind()
        return acked

    def rewind(self) -> None:
        """Forgets that the head was sent (a new master connection): it goes out again at the
        next `due` call, with the backoff reset."""
        self.sent = False
        self.interval = self.min_interval
        self.next_retry = None

    @property
    def done(self) -> bool:
        """The terminal update was acknowledged: nothing more will ever be sent."""
        return self.terminated and not self.pending

    def check_invariants(self) -> None:
        """Raises AssertionError if the stream's bookkeeping is inconsistent."""
        uuids = [s.uuid for s in self.pending]
        assert len(uuids) == len(set(uuids)), "duplicate uuid queued"
        assert all(u in self.received for u in uuids), "queued update not recorded as received"
        terminal_at = [i for i, s in enumerate(self.pending) if is_terminal(s.state)]
        assert len(terminal_at) <= 1, "more than one terminal update queued"
        if terminal_at:
            assert terminal_at[0] == len(self.pending) - 1, "update queued after terminal one"
            assert self.terminated
        if self.sent:
            assert self.pending and self.next_retry is not None, "sent flag without a head"
        assert self.min_interval <= self.interval <= self.max_interval
