"""The web UI's live updates: a stream of change summaries, at any cluster size.

The operator ``SUBSCRIBE`` stream begins with the whole state (64 MB at 10,000 agents and
100,000 tasks), so above a few thousand agents the UI used to give it up and poll. This
stream, ``GET /master/ui/changes``, begins with nothing: it sends RecordIO records (the
same framing as the operator stream)

* ``{"type": "SUBSCRIBED", "subscribed": {"heartbeat_interval_seconds": H,
  "period_seconds": P}}`` at once;
* ``{"type": "CHANGES", "changes": {"tasks": [ids], "agents": [ids], "frameworks": [ids],
  "tasks_added": N, "agents_added_or_removed": N, "frameworks_added_or_removed": N,
  "truncated": bool}}`` at most every P seconds, naming what changed since the last record
  (at most `MAX_IDS` ids of each kind; ``truncated`` says some were left out, and a page
  then refreshes whatever it shows);
* ``{"type": "HEARTBEAT"}`` every H seconds.

A page refetches only the rows it shows, and only when one of them (or, for lists, their
membership) changed. The feed listens to the core's operator events
(`OperatorSubscribers.listen`) only while at least one stream is open, so an idle master
builds no events for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from butte.core.codec import encode_json, frame, record
from butte.master.events import OperatorSubscribers
from butte.master.http import RecordStream, text_reply

log = logging.getLogger(__name__)

PERIOD_SECONDS = 0.5
HEARTBEAT_SECONDS = 10.0
MAX_IDS = 500
MAX_STREAMS = 200
MAX_BACKLOG = 200  # records; a reader that far behind is dropped (it reconnects)
_HEARTBEAT = frame(encode_json({"type": "HEARTBEAT"}))


def _value(obj: Any, *path: str) -> str | None:
    """``obj[path...]["value"]`` when every step is there."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    if isinstance(obj, dict):
        obj = obj.get("value")
    return obj if isinstance(obj, str) else None


class ChangeSummary:
    """What changed since the last `take` (pure: fed operator events, no I/O)."""

    def __init__(self, max_ids: int = MAX_IDS) -> None:
        self.max_ids = max_ids
        self._reset()

    def _reset(self) -> None:
        self.tasks: dict[str, None] = {}
        self.agents: dict[str, None] = {}
        self.frameworks: dict[str, None] = {}
        self.tasks_added = 0
        self.agents_added_or_removed = 0
        self.frameworks_added_or_removed = 0
        self.truncated = False
        self.empty = True

    def _note(self, kind: dict[str, None], value: str | None) -> None:
        if value is None or value in kind:
            return
        if len(kind) >= self.max_ids:
            self.truncated = True
            return
        kind[value] = None

    def add(self, event: dict[str, Any]) -> None:
        """Takes one operator event (the shapes of `butte.master.operator_views`)."""
        kind = event.get("type")
        if kind == "TASK_ADDED":
            task = (event.get("task_added") or {}).get("task")
            self.tasks_added += 1
            self._note(self.tasks, _value(task, "task_id"))
            self._note(self.agents, _value(task, "agent_id"))
            self._note(self.frameworks, _value(task, "framework_id"))
        elif kind == "TASK_UPDATED":
            update = event.get("task_updated") or {}
            self._note(self.tasks, _value(update, "status", "task_id"))
            self._note(self.agents, _value(update, "status", "agent_id"))
            self._note(self.frameworks, _value(update, "framework_id"))
        elif kind == "AGENT_ADDED":
            self.agents_added_or_removed += 1
            self._note(self.agents, _value(event, "agent_added", "agent", "agent_info", "id"))
        elif kind == "AGENT_REMOVED":
            self.agents_added_or_removed += 1
            self._note(self.agents, _value(event, "agent_removed", "agent_id"))
        elif kind in ("FRAMEWORK_ADDED", "FRAMEWORK_UPDATED"):
            self.frameworks_added_or_removed += kind == "FRAMEWORK_ADDED"
            payload = event.get(kind.lower()) or {}
            self._note(self.frameworks, _value(payload, "framework", "framework_info", "id"))
        elif kind == "FRAMEWORK_REMOVED":
            self.frameworks_added_or_removed += 1
            self._note(self.frameworks, _value(event, "framework_removed", "framework_info", "id"))
        else:
            return
        self.empty = False

    def take(self) -> dict[str, Any] | None:
        """The CHANGES record of what was added since the last take (None: nothing)."""
        if self.empty:
            return None
        record = {
            "type": "CHANGES",
            "changes": {
                "tasks": list(self.tasks),
                "agents": list(self.agents),
                "frameworks": list(self.frameworks),
                "tasks_added": self.tasks_added,
                "agents_added_or_removed": self.agents_added_or_removed,
                "frameworks_added_or_removed": self.frameworks_added_or_removed,
                "truncated": self.truncated,
            },
        }
        self._reset()
        return record


class ChangeFeed:
    """Open change streams of one master (see the module docstring)."""

    def __init__(
        self,
        events: OperatorSubscribers,
        period: float = PERIOD_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
        limit: int = MAX_STREAMS,
    ) -> None:
        self._events = events
        self.period = period
        self.heartbeat = heartbeat
        self.limit = limit
        self.summary = ChangeSummary()
        self._streams: set[RecordStream] = set()
        self._unlisten: Any = None
        self._pump: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._streams)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """``GET /master/ui/changes``: streams until the client goes away."""
        if request.method not in ("GET", "HEAD"):
            refusal = f"Expecting 'GET', received '{request.method}'"
            return text_reply(405, refusal, {"Allow": "GET"})
        if len(self._streams) >= self.limit:
            return text_reply(503, f"Too many change streams (at most {self.limit})")
        stream = RecordStream(max_backlog=MAX_BACKLOG)
        subscribed = {
            "type": "SUBSCRIBED",
            "subscribed": {
                "heartbeat_interval_seconds": self.heartbeat,
                "period_seconds": self.period,
            },
        }
        stream.put(record(subscribed))
        self._add(stream)
        try:
            return await stream.serve(request, {"Cache-Control": "no-store"})
        finally:
            self._remove(stream)

    def close(self) -> None:
        for stream in list(self._streams):
            stream.close()

    def _add(self, stream: RecordStream) -> None:
        self._streams.add(stream)
        if self._unlisten is None:
            self.summary = ChangeSummary()
            self._unlisten = self._events.listen(self.summary.add)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def _remove(self, stream: RecordStream) -> None:
        stream.closed = True
        self._streams.discard(stream)
        if not self._streams:
            if self._unlisten is not None:
                self._unlisten()
                self._unlisten = None
            if self._pump is not None:
                self._pump.cancel()
                self._pump = None

    async def _run(self) -> None:
        """Sends what changed every period, and heartbeats."""
        since_heartbeat = 0.0
        with contextlib.suppress(asyncio.CancelledError):
            while self._streams:
                await asyncio.sleep(self.period)
                since_heartbeat += self.period
                change = self.summary.take()
                data = record(change) if change is not None else None
                if since_heartbeat >= self.heartbeat:
                    since_heartbeat = 0.0
                    data = (data or b"") + _HEARTBEAT
                if data is None:
                    continue
                for stream in list(self._streams):
                    stream.put(data)
