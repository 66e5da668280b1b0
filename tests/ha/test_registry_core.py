"""The master core's side of the registry, with no ZooKeeper: which changes it writes, that
each write comes before what acknowledges it, and recovery after a failover (docs/protocol.md
§1.11 and §4.3). Pure and fast: a fake clock, no loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from master_kit import Harness, command_task, launch_body  # noqa: E402

from butte.coord.interface import (  # noqa: E402
    AdmitAgent,
    MarkGone,
    MarkUnreachable,
    RegistryState,
    RemoveAgent,
    UpdateAgentDrain,
    UpdateWeights,
)
from butte.core import internal, task_states  # noqa: E402
from butte.core.messages import ID, Capability, FrameworkInfo  # noqa: E402
from butte.master.effects import Effect, RegistryWrite, SendToAgent, SendToFramework  # noqa: E402
from butte.master.machine import MasterOptions  # noqa: E402


class Recorder(Harness):
    """The harness, also keeping every effect in order."""

    def __init__(self, options: MasterOptions | None = None) -> None:
        super().__init__(options)
        self.log: list[Any] = []

    def pump(self, effects: list[Effect]) -> list[Effect]:
        self.log.extend(effects)
        return super().pump(effects)

    def writes(self) -> list[Any]:
        return [e.operation for e in self.log if isinstance(e, RegistryWrite)]

    def index(self, predicate) -> int:
        return next(i for i, e in enumerate(self.log) if predicate(e))


def is_write(kind: type):
    return lambda e: isinstance(e, RegistryWrite) and isinstance(e.operation, kind)


def to_agent(kind: type):
    return lambda e: isinstance(e, SendToAgent) and isinstance(e.message, kind)


def reported_task(agent_id: str, fid: str, task_id: str) -> internal.Task:
    return internal.Task(
        name=task_id,
        task_id=ID(task_id),
        framework_id=ID(fid),
        agent_id=ID(agent_id),
        state=task_states.RUNNING,
        resources=[{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}],
    )


def framework_info(fid: str, **extra: Any) -> FrameworkInfo:
    return FrameworkInfo(user="root", name="fw", id=ID(fid), checkpoint=True, **extra)


def test_admission_is_durable_before_it_is_acknowledged():
    h = Recorder()
    agent_id = h.register_agent("c1")
    assert h.writes() == [AdmitAgent(agent_id, h.writes()[0].info)]
    assert h.writes()[0].info["id"] == {"value": agent_id}
    assert h.index(is_write(AdmitAgent)) < h.index(to_agent(internal.AgentRegistered))
    h.master.check_invariants()


def test_reconnecting_agent_writes_nothing():
    h = Recorder()
    agent_id = h.register_agent("c1")
    h.pump(h.master.agent_disconnected("c1", h.now()))
    h.register_agent("c2", agent_id=agent_id)
    assert [type(op) for op in h.writes()] == [AdmitAgent]


def test_recovered_agent_reregisters_without_a_write_and_gets_its_tasks_back():
    h = Recorder()
    h.pump(
        h.master.recover_registry(
            RegistryState(agents={"A1": {"id": {"value": "A1"}}}, weights={"web": 2.5}), h.now()
        )
    )
    assert h.master.recovering_agents == {"A1"}
    assert h.master.allocator.weights["web"] == 2.5
    fid = "F1"
    h.register_agent(
        "c1",
        agent_id="A1",
        frameworks=[framework_info(fid)],
        tasks=[reported_task("A1", fid, "t1")],
    )
    assert h.writes() == []
    assert h.master.recovering_agents == set()
    assert h.master.frameworks[fid].tasks["t1"].state == task_states.RUNNING
    assert h.master.frameworks[fid].recovered


def test_reconciliation_waits_for_recovering_agents():
    h = Recorder()
    h.pump(h.master.recover_registry(RegistryState(agents={"A1": {}}), h.now()))
    fid, stream = h.subscribe(id={"value": "F1"}, checkpoint=True)
    body = {"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "t1"}}]}}
    assert h.call(fid, stream, body).status == 202
    assert h.updates(stream) == []  # no answer while A1 may still come back
    h.register_agent(
        "c1",
        agent_id="A1",
        frameworks=[framework_info(fid)],
        tasks=[reported_task("A1", fid, "t1")],
    )
    h.call(fid, stream, body)
    [status] = h.updates(stream)
    assert status["state"] == task_states.RUNNING
    assert status["reason"] == "REASON_RECONCILIATION"


def test_recovered_agents_not_back_in_time_become_unreachable():
    h = Recorder(MasterOptions(agent_reregister_timeout=60.0))
    h.pump(h.master.recover_registry(RegistryState(agents={"A1": {}, "A2": {}}), h.now()))
    h.register_agent("c1", agent_id="A1")
    h.clock.advance(59)
    h.pump(h.master.tick(h.now()))
    assert h.writes() == []
    h.clock.advance(2)
    h.pump(h.master.tick(h.now()))
    assert h.writes() == [MarkUnreachable("A2", h.now())]
    assert h.master.recovering_agents == set()
    assert "A2" in h.master.unreachable_agents and "A1" in h.master.agents
    fid, stream = h.subscribe(capabilities=[{"type": "PARTITION_AWARE"}])
    body = {
        "type": "RECONCILE",
        "reconcile": {"tasks": [{"task_id": {"value": "t9"}, "agent_id": {"value": "A2"}}]},
    }
    h.call(fid, stream, body)
    [status] = h.updates(stream)
    assert status["state"] == task_states.UNREACHABLE


def test_unreachable_is_written_before_frameworks_hear_of_it():
    h = Recorder(MasterOptions(max_agent_ping_timeouts=1))
    fid, stream = h.subscribe(checkpoint=True)
    agent_id = h.register_agent("c1")
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer)))
    h.pump(h.master.ping_agents(h.now()))
    h.pump(h.master.ping_agents(h.now()))  # no PONG: marked unreachable
    write = h.index(is_write(MarkUnreachable))
    lost = h.index(lambda e: isinstance(e, SendToFramework) and e.event["type"] == "UPDATE")
    assert write < lost
    assert h.writes()[-1] == MarkUnreachable(agent_id, h.now())
    # Coming back re-admits it (a write again).
    h.register_agent("c2", agent_id=agent_id)
    assert isinstance(h.writes()[-1], AdmitAgent)


def test_gone_and_unregistered_agents_are_written_first():
    h = Recorder()
    a1 = h.register_agent("c1")
    h.pump(h.master.agent_disconnected("c1", h.now()))
    assert h.found(h.master.mark_agent_gone(a1, h.now()))
    assert h.writes()[-1] == MarkGone(a1, h.now())
    a2 = h.register_agent("c2")
    h.pump(h.master.agent_message("c2", internal.UnregisterAgent(), "127.0.0.1", h.now()))
    assert h.writes()[-1] == RemoveAgent(a2)
    # A recovering agent can be marked gone too.
    h.pump(h.master.recover_registry(RegistryState(agents={"A9": {}}), h.now()))
    assert h.found(h.master.mark_agent_gone("A9", h.now()))
    assert h.writes()[-1] == MarkGone("A9", h.now())
    assert "A9" not in h.master.recovering_agents


def test_weights_are_written_before_they_apply():
    h = Recorder()
    h.pump(h.master.update_weights({"web": 3.0}))
    assert h.writes() == [UpdateWeights({"web": 3.0})]
    h.pump(h.master.update_weights({"batch": 0.5}))
    assert h.writes()[-1] == UpdateWeights({"web": 3.0, "batch": 0.5})


def test_registry_state_applies_operations():
    state = RegistryState()
    state.apply(AdmitAgent("a", {"x": 1}))
    state.apply(MarkUnreachable("a", 5.0))
    assert state.agents == {} and state.unreachable == {"a": 5.0}
    state.apply(AdmitAgent("a", {"x": 2}))
    assert state.agents == {"a": {"x": 2}} and state.unreachable == {}
    state.apply(MarkGone("a", 7.0))
    assert state.agents == {} and state.gone == {"a": 7.0}
    state.apply(AdmitAgent("b", {}))
    state.apply(RemoveAgent("b"))
    state.apply(UpdateWeights({"r": 2.0}))
    assert state.agents == {} and state.weights == {"r": 2.0}


def _replayed(writes: list[Any]) -> RegistryState:
    """The registry a new leader would load after these writes."""
    state = RegistryState()
    for op in writes:
        state.apply(op)
    return state


def test_deactivation_and_drains_are_written_and_survive_a_failover():
    h = Recorder()
    fid, stream = h.subscribe(checkpoint=True, capabilities=[{"type": "PARTITION_AWARE"}])
    drained, deactivated, plain = h.register_agent("c1"), h.register_agent("c2"), "A3"
    h.allocate()
    offer = next(o for o in h.offers(stream) if o["agent_id"]["value"] == drained)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer)))
    h.status_update("c1", fid, "t1", task_states.RUNNING, drained)
    assert h.found(h.master.drain_agent(drained, 3.0, False, h.now()))
    assert h.found(h.master.deactivate_agent(deactivated, h.now()))
    assert h.writes()[-2:] == [
        UpdateAgentDrain(
            drained,
            {
                "drain": {
                    "state": "DRAINING",
                    "config": {
                        "mark_gone": False,
                        "max_grace_period": {"nanoseconds": 3_000_000_000},
                    },
                }
            },
        ),
        UpdateAgentDrain(deactivated, {"drain": None}),
    ]
    assert h.master.reactivate_agent(drained, h.now()) == (
        "Agent is still in the DRAINING state",
        [],
    )
    # The leader dies before the task ends; the next one recovers the registry.
    registry = _replayed(h.writes())
    registry.agents[plain] = {"id": {"value": plain}}
    new = Recorder()
    new.pump(new.master.recover_registry(registry, new.now()))
    # An agent that has not re-registered yet can be deactivated (Mesos: recovered agents).
    assert new.found(new.master.deactivate_agent(plain, new.now()))
    assert new.master.deactivate_agent("A404", new.now()) is None
    new.register_agent(
        "d1",
        agent_id=drained,
        frameworks=[framework_info(fid, capabilities=[Capability("PARTITION_AWARE")])],
        tasks=[reported_task(drained, fid, "t1")],
    )
    new.register_agent("d2", agent_id=deactivated)
    new.register_agent("d3", agent_id=plain)
    for agent_id in (drained, deactivated, plain):
        agent = new.master.agents[agent_id]
        assert agent.deactivated and not agent.active, agent_id
    assert new.master.agents[drained].drain.state == "DRAINING"
    # The drain goes on where the old leader left it: the task is killed again.
    [kill] = new.agent_messages("d1", internal.KillTask)
    assert kill.task_id == ID("t1") and kill.kill_policy.grace_period.nanoseconds == 3_000_000_000
    new.status_update("d1", fid, "t1", task_states.KILLED, drained)
    new.pump(new.master.tick(new.now()))
    assert new.master.agents[drained].drain.state == "DRAINED"
    assert new.writes()[-1].state["drain"]["state"] == "DRAINED"
    # Reactivation is written too, and only a deactivated agent can be reactivated.
    error, effects = new.master.reactivate_agent(drained, new.now())
    new.pump(effects)
    assert error is None and new.writes()[-1] == UpdateAgentDrain(drained, None)
    assert new.master.reactivate_agent(drained, new.now())[0] == "Agent is not deactivated"
    assert new.master.agents[drained].active
    new.master.check_invariants()


def test_an_unreachable_agent_stays_deactivated_when_it_comes_back():
    h = Recorder(MasterOptions(max_agent_ping_timeouts=1))
    agent_id = h.register_agent("c1")
    h.pump(h.master.ping_agents(h.now()))
    h.pump(h.master.ping_agents(h.now()))  # no PONG: marked unreachable
    assert agent_id in h.master.unreachable_agents
    assert h.found(h.master.drain_agent(agent_id, None, False, h.now()))
    h.register_agent("c2", agent_id=agent_id)
    agent = h.master.agents[agent_id]
    assert agent.deactivated and not agent.active and agent.drain.state == "DRAINING"
    h.pump(h.master.tick(h.now()))
    assert agent.drain.state == "DRAINED"  # nothing ran there
    assert _replayed(h.writes()).deactivated[agent_id]["drain"]["state"] == "DRAINED"
