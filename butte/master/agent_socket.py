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
                   closed), each message handed to the owner as it arrives; `send` queues a
                   text frame, and the frames of one loop iteration leave in one write (an
                   agent's acknowledgements and launches come in bursts: one `send` system
                   call and one wake-up of the agent for the burst instead of one each).

Only what the agent protocol uses is spoken: no extensions or subprotocols are negotiated
(a client that offers them gets neither, as the RFC allows).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Callable
from typing import Protocol

from butte.core import internal
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
from butte.master.fast_http import header_fields

log = logging.getLogger(__name__)

_REQUEST_LINE = b"GET " + internal.AGENT_PATH.encode() + b" HTTP/1.1"
# Request heads are small; anything bigger is left to aiohttp (which refuses it).
_MAX_HEAD = 8 * 1024
# Bytes the master buffers for an agent that does not read before it disconnects it.
MAX_WRITE_BACKLOG = 64 * 1024 * 1024


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


def upgrade_key(head: bytes) -> bytes | None:
    """The ``Sec-WebSocket-Key`` of a request head (without its blank line) that is a plain
    WebSocket upgrade to `internal.AGENT_PATH`; None for anything else."""
    lines = head.split(b"\r\n")
    if lines[0] != _REQUEST_LINE:
        return None
    headers = header_fields(lines[1:])
    if headers is None:
        return None
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
    """One agent's WebSocket after the handshake (see the module docstring).

    Back-pressure: while the agent does not read what the master sends (the transport's
    buffer is over its high-water mark) the master stops reading from it, and an agent more
    than ``max_backlog`` bytes behind is disconnected (it re-registers, as after any broken
    connection) instead of growing the master's memory without bound."""

    __slots__ = (
        "connection_id",
        "peer_ip",
        "_owner",
        "_transport",
        "_reader",
        "_open",
        "_max_backlog",
        "_unsent",
    )

    def __init__(
        self,
        owner: AgentSocketOwner,
        peer_ip: str,
        max_message: int,
        max_backlog: int = MAX_WRITE_BACKLOG,
    ) -> None:
        self._max_backlog = max_backlog
        self.connection_id = ""
        self.peer_ip = peer_ip
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader(max_message, require_mask=True)
        self._open = False
        self._unsent: list[bytes] = []  # frames for the `_flush` at the end of this iteration

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open = True
        self._owner.agent_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._unsent.clear()
        if self._open:
            self._open = False
            self._owner.agent_closed(self)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # an agent that does not read is not read from

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while self._transport is not None and (item := self._reader.next()) is not None:
                opcode, payload = item
                if opcode == PING:
                    self._write(encode_frame(PONG, payload, masked=False))
                elif opcode == CLOSE:
                    self.close(close_code(payload))  # echoes the agent's code
                elif opcode != PONG:
                    self._owner.agent_data(self, payload)
        except ProtocolError as e:
            log.warning("Agent connection %s: %s", self.connection_id, e)
            self.close(e.code)

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Sends one text message (dropped once the connection is closing)."""
        self._write(encode_frame(TEXT, data, masked=False))

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """Sends a close frame and closes the connection (the owner hears `agent_closed`)."""
        self._flush()  # what was sent before the close goes first
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(CLOSE, struct.pack("!H", code), masked=False))
            transport.close()

    def _write(self, frame: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if not self._unsent:
                asyncio.get_running_loop().call_soon(self._flush)
            self._unsent.append(frame)

    def _flush(self) -> None:
        """Writes the queued frames in one write (dropped once the connection is closing)."""
        frames = self._unsent
        if not frames:
            return
        self._unsent = []
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])
            if transport.get_write_buffer_size() > self._max_backlog:
                log.warning(
                    "Agent connection %s: the agent reads nothing (%d bytes unsent); "
                    "disconnecting it",
                    self.connection_id,
                    transport.get_write_buffer_size(),
                )
                transport.abort()  # a close frame would wait behind the backlog
