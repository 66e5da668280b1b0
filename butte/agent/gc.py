"""Sandbox garbage collection (Mesos' ``--gc_delay``, ``--gc_disk_headroom``,
``--disk_watch_interval``).

Every ``--disk_watch_interval`` the agent lists the sandboxes of its work dir
(`butte.agent.paths`) that belong to no live container, and removes those finished longer ago
than the allowed age: ``--gc_delay``, shortened as the work dir's file system fills, as in
Mesos, to ``gc_delay x max(0, 1 - gc_disk_headroom - used fraction)`` (so a full disk removes
every finished sandbox at once). A sandbox's finishing time is the newest modification time
of the sandbox and its stdout/stderr files; when its executor is removed the agent sets the
sandbox's own to that moment (`mark_finished`, as Mesos' agent does), so the delay counts
from the executor's end even for a task that wrote nothing for a long time. Empty
``executors/<id>`` and ``frameworks/<id>`` directories go with their last sandbox.

A sandbox is kept while its container is live (`live`): while the agent still has its
executor, which, as in Mesos, it keeps until the last updates of its tasks are acknowledged,
or while processes of it are left. One exception breaks a deadlock a full disk would
otherwise hold the agent in: while a checkpoint waits for space
(`butte.agent.checkpoint.CheckpointWriter.stalled`), only containers with processes left
keep their sandboxes, so the sandbox of one whose processes all ended goes as soon as its
age allows (at once, on a full disk), before its tasks' last updates are acknowledged.
Those updates cannot be acknowledged before they are checkpointed, and a task that filled
the disk (and ended, or was killed for it by ``disk/du``) holds the space their checkpoint
needs in its sandbox.

`max_age`, `select` and `live` are pure; `scan` and `remove` touch the file system (the
shell runs them in a worker thread).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from butte.agent import paths, volumes


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A sandbox on disk: its path, container id, and when it last changed."""

    path: str
    container_id: str
    changed: float


def max_age(gc_delay: float, headroom: float, used_fraction: float) -> float:
    """How old a finished sandbox may get (Mesos' formula; see the module docstring)."""
    return gc_delay * max(0.0, 1.0 - headroom - used_fraction)


def select(sandboxes: list[Sandbox], live: set[str], now: float, age: float) -> list[Sandbox]:
    """The sandboxes to remove: not live and unchanged for longer than ``age``."""
    return [s for s in sandboxes if s.container_id not in live and now - s.changed > age]


def live(executors: Iterable[str], running: Iterable[str], checkpoint_stalled: bool) -> set[str]:
    """The containers whose sandboxes are kept (see the module docstring): those of the
    agent's ``executors`` and those with processes ``running`` (container ids); while a
    checkpoint waits for space (``checkpoint_stalled``), only the running ones."""
    kept = set(running)
    if not checkpoint_stalled:
        kept.update(executors)
    return kept


def mark_finished(sandbox: str) -> None:
    """The sandbox's executor is done now: its modification time says so (see the module
    docstring); a sandbox already gone is left alone."""
    with contextlib.suppress(OSError):
        os.utime(sandbox)


def _changed(path: str) -> float:
    newest = 0.0
    for name in ("", paths.STDOUT, paths.STDERR):
        with contextlib.suppress(OSError):
            newest = max(newest, os.lstat(os.path.join(path, name) if name else path).st_mtime)
    return newest


def scan(work_dir: str) -> list[Sandbox]:
    """Every sandbox under ``<work_dir>/slaves``."""
    found: list[Sandbox] = []
    root = paths.slaves_root(work_dir)
    pattern = ("*", "frameworks", "*", "executors", "*", "runs")
    for runs in _walk(root, pattern):
        with contextlib.suppress(OSError):
            for entry in os.scandir(runs):
                if entry.name != paths.LATEST and entry.is_dir(follow_symlinks=False):
                    found.append(Sandbox(entry.path, entry.name, _changed(entry.path)))
    return found


def _walk(root: str, pattern: tuple[str, ...]) -> list[str]:
    level = [root]
    for part in pattern:
        following: list[str] = []
        for directory in level:
            if part != "*":
                candidate = os.path.join(directory, part)
                if os.path.isdir(candidate) and not os.path.islink(candidate):
                    following.append(candidate)
                continue
            with contextlib.suppress(OSError):
                following += [
                    e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)
                ]
        level = following
    return level


def used_fraction(work_dir: str) -> float:
    """How full the work dir's file system is (0..1), counted as Mesos does: blocks in use
    over all blocks, the blocks reserved for root counting as free (the agent runs as root;
    with ``f_bavail`` a file system with a large reservation would look fuller and have its
    sandboxes collected far sooner than under Mesos)."""
    try:
        st = os.statvfs(work_dir)
    except OSError:
        return 0.0
    if not st.f_blocks:
        return 0.0
    return (st.f_blocks - st.f_bfree) / st.f_blocks


def remove(sandbox: Sandbox, agent_id: str | None = None) -> None:
    """Removes a sandbox, its ``latest`` link if it names it, and the executor's and the
    framework's directories once empty; and those of an earlier agent (not ``agent_id``,
    this one) once empty too, as Mesos collects an old agent's directory."""
    volumes.unmount_below(sandbox.path)  # a volume bind-mounted there must not be emptied
    shutil.rmtree(sandbox.path, ignore_errors=True)
    runs = os.path.dirname(sandbox.path)
    latest = os.path.join(runs, paths.LATEST)
    with contextlib.suppress(OSError):
        if os.readlink(latest) == sandbox.container_id:
            os.unlink(latest)
    executor = os.path.dirname(runs)
    framework = os.path.dirname(os.path.dirname(executor))
    levels = [runs, executor, os.path.dirname(executor), framework]
    agent = os.path.dirname(os.path.dirname(framework))
    if os.path.basename(agent) != agent_id:
        levels += [os.path.dirname(framework), agent]
    for directory in levels:
        try:
            os.rmdir(directory)
        except OSError:
            return  # not empty: what is above it is not either
