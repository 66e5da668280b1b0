"""Answers to explicit reconciliation of tasks the master does not know (docs/protocol.md §1.11)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from butte.core import task_states
from butte.core.messages import TaskStatus

if TYPE_CHECKING:
    from butte.master.core import MasterCore
    from butte.master.state import Framework


def reconcile_unknown_task(
    master: MasterCore, fw: Framework, task_id: str, agent_id: str | None, now: float
) -> TaskStatus | None:
    """The status to send for a task the master has no record of, or None for "no answer
    yet" (its agent is expected to re-register after a master failover)."""
    unreachable_time = None
    if agent_id is None:
        if master.recovering_agents:
            return None
        state, message = task_states.UNKNOWN, "Reconciliation: Task is unknown"
    elif agent_id in master.recovering_agents:
        return None
    elif agent_id in master.agents:
        state, message = task_states.GONE, "Reconciliation: Task is unknown to the agent"
    elif agent_id in master.unreachable_agents:
        state, message = task_states.UNREACHABLE, "Reconciliation: Agent is unreachable"
        unreachable_time = master.unreachable_agents[agent_id]
    elif agent_id in master.gone_agents:
        state, message = task_states.GONE_BY_OPERATOR, "Reconciliation: Agent is gone"
    else:
        state, message = task_states.UNKNOWN, "Reconciliation: Task is unknown"
    return master.master_status(
        fw,
        task_id,
        state,
        "REASON_RECONCILIATION",
        message,
        now,
        agent_id=agent_id,
        unreachable_time=unreachable_time,
    )
