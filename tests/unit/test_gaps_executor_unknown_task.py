"""An executor's UPDATE for a task the agent does not know, on the pure agent core, as Mesos'
agent takes it (`Slave::statusUpdate` finds no executor for the task): 202, forwarded to the
master with the agent's id and no container status, resent until acknowledged, and never
ACKNOWLEDGED to the executor, a resend of it neither
(tests/faults/test_gaps_executor_update.py runs it on real processes)."""

from __future__ import annotations

from butte.core import task_states as ts
from tests.unit.agent_kit import AID, FID, Harness, fresh_uuid, started


def _update(h: Harness, task_id: str, uuid: str) -> int:
    status = {
        "task_id": {"value": task_id},
        "state": ts.RUNNING,
        "source": "SOURCE_EXECUTOR",
        "uuid": uuid,
    }
    body = {
        "type": "UPDATE",
        "framework_id": {"value": FID},
        "executor_id": {"value": "t1"},
        "update": {"status": status},
    }
    return h.call(body).status


def test_an_update_for_an_unknown_task_is_forwarded_and_not_acknowledged():
    h = Harness()
    container = started(h, cmd="sleep 60")
    assert h.update("t1", "t1", ts.RUNNING).status == 202
    acks_before = h.events(container).count("ACKNOWLEDGED")
    sent_before = len(h.updates())

    uuid = fresh_uuid(77)
    assert _update(h, "ghost", uuid) == 202
    [ghost] = h.updates()[sent_before:]
    assert ghost.task_id.value == "ghost" and ghost.uuid == uuid
    assert ghost.agent_id is not None and ghost.agent_id.value == AID
    assert ghost.container_status is None
    assert h.events(container).count("ACKNOWLEDGED") == acks_before

    # A resend: taken, still no ACKNOWLEDGED, nothing new to the master.
    assert _update(h, "ghost", uuid) == 202
    assert h.events(container).count("ACKNOWLEDGED") == acks_before
    assert len(h.updates()) == sent_before + 1
    # Resent to the master until the framework acknowledges it, then forgotten.
    h.advance(30)
    assert [u.uuid for u in h.updates()[sent_before:]].count(uuid) >= 2
    h.ack(ghost)
    resent = len(h.updates())
    h.advance(600)
    assert all(u.task_id.value != "ghost" for u in h.updates()[resent:])
    h.check()
