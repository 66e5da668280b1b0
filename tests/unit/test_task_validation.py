"""The master's checks of TaskInfo fields and ContainerInfo fields butte does not implement:
each bad value is refused with the Mesos master's message, never run as if absent."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from butte.core.container_info import container_problem, shares_pid_namespace
from butte.core.messages import TaskInfo
from butte.core.task_validation import check_problem, health_check_problem, task_fields_problem


def task(**fields: Any) -> TaskInfo:
    raw = {
        "name": "t",
        "task_id": {"value": "t"},
        "agent_id": {"value": "a"},
        "command": {"value": "true"},
        **fields,
    }
    return msgspec.convert(raw, TaskInfo)


def secret(data: bytes) -> dict:
    return {"type": "VALUE", "value": {"data": base64.b64encode(data).decode()}}


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ({"name": "S", "type": "UNKNOWN", "value": "x"}, "of type 'UNKNOWN' is not allowed"),
        ({"name": "S", "type": "VALUE"}, "'S' of type 'VALUE' must have a value set"),
        (
            {"name": "S", "value": "v", "secret": secret(b"x")},
            "'S' of type 'VALUE' must not have a secret set",
        ),
        ({"name": "S", "type": "SECRET"}, "'S' of type 'SECRET' must have a secret set"),
        (
            {"name": "S", "type": "SECRET", "value": "v", "secret": secret(b"x")},
            "'S' of type 'SECRET' must not have a value set",
        ),
        (
            {"name": "S", "type": "SECRET", "secret": secret(b"a\x00b")},
            "'S' specifies a secret containing null bytes",
        ),
        (
            {"name": "S", "type": "SECRET", "secret": {"type": "VALUE"}},
            "Secret of type VALUE must have the 'value' field set",
        ),
    ],
)
def test_bad_environment_variables_are_refused(variable: dict, message: str) -> None:
    problem = task_fields_problem(
        task(command={"value": "true", "environment": {"variables": [variable]}})
    )
    assert problem is not None
    assert problem.startswith("Task's `CommandInfo` is invalid: ") and message in problem


def test_good_environment_variables_pass() -> None:
    variables = [
        {"name": "A", "value": ""},
        {"name": "B", "type": "SECRET", "secret": secret(b"s3cret")},
        {
            "name": "C",
            "type": "SECRET",
            "secret": {"type": "REFERENCE", "reference": {"name": "r"}},
        },
    ]
    assert (
        task_fields_problem(
            task(command={"value": "true", "environment": {"variables": variables}})
        )
        is None
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kill_policy": {"grace_period": {"nanoseconds": -5}}},
            "'kill_policy.grace_period' must be non-negative",
        ),
        (
            {"max_completion_time": {"nanoseconds": -1}},
            "`max_completion_time` must be non-negative",
        ),
        (
            {"limits": {"mem": {"value": 256}}},
            "When a memory limit is specified, a memory request must also be specified",
        ),
        (
            {"limits": {"disk": {"value": 256}}},
            "Only cpus and mem may be included in a task's resource limits",
        ),
        (
            {"check": {"type": "HTTP", "http": {"port": 1, "path": "x"}}},
            "Task uses invalid check: The path 'x'",
        ),
        ({"check": {"http": {"port": 1}}}, "CheckInfo must specify 'type'"),
        (
            {"check": {"type": "TCP", "tcp": {"port": 1}, "delay_seconds": -1}},
            "'delay_seconds' to be non-negative",
        ),
        ({"health_check": {"command": {"value": "true"}}}, "HealthCheck must specify 'type'"),
        (
            {
                "health_check": {
                    "type": "COMMAND",
                    "command": {"value": "true", "environment": {"variables": [{"value": 3}]}},
                }
            },
            "Health check's `CommandInfo` is invalid: Invalid environment",
        ),
        (
            {"health_check": {"type": "HTTP", "http": {"port": 1, "scheme": "ftp"}}},
            "Task uses invalid health check: Unsupported HTTP health check scheme: 'ftp'",
        ),
        (
            {
                "health_check": {
                    "type": "COMMAND",
                    "command": {"value": "true"},
                    "grace_period_seconds": -1,
                }
            },
            "'grace_period_seconds' to be non-negative",
        ),
        (
            {"health_check": {"type": "COMMAND", "command": {"shell": False}}},
            "must contain 'executable path'",
        ),
    ],
)
def test_bad_task_fields_are_refused_with_the_mesos_message(fields: dict, message: str) -> None:
    problem = task_fields_problem(task(**fields))
    assert problem is not None and message in problem


def test_valid_checks_pass() -> None:
    assert check_problem({"type": "COMMAND", "command": {"command": {"value": "true"}}}) is None
    assert check_problem({"type": "HTTP", "http": {"port": 8080, "path": "/ok"}}) is None
    assert health_check_problem({"type": "TCP", "tcp": {"port": 9}, "interval_seconds": 1}) is None
    assert task_fields_problem(task(kill_policy={"grace_period": {"nanoseconds": 0}})) is None


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (
            {
                "type": "MESOS",
                "linux_info": {"effective_capabilities": {"capabilities": ["NET_ADMIN"]}},
            },
            "'linux/capabilities'",
        ),
        (
            {"type": "MESOS", "linux_info": {"capability_info": {"capabilities": []}}},
            "'linux/capabilities'",
        ),
        ({"type": "MESOS", "linux_info": {"seccomp": {"unconfined": True}}}, "'linux/seccomp'"),
        ({"type": "MESOS", "linux_info": {"ipc_mode": "PRIVATE"}}, "'namespaces/ipc'"),
        (
            {"type": "MESOS", "linux_info": {"share_cgroups": False}},
            "Only tasks in a task group may have 'share_cgroups'",
        ),
        (
            {
                "type": "MESOS",
                "rlimit_info": {"rlimits": [{"type": "RLMT_NOFILE", "soft": 1, "hard": 1}]},
            },
            "'posix/rlimits'",
        ),
        ({"type": "MESOS", "tty_info": {}}, "tty_info is not supported for tasks"),
        ({"type": "MESOS", "hostname": "box"}, "ContainerInfo.hostname"),
        ({"type": "MESOS", "network_infos": [{"name": "cni-net"}]}, "'network/cni'"),
    ],
)
def test_container_fields_butte_does_not_implement_are_refused(
    container: dict, message: str
) -> None:
    problem = container_problem(container)
    assert problem is not None and message in problem


def test_container_fields_that_ask_for_what_butte_does_pass() -> None:
    for container in (
        {"type": "MESOS", "linux_info": {"share_pid_namespace": True, "share_cgroups": True}},
        {"type": "MESOS", "linux_info": {"ipc_mode": "SHARE_PARENT"}},
        {"type": "MESOS", "network_infos": [{"labels": {"labels": []}}]},
    ):
        assert container_problem(container) is None
    assert "task group share" in (
        container_problem({"type": "MESOS", "linux_info": {"share_cgroups": False}}, in_group=True)
        or ""
    )
    assert shares_pid_namespace({"linux_info": {"share_pid_namespace": True}})
    assert not shares_pid_namespace({"linux_info": {"share_pid_namespace": False}})
    assert not shares_pid_namespace(None)


def _accept(container: dict, where: str = "task") -> bytes:
    """An ACCEPT launching a task with ``container``, or a task group whose executor has it."""
    import json

    task = {
        "name": "t",
        "task_id": {"value": "t"},
        "agent_id": {"value": "a"},
        "command": {"value": "true"},
    }
    operation: dict[str, Any] = {"type": "LAUNCH", "launch": {"task_infos": [task]}}
    if where == "task":
        task["container"] = container
    else:
        executor = {"executor_id": {"value": "e"}, "type": "DEFAULT", "container": container}
        group = {"executor": executor, "task_group": {"tasks": [task]}}
        operation = {"type": "LAUNCH_GROUP", "launch_group": group}
    call = {
        "type": "ACCEPT",
        "framework_id": {"value": "f"},
        "accept": {"offer_ids": [{"value": "o"}], "operations": [operation]},
    }
    return json.dumps(call).encode()


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"type": "FOO"}, "ContainerInfo.type 'FOO' is not one of MESOS, DOCKER"),
        ({"mesos": {}}, "missing its required field 'type'"),
        (
            {"type": "MESOS", "volumes": [{"container_path": "/x", "mode": "RX"}]},
            "Volume.mode 'RX' is not one of RW, RO",
        ),
        ({"type": "MESOS", "volumes": [{"container_path": "/x"}]}, "required field 'mode'"),
    ],
)
def test_a_call_whose_container_mesos_could_not_parse_is_refused_whole(container, message):
    """As Mesos fails to parse it: a 400 for the call, not a TASK_ERROR after a 202."""
    from butte.master.server import parse_scheduler_call

    for where in ("task", "group executor"):
        refused = parse_scheduler_call(_accept(container, where))
        assert isinstance(refused, tuple) and refused[0] == 400, (where, refused)
        assert message in refused[1], (where, refused)
    good = {"type": "MESOS", "volumes": [{"container_path": "/x", "mode": "RO", "host_path": "/"}]}
    assert not isinstance(parse_scheduler_call(_accept(good)), tuple)


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([{"type": "FROBNICATE"}], "operation type 'FROBNICATE' is unknown"),
        ([{"type": "LAUNCH"}], "operation LAUNCH is missing its 'launch' payload"),
        ([{"type": "CREATE_DISK", "create_disk": {}}], "CREATE_DISK needs a resource provider"),
    ],
)
def test_an_accept_that_could_report_nothing_is_refused_with_400(operations, message):
    """No task to fail and no operation id for an OPERATION_ERROR: a 202 would do nothing."""
    from butte.master.server import parse_scheduler_call

    body = {"type": "ACCEPT", "framework_id": {"value": "f"}}
    body["accept"] = {"offer_ids": [{"value": "o"}], "operations": operations}
    refused = parse_scheduler_call(json.dumps(body).encode())
    assert isinstance(refused, tuple) and refused[0] == 400 and message in refused[1], refused
    # With an id the framework hears of it as OPERATION_ERROR, after a 202.
    body["accept"]["operations"] = [{**operations[0], "id": {"value": "op-1"}}]
    assert not isinstance(parse_scheduler_call(json.dumps(body).encode()), tuple)
