"""``disk/du``: measures each container's sandbox every ``--container_disk_watermark_interval``
(the blocks its files use, like ``du -k -s``, walked in a worker thread) and reports it as
``disk_used_bytes``. With ``--enforce_container_disk_quota`` a container using more than its
``disk`` resource goes over its limit: ``REASON_CONTAINER_LIMITATION_DISK``. A container that
asked for no disk is measured but not limited."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from butte.agent.containerizer.isolators.base import (
    MB,
    ContainerSetup,
    Isolator,
    IsolatorContext,
    LaunchRefused,
    Limitation,
    LimitCallback,
    scalar,
)
from butte.agent.effects import LaunchContainer
from butte.core.flags import size_text

REASON = "REASON_CONTAINER_LIMITATION_DISK"
MAX_DISK_MB = float(1 << 40)


def disk_usage(path: str) -> int:
    """Bytes of the blocks used by everything under ``path`` (hard links counted once;
    symbolic links not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


@dataclass(slots=True)
class _Watched:
    sandbox: str
    limit: int | None  # bytes; None: not limited
    used: int | None = None
    handle: asyncio.TimerHandle | None = None
    measuring: bool = False


class DiskDu(Isolator):
    """See the module docstring."""

    name = "disk/du"

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        self._watched: dict[str, _Watched] = {}

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        disk = scalar(spec, "disk")
        if disk is not None and disk > MAX_DISK_MB:
            raise LaunchRefused(f"invalid disk resource: {disk}")
        # No disk (or disk 0, which Mesos drops as an empty resource) means no quota.
        limit = int(disk * MB) if disk else None
        self._watched[spec.container_id] = _Watched(spec.sandbox, limit)

    def started(self, container_id: str, on_limit: LimitCallback) -> None:
        watched = self._watched.get(container_id)
        if watched is not None and watched.handle is None:
            self._schedule(container_id, watched, on_limit)

    def recover(self, container_id: str, on_limit: LimitCallback) -> None:
        pass  # see `recover_spec`: the sandbox comes from the agent's records

    def recover_spec(self, spec: LaunchContainer, on_limit: LimitCallback) -> None:
        self.prepare(spec, ContainerSetup())
        self.started(spec.container_id, on_limit)

    def _schedule(self, container_id: str, watched: _Watched, on_limit: LimitCallback) -> None:
        loop = self.context.loop
        if loop is None:
            return
        interval = self.context.options.container_disk_watermark_interval
        watched.handle = loop.call_later(interval, self._measure, container_id, on_limit)

    def _measure(self, container_id: str, on_limit: LimitCallback) -> None:
        watched = self._watched.get(container_id)
        loop = self.context.loop
        if watched is None or loop is None or watched.measuring:
            return
        watched.measuring = True
        future = loop.run_in_executor(None, disk_usage, watched.sandbox)
        future.add_done_callback(lambda f: self._measured(container_id, watched, on_limit, f))

    def _measured(
        self, container_id: str, watched: _Watched, on_limit: LimitCallback, future: asyncio.Future
    ) -> None:
        watched.measuring = False
        if self._watched.get(container_id) is not watched:
            return  # cleaned up meanwhile
        if future.exception() is None:
            watched.used = future.result()
        limitation = self.limitation(container_id)
        if limitation is not None:
            on_limit(container_id, limitation)
        self._schedule(container_id, watched, on_limit)

    def limitation(self, container_id: str) -> Limitation | None:
        watched = self._watched.get(container_id)
        if (
            watched is None
            or not self.context.options.enforce_container_disk_quota
            or watched.limit is None
            or watched.used is None
            or watched.used <= watched.limit
        ):
            return None
        return Limitation(
            REASON,
            f"Disk usage ({size_text(watched.used)}) exceeds quota ({size_text(watched.limit)})",
        )

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        watched = self._watched.get(container_id)
        if watched is None:
            return
        if watched.limit is not None:
            statistics["disk_limit_bytes"] = watched.limit
        if watched.used is not None:
            statistics["disk_used_bytes"] = watched.used

    def cleanup(self, container_id: str) -> None:
        watched = self._watched.pop(container_id, None)
        if watched is not None and watched.handle is not None:
            watched.handle.cancel()
