"""``/metrics/snapshot``: the master's figures under Mesos' metric names.

Gauges of the cluster (``master/cpus_total``, ``_used``, ``_percent``, ``master/tasks_running``,
``master/slaves_active`` ...), counters the core keeps (``master/tasks_finished``,
``master/messages_*``, ``master/valid_status_updates``, ``master/slave_unreachable_*`` ...),
per framework (``master/frameworks/<name>/<id>/subscribed``, ``tasks/active/*``,
``roles/<role>/suppressed``, and the counters its record keeps: ``calls/*``, ``events/*``,
``offers/*``, ``tasks/terminal/*``, ``operations/*``), the allocator's
(``allocator/mesos/allocation_runs``, ``allocation_run_ms``, per-role dominant shares) and the
host's (``system/*``). ``GET /metrics`` serves the same in Prometheus text
(`butte.operator_common.prometheus_text`).
"""

from __future__ import annotations

from butte.core import task_states
from butte.core.messages import SCHEDULER_CALL_TYPES
from butte.core.resources import Resources
from butte.master.machine import MasterMachine
from butte.operator_common import system_metrics

_SCALARS = ("cpus", "mem", "disk", "gpus")

# Core counters under the names Mesos gives the same figures (the core's own names are kept
# as well, under ``master/``).
_MESOS_NAMES = {
    "status_updates": ("master/messages_status_update",),
    "valid_status_updates": ("master/valid_status_updates",),
    "invalid_status_updates": ("master/invalid_status_updates",),
    "valid_status_update_acknowledgements": ("master/valid_status_update_acknowledgements",),
    "invalid_status_update_acknowledgements": ("master/invalid_status_update_acknowledgements",),
    "scheduler_calls_accept": ("master/messages_accept", "master/messages_launch_tasks"),
    "scheduler_calls_decline": ("master/messages_decline_offers",),
    "scheduler_calls_kill": ("master/messages_kill_task",),
    "scheduler_calls_reconcile": ("master/messages_reconcile_tasks",),
    "scheduler_calls_revive": ("master/messages_revive_offers",),
    "scheduler_calls_suppress": ("master/messages_suppress_offers",),
    "scheduler_calls_acknowledge": ("master/messages_status_update_acknowledgement",),
    "scheduler_calls_teardown": ("master/messages_unregister_framework",),
    "scheduler_calls_message": ("master/messages_framework_to_executor",),
    "scheduler_calls_request": ("master/messages_resource_request",),
    "scheduler_calls_reconcile_operations": ("master/messages_reconcile_operations",),
    "scheduler_calls_acknowledge_operation_status": (
        "master/messages_operation_status_update_acknowledgement",
    ),
    "outstanding_offers_made": ("master/offers_made",),
    "invalid_tasks": ("master/invalid_tasks",),
    "slave_registrations": ("master/slave_registrations",),
    "slave_reregistrations": ("master/slave_reregistrations",),
    "recovery_slave_removals": ("master/recovery_slave_removals",),
    "slave_removals": ("master/slave_removals",),
    "slave_removals/reason_unhealthy": ("master/slave_removals/reason_unhealthy",),
    "slave_removals/reason_unregistered": ("master/slave_removals/reason_unregistered",),
    "slave_removals/reason_registered": ("master/slave_removals/reason_registered",),
    "slave_unreachable_scheduled": ("master/slave_unreachable_scheduled",),
    "slave_unreachable_completed": ("master/slave_unreachable_completed",),
    "slave_unreachable_canceled": ("master/slave_unreachable_canceled",),
}

# What Mesos registers for every framework, by the enums' names (scheduler::Call::Type,
# scheduler::Event::Type, Offer::Operation::Type, less UNKNOWN): present from the start at 0.
_CALL_TYPES = tuple(sorted(SCHEDULER_CALL_TYPES))
_EVENT_TYPES = (
    "SUBSCRIBED",
    "OFFERS",
    "INVERSE_OFFERS",
    "RESCIND",
    "RESCIND_INVERSE_OFFER",
    "UPDATE",
    "UPDATE_OPERATION_STATUS",
    "MESSAGE",
    "FAILURE",
    "ERROR",
    "HEARTBEAT",
)
_OPERATION_TYPES = (
    "launch",
    "launch_group",
    "reserve",
    "unreserve",
    "create",
    "destroy",
    "grow_volume",
    "shrink_volume",
    "create_disk",
    "destroy_disk",
)
_OFFER_COUNTERS = ("offers/sent", "offers/accepted", "offers/declined", "offers/rescinded")

# Counters Mesos' master registers but never counts (agents are no longer shut down by the
# health check): zero there as here.
_NEVER_COUNTED = (
    "master/slave_shutdowns_scheduled",
    "master/slave_shutdowns_completed",
    "master/slave_shutdowns_canceled",
)

# The bytes Mesos' `http::encode` leaves as they are in a framework's name.
_UNENCODED = frozenset(range(0x20, 0x80)) - frozenset(b'$&+,/:;=?@ "<>#%{}|\\^~[]`')


def framework_metric_prefix(name: str, framework_id: str) -> str:
    """``master/frameworks/<name>/<id>/``, the name percent-encoded as Mesos' master encodes
    it (`getFrameworkMetricPrefix`), so that a name with ``/`` stays one path segment."""
    encoded = "".join(chr(b) if b in _UNENCODED else f"%{b:02X}" for b in name.encode("utf-8"))
    return f"master/frameworks/{encoded}/{framework_id}/"


