"""Checks of a TaskInfo's own fields that the master makes before a task reaches an agent
(docs/protocol.md §1.8): the environment, checks and health checks, the kill policy, the
completion time and resource limits, with the Mesos master's messages, so that a framework
that matches on them reads the same text.

Pure functions returning an error message (the task then gets TASK_ERROR) or None. The
agent repeats them (`butte.agent.launch_events`): a master that did not check must not get
a task past them either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import msgspec

from butte.core import task_limits
from butte.core.messages import CommandInfo, Environment, TaskInfo

CHECK_KINDS = ("COMMAND", "HTTP", "TCP")


def _secret_problem(secret: Any) -> str | None:
    if not isinstance(secret, Mapping):
        return "Secret must be an object"
    kind = secret.get("type", "UNKNOWN")
    if kind == "REFERENCE":
        if secret.get("reference") is None:
            return "Secret of type REFERENCE must have the 'reference' field set"
        if secret.get("value") is not None:
            name = (secret.get("reference") or {}).get("name", "")
            return f"Secret '{name}' of type REFERENCE must not have the 'value' field set"
    elif kind == "VALUE":
        if secret.get("value") is None:
            return "Secret of type VALUE must have the 'value' field set"
        if secret.get("reference") is not None:
            return "Secret of type VALUE must not have the 'reference' field set"
    return None


def _secret_data(secret: Mapping[str, Any]) -> bytes:
    value = secret.get("value")
    data = value.get("data") if isinstance(value, Mapping) else None
    if not isinstance(data, str):
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return b""


def environment_problem(environment: Environment | None) -> str | None:
    """Why an Environment's variables are invalid (a VALUE without a value or with a
    secret, a SECRET without a secret or with a value or NUL bytes, type UNKNOWN)."""
    if environment is None:
        return None
    for var in environment.variables:
        name = var.name
        if var.type == "SECRET":
            if var.secret is None:
                return f"Environment variable '{name}' of type 'SECRET' must have a secret set"
            if var.value is not None:
                return f"Environment variable '{name}' of type 'SECRET' must not have a value set"
            problem = _secret_problem(var.secret)
            if problem is not None:
                return f"Environment variable '{name}' specifies an invalid secret: {problem}"
            if b"\x00" in _secret_data(var.secret):
                return (
                    f"Environment variable '{name}' specifies a secret containing null bytes, "
                    "which is not allowed in the environment"
                )
        elif var.type == "VALUE":
            if var.value is None:
                return f"Environment variable '{name}' of type 'VALUE' must have a value set"
            if var.secret is not None:
                return f"Environment variable '{name}' of type 'VALUE' must not have a secret set"
        else:
            return f"Environment variable of type '{var.type}' is not allowed"
    return None


def _non_negative(info: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return f"Expecting '{name}' to be a number"
        if value < 0:
            return f"Expecting '{name}' to be non-negative"
    return None


def _command_problem(command: Any, what: str) -> str | None:
    """A check's or health check's CommandInfo: it needs a value; its environment is
    checked like a task's."""
    if not isinstance(command, Mapping):
        return f"Expecting 'command' to be set for COMMAND {what}"
    if not command.get("value"):
        kind = "'shell command'" if command.get("shell", True) else "'executable path'"
        return f"Command {what} must contain {kind}"
    environment = command.get("environment")
    if environment is not None:
        try:
            problem = environment_problem(_environment(environment))
        except (TypeError, ValueError) as e:
            problem = f"Invalid environment: {e}"
        if problem is not None:
            return f"{what.capitalize()}'s `CommandInfo` is invalid: {problem}"
    return None


def _environment(raw: Any) -> Environment:
    return msgspec.convert(raw, Environment)


def _port_problem(body: Mapping[str, Any], what: str) -> str | None:
    port = body.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return f"Expecting 'port' of the {what} to be in 1-65535, got {port!r}"
    return None


