"""Counters of Mesos' master that butte's master core keeps (butte/master/core.py,
machine.py, accept.py, offer_ops.py, agents.py) and ``/metrics/snapshot`` serves
(butte/master/metrics.py): per framework ``calls/*``, ``events/*``, ``offers/*``,
``tasks/terminal/*``, ``operations/*``, and ``master/slave_unreachable_*``, driven through the
pure core (tests/integration/test_metrics_counted.py reads them from a real master)."""

from __future__ import annotations

from butte.coord.interface import RegistryState
from butte.core import internal
from butte.core import task_states as ts
from butte.master.machine import MasterMachine, MasterOptions
from butte.master.metrics import framework_metric_prefix, master_metrics
from tests.unit.master_kit import Harness, command_task, launch_body
from tests.unit.test_reservations import _accept, _cluster, dyn


def _framework(h: Harness, fid: str) -> dict[str, float]:
    """The framework's figures, by name below its prefix."""
    prefix = framework_metric_prefix(h.master.frameworks[fid].info.name, fid)
    return _below(h.master, prefix)


def _below(master: MasterMachine, prefix: str) -> dict[str, float]:
    metrics = master_metrics(master, 0.0)
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def _miss_pings(h: Harness, times: int, answering: frozenset[str] = frozenset()) -> None:
    for _ in range(times):
        h.pump(h.master.ping_agents(h.now()))
        for conn in answering:
            h.pump(h.master.agent_message(conn, internal.Pong(), "127.0.0.1", h.now()))
        h.clock.advance(1.0)


def test_every_framework_counter_is_there_from_the_start_at_zero_but_subscribe():
    h = Harness()
    fid, _ = h.subscribe("fresh")
    figures = _framework(h, fid)
    assert figures["calls"] == 1.0 and figures["calls/subscribe"] == 1.0
    assert figures["calls/accept"] == 0.0 and figures["calls/update_framework"] == 0.0
    # SUBSCRIBED and the first HEARTBEAT.
    assert figures["events"] == 2.0
    assert figures["events/subscribed"] == figures["events/heartbeat"] == 1.0
    for name in ("offers", "rescind", "update", "failure", "error", "update_operation_status"):
        assert figures[f"events/{name}"] == 0.0, name
    for name in ("sent", "accepted", "declined", "rescinded"):
        assert figures[f"offers/{name}"] == 0.0, name
    for state in ("finished", "failed", "killed", "lost", "error", "dropped", "gone"):
        assert figures[f"tasks/terminal/task_{state}"] == 0.0, state
    assert figures["tasks/terminal/task_gone_by_operator"] == 0.0
    assert figures["operations"] == 0.0 and figures["operations/launch_group"] == 0.0
    assert figures["operations/destroy_disk"] == 0.0


def test_calls_events_offers_and_terminal_tasks_are_counted_per_framework():
    h = Harness()
    agent_id = h.register_agent("c1")
    h.register_agent("c2")
    fid, stream = h.subscribe("counted")
    h.allocate()
    offers = h.offers(stream)
    assert len(offers) == 2  # one per agent
    other, other_stream = h.subscribe("other")
    first = next(o for o in offers if o["agent_id"]["value"] == agent_id)
    second = next(o for o in offers if o is not first)
    body = launch_body(first, command_task("fails", first), command_task("killed", first))
    assert h.call(fid, stream, body).status == 202
    decline = {"type": "DECLINE", "decline": {"offer_ids": [second["id"]]}}
    assert h.call(fid, stream, decline).status == 202
    h.status_update("c1", fid, "fails", ts.RUNNING, agent_id)
    h.status_update("c1", fid, "fails", ts.FAILED, agent_id)
    h.status_update("c1", fid, "killed", ts.KILLED, agent_id)
    h.status_update("c1", fid, "killed", ts.KILLED, agent_id)  # a retry is not counted twice
    h.master.heartbeats_sent()  # the shell's periodic HEARTBEAT on every stream
    figures = _framework(h, fid)
    assert figures["calls/subscribe"] == 1.0
    assert figures["calls/accept"] == 1.0 and figures["calls/decline"] == 1.0
    assert figures["calls"] == 3.0
    assert figures["offers/sent"] == 2.0
    assert figures["offers/accepted"] == 1.0 and figures["offers/declined"] == 1.0
    assert figures["events/offers"] == 1.0  # one OFFERS event carried both offers
    assert figures["events/update"] == 4.0  # RUNNING, FAILED, KILLED, and the retry's
    assert figures["events/heartbeat"] == 2.0
    assert figures["events"] == 1 + 2 + 1 + 4.0
    assert figures["tasks/terminal/task_failed"] == 1.0
    assert figures["tasks/terminal/task_killed"] == 1.0
    assert figures["tasks/terminal/task_finished"] == 0.0
    # Mesos counts its LAUNCH operation once per task it sends to an agent.
    assert figures["operations/launch"] == 2.0 and figures["operations"] == 2.0
    # The other framework counts only its own.
    mine = _framework(h, other)
    assert mine["calls"] == 1.0 and mine["offers/sent"] == 0.0
    assert mine["events/heartbeat"] == 2.0 and mine["tasks/terminal/task_failed"] == 0.0
    assert h.events(other_stream, "UPDATE") == []


