"""``TaskInfo.limits``: resource limits above a task's request (burstable cpus and mem), as
Mesos 1.10+ has them (docs/isolation.md "Burstable tasks").

A task asks for ``cpus`` and ``mem`` in its resources (what is offered, allocated and
guaranteed) and may set a higher ceiling in ``limits``, a map of ``cpus``/``mem`` to a
``Value.Scalar`` (``{"cpus": {"value": 2}, "mem": {"value": "Infinity"}}``; ``"Infinity"``, as
protobuf's JSON writes an infinite double, means no ceiling). Pure functions: the master's and
the agent's checks with the Mesos master's messages, a container's limits from its executor's
and tasks' (Mesos' ``computeExecutorLimits``), and the JSON the state endpoints render.
"""

from __future__ import annotations

import math
import os

# Only the standard library's C-backed modules at run time: the Docker executor, which starts
# once per task, imports this through butte.core.docker_info.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from butte.core.messages import TaskInfo

NAMES = ("cpus", "mem")
INFINITY = "Infinity"
# The CFS period a cpu ceiling is a quota of, and the smallest quota (Mesos' constants).
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000


def parse(raw: object) -> dict[str, float]:
    """The limits of a TaskInfo's ``limits`` field as name -> value (``math.inf``: none).
    Raises ValueError, with the reason, for anything but a map of ``cpus``/``mem`` to a
    ``{"value": number or "Infinity"}`` (or a bare number, as some clients send)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("Task's resource limits must be a map of resource name to scalar")
    out: dict[str, float] = {}
    for name, scalar in raw.items():
        if name not in NAMES:
            raise ValueError("Only cpus and mem may be included in a task's resource limits")
        value = scalar.get("value") if isinstance(scalar, dict) else scalar
        if value == INFINITY:
            out[name] = math.inf
            continue
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(
                f'The {name} limit must be a number or "Infinity", got {scalar!r}'[:300]
            )
        out[name] = float(value)
    return out


def _request(resources: Iterable[Any], name: str) -> float | None:
    """The SCALAR ``name`` summed over ``resources`` (None: they hold none)."""
    total: float | None = None
    for resource in resources:
        if isinstance(resource, dict) and resource.get("name") == name:
            value = (resource.get("scalar") or {}).get("value")
            if isinstance(value, int | float) and not isinstance(value, bool):
                total = (total or 0.0) + float(value)
    return total


def problem(task: TaskInfo) -> str | None:
    """Why a task's limits are invalid, or None: the Mesos master's checks and messages
    (``validateResourceLimits``), plus a number that is not one."""
    if not task.limits:
        return None
    try:
        limits = parse(task.limits)
    except ValueError as e:
        return str(e)
    # Mesos' words for each: "CPU" and "cpu", "memory" twice.
    for name, upper, lower in (("cpus", "CPU", "cpu"), ("mem", "memory", "memory")):
        if name not in limits:
            continue
        request = _request(task.resources, name)
        if request is None:
            return f"When a {upper} limit is specified, a {upper} request must also be specified"
        if limits[name] < request:
            return f"The {lower} limit must be greater than or equal to the {lower} request"
    return None


def container_limits(
    executor_resources: Iterable[Any],
    tasks: Iterable[TaskInfo],
    cgroups_enable_cfs: bool,
) -> dict[str, float]:
    """The limits of a container holding an executor and ``tasks`` (Mesos'
    ``computeExecutorLimits``): none unless some task has one; then the limits of the tasks
    that have one, plus the executor's own request and the requests of the tasks without one,
    so the container's limit is never below its request. A task without a cpu limit beside
    one with it is not throttled by the other's ceiling: without ``--cgroups_enable_cfs`` the
    container then has no cpu limit at all."""
    tasks = list(tasks)
    if not any(task.limits for task in tasks):
        return {}  # the common case, on every launch
    cpu_limit: float | None = None
    mem_limit: float | None = None
    cpu_rest = mem_rest = 0.0
    for task in tasks:
        limits = parse(task.limits)
        if "cpus" in limits:
            cpu_limit = (cpu_limit or 0.0) + limits["cpus"]
        else:
            cpu_rest += _request(task.resources, "cpus") or 0.0
        if "mem" in limits:
            mem_limit = (mem_limit or 0.0) + limits["mem"]
        else:
            mem_rest += _request(task.resources, "mem") or 0.0
    executor = list(executor_resources)
    out: dict[str, float] = {}
    if cpu_limit is not None:
        cpu_limit += _request(executor, "cpus") or 0.0
        if cpu_rest <= 0 or cgroups_enable_cfs:
            out["cpus"] = cpu_limit + cpu_rest
    if mem_limit is not None:
        out["mem"] = mem_limit + (_request(executor, "mem") or 0.0) + mem_rest
    return out


def scalar_json(value: float) -> float | str:
    """A limit as JSON: the number, or ``"Infinity"`` (JSON has no infinite number)."""
    return INFINITY if math.isinf(value) else value


def v1_json(raw: object) -> dict[str, Any]:
    """A task's limits as the v1 API's ``Task.limits`` (name -> ``{"value": ...}``)."""
    return {name: {"value": scalar_json(v)} for name, v in sorted(parse(raw).items())}


def flat_json(raw: object) -> dict[str, float | str]:
    """A task's limits as the legacy ``/state`` endpoints render them (name -> value)."""
    return {name: scalar_json(v) for name, v in sorted(parse(raw).items())}


def oom_score_adj(request: int) -> int:
    """Mesos' ``calculateOOMScoreAdj`` for a burstable task asking for ``request`` bytes: 1000
    less the request's thousandths of the machine's memory, so that such a task using more than
    it asked for is the first the kernel's OOM killer picks."""
    return max(0, 1000 - (1000 * request) // machine_memory())


def machine_memory() -> int:
    """This machine's memory in bytes (what an infinite memory limit amounts to)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
