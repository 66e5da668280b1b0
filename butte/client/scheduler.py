"""Asyncio client for the Mesos v1 scheduler HTTP API (docs/protocol.md §1).

A Python framework uses it like this::

    async with SchedulerClient("127.0.0.1:5050", {"name": "demo"}) as client:
        async for event in client:          # plain dicts, exactly as the master sent them
            if event["type"] == "OFFERS":
                for offer in event["offers"]["offers"]:
                    await client.decline([offer])

The client behaves like a well-mannered real framework: it SUBSCRIBEs with a POST to
``/api/v1/scheduler``, keeps the ``Mesos-Stream-Id`` of the subscription and sends it with
every other call, follows ``307`` redirects to the leading master (``Location:
//host:port/path``), retries ``503`` and connection failures with exponential backoff, and
resubscribes with its framework id when the event stream breaks or when no event (heartbeats
included) arrived for ``missed_heartbeats`` heartbeat intervals. The SUBSCRIBED event of every
resubscription is delivered again so the framework knows to reconcile.

Calls go over keep-alive HTTP/1.1 connections with pipelining (`butte.client.http1`): calls
made in one event-loop iteration leave in one write, so a framework that acknowledges a burst
of updates with one task per ACKNOWLEDGE costs the master and itself one socket write for the
lot; the subscription's event stream has a connection of its own. Calls are not retried (the
master may have carried out a call whose answer was lost).

Calls that the master answers with a non-2xx status raise `CallError` carrying the master's
message (``status`` None: not sent, connection lost or no answer within ``call_timeout``).
An ``ERROR`` event (framework removed, failed over elsewhere ...) is delivered and
then ends the iteration; the client does not resubscribe after it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import logging
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from yarl import URL

from butte.client.http1 import Http1Pool, post_request, request_prefix
from butte.coord.interface import CoordinationError
from butte.coord.url import ZkUrl, is_zk_url, parse_zk_url
from butte.core.auth import basic_header
from butte.core.codec import RecordIOReader, encode_json
from butte.core.messages import FrameworkInfo, Msg
from butte.core.tls import TlsError, client_context_for

if TYPE_CHECKING:
    from butte.coord.detector import LeaderDetector

log = logging.getLogger(__name__)

SCHEDULER_PATH = "/api/v1/scheduler"
DEFAULT_HEARTBEAT_INTERVAL = 15.0
_MAX_REDIRECTS = 5
# Statuses that mean "no usable leader right now, try again later".
_RETRYABLE_STATUSES = frozenset({502, 503, 504})

Event = dict[str, Any]
IdLike = str | Mapping[str, Any] | Msg


class SchedulerError(Exception):
    """Base of every error this client raises."""


class MasterUnreachable(SchedulerError):
    """No leading master accepted the subscription within the retry timeout."""


class SubscriptionError(SchedulerError):
    """The master refused the subscription (first event was ERROR, or a 4xx answer)."""


class CallError(SchedulerError):
    """A call the master answered with a non-2xx status (or could not be sent at all)."""

    def __init__(self, call_type: str, status: int | None, message: str) -> None:
        self.call_type = call_type
        self.status = status
        self.message = message
        where = f"HTTP {status}" if status is not None else "not sent"
        super().__init__(f"{call_type} failed ({where}): {message}")


def connection_failure(error: BaseException) -> str:
    """Why a connection failed, in a few words ("connection refused", "host not found"),
    instead of aiohttp's text (which names the connect call and ``ssl:default``)."""
    if isinstance(error, TimeoutError):
        return "timed out"
    cause = getattr(error, "os_error", None)  # aiohttp.ClientConnectorError wraps an OSError
    if not isinstance(cause, OSError):
        cause = error if isinstance(error, OSError) else None
    if isinstance(cause, socket.gaierror):
        return f"host not found ({cause.strerror})" if cause.strerror else "host not found"
    if cause is not None and cause.errno:
        return os.strerror(cause.errno).lower()
    return str(error) or type(error).__name__


class _Retry(Exception):
    """Internal: this subscription attempt failed in a way worth retrying."""


class _EndOfEvents:
    """Queue marker: the subscription is over and the iteration ends."""


_END = _EndOfEvents()


