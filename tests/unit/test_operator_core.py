"""The master core's operator entry points (MARK_AGENT_GONE, TEARDOWN) and its operator event
emission, driven directly with a fake clock (no processes)."""

from __future__ import annotations

from typing import Any

from master_kit import Harness, command_task, launch_body

from butte.core import internal
from butte.master.effects import Effect, OperatorEvent


class EventHarness(Harness):
    """A Harness that also keeps the core's OperatorEvents."""

    def __init__(self) -> None:
        super().__init__()
        self.operator_events: list[dict[str, Any]] = []

    def pump(self, effects: list[Effect]) -> list[Effect]:
        self.operator_events += [e.event for e in effects if isinstance(e, OperatorEvent)]
        return super().pump(effects)

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.operator_events]


def running_task(h: Harness, partition_aware: bool = False) -> tuple[str, str, str]:
    """A framework with one RUNNING task on agent conn c1: (framework, stream, agent)."""
    caps = [{"type": "PARTITION_AWARE"}] if partition_aware else []
    agent_id = h.register_agent("c1")
    fid, stream = h.subscribe("fw", capabilities=caps)
    h.allocate()
    (offer,) = h.offers(stream)
    assert h.call(fid, stream, launch_body(offer, command_task("t1", offer))).status == 202
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    h.updates(stream)
    return fid, stream, agent_id


def test_no_operator_events_without_subscribers():
    h = EventHarness()
    running_task(h)
    assert h.operator_events == []


def test_operator_events_cover_the_lifecycle():
    h = EventHarness()
    h.master.operator_subscribers = 1
    fid, stream, agent_id = running_task(h)
    assert h.kinds()[:2] == ["AGENT_ADDED", "FRAMEWORK_ADDED"]
    added = next(e for e in h.operator_events if e["type"] == "TASK_ADDED")
    assert added["task_added"]["task"]["task_id"] == {"value": "t1"}
    assert added["task_added"]["task"]["state"] == "TASK_STAGING"
    updated = next(e for e in h.operator_events if e["type"] == "TASK_UPDATED")
    assert updated["task_updated"]["state"] == "TASK_RUNNING"
    assert updated["task_updated"]["framework_id"] == {"value": fid}
    assert updated["task_updated"]["status"]["state"] == "TASK_RUNNING"
    agent = next(e for e in h.operator_events if e["type"] == "AGENT_ADDED")
    assert agent["agent_added"]["agent"]["agent_info"]["id"] == {"value": agent_id}
    h.operator_events.clear()
    assert h.found(h.master.teardown_framework(fid, h.now()))
    assert h.kinds() == ["TASK_UPDATED", "FRAMEWORK_REMOVED"]
    removed = h.operator_events[-1]["framework_removed"]["framework_info"]
    assert removed["id"] == {"value": fid}


def test_teardown_of_unknown_framework_is_refused():
    h = Harness()
    assert h.master.teardown_framework("nope", h.now()) is None


def test_mark_agent_gone_loses_tasks_shuts_agent_down_and_refuses_it_later():
    h = EventHarness()
    h.master.operator_subscribers = 1
    fid, stream, agent_id = running_task(h)
    h.operator_events.clear()
    assert h.found(h.master.mark_agent_gone(agent_id, h.now()))
    assert h.agent_messages("c1", internal.ShutdownAgent)
    assert "c1" in h.closed_connections
    (status,) = h.updates(stream)
    assert status["state"] == "TASK_LOST"  # not partition-aware
    assert status["reason"] == "REASON_AGENT_REMOVED"  # Mesos' reason with TASK_LOST
    assert agent_id not in h.master.agents
    assert "AGENT_REMOVED" in h.kinds()
    # Idempotent, and the agent is refused if it comes back.
    assert h.found(h.master.mark_agent_gone(agent_id, h.now()))
    info = internal.AgentInfo(hostname="127.0.0.1", port=5051, id=internal.ID(agent_id))
    h.pump(
        h.master.agent_message(
            "c2", internal.RegisterAgent(agent_info=info, version="1"), "127.0.0.1", h.now()
        )
    )
    assert h.agent_messages("c2", internal.ShutdownAgent)
    assert agent_id not in h.master.agents


