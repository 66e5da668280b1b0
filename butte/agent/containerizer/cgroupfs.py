"""The cgroup file system, v1 and v2, behind one small interface (`Cgroups`).

Which version: `detect` looks at ``--cgroups_hierarchy`` (default ``/sys/fs/cgroup``). If it
holds ``cgroup.controllers`` it is a v2 (unified) hierarchy; otherwise each v1 controller is a
directory of its own under it (``<hierarchy>/memory``, ``<hierarchy>/cpu``, ...). Everything
is plain file work relative to that directory, so unit tests run the same code on a fake
tree of ordinary files.

Where: a container's group is ``<controller mount>/<cgroups_root>/<container id>`` in every v1
hierarchy it uses (`butte.agent.paths.cgroup_dir`), or ``<hierarchy>/<cgroups_root>/<container
id>`` in v2, where the controllers it needs are enabled in ``cgroup.subtree_control`` of the
root and of ``<cgroups_root>``.

Killing: v1 freezes the container's freezer group, SIGKILLs every process listed in it and
thaws it (no process can fork meanwhile, so none escapes); v2 writes ``1`` to ``cgroup.kill``.

Watching: v2 event files (``memory.events``) are watched for modification with inotify
(`FileWatch`), which the kernel reports for them and a plain file of a fake tree reports on
each write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from butte.agent import paths

DEFAULT_HIERARCHY = "/sys/fs/cgroup"
# The freezer is always used with v1: it is what makes a kill reach every process at once.
FREEZER = "freezer"
# A file each v1 controller's hierarchy root has (proof that it is mounted there).
_V1_MARKERS = {
    "memory": "memory.limit_in_bytes",
    "cpu": "cpu.shares",
    "cpuacct": "cpuacct.usage",
    "pids": "cgroup.procs",
    "freezer": "cgroup.procs",
    "devices": "devices.allow",
}
# v2 names of the controllers (cpuacct is part of cpu; the freezer is built in).
_V2_NAMES = {"memory": "memory", "cpu": "cpu", "cpuacct": "cpu", "pids": "pids"}
# v1 controllers that v2 does without one: device access is a BPF program on the group
# (`butte.agent.containerizer.devicefilter`).
_V2_BUILT_IN = {"devices"}


class CgroupError(Exception):
    """The cgroup file system cannot do what was asked (missing controller, no permission)."""


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, value: str) -> None:
    # Unbuffered: each write(2) is one cgroup operation, and errors surface here.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_keyed(path: str) -> dict[str, int]:
    """A ``key value`` per line file (memory.stat, cpu.stat, memory.events, oom_control)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in read_text(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value.strip())
    return out


def read_int(path: str) -> int | None:
    """An integer file (``max`` and absent files read as None)."""
    try:
        text = read_text(path).strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


# inotify(7) constants (linux/inotify.h); IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and
# O_CLOEXEC.
IN_MODIFY = 0x2
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)


