"""``cgroups/mem``: a hard memory limit from the container's ``mem`` (at least 32 MB, like
Mesos), with ``--cgroups_limit_swap`` on memory+swap too. Going over it is seen in the
kernel's OOM counters, never guessed from an exit status: ``oom_kill`` in
``memory.oom_control`` (v1; an eventfd registered through ``cgroup.event_control`` reports it
at once) or in ``memory.events`` (v2, read when the container's tasks end). The limitation
is ``REASON_CONTAINER_LIMITATION_MEMORY`` with the limit and the peak usage."""

from __future__ import annotations

import contextlib
import os

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators.base import (
    MB,
    MIN_MEMORY_MB,
    ContainerSetup,
    Isolator,
    IsolatorContext,
    LaunchRefused,
    Limitation,
    LimitCallback,
    scalar,
)
from butte.agent.effects import LaunchContainer

REASON = "REASON_CONTAINER_LIMITATION_MEMORY"
MAX_MEMORY_MB = float(1 << 40)  # 1 EB: anything above is a mistake, not a limit


class CgroupsMem(Isolator):
    """See the module docstring."""

    name = "cgroups/mem"
    controllers = ("memory",)

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        # container id -> (eventfd, memory.oom_control fd) of its v1 OOM notification.
        self._watches: dict[str, tuple[int, int]] = {}

    def _dir(self, container_id: str) -> str:
        return self.cgroups.controller_dir("memory", container_id)

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        mem = scalar(spec, "mem")
        if mem is None:
            return
        if mem > MAX_MEMORY_MB:
            raise LaunchRefused(f"invalid mem resource: {mem}")
        limit = int(max(mem, MIN_MEMORY_MB) * MB)
        d = self._dir(spec.container_id)
        swap = self.context.options.cgroups_limit_swap
        if self.cgroups.version == 1:
            cgroupfs.write_text(os.path.join(d, "memory.limit_in_bytes"), str(limit))
            if swap:
                cgroupfs.write_text(os.path.join(d, "memory.memsw.limit_in_bytes"), str(limit))
        else:
            cgroupfs.write_text(os.path.join(d, "memory.max"), str(limit))
            if swap:
                cgroupfs.write_text(os.path.join(d, "memory.swap.max"), "0")

    def started(self, container_id: str, on_limit: LimitCallback) -> None:
        loop = self.context.loop
        if self.cgroups.version != 1 or loop is None or container_id in self._watches:
            return
        d = self._dir(container_id)
        try:
            control = os.open(os.path.join(d, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            cgroupfs.write_text(os.path.join(d, "cgroup.event_control"), f"{event} {control}")
        except OSError:
            os.close(event)
            os.close(control)
            return
        self._watches[container_id] = (event, control)
        loop.add_reader(event, self._notified, container_id, on_limit)

    def _notified(self, container_id: str, on_limit: LimitCallback) -> None:
        watch = self._watches.get(container_id)
        if watch is None:
            return
        try:
            os.eventfd_read(watch[0])
        except BlockingIOError:
            return
        except OSError:
            # The group went away (eventfd reports that too): nothing more will come.
            self._unwatch(container_id)
            return
        limitation = self.limitation(container_id)
        if limitation is not None:
            on_limit(container_id, limitation)

    def limitation(self, container_id: str) -> Limitation | None:
        d = self._dir(container_id)
        v1 = self.cgroups.version == 1
        events = "memory.oom_control" if v1 else "memory.events"
        if not cgroupfs.read_keyed(os.path.join(d, events)).get("oom_kill", 0):
            return None  # the common case: one file read
        limit = cgroupfs.read_int(os.path.join(d, "memory.limit_in_bytes" if v1 else "memory.max"))
        peak = cgroupfs.read_int(
            os.path.join(d, "memory.max_usage_in_bytes" if v1 else "memory.peak")
        )
        return Limitation(REASON, memory_message(limit, peak))

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        d = self._dir(container_id)
        stat = cgroupfs.read_keyed(os.path.join(d, "memory.stat"))
        if self.cgroups.version == 1:
            limit = cgroupfs.read_int(os.path.join(d, "memory.limit_in_bytes"))
            total = cgroupfs.read_int(os.path.join(d, "memory.usage_in_bytes"))
            oom = cgroupfs.read_keyed(os.path.join(d, "memory.oom_control")).get("oom_kill")
            rss, cache = stat.get("total_rss", stat.get("rss")), stat.get("total_cache")
        else:
            limit = cgroupfs.read_int(os.path.join(d, "memory.max"))
            total = cgroupfs.read_int(os.path.join(d, "memory.current"))
            oom = cgroupfs.read_keyed(os.path.join(d, "memory.events")).get("oom_kill")
            rss, cache = stat.get("anon"), stat.get("file")
        for key, value in (
            ("mem_limit_bytes", limit),
            ("mem_total_bytes", total),
            ("mem_rss_bytes", rss),
            ("mem_cache_bytes", cache),
            ("mem_oom_events", oom),
        ):
            if value is not None:
                statistics[key] = value

    def cleanup(self, container_id: str) -> None:
        self._unwatch(container_id)

    def _unwatch(self, container_id: str) -> None:
        watch = self._watches.pop(container_id, None)
        if watch is None:
            return
        if self.context.loop is not None:
            self.context.loop.remove_reader(watch[0])
        for fd in watch:
            with contextlib.suppress(OSError):
                os.close(fd)


def memory_message(limit: int | None, peak: int | None) -> str:
    """Mesos' words: ``Memory limit exceeded: Requested: 64MB Maximum Used: 64MB``."""
    requested = "unknown" if limit is None else f"{limit // MB}MB"
    used = "unknown" if peak is None else f"{peak // MB}MB"
    return f"Memory limit exceeded: Requested: {requested} Maximum Used: {used}"
