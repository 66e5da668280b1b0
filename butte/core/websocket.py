"""The RFC 6455 framing shared by both ends of the agents' WebSocket on their lean paths: the
master's `butte.master.agent_socket` (server) and the simulator's `butte.sim.websocket`
(client). Only what the agent protocol needs: text and binary messages (fragmented ones
reassembled), ping, pong and close; no extensions, so frames with reserved bits set are
refused. Every rule of RFC 6455 section 5 that a reader must enforce is enforced: a protocol
error closes with 1002, invalid UTF-8 in a text message or a close reason with 1007, an
oversized message with 1009; a close frame is answered with the peer's own code.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Close codes (RFC 6455 7.4.1).
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA = 1000, 1002, 1007
CLOSE_POLICY, CLOSE_TOO_BIG = 1008, 1009
# Codes a close frame may carry (RFC 6455 7.4.1-7.4.2): 1004-1006 and 1015 are reserved or
# never sent, 1016-2999 unassigned; 3000-4999 belong to libraries and applications.
_SENDABLE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))
MAX_CONTROL_PAYLOAD = 125

try:  # aiohttp's compiled mask: some 15x faster than the big-integer XOR below
    from aiohttp._websocket.helpers import websocket_mask as _compiled_mask
except ImportError:  # pragma: no cover - a build or version of aiohttp without it
    _compiled_mask = None  # type: ignore[assignment]  # (the fallback below is used instead)


class ProtocolError(Exception):
    """The peer broke the WebSocket protocol; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def close_code(payload: bytes) -> int:
    """The code to answer a received close frame with: the peer's own (RFC 6455 5.5.1),
    1000 when it gave none. Raises `ProtocolError` for a malformed close frame."""
    if not payload:
        return CLOSE_NORMAL
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(f"close code {code} may not be sent")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not UTF-8", CLOSE_INVALID_DATA) from None
    return code


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
        # The opcode of the fragmented message being reassembled; CONTINUATION when none is.
        self._kind = CONTINUATION

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
            opcode, final = first & 0x0F, first & 0x80 != 0
            if first & 0x70:
                raise ProtocolError("reserved bits set without a negotiated extension")
            if opcode & 0x8:
                if opcode not in (PING, PONG, CLOSE):
                    raise ProtocolError(f"unknown control opcode {opcode}")
                if length > MAX_CONTROL_PAYLOAD or not final:
                    raise ProtocolError("control frame over 125 bytes or fragmented")
            elif opcode not in (TEXT, BINARY, CONTINUATION):
                raise ProtocolError(f"unknown opcode {opcode}")
            elif (opcode == CONTINUATION) != (self._kind != CONTINUATION):
                raise ProtocolError(
                    "continuation frame without a message to continue"
                    if opcode == CONTINUATION
                    else "new message before the fragmented one ended"
                )
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
            if opcode & 0x8:
                return opcode, payload
            if final and opcode != CONTINUATION:
                return _checked(opcode, payload)  # the common case: one whole frame
            if opcode != CONTINUATION:
                self._kind = opcode
            self._parts.append(payload)
            if not final:
                if sum(map(len, self._parts)) > self._max_message:
                    raise ProtocolError("message too big", CLOSE_TOO_BIG)
                continue
            parts, self._parts = self._parts, []
            kind, self._kind = self._kind, CONTINUATION
            return _checked(kind, b"".join(parts))


def _checked(opcode: int, payload: bytes) -> tuple[int, bytes]:
    """A whole message; a text one must be UTF-8 (checked cheaply when it is ASCII)."""
    if opcode == TEXT and not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("text message is not UTF-8", CLOSE_INVALID_DATA) from None
    return opcode, payload