class FileWatch:
    """Modifications of cgroup files, through one inotify instance: the kernel tells of a
    change of a v2 event file (``memory.events``, ``pids.events``, ``cgroup.events``) as a
    file modification, and plain files (the unit tests' fake trees) do on each write.
    ``fd`` is what an event loop watches; `add` and `remove` watch and forget a file;
    `read` drains what is ready."""

    def __init__(self) -> None:
        from butte.agent.containerizer import linux

        self._libc = linux.libc()
        self._checked = linux.checked
        self.fd: int = self._checked(
            self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1"
        )

    def add(self, path: str) -> int:
        """Watches ``path`` for modification; its watch descriptor."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY)
        return int(self._checked(wd, f"inotify_add_watch {path}"))

    def remove(self, wd: int) -> None:
        """Stops watching (nothing happens if the kernel dropped the watch already)."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int]]:
        """The (watch descriptor, mask) of every event ready, without waiting: `IN_MODIFY`,
        `IN_IGNORED` (the kernel dropped the watch: the file is gone) or `IN_Q_OVERFLOW`
        (wd -1: events were lost)."""
        events = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            offset = 0
            while offset + _INOTIFY_EVENT.size <= len(data):
                wd, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                events.append((wd, mask))
                offset += _INOTIFY_EVENT.size + length
        return events

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass(frozen=True, slots=True)
class Cgroups:
    """One cgroup layout: version, where each controller's hierarchy is, and the root of
    butte's groups (``--cgroups_root``)."""

    version: int
    hierarchy: str
    root: str
    # v1: controller -> its mount point. v2: every available controller -> the hierarchy.
    mounts: dict[str, str]

    def has(self, controller: str) -> bool:
        return controller in self.mounts

    def controller_dir(self, controller: str, container_id: str) -> str:
        """The container's group directory for ``controller``."""
        return paths.cgroup_dir(self.mounts[controller], self.root, container_id)

    def root_dir(self, controller: str) -> str:
        return paths.cgroup_dir(self.mounts[controller], self.root)

    def container_dirs(self, controllers: Iterable[str], container_id: str) -> list[str]:
        """Every distinct group directory of the container (v2: just one)."""
        seen: list[str] = []
        for controller in self._with_freezer(controllers):
            d = self.controller_dir(controller, container_id)
            if d not in seen:
                seen.append(d)
        return seen

    def _with_freezer(self, controllers: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(controllers))
        if self.version == 1 and FREEZER not in wanted:
            wanted.append(FREEZER)
        if self.version == 2 and not wanted:
            wanted = ["unified"]
        return wanted

    # -- lifecycle -----------------------------------------------------------------------------

    def create(self, controllers: Iterable[str], container_id: str) -> list[str]:
        """Creates the container's groups; returns their ``cgroup.procs`` files (the first
        process of the container writes itself into each before it runs anything)."""
        controllers = list(controllers)
        if self.version == 2:
            self._enable_v2(controllers)
        procs = []
        for d in self.container_dirs(controllers, container_id):
            try:
                os.mkdir(d)
            except FileNotFoundError:  # the first container: the root is made too
                os.makedirs(d, exist_ok=True)
            except FileExistsError:
                pass
            procs.append(os.path.join(d, "cgroup.procs"))
        return procs

    def interface_dir(self, controller: str) -> str:
        """A group that shows ``controller``'s interface files as a container's group will,
        for start-up checks of what the kernel provides: v1 the controller hierarchy's root
        (it has them all); v2 butte's root group, created with the controller enabled down
        to it if need be (as a first launch would: a v2 hierarchy's own root shows none of
        them). Raises `CgroupError` when that cannot be done."""
        if self.version == 1:
            return self.mounts[controller]
        try:
            self._enable_v2([controller])
        except OSError as e:
            raise CgroupError(f"cannot create {self.root_dir(controller)}: {e}") from None
        return self.root_dir(controller)

    def _enable_v2(self, controllers: list[str]) -> None:
        names = sorted({_V2_NAMES[c] for c in controllers if c in _V2_NAMES})
        if not names:
            return
        # Controllers reach a group only through every ancestor's subtree_control.
        parent = self.hierarchy
        for part in [p for p in self.root.split("/") if p]:
            os.makedirs(os.path.join(parent, part), exist_ok=True)
            self._subtree_enable(parent, names)
            parent = os.path.join(parent, part)
        self._subtree_enable(parent, names)

    @staticmethod
    def _subtree_enable(directory: str, names: list[str]) -> None:
        control = os.path.join(directory, "cgroup.subtree_control")
        try:
            enabled = set(read_text(control).split())
        except OSError as e:
            raise CgroupError(f"cannot read {control}: {e}") from None
        missing = [n for n in names if n not in enabled]
        if missing:
            try:
                write_text(control, " ".join(f"+{n}" for n in missing))
            except OSError as e:
                raise CgroupError(f"cannot enable {missing} in {control}: {e}") from None

    def pids(self, controllers: Iterable[str], container_id: str) -> set[int]:
        """Every process in any of the container's groups, or in a group a task made below
        one of them (as Mesos' `cgroups::destroy`, nested groups are the container's)."""
        found: set[int] = set()
        for top in self.container_dirs(controllers, container_id):
            for d in _tree(top):
                with contextlib.suppress(OSError):
                    procs = read_text(os.path.join(d, "cgroup.procs"))
                    found.update(int(p) for p in procs.split())
        return found

    def kill(self, controllers: Iterable[str], container_id: str) -> None:
        """SIGKILLs every process of the container at once (see the module docstring)."""
        if self.version == 2:
            d = self.controller_dir(next(iter(self._with_freezer(controllers))), container_id)
            kill_file = os.path.join(d, "cgroup.kill")
            if os.path.exists(kill_file):
                with contextlib.suppress(OSError):
                    write_text(kill_file, "1")
                    return
            self._kill_listed(controllers, container_id)
            return
        freezer = self.controller_dir(FREEZER, container_id)
        state = os.path.join(freezer, "freezer.state")
        frozen = False
        with contextlib.suppress(OSError):
            write_text(state, "FROZEN")
            frozen = self._wait_frozen(state)
        self._kill_listed(controllers, container_id)
        if frozen or os.path.exists(state):
            with contextlib.suppress(OSError):
                write_text(state, "THAWED")

    def thaw(self, container_id: str) -> None:
        """Thaws the container's freezer group (v1): an agent that died between freezing
        and thawing in `kill` left it frozen."""
        if self.version == 1:
            state = os.path.join(self.controller_dir(FREEZER, container_id), "freezer.state")
            with contextlib.suppress(OSError):
                if read_text(state).strip() != "THAWED":
                    write_text(state, "THAWED")

    @staticmethod
    def _wait_frozen(state: str, timeout: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if read_text(state).strip() == "FROZEN":
                    return True
            time.sleep(0.001)
        return False

    def _kill_listed(self, controllers: Iterable[str], container_id: str) -> None:
        for pid in self.pids(controllers, container_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self, controllers: Iterable[str], container_id: str, timeout: float = 5.0) -> bool:
        """Kills what is left in the container's groups and removes them (a group can only
        go once its last process has been reaped). False if one could not be removed."""
        controllers = list(controllers)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not self.remove_once(controllers, container_id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def remove_once(self, controllers: Iterable[str], container_id: str) -> bool:
        """One attempt of `destroy` that never waits: True once every group of the container
        is gone; else what is left in them has been killed, to be tried again later."""
        controllers = list(controllers)
        # Removing first: the usual group is empty by now, and that is all it costs. Groups a
        # task made below its own go first, deepest first (a group with children cannot go).
        left = [d for d in self.container_dirs(controllers, container_id) if not _rmdir_tree(d)]
        if not left:
            return True
        if self.pids(controllers, container_id):
            self.kill(controllers, container_id)
        return False

    def containers(self) -> set[str]:
        """Container ids with a group under the root in any hierarchy (for recovery)."""
        found: set[str] = set()
        for controller in self.mounts:
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.root_dir(controller)):
                    if entry.is_dir(follow_symlinks=False):
                        found.add(entry.name)
        return found


def _tree(top: str) -> list[str]:
    """``top`` and every group below it, parents before children."""
    out = [top]
    for d in out:  # grows while it is walked: breadth first
        with contextlib.suppress(OSError):
            out.extend(e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False))
    return out