def test_mark_agent_gone_tells_partition_aware_frameworks_gone_by_operator():
    h = Harness()
    _, stream, agent_id = running_task(h, partition_aware=True)
    assert h.found(h.master.mark_agent_gone(agent_id, h.now()))
    (status,) = h.updates(stream)
    assert status["state"] == "TASK_GONE_BY_OPERATOR"


def test_mark_agent_gone_of_unknown_agent_is_refused():
    h = Harness()
    assert h.master.mark_agent_gone("never-seen", h.now()) is None


def test_total_counts_repeated_shapes_like_separate_additions():
    from butte.core.resources import parse_resources
    from butte.master.operator_views import total

    task = parse_resources("cpus:0.1;mem:32;ports:[31000-31000]")
    other = parse_resources("cpus:1;gpus:1")
    expected = task + task + other + task
    assert total([task, task, other, task]) == expected
    assert total(iter([])) == parse_resources("")
    # Temporaries (a generator making new objects) are never confused with each other.
    assert total(parse_resources("cpus:2") for _ in range(3)) == parse_resources("cpus:6")


def test_all_agents_used_matches_each_agents_own_sum():
    from butte.master.operator_views import agent_used, all_agents_used, get_agents

    h = EventHarness()
    fid, stream, agent_id = running_task(h)
    h.register_agent("c2")
    used = all_agents_used(h.master)
    assert set(used) == set(h.master.agents)
    for aid, agent in h.master.agents.items():
        assert used[aid] == agent_used(h.master, agent)
    assert used[agent_id]
    allocated = {
        a["agent_info"]["id"]["value"]: a["allocated_resources"]
        for a in get_agents(h.master)["agents"]
    }
    assert allocated[agent_id] and len(allocated) == 2


def test_calls_are_refused_in_mesos_words():
    """Master::Http::api and the scheduler endpoint: parse errors as they are, validation
    errors prefixed, an unknown type read as a missing one (protobuf drops an enum value it
    does not know), UNKNOWN not implemented (501)."""
    from butte.core.operator import parse_call
    from butte.master.server import parse_scheduler_call

    assert parse_call(b"{", "master")[1].startswith("Failed to parse body into JSON: ")
    no_type = "Failed to validate master::Call: Expecting 'type' to be present"
    assert parse_call(b"{}", "master") == (400, no_type)
    assert parse_call(b'{"type": "BOGUS"}', "master") == (400, no_type)
    assert parse_call(b'{"type": "UNKNOWN"}', "master") == (
        501,
        "Call type UNKNOWN is not implemented",
    )
    assert parse_call(b'{"type": "GET_METRICS"}', "agent") == (
        400,
        "Failed to validate agent::Call: Expecting 'get_metrics' to be present",
    )
    wrong = parse_call(b'{"type": "UPDATE_WEIGHTS", "update_weights": 3}', "master")
    assert wrong[1].startswith("Failed to convert JSON into Call protobuf: ")
    assert parse_call(b'{"type": "GET_METRICS", "get_metrics": {}}', "master").type == "GET_METRICS"

    assert parse_scheduler_call(b'{"type": "FROBNICATE"}') == (
        400,
        "Failed to validate scheduler::Call: Expecting 'type' to be present",
    )
    assert parse_scheduler_call(b'{"type": "UNKNOWN"}') == (
        501,
        "Call type UNKNOWN is not implemented",
    )
    assert parse_scheduler_call(b'{"type": "KILL", "framework_id": {"value": "f"}}') == (
        400,
        "Failed to validate scheduler::Call: Expecting 'kill' to be present",
    )
    assert parse_scheduler_call(b"[")[1].startswith("Failed to parse body into JSON: ")


def test_weights_are_validated_as_mesos_weights_handler_does():
    from butte.master.legacy import weights_problem

    assert weights_problem([(" web ", 2)]) == {"web": 2.0}  # trimmed first
    assert weights_problem([("web", -1)]) == (
        "Failed to validate update weights request JSON for role 'web': "
        "Invalid weight '-1': Weights must be positive"
    )
    bad = weights_problem([("/web", 1)])
    assert isinstance(bad, str)
    assert bad.startswith("Failed to validate update weights request JSON: Invalid role '/web'")
