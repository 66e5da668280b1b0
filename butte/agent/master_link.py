"""The agent's WebSocket to the master (``ws://<master>/api/v1/internal/agent``).

`MasterLink.run` connects, reports the open socket (the agent then sends REGISTER_AGENT),
delivers each decoded master message, and on any disconnection reports it and reconnects
after a random delay in ``[0, backoff]``, the backoff starting at ``--registration_backoff_
factor`` and doubling up to a minute while attempts keep failing (Mesos' agent
registration backoff). Outgoing messages go through one writer task per connection so their
order is kept; messages sent while disconnected are dropped (the core resends what matters).
A master that stays silent longer than `SILENCE_TIMEOUT` (it pings every 15 s by default) is
treated as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import aiohttp
import msgspec

from butte.core import internal

log = logging.getLogger("butte.agent")

MAX_BACKOFF = 60.0
# Mesos marks an agent unreachable after 5 missed pings of 15 s; mirror that on this side.
SILENCE_TIMEOUT = 75.0
# A connection that lived this long resets the backoff (it was a real session, not a refusal).
STABLE_CONNECTION = 10.0


class MasterLink:
    """Keeps one WebSocket to the master alive; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        on_open: Callable[[], None],
        on_message: Callable[[internal.MasterMessage], None],
        on_close: Callable[[], None],
        backoff_factor: float = 1.0,
    ) -> None:
        self.url = url
        self._on_open = on_open
        self._on_message = on_message
        self._on_close = on_close
        self._factor = max(0.0, backoff_factor)
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._stopping = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False

    def send(self, message: msgspec.Struct) -> None:
        """Queues one message for the master (dropped if not connected)."""
        if self._queue is not None:
            self._queue.put_nowait(internal.encode(message))

    async def run(self) -> None:
        """Connects and reconnects until `close`."""
        backoff = self._factor
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                started = loop.time()
                try:
                    ws = await session.ws_connect(self.url, autoping=True, max_msg_size=0)
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    log.info("cannot reach master at %s: %s", self.url, e)
                else:
                    await self._serve(ws)
                if self._stopping:
                    break
                if loop.time() - started >= STABLE_CONNECTION:
                    backoff = self._factor
                delay = random.uniform(0, backoff)
                backoff = min(max(backoff * 2, self._factor), MAX_BACKOFF)
                await asyncio.sleep(delay)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._queue = asyncio.Queue()
        writer = asyncio.create_task(self._write(ws, self._queue))
        self.connected = True
        log.info("connected to master at %s", self.url)
        try:
            self._on_open()
            while True:
                msg = await ws.receive(timeout=SILENCE_TIMEOUT)
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._deliver(msg.data)
                else:
                    break
        except TimeoutError:
            log.warning("master silent for %.0f s; reconnecting", SILENCE_TIMEOUT)
        finally:
            self.connected = False
            self._queue.put_nowait(None)
            self._queue = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2.0)
            writer.cancel()
            await ws.close()
            self._ws = None
            log.info("disconnected from master")
            self._on_close()

    def _deliver(self, data: str | bytes) -> None:
        try:
            message = internal.decode_master_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("ignoring bad message from master: %s", e)
            return
        self._on_message(message)

    @staticmethod
    async def _write(ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue) -> None:
        while True:
            data = await queue.get()
            if data is None:
                return
            try:
                await ws.send_str(data.decode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Sends what is queued (briefly), then closes the socket and stops reconnecting."""
        self._stopping = True
        queue = self._queue
        if queue is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + flush_timeout
            while not queue.empty() and loop.time() < deadline:
                await asyncio.sleep(0.01)
        if self._ws is not None:
            await self._ws.close()
