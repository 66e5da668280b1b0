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
import hashlib
import os
import struct
from collections.abc import Callable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_MESSAGE = 64 * 1024 * 1024


class WebSocketError(OSError):
    """The handshake failed or the peer broke the protocol (a connection failure)."""


try:  # aiohttp's compiled mask: some 15x faster than the big-integer XOR of `_mask`
    from aiohttp._websocket.helpers import websocket_mask as _compiled_mask
except ImportError:  # pragma: no cover - a build or version of aiohttp without it
    _compiled_mask = None


def _mask(data: bytes, key: bytes) -> bytes:
    """XORs ``data`` with the repeated 4-byte ``key`` (as one big integer: fast in CPython)."""
    if _compiled_mask is not None:
        buf = bytearray(data)
        _compiled_mask(key, buf)
        return bytes(buf)
    n = len(data)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + _mask(payload, key)


class WebSocketClient(asyncio.Protocol):
    """One client connection; `connect` opens it. ``on_message`` gets each message's
    payload (bytes); `closed` completes when the connection is gone."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = bytearray()
        self._upgraded = False
        self._parts: list[bytes] = []

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, on_message: Callable[[bytes], None], timeout: float
    ) -> WebSocketClient:
        """Connects and completes the handshake; raises OSError, TimeoutError or
        WebSocketError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(lambda: cls(on_message), host, port)
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
        self._buffer += data
        try:
            if not self._upgraded and not self._read_handshake():
                return
            self._read_frames()
        except WebSocketError as e:
            if not self.handshake.done():
                self.handshake.set_exception(e)
            self.abort()

    # -- sending ------------------------------------------------------------------------------

    def send_text(self, text: str | bytes) -> None:
        """Sends one text message, given as str or as its UTF-8 bytes (dropped if the
        connection is gone)."""
        if self.transport is not None and not self.transport.is_closing():
            data = text.encode() if isinstance(text, str) else text
            self.transport.write(frame(_TEXT, data))

    def close(self) -> None:
        """Sends a close frame and closes the transport."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing ------------------------------------------------------------------------------

    def _read_handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > 16384:
                raise WebSocketError("handshake response too long")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        if not head[0].startswith("HTTP/1.1 101"):
            raise WebSocketError(f"handshake refused: {head[0]}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise WebSocketError("handshake: bad Sec-WebSocket-Accept")
        self._upgraded = True
        self.handshake.set_result(None)
        return True

    def _read_frames(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                (length,) = struct.unpack_from("!H", buf, 2)
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buf, 2)
                offset = 10
            if length > MAX_MESSAGE:
                raise WebSocketError(f"frame of {length} bytes is too big")
            key = None
            if second & 0x80:  # servers must not mask, but tolerate it
                if len(buf) < offset + 4:
                    return
                key = bytes(buf[offset : offset + 4])
                offset += 4
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if key is not None:
                payload = _mask(payload, key)
            self._frame(first & 0x80 != 0, first & 0x0F, payload)

    def _frame(self, final: bool, opcode: int, payload: bytes) -> None:
        if opcode in (_TEXT, _BINARY, _CONTINUATION):
            if opcode != _CONTINUATION:
                self._parts = []
            self._parts.append(payload)
            if final:
                message = b"".join(self._parts) if len(self._parts) > 1 else payload
                self._parts = []
                self.on_message(message)
        elif opcode == _PING:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame(_PONG, payload))
        elif opcode == _CLOSE:
            self.close()
        elif opcode != _PONG:
            raise WebSocketError(f"unknown opcode {opcode}")
