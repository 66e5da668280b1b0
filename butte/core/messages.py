"""Typed Mesos v1 messages with their JSON names (docs/protocol.md §0.1, §1, §2).

These are immutable msgspec structs: decoding validates types and required fields, ignores
unknown keys (as Mesos does), accepts numeric strings for numbers, and encoding omits unset
fields. Sub-messages that butte passes through without interpreting (container, health_check,
discovery, check_status ...) are kept as opaque JSON objects so nothing a framework sent is
lost on the way to the agent. Resources stay JSON lists here and become `Resources` values in
the cores, where they are validated with messages that name the bad resource.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

JSONObject = dict[str, Any]
# Integers on the wire are protobuf's fixed-size ones: a bigger number is refused at decode
# (400 with the field's path) instead of overflowing later.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]


class Msg(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """Base of every wire message. Subclasses repeat ``frozen=True``, which msgspec would
    inherit anyway, because type checkers do not know that it is inherited."""


# The AgentInfo.Capability types every butte agent has, as the state endpoints list them.
AGENT_CAPABILITIES = (
    "MULTI_ROLE",
    "HIERARCHICAL_ROLE",
    "RESERVATION_REFINEMENT",
    "TASK_RESOURCE_LIMITS",
)


class ID(Msg, frozen=True):
    """Every Mesos id on the wire: ``{"value": "..."}``."""

    value: str


class Label(Msg, frozen=True):
    key: str
    value: str | None = None


class Labels(Msg, frozen=True):
    labels: list[Label] = []


class Capability(Msg, frozen=True):
    type: str = "UNKNOWN"


class DurationInfo(Msg, frozen=True):
    nanoseconds: Int64


class TimeInfo(Msg, frozen=True):
    nanoseconds: Int64


class KillPolicy(Msg, frozen=True):
    grace_period: DurationInfo | None = None


class FrameworkInfo(Msg, frozen=True):
    user: str
    name: str
    id: ID | None = None
    failover_timeout: float = 0.0
    checkpoint: bool = False
    role: str | None = None
    roles: list[str] = []
    hostname: str | None = None
    principal: str | None = None
    webui_url: str | None = None
    capabilities: list[Capability] = []
    labels: Labels | None = None
    offer_filters: JSONObject | None = None

    def has_capability(self, name: str) -> bool:
        return any(c.type == name for c in self.capabilities)

    def role_list(self) -> list[str]:
        """The roles the framework subscribes to (``role`` or ``roles`` per MULTI_ROLE)."""
        if self.has_capability("MULTI_ROLE"):
            return list(self.roles)
        return [self.role if self.role is not None else "*"]


class EnvironmentVariable(Msg, frozen=True):
    name: str
    type: str = "VALUE"
    value: str | None = None
    secret: JSONObject | None = None


class Environment(Msg, frozen=True):
    variables: list[EnvironmentVariable] = []


class URI(Msg, frozen=True):
    value: str
    executable: bool | None = None
    extract: bool = True
    cache: bool | None = None
    output_file: str | None = None


class CommandInfo(Msg, frozen=True):
    uris: list[URI] = []
    environment: Environment | None = None
    shell: bool = True
    value: str | None = None
    arguments: list[str] = []
    user: str | None = None


class ExecutorInfo(Msg, frozen=True):
    executor_id: ID
    type: str | None = None
    framework_id: ID | None = None
    command: CommandInfo | None = None
    container: JSONObject | None = None
    resources: list[JSONObject] = []
    name: str | None = None
    source: str | None = None
    data: str | None = None
    discovery: JSONObject | None = None
    shutdown_grace_period: DurationInfo | None = None
    labels: Labels | None = None


class TaskInfo(Msg, frozen=True):
    name: str
    task_id: ID
    agent_id: ID
    resources: list[JSONObject] = []
    executor: ExecutorInfo | None = None
    command: CommandInfo | None = None
    container: JSONObject | None = None
    health_check: JSONObject | None = None
    check: JSONObject | None = None
    kill_policy: KillPolicy | None = None
    data: str | None = None
    labels: Labels | None = None
    discovery: JSONObject | None = None
    max_completion_time: DurationInfo | None = None
    limits: JSONObject | None = None


class TaskGroupInfo(Msg, frozen=True):
    tasks: list[TaskInfo] = []


class TaskStatus(Msg, frozen=True):
    task_id: ID
    state: str
    message: str | None = None
    source: str | None = None
    reason: str | None = None
    data: str | None = None
    agent_id: ID | None = None
    executor_id: ID | None = None
    timestamp: float | None = None
    uuid: str | None = None
    healthy: bool | None = None
    check_status: JSONObject | None = None
    labels: Labels | None = None
    container_status: JSONObject | None = None
    unreachable_time: TimeInfo | None = None
    limitation: JSONObject | None = None


class Filters(Msg, frozen=True):
    refuse_seconds: float = 5.0


# -- offer operations ------------------------------------------------------------------------


class Launch(Msg, frozen=True):
    task_infos: list[TaskInfo] = []


class LaunchGroup(Msg, frozen=True):
    executor: ExecutorInfo
    task_group: TaskGroupInfo


class Operation(Msg, frozen=True):
    type: str
    id: ID | None = None
    launch: Launch | None = None
    launch_group: LaunchGroup | None = None
    reserve: JSONObject | None = None
    unreserve: JSONObject | None = None
    create: JSONObject | None = None
    destroy: JSONObject | None = None
    grow_volume: JSONObject | None = None
    shrink_volume: JSONObject | None = None
    create_disk: JSONObject | None = None
    destroy_disk: JSONObject | None = None


# -- scheduler calls -------------------------------------------------------------------------


class Subscribe(Msg, frozen=True):
    framework_info: FrameworkInfo
    suppressed_roles: list[str] = []
    offer_constraints: JSONObject | None = None


class Accept(Msg, frozen=True):
    offer_ids: list[ID] = []
    operations: list[Operation] = []
    filters: Filters | None = None


class Decline(Msg, frozen=True):
    offer_ids: list[ID] = []
    filters: Filters | None = None


class Roles(Msg, frozen=True):
    """Payload of REVIVE and SUPPRESS (empty = every role of the framework)."""

    roles: list[str] = []


class Kill(Msg, frozen=True):
    task_id: ID
    agent_id: ID | None = None
    kill_policy: KillPolicy | None = None


class Shutdown(Msg, frozen=True):
    executor_id: ID
    agent_id: ID


class Acknowledge(Msg, frozen=True):
    agent_id: ID
    task_id: ID
    uuid: str


class ReconcileTask(Msg, frozen=True):
    task_id: ID
    agent_id: ID | None = None


class Reconcile(Msg, frozen=True):
    tasks: list[ReconcileTask] = []


class Message(Msg, frozen=True):
    agent_id: ID
    executor_id: ID
    data: str


class Request(Msg, frozen=True):
    requests: list[JSONObject] = []


class UpdateFramework(Msg, frozen=True):
    framework_info: FrameworkInfo
    suppressed_roles: list[str] = []
    offer_constraints: JSONObject | None = None


class SchedulerCall(Msg, frozen=True):
    """``POST /api/v1/scheduler`` body."""

    type: str
    framework_id: ID | None = None
    subscribe: Subscribe | None = None
    accept: Accept | None = None
    decline: Decline | None = None
    accept_inverse_offers: JSONObject | None = None
    decline_inverse_offers: JSONObject | None = None
    revive: Roles | None = None
    suppress: Roles | None = None
    kill: Kill | None = None
    shutdown: Shutdown | None = None
    acknowledge: Acknowledge | None = None
    acknowledge_operation_status: JSONObject | None = None
    reconcile: Reconcile | None = None
    reconcile_operations: JSONObject | None = None
    message: Message | None = None
    request: Request | None = None
    update_framework: UpdateFramework | None = None


SCHEDULER_CALL_TYPES = frozenset(
    {
        "SUBSCRIBE",
        "TEARDOWN",
        "ACCEPT",
        "DECLINE",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "REVIVE",
        "SUPPRESS",
        "KILL",
        "SHUTDOWN",
        "ACKNOWLEDGE",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE",
        "RECONCILE_OPERATIONS",
        "MESSAGE",
        "REQUEST",
        "UPDATE_FRAMEWORK",
    }
)

# Calls whose payload key must be present (Mesos: "Expecting '<key>' to be present").
SCHEDULER_REQUIRED_PAYLOAD = {
    "SUBSCRIBE": "subscribe",
    "ACCEPT": "accept",
    "DECLINE": "decline",
    "KILL": "kill",
    "SHUTDOWN": "shutdown",
    "ACKNOWLEDGE": "acknowledge",
    "RECONCILE": "reconcile",
    "MESSAGE": "message",
    "UPDATE_FRAMEWORK": "update_framework",
    "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
    "DECLINE_INVERSE_OFFERS": "decline_inverse_offers",
    "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
    "RECONCILE_OPERATIONS": "reconcile_operations",
}


# -- executor calls (agent's /api/v1/executor) -----------------------------------------------


class ExecutorUpdate(Msg, frozen=True):
    status: TaskStatus


class ExecutorSubscribe(Msg, frozen=True):
    unacknowledged_tasks: list[TaskInfo] = []
    unacknowledged_updates: list[ExecutorUpdate] = []


class ExecutorMessage(Msg, frozen=True):
    data: str


class ExecutorCall(Msg, frozen=True):
    """``POST /api/v1/executor`` body."""

    type: str
    executor_id: ID
    framework_id: ID
    subscribe: ExecutorSubscribe | None = None
    update: ExecutorUpdate | None = None
    message: ExecutorMessage | None = None


EXECUTOR_CALL_TYPES = frozenset({"SUBSCRIBE", "UPDATE", "MESSAGE", "HEARTBEAT"})


class DecodeError(ValueError):
    """A request body that is not valid JSON of the expected message type."""


M = TypeVar("M", bound=msgspec.Struct)


def decode(data: bytes | str, type_: type[M]) -> M:
    """Decodes JSON into ``type_`` with Mesos' leniency (numeric strings, unknown keys)."""
    try:
        return msgspec.json.decode(data, type=type_, strict=False)
    except msgspec.ValidationError as e:
        first_error = str(e)
    except (msgspec.DecodeError, RecursionError) as e:
        raise DecodeError(f"Failed to parse body into JSON: {_reason(e)}") from None
    # Mesos reads JSON null as "field unset"; msgspec rejects null for non-optional fields.
    # Retry without the nulls only on this (rare) error path so the common path stays fast.
    # The typed decode stops at the first mismatch, so only this one sees the whole text.
    try:
        return msgspec.convert(_drop_nulls(msgspec.json.decode(data)), type_, strict=False)
    except msgspec.ValidationError:
        raise DecodeError(first_error) from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise DecodeError(f"Failed to parse body into JSON: {_reason(e)}") from None


def call_decode_problem(error: DecodeError, api: str) -> str:
    """The 400's text for a call body that did not decode, in Mesos' words (``api``:
    ``scheduler``, ``master``, ``agent``): not JSON; no ``type`` (Mesos drops an enum value
    it does not know, so an unknown type reads the same); a field of the wrong type."""
    text = str(error)
    if text.startswith("Failed to parse body into JSON"):
        return text
    if "missing required field `type`" in text:
        return f"Failed to validate {api}::Call: Expecting 'type' to be present"
    return f"Failed to convert JSON into Call protobuf: {text}"


def _reason(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def to_builtins(msg: msgspec.Struct) -> Any:
    """A message as plain JSON-compatible Python values (for composing larger events)."""
    return msgspec.to_builtins(msg)
