"""The master event stream: operator SUBSCRIBE (docs/protocol.md §3.2).

Each subscriber gets a chunked RecordIO response: ``SUBSCRIBED{get_state,
heartbeat_interval_seconds}``, an immediate ``HEARTBEAT``, then every event the core emits
(`OperatorEvent` effects, fanned out here by `publish`) and a ``HEARTBEAT`` every
``heartbeat_interval``. The snapshot and the registration happen in one step of the event
loop, so a subscriber sees every change after its snapshot exactly once.

The core builds events only while ``machine.operator_subscribers`` is non-zero, which this
module keeps equal to the number of open streams plus in-process listeners (`listen`: the
web UI's change feed, `butte.master.ui_feed`). A subscriber that falls
``MAX_BACKLOG`` records behind is disconnected rather than let the master's memory grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from butte.core.codec import encode_json, frame
from butte.master.http import RecordStream
from butte.master.machine import MasterMachine
from butte.master.view_acls import Viewer

log = logging.getLogger(__name__)

MAX_SUBSCRIBERS = 1000
MAX_BACKLOG = 50_000
HEARTBEAT_INTERVAL = 15.0
_HEARTBEAT = frame(encode_json({"type": "HEARTBEAT"}))


class OperatorSubscribers:
    """Open operator event streams of one master."""

    def __init__(
        self,
        machine: MasterMachine,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        limit: int = MAX_SUBSCRIBERS,
    ) -> None:
        self._machine = machine
        self._subscribers: dict[RecordStream, None] = {}  # oldest first
        # In-process listeners (the web UI's change feed, `butte.master.ui_feed`).
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._heartbeat_interval = heartbeat_interval
        self._limit = limit
        self._heartbeats: asyncio.Task | None = None
        # Subscribers whose principal --acls restrict (`butte.master.view_acls`).
        self._views: dict[RecordStream, Viewer] = {}

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        """Sends one event to every subscriber (encoded once) and listener."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the events of everyone else
                log.exception("Operator event listener failed")
        if not self._subscribers:
            return
        data = frame(encode_json(event))
        for sub in list(self._subscribers):
            view = self._views.get(sub) if self._views else None
            if view is None:
                sub.put(data)
                continue
            narrowed = view.event(event)
            if narrowed is not None:
                sub.put(data if narrowed is event else frame(encode_json(narrowed)))

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Has ``listener`` called with every event too, and the core build events while it
        is registered; returns the function that removes it."""
        self._listeners.append(listener)
        self._count()

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._count()

        return remove

    def _count(self) -> None:
        self._machine.operator_subscribers = len(self._subscribers) + len(self._listeners)

    async def serve(
        self,
        request: web.Request,
        snapshot: Callable[[], dict[str, Any]],
        view: Viewer | None = None,
    ) -> web.StreamResponse:
        """Answers one SUBSCRIBE call: the stream lives until the client goes away. With a
        ``view`` (``--acls`` restrict what its principal may see) the snapshot and every
        event are narrowed to it (`butte.master.view_acls`)."""
        while len(self._subscribers) >= self._limit:
            oldest = next(iter(self._subscribers))
            log.info(
                "Reached the maximum of %d operator event stream subscribers: closing the oldest",
                self._limit,
            )
            oldest.close()
            self._remove(oldest)
        sub = RecordStream(max_backlog=MAX_BACKLOG)
        subscribed = {
            "type": "SUBSCRIBED",
            "subscribed": {
                "get_state": snapshot(),
                "heartbeat_interval_seconds": self._heartbeat_interval,
            },
        }
        if view is not None:
            subscribed = view.event(subscribed) or subscribed
            self._views[sub] = view
        sub.put(frame(encode_json(subscribed)))
        sub.put(_HEARTBEAT)
        self._add(sub)
        try:
            return await sub.serve(request, {})
        finally:
            self._views.pop(sub, None)
            self._remove(sub)

    def _add(self, sub: RecordStream) -> None:
        self._subscribers[sub] = None
        self._count()
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat())

    def _remove(self, sub: RecordStream) -> None:
        sub.closed = True
        self._subscribers.pop(sub, None)
        self._count()
        if not self._subscribers and self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None

    async def _heartbeat(self) -> None:
        while self._subscribers:
            await asyncio.sleep(self._heartbeat_interval)
            for sub in list(self._subscribers):
                sub.put(_HEARTBEAT)
