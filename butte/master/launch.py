"""Validation of LAUNCH and LAUNCH_GROUP operations (docs/protocol.md §1.8), as pure functions.

Each check returns an error message (the task then gets TASK_ERROR + REASON_TASK_INVALID) or
None. Resource checks return the parsed `Resources` so they are parsed once per task.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import msgspec

from butte.core import docker_info
from butte.core.container_info import container_problem, image_of, pid_sharing_problem
from butte.core.ids import validate_id
from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo
from butte.core.resources import ResourceError, Resources
from butte.core.task_validation import GROUP_LIMITS, command_problem, task_fields_problem


class InvalidTask(ValueError):
    """A task that must be answered with TASK_ERROR; the message says why, ``reason`` is the
    status reason (REASON_TASK_INVALID unless another applies)."""

    def __init__(self, message: str, reason: str = "REASON_TASK_INVALID") -> None:
        super().__init__(message)
        self.reason = reason


def task_role(task: TaskInfo, framework: FrameworkInfo, offer_roles: set[str]) -> str:
    """The role a task is allocated to: its resources' ``allocation_info.role`` for a
    MULTI_ROLE framework, else the framework's single role."""
    roles = {
        r.get("allocation_info", {}).get("role")
        for r in task.resources
        if isinstance(r.get("allocation_info"), dict)
    }
    roles.discard(None)
    if len(roles) > 1:
        raise InvalidTask("Task resources have more than one allocation role")
    if roles:
        role = roles.pop()
    elif len(offer_roles) == 1:
        role = next(iter(offer_roles))
    else:
        role = framework.role_list()[0] if framework.role_list() else "*"
    if not isinstance(role, str) or role not in offer_roles:
        raise InvalidTask(f"Task resources are allocated to role '{role}' not in the offers")
    return role


# Distinct task resource shapes seen lately: tasks of one shape share one Resources object,
# which saves memory at 100k+ tasks and turns the state views' memo lookups into identity hits.
_SHAPES: dict[Resources, Resources] = {}
_MAX_SHAPES = 4096


def intern_resources(res: Resources) -> Resources:
    """An equal Resources object shared by every task of that shape (Resources are
    immutable, so sharing is safe)."""
    shared = _SHAPES.get(res)
    if shared is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shared = _SHAPES[res] = res
    return shared


# Encoded Resource list -> parsed Resources. Tasks of one shape send the same JSON, and
# parsing it is most of a launch's (and of an agent re-registration's) cost.
_PARSED: dict[bytes, Resources] = {}
_key_encoder = msgspec.json.Encoder()


def resources_from_json(raw: list[dict[str, Any]]) -> Resources:
    """``Resources.from_json(raw)``, interned and memoized on the encoded list. Raises
    ResourceError (bad input is never memoized)."""
    try:
        key = _key_encoder.encode(raw)
    except TypeError:
        return intern_resources(Resources.from_json(raw))
    res = _PARSED.get(key)
    if res is None:
        res = intern_resources(Resources.from_json(raw))
        if len(_PARSED) >= _MAX_SHAPES:
            _PARSED.clear()
        _PARSED[key] = res
    return res


def parse_task_resources(raw: list[dict[str, Any]], what: str) -> Resources:
    try:
        res = resources_from_json(raw)
    except ResourceError as e:
        raise InvalidTask(f"Invalid {what} resources: {e}") from None
    gpus = res.scalar_millis("gpus")
    if gpus % 1000:
        raise InvalidTask(f"The {what} requests fractional 'gpus'; only whole GPUs can be used")
    return res


def check_task(
    task: TaskInfo,
    framework: FrameworkInfo,
    agent_id: str,
    active_task_ids: Container[str],
    known_executors: dict[str, ExecutorInfo],
    *,
    in_group: bool = False,
) -> tuple[Resources, str | None, Resources]:
    """Checks one TaskInfo; returns (resources, executor id, new executor's resources).
    ``in_group``: a member of a task group, passed with the group's executor."""
    tid = task.task_id.value
    err = validate_id(tid, "Task ID")
    if err:
        raise InvalidTask(err)
    if tid in active_task_ids:
        raise InvalidTask(f"Task has duplicate ID: {tid}")
    if task.agent_id.value != agent_id:
        raise InvalidTask(
            f"Task uses agent {task.agent_id.value} but the offers are for agent {agent_id}"
        )
    if (task.command is None) == (task.executor is None):
        raise InvalidTask(
            "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
        )
    problem = task_fields_problem(task)
    if problem is not None:
        raise InvalidTask(problem)
    resources = parse_task_resources(task.resources, "task")
    if resources.is_empty():
        raise InvalidTask("Task uses no resources")
    for container in (task.container, task.executor.container if task.executor else None):
        problem = container_problem(container, in_group=in_group)
        if problem is not None:
            raise InvalidTask(problem)
    if in_group and task.limits:
        raise InvalidTask(GROUP_LIMITS)
    executor_container = task.executor.container if task.executor is not None else None
    for container in (task.container, executor_container):
        problem = pid_sharing_problem(container, with_executor=task.executor is not None)
        if problem is not None:
            raise InvalidTask(problem)
    if task.executor is not None and (
        image_of(task.executor.container) is not None
        or (not in_group and image_of(task.container) is not None)
    ):
        # A task group member may run in an image (a root filesystem of its own).
        raise InvalidTask(
            "Images run only for command tasks and task group members, not with a custom executor"
        )
    if docker_info.is_docker(task.container):
        assert task.container is not None
        ports = docker_info.task_ports(task.resources)
        problem = docker_info.docker_problem(task.container, ports)
        if problem:
            raise InvalidTask(problem)
    if task.command is not None:
        if task.command.shell and not task.command.value:
            raise InvalidTask("Task's CommandInfo with shell=true needs a 'value'")
        return resources, tid, Resources()
    executor = task.executor
    assert executor is not None
    eid = executor.executor_id.value
    err = validate_id(eid, "Executor ID")
    if err:
        raise InvalidTask(err)
    if executor.framework_id is not None and executor.framework_id != framework.id:
        raise InvalidTask("ExecutorInfo has an invalid FrameworkID")
    if executor.command is None and executor.type != "DEFAULT":
        raise InvalidTask("Executor has no CommandInfo")
    if executor.command is not None and executor.type == "DEFAULT":
        # The agent runs its own default executor: a command of the framework's would
        # replace it (Mesos refuses the same).
        raise InvalidTask("'ExecutorInfo.command' must not be set for 'DEFAULT' executor")
    problem = command_problem(executor.command, "Executor's")
    if problem is not None:
        raise InvalidTask(problem)
    if eid in known_executors:
        return resources, eid, Resources()
    return resources, eid, parse_task_resources(executor.resources, "executor")
