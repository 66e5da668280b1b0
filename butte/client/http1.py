"""A lean HTTP/1.1 client for the scheduler API's calls: keep-alive connections with
pipelining, one socket write per loop iteration.

A busy framework makes two or three calls per task (ACCEPT, ACKNOWLEDGE of TASK_STARTING
and of TASK_RUNNING). Through a general HTTP client each call costs about as much CPU as
the master's handling of it; here a call is a few bytes appended to a connection's output:

* one keep-alive connection per master address carries every call (more are opened only
  when one has ``max_pipeline`` calls outstanding);
* requests made in one event-loop iteration go out in one write, and since HTTP/1.1
  answers pipelined requests in order, responses are matched to calls by position;
* one timer per connection watches the oldest outstanding call: when it passes its deadline
  the connection is aborted (a later answer could no longer be matched to its call) and
  every call on it fails.

A call whose connection breaks before its answer arrived fails (`ConnectionError`); it is
not retried, because the master may have carried it out (calls such as ACCEPT are not
idempotent). Connections idle for longer than ``idle_timeout`` are replaced before use, so
that a call does not race the master closing an idle keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

import httptools


class HttpReply(NamedTuple):
    """One HTTP response: status, reason phrase, headers (lower-cased names; read-only, the
    dict may be shared with other replies), body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class _Pending:
    """A request waiting for its response."""

    __slots__ = ("future", "deadline")

    def __init__(self, future: asyncio.Future[HttpReply], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class _ResponseParser:
    """Incremental HTTP/1.1 response parser on llhttp (``httptools``): feed bytes, get
    complete replies back. llhttp also decodes chunked bodies, so the client has no
    hand-written framing of its own."""

    __slots__ = ("_parser", "_status", "_reason", "_fields", "_body", "_in_message", "_done")

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._fields: list[bytes] = []
        self._body: list[bytes] = []
        # A response has begun and not ended (its body may run until the connection closes).
        self._in_message = False
        self._done: list[HttpReply] = []

    def feed(self, data: bytes) -> list[HttpReply]:
        """The responses completed by ``data``; raises ValueError on a malformed response."""
        self._done = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise ValueError(str(e) or "malformed response") from None
        return self._done

    def finish(self) -> HttpReply | None:
        """The connection closed: the response whose body ran until now, if any (one with
        neither ``Content-Length`` nor chunked framing)."""
        if not self._in_message or not self._fields:
            return None
        status, reason, headers = self._head()
        if "content-length" in headers or "chunked" in headers.get("transfer-encoding", ""):
            return None  # cut short
        self._in_message = False
        return HttpReply(status, reason, headers, b"".join(self._body))

    def _head(self) -> tuple[int, str, dict[str, str]]:
        return _parsed_head(self._parser.get_status_code(), self._reason, tuple(self._fields))

    # -- llhttp callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reason = b""
        self._fields = []
        self._body = []
        self._in_message = True

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += (name, value)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        status, reason, headers = self._head()
        if 100 <= status < 200:
            return  # informational (100 Continue): the real answer follows
        if not self._parser.should_keep_alive() and "connection" not in headers:
            headers = {**headers, "connection": "close"}  # HTTP/1.0 without keep-alive
        self._done.append(HttpReply(status, reason, headers, b"".join(self._body)))


# Parsed response heads by their parts: a master's answers to one kind of call differ only
# in their Date, so nearly every head is one seen before. (Replies share the headers dict.)
_HEADS: dict[tuple[int, bytes, tuple[bytes, ...]], tuple[int, str, dict[str, str]]] = {}


def _parsed_head(
    status: int, reason: bytes, fields: tuple[bytes, ...]
) -> tuple[int, str, dict[str, str]]:
    key = (status, reason, fields)
    parsed = _HEADS.get(key)
    if parsed is None:
        headers: dict[str, str] = {}
        for i in range(0, len(fields), 2):
            name = fields[i].decode("latin-1").lower()
            if name not in headers:  # the first of repeated headers, as aiohttp's .get()
                headers[name] = fields[i + 1].decode("latin-1")
        parsed = (status, reason.decode("latin-1"), headers)
        if len(_HEADS) >= 256:
            _HEADS.clear()
        _HEADS[key] = parsed
    return parsed


class _Connection(asyncio.Protocol):
    """One keep-alive connection: pipelined requests, responses matched in order."""

    def __init__(self, pool: Http1Pool, address: str) -> None:
        self._pool = pool
        self.address = address
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Pending] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._parser = _ResponseParser()
        self._timer: asyncio.TimerHandle | None = None
        self.usable = True  # takes new requests (no Connection: close seen, not broken)
        self.idle_since = self._loop.time()
        self._connecting: asyncio.Task[None] | None = self._loop.create_task(self._connect())

    @property
    def outstanding(self) -> int:
        """Requests sent (or queued) and not yet answered."""
        return len(self._pending)

    async def _connect(self) -> None:
        host, _, port = self.address.rpartition(":")
        try:
            context = self._pool.ssl_context
            await self._loop.create_connection(
                lambda: self,
                host,
                int(port),
                ssl=context,
                server_hostname=host.strip("[]") if context is not None else None,
            )
        except (OSError, ValueError, ssl.SSLError) as e:
            self._connecting = None  # done: _fail must not cancel this very task
            self._fail(ConnectionError(str(e) or type(e).__name__))
        finally:
            self._connecting = None

    def request(self, data: bytes, timeout: float) -> asyncio.Future[HttpReply]:
        """Queues one complete request; the future gets its response."""
        future: asyncio.Future[HttpReply] = self._loop.create_future()
        self._pending.append(_Pending(future, self._loop.time() + timeout))
        if self._timer is None:
            self._timer = self._loop.call_at(self._pending[0].deadline, self._check_deadline)
        self._out.append(data)
        if not self._flush_scheduled and self._transport is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self._transport.write(data)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._pending:
            return
        head = self._pending[0]
        if head.deadline <= self._loop.time():
            self._fail(TimeoutError("no answer in time"))
        else:
            self._timer = self._loop.call_at(head.deadline, self._check_deadline)

    # -- protocol callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._out:
            self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ValueError as e:
            self._fail(ConnectionError(f"bad response: {e}"))
            return
        for reply in replies:
            self._answer(reply)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        reply = self._parser.finish()
        if reply is not None:
            self._answer(reply)
        self._transport = None
        self._fail(ConnectionError(f"connection closed ({exc})" if exc else "connection closed"))

    def _answer(self, reply: HttpReply) -> None:
        if not self._pending:
            self._fail(ConnectionError("response without a request"))
            return
        pending = self._pending.popleft()
        if not pending.future.done():  # a cancelled caller's answer is dropped
            pending.future.set_result(reply)
        if reply.headers.get("connection", "").lower() == "close":
            self.usable = False
        if not self._pending:
            self.idle_since = self._loop.time()

    def _fail(self, error: Exception) -> None:
        """Ends the connection and every call still waiting on it."""
        self.usable = False
        self._pool.forget(self)
        if self._connecting is not None:
            self._connecting.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._out.clear()
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        """Closes the connection; calls still waiting fail."""
        self._fail(ConnectionError("client closed"))


