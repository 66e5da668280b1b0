"""How an executor is started: the ExecutorInfo generated for command tasks, the argv of an
executor process and its environment (docs/protocol.md §2.2, 2.3). Pure functions."""

from __future__ import annotations

import base64
import binascii
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from butte.core.durations import format_duration
from butte.core.messages import (
    ID,
    CommandInfo,
    ExecutorInfo,
    FrameworkInfo,
    TaskInfo,
)

# Mesos charges a command executor this much on top of its task (not taken from the offer).
COMMAND_EXECUTOR_CPUS = 0.1
COMMAND_EXECUTOR_MEM = 32.0
RECOVERY_TIMEOUT = 900.0  # --recovery_timeout
EXECUTOR_REREGISTRATION_TIMEOUT = 2.0  # --executor_reregistration_timeout


def allocated_role(resources: Sequence[Mapping[str, Any]]) -> str | None:
    """The role the resources were allocated to (``allocation_info.role``; a task's or an
    executor's are all of one), or None when they do not say."""
    for resource in resources:
        info = resource.get("allocation_info") if isinstance(resource, Mapping) else None
        if isinstance(info, Mapping) and isinstance(info.get("role"), str):
            return info["role"]
    return None


def allocation_role(resources: Sequence[Mapping[str, Any]], framework: FrameworkInfo) -> str:
    """The role the resources were allocated to, else the framework's (first) role."""
    role = allocated_role(resources)
    if role is not None:
        return role
    roles = framework.role_list()
    return roles[0] if roles else "*"


def command_summary(command: CommandInfo) -> str:
    """The ``(Command: ...)`` part of a command executor's name, shortened like Mesos does."""
    if not command.value:
        return "NO EXECUTABLE"
    if command.shell:
        value = command.value if len(command.value) <= 15 else command.value[:12] + "..."
        return f"sh -c '{value}'"
    return "[" + ", ".join(command.arguments or [command.value]) + "]"


def command_executor_info(
    task: TaskInfo, framework_id: str, role: str, argv: Sequence[str]
) -> ExecutorInfo:
    """The ExecutorInfo of the built-in command executor that runs ``task`` (Mesos
    ``getExecutorInfo``): executor id and source are the task id."""
    assert task.command is not None
    task_id = task.task_id.value
    overhead: list[dict[str, Any]] = [
        {"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*"}
        for name, value in (("cpus", COMMAND_EXECUTOR_CPUS), ("mem", COMMAND_EXECUTOR_MEM))
    ]
    for resource in overhead:
        resource["allocation_info"] = {"role": role}
    return ExecutorInfo(
        executor_id=ID(task_id),
        framework_id=ID(framework_id),
        command=CommandInfo(shell=False, value=argv[0], arguments=list(argv)),
        resources=overhead,
        name=f"Command Executor (Task: {task_id}) (Command: {command_summary(task.command)})",
        source=task_id,
        labels=task.labels,
    )


def builtin_executor_info(info: ExecutorInfo, framework_id: str) -> ExecutorInfo:
    """A framework's ExecutorInfo with ``framework_id`` filled in (Mesos does the same)."""
    if info.framework_id is not None:
        return info
    return msgspec.structs.replace(info, framework_id=ID(framework_id))


def process_argv(command: CommandInfo) -> tuple[tuple[str, ...], str | None]:
    """argv (and the program to run, if not argv[0]) of a CommandInfo: ``/bin/sh -c value``
    when ``shell``, else ``value`` run with ``arguments`` as its argv."""
    if command.shell:
        return ("/bin/sh", "-c", command.value or ""), None
    value = command.value or ""
    argv = tuple(command.arguments) if command.arguments else (value,)
    return argv, value


def command_environment(command: CommandInfo | None) -> dict[str, str]:
    """The plain (VALUE) variables of a CommandInfo's environment."""
    out: dict[str, str] = {}
    if command is None or command.environment is None:
        return out
    for var in command.environment.variables:
        if var.type == "VALUE" and var.value is not None:
            out[var.name] = var.value
        elif var.type == "SECRET":
            value = secret_value(var.secret)
            if value is not None:
                out[var.name] = value
    return out


