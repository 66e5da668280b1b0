"""A listener's first protocol when TLS is on: TLS, or plain HTTP where that is allowed.

`TlsSniffer` waits for a connection's first bytes. A TLS handshake record (first byte
0x16) wraps the connection in TLS (asyncio's own `SSLProtocol`, exactly what
``create_server(ssl=...)`` builds, fed the bytes already read) around a fresh protocol of the
listener; anything else is plain HTTP, served by the same protocol without TLS when
``allow_plain(peer)`` says so (``LIBPROCESS_SSL_SUPPORT_DOWNGRADE``, or an agent's own
executors on loopback) and otherwise answered ``400`` naming TLS, then closed. The protocol
behind either sees an ordinary transport: ``get_extra_info("ssl_object")`` tells a TLS
connection from a plain one.

This is an asyncio shell piece (it owns transports); the settings come from `butte.core.tls`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from butte.core.tls import TLS_HANDSHAKE_BYTE, TlsConfig

log = logging.getLogger(__name__)

# A connection that sends nothing this long after connecting is closed (as a TLS
# handshake that does not complete is).
FIRST_BYTE_TIMEOUT = 30.0
_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
_REFUSAL_TEXT = b"This server requires TLS: use https://\n"


def plain_refusal() -> bytes:
    """The answer to plain HTTP sent to a listener that requires TLS."""
    return _REFUSAL % (len(_REFUSAL_TEXT), _REFUSAL_TEXT)


def is_local(peer: Any, local: Any) -> bool:
    """Whether a connection comes from this machine: its peer (``peername``) is a loopback
    address or the address it connected to (``sockname``)."""
    if not isinstance(peer, tuple) or not peer:
        return False
    host = str(peer[0])
    if host.startswith(("127.", "::ffff:127.")) or host == "::1":
        return True
    return isinstance(local, tuple) and bool(local) and host == str(local[0])


class TlsSniffer(asyncio.Protocol):
    """One accepted connection until its first bytes say TLS or plain (module docstring)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        allow_plain: Callable[[asyncio.Transport], bool],
        handshake_timeout: float = FIRST_BYTE_TIMEOUT,
    ) -> None:
        self._context = context
        self._protocol_factory = protocol_factory
        self._allow_plain = allow_plain
        self._handshake_timeout = handshake_timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(
            self._handshake_timeout, transport.close
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        self._forget()
        if transport is None or not data:
            return
        if data[0] == TLS_HANDSHAKE_BYTE:
            self._start_tls(transport, data)
        elif self._allow_plain(transport):
            protocol = self._protocol_factory()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if isinstance(protocol, asyncio.BufferedProtocol):
                _feed_buffered(protocol, data)
            else:
                assert isinstance(protocol, asyncio.Protocol)
                protocol.data_received(data)
        else:
            peer = transport.get_extra_info("peername")
            log.info("Plain HTTP from %s refused: TLS required", peer)
            transport.write(plain_refusal())
            transport.close()

    def _start_tls(self, transport: asyncio.Transport, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(_handshake_done)
        ssl_protocol = sslproto.SSLProtocol(
            loop,
            self._protocol_factory(),
            self._context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=int(self._handshake_timeout),
        )
        transport.set_protocol(ssl_protocol)
        ssl_protocol.connection_made(transport)
        _feed_buffered(ssl_protocol, data)

    def _forget(self) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view)))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _handshake_done(waiter: asyncio.Future[None]) -> None:
    # A failed handshake (a client that does not trust this certificate, one without the
    # certificate REQUIRE_CERT asks for) closes the connection; it is the client's error.
    if not waiter.cancelled() and (exc := waiter.exception()) is not None:
        log.info("TLS handshake failed: %s", exc)


class TlsListen:
    """How a listener speaks TLS: its server context and whether plain HTTP is let in."""

    def __init__(self, context: ssl.SSLContext, downgrade: bool) -> None:
        self.context = context
        self.downgrade = downgrade

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsListen | None:
        """None unless LIBPROCESS_SSL_ENABLED; `TlsError` for bad settings or files."""
        config = TlsConfig.from_env(env)
        if not config.enabled:
            return None
        return cls(config.server_context(), config.support_downgrade)

    def wrap(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        plain_from_local: bool = False,
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``create_server`` that serves ``protocol_factory``'s
        protocols over TLS, and over plain HTTP with downgrade (or, with
        ``plain_from_local``, to clients on this machine: an agent's executors)."""

        def allow_plain(transport: asyncio.Transport) -> bool:
            if self.downgrade:
                return True
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            return plain_from_local and is_local(peer, local)

        return lambda: TlsSniffer(self.context, protocol_factory, allow_plain)


def plain_paths_only(paths: frozenset[str]) -> Any:
    """An aiohttp middleware for a TLS listener that lets local clients in over plain HTTP
    (`TlsListen.wrap` with ``plain_from_local``): a plain request for any path but
    ``paths`` is answered 400, as a plain connection from elsewhere is."""
    from aiohttp import web

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        if request.path not in paths and (
            transport is None or transport.get_extra_info("ssl_object") is None
        ):
            refusal = web.Response(status=400, text=_REFUSAL_TEXT.decode())
            refusal.force_close()  # as a plain connection from elsewhere is closed
            return refusal
        return await handler(request)

    return middleware


async def listen_runner(runner: Any, host: str, port: int, tls: TlsListen | None) -> asyncio.Server:
    """Binds an aiohttp ``AppRunner``'s server on ``host:port``: over TLS when ``tls`` is
    given (plain HTTP too with LIBPROCESS_SSL_SUPPORT_DOWNGRADE), else plain. For the
    framework REST listeners (``butte marathon``, ``butte chronos``), which honour
    LIBPROCESS_SSL_* as the master and agent do."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    factory = server if tls is None else tls.wrap(server)
    return await asyncio.get_running_loop().create_server(
        factory, host, port, reuse_address=True, backlog=1024
    )
