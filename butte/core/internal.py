"""The agent <-> master protocol (butte's own; Mesos uses libprocess messages here).

Transport: the agent opens one persistent WebSocket to the master at `AGENT_PATH` and keeps
it for its whole registration; every text frame is one JSON object tagged by ``type``, or,
from an agent to a master whose AGENT_REGISTERED / AGENT_REREGISTERED said ``batches``, a
JSON array of such objects, handled in order (an agent sends the messages of one burst, a
task's updates and ends, in one frame; `decode_agent_messages`). The
master pings every ``--agent_ping_timeout`` and counts missed pongs; either side treats a
closed socket as a disconnection. The agent owns status-update reliability: it resends the
oldest unacknowledged update of each task until the master relays the scheduler's ACK.

Flow::

    agent                                   master
      REGISTER_AGENT (id unset) ----------->
                          <----------------- AGENT_REGISTERED {agent_id}
      ... or after a reconnect/restart:
      REGISTER_AGENT (id, tasks, executors, frameworks) --->
                          <----------------- AGENT_REREGISTERED {agent_id}
                          <----------------- RUN_TASK / RUN_TASK_GROUP / KILL_TASK ...
      STATUS_UPDATE {status with uuid} ---->        (forwarded to the scheduler as UPDATE)
                          <----------------- STATUS_UPDATE_ACK {task_id, uuid}
                          <----------------- PING
      PONG -------------------------------->
                          <----------------- CHECKPOINT_RESOURCES {total}  (after RESERVE...)
                          <----------------- APPLY_OPERATION {operation}  (one with an id)
      OPERATION_STATUS_UPDATE {operation} ->  (retried until acknowledged; forwarded)
                          <----------------- OPERATION_STATUS_ACK {operation_id, uuid}

Offer operations with an id that the master applied on the agent are kept (checkpointed) by
the agent until the framework acknowledges their status, and reported in every
re-registration, so a new master rebuilds its operation records from them (as Mesos' agents
report their operations).
"""

from __future__ import annotations

import msgspec

from butte.core.messages import (
    ID,
    ExecutorInfo,
    FrameworkInfo,
    JSONObject,
    KillPolicy,
    Labels,
    TaskGroupInfo,
    TaskInfo,
    TaskStatus,
)

AGENT_PATH = "/api/v1/internal/agent"


class AgentInfo(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """What an agent tells the master about itself (Mesos AgentInfo)."""

    hostname: str
    port: int
    resources: list[JSONObject] = []
    attributes: list[JSONObject] = []
    id: ID | None = None
    domain: JSONObject | None = None


class Task(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A task as the agent reports it on re-registration (Mesos ``Task``)."""

    name: str
    task_id: ID
    framework_id: ID
    agent_id: ID
    state: str
    resources: list[JSONObject] = []
    executor_id: ID | None = None
    statuses: list[TaskStatus] = []
    status_update_state: str | None = None
    status_update_uuid: str | None = None
    labels: Labels | None = None
    discovery: JSONObject | None = None
    container: JSONObject | None = None
    health_check: JSONObject | None = None
    kill_policy: KillPolicy | None = None
    user: str | None = None


class OperationReport(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """An offer operation with an id applied on the agent, as the agent keeps and reports it
    (Mesos ``Operation``): the framework's info (a new master may not know the framework
    yet), the ``Offer.Operation`` and its statuses, the last one not yet acknowledged."""

    framework: FrameworkInfo
    info: JSONObject
    statuses: list[JSONObject]

    @property
    def framework_id(self) -> str:
        return self.framework.id.value if self.framework.id is not None else ""

    @property
    def operation_id(self) -> str:
        op_id = self.info.get("id")
        value = op_id.get("value") if isinstance(op_id, dict) else None
        return value if isinstance(value, str) else ""

    @property
    def uuid(self) -> str | None:
        """The uuid of the latest status (the one awaiting acknowledgement)."""
        raw = self.statuses[-1].get("uuid") if self.statuses else None
        value = raw.get("value") if isinstance(raw, dict) else None
        return value if isinstance(value, str) else None


class _AgentMessage(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type"):
    """Base of messages sent by an agent."""


class RegisterAgent(_AgentMessage, frozen=True, tag="REGISTER_AGENT"):
    """First message on every connection. ``agent_info.id`` set = re-registration."""

    agent_info: AgentInfo
    version: str
    frameworks: list[FrameworkInfo] = []
    executors: list[ExecutorInfo] = []
    tasks: list[Task] = []
    # Operations whose latest status the framework has not acknowledged (re-registration).
    operations: list[OperationReport] = []


class StatusUpdate(_AgentMessage, frozen=True, tag="STATUS_UPDATE"):
    """A task status change from an executor or the agent; ``status.uuid`` is always set.
    ``latest_state``: the task's newest state when later updates wait behind this one (its
    acknowledgement is withheld), as Mesos' agent sets it; the master takes the task to it."""

    framework_id: ID
    status: TaskStatus
    latest_state: str | None = None


class Pong(_AgentMessage, frozen=True, tag="PONG"):
    pass


class ExecutorExited(_AgentMessage, frozen=True, tag="EXECUTOR_EXITED"):
    """An executor process ended (the scheduler gets a FAILURE event)."""

    framework_id: ID
    executor_id: ID
    status: int | None = None


class ExecutorToFramework(_AgentMessage, frozen=True, tag="EXECUTOR_MESSAGE"):
    """Executor MESSAGE call relayed to the scheduler (best effort)."""

    framework_id: ID
    executor_id: ID
    data: str


class UnregisterAgent(_AgentMessage, frozen=True, tag="UNREGISTER_AGENT"):
    """The agent is shutting down for good (its tasks are gone)."""


