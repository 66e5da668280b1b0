"""Operation feedback across a master failover, in the pure cores (butte/master/
operation_feedback.py, butte/agent/operation_updates.py): the agent keeps an applied
operation with an id until its status is acknowledged, resends it, reports it when it
re-registers, and a new master rebuilds its record from that report."""

from __future__ import annotations

from typing import Any

import msgspec

from butte.agent.effects import CheckpointOperations
from butte.agent.operation_updates import OperationStatusBook
from butte.coord.interface import RegistryState
from butte.core import internal
from butte.core.messages import ID
from tests.unit import agent_kit
from tests.unit.master_kit import Harness
from tests.unit.test_reservations import AGENT, _accept, _cluster, _op_statuses, dyn

RESERVE = {"type": "RESERVE", "id": {"value": "r"}, "reserve": {"resources": [dyn("cpus", 1)]}}


def _report(agent_id: str = "A1", uuid: str = "u1", op: str = "r") -> internal.OperationReport:
    fw = agent_kit.framework()
    status = {
        "operation_id": {"value": op},
        "state": "OPERATION_FINISHED",
        "agent_id": {"value": agent_id},
        "uuid": {"value": uuid},
    }
    info = {"type": "RESERVE", "id": {"value": op}}
    return internal.OperationReport(framework=fw, info=info, statuses=[status])


def _framework_info(fid: str) -> dict[str, Any]:
    info: dict[str, Any] = {"id": {"value": fid}, "roles": ["web"], "principal": "ops"}
    info["capabilities"] = [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}]
    return info


# -- the agent's book --------------------------------------------------------------------------


def test_book_resends_with_backoff_until_acknowledged():
    book = OperationStatusBook(1.0, 3.0)
    assert book.add(_report(), now=0.0)
    assert book.due(0.5) == [] and book.next_deadline() == 1.0
    assert [r.operation_id for r in book.due(1.0)] == ["r"]  # then 2s later, then 3s (max)
    assert book.due(2.9) == [] and len(book.due(3.0)) == 1
    assert book.due(5.9) == [] and len(book.due(6.0)) == 1 and book.next_deadline() == 9.0
    fid = agent_kit.FID
    assert not book.acknowledge(fid, "r", "stale")  # another uuid: still kept
    assert book.acknowledge(fid, "r", "u1")
    assert book.reports() == [] and book.next_deadline() is None and book.due(100.0) == []


def test_book_refuses_unacknowledgeable_reports_and_drops_other_agents():
    book = OperationStatusBook(1.0, 3.0)
    bad = internal.OperationReport(framework=agent_kit.framework(), info={}, statuses=[])
    assert not book.add(bad, 0.0)
    book.recover([_report("OLD", op="a"), _report("A1", op="b")])
    assert book.keep_agent("A1") and [r.operation_id for r in book.reports()] == ["b"]
    assert book.next_deadline() is None  # recovered records wait for a registration
    book.rearm(10.0)
    assert book.next_deadline() == 11.0


def test_agent_checkpoints_reports_resends_and_forgets_on_ack():
    h = agent_kit.Harness(status_update_retry_interval_min=1.0)
    h.register()
    report = _report(agent_kit.AID)
    h.master(internal.ApplyOperation(operation=report))
    [written] = [c for c in h.checkpoints if isinstance(c, CheckpointOperations)]
    assert written.operations[0]["info"]["id"] == {"value": "r"}
    h.advance(1.0)
    [resent] = h.sent(internal.OperationStatusUpdate)
    assert resent.operation == report
    assert h.agent.register_message().operations == [report]  # reported on re-registration
    h.master(internal.OperationStatusAck(ID(agent_kit.FID), ID("r"), "u1"))
    assert h.checkpoints[-1] == CheckpointOperations([])
    assert h.agent.register_message().operations == []
    h.advance(10.0)
    assert len(h.sent(internal.OperationStatusUpdate)) == 1  # acknowledged: no more resends


# -- the master --------------------------------------------------------------------------------


