"""Operation feedback that outlives the leading master, as in Mesos: an offer operation
with an id that the master applied on an agent is sent to that agent
(``internal.ApplyOperation``), which keeps it until the framework acknowledges its status,
resends the status meanwhile (``internal.OperationStatusUpdate``, forwarded here to the
framework) and reports it whenever it re-registers. A master that did not see the operation
(a new leader after a failover, a restarted standalone master) rebuilds its record from that
report: GET_OPERATIONS lists it, RECONCILE_OPERATIONS answers it, the framework is sent the
unacknowledged status again and its ACKNOWLEDGE_OPERATION_STATUS is relayed to the agent.

Until an agent the registry knows has re-registered, RECONCILE_OPERATIONS answers its
operations OPERATION_RECOVERING; those of an unreachable agent OPERATION_UNREACHABLE, of a
gone one OPERATION_GONE_BY_OPERATOR, anything else unknown OPERATION_UNKNOWN.

Functions over `MasterCore` records, used by the agent and operation event handlers (which
may not import each other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from butte.core import internal
from butte.core.messages import ID, FrameworkInfo
from butte.master import views
from butte.master.core import MasterCore
from butte.master.state import Agent, Framework, OperationRecord

FINISHED = "OPERATION_FINISHED"
RECOVERING = "OPERATION_RECOVERING"
UNREACHABLE = "OPERATION_UNREACHABLE"
GONE = "OPERATION_GONE_BY_OPERATOR"
UNKNOWN = "OPERATION_UNKNOWN"

RecoverFramework = Callable[[str, FrameworkInfo | None, float], Framework | None]


def report_of(record: OperationRecord, framework: FrameworkInfo) -> internal.OperationReport:
    """What the agent keeps of an operation record."""
    return internal.OperationReport(
        framework=framework, info=record.info, statuses=list(record.statuses)
    )


def record_of(report: internal.OperationReport, agent_id: str) -> OperationRecord:
    """A master's record rebuilt from an agent's report: its latest status unacknowledged."""
    return OperationRecord(
        report.operation_id,
        report.framework_id,
        agent_id,
        dict(report.info),
        list(report.statuses),
        report.uuid,
    )


def status_event(status: dict[str, Any]) -> dict[str, Any]:
    return {"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {"status": status}}


def unknown_state(core: MasterCore, agent_id: str | None) -> str:
    """The state RECONCILE_OPERATIONS answers for an operation the master has no record of,
    by what it knows of the agent named."""
    if agent_id is None or agent_id in core.agents:
        return UNKNOWN
    if agent_id in core.recovering_agents:
        return RECOVERING
    if agent_id in core.unreachable_agents:
        return UNREACHABLE
    if agent_id in core.gone_agents:
        return GONE
    return UNKNOWN


def send_to_agent(core: MasterCore, agent: Agent, fw: Framework, record: OperationRecord) -> None:
    """The agent is to keep ``record`` until its status is acknowledged."""
    core._send_agent(agent, internal.ApplyOperation(operation=report_of(record, fw.info)))


def acknowledged(core: MasterCore, record: OperationRecord, uuid: str) -> None:
    """Relays a framework's acknowledgement to the agent keeping the operation (if it is
    connected; else it reports the operation again when it re-registers, and the status is
    sent to the framework once more)."""
    agent = core.agents.get(record.agent_id) if record.agent_id is not None else None
    if agent is None or not agent.connected:
        return
    core._send_agent(
        agent,
        internal.OperationStatusAck(
            framework_id=ID(record.framework_id),
            operation_id=ID(record.operation_id),
            uuid=uuid,
        ),
    )


def adopt(
    core: MasterCore,
    agent: Agent,
    reports: list[internal.OperationReport],
    recover_framework: RecoverFramework,
    now: float,
) -> set[tuple[str, str]]:
    """Operations an agent reports (when it re-registers, or resending a status): each gets
    a record if the master has none (of a framework recovered from the report when the
    master does not know it yet), and its unacknowledged status goes to the framework when
    it is connected (else when it re-subscribes). An operation of a framework that is gone
    for good is acknowledged to the agent: nobody is left to do it. Returns the
    (framework id, operation id) pairs reported."""
    seen: set[tuple[str, str]] = set()
    for report in reports:
        fid, op_id, uuid = report.framework_id, report.operation_id, report.uuid
        if not fid or not op_id or uuid is None:
            continue
        seen.add((fid, op_id))
        fw = core.frameworks.get(fid) or recover_framework(fid, report.framework, now)
        if fw is None:
            ack = internal.OperationStatusAck(
                framework_id=ID(fid), operation_id=ID(op_id), uuid=uuid
            )
            core._send_agent(agent, ack)
            continue
        record = fw.operations.get(op_id)
        if record is None:
            record = fw.operations[op_id] = record_of(report, agent.agent_id)
        if record.unacknowledged is not None and fw.connected:
            core._send_framework(fw, status_event(record.statuses[-1]))
    return seen


def resent(
    core: MasterCore,
    agent: Agent,
    report: internal.OperationReport,
    recover_framework: RecoverFramework,
    now: float,
) -> None:
    """An agent resends a status it keeps. The master learnt every operation the agent
    keeps when the agent registered, so one it has no record of, of a framework it knows,
    was acknowledged and the resend crossed the acknowledgement on its way: it is not
    forwarded (the operation would come back and the framework hear of it once more) and
    the acknowledgement goes to the agent again, in case the first was lost. Of a framework
    the master does not know, it is adopted as in a re-registration."""
    fw = core.frameworks.get(report.framework_id)
    if fw is None:
        adopt(core, agent, [report], recover_framework, now)
        return
    record = fw.operations.get(report.operation_id)
    if record is not None and record.unacknowledged is not None:
        if fw.connected and record.unacknowledged == report.uuid:
            core._send_framework(fw, status_event(record.statuses[-1]))
        return
    if report.uuid is not None:
        ack = internal.OperationStatusAck(
            framework_id=ID(fw.framework_id), operation_id=ID(report.operation_id), uuid=report.uuid
        )
        core._send_agent(agent, ack)


def resend_missing(core: MasterCore, agent: Agent, reported: set[tuple[str, str]]) -> None:
    """Operations this master applied on a re-registering agent that it did not report (it
    missed APPLY_OPERATION while disconnected): sent to it again."""
    for fw in core.frameworks.values():
        for record in fw.operations.values():
            if (
                record.agent_id == agent.agent_id
                and record.unacknowledged is not None
                and record.statuses
                and record.statuses[-1].get("state") == FINISHED
                and (fw.framework_id, record.operation_id) not in reported
            ):
                send_to_agent(core, agent, fw, record)


def reconcile_status(core: MasterCore, op_id: str, agent_id: str | None) -> dict[str, Any]:
    """RECONCILE_OPERATIONS' answer for an operation with no record (see `unknown_state`)."""
    status: dict[str, Any] = {
        "operation_id": {"value": op_id},
        "state": unknown_state(core, agent_id),
    }
    if agent_id is not None:
        status["agent_id"] = views.value(agent_id)
    return status
