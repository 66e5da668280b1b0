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
    UpdateWeights,
)
from butte.core import internal, task_states  # noqa: E402
from butte.core.messages import ID, FrameworkInfo  # noqa: E402
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
