"""Hostile input against Chronos' REST API in-process (the routes of `ChronosServer`, no
master): what tests/fuzz/test_framework_api_fuzz.py found answered outside Chronos' error
shape or with a 5xx is now a 4xx ``{"status": ..., "message": ...}``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from butte.cli.local import HOST, free_port
from butte.frameworks.chronos.server import ChronosServer, Settings
from butte.testing.chronos import ChronosProcess
from tests.unit.test_marathon_hostile_input import refuses_a_long_url_in_one_log_line


def run(test: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        server = ChronosServer(Settings(master="127.0.0.1:9"))
        server.leading = True  # serves, rather than forwards to a leader
        async with TestClient(TestServer(server.make_app())) as client:
            await test(client)

    asyncio.run(main())


def test_aiohttp_s_own_refusals_come_in_chronos_error_shape() -> None:
    async def test(client: TestClient) -> None:
        for path in ("/scheduler/jobs", "/v1/scheduler/nope"):
            answer = await client.get(path)
            assert answer.status == 404
            assert await answer.json() == {"status": "Not Found", "message": "HTTP 404 Not Found"}
            assert answer.headers["Access-Control-Allow-Origin"] == "*"
        answer = await client.post("/v1/scheduler/jobs")
        assert answer.status == 405
        assert await answer.json() == {
            "status": "Method Not Allowed",
            "message": "HTTP 405 Method Not Allowed",
        }
        assert "GET" in answer.headers["Allow"]
        huge = b'{"name": "huge", "command": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        answer = await client.post("/v1/scheduler/iso8601", data=huge)
        assert answer.status == 413
        body = await answer.json()
        assert body["status"] == "Request Entity Too Large"
        assert body["message"].startswith("HTTP 413 ")
        # The handlers' own 400s keep their message.
        answer = await client.get("/v1/scheduler/jobs?x=1")
        assert answer.status == 400
        assert await answer.json() == {
            "status": "Bad Request",
            "message": "unsupported query parameters: x",
        }

    run(test)


def test_json_nested_too_deep_is_a_bad_request() -> None:
    async def test(client: TestClient) -> None:
        for path in ("/v1/scheduler/iso8601", "/v1/scheduler/dependency"):
            answer = await client.post(path, data=b"[" * 100_000 + b"]" * 100_000)
            assert answer.status == 400, await answer.text()
            body = await answer.json()
            assert body["status"] == "Bad Request"
            assert body["message"].startswith("malformed JSON: maximum recursion depth")
        answer = await client.post(
            "/v1/scheduler/job/a/task/ct:1:0:a:/progress", data=b'{"a":' * 5000 + b"}" * 5000
        )
        assert answer.status == 400, await answer.text()

    run(test)


def test_a_url_past_the_request_line_limit_is_logged_in_one_line(tmp_path: Path) -> None:
    # Nothing listens at the master's address: it keeps trying, and serves meanwhile.
    chronos = ChronosProcess(tmp_path / "chronos", f"{HOST}:{free_port()}")
    chronos.start(leading=False)
    try:
        refuses_a_long_url_in_one_log_line(chronos.process, chronos.port)
    finally:
        chronos.stop()


def test_a_lone_surrogate_in_a_job_is_malformed_json() -> None:
    # Accepted, the job's command could be neither stored as UTF-8 nor sent in a TaskInfo.
    async def test(client: TestClient) -> None:
        job = b'{"name": "s", "command": "echo \\ud800", "schedule": "R/2030-01-01T00:00:00Z/PT1M"}'
        answer = await client.post("/v1/scheduler/iso8601", data=job)
        assert answer.status == 400, await answer.text()
        assert await answer.json() == {
            "status": "Bad Request",
            "message": "malformed JSON: a string holds a lone UTF-16 surrogate",
        }
        assert await (await client.get("/v1/scheduler/jobs")).json() == []
        job = job.replace(b"\\ud800", b"\\ud83d\\ude00")  # a pair is a character
        assert (await client.post("/v1/scheduler/iso8601", data=job)).status == 204

    run(test)