def _rmdir_tree(top: str) -> bool:
    """Removes ``top`` and the groups below it, children first; False if one is busy."""
    if _rmdir(top):
        return True
    removed = [_rmdir(d) for d in reversed(_tree(top)[1:])]
    return all(removed) and _rmdir(top)


def _rmdir(directory: str) -> bool:
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def detect(hierarchy: str, root: str, wanted: Iterable[str]) -> Cgroups:
    """The layout under ``hierarchy`` (see the module docstring). Raises `CgroupError` naming
    every controller of ``wanted`` the machine lacks."""
    wanted = list(wanted)
    root = root.strip("/")
    if not root or ".." in root.split("/"):
        raise CgroupError(f"--cgroups_root must be a relative path, got {root!r}")
    controllers_file = os.path.join(hierarchy, "cgroup.controllers")
    if os.path.isfile(controllers_file):
        available = set(read_text(controllers_file).split())
        missing = [
            c for c in wanted if c not in _V2_BUILT_IN and _V2_NAMES.get(c, c) not in available
        ]
        if missing:
            raise CgroupError(
                f"cgroup v2 hierarchy {hierarchy} lacks controller(s) {', '.join(missing)} "
                f"(it has: {' '.join(sorted(available)) or 'none'})"
            )
        return Cgroups(2, hierarchy, root, {c: hierarchy for c in [*wanted, "unified"]})
    mounts: dict[str, str] = {}
    missing = []
    for controller in dict.fromkeys([*wanted, FREEZER]):
        mount = os.path.join(hierarchy, controller)
        marker = _V1_MARKERS.get(controller, "cgroup.procs")
        if os.path.isfile(os.path.join(mount, marker)):
            mounts[controller] = mount
        else:
            missing.append(controller)
    if missing:
        raise CgroupError(
            f"no cgroup v1 hierarchy for {', '.join(missing)} under {hierarchy} "
            "(and it is not a cgroup v2 hierarchy)"
        )
    return Cgroups(1, hierarchy, root, mounts)