def test_rescinded_offers_and_the_master_ending_tasks_are_counted():
    h = Harness()
    agent_id = h.register_agent("c1")
    h.register_agent("c2")
    fid, stream = h.subscribe("rescinded")
    h.allocate()
    offers = h.offers(stream)
    first = next(o for o in offers if o["agent_id"]["value"] == agent_id)
    body = launch_body(first, command_task("t1", first))
    assert h.call(fid, stream, body).status == 202
    h.status_update("c1", fid, "t1", ts.RUNNING, agent_id)
    # The agent without a task goes: its offer is rescinded; the other's task is lost when
    # its connection drops (the framework does not checkpoint).
    gone = next(o for o in offers if o is not first)["agent_id"]["value"]
    assert h.found(h.master.mark_agent_gone(gone, h.now()))
    h.pump(h.master.agent_disconnected("c1", h.now()))
    figures = _framework(h, fid)
    assert figures["offers/rescinded"] == 1.0 and figures["events/rescind"] == 1.0
    assert figures["tasks/terminal/task_lost"] == 1.0
    assert figures["events/failure"] == 1.0  # the gone agent's FAILURE


def test_the_counters_of_a_torn_down_framework_stay_while_it_is_listed_as_completed():
    h = Harness(MasterOptions(max_completed_frameworks=1))
    fid, stream = h.subscribe("done")
    name = framework_metric_prefix("done", fid)
    assert h.call(fid, stream, {"type": "TEARDOWN"}).status == 202
    figures = _below(h.master, name)
    assert figures["calls/teardown"] == 1.0 and figures["subscribed"] == 0.0
    other, other_stream = h.subscribe("next")
    assert h.call(other, other_stream, {"type": "TEARDOWN"}).status == 202
    assert _below(h.master, name) == {}, "evicted from the completed list, as in Mesos"


def test_offer_operations_are_counted_by_type_for_their_framework():
    h, _, fid, stream, offer = _cluster()
    reserve = {"type": "RESERVE", "reserve": {"resources": [dyn("cpus", 1)]}}
    _accept(h, fid, stream, offer, reserve)
    figures = _framework(h, fid)
    assert figures["operations/reserve"] == 1.0 and figures["operations"] == 1.0
    assert figures["operations/unreserve"] == 0.0 and figures["offers/accepted"] == 1.0
    # A refused operation is not counted (Mesos counts what it applies).
    h.clock.advance(6.0)  # past the default 5 s refusal of the rest of the offer
    h.allocate()
    [offer] = h.offers(stream)
    too_much = {"type": "RESERVE", "reserve": {"resources": [dyn("cpus", 100)]}}
    _accept(h, fid, stream, offer, too_much)
    assert _framework(h, fid)["operations/reserve"] == 1.0


def test_calls_of_a_framework_are_counted_even_when_refused_for_the_stream():
    h = Harness()
    fid, stream = h.subscribe("refused")
    assert h.call(fid, "another-stream", {"type": "REVIVE"}).status == 400
    assert h.call(fid, stream, {"type": "REVIVE"}).status == 202
    figures = _framework(h, fid)
    assert figures["calls/revive"] == 2.0 and figures["calls"] == 3.0
    # A resubscription is a SUBSCRIBE call too.
    info = {"id": {"value": fid}}
    h.subscribe("refused", **info)
    assert _framework(h, fid)["calls/subscribe"] == 2.0


def test_unreachable_transitions_without_a_rate_limit_are_scheduled_and_completed():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2))
    h.register_agent("c1")
    metrics = master_metrics(h.master, 0.0)
    for name in ("scheduled", "completed", "canceled"):
        assert metrics[f"master/slave_unreachable_{name}"] == 0.0, name
    _miss_pings(h, 3)
    metrics = master_metrics(h.master, 0.0)
    assert metrics["master/slave_unreachable_scheduled"] == 1.0
    assert metrics["master/slave_unreachable_completed"] == 1.0
    assert metrics["master/slave_unreachable_canceled"] == 0.0


def test_an_agent_answering_while_its_transition_waits_is_counted_as_canceled():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2, agent_removal_rate_limit=(1, 10.0)))
    h.register_agent("c1")
    h.register_agent("c2")
    _miss_pings(h, 3)
    metrics = master_metrics(h.master, 0.0)
    assert metrics["master/slave_unreachable_scheduled"] == 2.0
    assert metrics["master/slave_unreachable_completed"] == 1.0
    (waiting,) = h.master.pending_agent_removals
    conn = next(c for c, a in h.master.connections.items() if a == waiting)
    _miss_pings(h, 12, answering={conn})
    metrics = master_metrics(h.master, 0.0)
    assert metrics["master/slave_unreachable_scheduled"] == 2.0
    assert metrics["master/slave_unreachable_completed"] == 1.0
    assert metrics["master/slave_unreachable_canceled"] == 1.0


def test_recovered_agents_not_back_in_time_are_counted_and_a_new_master_starts_at_zero():
    h = Harness(MasterOptions(agent_reregister_timeout=10.0))
    registry = RegistryState(agents={"S1": {"hostname": "h1", "port": 5051}})
    h.pump(h.master.recover_registry(registry, h.now()))
    h.clock.advance(11.0)
    h.pump(h.master.tick(h.now()))
    metrics = master_metrics(h.master, 0.0)
    assert metrics["master/slave_unreachable_scheduled"] == 1.0
    assert metrics["master/slave_unreachable_completed"] == 1.0
    assert metrics["master/recovery_slave_removals"] == 1.0
    # A failover: the next master's core counts from zero, as Mesos' counters do.
    fresh = Harness()
    assert master_metrics(fresh.master, 0.0)["master/slave_unreachable_scheduled"] == 0.0
