"""The agent's operation status updates: offer operations with an id that the master
applied on this agent (``internal.ApplyOperation``), kept until the framework acknowledges
their latest status (``internal.OperationStatusAck``), as Mesos' agent keeps its
operations. Pure bookkeeping, time passed in.

While a status is unacknowledged it is sent again (``internal.OperationStatusUpdate``; the
master forwards it to the framework) after the retry interval, doubling from the minimum up
to the maximum, like task status updates. The records are checkpointed (the whole list, in
``meta/operations/operations.info``), reported in every re-registration (so a new master
rebuilds its operation records from them), and outlive an agent restart that recovers the
agent; an agent that registers under a new id drops those of its old id.
"""

from __future__ import annotations

from butte.core import internal

Key = tuple[str, str]  # (framework id, operation id)


class OperationStatusBook:
    """Unacknowledged operation statuses and their retry state (see the module docstring)."""

    __slots__ = ("interval_max", "interval_min", "records", "_retry")

    def __init__(self, interval_min: float, interval_max: float) -> None:
        self.interval_min = interval_min
        self.interval_max = max(interval_min, interval_max)
        self.records: dict[Key, internal.OperationReport] = {}
        # Key -> (when the next resend is due, the interval that led to it).
        self._retry: dict[Key, tuple[float, float]] = {}

    @staticmethod
    def key(report: internal.OperationReport) -> Key:
        return report.framework_id, report.operation_id

    def recover(self, reports: list[internal.OperationReport]) -> None:
        """The records checkpointed before a restart (their retries start at `rearm`)."""
        for report in reports:
            self.records[self.key(report)] = report

    def add(self, report: internal.OperationReport, now: float) -> bool:
        """Keeps a newly applied operation's status; False if it is malformed (no framework
        id, operation id or status uuid) and so cannot be acknowledged."""
        if not report.framework_id or not report.operation_id or report.uuid is None:
            return False
        key = self.key(report)
        self.records[key] = report
        self._retry[key] = (now + self.interval_min, self.interval_min)
        return True

    def acknowledge(self, framework_id: str, operation_id: str, uuid: str) -> bool:
        """The framework acknowledged ``uuid``: True if that was the latest status (the
        record is forgotten), False for a stale or unknown acknowledgement."""
        key = (framework_id, operation_id)
        report = self.records.get(key)
        if report is None or report.uuid != uuid:
            return False
        del self.records[key]
        self._retry.pop(key, None)
        return True

    def keep_agent(self, agent_id: str) -> bool:
        """Drops the records of operations applied under another agent id (the agent
        registered anew: the master removed the old agent); True if any went."""
        stale = [k for k, r in self.records.items() if _agent_of(r) not in (None, agent_id)]
        for key in stale:
            del self.records[key]
            self._retry.pop(key, None)
        return bool(stale)

    def rearm(self, now: float) -> None:
        """Every record's retry starts over (a new master connection: the registration
        reported them all)."""
        self._retry = {key: (now + self.interval_min, self.interval_min) for key in self.records}

    def due(self, now: float) -> list[internal.OperationReport]:
        """The statuses to send again at ``now``; each one's next retry is armed."""
        out = []
        for key, (when, interval) in list(self._retry.items()):
            if when <= now:
                out.append(self.records[key])
                longer = min(interval * 2, self.interval_max)
                self._retry[key] = (now + longer, longer)
        return out

    def next_deadline(self) -> float | None:
        return min((when for when, _ in self._retry.values()), default=None)

    def reports(self) -> list[internal.OperationReport]:
        return list(self.records.values())


def _agent_of(report: internal.OperationReport) -> str | None:
    agent = report.statuses[-1].get("agent_id") if report.statuses else None
    value = agent.get("value") if isinstance(agent, dict) else None
    return value if isinstance(value, str) else None
