"""The master's HTTP listener: scheduler calls on a lean path, everything else through aiohttp.

A busy framework makes two or three calls per task (ACCEPT, then an ACKNOWLEDGE for each
status update), and through aiohttp's server each call cost about as much CPU as the master's
own handling of it (request object, header multidict, URL parsing, a task per connection,
a response object, a socket write per response). Every connection starts with
`SchedulerFastPath`, which serves the requests that are a plain non-SUBSCRIBE scheduler call:

    POST /api/v1/scheduler (or /master/api/v1/scheduler) HTTP/1.1
    Content-Length: <n>              (no Transfer-Encoding, no Expect, no Upgrade)
    Mesos-Stream-Id: <id>

and only while this master acts as leader. The call is decoded, run and answered
synchronously in `data_received`; all answers to the requests that arrived in one read (a
client that pipelines its calls) go out in one write. The answers are the ones the aiohttp
path gives (same status, text, content type and `Content-Length`; docs/protocol.md §1.1).

The first request that is anything else (SUBSCRIBE, the agents' WebSocket, /state, the web
UI, a 307/503 from a master that does not lead, HTTP/1.0 ...) hands the connection to
aiohttp for good: what is buffered is fed to a fresh aiohttp `RequestHandler`, which then
owns the transport.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import NamedTuple, Protocol

from aiohttp.http import SERVER_SOFTWARE

log = logging.getLogger(__name__)

SCHEDULER_PATHS = frozenset({b"/api/v1/scheduler", b"/master/api/v1/scheduler"})
# Requests heads are small; anything bigger is left to aiohttp (which answers 431 & co).
_MAX_HEAD = 8 * 1024
# Headers that make a request one for aiohttp.
_SLOW_HEADERS = frozenset({"transfer-encoding", "expect", "upgrade"})
# Mesos closes idle connections after a while; aiohttp's default keep-alive timeout.
IDLE_TIMEOUT = 75.0


class Reply(NamedTuple):
    """An answer to one call: status, content type, body."""

    status: int
    content_type: str
    body: bytes


class CallHandler(Protocol):
    """What the listener needs from the master."""

    def scheduler_reply(self, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """Runs one non-SUBSCRIBE scheduler call (headers with lower-cased names); None
        when aiohttp should serve it instead (this master does not lead)."""


def text(status: int, message: str = "") -> Reply:
    """A plain-text answer, as aiohttp's ``web.Response(text=...)`` gives it."""
    return Reply(status, "text/plain; charset=utf-8", message.encode("utf-8"))


class _DateHeader:
    """The ``Date`` value, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self._value


_DATE = _DateHeader()
_SERVER = SERVER_SOFTWARE.encode("latin-1")
_STATUS_LINES: dict[int, bytes] = {}


def encode_reply(reply: Reply, close: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    line = _STATUS_LINES.get(reply.status)
    if line is None:
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[reply.status] = b"HTTP/1.1 %d %s\r\n" % (
            reply.status,
            phrase.encode(),
        )
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n%s\r\n%s" % (
        line,
        reply.content_type.encode("latin-1"),
        len(reply.body),
        _DATE.value(),
        _SERVER,
        b"Connection: close\r\n" if close else b"",
        reply.body,
    )


class _Request(NamedTuple):
    path: str
    headers: dict[str, str]
    # Offset of the body in the buffer and its length.
    body_start: int
    length: int
    close: bool


def header_fields(lines: list[bytes]) -> dict[bytes, bytes] | None:
    """A request head's header lines as lower-cased name -> value; None for a malformed line
    or a repeated name (the lean paths leave those to aiohttp's rules)."""
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if not sep or key in headers:
            return None
        headers[key] = value.strip()
    return headers


def _parse_head(head: bytes) -> _Request | None:
    """The parts of a request head the fast path serves; None for anything else."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    if parts[1] not in SCHEDULER_PATHS:
        return None
    fields = header_fields(lines[1:])
    if fields is None:
        return None
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}
    if not _SLOW_HEADERS.isdisjoint(headers):
        return None  # aiohttp's rules apply
    if "mesos-stream-id" not in headers:
        return None  # SUBSCRIBE (or a call missing it): served by aiohttp
    length_text = headers.get("content-length", "")
    if not (length_text.isascii() and length_text.isdigit()):
        return None
    close = headers.get("connection", "").lower() == "close"
    return _Request(parts[1].decode("ascii"), headers, len(head) + 4, int(length_text), close)


class SchedulerFastPath(asyncio.Protocol):
    """One connection, served here until a request needs aiohttp (module docstring)."""

    def __init__(
        self,
        handler: CallHandler,
        aiohttp_protocol: Callable[[], asyncio.Protocol],
        connections: set[SchedulerFastPath],
        max_body: int,
    ) -> None:
        self._handler = handler
        self._aiohttp_protocol = aiohttp_protocol
        self._connections = connections
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._handed_off = False
        self._closing = False
        # Reading paused because the client does not read its answers (pause_writing).
        self._reading_paused = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        self._idle_timer = loop.call_at(self._last_active + IDLE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def pause_writing(self) -> None:
        # A client that does not read its answers stops being read from.
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._last_active = asyncio.get_running_loop().time()
        self._buf += data
        out: list[bytes] = []
        try:
            self._serve(out)
        finally:
            if out and self._transport is not None:
                self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self._closing and self._transport is not None:
            self._transport.close()
        elif self._handed_off:
            self._hand_off()

    def close(self) -> None:
        """Closes the connection (the master stops)."""
        if self._transport is not None:
            self._transport.close()
        self._forget()

    def _serve(self, out: list[bytes]) -> None:
        """Answers every complete request in the buffer; stops at one for aiohttp."""
        buf = self._buf
        while buf and not self._closing:
            end = buf.find(b"\r\n\r\n", 0, _MAX_HEAD)
            if end < 0:
                if len(buf) >= _MAX_HEAD:
                    self._handed_off = True
                return
            request = _parse_head(bytes(buf[:end]))
            if request is None or request.length > self._max_body:
                self._handed_off = True
                return
            body_end = request.body_start + request.length
            if len(buf) < body_end:
                return  # the rest of the body is on its way
            body = bytes(buf[request.body_start : body_end])
            try:
                reply = self._handler.scheduler_reply(request.path, request.headers, body)
            except Exception:
                log.exception("Scheduler call failed")
                reply = text(500, "500 Internal Server Error\n\nServer got itself in trouble")
            if reply is None:
                self._handed_off = True
                return
            del buf[:body_end]
            out.append(encode_reply(reply, request.close))
            self._closing = request.close

    def _hand_off(self) -> None:
        """Gives the connection, and what it has buffered, to a new aiohttp handler."""
        transport = self._transport
        self._forget()
        if transport is None or transport.is_closing():
            return
        if self._reading_paused:
            # aiohttp does its own flow control and would never resume reading.
            self._reading_paused = False
            transport.resume_reading()
        protocol = self._aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            protocol.data_received(data)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._transport is None or self._handed_off:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_active >= IDLE_TIMEOUT:
            self.close()
        else:
            self._idle_timer = loop.call_at(self._last_active + IDLE_TIMEOUT, self._check_idle)

    def _forget(self) -> None:
        self._transport = None
        self._connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
