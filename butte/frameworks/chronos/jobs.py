"""Chronos job definitions: validation of the JSON a client posts, and the JSON a job is
shown as. Pure: no I/O; the current time comes in as an argument.

A field this scheduler does not implement is refused with the reason (`JobError`, a 400 in
the REST shell), never accepted and ignored. The read-only fields Chronos shows in job
listings (``successCount``, ``lastError`` ...) are accepted back and ignored, so a job read
with ``GET /v1/scheduler/jobs`` can be posted again unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from butte.frameworks.chronos.schedule import (
    Schedule,
    ScheduleError,
    format_instant,
    format_seconds,
    parse_duration,
    parse_schedule,
    parse_zone,
)

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
MAX_COMMAND = 64 * 1024
MAX_LIST = 1000
MAX_RETRIES = 100
MAX_COMPLETION_SECONDS = 10 * 365 * 86400  # ten years
MAX_EPSILON_SECONDS = 30 * 86400
DEFAULT_EPSILON_SECONDS = 60.0
DEFAULT_RETRIES = 2
DEFAULT_CPUS = 0.1
DEFAULT_MEM = 128.0
DEFAULT_DISK = 256.0
CONSTRAINT_OPERATORS = ("EQUALS", "LIKE", "UNLIKE")

# Fields Chronos reports about a job; accepted back (a listed job can be re-posted) but not
# settable.
READ_ONLY = frozenset(
    {
        "successCount",
        "errorCount",
        "lastSuccess",
        "lastError",
        "errorsSinceLastSuccess",
        "skippedCount",
        "nextRun",
    }
)
# Fields that must keep Chronos' default, because what they select is not implemented.
FIXED = {
    "async": False,
    "softError": False,
    "dataProcessingJobType": False,
    "executor": "",
    "executorFlags": "",
    "dataJob": False,
}


class JobError(ValueError):
    """An invalid job definition; the message says which field and why."""


@dataclass
class JobSpec:
    """A validated job as the user defined it."""

    name: str
    command: str
    shell: bool = True
    arguments: list[str] = field(default_factory=list)
    owner: str = ""
    owner_name: str = ""
    description: str = ""
    schedule: str | None = None
    schedule_time_zone: str = ""
    parents: list[str] = field(default_factory=list)
    epsilon: float = DEFAULT_EPSILON_SECONDS
    retries: int = DEFAULT_RETRIES
    disabled: bool = False
    concurrent: bool = False
    cpus: float = DEFAULT_CPUS
    mem: float = DEFAULT_MEM
    disk: float = DEFAULT_DISK
    uris: list[str] = field(default_factory=list)
    fetch: list[dict[str, Any]] = field(default_factory=list)
    environment: list[dict[str, str]] = field(default_factory=list)
    constraints: list[list[str]] = field(default_factory=list)
    run_as_user: str = ""
    high_priority: bool = False
    # Chronos 3's: the run is ended after this long (TaskInfo.max_completion_time; 0: no
    # limit; given in seconds as Chronos' `maxCompletionTime`, kept in milliseconds as
    # stored records have it), and this string goes to TaskInfo.data.
    max_completion_ms: int = 0
    task_info_data: str = ""

    def parsed_schedule(self, now: float) -> Schedule | None:
        if self.schedule is None:
            return None
        return parse_schedule(self.schedule, self.schedule_time_zone, now)

    def to_json(self) -> dict[str, Any]:
        """The job's definition in Chronos' field names (statistics are added by the core)."""
        out: dict[str, Any] = {
            "name": self.name,
            "command": self.command,
            "shell": self.shell,
            "arguments": list(self.arguments),
            "owner": self.owner,
            "ownerName": self.owner_name,
            "description": self.description,
            "epsilon": format_seconds(self.epsilon),
            "retries": self.retries,
            "disabled": self.disabled,
            "concurrent": self.concurrent,
            "cpus": self.cpus,
            "mem": self.mem,
            "disk": self.disk,
            "uris": list(self.uris),
            "fetch": [dict(f) for f in self.fetch],
            "environmentVariables": [dict(e) for e in self.environment],
            "constraints": [list(c) for c in self.constraints],
            "runAsUser": self.run_as_user,
            "highPriority": self.high_priority,
            "maxCompletionTime": self.max_completion_ms // 1000,
            "taskInfoData": self.task_info_data,
            **FIXED,
        }
        if self.schedule is not None:
            out["schedule"] = self.schedule
            out["scheduleTimeZone"] = self.schedule_time_zone
        else:
            out["parents"] = list(self.parents)
        return out


def _str(body: dict[str, Any], key: str, default: str = "", limit: int = 4096) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise JobError(f"{key} must be a string")
    if len(value) > limit:
        raise JobError(f"{key} is longer than {limit} characters")
    return value


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise JobError(f"{key} must be true or false")
    return value


def _resource(body: dict[str, Any], key: str, default: float, hi: float) -> float:
    """A job's cpus, mem or disk as Chronos reads them: a number or a numeric string (its
    API doc's Docker example posts ``"cpus": "0.5"``); 0 or absent takes the default."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise JobError(f"{key} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise JobError(f"{key} must be a number")
    if not 0 <= value <= hi:
        raise JobError(f"{key} must be between 0 and {hi:g}")
    return float(value) if value else default


