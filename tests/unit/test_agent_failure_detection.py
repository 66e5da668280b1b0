"""How the master detects and handles failed agents, driven through the pure master core
(`master_kit`): ping timeouts under --agent_removal_rate_limit, an unreachable agent coming
back (partition-aware tasks live on, others are killed), a new agent replacing a dead one at
the same address, and re-registration reconciling what the agent does not report."""

from __future__ import annotations

import pytest
from master_kit import Harness, command_task, launch_body

from butte.core import internal
from butte.core import task_states as ts
from butte.core.messages import ID, FrameworkInfo
from butte.master.effects import OperatorEvent
from butte.master.machine import MasterOptions
from butte.master.main import parse_rate_limit


def running_task(h: Harness, conn: str = "c1", **framework: object) -> tuple[str, str, str]:
    """An agent with one RUNNING task of a new framework: (agent id, framework id, stream)."""
    agent_id = h.register_agent(conn)
    fid, stream = h.subscribe(**framework)
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer)))
    h.status_update(conn, fid, "t1", ts.RUNNING, agent_id)
    h.updates(stream)
    return agent_id, fid, stream


def reregister(h: Harness, conn: str, agent_id: str, **report: object) -> None:
    """An agent re-registers with ``report`` (frameworks, tasks); the master's answers land
    in ``h.agent_inbox[conn]``, AGENT_REREGISTERED first."""
    info = internal.AgentInfo(hostname="127.0.0.1", port=5051, id=ID(agent_id))
    message = internal.RegisterAgent(agent_info=info, version="0.1.0", **report)
    h.pump(h.master.agent_message(conn, message, "127.0.0.1", h.now()))
    assert isinstance(h.agent_inbox[conn][0], internal.AgentReregistered)


def miss_pings(h: Harness, times: int, answering: set[str] = frozenset()) -> None:
    for _ in range(times):
        h.pump(h.master.ping_agents(h.now()))
        for conn in answering:
            h.pump(h.master.agent_message(conn, internal.Pong(), "127.0.0.1", h.now()))
        h.clock.advance(1.0)


def test_removal_rate_limit_spaces_out_unreachable_agents():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2, agent_removal_rate_limit=(1, 10.0)))
    first = h.register_agent("c1")
    second = h.register_agent("c2")
    miss_pings(h, 3)
    assert len(h.master.agents) == 1, "one removal per 10 s"
    assert list(h.master.pending_agent_removals) in ([first], [second])
    miss_pings(h, 5)
    assert len(h.master.agents) == 1
    miss_pings(h, 5)
    assert not h.master.agents and set(h.master.unreachable_agents) == {first, second}


def test_agent_answering_while_waiting_for_removal_is_spared():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2, agent_removal_rate_limit=(1, 10.0)))
    h.register_agent("c1")
    h.register_agent("c2")
    miss_pings(h, 3)
    (waiting,) = h.master.pending_agent_removals
    conn = next(c for c, a in h.master.connections.items() if a == waiting)
    miss_pings(h, 12, answering={conn})
    assert waiting in h.master.agents and not h.master.pending_agent_removals


def test_a_disconnected_agent_is_unreachable_after_the_ping_timeouts():
    # Mesos' agent observer keeps pinging an agent whose socket broke: after
    # max_agent_ping_timeouts missed answers (75 s by default) its tasks are replaced
    # elsewhere, not after --agent_reregister_timeout (10 min).
    h = Harness(MasterOptions(max_agent_ping_timeouts=3))
    capabilities = [{"type": "PARTITION_AWARE"}]
    agent_id, fid, stream = running_task(h, checkpoint=True, capabilities=capabilities)
    h.pump(h.master.agent_disconnected("c1", h.now()))
    miss_pings(h, 3)
    assert agent_id in h.master.agents and not h.updates(stream)
    miss_pings(h, 1)
    assert agent_id in h.master.unreachable_agents
    [cut] = h.updates(stream)
    assert cut["state"] == ts.UNREACHABLE
    # One that comes back in time starts counting afresh.
    other = h.register_agent("c2")
    h.pump(h.master.agent_disconnected("c2", h.now()))
    miss_pings(h, 3)
    reregister(h, "c3", other)
    miss_pings(h, 3, answering={"c3"})
    assert other in h.master.agents


@pytest.mark.parametrize("partition_aware", [True, False])
def test_unreachable_agent_comes_back(partition_aware):
    h = Harness(MasterOptions(max_agent_ping_timeouts=2))
    capabilities = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    agent_id, fid, stream = running_task(h, checkpoint=True, capabilities=capabilities)
    miss_pings(h, 3)
    [cut] = h.updates(stream)
    assert cut["state"] == (ts.UNREACHABLE if partition_aware else ts.LOST)
    report = internal.Task(
        name="t1",
        task_id=ID("t1"),
        framework_id=ID(fid),
        agent_id=ID(agent_id),
        state=ts.RUNNING,
        resources=command_task("t1", {"agent_id": {"value": agent_id}})["resources"],
    )
    info = FrameworkInfo(user="root", name="fw", id=ID(fid), checkpoint=True)
    h.master.operator_subscribers = 1  # an operator SUBSCRIBE stream is open
    events: list[dict] = []
    pump = h.pump

    def recording(effects: list) -> list:
        events.extend(e.event for e in effects if isinstance(e, OperatorEvent))
        return pump(effects)

    h.pump = recording  # type: ignore[method-assign]
    h.register_agent("c9", agent_id=agent_id, frameworks=[info], tasks=[report])
    # Operators see the task back before its agent, as Mesos' addSlave sends them.
    assert [e["type"] for e in events] == ["TASK_ADDED", "AGENT_ADDED"]
    assert events[0]["task_added"]["task"]["state"] == ts.RUNNING
    assert "reregistered_time" in events[1]["agent_added"]["agent"]
    # Told the task is back, as Mesos' master does (no acknowledgement wanted).
    [back] = h.updates(stream)
    assert back["state"] == ts.RUNNING and back["reason"] == "REASON_SLAVE_REREGISTERED"
    assert back["message"] == "Unreachable agent re-reregistered" and "uuid" not in back
    assert [t.task_id for t in h.master.frameworks[fid].completed_tasks] == []
    kills = h.agent_messages("c9", internal.KillTask)
    h.call(fid, stream, {"type": "RECONCILE", "reconcile": {"tasks": []}})
    if partition_aware:
        assert not kills
        [again] = h.updates(stream)
        assert again["state"] == ts.RUNNING and again["reason"] == "REASON_RECONCILIATION"
    else:
        assert [k.task_id for k in kills] == [ID("t1")]


