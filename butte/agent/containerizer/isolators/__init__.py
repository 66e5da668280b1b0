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

`parse_isolation` checks the flag's names (agent start-up stops with exit status 2 on an
unknown one): besides butte's isolators it takes Mesos' other names of them (`ALIASES`),
Mesos isolators whose work butte always does (`ALWAYS_ON`: nothing is built for them) and
`CGROUPS_ALL` (and, as a whole value, Mesos' deprecated `process` and `cgroups`: `DEPRECATED`);
a Mesos isolator butte lacks (`MESOS_ONLY`) is refused as such, not as a
typo. `build` turns the names into isolator objects, failing with `IsolatorUnavailable`
(agent start-up stops with its message, exit status 1) when the machine cannot provide one.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
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

log = logging.getLogger("butte.agent")

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
    "ALIASES",
    "ALWAYS_ON",
    "CGROUP_ISOLATION",
    "CGROUPS_ALL",
    "MESOS_ONLY",
    "build",
    "expand_cgroups_all",
    "known_isolators",
    "parse_isolation",
    "preferred_isolation",
]


def _registry() -> dict[str, type[Isolator]]:
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


# Mesos' other names of isolators butte has: the same isolator, named by its current name.
ALIASES = {"posix/disk": "disk/du"}  # Mesos' name of disk/du before 1.0, still accepted there

# Mesos isolators whose work butte does whatever --isolation says: accepted, and nothing is
# built for them (the reason is what butte does instead).
ALWAYS_ON = {
    "filesystem/posix": "tasks share the host's file system (no filesystem/linux)",
    "environment_secret": "VALUE secrets always reach the task's environment",
    "volume/sandbox_path": "SANDBOX_PATH volumes of tasks with an image are always mounted",
    "volume/host_path": "HOST_PATH volumes of tasks with an image are always mounted "
    "(under --allowed_host_path_volumes)",
    "docker/runtime": "Docker images (--image_providers=docker) always get their "
    "Entrypoint, Cmd, Env, WorkingDir and User",
}

# Every cgroups/* isolator butte has that this machine can provide (Mesos: every cgroup
# subsystem it has); expanded by `build`, which knows the machine.
CGROUPS_ALL = "cgroups/all"

# Isolators of Mesos (1.11) that butte does not implement: refused with that said, so an
# operator carrying a Mesos agent's flags over is not left to look for a typo.
MESOS_ONLY = frozenset(
    {
        "appc/runtime",
        "cgroups/blkio",
        "cgroups/cpuset",
        "cgroups/devices",
        "cgroups/hugetlb",
        "cgroups/net_cls",
        "cgroups/net_prio",
        "cgroups/perf_event",
        "disk/xfs",
        "docker/volume",
        "filesystem/shared",
        "filesystem/windows",
        "linux/capabilities",
        "linux/devices",
        "linux/nnp",
        "linux/seccomp",
        "namespaces/ipc",
        "network/cni",
        "network/port_mapping",
        "network/ports",
        "posix/rlimits",
        "volume/csi",
        "volume/image",
        "volume/secret",
        "windows/cpu",
        "windows/mem",
    }
)


# Whole --isolation values of old Mesos versions, and what they stand for.
DEPRECATED = {"process": "posix/cpu,posix/mem", "cgroups": "cgroups/cpu,cgroups/mem"}


def known_isolators() -> list[str]:
    """Every name --isolation accepts: butte's isolators, `ALIASES`, `ALWAYS_ON` and
    `CGROUPS_ALL`."""
    return sorted([*_registry(), *ALIASES, *ALWAYS_ON, CGROUPS_ALL])