def logger_environment(executor: ExecutorInfo | None, tasks: Sequence[TaskInfo]) -> dict[str, str]:
    """The environment a container's log rotation reads its own settings from (Mesos'
    logrotate logger reads the container's CommandInfo): a command task's command, else
    the executor's (a custom executor, or the default executor of a task group)."""
    if executor is None and tasks and tasks[0].command is not None:
        return command_environment(tasks[0].command)
    return command_environment(executor.command if executor is not None else None)


def member_logger_environments(tasks: Sequence[TaskInfo]) -> dict[str, dict[str, str]]:
    """Task id -> the environment a task group member's log rotation reads its own settings
    from: its task's CommandInfo (in Mesos each member is a nested container of its own)."""
    return {t.task_id.value: command_environment(t.command) for t in tasks}


def secret_value(secret: Mapping[str, Any] | None) -> str | None:
    """The text of a Secret of type VALUE (its base64 ``data``), else None."""
    if not secret or secret.get("type") != "VALUE":
        return None
    data = (secret.get("value") or {}).get("data")
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data).decode(errors="surrogateescape")
    except (binascii.Error, ValueError):
        return None


def executor_environment(
    *,
    base: Mapping[str, str],
    framework: FrameworkInfo,
    executor: ExecutorInfo,
    agent_id: str,
    agent_ip: str,
    agent_port: int,
    sandbox: str,
    shutdown_grace: float,
    role: str,
    recovery_timeout: float = RECOVERY_TIMEOUT,
    subscription_backoff_max: float = EXECUTOR_REREGISTRATION_TIMEOUT,
) -> dict[str, str]:
    """The environment of an executor process (docs/protocol.md §2.2): the agent's own environment,
    the MESOS_* variables, then the executor command's own variables (which win)."""
    env = dict(base)
    assert framework.id is not None
    endpoint = f"{agent_ip}:{agent_port}"
    env.update(
        {
            "MESOS_FRAMEWORK_ID": framework.id.value,
            "MESOS_EXECUTOR_ID": executor.executor_id.value,
            "MESOS_AGENT_ENDPOINT": endpoint,
            "MESOS_DIRECTORY": sandbox,
            "MESOS_SANDBOX": sandbox,
            "MESOS_SLAVE_ID": agent_id,
            "MESOS_SLAVE_PID": f"slave(1)@{endpoint}",
            "MESOS_HTTP_COMMAND_EXECUTOR": "1",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": format_duration(shutdown_grace),
            "MESOS_ALLOCATION_ROLE": role,
            "LIBPROCESS_PORT": "0",
        }
    )
    # pymesos reads MESOS_CHECKPOINT with bool(), so "0" would mean "on": only set it when on.
    env.pop("MESOS_CHECKPOINT", None)
    if framework.checkpoint:
        env["MESOS_CHECKPOINT"] = "1"
        env["MESOS_RECOVERY_TIMEOUT"] = format_duration(recovery_timeout)
        # Mesos passes --executor_reregistration_timeout: an executor retrying at most that
        # far apart reaches a restarted agent before it gives up on the executor.
        env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = format_duration(subscription_backoff_max)
    env.update(command_environment(executor.command))
    return env


def shutdown_grace_period(executor: ExecutorInfo, default: float) -> float:
    """The executor's own ``shutdown_grace_period`` if set, else the agent flag."""
    if executor.shutdown_grace_period is not None:
        return max(0.0, executor.shutdown_grace_period.nanoseconds / 1e9)
    return default


def exit_message(status: int | None) -> str:
    """Words for a raw wait status, for the updates of tasks whose executor died."""
    if status is None:
        return "Executor terminated"
    if os.WIFEXITED(status):
        return f"Executor exited with status {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"Executor terminated by signal {name}"
    return f"Executor terminated (wait status {status})"