@pytest.mark.parametrize("partition_aware", [True, False])
def test_new_agent_at_the_address_of_a_disconnected_one_replaces_it(partition_aware):
    """Mesos' registerSlave removes the old agent with removeSlave (_removeSlave): TASK_LOST,
    REASON_AGENT_REMOVED, for partition-aware frameworks too; counted as a removal."""
    h = Harness()
    capabilities = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    old, fid, stream = running_task(h, checkpoint=True, capabilities=capabilities)
    h.pump(h.master.agent_disconnected("c1", h.now()))
    assert not h.updates(stream), "checkpointing tasks wait for the agent"
    new = h.register_agent("c2")  # same host and port, no id: its checkpoint is gone
    assert new != old and list(h.master.agents) == [new]
    [lost] = h.updates(stream)
    assert lost["state"] == ts.LOST and lost["reason"] == "REASON_AGENT_REMOVED"
    assert lost["message"] == "Agent 127.0.0.1 removed: a new agent registered at the same address"
    counters = h.master.counters
    assert counters["slave_removals"] == counters["slave_removals/reason_registered"] == 1


@pytest.mark.parametrize("partition_aware", [True, False])
def test_an_agent_that_unregisters_has_its_tasks_lost(partition_aware):
    """A graceful agent shutdown (Mesos' unregisterSlave, then removeSlave): TASK_LOST,
    REASON_AGENT_REMOVED, "Agent <host> removed: the agent unregistered", for every
    framework; counted in slave_removals/reason_unregistered."""
    h = Harness()
    capabilities = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    agent_id, fid, stream = running_task(h, capabilities=capabilities)
    h.pump(h.master.agent_message("c1", internal.UnregisterAgent(), "127.0.0.1", h.now()))
    [lost] = h.updates(stream)
    assert (lost["state"], lost["reason"]) == (ts.LOST, "REASON_AGENT_REMOVED")
    assert lost["message"] == "Agent 127.0.0.1 removed: the agent unregistered"
    counters = h.master.counters
    assert counters["slave_removals"] == counters["slave_removals/reason_unregistered"] == 1


def test_reregistration_without_a_task_drops_it():
    h = Harness()
    agent_id, fid, stream = running_task(h, checkpoint=True)
    h.pump(h.master.agent_disconnected("c1", h.now()))
    h.register_agent("c2", agent_id=agent_id)  # reports nothing
    [gone] = h.updates(stream)
    assert gone["state"] == ts.LOST and gone["reason"] == "REASON_RECONCILIATION"


def test_tasks_of_a_removed_framework_are_shut_down_on_reregistration():
    h = Harness()
    fid, stream = h.subscribe()
    h.call(fid, stream, {"type": "TEARDOWN"})
    report = internal.Task(
        name="t1", task_id=ID("t1"), framework_id=ID(fid), agent_id=ID("S9"), state=ts.RUNNING
    )
    info = FrameworkInfo(user="root", name="fw", id=ID(fid))
    reregister(h, "c1", "S9", frameworks=[info], tasks=[report])
    [shutdown] = h.agent_messages("c1", internal.ShutdownFramework)
    assert shutdown.framework_id == ID(fid)


def test_rate_limit_flag():
    assert parse_rate_limit("1/10mins", "f") == (1, 600.0)
    assert parse_rate_limit("2/3hrs", "f") == (2, 10800.0)
    assert parse_rate_limit(None, "f") is None
    for bad in ("10mins", "0/1secs", "x/1secs", "1/forever"):
        with pytest.raises(ValueError, match="N/DURATION"):
            parse_rate_limit(bad, "f")


def test_framework_removed_while_its_agent_was_disconnected_is_shut_down_there():
    h = Harness()
    agent_id, fid, stream = running_task(h, checkpoint=True)
    h.pump(h.master.agent_disconnected("c1", h.now()))
    h.call(fid, stream, {"type": "TEARDOWN"})
    assert not h.agent_messages("c1", internal.ShutdownFramework)  # nobody to tell
    report = internal.Task(
        name="t1", task_id=ID("t1"), framework_id=ID(fid), agent_id=ID(agent_id), state=ts.RUNNING
    )
    reregister(h, "c2", agent_id, tasks=[report])
    [shutdown] = h.agent_messages("c2", internal.ShutdownFramework)
    assert shutdown.framework_id == ID(fid)
