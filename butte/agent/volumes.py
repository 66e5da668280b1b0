"""Volumes on the agent: where persistent volumes live, and how a task's sandbox sees them
and the ContainerInfo.volumes of a container without an image.

A volume of role R with persistence id P lives in ``<work_dir>/volumes/roles/R/P`` (a ROOT
disk), ``<root>/volumes/roles/R/P`` (a PATH disk) or is the MOUNT disk's root itself. It is
created when the master's CHECKPOINT_RESOURCES first lists it, kept across tasks and agent
restarts, and removed (a MOUNT disk: emptied) when a DESTROY drops it from the total.

A task (or executor) holding the volume gets it at ``<sandbox>/<container_path>``: a bind
mount when the agent runs as root (read-only for mode RO), a symbolic link otherwise.

A container without an image sees its ContainerInfo.volumes (each with a relative container
path) the same way (`container_volumes`): a SANDBOX_PATH of its own sandbox, or, for a task
group member, of its executor's (PARENT: Marathon's ephemeral pod volumes), made as a
directory when missing; an existing host path under ``--allowed_host_path_volumes``
(`attach_host_paths`).

Bind mounts are undone when the container ends (`detach`), and
`unmount_below` undoes any left behind before a sandbox is removed, so removing a sandbox
never reaches into a volume.

The path functions are pure (the agent core uses them); the rest is the shell's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from butte.core.resources import Disk, ResourceError, Resources

log = logging.getLogger(__name__)

# (host path, path relative to the sandbox, "RW" | "RO")
Mount = tuple[str, str, str]

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2


def volume_path(work_dir: str, role: str, disk: Disk) -> str:
    """The host directory of a persistent volume."""
    if disk.source == "MOUNT" and disk.root:
        return disk.root
    base = disk.root if disk.source == "PATH" and disk.root else work_dir
    return os.path.join(base, "volumes", "roles", role, disk.persistence_id or "")


def _holds_volume(resources: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any resource of a JSON list names a persistence (False: it holds no volume,
    with no parsing; every launch asks, and plain tasks have none)."""
    for raw in resources:
        disk = raw.get("disk") if isinstance(raw, Mapping) else None
        if isinstance(disk, Mapping) and disk.get("persistence") is not None:
            return True
    return False


def volumes(work_dir: str, resources: Iterable[Mapping[str, Any]]) -> dict[str, Mount]:
    """Host path -> mount of every persistent volume in a JSON resource list (resources
    that do not parse hold no volume for this purpose: the master checked them)."""
    resources = list(resources)
    if not _holds_volume(resources):
        return {}
    try:
        res = Resources.from_json(resources)
    except ResourceError:
        return {}
    out: dict[str, Mount] = {}
    for (_, stack, disk), _ in res.items():
        if disk is None or disk.persistence_id is None:
            continue
        role = stack[-1].role if stack else "*"
        host = volume_path(work_dir, role, disk)
        out[host] = (host, disk.container_path or disk.persistence_id, disk.mode)
    return out


def mounts_for(work_dir: str, resources: Iterable[Mapping[str, Any]]) -> tuple[Mount, ...]:
    """What a container holding ``resources`` gets in its sandbox, in path order."""
    return tuple(sorted(volumes(work_dir, resources).values(), key=lambda m: m[1]))


