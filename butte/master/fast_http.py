"""The master's HTTP listener: scheduler calls on a lean path, everything else through aiohttp.

A busy framework makes two or three calls per task (ACCEPT, then an ACKNOWLEDGE for each
status update), and through aiohttp's server each call cost about as much CPU as the master's
own handling of it (request object, header multidict, URL parsing, a task per connection,
a response object, a socket write per response). Every connection starts with
`SchedulerFastPath`, which serves the requests that are a plain non-SUBSCRIBE scheduler call:

    POST /api/v1/scheduler (or /master/api/v1/scheduler) HTTP/1.1
    Content-Length: <n>              (no Transfer-Encoding, no Expect, no Upgrade)
    Mesos-Stream-Id: <id>

and only while this master acts as leader. Every request is first checked by llhttp
(``httptools``): a malformed one (a space before a header's colon, control characters in a
value, bare LF line ends, a repeated ``Content-Length``, HTTP/1.1 without ``Host``) is
answered 400 and the connection closed. The call is decoded, run and answered
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

import httptools
from aiohttp.http import SERVER_SOFTWARE

log = logging.getLogger(__name__)

SCHEDULER_PATHS = frozenset({b"/api/v1/scheduler", b"/master/api/v1/scheduler"})
# Request heads are small: a bigger one is answered 431 here (aiohttp would log a traceback
# for each one).
_MAX_HEAD = 8 * 1024
# Headers that make a request one for aiohttp.
_SLOW_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Mesos closes idle connections after a while; aiohttp's default keep-alive timeout.
IDLE_TIMEOUT = 75.0
# A request's head must arrive whole this long after its first byte (as servers' header
# timeouts do): a client that dribbles a byte now and then does not hold a connection.
HEADER_TIMEOUT = 30.0


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


def header_fields(lines: list[bytes]) -> dict[bytes, bytes] | None:
    """A request head's header lines (already checked by the HTTP parser) as lower-cased
    name -> value; None for a repeated name (the lean paths leave those to aiohttp's rules)."""
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if not sep or key in headers:
            return None
        headers[key] = value.strip()
    return headers


class _Request(NamedTuple):
    """A complete scheduler call the fast path serves."""

    path: str
    headers: dict[str, str]
    body: bytes
    close: bool
    # Bytes it takes in the connection's buffer (blank lines before it, head and body).
    size: int


class _HandOff(Exception):
    """Raised from a parser callback: the request is one for aiohttp; stop parsing."""


class _BadRequest(Exception):
    """Raised from a parser callback: valid to llhttp, but not a request to serve."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _RequestParser:
    """Requests of one connection through llhttp (``httptools``), the parser uvicorn uses
    (aiohttp's C parser is llhttp too), so that what the fast path accepts is valid HTTP/1.1.

    `feed` returns the scheduler calls completed by the bytes given, in order, and stops at
    the first request that is not one (``handed_off``) or that is malformed (``error``).
    llhttp only validates and finds the ends of heads and messages: the request line,
    headers and body are then sliced from the connection's buffer, which costs less than a
    Python callback per header. The caller owns the buffer: it drops each served request's
    ``size`` bytes from its front after `feed`, and hands everything from the first unserved
    request to aiohttp.
    """

    __slots__ = (
        "_parser",
        "_max_body",
        "_buf",
        "_start",
        "_head",
        "_done",
        "handed_off",
        "error",
        "error_status",
    )

    def __init__(self, max_body: int) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._max_body = max_body
        self._buf = bytearray()
        # Offset in the buffer of the message being parsed, and its parsed head.
        self._start = 0
        self._head: tuple[str, dict[str, str], int] = ("", {}, 0)
        self._done: list[_Request] = []
        self.handed_off = False
        self.error: str | None = None
        self.error_status = 400

    def feed(self, buf: bytearray, data: bytes) -> list[_Request]:
        """Parses ``data``, just appended to ``buf``; every complete request before it has
        been dropped from ``buf`` (so the message under way starts at its front)."""
        self._buf = buf
        # The caller dropped the requests the last feed completed (``_start`` bytes): a head
        # parsed then, whose body was still on its way, moved to the front with them.
        if self._start:
            path, headers, body_start = self._head
            self._head = (path, headers, body_start - self._start)
            self._start = 0
        self._done = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _HandOff):
                self.handed_off = True
            elif isinstance(e.__context__, _BadRequest):
                self.error = str(e.__context__)
                self.error_status = e.__context__.status
            else:  # a bug here: the connection is answered 500 and closed, never left hanging
                log.error("Parsing a request failed", exc_info=e.__context__)
                self.error, self.error_status = "the request could not be parsed", 500
        except httptools.HttpParserUpgrade:
            self.handed_off = True  # on_headers_complete handed it off first; not reached
        except httptools.HttpParserError as e:
            self.error = str(e) or "malformed request"
        return self._done

    # -- llhttp callbacks ------------------------------------------------------------

    def on_headers_complete(self) -> None:
        buf = self._buf
        start = self._start
        while buf.startswith(b"\r\n", start):  # blank lines llhttp skips between messages
            start += 2
        # Valid to llhttp, so CRLF line ends and the head ends at its first empty line.
        end = buf.index(b"\r\n\r\n", start)
        if end - start > _MAX_HEAD:
            raise _BadRequest(f"request head over {_MAX_HEAD} bytes", 431)
        lines = bytes(buf[start:end]).split(b"\r\n")
        fields = header_fields(lines[1:])
        # The request line is valid: "<method> <target> HTTP/<d>.<d>".
        method, path, version = lines[0].split(b" ")
        if fields is not None and b"host" not in fields and version == b"HTTP/1.1":
            raise _BadRequest("HTTP/1.1 request without a Host header")
        if fields is None or version != b"HTTP/1.1" or method != b"POST":
            raise _HandOff  # repeated fields, HTTP/1.0 keep-alive rules, other methods
        length = fields.get(b"content-length")
        if (
            path not in SCHEDULER_PATHS
            or not _SLOW_HEADERS.isdisjoint(fields)
            or b"mesos-stream-id" not in fields  # SUBSCRIBE (or a call missing it)
            or length is None
            or int(length) > self._max_body
        ):
            raise _HandOff
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}
        self._head = (path.decode("ascii"), headers, end + 4)

    def on_message_complete(self) -> None:
        path, headers, body_start = self._head
        body_end = body_start + int(headers["content-length"])
        body = bytes(self._buf[body_start:body_end])
        close = headers.get("connection", "").lower() == "close"
        self._done.append(_Request(path, headers, body, close, body_end - self._start))
        self._start = body_end


class SchedulerFastPath(asyncio.Protocol):
    """One connection, served here until a request needs aiohttp (module docstring)."""

    def __init__(
        self,
        handler: CallHandler,
        aiohttp_protocol: Callable[[], asyncio.Protocol],
        connections: set[SchedulerFastPath],
        max_body: int,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self._handler = handler
        self._aiohttp_protocol = aiohttp_protocol
        self._connections = connections
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._parser = _RequestParser(max_body)
        self._handed_off = False
        self._closing = False
        # Reading paused because the client does not read its answers (pause_writing).
        self._reading_paused = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

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
            self._serve(data, out)
        finally:
            if out and self._transport is not None:
                self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self._closing and self._transport is not None:
            self._transport.close()
        elif self._handed_off:
            self._hand_off()
        elif not self._buf or self._buf.find(b"\r\n\r\n", 0, _MAX_HEAD) >= 0:
            self._cancel_head_timer()  # no request under way, or its head is complete
        elif self._head_timer is None:
            self._head_timer = asyncio.get_running_loop().call_later(
                self._header_timeout, self._head_timed_out
            )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._transport is not None and not self._handed_off:
            log.info("Request head not complete in %.0f s; closing", self._header_timeout)
            self._transport.write(encode_reply(text(408, "Request Timeout"), close=True))
            self.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def close(self) -> None:
        """Closes the connection (the master stops)."""
        if self._transport is not None:
            self._transport.close()
        self._forget()

    def _serve(self, data: bytes, out: list[bytes]) -> None:
        """Answers every complete request; stops at one for aiohttp or a malformed one."""
        parser = self._parser
        for request in parser.feed(self._buf, data):
            if self._closing:
                return  # requests after "Connection: close" are not answered
            try:
                reply = self._handler.scheduler_reply(request.path, request.headers, request.body)
            except Exception:
                log.exception("Scheduler call failed")
                reply = text(500, "500 Internal Server Error\n\nServer got itself in trouble")
            if reply is None:
                self._handed_off = True  # this master does not lead: aiohttp redirects
                return
            del self._buf[: request.size]
            out.append(encode_reply(reply, request.close))
            self._closing = request.close
        if self._closing:
            return
        if parser.handed_off:
            self._handed_off = True
        elif parser.error is not None:
            self._refuse(out, parser.error_status, parser.error)
        elif len(self._buf) > _MAX_HEAD and self._buf.find(b"\r\n\r\n", 0, _MAX_HEAD) < 0:
            self._refuse(out, 431, f"request head over {_MAX_HEAD} bytes")

    def _refuse(self, out: list[bytes], status: int, error: str) -> None:
        """Answers a request that will not be served and closes the connection; logged in
        one line, since bad input from outside is not the master's error."""
        log.info("HTTP request refused (%d): %s", status, error)
        phrase = HTTPStatus(status).phrase
        out.append(encode_reply(text(status, f"{phrase}: {error}"), close=True))
        self._closing = True

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
        self._cancel_head_timer()