def as_id(value: IdLike) -> dict[str, Any]:
    """Normalizes an id given as ``"x"``, ``{"value": "x"}``, an ID struct, or an object that
    carries one under ``id`` (an offer) to the wire form ``{"value": "x"}``."""
    if type(value) is dict and type(value.get("value")) is str:
        return {"value": value["value"]}  # the common case, before the slower checks
    if isinstance(value, Msg):
        value = msgspec.to_builtins(value)
    if isinstance(value, str):
        return {"value": value}
    if isinstance(value, Mapping):
        if isinstance(value.get("value"), str):
            return {"value": value["value"]}
        if "id" in value:
            return as_id(value["id"])
    raise TypeError(f"cannot use {value!r} as a Mesos id")


def _builtins(value: Any) -> Any:
    """Plain JSON values for structs (and containers of structs); dicts pass through."""
    if isinstance(value, Msg):
        return msgspec.to_builtins(value)
    if isinstance(value, Mapping):
        return {k: _builtins(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_builtins(v) for v in value]
    return value


def _filters(refuse_seconds: float | None) -> dict[str, Any]:
    return {} if refuse_seconds is None else {"filters": {"refuse_seconds": refuse_seconds}}


def _master_addresses(master: str) -> list[str]:
    """``host:port`` entries of ``--master`` (``h1:5050,h2:5050``, ``http://h:5050``)."""
    if master.startswith("zk://") or master.startswith("file://"):
        raise SchedulerError(
            f"master {master!r}: ZooKeeper discovery is not supported by this client; "
            "give host:port of a master (non-leaders redirect to the leader)"
        )
    out = []
    for part in filter(None, (p.strip() for p in master.split(","))):
        url = URL(part if "//" in part else f"http://{part}")
        if not url.host:
            raise SchedulerError(f"bad master address {part!r}: expected host:port")
        out.append(f"{url.host}:{url.explicit_port or 5050}")
    if not out:
        raise SchedulerError("no master address given")
    return out


def _tls_context(master: str) -> ssl.SSLContext | None:
    """The client TLS context for ``master``: ``https://`` addresses, or any address with
    LIBPROCESS_SSL_ENABLED; None for plain HTTP."""
    https = any(p.strip().lower().startswith("https://") for p in master.split(","))
    try:
        return client_context_for("https" if https else "", os.environ)
    except TlsError as e:
        raise SchedulerError(str(e)) from None


def redirect_target(location: str) -> str:
    """The ``host:port`` a 307 ``Location`` names (``//host:port/path`` or an absolute URL)."""
    url = URL(f"http:{location}" if location.startswith("//") else location)
    if not url.host:
        raise ValueError(f"redirect without a host: {location!r}")
    return f"{url.host}:{url.explicit_port or 5050}"


# msgspec parses events about twice as fast as json.loads, into the same plain values.
_decode_event = msgspec.json.Decoder().decode


class _Stream:
    """One open SUBSCRIBE response: its RecordIO parser and already-parsed events."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.stream_id = response.headers.get("Mesos-Stream-Id")
        self._reader = RecordIOReader()
        self._pending: deque[Event] = deque()

    async def next_event(self, timeout: float | None) -> Event | None:
        """The next event; None when the master closed the stream. Raises TimeoutError when
        nothing at all arrived for ``timeout`` seconds (the heartbeat watchdog)."""
        while not self._pending:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that
            # races a chunk's arrival (close() then hung on a busy stream), and it costs a
            # Task per read.
            async with asyncio.timeout(timeout):
                chunk = await self.response.content.readany()
            if not chunk:
                return None
            for data in self._reader.feed(chunk):
                event = _decode_event(data)
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    raise ValueError(f"malformed event {data[:200]!r}")
                self._pending.append(event)
        return self._pending.popleft()

    def close(self) -> None:
        self.response.close()


class SchedulerClient:
    """A framework's connection to the master: subscription, event stream and every call."""

    def __init__(
        self,
        master: str,
        framework_info: Mapping[str, Any] | FrameworkInfo,
        *,
        suppressed_roles: Iterable[str] = (),
        retry_timeout: float | None = 60.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        missed_heartbeats: int = 5,
        call_timeout: float = 30.0,
        principal: str | None = None,
        secret: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``master`` is ``host:port`` (several may be given comma-separated, ``https://``
        for TLS, as is a bare ``host:port`` with LIBPROCESS_SSL_ENABLED; ``ssl_context``
        replaces the one built from ``LIBPROCESS_SSL_*``, docs/operating.md "TLS"); the framework
        info needs at least ``name``; ``user`` defaults to the current user. A ``retry_timeout``
        of None retries (re)subscribing forever. ``principal`` and ``secret`` authenticate the
        framework (HTTP Basic) to a master run with ``--authenticate_frameworks``."""
        info = dict(_builtins(framework_info))
        self._auth_headers: dict[str, str] = {}
        if principal is not None:
            info.setdefault("principal", principal)
            self._auth_headers["Authorization"] = basic_header(principal, secret or "")
        info.setdefault("user", getpass.getuser())
        info.setdefault("hostname", socket.gethostname())
        self.framework_info: dict[str, Any] = info
        self.suppressed_roles = list(suppressed_roles)
        # zk://... : the leader is detected (and followed) through ZooKeeper.
        self._zk: ZkUrl | None = None
        self._detector: LeaderDetector | None = None
        if is_zk_url(master):
            try:
                self._zk = parse_zk_url(master)
            except ValueError as e:
                raise SchedulerError(f"bad master {master!r}: {e}") from None
            self._masters: list[str] = []
        else:
            self._masters = _master_addresses(master)
        self.leader = self._masters[0] if self._masters else ""
        self._ssl = ssl_context if ssl_context is not None else _tls_context(master)
        self._retry_timeout = retry_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._missed_heartbeats = missed_heartbeats
        self._call_timeout = call_timeout
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self.stream_id: str | None = None
        # The SUBSCRIBE stream goes through aiohttp; calls through lean pipelined
        # keep-alive connections (see butte.client.http1).
        self._session: aiohttp.ClientSession | None = None
        self._http: Http1Pool | None = None
        self._request_prefixes: dict[tuple[str, str | None], bytes] = {}
        self._stream: _Stream | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Event | _EndOfEvents | BaseException] = asyncio.Queue()
        self._closing = False
        self._ended = False

    # -- properties ------------------------------------------------------------------------

    @property
    def framework_id(self) -> str | None:
        """The framework id the master assigned (None before the first SUBSCRIBED)."""
        fid = self.framework_info.get("id")
        return fid.get("value") if isinstance(fid, Mapping) else None

    @property
    def url(self) -> str:
        """The scheduler endpoint on the current leader."""
        scheme = "http" if self._ssl is None else "https"
        return f"{scheme}://{self.leader}{SCHEDULER_PATH}"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> SchedulerClient:
        await self.subscribe()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def subscribe(self) -> Event:
        """Subscribes (retrying per the constructor's settings) and starts reading events.
        Returns the SUBSCRIBED event, which is also the first event the iteration yields.
        Raises MasterUnreachable or SubscriptionError."""
        if self._reader_task is not None:
            raise SchedulerError("already subscribed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._http is None:
            self._http = Http1Pool(ssl_context=self._ssl)
        try:
            await self._start_detector()
            subscribed = await self._subscribe_with_retry()
        except BaseException:
            await self.close()  # nothing else will release the connections
            raise
        self._reader_task = asyncio.create_task(self._read_events())
        return subscribed

    async def close(self) -> None:
        """Stops reading events and releases the connections; the framework is not torn down
        (call `teardown` for that)."""
        self._closing = True
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._detector is not None:
            await self._detector.stop()
            self._detector = None
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)

    # -- events ----------------------------------------------------------------------------

    def __aiter__(self) -> SchedulerClient:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if isinstance(item, _EndOfEvents):
            self._queue.put_nowait(item)  # every later call ends too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(_END)
            raise item
        return item

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None once the subscription has ended. Raises TimeoutError if
        none arrives within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            return None

    async def _read_events(self) -> None:
        """Background task: moves events from the stream to the queue, resubscribing when
        the stream breaks or goes quiet, until closed, torn down, or told ERROR."""
        try:
            while True:
                stream = self._stream
                assert stream is not None
                fatal = await self._pump(stream)
                stream.close()
                self._stream = None
                if fatal or self._closing:
                    break
                log.info("event stream from %s ended; resubscribing", self.leader)
                await self._subscribe_with_retry()
        except SchedulerError as e:
            self._queue.put_nowait(e)
        finally:
            if not self._ended:
                self._ended = True
                self._queue.put_nowait(_END)

    async def _pump(self, stream: _Stream) -> bool:
        """Queues events until the stream ends; True if it ended with an ERROR event."""
        watchdog = self._missed_heartbeats * self.heartbeat_interval
        while True:
            try:
                event = await stream.next_event(watchdog)
            except TimeoutError:
                log.warning("no event for %.1fs (missed heartbeats)", watchdog)
                return False
            except (aiohttp.ClientError, ValueError) as e:
                log.warning("event stream broke: %s", e)
                return False
            if event is None:
                return False
            self._queue.put_nowait(event)
            if event["type"] == "ERROR":
                return True

    # -- subscription ----------------------------------------------------------------------

    async def _subscribe_with_retry(self) -> Event:
        """Subscribes, retrying 503s and connection failures with backoff until the retry
        timeout; follows redirects. Queues and returns the SUBSCRIBED event."""
        deadline = None if self._retry_timeout is None else time.monotonic() + self._retry_timeout
        delay, delay_max = self._backoff
        attempt = 0
        while True:
            if self._detector is not None:
                await self._wait_detected_leader(deadline)
            try:
                return await self._subscribe_following_leader()
            except _Retry as e:
                reason = str(e)
            attempt += 1
            if self._masters:
                # Rotate through the configured masters: any of them may be the one that is up.
                self.leader = self._masters[attempt % len(self._masters)]
            if deadline is not None and time.monotonic() + delay > deadline:
                raise MasterUnreachable(f"cannot subscribe to master: {reason}")
            log.info("subscribe failed (%s); retrying in %.1fs", reason, delay)
            if self._detector is not None:
                await self._detector.wait_change(delay)  # a new leader ends the wait early
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, delay_max)

    # -- ZooKeeper detection ---------------------------------------------------------------

    async def _start_detector(self) -> None:
        if self._zk is None or self._detector is not None:
            return
        from butte.coord.detector import LeaderDetector  # kazoo: only when asked for

        timeout = self._retry_timeout if self._retry_timeout is not None else 60.0
        detector = LeaderDetector(
            self._zk, connect_timeout=max(timeout, 1.0), on_change=self._leader_changed
        )
        try:
            await detector.start()
        except CoordinationError as e:
            raise MasterUnreachable(str(e)) from None
        self._detector = detector

    async def _subscribe_following_leader(self) -> Event:
        """`_subscribe_once`, given up when ZooKeeper names another leader meanwhile (a
        redirect may have led to a frozen ex-leader that never answers)."""
        if self._detector is None:
            return await self._subscribe_once()
        attempt = asyncio.ensure_future(self._subscribe_once())
        changed = asyncio.ensure_future(self._detector.wait_change())
        try:
            await asyncio.wait({attempt, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if attempt.done():
            return attempt.result()
        attempt.cancel()
        await asyncio.wait({attempt})
        raise _Retry("the leading master changed")

    async def _wait_detected_leader(self, deadline: float | None) -> None:
        assert self._detector is not None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.leader = await self._detector.wait_leader(remaining)
        except TimeoutError as e:
            raise MasterUnreachable(str(e)) from None

    def _leader_changed(self, address: str | None) -> None:
        """ZooKeeper named another leader: leave the old one's stream (it may be frozen
        and never close it) so that the reader resubscribes with the new leader."""
        if address is None or address == self.leader:
            return
        log.info("leading master changed to %s", address)
        old, self.leader = self.leader, address
        if self._stream is not None:
            self._stream.close()
        # Calls in flight to the old leader fail now rather than wait out the call timeout
        # on a master that may be frozen, as Mesos' scheduler library drops them.
        if self._http is not None:
            self._http.close_address(old)

    def _subscribe_body(self) -> dict[str, Any]:
        subscribe: dict[str, Any] = {"framework_info": self.framework_info}
        if self.suppressed_roles:
            subscribe["suppressed_roles"] = self.suppressed_roles
        body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": subscribe}
        if self.framework_id is not None:
            body["framework_id"] = {"value": self.framework_id}
        return body

    async def _subscribe_once(self) -> Event:
        response = await self._open_subscription()
        stream = _Stream(response)
        try:
            first = await stream.next_event(self._call_timeout)
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            stream.close()
            raise _Retry(f"no SUBSCRIBED event from {self.leader}: {e or 'timeout'}") from None
        if first is None:
            stream.close()
            raise _Retry(f"{self.leader} closed the subscription without an event")
        if first["type"] == "ERROR":
            stream.close()
            message = first.get("error", {}).get("message", "unknown error")
            raise SubscriptionError(f"master refused the subscription: {message}")
        if first["type"] != "SUBSCRIBED":
            stream.close()
            raise _Retry(f"first event was {first['type']}, expected SUBSCRIBED")
        subscribed = first.get("subscribed", {})
        if "framework_id" not in subscribed:
            stream.close()
            raise SubscriptionError(f"SUBSCRIBED event without a framework_id: {first}")
        self.framework_info["id"] = as_id(subscribed["framework_id"])
        self.heartbeat_interval = float(
            subscribed.get("heartbeat_interval_seconds", DEFAULT_HEARTBEAT_INTERVAL)
        )
        self.stream_id = stream.stream_id
        self._stream = stream
        self._queue.put_nowait(first)
        return first

    async def _open_subscription(self) -> aiohttp.ClientResponse:
        """POSTs SUBSCRIBE, following redirects; returns the 200 streaming response."""
        assert self._session is not None
        body = encode_json(self._subscribe_body())
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._call_timeout)
        for _ in range(_MAX_REDIRECTS):
            try:
                response = await self._session.post(
                    self.url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        **self._auth_headers,
                    },
                    allow_redirects=False,
                    timeout=timeout,
                    ssl=self._ssl if self._ssl is not None else True,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise _Retry(f"{self.leader}: {connection_failure(e)}") from None
            if response.status == 200:
                return response
            text = (await response.text(errors="replace")).strip()
            response.release()
            if response.status == 307 and "Location" in response.headers:
                self.leader = redirect_target(response.headers["Location"])
                continue
            if response.status in _RETRYABLE_STATUSES:
                raise _Retry(f"{self.leader} answered {response.status}: {text}")
            raise SubscriptionError(
                f"SUBSCRIBE rejected by {self.leader} (HTTP {response.status}): {text}"
            )
        raise _Retry("too many redirects")

    # -- calls -----------------------------------------------------------------------------

    async def call(self, call_type: str, payload: Mapping[str, Any] | None = None) -> bytes:
        """Sends one non-SUBSCRIBE call; returns the response body of a 2xx answer, raises
        CallError otherwise. ``payload`` goes under the lower-cased call type."""
        if self.framework_id is None or self._http is None:
            raise CallError(call_type, None, "not subscribed")
        body: dict[str, Any] = {"framework_id": {"value": self.framework_id}, "type": call_type}
        if payload is not None:
            body[call_type.lower()] = payload
        try:
            # Dicts, lists and message structs encode as they are (the common case, and the
            # hot path of a busy framework's ACKNOWLEDGE calls) ...
            data = encode_json(body)
        except TypeError:
            # ... other Mapping or sequence types are converted first.
            if payload is not None:
                body[call_type.lower()] = _builtins(payload)
            data = encode_json(body)
        target = self.leader
        for _ in range(_MAX_REDIRECTS):
            request = post_request(self._request_prefix(target), data)
            try:
                reply = await self._http.request(target, request, self._call_timeout)
            except (OSError, TimeoutError) as e:  # ConnectionError is an OSError
                raise CallError(call_type, None, f"{target}: {e or type(e).__name__}") from None
            location = reply.headers.get("location")
            if reply.status == 307 and location:
                target = redirect_target(location)
                continue
            if 200 <= reply.status < 300:
                return reply.body
            message = reply.body.decode("utf-8", "replace").strip() or reply.reason
            raise CallError(call_type, reply.status, message)
        raise CallError(call_type, None, "too many redirects")

    def _request_prefix(self, target: str) -> bytes:
        """The request head of a call to ``target`` up to its Content-Length (cached: the
        stream id changes only with a new subscription)."""
        key = (target, self.stream_id)
        prefix = self._request_prefixes.get(key)
        if prefix is None:
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                **self._auth_headers,
            }
            if self.stream_id is not None:
                headers["Mesos-Stream-Id"] = self.stream_id
            if len(self._request_prefixes) > 16:
                self._request_prefixes.clear()
            prefix = self._request_prefixes[key] = request_prefix(target, SCHEDULER_PATH, headers)
        return prefix

    async def teardown(self) -> None:
        """Removes the framework: the master kills its tasks and closes the event stream."""
        self._closing = True
        await self.call("TEARDOWN")

    async def accept(
        self,
        offer_ids: Iterable[IdLike],
        operations: Iterable[Mapping[str, Any] | Msg] = (),
        refuse_seconds: float | None = None,
    ) -> None:
        """Accepts offers (ids or offer dicts) with operations; unused resources are declined
        with the given filter."""
        payload = {
            "offer_ids": [as_id(o) for o in offer_ids],
            # Dicts go as they are; call() converts what msgspec cannot encode.
            "operations": [op if isinstance(op, dict) else _builtins(op) for op in operations],
            **_filters(refuse_seconds),
        }
        await self.call("ACCEPT", payload)

    async def launch(
        self,
        offer: Mapping[str, Any],
        tasks: Iterable[Mapping[str, Any] | Msg],
        refuse_seconds: float | None = None,
    ) -> None:
        """Launches tasks (TaskInfo dicts or structs) on one offer; a task without
        ``agent_id`` gets the offer's."""
        task_infos = []
        agent_id = None
        for task in tasks:
            info = dict(task) if isinstance(task, dict) else dict(_builtins(task))
            if "agent_id" not in info:
                agent_id = agent_id or as_id(offer["agent_id"])
                info["agent_id"] = agent_id
            task_infos.append(info)
        operation = {"type": "LAUNCH", "launch": {"task_infos": task_infos}}
        await self.accept([offer], [operation], refuse_seconds)

    async def decline(
        self, offer_ids: Iterable[IdLike], refuse_seconds: float | None = None
    ) -> None:
        """Declines offers; their resources are not offered again for ``refuse_seconds``."""
        payload = {"offer_ids": [as_id(o) for o in offer_ids], **_filters(refuse_seconds)}
        await self.call("DECLINE", payload)

    async def accept_inverse_offers(
        self, inverse_offer_ids: Iterable[IdLike], refuse_seconds: float | None = None
    ) -> None:
        """Agrees to give back the resources of inverse offers (maintenance)."""
        ids = [as_id(o) for o in inverse_offer_ids]
        await self.call(
            "ACCEPT_INVERSE_OFFERS", {"inverse_offer_ids": ids, **_filters(refuse_seconds)}
        )

    async def decline_inverse_offers(
        self, inverse_offer_ids: Iterable[IdLike], refuse_seconds: float | None = None
    ) -> None:
        """Refuses inverse offers."""
        ids = [as_id(o) for o in inverse_offer_ids]
        await self.call(
            "DECLINE_INVERSE_OFFERS", {"inverse_offer_ids": ids, **_filters(refuse_seconds)}
        )

    async def revive(self, roles: Iterable[str] = ()) -> None:
        """Clears offer filters and un-suppresses the roles (all roles when empty)."""
        roles = list(roles)
        await self.call("REVIVE", {"roles": roles} if roles else None)
        # Remembered so that a resubscription keeps the same suppression state.
        self.suppressed_roles = [r for r in self.suppressed_roles if roles and r not in roles]

    async def suppress(self, roles: Iterable[str] = ()) -> None:
        """Stops offers for the roles (all roles when empty); status updates still flow."""
        roles = list(roles)
        await self.call("SUPPRESS", {"roles": roles} if roles else None)
        for role in roles or self.roles():
            if role not in self.suppressed_roles:
                self.suppressed_roles.append(role)

    def roles(self) -> list[str]:
        """The roles this framework subscribes with (``roles`` if MULTI_ROLE, else ``role``)."""
        info = self.framework_info
        capabilities = {c.get("type") for c in info.get("capabilities", ())}
        if "MULTI_ROLE" in capabilities:
            return list(info.get("roles", ()))
        return [info.get("role") or "*"]

    async def kill(
        self,
        task_id: IdLike,
        agent_id: IdLike | None = None,
        grace_period: float | None = None,
    ) -> None:
        """Kills a task; ``grace_period`` seconds between SIGTERM and SIGKILL if given."""
        payload: dict[str, Any] = {"task_id": as_id(task_id)}
        if agent_id is not None:
            payload["agent_id"] = as_id(agent_id)
        if grace_period is not None:
            nanos = int(grace_period * 1e9)
            payload["kill_policy"] = {"grace_period": {"nanoseconds": nanos}}
        await self.call("KILL", payload)

    async def shutdown(self, executor_id: IdLike, agent_id: IdLike) -> None:
        """Shuts an executor down (and with it its tasks)."""
        await self.call(
            "SHUTDOWN", {"executor_id": as_id(executor_id), "agent_id": as_id(agent_id)}
        )

    async def acknowledge(self, agent_id: IdLike, task_id: IdLike, uuid: str) -> None:
        """Acknowledges a status update; ``uuid`` is the base64 string from ``status.uuid``."""
        await self.call(
            "ACKNOWLEDGE",
            {"agent_id": as_id(agent_id), "task_id": as_id(task_id), "uuid": uuid},
        )

    async def acknowledge_status(self, status: Mapping[str, Any]) -> bool:
        """Acknowledges a TaskStatus if it needs it (it has a ``uuid``; master-generated
        updates have none and must not be acknowledged). True if an ACK was sent."""
        if not status.get("uuid") or "agent_id" not in status:
            return False
        await self.acknowledge(status["agent_id"], status["task_id"], status["uuid"])
        return True

    async def acknowledge_operation_status(
        self,
        agent_id: IdLike,
        uuid: str,
        operation_id: IdLike,
        resource_provider_id: IdLike | None = None,
    ) -> None:
        """Acknowledges an operation status update (``uuid`` is base64 bytes)."""
        payload: dict[str, Any] = {
            "agent_id": as_id(agent_id),
            "uuid": uuid,
            "operation_id": as_id(operation_id),
        }
        if resource_provider_id is not None:
            payload["resource_provider_id"] = as_id(resource_provider_id)
        await self.call("ACKNOWLEDGE_OPERATION_STATUS", payload)

    async def reconcile(self, tasks: Iterable[IdLike | tuple[IdLike, IdLike | None]] = ()) -> None:
        """Asks for the latest state of tasks (task ids, ``(task_id, agent_id)`` pairs or
        ``{"task_id":..., "agent_id":...}`` dicts); empty asks about every known task."""
        entries = []
        for task in tasks:
            if isinstance(task, tuple):
                task_id, agent_id = task
            elif isinstance(task, Mapping) and "task_id" in task:
                task_id, agent_id = task["task_id"], task.get("agent_id")
            else:
                task_id, agent_id = task, None
            entry = {"task_id": as_id(task_id)}
            if agent_id is not None:
                entry["agent_id"] = as_id(agent_id)
            entries.append(entry)
        await self.call("RECONCILE", {"tasks": entries})

    async def reconcile_operations(self, operations: Iterable[Mapping[str, Any]] = ()) -> None:
        """Asks for the latest state of offer operations (empty: all known ones)."""
        await self.call("RECONCILE_OPERATIONS", {"operations": [dict(o) for o in operations]})

    async def message(self, agent_id: IdLike, executor_id: IdLike, data: bytes) -> None:
        """Sends opaque bytes to an executor (best effort)."""
        payload = {
            "agent_id": as_id(agent_id),
            "executor_id": as_id(executor_id),
            "data": base64.b64encode(data).decode("ascii"),
        }
        await self.call("MESSAGE", payload)

    async def request(self, requests: Iterable[Mapping[str, Any]]) -> None:
        """Sends resource requests (the built-in allocator ignores them)."""
        await self.call("REQUEST", {"requests": [dict(r) for r in requests]})

    async def update_framework(
        self,
        framework_info: Mapping[str, Any] | FrameworkInfo | None = None,
        suppressed_roles: Iterable[str] | None = None,
        offer_constraints: Mapping[str, Any] | None = None,
    ) -> None:
        """Changes the FrameworkInfo (roles, name, capabilities ...) without resubscribing;
        the stored info is updated only once the master accepted it."""
        info = dict(_builtins(framework_info)) if framework_info else dict(self.framework_info)
        if self.framework_id is not None:
            info["id"] = {"value": self.framework_id}
        info.setdefault("user", self.framework_info.get("user"))
        payload: dict[str, Any] = {"framework_info": info}
        roles = self.suppressed_roles if suppressed_roles is None else list(suppressed_roles)
        if roles:
            payload["suppressed_roles"] = roles
        if offer_constraints is not None:
            payload["offer_constraints"] = dict(offer_constraints)
        await self.call("UPDATE_FRAMEWORK", payload)
        self.framework_info = info
        self.suppressed_roles = roles
