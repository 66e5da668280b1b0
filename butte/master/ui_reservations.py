"""``GET /master/ui/agent-resources?agent_id=<id>``: one agent's reservations and persistent
volumes, with the live tasks and executors that hold them, for the web UI's agent page.

The rows are `butte.core.reservation_rows`' (the same ``butte reservations`` and ``butte
volumes`` print), read straight from the master's records of that one agent, so the page
needs neither GET_STATE nor every agent's GET_AGENTS. Under view ACLs a holder the caller
may not view is shown as ``(hidden)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from butte.core import reservation_rows, task_states
from butte.master.operator_views import MasterRecords

HIDDEN = "(hidden)"


def holders(
    machine: MasterRecords, agent_id: str, may_view: Callable[[str, str], bool] | None
) -> list[reservation_rows.Holder]:
    """What the agent's live tasks and executors hold; ``may_view(kind, framework id)``
    (kind ``task`` or ``executor``) hides the ones the caller may not see."""
    agent = machine.agents[agent_id]
    out: list[reservation_rows.Holder] = []
    for fid, tid in sorted(agent.tasks):
        fw = machine.frameworks.get(fid)
        task = fw.tasks.get(tid) if fw is not None else None
        if task is None or task_states.is_terminal(task.state):
            continue
        visible = may_view is None or may_view("task", fid)
        out.append((tid if visible else HIDDEN, task.resources))
    for (fid, eid), executor in sorted(agent.executors.items()):
        visible = may_view is None or may_view("executor", fid)
        out.append(((f"executor {eid}" if visible else HIDDEN), executor.resources))
    return out


def agent_resources(
    machine: MasterRecords, agent_id: str, may_view: Callable[[str, str], bool] | None = None
) -> dict[str, Any] | None:
    """``{"reservations": [...], "volumes": [...]}`` of the agent; None if it is unknown."""
    agent = machine.agents.get(agent_id)
    if agent is None:
        return None
    held = holders(machine, agent_id, may_view)
    return {
        "agent_id": agent_id,
        "reservations": reservation_rows.reservation_rows(
            agent_id, agent.hostname, agent.total, held
        ),
        "volumes": reservation_rows.volume_rows(agent_id, agent.hostname, agent.total, held),
    }
