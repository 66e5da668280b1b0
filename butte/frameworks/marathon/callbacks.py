"""Marathon's HTTP callback event subscriber (``--event_subscriber http_callback``,
docs/marathon.md "Events"): every event of the bus (`/v2/events` has the same) is POSTed as
JSON to each subscribed URL, in order, one request at a time per URL.

Subscriptions come from ``--http_endpoints`` and ``/v2/eventSubscriptions`` (kept in the
store, so they survive a restart and a leader change). A subscriber that cannot keep up
(more than `QUEUE_LIMIT` events waiting) loses the oldest, and one that fails (refused, an
error status, no answer within `POST_TIMEOUT`) loses that event, both logged once a minute
at most: as with Marathon, callbacks are best effort, and a consumer that needs every event
reads the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import aiohttp

log = logging.getLogger("butte.marathon")

QUEUE_LIMIT = 10_000  # events waiting per subscriber
POST_TIMEOUT = 10.0  # seconds per POST
_LOG_EVERY = 60.0  # seconds between two warnings about one subscriber
STORE_KEY = "event_subscriptions"  # the "meta" record that lists the subscribed URLs


def callback_url_problem(url: Any) -> str | None:
    """Why ``url`` cannot be a callback URL (None: it can): an absolute http(s) URL."""
    if not isinstance(url, str) or not url:
        return "callbackUrl is required"
    if len(url) > 2048:
        return "callbackUrl is too long"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"callbackUrl {url!r} is not an http:// or https:// URL"
    return None


class HttpCallbacks:
    """The subscribed URLs and, for each, a queue and the task that posts from it."""

    def __init__(self, urls: Iterable[str] = ()) -> None:
        self.urls: list[str] = []
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._warned: dict[str, float] = {}
        self.posted = 0
        self.dropped = 0
        for url in urls:
            self.subscribe(url)

    def subscribe(self, url: str) -> bool:
        """Adds a subscriber; False when it is one already."""
        if url in self.urls:
            return False
        self.urls.append(url)
        self._queues[url] = asyncio.Queue(QUEUE_LIMIT)
        return True

    def unsubscribe(self, url: str) -> bool:
        """Removes a subscriber (what it had waiting is dropped); False when it was none."""
        if url not in self.urls:
            return False
        self.urls.remove(url)
        self._queues.pop(url, None)
        worker = self._workers.pop(url, None)
        if worker is not None:
            worker.cancel()
        return True

    def publish(self, event: dict[str, Any]) -> None:
        """Queues ``event`` for every subscriber (its oldest event goes when it is full)."""
        if not self.urls:
            return
        body = json.dumps(event).encode()
        for url, queue in self._queues.items():
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
                self._warn(url, f"too slow: more than {QUEUE_LIMIT} events waiting")
            queue.put_nowait(body)
            if url not in self._workers:
                self._workers[url] = asyncio.create_task(self._post_all(url, queue))

    async def _post_all(self, url: str, queue: asyncio.Queue[bytes]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT),
                headers={"Content-Type": "application/json"},
            )
        session = self._session
        while True:
            body = await queue.get()
            try:
                async with session.post(url, data=body, allow_redirects=False) as answer:
                    await answer.read()
                    if answer.status >= 400:
                        raise aiohttp.ClientError(f"answered {answer.status}")
                self.posted += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                self.dropped += 1
                self._warn(url, f"an event was not delivered: {type(e).__name__}: {e}")

    def _warn(self, url: str, message: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(url, -_LOG_EVERY) >= _LOG_EVERY:
            self._warned[url] = now
            log.warning("event subscriber %s: %s", url, message)

    async def close(self) -> None:
        """Stops posting (what is still waiting is dropped)."""
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._session is not None:
            await self._session.close()
            self._session = None
