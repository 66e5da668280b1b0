"""Typed operator API v1 calls (docs/protocol.md §3.1, 3.3) shared by the master and the agent.

``Call{type, <lowercase-type>: {...}}`` decoded with the same leniency as the scheduler API
(`butte.core.messages.decode`): unknown keys ignored, numeric strings accepted, wrong types and
missing required fields rejected with a message (the endpoints answer 400 with it). Only the
payloads of calls butte implements are typed; calls without a payload need none.
"""

from __future__ import annotations

from typing import Any

from butte.core.messages import (
    ID,
    CommandInfo,
    DecodeError,
    DurationInfo,
    Int32,
    Int64,
    JSONObject,
    Msg,
    call_decode_problem,
    decode,
)

__all__ = [
    "AGENT_CALL_TYPES",
    "MASTER_CALL_TYPES",
    "DecodeError",
    "OperatorCall",
    "decode_call",
    "parse_call",
]

# Every call type of the master's operator API v1 (Mesos' master.proto ``Call.Type``, less
# UNKNOWN); docs/protocol.md §3.1. The master's dispatch table is checked against it.
MASTER_CALL_TYPES = frozenset(
    {
        "GET_HEALTH",
        "GET_FLAGS",
        "GET_VERSION",
        "GET_METRICS",
        "GET_LOGGING_LEVEL",
        "SET_LOGGING_LEVEL",
        "LIST_FILES",
        "READ_FILE",
        "GET_STATE",
        "GET_AGENTS",
        "GET_FRAMEWORKS",
        "GET_EXECUTORS",
        "GET_OPERATIONS",
        "GET_TASKS",
        "GET_ROLES",
        "GET_WEIGHTS",
        "UPDATE_WEIGHTS",
        "GET_MASTER",
        "SUBSCRIBE",
        "RESERVE_RESOURCES",
        "UNRESERVE_RESOURCES",
        "CREATE_VOLUMES",
        "DESTROY_VOLUMES",
        "GROW_VOLUME",
        "SHRINK_VOLUME",
        "GET_MAINTENANCE_STATUS",
        "GET_MAINTENANCE_SCHEDULE",
        "UPDATE_MAINTENANCE_SCHEDULE",
        "START_MAINTENANCE",
        "STOP_MAINTENANCE",
        "DRAIN_AGENT",
        "DEACTIVATE_AGENT",
        "REACTIVATE_AGENT",
        "GET_QUOTA",
        "UPDATE_QUOTA",
        "SET_QUOTA",
        "REMOVE_QUOTA",
        "TEARDOWN",
        "MARK_AGENT_GONE",
    }
)

# Every call type of the agent's operator API v1 (Mesos' agent.proto ``Call.Type``, less
# UNKNOWN); docs/protocol.md §3.3.
AGENT_CALL_TYPES = frozenset(
    {
        "GET_HEALTH",
        "GET_FLAGS",
        "GET_VERSION",
        "GET_METRICS",
        "GET_LOGGING_LEVEL",
        "SET_LOGGING_LEVEL",
        "LIST_FILES",
        "READ_FILE",
        "GET_STATE",
        "GET_CONTAINERS",
        "GET_FRAMEWORKS",
        "GET_EXECUTORS",
        "GET_OPERATIONS",
        "GET_TASKS",
        "GET_AGENT",
        "GET_RESOURCE_PROVIDERS",
        "LAUNCH_NESTED_CONTAINER",
        "WAIT_NESTED_CONTAINER",
        "KILL_NESTED_CONTAINER",
        "REMOVE_NESTED_CONTAINER",
        "LAUNCH_NESTED_CONTAINER_SESSION",
        "ATTACH_CONTAINER_INPUT",
        "ATTACH_CONTAINER_OUTPUT",
        "LAUNCH_CONTAINER",
        "WAIT_CONTAINER",
        "KILL_CONTAINER",
        "REMOVE_CONTAINER",
        "ADD_RESOURCE_PROVIDER_CONFIG",
        "UPDATE_RESOURCE_PROVIDER_CONFIG",
        "REMOVE_RESOURCE_PROVIDER_CONFIG",
        "MARK_RESOURCE_PROVIDER_GONE",
        "PRUNE_IMAGES",
    }
)


