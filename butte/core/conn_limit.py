"""A limit on the open connections of a listener (``--max_connections``, butte's own flag).

`ConnectionLimit.wrap` turns a protocol factory for ``loop.create_server`` into one whose
connections are admitted while fewer than ``limit`` are open. An admitted connection is
handed to the wrapped protocol at once (``transport.set_protocol``: nothing stays in its
path, and a protocol that hands the transport on to another, as the master's lean HTTP
path does, works unchanged). An excess connection is answered ``503 Service Unavailable``
with ``Connection: close`` (on a TLS listener it is only closed: the client expects a
handshake) and closed; connections already open are not touched.

The limit is never above three quarters of the process's open-file limit (`fd_cap`): past
that, ``accept`` itself fails (EMFILE), no connection is answered at all, and the process
cannot open the files and sockets its work needs.

With ``head_timeout`` (plain HTTP listeners whose server has no deadline of its own, the
agent's), the gate stays in the connection's path until its first request head is
complete, forwarding what it reads, and closes the connection with ``408`` if that takes
longer: an idle or trickling client then holds its connection for that long, not for ever.

Open connections are the admitted transports not yet closing; the set is pruned only when
it reaches the limit, so admitting costs O(1) until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_CONNECTIONS = 65536
HEAD_TIMEOUT = 30.0
ACCEPT_ERROR_LOG_INTERVAL = 60.0

log = logging.getLogger(__name__)

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 34\r\n\r\nToo many connections; retry later\n"
)


_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 16\r\n\r\nRequest Timeout\n"
)


def raise_fd_limit() -> int:
    """Raises this process's open-file soft limit to the hard limit (every connection and
    every task holds descriptors; the usual soft limit is 1024); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def fd_cap() -> int:
    """The most connections a listener admits whatever ``--max_connections`` says: three
    quarters of the open-file soft limit, the rest left for files, tasks and other sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(64, soft * 3 // 4)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Makes ``loop`` log an ``accept`` failure (out of file descriptors) as one line a
    minute instead of a traceback each time asyncio retries it, which filled the disk with
    a flood of connections; every other error goes to the default handler."""
    last = -ACCEPT_ERROR_LOG_INTERVAL

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last
        if str(context.get("message", "")).startswith("socket.accept() out of system"):
            now = time.monotonic()
            if now - last >= ACCEPT_ERROR_LOG_INTERVAL:
                last = now
                log.warning("cannot accept connections: %s", context.get("exception"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class ConnectionLimit:
    """Admits at most ``limit`` open connections (0: no limit but `fd_cap`) of the
    listeners it wraps; with ``head_timeout``, closes those whose first request head is not
    complete in time (the module docstring)."""

    def __init__(
        self, limit: int, answer_http: bool = True, head_timeout: float | None = None
    ) -> None:
        cap = fd_cap()
        self.limit = min(limit, cap) if limit > 0 else cap
        self.answer_http = answer_http
        self.head_timeout = head_timeout if answer_http else None
        self.refused = 0
        self.timed_out = 0
        self._open: set[asyncio.BaseTransport] = set()

    def open_connections(self) -> int:
        self._prune()
        return len(self._open)

    def _prune(self) -> None:
        self._open = {t for t in self._open if not t.is_closing()}

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether one more connection may be open (and counts it if so)."""
        if len(self._open) >= self.limit:
            self._prune()
            if len(self._open) >= self.limit:
                self.refused += 1
                return False
        self._open.add(transport)
        return True

    def wrap(
        self, factory: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """A factory of gates around ``factory`` (module docstring)."""
        return lambda: _Gate(self, factory)


class _Gate(asyncio.Protocol):
    """Lets one connection through to a fresh protocol, or refuses it; with a head
    timeout, stays in its path until the first request head is complete."""

    def __init__(self, limit: ConnectionLimit, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._limit = limit
        self._factory = factory
        self._inner: Any = None  # the protocol data is forwarded to while the head comes
        self._transport: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limit.admit(transport):
            if self._limit.answer_http and isinstance(transport, asyncio.WriteTransport):
                transport.write(_REFUSAL)
            transport.close()
            return
        inner = self._factory()
        timeout = self._limit.head_timeout
        if not timeout:
            transport.set_protocol(inner)
            inner.connection_made(transport)
            return
        self._inner, self._transport = inner, transport
        inner.connection_made(transport)
        self._timer = asyncio.get_running_loop().call_later(timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        if self._inner is None or self._transport.is_closing():
            return
        self._limit.timed_out += 1
        self._transport.write(_TIMED_OUT)
        self._transport.close()

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport.set_protocol(self._inner)
        self._inner = None

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return  # a refused connection's request, read while it closes
        seen = self._tail + data
        if b"\r\n\r\n" in seen:
            self._hand_over()
        else:
            self._tail = seen[-3:]
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._inner = None
            inner.connection_lost(exc)
