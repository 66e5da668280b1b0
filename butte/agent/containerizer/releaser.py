"""Removing finished containers' cgroups off the agent's event loop.

A container's groups (one per v1 hierarchy it uses, or its v2 group) can go once its last
process has been reaped. Removing them is a handful of ``rmdir`` calls, but the kernel tears
down a memory cgroup inside the call, and a group whose processes are still exiting must be
retried; neither belongs on the event loop, and a thread-pool job plus a task per container
costs the loop more than the removal itself. `CgroupReleaser` is one worker thread that
takes container ids from a queue (`release` only appends to it) and removes their groups,
retrying a busy container with a growing delay while it goes on with the others, and giving
up on it (with a warning) after ``give_up`` seconds.

Ordering is the caller's business: `butte.agent.containerizer.isolation.Isolation.release`
is called only after the container's end and any limit it went over were read, and a
container is never released twice. Orphans found at recovery are destroyed directly
(`Isolation.destroy_groups`), before anything runs.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("butte.agent")

# A removal attempt: True once every group of the container is gone, False if one is still
# busy (its processes were killed and it is tried again later). Raises OSError when a group
# cannot be removed at all.
RemoveOnce = Callable[[str], bool]

FIRST_RETRY = 0.001  # seconds before a busy container is tried again (doubling, ...)
MAX_RETRY = 0.05  # ... up to this
GIVE_UP = 5.0  # seconds after which a container whose groups stay busy is left behind

_STOP = object()


class CgroupReleaser:
    """See the module docstring. The thread starts with the first `release`."""

    def __init__(self, remove_once: RemoveOnce, give_up: float = GIVE_UP) -> None:
        self._remove_once = remove_once
        self._give_up = give_up
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.removed = 0  # containers whose groups are gone
        self.failed = 0  # containers given up on, or whose removal raised

    def release(self, container_id: str) -> None:
        """Queues the removal of the container's groups; returns at once."""
        if self._thread is None:
            self._start()
        self._queue.put(container_id)

    def flush(self, timeout: float) -> bool:
        """Waits until everything released so far is removed or given up on (agent
        shutdown); False if that took longer than ``timeout``."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = GIVE_UP) -> bool:
        """`flush`, then stops the thread (a later `release` starts a new one)."""
        flushed = self.flush(timeout)
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
        return flushed

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="cgroup-releaser", daemon=True)
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        # Busy containers, soonest retry first: (when, container id, delay, give-up time).
        waiting: list[tuple[float, str, float, float]] = []
        flushes: list[threading.Event] = []
        while True:
            timeout = None
            if waiting:
                timeout = max(0.0, waiting[0][0] - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                for done in flushes:
                    done.set()
                return
            if isinstance(item, threading.Event):
                flushes.append(item)
            elif isinstance(item, str):
                now = time.monotonic()
                if not self._attempt(item):
                    retry = (now + FIRST_RETRY, item, FIRST_RETRY, now + self._give_up)
                    heapq.heappush(waiting, retry)
            now = time.monotonic()
            while waiting and waiting[0][0] <= now:
                _, container_id, delay, give_up = heapq.heappop(waiting)
                if self._attempt(container_id):
                    continue
                if now >= give_up:
                    self.failed += 1
                    log.warning("cgroups of container %s could not be removed", container_id)
                    continue
                delay = min(delay * 2, MAX_RETRY)
                heapq.heappush(waiting, (now + delay, container_id, delay, give_up))
            if flushes and not waiting and self._queue.empty():
                for done in flushes:
                    done.set()
                flushes.clear()

    def _attempt(self, container_id: str) -> bool:
        """One try; True when there is nothing more to do for the container."""
        try:
            gone = self._remove_once(container_id)
        except OSError as e:
            self.failed += 1
            log.warning("cgroups of container %s: %s", container_id, e)
            return True
        except Exception:  # the thread must live on: one bad container is logged, not fatal
            self.failed += 1
            log.exception("cgroups of container %s", container_id)
            return True
        if gone:
            self.removed += 1
        return gone