class GetMetrics(Msg, frozen=True):
    timeout: DurationInfo | None = None


class SetLoggingLevel(Msg, frozen=True):
    level: Int64
    duration: DurationInfo


class ListFiles(Msg, frozen=True):
    path: str


class ReadFile(Msg, frozen=True):
    path: str
    offset: Int64
    length: Int64 | None = None


class WeightInfo(Msg, frozen=True):
    weight: float
    role: str | None = None


class UpdateWeights(Msg, frozen=True):
    weight_infos: list[WeightInfo] = []


class UpdateQuota(Msg, frozen=True):
    """UPDATE_QUOTA; the configs are checked by `butte.master.quota.parse_configs`."""

    quota_configs: list[Any] = []
    force: bool = False


class SetQuota(Msg, frozen=True):
    """SET_QUOTA; the request is checked by `butte.master.quota.parse_request`."""

    quota_request: Any


class RemoveQuota(Msg, frozen=True):
    role: str


class Teardown(Msg, frozen=True):
    framework_id: ID


class AgentCall(Msg, frozen=True):
    """MARK_AGENT_GONE, DEACTIVATE_AGENT and REACTIVATE_AGENT payloads."""

    agent_id: ID


class DrainAgent(Msg, frozen=True):
    agent_id: ID
    max_grace_period: DurationInfo | None = None
    mark_gone: bool = False


class GetContainers(Msg, frozen=True):
    show_nested: bool = False
    show_standalone: bool = False


class ContainerID(Msg, frozen=True):
    value: str
    parent: ContainerID | None = None


class KillContainer(Msg, frozen=True):
    container_id: ContainerID
    signal: Int32 | None = None


class LaunchNestedContainer(Msg, frozen=True):
    """LAUNCH_NESTED_CONTAINER(_SESSION) and LAUNCH_CONTAINER payloads (`butte.agent.nested`)."""

    container_id: ContainerID
    command: CommandInfo | None = None
    container: JSONObject | None = None
    resources: list[JSONObject] = []
    limits: JSONObject | None = None


class NestedContainerRef(Msg, frozen=True):
    """WAIT/REMOVE_(NESTED_)CONTAINER, ATTACH_CONTAINER_OUTPUT and KILL_NESTED_CONTAINER."""

    container_id: ContainerID
    signal: Int32 | None = None


class WindowSize(Msg, frozen=True):
    rows: Int32
    columns: Int32


class TTYInfo(Msg, frozen=True):
    window_size: WindowSize | None = None


class Heartbeat(Msg, frozen=True):
    interval: DurationInfo | None = None


class ProcessIOControl(Msg, frozen=True):
    type: str
    tty_info: TTYInfo | None = None
    heartbeat: Heartbeat | None = None


class ProcessIOData(Msg, frozen=True):
    type: str
    data: str = ""  # base64 (protobuf bytes in JSON)


class ProcessIO(Msg, frozen=True):
    """One record of an ATTACH_CONTAINER_INPUT stream (and of output streams)."""

    type: str
    data: ProcessIOData | None = None
    control: ProcessIOControl | None = None


class AttachContainerInput(Msg, frozen=True):
    type: str
    container_id: ContainerID | None = None
    process_io: ProcessIO | None = None


