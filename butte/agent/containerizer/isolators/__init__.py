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
from collections.abc import Callable
from typing import TYPE_CHECKING

from butte.agent.containerizer.isolators.base import (
    DEFAULT_ISOLATION,
    MB,
    MIN_MEMORY_MB,
    ContainerSetup,
    IsolationOptions,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
    LaunchRefused,
    Limitation,
    scalar,
)

if TYPE_CHECKING:
    from butte.agent.containerizer.cgroupfs import Cgroups

__all__ = [
    "ContainerSetup",
    "DEFAULT_ISOLATION",
    "IsolationOptions",
    "Isolator",
    "IsolatorContext",
    "IsolatorUnavailable",
    "LaunchRefused",
    "Limitation",
    "MB",
    "MIN_MEMORY_MB",
    "scalar",
    "CGROUP_ISOLATION",
    "build",
    "known_isolators",
    "parse_isolation",
    "preferred_isolation",
]


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
