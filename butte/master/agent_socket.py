"""The agents' WebSocket (``GET /api/v1/internal/agent``) on a lean path.

After a failover every agent opens a new WebSocket to the new leader and re-registers at
once; with 10k agents the master's CPU per connection sets the pace. Through aiohttp a
connection cost about as much as the core's handling of a re-registration with ten tasks
(request object, header multidict, response object, a task for the handler and one for the
writer, a future per received message). Here it is one `asyncio.Protocol` per agent:

    AgentUpgrade   the first request of a connection that aiohttp would otherwise get. A
                   well-formed WebSocket upgrade to `internal.AGENT_PATH`, at a time when
                   the master takes agents (`AgentSocketOwner.accepts_agents`), is answered
                   ``101`` right here and the transport goes to an `AgentWebSocket`; any
                   other request (and any upgrade refused with 307/503) goes, with what is
                   buffered, to a fresh aiohttp handler that owns the transport from then on.
    AgentWebSocket frames parsed in ``data_received`` (client frames are masked; fragmented
                   messages reassembled; ping answered; close answered and the transport
                   closed), each message handed to the owner as it arrives; `send` writes a
                   text frame straight to the transport.

Only what the agent protocol uses is spoken: no extensions or subprotocols are negotiated
(a client that offers them gets neither, as the RFC allows).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import Protocol

from butte.core import internal

try:  # aiohttp's compiled mask: some 15x faster than the big-integer XOR of `unmask`
    from aiohttp._websocket.helpers import websocket_mask as _compiled_mask
except ImportError:  # pragma: no cover - a build or version of aiohttp without it
    _compiled_mask = None

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
_REQUEST_LINE = b"GET " + internal.AGENT_PATH.encode() + b" HTTP/1.1"
# Request heads are small; anything bigger is left to aiohttp (which refuses it).
_MAX_HEAD = 8 * 1024
# Close codes (RFC 6455 7.4.1).
_CLOSE_NORMAL, _CLOSE_PROTOCOL_ERROR, _CLOSE_TOO_BIG = 1000, 1002, 1009


class AgentSocketOwner(Protocol):
    """What the lean path needs from the master shell."""

    def accepts_agents(self) -> bool:
        """Whether an agent's WebSocket may be opened now (leading, or recovering the
        registry); otherwise aiohttp answers the upgrade with 307/503."""

    def agent_opened(self, link: AgentWebSocket) -> None:
        """A new agent connection (``link.connection_id`` names it from now on)."""

    def agent_data(self, link: AgentWebSocket, data: bytes) -> None:
        """One whole message (the bytes of its text or binary frames) from an agent."""

    def agent_closed(self, link: AgentWebSocket) -> None:
        """The connection is gone (either side closed it, or it broke)."""


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def upgrade_key(head: bytes) -> bytes | None:
    """The ``Sec-WebSocket-Key`` of a request head (without its blank line) that is a plain
    WebSocket upgrade to `internal.AGENT_PATH`; None for anything else."""
    lines = head.split(b"\r\n")
    if lines[0] != _REQUEST_LINE:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        key = name.strip().lower()
        if key in headers:
            return None  # repeated headers: aiohttp's rules apply
        headers[key] = value.strip()
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return None
    if b"upgrade" not in [t.strip() for t in headers.get(b"connection", b"").lower().split(b",")]:
        return None
    if headers.get(b"sec-websocket-version") != b"13" or b"content-length" in headers:
        return None
    key = headers.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except ValueError:
        return None
    return key


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(data: bytes, key: bytes) -> bytes:
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


class AgentUpgrade(asyncio.Protocol):
    """The first request of a connection: the agents' upgrade here, the rest to aiohttp."""

    def __init__(
        self,
        owner: AgentSocketOwner,
        fallback: Callable[[], asyncio.Protocol],
        max_message: int,
    ) -> None:
        self._owner = owner
        self._fallback = fallback
        self._max_message = max_message
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", 0, _MAX_HEAD)
        if end < 0:
            if len(self._buf) >= _MAX_HEAD:
                self._hand_off()
            return
        key = upgrade_key(bytes(self._buf[:end]))
        if key is None or not self._owner.accepts_agents():
            self._hand_off()
            return
        transport = self._transport
        if transport is None:
            return
        rest = bytes(self._buf[end + 4 :])
        self._buf = bytearray()
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key)
        )
        peer = transport.get_extra_info("peername")
        link = AgentWebSocket(self._owner, peer[0] if peer else "", self._max_message)
        transport.set_protocol(link)
        link.connection_made(transport)
        if rest:
            link.data_received(rest)

    def _hand_off(self) -> None:
        transport = self._transport
        self._transport = None
        if transport is None or transport.is_closing():
            return
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        protocol.data_received(data)


class AgentWebSocket(asyncio.Protocol):
    """One agent's WebSocket after the handshake (see the module docstring)."""

    __slots__ = (
        "connection_id",
        "peer_ip",
        "_owner",
        "_max_message",
        "_transport",
        "_buf",
        "_parts",
        "_open",
    )

    def __init__(self, owner: AgentSocketOwner, peer_ip: str, max_message: int) -> None:
        self.connection_id = ""
        self.peer_ip = peer_ip
        self._owner = owner
        self._max_message = max_message
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._open = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open = True
        self._owner.agent_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._open:
            self._open = False
            self._owner.agent_closed(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._read_frames()
        except _ProtocolError as e:
            log.warning("Agent connection %s: %s", self.connection_id, e)
            self.close(e.code)

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Sends one text message (dropped once the connection is closing)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(server_frame(_TEXT, data))

    def close(self, code: int = _CLOSE_NORMAL) -> None:
        """Sends a close frame and closes the connection (the owner hears `agent_closed`)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(server_frame(_CLOSE, struct.pack("!H", code)))
            transport.close()

    # -- parsing ------------------------------------------------------------------------------

    def _read_frames(self) -> None:
        buf = self._buf
        while len(buf) >= 2 and self._transport is not None:
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
            if length > self._max_message:
                raise _ProtocolError(f"frame of {length} bytes is too big", _CLOSE_TOO_BIG)
            if not second & 0x80:
                raise _ProtocolError("unmasked client frame", _CLOSE_PROTOCOL_ERROR)
            if len(buf) < offset + 4 + length:
                return
            key = bytes(buf[offset : offset + 4])
            payload = unmask(bytes(buf[offset + 4 : offset + 4 + length]), key)
            del buf[: offset + 4 + length]
            self._frame(first & 0x80 != 0, first & 0x0F, payload)

    def _frame(self, final: bool, opcode: int, payload: bytes) -> None:
        if opcode in (_TEXT, _BINARY, _CONTINUATION):
            if opcode != _CONTINUATION:
                self._parts = []
            self._parts.append(payload)
            if not final:
                if sum(map(len, self._parts)) > self._max_message:
                    raise _ProtocolError("message too big", _CLOSE_TOO_BIG)
                return
            message = b"".join(self._parts) if len(self._parts) > 1 else payload
            self._parts = []
            self._owner.agent_data(self, message)
        elif opcode == _PING:
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(server_frame(_PONG, payload))
        elif opcode == _CLOSE:
            self.close()
        elif opcode != _PONG:
            raise _ProtocolError(f"unknown opcode {opcode}", _CLOSE_PROTOCOL_ERROR)


class _ProtocolError(Exception):
    """The agent broke the WebSocket protocol; the connection is closed with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
