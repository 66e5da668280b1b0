"""Persistent volumes on the agent: where they live and how a task's sandbox sees them.

A volume of role R with persistence id P lives in ``<work_dir>/volumes/roles/R/P`` (a ROOT
disk), ``<root>/volumes/roles/R/P`` (a PATH disk) or is the MOUNT disk's root itself. It is
created when the master's CHECKPOINT_RESOURCES first lists it, kept across tasks and agent
restarts, and removed (a MOUNT disk: emptied) when a DESTROY drops it from the total.

A task (or executor) holding the volume gets it at ``<sandbox>/<container_path>``: a bind
mount when the agent runs as root (read-only for mode RO), a symbolic link otherwise. Bind
mounts are undone when the container ends (`detach`), and `unmount_below` undoes any left
behind before a sandbox is removed, so removing a sandbox never reaches into a volume.

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


def attach(sandbox: str, mounts: Iterable[Mount], owner: tuple[int, int] | None = None) -> None:
    """Makes each volume visible at its container path in ``sandbox`` (created if need be):
    a bind mount as root, else a symbolic link. ``owner`` (uid, gid): the user the task runs
    as, who gets the volume's directory. Raises OSError when it cannot."""
    for host, container_path, mode in mounts:
        target = os.path.join(sandbox, container_path)
        if not os.path.realpath(target).startswith(os.path.realpath(sandbox) + os.sep):
            raise OSError(f"volume path {container_path!r} leaves the sandbox")
        os.makedirs(host, exist_ok=True)
        if owner is not None:
            os.chown(host, *owner)
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
