"""HTTP callback delivery (butte/frameworks/marathon/callbacks.py) against loopback: events
go to each subscriber in order; a subscriber that refuses loses the event, one too far
behind loses its oldest, and neither stops the others."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import web

from butte.frameworks.marathon import callbacks
from butte.frameworks.marathon.callbacks import HttpCallbacks, callback_url_problem


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_callback_urls_are_absolute_http_urls() -> None:
    assert callback_url_problem("http://127.0.0.1:8000/x") is None
    assert callback_url_problem("https://hooks.example/e") is None
    for bad in (None, "", "ftp://x/y", "/relative", "http://", 7, "http://" + "a" * 3000):
        assert callback_url_problem(bad) is not None, bad


def test_events_go_in_order_and_a_bad_subscriber_stops_nobody(monkeypatch: Any) -> None:
    monkeypatch.setattr(callbacks, "QUEUE_LIMIT", 3)

    async def scenario() -> None:
        got: list[dict[str, Any]] = []

        async def receive(request: web.Request) -> web.Response:
            got.append(json.loads(await request.read()))
            return web.Response()

        app = web.Application()
        app.router.add_post("/e", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        good = f"http://127.0.0.1:{port}/e"
        refused = f"http://127.0.0.1:{_closed_port()}/e"
        hub = HttpCallbacks([refused, good])
        assert not hub.subscribe(good) and hub.urls == [refused, good]
        try:
            for n in range(3):
                hub.publish({"eventType": "x", "n": n})
            for _ in range(200):
                if len(got) == 3 and hub.dropped >= 3:
                    break
                await asyncio.sleep(0.02)
            assert [e["n"] for e in got] == [0, 1, 2]
            assert hub.posted == 3 and hub.dropped >= 3  # the refused one lost its events
            # A subscriber too far behind loses its oldest events (the queue holds 3).
            assert hub.unsubscribe(refused) and not hub.unsubscribe(refused)
            assert hub.unsubscribe(good)
            stalled = "http://127.0.0.1:9/never-started"
            hub.subscribe(stalled)
            hub._workers[stalled] = asyncio.create_task(asyncio.sleep(3600))  # not posting
            dropped = hub.dropped
            for n in range(5):
                hub.publish({"n": n})
            assert hub.dropped == dropped + 2
            queued = [json.loads(b) for b in hub._queues[stalled]._queue]  # type: ignore[attr-defined]
            assert [e["n"] for e in queued] == [2, 3, 4]
        finally:
            await hub.close()
            await runner.cleanup()

    asyncio.run(scenario())