def parse_isolation(text: str) -> list[str]:
    """The isolators an --isolation value asks for, in its order: an alias as the name of
    its isolator (named with it too, it counts once, where it comes first), `ALWAYS_ON`
    names left out (nothing to build), `CGROUPS_ALL` kept for `build`. Raises
    `IsolatorUnavailable` for an unknown name (with the names known), a Mesos isolator
    butte does not implement, a name given twice, or two filesystem isolators."""
    if text.strip() in DEPRECATED:
        # Mesos' old whole-flag values, taken with a warning as Mesos takes them.
        replacement = DEPRECATED[text.strip()]
        log.warning(
            "--isolation=%s is deprecated, please update your flags to --isolation=%s",
            text.strip(),
            replacement,
        )
        text = replacement
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = _registry()
    unknown = [
        n
        for n in names
        if n not in known and n not in ALIASES and n not in ALWAYS_ON and n != CGROUPS_ALL
    ]
    typos = [n for n in unknown if n not in MESOS_ONLY]
    problems = []
    if typos:
        accepted = known_isolators()
        close = [m for n in typos for m in difflib.get_close_matches(n, accepted, 1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(
            f"unknown isolator(s) {', '.join(typos)}{hint}; this agent has: {', '.join(accepted)}"
        )
    problems += [
        f"{n} is a Mesos isolator that butte does not implement" for n in unknown if n in MESOS_ONLY
    ]
    if problems:
        raise IsolatorUnavailable("; ".join(problems))
    if len(set(names)) != len(names):
        raise IsolatorUnavailable(f"an isolator is named twice in {text!r}")
    filesystems = [n for n in names if n.startswith("filesystem/")]
    if len(filesystems) > 1:
        # Mesos refuses this too: one isolator decides what a task's file system is.
        raise IsolatorUnavailable(
            f"only one filesystem isolator can be used, not {' and '.join(filesystems)}"
        )
    canonical = [ALIASES.get(n, n) for n in names if n not in ALWAYS_ON]
    return list(dict.fromkeys(canonical))


def build(
    names: list[str], options: IsolationOptions, loop: asyncio.AbstractEventLoop | None
) -> tuple[list[Isolator], Cgroups | None]:
    """The isolators named (in order; `CGROUPS_ALL` expanded by `expand_cgroups_all`) and
    the cgroup layout they share; raises `IsolatorUnavailable` with the reason one cannot
    work here."""
    from butte.agent.containerizer import cgroupfs, linux

    registry = _registry()
    names = expand_cgroups_all(names, options)
    classes = [registry[n] for n in names]
    controllers = [c for cls in classes for c in cls.controllers]
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


def expand_cgroups_all(names: list[str], options: IsolationOptions) -> list[str]:
    """``names`` with `CGROUPS_ALL` replaced, where it stands, by every cgroups/* isolator
    of butte that is not named on its own and whose controllers this machine has (as Mesos
    takes every cgroup subsystem the machine has). Raises `IsolatorUnavailable` when none
    can work and none is named on its own; one named on its own must work (`build`)."""
    if CGROUPS_ALL not in names:
        return names
    from butte.agent.containerizer import cgroupfs, linux

    registry = _registry()
    candidates = [n for n in sorted(registry) if n.startswith("cgroups/") and n not in names]
    usable: list[str] = []
    missing: list[str] = []
    if not linux.is_root():
        missing.append("cgroups isolators need the agent to run as root")
    else:
        for name in candidates:
            try:
                cgroupfs.detect(
                    options.cgroups_hierarchy, options.cgroups_root, registry[name].controllers
                )
            except cgroupfs.CgroupError as e:
                missing.append(f"{name}: {e}")
            else:
                usable.append(name)
    named = [n for n in names if n.startswith("cgroups/") and n != CGROUPS_ALL]
    if not usable and not named:
        raise IsolatorUnavailable(
            f"{CGROUPS_ALL}: no cgroup isolator can work here ({'; '.join(missing)})"
        )
    log.info(
        "%s: %s%s",
        CGROUPS_ALL,
        ", ".join(usable) or "nothing more than the cgroups/* isolators named",
        f" (left out: {'; '.join(missing)})" if missing else "",
    )
    at = names.index(CGROUPS_ALL)
    return [*names[:at], *usable, *names[at + 1 :]]


CGROUP_ISOLATION = "cgroups/cpu,cgroups/mem,cgroups/pids"


def preferred_isolation(options: IsolationOptions | None = None) -> str:
    """What ``butte local`` gives its agents: the cgroup isolators where they work here,
    else the default."""
    try:
        build(parse_isolation(CGROUP_ISOLATION), options or IsolationOptions(), None)
    except IsolatorUnavailable:
        return DEFAULT_ISOLATION
    return CGROUP_ISOLATION
