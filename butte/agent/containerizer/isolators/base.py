"""The pieces every isolator shares: the `Isolator` base class, what a launch asks for
and what the containerizer is told, and the errors (see the package docstring)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from butte.agent.containerizer.cgroupfs import Cgroups
    from butte.agent.effects import LaunchContainer, UpdateContainer

DEFAULT_ISOLATION = "posix/cpu,posix/mem"
# Mesos' floor for a container's memory limit (MIN_MEMORY in slave/constants.hpp).
MIN_MEMORY_MB = 32.0
MB = 1024 * 1024


class IsolatorUnavailable(Exception):
    """An isolator named in --isolation cannot work on this machine (or is unknown)."""


class LaunchRefused(Exception):
    """A container cannot be isolated as asked (bad limits, unknown user): its launch fails."""


@dataclass(frozen=True, slots=True)
class Limitation:
    """A container went over a limit: its tasks fail with ``reason`` and ``message``."""

    reason: str
    message: str


@dataclass(slots=True)
class ContainerSetup:
    """What the isolators ask of a container's first process and of its tasks."""

    # cgroup.procs files the first process writes its pid into before it runs anything.
    cgroup_procs: list[str] = field(default_factory=list)
    # Namespaces each task gets: "pid", "mnt" (with /tmp in the sandbox), "net".
    task_namespaces: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # (name, uid, gid, home) the container's tasks run as (--switch_user); None: the agent's.
    user: tuple[str, int, int, str] | None = None
    # /proc/self/oom_score_adj the first process sets (a burstable command task: cgroups/mem).
    oom_score_adj: int | None = None


@dataclass(frozen=True, slots=True)
class IsolationOptions:
    """The flags isolators read."""

    cgroups_hierarchy: str = "/sys/fs/cgroup"
    cgroups_root: str = "butte"
    cgroups_enable_cfs: bool = False
    cgroups_limit_swap: bool = False
    container_max_pids: int | None = None
    enforce_container_disk_quota: bool = False
    container_disk_watermark_interval: float = 15.0
    nvidia_gpu_devices: tuple[int, ...] | None = None
    disallow_sharing_agent_pid_namespace: bool = False


LimitCallback = Callable[[str, Limitation], None]


class Isolator:
    """Base of every isolator; each hook does nothing unless overridden."""

    name: ClassVar[str] = ""
    # cgroup controllers the isolator needs (v1 names).
    controllers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: IsolatorContext) -> None:
        self.context = context

    @property
    def cgroups(self) -> Cgroups:
        assert self.context.cgroups is not None
        return self.context.cgroups

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        pass

    def started(self, container_id: str, on_limit: LimitCallback) -> None:
        pass

    def limitation(self, container_id: str) -> Limitation | None:
        return None

    def limitation_possible(self, container_id: str) -> bool:
        """Might the kernel count a limit the container went over only after its end was
        seen (`limitation` found nothing yet)? Asked of an end by SIGKILL the agent did
        not send, before it is reported."""
        return False

    def update(self, change: UpdateContainer) -> None:
        """Tasks joined or left the running container: ``change`` has its resources and
        limits now."""

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        pass

    def recover(self, container_id: str, on_limit: LimitCallback) -> None:
        self.started(container_id, on_limit)

    def recover_spec(self, spec: LaunchContainer, on_limit: LimitCallback) -> None:
        """Like `recover`, for isolators that need what the launch said (the sandbox and
        resources, rebuilt from the agent's records): by default just `recover`."""
        self.recover(spec.container_id, on_limit)

    def cleanup(self, container_id: str) -> None:
        pass


def require_cgroup_file(
    cgroups: Cgroups,
    controller: str,
    files: tuple[str, str],
    flag: str,
    lack: str,
    remedy: str,
) -> None:
    """Start-up check of a flag that has a file of ``controller`` (``files``: v1, v2 name)
    written in every container's group: where the kernel lacks it every launch would fail
    with ENOENT later, so the agent does not start (as Mesos' isolators refuse to be
    created). Raises `IsolatorUnavailable` naming the flag, the missing file, what the
    kernel lacks and ``remedy``."""
    from butte.agent.containerizer.cgroupfs import CgroupError

    name = files[0] if cgroups.version == 1 else files[1]
    try:
        path = os.path.join(cgroups.interface_dir(controller), name)
    except CgroupError as e:
        raise IsolatorUnavailable(f"{flag}: cannot check for {name}: {e}") from None
    if not os.path.exists(path):
        raise IsolatorUnavailable(
            f"{flag}: {path} does not exist: this kernel has no {lack}; {remedy}"
        )


def scalar(spec: LaunchContainer | UpdateContainer, name: str) -> float | None:
    """The container's total of scalar resource ``name`` (None: not asked for). A value that
    is not a finite number >= 0 refuses the launch."""
    value = dict(spec.resources).get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or math.isnan(value) or math.isinf(value) or value < 0:
        raise LaunchRefused(f"invalid {name} resource: {value!r}")
    return float(value)


def limit(spec: LaunchContainer | UpdateContainer, name: str) -> float | None:
    """The container's limit of ``name`` from its tasks' TaskInfo.limits (math.inf: none;
    None: not limited beyond its request). NaN or a negative value refuses the launch."""
    value = dict(spec.limits).get(name)
    if value is not None and (math.isnan(value) or value < 0):
        raise LaunchRefused(f"invalid {name} limit: {value!r}")
    return value


@dataclass(slots=True)
class IsolatorContext:
    """What isolator constructors get: the options, the loop and the cgroup layout (None
    when no cgroups isolator is used)."""

    options: IsolationOptions
    loop: asyncio.AbstractEventLoop | None
    cgroups: Cgroups | None