def _seconds(body: dict[str, Any], key: str, hi: int) -> int:
    value = body.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise JobError(f"{key} must be a whole number of seconds between 0 and {hi}")
    return value


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JobError(f"{key} must be a list of strings")
    if len(value) > MAX_LIST or any(len(v) > 4096 for v in value):
        raise JobError(f"{key} is too long")
    return list(value)


def _epsilon(body: dict[str, Any]) -> float:
    value = body.get("epsilon")
    if value is None:
        return DEFAULT_EPSILON_SECONDS
    try:
        period = parse_duration(value)
    except ScheduleError as e:
        raise JobError(f"epsilon: {e}") from None
    if period.months:
        raise JobError("epsilon must not use months or years")
    seconds = period.days * 86400 + period.seconds
    if seconds > MAX_EPSILON_SECONDS:
        raise JobError(f"epsilon must be at most {MAX_EPSILON_SECONDS}s")
    return seconds


def _environment(body: dict[str, Any]) -> list[dict[str, str]]:
    value = body.get("environmentVariables", [])
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise JobError("environmentVariables must be a list of {name, value}")
    out = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"name", "value"}
            or not all(isinstance(v, str) for v in item.values())
            or not item["name"]
        ):
            raise JobError("environmentVariables must be a list of {name, value} strings")
        out.append({"name": item["name"], "value": item["value"]})
    return out


def _fetch(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("fetch", [])
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise JobError("fetch must be a list of {uri, executable, extract, cache, output_file}")
    allowed = {"uri": str, "executable": bool, "extract": bool, "cache": bool, "output_file": str}
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
            raise JobError("each fetch entry needs a string uri")
        for k, v in item.items():
            if k not in allowed:
                raise JobError(f"fetch field {k!r} is not supported (use {sorted(allowed)})")
            if not isinstance(v, allowed[k]):
                raise JobError(f"fetch field {k!r} must be a {allowed[k].__name__}")
        out.append(dict(item))
    return out


def _constraints(body: dict[str, Any]) -> list[list[str]]:
    value = body.get("constraints", [])
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 100:
        raise JobError("constraints must be a list of [attribute, operator, value]")
    out = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(v, str) for v in item)
        ):
            raise JobError("each constraint must be [attribute, operator, value] strings")
        if item[1] not in CONSTRAINT_OPERATORS:
            raise JobError(
                f"constraint operator {item[1]!r} is not supported (use {CONSTRAINT_OPERATORS})"
            )
        if item[1] != "EQUALS":
            try:
                re.compile(item[2])
            except re.error as e:
                raise JobError(f"constraint pattern {item[2]!r}: {e}") from None
        out.append(list(item))
    return out


KNOWN = (
    READ_ONLY
    | set(FIXED)
    | {
        "name",
        "command",
        "shell",
        "arguments",
        "owner",
        "ownerName",
        "description",
        "schedule",
        "scheduleTimeZone",
        "parents",
        "epsilon",
        "retries",
        "disabled",
        "concurrent",
        "cpus",
        "mem",
        "disk",
        "uris",
        "fetch",
        "environmentVariables",
        "constraints",
        "runAsUser",
        "highPriority",
        "container",
        "maxCompletionTime",
        "taskInfoData",
    }
)


