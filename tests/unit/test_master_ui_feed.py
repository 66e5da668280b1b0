"""The web UI's change feed (butte/master/ui_feed.py) over real HTTP in-process: the first
record, CHANGES built from the core's operator events, heartbeats, and the core asked to
build events only while a feed is open."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from butte.master.events import OperatorSubscribers
from butte.master.ui_feed import ChangeFeed


async def _record(content: asyncio.StreamReader) -> dict:
    length = int(await asyncio.wait_for(content.readline(), 5))
    return json.loads(await asyncio.wait_for(content.readexactly(length), 5))


def test_feed_sends_changes_and_heartbeats_and_stops_listening_when_closed():
    async def main() -> None:
        machine = SimpleNamespace(operator_subscribers=0)
        events = OperatorSubscribers(machine)  # type: ignore[arg-type]  # only the counter
        feed = ChangeFeed(events, period=0.05, heartbeat=0.2)
        app = web.Application()
        app.router.add_route("*", "/master/ui/changes", feed.serve)
        async with TestClient(TestServer(app)) as client:
            assert machine.operator_subscribers == 0
            response = await client.get("/master/ui/changes")
            first = await _record(response.content)
            assert first["type"] == "SUBSCRIBED"
            assert first["subscribed"]["period_seconds"] == 0.05
            assert machine.operator_subscribers == 1  # the core now builds events
            events.publish(
                {
                    "type": "TASK_UPDATED",
                    "task_updated": {
                        "framework_id": {"value": "f1"},
                        "status": {"task_id": {"value": "t1"}, "agent_id": {"value": "a1"}},
                        "state": "TASK_FAILED",
                    },
                }
            )
            changes = await _record(response.content)
            assert changes["type"] == "CHANGES"
            assert changes["changes"]["tasks"] == ["t1"]
            assert changes["changes"]["agents"] == ["a1"]
            assert changes["changes"]["frameworks"] == ["f1"]
            assert (await _record(response.content))["type"] == "HEARTBEAT"
            refused = await client.post("/master/ui/changes")
            assert refused.status == 405
            response.close()
            for _ in range(100):
                if machine.operator_subscribers == 0:
                    break
                await asyncio.sleep(0.02)
            assert machine.operator_subscribers == 0 and len(feed) == 0

    asyncio.run(main())
