"""A minimal WebSocket client (RFC 6455) for the simulated agents: thousands of them.

aiohttp's client spent about 75% of the simulator's time opening connections (request
objects, header maps, happy-eyeballs connection setup) and created a future per received
message; with 10,000 agents reconnecting after a failover, the simulator, not the master, set
the pace. This client is an `asyncio.Protocol`: one handshake request, frames parsed in
``data_received`` and handed to a callback as they arrive, sends written straight to the
transport. It speaks only what the agent protocol needs: text and binary messages
(fragmented ones reassembled), ping -> pong, close. Client frames are masked, as the RFC
requires.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable

from butte.core.websocket import (
    CLOSE,
    CLOSE_NORMAL,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolError,
    accept_key,
    close_code,
    encode_frame,
)

MAX_MESSAGE = 64 * 1024 * 1024


class WebSocketError(OSError):
    """The handshake failed or the peer broke the protocol (a connection failure)."""


class WebSocketClient(asyncio.Protocol):
    """One client connection; `connect` opens it. ``on_message`` gets each message's
    payload (bytes); `closed` completes when the connection is gone."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._reader = FrameReader(MAX_MESSAGE, require_mask=False)
        self._upgraded = False

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, on_message: Callable[[bytes], None], timeout: float
    ) -> WebSocketClient:
        """Connects and completes the handshake; raises OSError, TimeoutError or
        WebSocketError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(lambda: cls(on_message), host, port)
            assert protocol.transport is not None  # set by connection_made, before this returns
            protocol.transport.write(
                b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
                % (path.encode(), host.encode(), port, protocol._key)
            )
            try:
                await protocol.handshake
            except BaseException:
                protocol.abort()
                raise
        return protocol

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.handshake.done():
            self.handshake.set_exception(WebSocketError("connection closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            if not self._upgraded and not self._read_handshake():
                return
            while (item := self._reader.next()) is not None:
                opcode, payload = item
                if opcode == PING:
                    self._write(encode_frame(PONG, payload, masked=True))
                elif opcode == CLOSE:
                    self.close(close_code(payload))  # echoes the master's code
                elif opcode != PONG:
                    self.on_message(payload)
        except (ProtocolError, WebSocketError) as e:
            if not self.handshake.done():
                self.handshake.set_exception(WebSocketError(str(e)))
                self.abort()
            elif isinstance(e, ProtocolError):
                self.close(e.code)  # tells the master why, as RFC 6455 7.1.7 asks
            else:
                self.abort()

    # -- sending ------------------------------------------------------------------------------

    def send_text(self, text: str | bytes) -> None:
        """Sends one text message, given as str or as its UTF-8 bytes (dropped if the
        connection is gone)."""
        data = text.encode() if isinstance(text, str) else text
        self._write(encode_frame(TEXT, data, masked=True))

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """Sends a close frame with ``code`` and closes the transport."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(CLOSE, code.to_bytes(2, "big"), masked=True))
            self.transport.close()

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing ------------------------------------------------------------------------------

    def _read_handshake(self) -> bool:
        buffer = self._reader.buffer  # the frames follow the response head
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > 16384:
                raise WebSocketError("handshake response too long")
            return False
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        if not head[0].startswith("HTTP/1.1 101"):
            raise WebSocketError(f"handshake refused: {head[0]}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = accept_key(self._key).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise WebSocketError("handshake: bad Sec-WebSocket-Accept")
        self._upgraded = True
        self.handshake.set_result(None)
        return True
