"""Counters of Mesos' agent that butte's agent core keeps (butte/agent/machine.py,
executor_api.py) for ``/metrics/snapshot`` (``slave/valid_status_updates``,
``slave/invalid_status_updates``, ``slave/valid_framework_messages``,
``slave/invalid_framework_messages``), driven through the pure core
(tests/integration/test_metrics_counted.py reads them from a real agent)."""

from __future__ import annotations

from typing import Any

from butte.core import internal
from butte.core.messages import ID
from tests.unit.agent_kit import FID, Harness, command_task, run, started


def _counts(h: Harness) -> dict[str, int]:
    names = (
        "valid_status_updates",
        "invalid_status_updates",
        "valid_framework_messages",
        "invalid_framework_messages",
    )
    return {name: h.agent.counters.get(name, 0) for name in names}


def _message(h: Harness, executor_id: str, data: str = "eW8=") -> int:
    body: dict[str, Any] = {
        "type": "MESSAGE",
        "framework_id": {"value": FID},
        "executor_id": {"value": executor_id},
        "message": {"data": data},
    }
    return h.call(body).status


def test_executor_and_agent_updates_count_as_valid_refused_ones_as_invalid():
    h = Harness()
    container = started(h)
    assert _counts(h)["valid_status_updates"] == 0
    assert h.update("t1", "t1", "TASK_RUNNING").status == 202
    assert h.update("t1", "t1", "TASK_RUNNING").status == 202  # a new uuid: another update
    # Refused: an executor this agent does not run, a transition out of a terminal state
    # after the task ended, a status without its uuid.
    assert h.update("nobody", "t1", "TASK_RUNNING").status == 400
    assert h.update("t1", "t1", "TASK_FINISHED").status == 202
    assert h.update("t1", "t1", "TASK_RUNNING").status >= 400
    no_uuid = {
        "type": "UPDATE",
        "framework_id": {"value": FID},
        "executor_id": {"value": "t1"},
        "update": {"status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING"}},
    }
    assert h.call(no_uuid).status == 400
    assert _counts(h)["valid_status_updates"] == 3
    assert _counts(h)["invalid_status_updates"] == 3
    # The agent's own update (the executor ended with a task still live) counts as valid.
    run(h, command_task("t2", "sleep 100"))
    (second,) = [c for c, e in h.launched.items() if e.executor_id == "t2"]
    h.apply(h.agent.container_exited(second, 1, h.now()))
    assert h.updates()[-1].source == "SOURCE_AGENT"
    assert _counts(h)["valid_status_updates"] == 4
    assert container in h.to_executor


def test_updates_of_a_terminating_framework_count_as_invalid():
    h = Harness(executor_shutdown_grace_period=5.0)
    started(h)
    assert h.update("t1", "t1", "TASK_RUNNING").status == 202
    h.master(internal.ShutdownFramework(ID(FID)))
    assert h.update("t1", "t1", "TASK_KILLED").status == 202  # acknowledged, not forwarded
    counts = _counts(h)
    assert counts["valid_status_updates"] == 1 and counts["invalid_status_updates"] == 1


def test_framework_messages_both_ways_valid_when_relayed_invalid_when_dropped():
    h = Harness()
    container = started(h)
    h.master(internal.FrameworkToExecutor(ID(FID), ID("t1"), "aGk="))
    assert h.to_executor[container][-1]["type"] == "MESSAGE"
    h.master(internal.FrameworkToExecutor(ID(FID), ID("nobody"), "aGk="))
    assert _message(h, "t1") == 202
    assert _counts(h)["valid_framework_messages"] == 2
    assert _counts(h)["invalid_framework_messages"] == 1
    # Without a master the executor's message is dropped, as Mesos' agent drops it when it
    # is not running (registered).
    h.apply(h.agent.master_disconnected(h.now()))
    assert _message(h, "t1") == 202
    counts = _counts(h)
    assert counts["valid_framework_messages"] == 2
    assert counts["invalid_framework_messages"] == 2
    # Bad input is refused before it is a message (Mesos' call validation): not counted.
    assert _message(h, "t1", data="!!") == 400
    assert _counts(h) == counts
