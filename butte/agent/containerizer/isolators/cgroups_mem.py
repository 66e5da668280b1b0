"""``cgroups/mem``: a hard memory limit from the container's ``mem`` (at least 32 MB, like
Mesos), with ``--cgroups_limit_swap`` on memory+swap too. Going over it is seen in the
kernel's OOM counters, never guessed from an exit status: ``oom_kill`` in
``memory.oom_control`` (v1) or in ``memory.events`` (v2, read when the container's tasks
end). The limitation is ``REASON_CONTAINER_LIMITATION_MEMORY`` with the limit and the peak
usage.

v1 tells of an OOM at once through an eventfd registered in ``cgroup.event_control``; the
eventfds of all containers sit in one epoll of this isolator, which is the one reader the
event loop watches (no loop registration per container). The kernel signals the eventfd
before its OOM killer picks and kills a victim, and counts ``oom_kill`` only after sending
the SIGKILL, so a first read may still find nothing: a notification, or an end by a SIGKILL
the agent did not send (`limitation_possible`), is read again after 10, 60, 260 and 1260 ms
(`OOM_RECHECKS`) before it counts as no OOM."""

from __future__ import annotations

import contextlib
import os
import select

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
# Seconds between the re-reads of the OOM counter after a sign of an OOM it does not show
# yet: at 10, 60, 260 and 1260 ms (see the module docstring).
OOM_RECHECKS = (0.01, 0.05, 0.2, 1.0)
MAX_MEMORY_MB = float(1 << 40)  # 1 EB: anything above is a mistake, not a limit


class CgroupsMem(Isolator):
    """See the module docstring."""

    name = "cgroups/mem"
    controllers = ("memory",)

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        # container id -> (eventfd, memory.oom_control fd) of its v1 OOM notification.
        self._watches: dict[str, tuple[int, int]] = {}
        # eventfd -> (container id, callback): what a ready fd in the epoll is about.
        self._by_event: dict[int, tuple[str, LimitCallback]] = {}
        self._epoll: select.epoll | None = None  # every watched eventfd, one loop reader
        self._rechecking: set[str] = set()  # containers with re-reads under way

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
        if self._epoll is None:
            self._epoll = select.epoll()
            loop.add_reader(self._epoll.fileno(), self._ready)
        self._epoll.register(event, select.EPOLLIN)
        self._watches[container_id] = (event, control)
        self._by_event[event] = (container_id, on_limit)

    def _ready(self) -> None:
        """The epoll has ready eventfds: an OOM in their containers (or a group removed)."""
        assert self._epoll is not None
        for event, _ in self._epoll.poll(0):
            watched = self._by_event.get(event)
            if watched is None:
                continue
            container_id, on_limit = watched
            try:
                os.eventfd_read(event)
            except BlockingIOError:
                continue
            except OSError:
                # The group went away (eventfd reports that too): nothing more will come.
                self._unwatch(container_id)
                continue
            self._check(container_id, on_limit, 0)

    def _check(self, container_id: str, on_limit: LimitCallback, attempt: int) -> None:
        """Reads the OOM counter after a notification; while it shows nothing, again after
        each of `OOM_RECHECKS` (the kernel counts the kill after notifying)."""
        if container_id not in self._watches:
            self._rechecking.discard(container_id)
            return  # finished meanwhile: its end was checked then
        limitation = self.limitation(container_id)
        if limitation is not None:
            self._rechecking.discard(container_id)
            on_limit(container_id, limitation)
            return
        if attempt == 0 and container_id in self._rechecking:
            return  # re-reads are under way already
        if attempt >= len(OOM_RECHECKS) or self.context.loop is None:
            self._rechecking.discard(container_id)
            return
        self._rechecking.add(container_id)
        self.context.loop.call_later(
            OOM_RECHECKS[attempt], self._check, container_id, on_limit, attempt + 1
        )

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

    def limitation_possible(self, container_id: str) -> bool:
        # An OOM needs a charge that failed at the limit first: v1 counts those in
        # memory.failcnt; v2 counts the OOM itself ("oom") before its kill ("oom_kill").
        d = self._dir(container_id)
        if self.cgroups.version == 1:
            return bool(cgroupfs.read_int(os.path.join(d, "memory.failcnt")))
        events = cgroupfs.read_keyed(os.path.join(d, "memory.events"))
        return events.get("oom", 0) > events.get("oom_kill", 0)

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
        self._by_event.pop(watch[0], None)
        if self._epoll is not None:
            # Explicitly: a child forked elsewhere in the agent may hold the eventfd for a
            # moment, which would keep a closed one in the epoll.
            with contextlib.suppress(OSError):
                self._epoll.unregister(watch[0])
        for fd in watch:
            with contextlib.suppress(OSError):
                os.close(fd)


def memory_message(limit: int | None, peak: int | None) -> str:
    """Mesos' words: ``Memory limit exceeded: Requested: 64MB Maximum Used: 64MB``."""
    requested = "unknown" if limit is None else f"{limit // MB}MB"
    used = "unknown" if peak is None else f"{peak // MB}MB"
    return f"Memory limit exceeded: Requested: {requested} Maximum Used: {used}"