def test_a_new_master_rebuilds_operations_from_the_agent_and_relays_the_ack():
    h, agent_id, fid, stream, offer = _cluster()
    _accept(h, fid, stream, offer, RESERVE)
    [status] = _op_statuses(h, stream)
    [apply] = h.agent_messages("c1", internal.ApplyOperation)
    assert apply.operation.framework_id == fid and apply.operation.statuses == [status]

    # The master fails over; the new one knows the agent only from the registry.
    record = h.master.agents[agent_id]
    h2 = Harness()
    registry = RegistryState(agents={agent_id: msgspec.to_builtins(record.info)})
    h2.pump(h2.master.recover_registry(registry, h2.now()))
    assert h2.master.operations_json() == []
    fid2, early = h2.subscribe(**_framework_info(fid))  # back before the agent
    reconcile = {
        "type": "RECONCILE_OPERATIONS",
        "reconcile_operations": {
            "operations": [
                {"operation_id": {"value": "r"}, "agent_id": {"value": agent_id}},
                {"operation_id": {"value": "x"}, "agent_id": {"value": "nowhere"}},
            ]
        },
    }
    assert h2.call(fid, early, reconcile).status == 202
    answers = {s["operation_id"]["value"]: s["state"] for s in _op_statuses(h2, early)}
    assert answers == {"r": "OPERATION_RECOVERING", "x": "OPERATION_UNKNOWN"}

    # The agent re-registers with the operation it kept: the status goes out again.
    info = internal.AgentInfo(
        hostname="127.0.0.1", port=5051, resources=record.info.resources, id=ID(agent_id)
    )
    msg = internal.RegisterAgent(agent_info=info, version="0.1.0", operations=[apply.operation])
    h2.pump(h2.master.agent_message("c9", msg, "127.0.0.1", h2.now()))
    assert _op_statuses(h2, early) == [status]
    [listed] = h2.master.operations_json()
    assert listed["framework_id"] == {"value": fid} and listed["uuid"] == status["uuid"]
    assert listed["agent_id"] == {"value": agent_id}
    assert h2.call(fid, early, reconcile).status == 202
    answers = {s["operation_id"]["value"]: s["state"] for s in _op_statuses(h2, early)}
    assert answers == {"r": "OPERATION_FINISHED", "x": "OPERATION_UNKNOWN"}

    # A resend from the agent reaches the framework too, until it acknowledges.
    resend = internal.OperationStatusUpdate(operation=apply.operation)
    h2.pump(h2.master.agent_message("c9", resend, "127.0.0.1", h2.now()))
    assert _op_statuses(h2, early) == [status]
    ack = {"operation_id": {"value": "r"}, "agent_id": {"value": agent_id}}
    ack["uuid"] = status["uuid"]
    body = {"type": "ACKNOWLEDGE_OPERATION_STATUS", "acknowledge_operation_status": ack}
    assert h2.call(fid, early, body).status == 202
    [relayed] = h2.agent_messages("c9", internal.OperationStatusAck)
    assert (relayed.framework_id.value, relayed.operation_id.value) == (fid, "r")
    assert relayed.uuid == status["uuid"]["value"]
    assert h2.master.operations_json() == []

    # A resend that crossed the acknowledgement is not forwarded (nor the operation brought
    # back); the agent is told again that it was acknowledged.
    h2.pump(h2.master.agent_message("c9", resend, "127.0.0.1", h2.now()))
    assert _op_statuses(h2, early) == []
    assert h2.master.operations_json() == []
    assert h2.agent_messages("c9", internal.OperationStatusAck) == [relayed, relayed]


def test_an_agent_report_recovers_a_framework_the_new_master_does_not_know_yet():
    h, agent_id, fid, stream, offer = _cluster()
    _accept(h, fid, stream, offer, RESERVE)
    [status] = _op_statuses(h, stream)
    [apply] = h.agent_messages("c1", internal.ApplyOperation)
    h2 = Harness()
    info = internal.AgentInfo(
        hostname="127.0.0.1", port=5051, resources=h.master.agents[agent_id].info.resources,
        id=ID(agent_id),
    )  # fmt: skip
    msg = internal.RegisterAgent(agent_info=info, version="0.1.0", operations=[apply.operation])
    h2.pump(h2.master.agent_message("c9", msg, "127.0.0.1", h2.now()))
    assert h2.master.frameworks[fid].recovered
    [listed] = h2.master.operations_json()
    assert listed["latest_status"] == status
    _, again = h2.subscribe(**_framework_info(fid))
    assert _op_statuses(h2, again) == [status]


def test_a_reconnecting_agent_that_missed_the_operation_is_sent_it_again():
    h, agent_id, fid, stream, offer = _cluster()
    h.pump(h.master.agent_disconnected("c1", h.now()))
    _accept(h, fid, stream, offer, RESERVE)  # the offer was rescinded: dropped, not kept
    assert _op_statuses(h, stream)[0]["state"] == "OPERATION_DROPPED"
    h.register_agent("c2", AGENT, agent_id=agent_id)
    h.allocate()
    [offer] = h.offers(stream)
    _accept(h, fid, stream, offer, RESERVE)
    [status] = _op_statuses(h, stream)
    assert status["state"] == "OPERATION_FINISHED"
    [apply] = h.agent_messages("c2", internal.ApplyOperation)
    # It reconnects without it (the message was lost with its connection): its total is
    # corrected first, then it is given the operation to keep.
    info = internal.AgentInfo(
        hostname="127.0.0.1", port=5051, resources=apply.operation.info["reserve"]["resources"],
        id=ID(agent_id),
    )  # fmt: skip
    msg = internal.RegisterAgent(agent_info=info, version="0.1.0")
    h.pump(h.master.agent_message("c3", msg, "127.0.0.1", h.now()))
    kinds = [type(m) for m in h.agent_inbox["c3"]]
    assert kinds == [
        internal.AgentReregistered, internal.CheckpointResources, internal.ApplyOperation
    ]  # fmt: skip
    assert h.agent_inbox["c3"][-1].operation == apply.operation
    # One it did report is not sent again.
    msg = internal.RegisterAgent(agent_info=info, version="0.1.0", operations=[apply.operation])
    h.pump(h.master.agent_message("c4", msg, "127.0.0.1", h.now()))
    assert not h.agent_messages("c4", internal.ApplyOperation)
