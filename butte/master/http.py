"""HTTP plumbing shared by the master's endpoints: prefix routing, request checks, replies.

Mesos routes ``/a/b/c`` to the longest registered prefix and serves every master route under
``/master/...`` too (docs/protocol.md §0.2); `PrefixRouter` reproduces that on top of aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from butte.core.codec import encode_json
from butte.core.durations import parse_duration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 16 * 1024 * 1024

log = logging.getLogger(__name__)


class RecordStream:
    """One streaming (RecordIO) response fed through a queue, so that effects never await:
    `put` encoded records, `close` to end it; `serve` writes what queued up as it comes, one
    chunk per burst (an allocation's OFFERS, a wave of UPDATEs), not one write per record.

    ``line_flush``, when given, is a record (the scheduler stream's HEARTBEAT) appended to
    every burst that does not already end with it. A client that reads the stream line by
    line (mesoshttp) completes a record's line only when the next record's length and its
    newline arrive; without this it would see each burst's last event only at the next
    heartbeat, up to 15 s later. Extra heartbeats are valid events for every client
    (docs/protocol.md §0.3, §6.4).

    A reader that falls ``max_backlog`` records or ``max_backlog_bytes`` bytes behind is
    disconnected (``on_overflow`` is told), so a client that never reads cannot grow the
    master's memory without bound."""

    __slots__ = (
        "queue",
        "closed",
        "_max_backlog",
        "_max_bytes",
        "_queued_bytes",
        "_line_flush",
        "_on_overflow",
    )

    def __init__(
        self,
        max_backlog: int | None = None,
        line_flush: bytes | None = None,
        max_backlog_bytes: int | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self._max_backlog = max_backlog
        self._max_bytes = max_backlog_bytes
        self._queued_bytes = 0
        self._line_flush = line_flush
        self._on_overflow = on_overflow

    def put(self, data: bytes) -> None:
        if self.closed:
            return
        if (self._max_backlog is not None and self.queue.qsize() >= self._max_backlog) or (
            self._max_bytes is not None and self._queued_bytes + len(data) > self._max_bytes
        ):
            log.warning(
                "Stream reader too slow (%d records, %d bytes behind); closing it",
                self.queue.qsize(),
                self._queued_bytes,
            )
            self.close()
            if self._on_overflow is not None:
                self._on_overflow()
            return
        self._queued_bytes += len(data)
        self.queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def serve(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        """Streams until `close` or until the client goes away."""
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", **headers}
        )
        response.enable_chunked_encoding()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await response.prepare(request)
            while data := await self.queue.get():
                parts: list[bytes | None] = [data]
                while parts[-1] is not None and not self.queue.empty():
                    parts.append(self.queue.get_nowait())
                records = [p for p in parts if p is not None]
                self._queued_bytes -= sum(map(len, records))
                if self._line_flush is not None and records[-1] != self._line_flush:
                    records.append(self._line_flush)
                await response.write(b"".join(records))
                if parts[-1] is None:
                    break
        self.closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response


class PrefixRouter:
    """Longest-prefix routing with a ``/master`` alias for every route."""

    def __init__(self, alias: str = "/master") -> None:
        self._routes: dict[str, Handler] = {}
        self._alias = alias

    def add(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler
        if self._alias and not path.startswith(self._alias + "/"):
            self._routes.setdefault(self._alias + path, handler)

    def resolve(self, path: str) -> Handler | None:
        path = path.rstrip("/") or "/"
        while True:
            handler = self._routes.get(path)
            if handler is not None:
                return handler
            if path in ("", "/"):
                return None
            path = path.rsplit("/", 1)[0] or "/"

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        handler = self.resolve(request.path)
        if handler is None:
            return text_reply(404, f"No endpoint at '{request.path}'")
        return await handler(request)


def text_reply(
    status: int, message: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    """A plain-text reply; always with Content-Length (http.client clients need it)."""
    return web.Response(status=status, text=message, headers=headers)


def metrics_query_problem(request: web.Request) -> web.Response | None:
    """``/metrics/snapshot``'s ``timeout`` must be a duration (libprocess answers 400
    otherwise); the figures are at hand, so a valid one is not waited on."""
    text = request.query.get("timeout")
    if text is None:
        return None
    try:
        parse_duration(text)
    except ValueError as e:
        return text_reply(400, f"Invalid timeout '{text[:60]}': {e}")
    return None


def json_reply(body: object, status: int = 200) -> web.Response:
    """``body`` as JSON (`jsonp_middleware` wraps it for ``?jsonp=``)."""
    return web.Response(status=status, body=encode_json(body), content_type="application/json")


@web.middleware
async def jsonp_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers a GET with ``?jsonp=<callback>`` by ``<callback>(<json>);`` as text/javascript
    wherever the endpoint's reply is JSON, as every Mesos JSON endpoint does (Mesos' web UI
    reads agents' endpoints this way, from another origin)."""
    response = await handler(request)
    callback = request.query.get("jsonp")
    if (
        not callback
        or request.method != "GET"
        or type(response) is not web.Response
        or response.content_type != "application/json"
        or not isinstance(response.body, bytes)
    ):
        return response
    if not callback.replace("_", "").replace(".", "").isalnum():
        return text_reply(400, "Invalid 'jsonp' callback name")
    wrapped = web.Response(
        status=response.status,
        body=callback.encode() + b"(" + response.body + b");",
        content_type="text/javascript",
    )
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            wrapped.headers.add(name, value)
    return wrapped


def api_request_error(
    method: str, content_type: str | None, accept: str, content_length: int | None
) -> tuple[int, str, dict[str, str]] | None:
    """The v1 API request rules: POST only, a JSON content type, a sane size, an acceptable
    Accept. None if the request passes, else (status, text, headers) of the refusal."""
    if method != "POST":
        return 405, f"Expecting a 'POST' request, received '{method}'", {"Allow": "POST"}
    if not content_type:
        return 400, "Expecting 'Content-Type' to be present", {}
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-protobuf":
        return 415, "butte speaks the JSON form of the v1 API only", {}
    if media != "application/json":
        return 415, f"Expecting 'Content-Type' of application/json, got '{content_type}'", {}
    if accept and not _accepts_json(accept):
        return 406, f"Expecting 'Accept' to allow application/json, got '{accept}'", {}
    if content_length is not None and content_length > MAX_BODY:
        return 413, f"Request body larger than {MAX_BODY} bytes", {}
    return None


async def read_api_body(request: web.Request) -> bytes | web.Response:
    """Applies `api_request_error`'s rules. Returns the body, or the error reply to send."""
    error = api_request_error(
        request.method,
        request.headers.get("Content-Type"),
        request.headers.get("Accept", ""),
        request.content_length,
    )
    if error is not None:
        status, message, headers = error
        return text_reply(status, message, headers or None)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return text_reply(413, f"Request body larger than {MAX_BODY} bytes")


def _accepts_json(accept: str) -> bool:
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("application/json", "*/*", "application/*", "application/recordio"):
            return True
    return False
