"""An executor's open SUBSCRIBE response on the agent (`ExecutorStream`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from butte.core.codec import record


class ExecutorStream:
    """An executor's open SUBSCRIBE response: events queued by the core, written in order."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(record(event))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def pump(self, response: web.StreamResponse) -> None:
        """Writes queued records until closed. Records queued together (SUBSCRIBED and
        LAUNCH) share one chunk, saving a system call per record under load."""
        while True:
            data = await self._queue.get()
            if data is None:
                return
            parts = [data]
            closed = False
            while not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    closed = True
                    break
                parts.append(more)
            await response.write(b"".join(parts) if len(parts) > 1 else data)
            if closed:
                return
