"""``cgroups/mem``: a hard memory limit from the container's ``mem`` (at least 32 MB, like
Mesos), or from its tasks' memory limit (TaskInfo.limits; infinite: none), the request then
being the soft limit and a burstable command task's ``oom_score_adj`` raised as Mesos does;
with ``--cgroups_limit_swap`` on memory+swap too (a kernel that does not account
swap, without ``memory.memsw.limit_in_bytes``, v2 ``memory.swap.max``, stops agent
start-up). Going over the limit is seen in the kernel's OOM counters, never guessed from an
exit status: ``oom_kill`` in ``memory.oom_control`` (v1) or in ``memory.events`` (v2). The
limitation is ``REASON_CONTAINER_LIMITATION_MEMORY`` with the limit and the peak usage.

v1 tells of an OOM at once through an eventfd registered in ``cgroup.event_control``; the
eventfds of all containers sit in one epoll of this isolator, which is the one reader the
event loop watches (no loop registration per container). The kernel signals the eventfd
before its OOM killer picks and kills a victim, and counts ``oom_kill`` only after sending
the SIGKILL, so a first read may still find nothing: a notification, or an end by a SIGKILL
the agent did not send (`limitation_possible`), is read again after 10, 60, 260 and 1260 ms
(`OOM_RECHECKS`) before it counts as no OOM.

v2 tells of a change of ``memory.events`` as a modification of the file: every container's
file is watched through one inotify instance of this isolator (`cgroupfs.FileWatch`), again
one reader of the event loop. The kernel counts ``oom_kill`` before it notifies, and never
drops a notification (one within 10 ms of the last is delayed to the end of those 10 ms),
so a rise of the count is read at once, with no re-reads; the other counters of the file
(``max`` each time the group reclaims at its limit) wake it too, hence at most 100 times a
second per container, for one read of the file each.

A container's first count is 0 (its group is new). A recovered container that still runs
starts from the count it had when the agent recovered it, on v1 and v2: as in Mesos, whose
memory isolator only listens for OOMs from its recovery on, an OOM while the agent was down
(of a child the kernel killed) does not turn a later kill or exit into a memory failure. A
container that ended while the agent was down, with an OOM in its group, ended by it: that
is reported as its memory limitation."""

from __future__ import annotations

import contextlib
import math
import os
import select
from dataclasses import dataclass

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
    limit,
    require_cgroup_file,
    scalar,
)
from butte.agent.effects import LaunchContainer, UpdateContainer
from butte.core import task_limits
from butte.core.flags import size_text

REASON = "REASON_CONTAINER_LIMITATION_MEMORY"
# Seconds between the re-reads of the OOM counter after a sign of an OOM it does not show
# yet: at 10, 60, 260 and 1260 ms (see the module docstring).
OOM_RECHECKS = (0.01, 0.05, 0.2, 1.0)
MAX_MEMORY_MB = float(1 << 40)  # 1 EB: anything above is a mistake, not a limit


@dataclass(slots=True)
class _EventsWatch:
    """The v2 watch of one container's ``memory.events``."""

    wd: int | None  # its inotify watch descriptor (None: the kernel dropped it)
    on_limit: LimitCallback
    oom_kills: int  # the ``oom_kill`` count already known (reported, or there before)