class Http1Pool:
    """Keep-alive, pipelining HTTP/1.1 connections to a few ``host:port`` addresses."""

    def __init__(
        self,
        max_pipeline: int = 256,
        max_connections: int = 4,
        idle_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Connections speak TLS with this context (None: plain HTTP).
        self.ssl_context = ssl_context
        self._max_pipeline = max_pipeline
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._connections: dict[str, list[_Connection]] = {}

    def request(self, address: str, data: bytes, timeout: float) -> asyncio.Future[HttpReply]:
        """Sends one complete request (head and body) to ``address``; the future gets the
        response, or fails with ConnectionError / TimeoutError."""
        return self._connection(address).request(data, timeout)

    def _connection(self, address: str) -> _Connection:
        conns = self._connections.setdefault(address, [])
        best: _Connection | None = None
        for conn in list(conns):
            if not conn.usable:
                conns.remove(conn)
                continue
            if not conn.outstanding and conn.idle_since + self._idle_timeout < _now():
                conn.close()
                continue
            if best is None or conn.outstanding < best.outstanding:
                best = conn
        if best is None or (
            best.outstanding >= self._max_pipeline and len(conns) < self._max_connections
        ):
            best = _Connection(self, address)
            conns.append(best)
        return best

    def forget(self, conn: _Connection) -> None:
        """Drops a connection that can take no more requests."""
        conns = self._connections.get(conn.address)
        if conns is not None:
            with contextlib.suppress(ValueError):
                conns.remove(conn)

    def close_address(self, address: str) -> None:
        """Closes the connections to ``address``: its calls still waiting fail at once."""
        for conn in self._connections.pop(address, []):
            conn.close()

    def close(self) -> None:
        """Closes every connection (calls still waiting fail)."""
        for conns in list(self._connections.values()):
            for conn in list(conns):
                conn.close()
        self._connections.clear()


def _now() -> float:
    return asyncio.get_running_loop().time()


def request_prefix(address: str, path: str, headers: Mapping[str, str]) -> bytes:
    """The head of a POST request up to its Content-Length: `post_request` completes it."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {address}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def post_request(prefix: bytes, body: bytes) -> bytes:
    """A complete request: `request_prefix`'s head, Content-Length and the body."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body)
