"""A limit on the open connections of a listener (``--max_connections``, butte's own flag).

`ConnectionLimit.wrap` turns a protocol factory for ``loop.create_server`` into one whose
connections are admitted while fewer than ``limit`` are open. An admitted connection is
handed to the wrapped protocol at once (``transport.set_protocol``: nothing stays in its
path, and a protocol that hands the transport on to another, as the master's lean HTTP
path does, works unchanged). An excess connection is answered ``503 Service Unavailable``
with ``Connection: close`` (on a TLS listener it is only closed: the client expects a
handshake) and closed; connections already open are not touched.

Open connections are the admitted transports not yet closing; the set is pruned only when
it reaches the limit, so admitting costs O(1) until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEFAULT_MAX_CONNECTIONS = 65536

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 34\r\n\r\nToo many connections; retry later\n"
)


class ConnectionLimit:
    """Admits at most ``limit`` open connections (0: no limit) of the listeners it wraps."""

    def __init__(self, limit: int, answer_http: bool = True) -> None:
        self.limit = limit
        self.answer_http = answer_http
        self.refused = 0
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
        """``factory`` itself with no limit, else a factory of gates (module docstring)."""
        if self.limit <= 0:
            return factory
        return lambda: _Gate(self, factory)


class _Gate(asyncio.Protocol):
    """Lets one connection through to a fresh protocol, or refuses it."""

    def __init__(self, limit: ConnectionLimit, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._limit = limit
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limit.admit(transport):
            if self._limit.answer_http and isinstance(transport, asyncio.WriteTransport):
                transport.write(_REFUSAL)
            transport.close()
            return
        inner = self._factory()
        transport.set_protocol(inner)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass  # a refused connection's request, read while it closes

    def connection_lost(self, exc: Exception | None) -> None:
        pass