class OperationStatusUpdate(_AgentMessage, frozen=True, tag="OPERATION_STATUS_UPDATE"):
    """An operation status not yet acknowledged, sent again (backing off) until the master
    relays the framework's acknowledgement; the master forwards it to the framework."""

    operation: OperationReport


AgentMessage = (
    RegisterAgent
    | StatusUpdate
    | Pong
    | ExecutorExited
    | ExecutorToFramework
    | UnregisterAgent
    | OperationStatusUpdate
)


class _MasterMessage(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type"):
    """Base of messages sent by the master to an agent."""


class AgentRegistered(_MasterMessage, frozen=True, tag="AGENT_REGISTERED"):
    agent_id: ID
    master_id: str
    # The master takes frames that are arrays of messages (see the module docstring); a
    # master without it (an older one) is sent one message per frame.
    batches: bool = False


class AgentReregistered(_MasterMessage, frozen=True, tag="AGENT_REREGISTERED"):
    agent_id: ID
    master_id: str
    batches: bool = False


class RunTask(_MasterMessage, frozen=True, tag="RUN_TASK"):
    """Launch one task. ``task.command`` set = the agent runs its built-in command executor;
    ``task.executor`` set = that executor is started (if not running) and given the task."""

    framework: FrameworkInfo
    task: TaskInfo


class RunTaskGroup(_MasterMessage, frozen=True, tag="RUN_TASK_GROUP"):
    framework: FrameworkInfo
    executor: ExecutorInfo
    task_group: TaskGroupInfo


class KillTask(_MasterMessage, frozen=True, tag="KILL_TASK"):
    framework_id: ID
    task_id: ID
    kill_policy: KillPolicy | None = None
    # A drain's kill: the task's KILLING and KILLED carry REASON_AGENT_DRAINING (Mesos'
    # agent sets it while it drains).
    draining: bool = False


class StatusUpdateAck(_MasterMessage, frozen=True, tag="STATUS_UPDATE_ACK"):
    """The scheduler acknowledged this update: the agent may send the task's next one."""

    framework_id: ID
    task_id: ID
    uuid: str


class Ping(_MasterMessage, frozen=True, tag="PING"):
    pass


class ShutdownFramework(_MasterMessage, frozen=True, tag="SHUTDOWN_FRAMEWORK"):
    """Kill every task and executor of the framework on this agent."""

    framework_id: ID


class ShutdownExecutor(_MasterMessage, frozen=True, tag="SHUTDOWN_EXECUTOR"):
    framework_id: ID
    executor_id: ID


class FrameworkToExecutor(_MasterMessage, frozen=True, tag="FRAMEWORK_MESSAGE"):
    """Scheduler MESSAGE call relayed to an executor (best effort)."""

    framework_id: ID
    executor_id: ID
    data: str


class UpdateFramework(_MasterMessage, frozen=True, tag="UPDATE_FRAMEWORK"):
    """A framework re-subscribed or changed its FrameworkInfo."""

    framework: FrameworkInfo


class ShutdownAgent(_MasterMessage, frozen=True, tag="SHUTDOWN_AGENT"):
    """The agent must stop (marked gone, or refused). It should exit, not re-register."""

    message: str


class CheckpointResources(_MasterMessage, frozen=True, tag="CHECKPOINT_RESOURCES"):
    """The agent's whole total after offer operations (dynamic reservations, persistent
    volumes), in the refinement JSON form: the agent checkpoints it, reports it when it
    registers again, and creates or removes volume directories to match (Mesos'
    CheckpointResourcesMessage)."""

    resources: list[JSONObject]


class ApplyOperation(_MasterMessage, frozen=True, tag="APPLY_OPERATION"):
    """An offer operation with an id the master applied here (its CHECKPOINT_RESOURCES came
    first) and the status the framework was sent: the agent keeps it until the framework
    acknowledges that status, resending it meanwhile (Mesos' operation status updates)."""

    operation: OperationReport


class OperationStatusAck(_MasterMessage, frozen=True, tag="OPERATION_STATUS_ACK"):
    """The framework acknowledged the operation's status ``uuid``: the agent forgets it."""

    framework_id: ID
    operation_id: ID
    uuid: str


MasterMessage = (
    AgentRegistered
    | AgentReregistered
    | RunTask
    | RunTaskGroup
    | KillTask
    | StatusUpdateAck
    | Ping
    | ShutdownFramework
    | ShutdownExecutor
    | FrameworkToExecutor
    | UpdateFramework
    | ShutdownAgent
    | CheckpointResources
    | ApplyOperation
    | OperationStatusAck
)

_agent_decoder: msgspec.json.Decoder[AgentMessage] = msgspec.json.Decoder(
    AgentMessage, strict=False
)
_agent_batch_decoder: msgspec.json.Decoder[list[AgentMessage]] = msgspec.json.Decoder(
    list[AgentMessage], strict=False
)
_master_decoder: msgspec.json.Decoder[MasterMessage] = msgspec.json.Decoder(
    MasterMessage, strict=False
)
_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_agent_messages(data: bytes | str) -> list[AgentMessage]:
    """Decodes a frame sent by an agent: one message, or an array of them (raises msgspec
    errors on bad input, then nothing of the frame is taken)."""
    if data[:1] in (b"[", "["):
        return _agent_batch_decoder.decode(data)
    return [_agent_decoder.decode(data)]


def encode_batch(messages: list[bytes]) -> bytes:
    """One frame of encoded agent messages, for a master that takes batches."""
    return messages[0] if len(messages) == 1 else b"[" + b",".join(messages) + b"]"


def decode_master_message(data: bytes | str) -> MasterMessage:
    """Decodes a frame sent by the master."""
    return _master_decoder.decode(data)
