"""The agent's WebSocket to the master (``ws://<master>/api/v1/internal/agent``).

`MasterLink.run` connects, reports the open socket (the agent then sends REGISTER_AGENT),
delivers each decoded master message, and on any disconnection reports it and reconnects
after a random delay in ``[0, backoff]``, the backoff starting at ``--registration_backoff_
factor`` and doubling up to a minute while attempts keep failing (Mesos' agent
registration backoff). Outgoing messages go through one writer task per connection so their
order is kept; messages sent while disconnected are dropped (the core resends what matters).
Once the master has said (in AGENT_REGISTERED / AGENT_REREGISTERED) that it takes batches,
the messages queued when the writer runs leave together in one frame (`internal`): one
write and one wake-up of the master for a burst of status updates instead of one each.
A master that stays silent longer than `SILENCE_TIMEOUT` (it pings every 15 s by default) is
treated as gone. A master that refuses the agent's registration (its ACLs) closes the socket
with a policy-violation frame whose reason is logged; the agent retries with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable

import aiohttp
import msgspec

from butte.core import internal
from butte.core.websocket import CLOSE_POLICY

log = logging.getLogger("butte.agent")

MAX_BACKOFF = 60.0
# Mesos marks an agent unreachable after 5 missed pings of 15 s; mirror that on this side.
SILENCE_TIMEOUT = 75.0
# A connection that lived this long resets the backoff (it was a real session, not a refusal).
STABLE_CONNECTION = 10.0
# A WebSocket handshake that takes longer (e.g. a frozen master) is given up and retried.
CONNECT_TIMEOUT = 10.0
# A batch frame is closed once it holds this many bytes (far below the master's limit).
MAX_BATCH_BYTES = 1 << 20


class MasterLink:
    """Keeps one WebSocket to the master alive; see the module docstring."""

    def __init__(
        self,
        url: str | None,
        *,
        on_open: Callable[[], None],
        on_message: Callable[[internal.MasterMessage], None],
        on_close: Callable[[], None],
        backoff_factor: float = 1.0,
        follow_redirects: bool = True,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        # The client TLS context for https:// masters (None: aiohttp's default checks).
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        # Sent with every connection (the agent's credentials, --credential).
        self._headers = headers or {}
        # False with ZooKeeper detection: a 307 from a master that is not leader (yet) may
        # point at a frozen ex-leader; the detector names the real one soon enough.
        self._follow_redirects = follow_redirects
        self._on_open = on_open
        self._on_message = on_message
        self._on_close = on_close
        self._factor = max(0.0, backoff_factor)
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._stopping = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        # Whether the master of this connection takes batch frames (it said so on registering).
        self._batches = False
        # Set by `retarget`: connect to the new url now, skipping the backoff.
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task] = set()

    def send(self, message: msgspec.Struct) -> None:
        """Queues one message for the master (dropped if not connected)."""
        if self._queue is not None:
            self._queue.put_nowait(internal.encode(message))

    def retarget(self, url: str | None) -> None:
        """Follows a newly detected leading master (``--master zk://...``): drops the current
        connection and connects to ``url`` at once, without backoff; None waits for one."""
        if url == self.url:
            return
        self.url = url
        self._wake.set()
        if self._ws is not None:
            task = asyncio.get_running_loop().create_task(self._ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _pause(self, delay: float | None) -> bool:
        """Sleeps ``delay`` seconds (None: until retargeted); True if retargeted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    async def _connect(
        self, session: aiohttp.ClientSession, url: str
    ) -> aiohttp.ClientWebSocketResponse | None:
        """One connection attempt; given up after `CONNECT_TIMEOUT`, or at once when
        `retarget` names another master (a redirect may lead to a frozen ex-leader)."""
        attempt = asyncio.ensure_future(
            asyncio.wait_for(
                session.ws_connect(
                    url, autoping=True, max_msg_size=0, headers=self._headers, ssl=self._ssl
                ),
                CONNECT_TIMEOUT,
            )
        )
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({attempt, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.wait({attempt})  # reaps it without raising its CancelledError
            log.info("leading master changed while connecting to %s", url)
            return None
        try:
            return attempt.result()
        except (TimeoutError, aiohttp.ClientError, OSError, _Redirected) as e:
            log.info("cannot reach master at %s: %s", url, e)
            return None

    async def run(self) -> None:
        """Connects and reconnects until `close`."""
        backoff = self._factor
        loop = asyncio.get_running_loop()
        traces = [] if self._follow_redirects else [_refuse_redirects()]
        async with aiohttp.ClientSession(trace_configs=traces) as session:
            while not self._stopping:
                started = loop.time()
                url = self.url
                if url is None:
                    await self._pause(None)  # no leading master known yet
                    continue
                self._wake.clear()
                ws = await self._connect(session, url)
                if ws is not None:
                    await self._serve(ws)
                if self._stopping:
                    break
                if loop.time() - started >= STABLE_CONNECTION:
                    backoff = self._factor
                delay = random.uniform(0, backoff)
                backoff = min(max(backoff * 2, self._factor), MAX_BACKOFF)
                if self._wake.is_set() or await self._pause(delay):
                    backoff = self._factor  # a new leader: the backoff starts over

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._queue = asyncio.Queue()
        self._batches = False
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
                    if msg.type == aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_POLICY:
                        # The master refused this agent (the register_agents ACL): not
                        # registered, its tasks keep running, it retries with its backoff.
                        log.warning(
                            "master refused this agent's registration: %s; retrying",
                            msg.extra or "no reason given (see the master's log)",
                        )
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
        if isinstance(message, internal.AgentRegistered | internal.AgentReregistered):
            self._batches = message.batches
        self._on_message(message)

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue) -> None:
        """Sends what is queued, in order, until the None that ends the connection."""
        while True:
            data = await queue.get()
            if data is None:
                return
            batch, size = [data], len(data)
            while self._batches and size < MAX_BATCH_BYTES and not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    queue.put_nowait(None)  # after this batch
                    break
                batch.append(more)
                size += len(more)
            try:
                await ws.send_str(internal.encode_batch(batch).decode())
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


class _Redirected(Exception):
    """A master answered the WebSocket handshake with a redirect we do not follow."""


def _refuse_redirects() -> aiohttp.TraceConfig:
    """A trace config that turns any redirect into `_Redirected` (aiohttp's ws_connect has
    no switch for it)."""

    async def on_redirect(
        session: aiohttp.ClientSession,
        context: object,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        location = params.response.headers.get("Location", "")
        raise _Redirected(f"{params.response.status} redirect to {location} (not leader yet)")

    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(on_redirect)
    return config