def _typed_body(check: Any, message: str, what: str) -> tuple[str, Mapping[str, Any]] | str:
    """(type, the body of that type) of a CheckInfo or HealthCheck (``message`` names the
    message, ``what`` the kind of check), or why it has none."""
    if not isinstance(check, Mapping):
        return f"{message} must be an object"
    kind = check.get("type")
    if kind is None:
        return f"{message} must specify 'type'"
    if kind not in CHECK_KINDS:
        return f"'{kind}' is not a valid {what} type"
    body = check.get(kind.lower())
    if not isinstance(body, Mapping):
        return f"Expecting '{kind.lower()}' to be set for {kind} {what}"
    return kind, body


def check_problem(check: Any) -> str | None:
    """Why a CheckInfo (``TaskInfo.check``) is invalid, or None."""
    typed = _typed_body(check, "CheckInfo", "check")
    if isinstance(typed, str):
        return typed
    kind, body = typed
    if kind == "COMMAND":
        problem = _command_problem(body.get("command"), "check")
    else:
        problem = _port_problem(body, "check")
        path = body.get("path")
        if problem is None and kind == "HTTP" and path is not None:
            if not isinstance(path, str) or not path.startswith("/"):
                problem = f"The path '{path}' of HTTP check must start with '/'"
    if problem is not None:
        return problem
    return _non_negative(check, ("delay_seconds", "interval_seconds", "timeout_seconds"))


def health_check_problem(check: Any) -> str | None:
    """Why a HealthCheck (``TaskInfo.health_check``) is invalid, or None."""
    typed = _typed_body(check, "HealthCheck", "health check")
    if isinstance(typed, str):
        return typed
    kind, body = typed
    if kind == "COMMAND":
        problem = _command_problem(body, "health check")
    else:
        problem = _port_problem(body, "health check")
    if problem is None and kind == "HTTP":
        scheme, path = body.get("scheme"), body.get("path")
        if scheme is not None and scheme not in ("http", "https"):
            problem = f"Unsupported HTTP health check scheme: '{scheme}'"
        elif path is not None and (not isinstance(path, str) or not path.startswith("/")):
            problem = f"The path '{path}' of HTTP health check must start with '/'"
        elif not all(
            isinstance(s, int) and not isinstance(s, bool) for s in body.get("statuses") or []
        ):
            problem = "Expecting 'statuses' of the HTTP health check to be status codes"
    if problem is not None:
        return problem
    return _non_negative(
        check,
        (
            "delay_seconds",
            "grace_period_seconds",
            "interval_seconds",
            "timeout_seconds",
            "consecutive_failures",
        ),
    )


def command_problem(command: CommandInfo | None, whose: str) -> str | None:
    """Why a task's or executor's CommandInfo is invalid (its environment), or None;
    ``whose`` is "Task's" or "Executor's"."""
    if command is None:
        return None
    problem = environment_problem(command.environment)
    return None if problem is None else f"{whose} `CommandInfo` is invalid: {problem}"


def task_fields_problem(task: TaskInfo) -> str | None:
    """Why a task's kill policy, completion time, check, health check, command or resource
    limits are invalid, or None (in the order the Mesos master checks them)."""
    grace = task.kill_policy.grace_period if task.kill_policy is not None else None
    if grace is not None and grace.nanoseconds < 0:
        return "Task's 'kill_policy.grace_period' must be non-negative"
    if task.max_completion_time is not None and task.max_completion_time.nanoseconds < 0:
        return "Task's `max_completion_time` must be non-negative"
    if task.check is not None:
        problem = check_problem(task.check)
        if problem is not None:
            return f"Task uses invalid check: {problem}"
    if task.health_check is not None:
        problem = health_check_problem(task.health_check)
        if problem is not None:
            return f"Task uses invalid health check: {problem}"
    problem = command_problem(task.command, "Task's")
    if problem is not None:
        return problem
    return task_limits.problem(task)


# Mesos' message for limits on a member of a task group whose containers share the
# executor's cgroups (butte's always do: docs/isolation.md "Fields butte refuses").
GROUP_LIMITS = (
    "Resource limits may only be set for tasks within a task group when "
    "the 'share_cgroups' field is set to 'false'."
)