def _source(volume: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, path) of a checked Volume's source: ``SELF`` or ``PARENT`` (a sandbox path),
    or ``HOST`` (an absolute host path; a relative legacy ``host_path`` is a path in the
    container's own sandbox, as in Mesos)."""
    source = volume.get("source")
    if source is not None and source.get("type") == "SANDBOX_PATH":
        sandbox_path = source.get("sandbox_path") or {}
        return str(sandbox_path.get("type", "SELF")), str(sandbox_path["path"])
    path = str(source["host_path"]["path"] if source is not None else volume["host_path"])
    return ("HOST", path) if path.startswith("/") else ("SELF", path)


def container_volumes(
    executor_container: Mapping[str, Any] | None,
    members: Iterable[tuple[str, Mapping[str, Any] | None]],
    sandbox: str,
) -> tuple[tuple[Mount, ...], tuple[Mount, ...]]:
    """The ContainerInfo.volumes of a container without an image (checked at launch by
    `butte.core.container_info.container_problem`: relative container paths), as
    (sandbox mounts, host mounts) with paths relative to the executor's ``sandbox``: the
    executor's own volumes at its sandbox, and each task group member's (``members``: task
    id and container) at ``tasks/<task id>``, where a ``PARENT`` sandbox path is the
    executor's sandbox. Sandbox mounts are made as directories when missing; host mounts
    must exist."""
    in_sandbox: list[Mount] = []
    on_host: list[Mount] = []
    places = [("", executor_container)]
    places += [(os.path.join("tasks", task_id), c) for task_id, c in members]
    for place, container in places:
        if not container or container.get("type", "MESOS") != "MESOS":
            continue  # none, or a Docker container's (the Docker daemon mounts those)
        for volume in container.get("volumes") or ():
            kind, path = _source(volume)
            target = os.path.normpath(os.path.join(place, str(volume["container_path"])))
            mode = str(volume.get("mode", "RW"))
            if kind == "HOST":
                on_host.append((os.path.normpath(path), target, mode))
                continue
            base = sandbox if kind == "PARENT" else os.path.join(sandbox, place)
            in_sandbox.append((os.path.normpath(os.path.join(base, path)), target, mode))
    return tuple(in_sandbox), tuple(on_host)


# -- the shell's side ---------------------------------------------------------------------------


def mount_roots(work_dir: str, resources: Iterable[Mapping[str, Any]]) -> set[str]:
    """Host paths of the volumes that are whole MOUNT disks (emptied, never removed)."""
    resources = list(resources)
    if not _holds_volume(resources):
        return set()
    try:
        res = Resources.from_json(resources)
    except ResourceError:
        return set()
    return {
        volume_path(work_dir, k[1][-1].role if k[1] else "*", k[2])
        for k, _ in res.items()
        if k[2] is not None and k[2].persistence_id is not None and k[2].source == "MOUNT"
    }


def sync(
    work_dir: str,
    total: Iterable[Mapping[str, Any]],
    removed: Iterable[str],
    emptied: Iterable[str] = (),
) -> None:
    """Creates the directory of every volume in ``total``, removes those in ``removed``
    and empties those in ``emptied`` (MOUNT disks: their root stays)."""
    keep = volumes(work_dir, total)
    for host in keep:
        os.makedirs(host, exist_ok=True)
    for host in removed:
        if host in keep or not os.path.isdir(host):
            continue
        unmount_below(host)
        _remove(host)
    for host in emptied:
        if host in keep or not os.path.isdir(host):
            continue
        unmount_below(host)
        for entry in os.listdir(host):
            _remove(os.path.join(host, entry))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def attach(
    sandbox: str,
    mounts: Iterable[Mount],
    owner: tuple[int, int] | None = None,
    *,
    sources_in_sandbox: bool = False,
) -> None:
    """Makes each volume visible at its container path in ``sandbox`` (created if need be):
    a bind mount as root, else a symbolic link. ``owner`` (uid, gid): the user the task runs
    as, who gets the volume's directory. ``sources_in_sandbox``: the sources are sandbox
    paths (a container's SANDBOX_PATH volumes), which must not lead out of it (a fetched
    link could). Raises OSError when it cannot."""
    inside = os.path.realpath(sandbox) + os.sep
    for host, container_path, mode in mounts:
        target = os.path.join(sandbox, container_path)
        if not os.path.realpath(target).startswith(inside):
            raise OSError(f"volume path {container_path!r} leaves the sandbox")
        if sources_in_sandbox and not os.path.realpath(host).startswith(inside):
            raise OSError(f"volume source {host!r} leaves the sandbox")
        os.makedirs(host, exist_ok=True)
        if owner is not None:
            os.chown(host, *owner)
        _bind(host, target, mode)


def attach_host_paths(sandbox: str, mounts: Iterable[Mount], allowed: Iterable[str]) -> None:
    """Mounts HOST_PATH volumes of containers without an image at their paths in
    ``sandbox``: each host path must exist and lie under one of the ``allowed`` prefixes
    (``--allowed_host_path_volumes``); it is neither created nor given to the task's user.
    Raises OSError naming the one that cannot be."""
    prefixes = [os.path.normpath(p) for p in allowed]
    inside = os.path.realpath(sandbox) + os.sep
    for host, container_path, mode in mounts:
        real = os.path.realpath(host)
        if not any(real == p or real.startswith(p.rstrip("/") + "/") for p in prefixes):
            shown = ", ".join(prefixes) or "none"
            raise OSError(
                f"host path {host!r} is not allowed (--allowed_host_path_volumes: {shown})"
            )
        if not os.path.isdir(real):
            raise OSError(f"host path {host!r} is not a directory on this agent")
        target = os.path.join(sandbox, container_path)
        if not os.path.realpath(target).startswith(inside):
            raise OSError(f"volume path {container_path!r} leaves the sandbox")
        _bind(real, target, mode)


def _bind(host: str, target: str, mode: str) -> None:
    """``host`` seen at ``target``: a bind mount as root (read-only for RO), else a link."""
    if os.path.realpath(host) == os.path.realpath(target):
        return  # a sandbox directory mounted where it is already
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.geteuid() == 0:
        os.makedirs(target, exist_ok=True)
        _mount(host, target, MS_BIND)
        if mode == "RO":
            _mount(host, target, MS_BIND | MS_REMOUNT | MS_RDONLY)
    elif not os.path.islink(target):
        os.symlink(host, target)


def detach(sandbox: str, mounts: Iterable[Mount]) -> None:
    """Undoes `attach`'s bind mounts (links are harmless and stay)."""
    for _, container_path, _ in mounts:
        # (os.path.ismount cannot see a bind mount within one file system: mountinfo can)
        unmount_below(os.path.join(sandbox, container_path))


def unmount_below(path: str) -> None:
    """Unmounts every mount point at or under ``path`` (deepest first)."""
    real = os.path.realpath(path)
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == real or point.startswith(real + os.sep):
                    points.append(point)
    except OSError:
        return
    for point in sorted(points, key=len, reverse=True):
        _umount(point)


_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _mount(source: str, target: str, flags: int) -> None:
    if _lib().mount(source.encode(), target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"bind mount of {source} at {target}: {os.strerror(errno)}")


def _umount(target: str) -> None:
    if _lib().umount2(target.encode(), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        log.warning("could not unmount %s: %s", target, os.strerror(errno))