def parse_job(body: Any, now: float, *, dependency: bool) -> JobSpec:
    """Validates a posted job. ``dependency`` says which endpoint it came to: jobs posted to
    ``/scheduler/dependency`` need ``parents``, to ``/scheduler/iso8601`` a ``schedule``.
    Whether the parents exist and form no cycle is the core's check (it knows the jobs)."""
    if not isinstance(body, dict):
        raise JobError("a job must be a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise JobError(f"unknown or unsupported job fields: {', '.join(unknown)}")
    for key, default in FIXED.items():
        if key in body and body[key] not in (default, None):
            raise JobError(f"{key}={body[key]!r} is not supported (only {default!r})")
    if body.get("container") is not None:
        raise JobError("container is not supported yet: jobs run as plain commands")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise JobError("name must be 1-200 characters of letters, digits, '_', '.', '-'")
    command = _str(body, "command", limit=MAX_COMMAND)
    if not command.strip():
        raise JobError("command must not be empty")
    retries = body.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise JobError(f"retries must be an integer between 0 and {MAX_RETRIES}")
    spec = JobSpec(
        name=name,
        command=command,
        shell=_bool(body, "shell", True),
        arguments=_str_list(body, "arguments"),
        owner=_str(body, "owner"),
        owner_name=_str(body, "ownerName"),
        description=_str(body, "description", limit=MAX_COMMAND),
        epsilon=_epsilon(body),
        retries=retries,
        disabled=_bool(body, "disabled", False),
        concurrent=_bool(body, "concurrent", False),
        cpus=_resource(body, "cpus", DEFAULT_CPUS, 1024),
        mem=_resource(body, "mem", DEFAULT_MEM, 16 * 1024 * 1024),
        disk=_resource(body, "disk", DEFAULT_DISK, 1024 * 1024 * 1024),
        uris=_str_list(body, "uris"),
        fetch=_fetch(body),
        environment=_environment(body),
        constraints=_constraints(body),
        run_as_user=_str(body, "runAsUser"),
        high_priority=_bool(body, "highPriority", False),
        max_completion_ms=_seconds(body, "maxCompletionTime", MAX_COMPLETION_SECONDS) * 1000,
        task_info_data=_str(body, "taskInfoData", limit=MAX_COMMAND),
    )
    if spec.uris and spec.fetch:
        raise JobError("give either uris or fetch, not both")
    _schedule_fields(spec, body, now, dependency)
    return spec


def _schedule_fields(spec: JobSpec, body: dict[str, Any], now: float, dependency: bool) -> None:
    schedule = body.get("schedule")
    parents = body.get("parents")
    if dependency:
        if schedule is not None:
            raise JobError("a dependent job has parents, not a schedule")
        spec.parents = _str_list(body, "parents")
        if not spec.parents:
            raise JobError("a dependent job needs at least one parent")
        if len(set(spec.parents)) != len(spec.parents):
            raise JobError("parents must not repeat")
        if spec.name in spec.parents:
            raise JobError("a job cannot be its own parent")
        if body.get("scheduleTimeZone"):
            raise JobError("scheduleTimeZone needs a schedule")
        return
    if parents:
        raise JobError("jobs with parents go to /v1/scheduler/dependency")
    if not isinstance(schedule, str):
        raise JobError("schedule is required (R[n]/<start>/<period>)")
    spec.schedule = schedule.strip()
    spec.schedule_time_zone = _str(body, "scheduleTimeZone")
    try:
        zone = parse_zone(spec.schedule_time_zone)
        parse_schedule(spec.schedule, spec.schedule_time_zone, now)
    except ScheduleError as e:
        raise JobError(f"schedule: {e}") from None
    rep, start, period = spec.schedule.split("/")
    if not start:
        # "Starting now" is pinned to the time it was said, so the schedule stays the same
        # after a restart.
        spec.schedule = f"{rep}/{format_instant(math.floor(now), zone)}/{period}"


def spec_from_record(record: dict[str, Any]) -> JobSpec:
    """A stored spec (the dataclass' own field names) back into a JobSpec."""
    return JobSpec(**record)
