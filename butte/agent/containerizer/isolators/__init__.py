"""Isolators: small plug-ins that make a container's resources real (Mesos' ``--isolation``).

Each isolator lives in a module of its own and is named in `ISOLATORS` by its Mesos name.
The containerizer calls, for every container and every isolator in the order the flag names
them:

``prepare(spec, setup)``
    before the first process starts: refuse bad values (`LaunchRefused`), create groups and
    write limits, and say in ``setup`` what the container's first process must do (join
    cgroups) and in which namespaces its tasks run.
``started(container_id, on_limit)``
    after it started: watch for the container going over a limit (``on_limit`` is called on
    the event loop with a `Limitation`).
``limitation(container_id)``
    has it gone over a limit (read now, from the kernel's counters)?
``usage(container_id, statistics)``
    add ResourceStatistics fields.
``recover(container_id)`` / ``cleanup(container_id)``
    re-watch a container that lived through an agent restart; forget a finished one.

`build` turns the flag into isolator objects, failing with `IsolatorUnavailable` (agent
start-up stops with its message) when the machine cannot provide one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from butte.agent.containerizer.cgroupfs import Cgroups
    from butte.agent.effects import LaunchContainer

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


def scalar(spec: LaunchContainer, name: str) -> float | None:
    """The container's total of scalar resource ``name`` (None: not asked for). A value that
    is not a finite number >= 0 refuses the launch."""
    value = dict(spec.resources).get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or math.isnan(value) or math.isinf(value) or value < 0:
        raise LaunchRefused(f"invalid {name} resource: {value!r}")
    return float(value)


@dataclass(slots=True)
class IsolatorContext:
    """What isolator constructors get: the options, the loop and the cgroup layout (None
    when no cgroups isolator is used)."""

    options: IsolationOptions
    loop: asyncio.AbstractEventLoop | None
    cgroups: Cgroups | None


def _registry() -> dict[str, Callable[[IsolatorContext], Isolator]]:
    # Imported here: each module is small, and only the chosen ones matter.
    from butte.agent.containerizer.isolators import (
        cgroups_cpu,
        cgroups_mem,
        cgroups_pids,
        disk_du,
        filesystem_linux,
        gpu_nvidia,
        namespaces_pid,
        network_loopback,
        posix,
    )

    return {
        "posix/cpu": posix.PosixCpu,
        "posix/mem": posix.PosixMem,
        "cgroups/cpu": cgroups_cpu.CgroupsCpu,
        "cgroups/mem": cgroups_mem.CgroupsMem,
        "cgroups/pids": cgroups_pids.CgroupsPids,
        "disk/du": disk_du.DiskDu,
        "namespaces/pid": namespaces_pid.NamespacesPid,
        "filesystem/linux": filesystem_linux.FilesystemLinux,
        "network/loopback": network_loopback.NetworkLoopback,
        "gpu/nvidia": gpu_nvidia.NvidiaGpu,
    }


def known_isolators() -> list[str]:
    return sorted(_registry())


def parse_isolation(text: str) -> list[str]:
    """The isolator names of an --isolation value, checked against `ISOLATORS`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = _registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise IsolatorUnavailable(
            f"unknown isolator(s) {', '.join(unknown)}; this agent has: {', '.join(sorted(known))}"
        )
    if len(set(names)) != len(names):
        raise IsolatorUnavailable(f"an isolator is named twice in {text!r}")
    return names


def build(
    names: list[str], options: IsolationOptions, loop: asyncio.AbstractEventLoop | None
) -> tuple[list[Isolator], Cgroups | None]:
    """The isolators named (in order) and the cgroup layout they share; raises
    `IsolatorUnavailable` with the reason one cannot work here."""
    from butte.agent.containerizer import cgroupfs, linux

    registry = _registry()
    classes = [registry[n] for n in names]
    controllers = [c for cls in classes for c in getattr(cls, "controllers", ())]
    cgroups = None
    if controllers:
        if not linux.is_root():
            raise IsolatorUnavailable("cgroups isolators need the agent to run as root")
        try:
            cgroups = cgroupfs.detect(
                options.cgroups_hierarchy, options.cgroups_root, dict.fromkeys(controllers)
            )
        except cgroupfs.CgroupError as e:
            raise IsolatorUnavailable(str(e)) from None
    context = IsolatorContext(options, loop, cgroups)
    return [registry[n](context) for n in names], cgroups


CGROUP_ISOLATION = "cgroups/cpu,cgroups/mem,cgroups/pids"


def preferred_isolation(options: IsolationOptions | None = None) -> str:
    """What ``butte local`` gives its agents: the cgroup isolators where they work here,
    else the default."""
    try:
        build(parse_isolation(CGROUP_ISOLATION), options or IsolationOptions(), None)
    except IsolatorUnavailable:
        return DEFAULT_ISOLATION
    return CGROUP_ISOLATION
