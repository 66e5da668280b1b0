"""The master's RecordIO stream (`butte.master.http.RecordStream`): bursts end with the
line-flush record, and a reader that falls too far behind is dropped and counted."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from butte.core.codec import record
from butte.core.recordio import RecordIOReader
from butte.master.http import RecordStream

HEARTBEAT = record({"type": "HEARTBEAT"})


def test_every_burst_ends_with_the_line_flush_record() -> None:
    async def scenario() -> list[bytes]:
        stream = RecordStream(line_flush=HEARTBEAT)

        async def handler(request: web.Request) -> web.StreamResponse:
            return await stream.serve(request, {})

        app = web.Application()
        app.router.add_get("/", handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/")
            reader = RecordIOReader()
            records: list[bytes] = []
            stream.put(record({"type": "OFFERS"}))
            stream.put(record({"type": "UPDATE"}))
            while len(records) < 3:
                records += reader.feed(await response.content.readany())
            stream.put(HEARTBEAT)  # a burst that ends with one gets no second
            stream.put(record({"type": "RESCIND"}))
            stream.close()
            records += reader.feed(await response.content.read())
            return records

    records = asyncio.run(scenario())
    heartbeat = HEARTBEAT.split(b"\n", 1)[1]
    assert records[:3] == [b'{"type":"OFFERS"}', b'{"type":"UPDATE"}', heartbeat]
    assert records[3:] == [heartbeat, b'{"type":"RESCIND"}', heartbeat]


def test_a_reader_too_far_behind_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        dropped: list[int] = []
        stream = RecordStream(max_backlog_bytes=1000, on_overflow=lambda: dropped.append(1))
        for _ in range(9):
            stream.put(b"x" * 100)
        assert not stream.closed and not dropped
        stream.put(b"x" * 101)  # 1,001 bytes queued: over the bound
        assert stream.closed and dropped == [1]
        stream.put(b"late")  # ignored once closed
        assert dropped == [1] and stream.queue.qsize() == 10  # nine records and the end

    asyncio.run(scenario())