def framework_metrics(machine: MasterMachine) -> dict[str, float]:
    """The per-framework figures of Mesos' master, for every framework the master knows
    (connected or not) and the completed ones it still lists, as Mesos keeps a removed
    framework's metrics until it leaves the completed list: ``subscribed``, the count of its
    tasks in each non-terminal state (``tasks/active/task_running`` ...), per role of the
    framework whether it is suppressed (``roles/<role>/suppressed``), and the counters of its
    record: ``calls`` and ``calls/<type>``, ``events`` and ``events/<type>``,
    ``offers/sent|accepted|declined|rescinded``, ``tasks/terminal/<state>``, ``operations``
    and ``operations/<type>``."""
    active = sorted(s for s in task_states.ALL_STATES if not task_states.is_terminal(s))
    terminal = sorted(s for s in task_states.ALL_STATES if task_states.is_terminal(s))
    out: dict[str, float] = {}
    for fw in (*machine.frameworks.values(), *machine.completed_frameworks):
        prefix = framework_metric_prefix(fw.info.name, fw.framework_id)
        out[prefix + "subscribed"] = 1.0 if fw.connected else 0.0
        _counted(out, prefix + "calls", fw.calls, _CALL_TYPES)
        _counted(out, prefix + "events", fw.events, _EVENT_TYPES)
        counters = fw.counters
        for name in _OFFER_COUNTERS:
            out[prefix + name] = float(counters.get(name, 0))
        for state in terminal:
            name = "tasks/terminal/" + state.lower()
            out[prefix + name] = float(counters.get(name, 0))
        operations = 0
        for kind in _OPERATION_TYPES:
            count = counters.get("operations/" + kind, 0)
            operations += count
            out[f"{prefix}operations/{kind}"] = float(count)
        out[prefix + "operations"] = float(operations)
        states = dict.fromkeys(active, 0)
        for task in fw.tasks.values():
            if task.state in states:
                states[task.state] += 1
        for state, count in states.items():
            out[f"{prefix}tasks/active/{state.lower()}"] = float(count)
        for role in fw.roles:
            out[f"{prefix}roles/{role}/suppressed"] = 1.0 if role in fw.suppressed_roles else 0.0
    return out


def _counted(
    out: dict[str, float], name: str, by_type: dict[str, int], types: tuple[str, ...]
) -> None:
    """``<name>`` (the sum) and ``<name>/<type>`` for each of ``types`` (Mesos' names are the
    lower-case enum names), from counts by upper-case type."""
    for kind in types:
        out[f"{name}/{kind.lower()}"] = float(by_type.get(kind, 0))
    out[name] = float(sum(by_type.values()))


def master_metrics(machine: MasterMachine, now: float, elected: bool = True) -> dict[str, float]:
    """A flat name -> number map, as Mesos serves it (``elected``: this master leads)."""
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
    frameworks = machine.frameworks.values()
    out: dict[str, float] = {
        "master/uptime_secs": now - machine.start_time,
        "master/elected": 1.0 if elected else 0.0,
        "master/slaves_active": float(sum(1 for a in agents if a.active)),
        "master/slaves_inactive": float(sum(1 for a in agents if not a.active)),
        "master/slaves_connected": float(sum(1 for a in agents if a.connected)),
        "master/slaves_disconnected": float(sum(1 for a in agents if not a.connected)),
        "master/slaves_unreachable": float(len(machine.unreachable_agents)),
        "master/slaves_gone": float(len(machine.gone_agents)),
        "master/frameworks_active": float(sum(1 for f in frameworks if f.active)),
        "master/frameworks_inactive": float(sum(1 for f in frameworks if not f.active)),
        "master/frameworks_connected": float(sum(1 for f in frameworks if f.connected)),
        "master/frameworks_disconnected": float(sum(1 for f in frameworks if not f.connected)),
        "master/frameworks_completed": float(len(machine.completed_frameworks)),
        "master/outstanding_offers": float(len(machine.offers)),
        "master/operator_event_stream_subscribers": float(machine.operator_subscribers),
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
    for name, aliases in _MESOS_NAMES.items():
        for alias in aliases:  # present from the start, like Mesos' counters
            out[alias] = float(machine.counters.get(name, 0))
    for name in _NEVER_COUNTED:
        out[name] = 0.0
    out.update(framework_metrics(machine))
    out.update(allocator_metrics(machine, total, used + offered))
    out.update(system_metrics())
    return out


def allocator_metrics(
    machine: MasterMachine, total: Resources, offered_or_allocated: Resources
) -> dict[str, float]:
    """``allocator/mesos/*``: the allocator's statistics under Mesos' names."""
    allocator = machine.allocator
    stats = dict(allocator.statistics())
    out: dict[str, float] = {}
    runs = stats.pop("allocation_runs", 0.0)
    seconds = stats.pop("last_allocation_seconds", 0.0)
    out["allocator/mesos/allocation_runs"] = runs
    out["allocator/mesos/allocation_run_ms"] = seconds * 1000.0
    out["allocator/mesos/allocation_run_ms/count"] = runs
    out["allocator/mesos/event_queue_dispatches"] = 0.0
    for key, value in stats.items():
        out[f"allocator/mesos/{key}"] = float(value)
    for name in _SCALARS:
        out[f"allocator/mesos/resources/{name}/total"] = total.scalar(name)
        out[f"allocator/mesos/resources/{name}/offered_or_allocated"] = offered_or_allocated.scalar(
            name
        )
    for role, share in allocator.role_shares().items():
        out[f"allocator/mesos/roles/{role}/shares/dominant"] = float(share)
    return out