class CgroupsMem(Isolator):
    """See the module docstring."""

    name = "cgroups/mem"
    controllers = ("memory",)

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        if context.options.cgroups_limit_swap:
            require_cgroup_file(
                self.cgroups,
                "memory",
                ("memory.memsw.limit_in_bytes", "memory.swap.max"),
                "--cgroups_limit_swap",
                "swap accounting in memory cgroups",
                "boot it with swapaccount=1, or leave the flag out to limit memory alone",
            )
        # container id -> (eventfd, memory.oom_control fd) of its v1 OOM notification.
        self._watches: dict[str, tuple[int, int]] = {}
        # eventfd -> (container id, callback): what a ready fd in the epoll is about.
        self._by_event: dict[int, tuple[str, LimitCallback]] = {}
        self._epoll: select.epoll | None = None  # every watched eventfd, one loop reader
        self._rechecking: set[str] = set()  # containers with re-reads under way
        # v2: every container's memory.events in one inotify instance, one loop reader.
        self._events: dict[str, _EventsWatch] = {}
        self._by_wd: dict[int, str] = {}  # watch descriptor -> container id
        self._file_watch: cgroupfs.FileWatch | None = None
        # container id -> its ``oom_kill`` count when the agent recovered it (see above).
        self._oom_at_recovery: dict[str, int] = {}

    def _dir(self, container_id: str) -> str:
        return self.cgroups.controller_dir("memory", container_id)

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        request = self._set(spec, first=True)
        if request is not None and request[0] < request[1] and spec.command is not None:
            # A burstable command task: the first the kernel's OOM killer picks once it uses
            # more than it asked for (Mesos' isolator sets this for the same containers).
            setup.oom_score_adj = task_limits.oom_score_adj(request[0])

    def update(self, change: UpdateContainer) -> None:
        self._set(change, first=False)

    def _set(
        self, spec: LaunchContainer | UpdateContainer, first: bool
    ) -> tuple[int, float] | None:
        """The hard limit from the memory limit (none for an infinite one) or the request;
        the soft one (v1 ``memory.soft_limit_in_bytes``, v2 ``memory.low``) from the request
        when a limit is above it. Later, a hard limit only rises: lowering it below what the
        container uses would OOM it. Returns (soft, hard) in bytes (hard math.inf: none)."""
        mem = scalar(spec, "mem")
        if mem is None:
            return None
        ceiling = limit(spec, "mem")
        for value in (mem, ceiling):
            if value is not None and not math.isinf(value) and value > MAX_MEMORY_MB:
                raise LaunchRefused(f"invalid mem resource: {value}")
        soft = int(max(mem, MIN_MEMORY_MB) * MB)
        hard: float = soft
        if ceiling is not None:
            hard = math.inf if math.isinf(ceiling) else int(max(ceiling, MIN_MEMORY_MB) * MB)
        d = self._dir(spec.container_id)
        v1 = self.cgroups.version == 1
        if ceiling is not None or not first:
            soft_file = "memory.soft_limit_in_bytes" if v1 else "memory.low"
            cgroupfs.write_text(os.path.join(d, soft_file), str(soft))
        hard_file = "memory.limit_in_bytes" if v1 else "memory.max"
        if not first:
            current = cgroupfs.read_int(os.path.join(d, hard_file))
            if current is not None and hard <= current:
                return soft, hard
        text = ("-1" if v1 else "max") if math.isinf(hard) else str(int(hard))
        swap = self.context.options.cgroups_limit_swap
        if v1:
            memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
            # memsw may never be below the memory limit: lowered after it, raised before.
            if swap and not first:
                cgroupfs.write_text(memsw, text)
            cgroupfs.write_text(os.path.join(d, hard_file), text)
            if swap and first:
                cgroupfs.write_text(memsw, text)
        else:
            cgroupfs.write_text(os.path.join(d, hard_file), text)
            if swap:
                cgroupfs.write_text(os.path.join(d, "memory.swap.max"), "0")
        return soft, hard

    def started(self, container_id: str, on_limit: LimitCallback) -> None:
        if self.cgroups.version == 1:
            self._watch_oom_control(container_id, on_limit)
        else:
            self._watch_events(container_id, on_limit, 0)

    def recover(self, container_id: str, on_limit: LimitCallback) -> None:
        # Only OOMs from now on count for a container still running (see the module
        # docstring); one that ended while the agent was down ended by its OOM, if any.
        known = self._oom_kills(container_id)
        procs = os.path.join(self._dir(container_id), "cgroup.procs")
        with contextlib.suppress(OSError):
            if cgroupfs.read_text(procs).strip():
                self._oom_at_recovery[container_id] = known
        if self.cgroups.version == 1:
            self._watch_oom_control(container_id, on_limit)
        else:
            self._watch_events(container_id, on_limit, known)

    def _watch_oom_control(self, container_id: str, on_limit: LimitCallback) -> None:
        """v1: an eventfd the kernel signals on an OOM in the group, in the epoll."""
        loop = self.context.loop
        if loop is None or container_id in self._watches:
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

    def _watch_events(self, container_id: str, on_limit: LimitCallback, known: int) -> None:
        """v2: watches the group's memory.events for a rise of ``oom_kill`` above ``known``."""
        loop = self.context.loop
        if loop is None or container_id in self._events:
            return
        if self._file_watch is None:
            try:
                self._file_watch = cgroupfs.FileWatch()
            except OSError:
                return  # no inotify: OOMs are read when containers end
            loop.add_reader(self._file_watch.fd, self._events_ready)
        path = os.path.join(self._dir(container_id), "memory.events")
        try:
            wd = self._file_watch.add(path)
        except OSError:
            return  # the group is gone: its end is checked then
        # A watch that outlived its file's removal (IN_IGNORED not read yet) is replaced.
        self._forget_wd(wd)
        self._events[container_id] = _EventsWatch(wd, on_limit, known)
        self._by_wd[wd] = container_id
        # An OOM between the start (or the recovery's read) and the watch told nobody: read
        # once, on the loop (as a notification would: after the caller told of the start).
        loop.call_soon(self._events_changed, container_id)

    def _events_ready(self) -> None:
        """The inotify instance has events: memory.events of these containers changed."""
        assert self._file_watch is not None
        changed: dict[str, None] = {}
        for wd, mask in self._file_watch.read():
            if mask & cgroupfs.IN_Q_OVERFLOW:
                changed.update(dict.fromkeys(self._events))  # events lost: read them all
            elif mask & cgroupfs.IN_IGNORED:
                self._forget_wd(wd)  # the group was removed: nothing more will come
            elif wd in self._by_wd:
                changed[self._by_wd[wd]] = None
        for container_id in changed:
            self._events_changed(container_id)

    def _events_changed(self, container_id: str) -> None:
        """Reports the memory limitation when ``oom_kill`` rose above what was known."""
        watch = self._events.get(container_id)
        if watch is None:
            return
        count = self._oom_kills(container_id)
        if count <= watch.oom_kills:
            return
        watch.oom_kills = count
        limitation = self.limitation(container_id)
        if limitation is not None:
            watch.on_limit(container_id, limitation)

    def _oom_kills(self, container_id: str) -> int:
        """The group's ``oom_kill`` count (0 where it cannot be read)."""
        events = "memory.oom_control" if self.cgroups.version == 1 else "memory.events"
        return cgroupfs.read_keyed(os.path.join(self._dir(container_id), events)).get("oom_kill", 0)

    def _forget_wd(self, wd: int) -> None:
        """Forgets a watch descriptor the kernel no longer uses for its container's file."""
        container_id = self._by_wd.pop(wd, None)
        watch = self._events.get(container_id) if container_id is not None else None
        if watch is not None and watch.wd == wd:
            watch.wd = None

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
        if self._oom_kills(container_id) <= self._oom_at_recovery.get(container_id, 0):
            return None  # the common case: one file read
        limit = cgroupfs.read_int(os.path.join(d, "memory.limit_in_bytes" if v1 else "memory.max"))
        peak = cgroupfs.read_int(
            os.path.join(d, "memory.max_usage_in_bytes" if v1 else "memory.peak")
        )
        if peak is None and not v1:
            # memory.peak is new in Linux 5.19: before, the usage now is the best there is.
            peak = cgroupfs.read_int(os.path.join(d, "memory.current"))
        message = memory_message(limit, peak)
        with contextlib.suppress(OSError):
            # As Mesos' memory isolator: the group's statistics, to help find out why.
            stat = cgroupfs.read_text(os.path.join(d, "memory.stat"))
            message += f"\n\nMEMORY STATISTICS: \n{stat}"
        return Limitation(REASON, message)

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
        memsw = None
        if self.cgroups.version == 1:
            limit = cgroupfs.read_int(os.path.join(d, "memory.limit_in_bytes"))
            total = cgroupfs.read_int(os.path.join(d, "memory.usage_in_bytes"))
            if self.context.options.cgroups_limit_swap:
                memsw = cgroupfs.read_int(os.path.join(d, "memory.memsw.usage_in_bytes"))
            oom = cgroupfs.read_keyed(os.path.join(d, "memory.oom_control")).get("oom_kill")
            rss, cache = stat.get("total_rss", stat.get("rss")), stat.get("total_cache")
            mapped, swap = stat.get("total_mapped_file"), stat.get("total_swap")
            unevictable = stat.get("total_unevictable")
        else:
            limit = cgroupfs.read_int(os.path.join(d, "memory.max"))
            total = cgroupfs.read_int(os.path.join(d, "memory.current"))
            if self.context.options.cgroups_limit_swap and total is not None:
                swapped = cgroupfs.read_int(os.path.join(d, "memory.swap.current"))
                memsw = None if swapped is None else total + swapped
            oom = cgroupfs.read_keyed(os.path.join(d, "memory.events")).get("oom_kill")
            rss, cache = stat.get("anon"), stat.get("file")
            mapped, swap = stat.get("file_mapped"), None
            unevictable = stat.get("unevictable")
        # Mesos' memory isolator fills these from memory.stat (file and anon are its newer
        # names of cache and rss).
        for key, value in (
            ("mem_limit_bytes", limit),
            ("mem_total_bytes", total),
            ("mem_total_memsw_bytes", memsw),
            ("mem_rss_bytes", rss),
            ("mem_anon_bytes", rss),
            ("mem_cache_bytes", cache),
            ("mem_file_bytes", cache),
            ("mem_mapped_file_bytes", mapped),
            ("mem_swap_bytes", swap),
            ("mem_unevictable_bytes", unevictable),
            ("mem_oom_events", oom),
        ):
            if value is not None:
                statistics[key] = value

    def cleanup(self, container_id: str) -> None:
        self._unwatch(container_id)
        self._oom_at_recovery.pop(container_id, None)

    def _unwatch(self, container_id: str) -> None:
        events = self._events.pop(container_id, None)
        if events is not None and events.wd is not None:
            self._by_wd.pop(events.wd, None)
            if self._file_watch is not None:
                with contextlib.suppress(OSError):
                    self._file_watch.remove(events.wd)
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
    requested = "unknown" if limit is None else size_text(limit)
    used = "unknown" if peak is None else size_text(peak)
    return f"Memory limit exceeded: Requested: {requested} Maximum Used: {used}"
