"""``/metrics/snapshot``: the master's figures under Mesos' metric names."""

from __future__ import annotations

from butte.core import task_states
from butte.core.resources import Resources
from butte.master.machine import MasterMachine

_SCALARS = ("cpus", "mem", "disk", "gpus")


def master_metrics(machine: MasterMachine, now: float, elected_time: float) -> dict[str, float]:
    """A flat name -> number map, as Mesos serves it."""
    total = Resources()
    used = Resources()
    for agent in machine.agents.values():
        total = total + agent.total
        for ex in agent.executors.values():
            used = used + ex.resources
    states: dict[str, int] = {}
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            states[task.state] = states.get(task.state, 0) + 1
            if not task_states.is_terminal(task.state):
                used = used + task.resources
    offered = Resources()
    for offer in machine.offers.values():
        offered = offered + offer.resources
    agents = machine.agents.values()
    out: dict[str, float] = {
        "master/uptime_secs": now - machine.start_time,
        "master/elected": 1.0,
        "master/slaves_active": float(sum(1 for a in agents if a.active)),
        "master/slaves_inactive": float(sum(1 for a in agents if not a.active)),
        "master/slaves_connected": float(sum(1 for a in agents if a.connected)),
        "master/slaves_disconnected": float(sum(1 for a in agents if not a.connected)),
        "master/slaves_unreachable": float(len(machine.unreachable_agents)),
        "master/frameworks_active": float(sum(1 for f in machine.frameworks.values() if f.active)),
        "master/frameworks_inactive": float(
            sum(1 for f in machine.frameworks.values() if not f.active)
        ),
        "master/frameworks_connected": float(
            sum(1 for f in machine.frameworks.values() if f.connected)
        ),
        "master/outstanding_offers": float(len(machine.offers)),
    }
    for name in _SCALARS:
        t, u = total.scalar(name), used.scalar(name)
        out[f"master/{name}_total"] = t
        out[f"master/{name}_used"] = u
        out[f"master/{name}_percent"] = u / t if t else 0.0
        out[f"master/{name}_offered"] = offered.scalar(name)
    for state in sorted(task_states.ALL_STATES):
        out[f"master/tasks_{state[5:].lower()}"] = float(states.get(state, 0))
    for name, value in machine.counters.items():
        out[f"master/{name}"] = float(value)
    return out