class OperatorCall(Msg, frozen=True):
    """One operator API call (master or agent)."""

    type: str
    get_metrics: GetMetrics | None = None
    set_logging_level: SetLoggingLevel | None = None
    list_files: ListFiles | None = None
    read_file: ReadFile | None = None
    update_weights: UpdateWeights | None = None
    update_quota: UpdateQuota | None = None
    set_quota: SetQuota | None = None
    remove_quota: RemoveQuota | None = None
    teardown: Teardown | None = None
    mark_agent_gone: AgentCall | None = None
    deactivate_agent: AgentCall | None = None
    reactivate_agent: AgentCall | None = None
    drain_agent: DrainAgent | None = None
    get_containers: GetContainers | None = None
    kill_container: KillContainer | None = None
    # Maintenance payloads stay JSON: butte.master.maintenance validates them with Mesos'
    # messages.
    update_maintenance_schedule: dict[str, Any] | None = None
    start_maintenance: dict[str, Any] | None = None
    stop_maintenance: dict[str, Any] | None = None
    reserve_resources: JSONObject | None = None
    unreserve_resources: JSONObject | None = None
    create_volumes: JSONObject | None = None
    destroy_volumes: JSONObject | None = None
    grow_volume: JSONObject | None = None
    shrink_volume: JSONObject | None = None
    launch_nested_container: LaunchNestedContainer | None = None
    launch_nested_container_session: LaunchNestedContainer | None = None
    launch_container: LaunchNestedContainer | None = None
    wait_nested_container: NestedContainerRef | None = None
    wait_container: NestedContainerRef | None = None
    kill_nested_container: NestedContainerRef | None = None
    remove_nested_container: NestedContainerRef | None = None
    remove_container: NestedContainerRef | None = None
    attach_container_output: NestedContainerRef | None = None
    attach_container_input: AttachContainerInput | None = None
    # Checked by butte.agent.containerizer.image_runtime.excluded_images.
    prune_images: JSONObject | None = None


# Calls whose payload field must be present (Mesos rejects them otherwise).
REQUIRED_PAYLOAD = frozenset(
    {
        "GET_METRICS",
        "SET_LOGGING_LEVEL",
        "LIST_FILES",
        "READ_FILE",
        "UPDATE_WEIGHTS",
        "UPDATE_QUOTA",
        "SET_QUOTA",
        "REMOVE_QUOTA",
        "TEARDOWN",
        "MARK_AGENT_GONE",
        "DEACTIVATE_AGENT",
        "REACTIVATE_AGENT",
        "DRAIN_AGENT",
        "KILL_CONTAINER",
        "UPDATE_MAINTENANCE_SCHEDULE",
        "START_MAINTENANCE",
        "STOP_MAINTENANCE",
        "RESERVE_RESOURCES",
        "UNRESERVE_RESOURCES",
        "CREATE_VOLUMES",
        "DESTROY_VOLUMES",
        "GROW_VOLUME",
        "SHRINK_VOLUME",
        "LAUNCH_NESTED_CONTAINER",
        "LAUNCH_NESTED_CONTAINER_SESSION",
        "LAUNCH_CONTAINER",
        "WAIT_NESTED_CONTAINER",
        "WAIT_CONTAINER",
        "KILL_NESTED_CONTAINER",
        "REMOVE_NESTED_CONTAINER",
        "REMOVE_CONTAINER",
        "ATTACH_CONTAINER_OUTPUT",
        "ATTACH_CONTAINER_INPUT",
    }
)


def decode_call(body: bytes) -> OperatorCall:
    """Parses a request body; raises DecodeError with a message fit for a 400."""
    return decode(body, OperatorCall)


def parse_call(body: bytes, api: str) -> OperatorCall | tuple[int, str]:
    """The call in a request body of the ``api`` ("master" or "agent") operator API, or the
    status and text that refuse it, as Mesos answers: the body is not JSON or a field has
    the wrong type; the type is missing or not one of the API's (Mesos drops an enum value
    it does not know); UNKNOWN (501); a payload the type needs is missing."""
    try:
        call = decode_call(body)
    except DecodeError as e:
        return 400, call_decode_problem(e, api)
    if call.type == "UNKNOWN":
        return 501, "Call type UNKNOWN is not implemented"  # Mesos: NotImplemented
    known = MASTER_CALL_TYPES if api == "master" else AGENT_CALL_TYPES
    if call.type not in known:
        return 400, f"Failed to validate {api}::Call: Expecting 'type' to be present"
    key = call.type.lower()
    if call.type in REQUIRED_PAYLOAD and getattr(call, key, None) is None:
        return 400, f"Failed to validate {api}::Call: Expecting '{key}' to be present"
    return call
