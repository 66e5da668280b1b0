"""The RFC 6455 framing shared by both ends of the agents' WebSocket on their lean paths: the
master's `butte.master.agent_socket` (server) and the simulator's `butte.sim.websocket`
(client). Only what the agent protocol needs: text and binary messages (fragmented ones
reassembled), ping, pong and close; no extensions.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Close codes (RFC 6455 7.4.1).
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG = 1000, 1002, 1009

try:  # aiohttp's compiled mask: some 15x faster than the big-integer XOR below
    from aiohttp._websocket.helpers import websocket_mask as _compiled_mask
except ImportError:  # pragma: no cover - a build or version of aiohttp without it
    _compiled_mask = None  # type: ignore[assignment]  # (the fallback below is used instead)


class ProtocolError(Exception):
    """The peer broke the WebSocket protocol; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def python_mask(data: bytes, key: bytes) -> bytes:
    """XORs ``data`` with the repeated 4-byte ``key`` (as one big integer: fast in CPython);
    the fallback of `mask`."""
    n = len(data)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def mask(data: bytes, key: bytes) -> bytes:
    """XORs ``data`` with the repeated 4-byte ``key`` (masking and unmasking alike)."""
    if _compiled_mask is None:
        return python_mask(data, key)
    buf = bytearray(data)
    _compiled_mask(key, buf)
    return bytes(buf)


def encode_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One final frame; clients mask theirs (``masked``), servers never do."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + mask(payload, key)


class FrameReader:
    """Parses one connection's incoming frames as bytes arrive (`feed`) and hands out whole
    messages and control frames (`next`). A server sets ``require_mask`` (clients must
    mask); a client accepts both."""

    __slots__ = ("buffer", "_max_message", "_require_mask", "_parts", "_kind")

    def __init__(self, max_message: int, require_mask: bool) -> None:
        self.buffer = bytearray()
        self._max_message = max_message
        self._require_mask = require_mask
        self._parts: list[bytes] = []
        self._kind = TEXT  # the opcode of the message being reassembled

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> tuple[int, bytes] | None:
        """The next complete item as ``(opcode, payload)``: `TEXT` or `BINARY` with a whole
        message (fragments joined), or `PING`, `PONG`, `CLOSE`; None until more bytes
        arrive. Raises `ProtocolError`."""
        while True:
            buf = self.buffer
            if len(buf) < 2:
                return None
            first, second = buf[0], buf[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return None
                (length,) = struct.unpack_from("!H", buf, 2)
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return None
                (length,) = struct.unpack_from("!Q", buf, 2)
                offset = 10
            if length > self._max_message:
                raise ProtocolError(f"frame of {length} bytes is too big", CLOSE_TOO_BIG)
            key = None
            if second & 0x80:
                if len(buf) < offset + 4:
                    return None
                key = bytes(buf[offset : offset + 4])
                offset += 4
            elif self._require_mask:
                raise ProtocolError("unmasked client frame")
            if len(buf) < offset + length:
                return None
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if key is not None:
                payload = mask(payload, key)
            opcode, final = first & 0x0F, first & 0x80 != 0
            if opcode in (PING, PONG, CLOSE):
                return opcode, payload
            if opcode not in (TEXT, BINARY, CONTINUATION):
                raise ProtocolError(f"unknown opcode {opcode}")
            if opcode != CONTINUATION:
                self._parts = []
                self._kind = opcode
            self._parts.append(payload)
            if not final:
                if sum(map(len, self._parts)) > self._max_message:
                    raise ProtocolError("message too big", CLOSE_TOO_BIG)
                continue
            parts, self._parts = self._parts, []
            return self._kind, (b"".join(parts) if len(parts) > 1 else payload)
