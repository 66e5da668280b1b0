"""Hostile input that once got a 5xx from Marathon's REST API (found by
tests/fuzz/test_framework_api_fuzz.py), in-process over a planner: each answer is now a 4xx
in Marathon's error shape, or a success that leaves the API working."""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

from aiohttp.test_utils import TestClient

from butte.cli.local import HOST, ManagedProcess, free_port
from tests.unit.test_marathon_api import Shell, run

APP = {"id": "/fuzz/a", "cmd": "sleep 300", "cpus": 0.01, "mem": 8, "instances": 0}


def test_aiohttp_s_own_refusals_come_in_marathon_s_error_shape() -> None:
    async def test(client: TestClient, shell: Shell) -> None:
        answer = await client.get("/v2/nothing-here")
        assert answer.status == 404
        assert await answer.json() == {"message": "HTTP 404 Not Found"}
        answer = await client.post("/v2/info")
        assert answer.status == 405
        assert await answer.json() == {"message": "HTTP 405 Method Not Allowed"}
        assert "GET" in answer.headers["Allow"]
        huge = b'{"id": "/fuzz/huge", "cmd": "' + b"x" * (9 * 1024 * 1024) + b'"}'
        answer = await client.post("/v2/apps", data=huge)
        assert answer.status == 413
        assert (await answer.json())["message"].startswith("HTTP 413 ")

    run(test)


def test_a_put_of_the_root_group_leaves_every_group_readable() -> None:
    # The root was stored as a group of its own and became its own child: every later read
    # of the groups recursed without end (500) until the store was cleared.
    async def test(client: TestClient, shell: Shell) -> None:
        assert (await client.post("/v2/apps", json=APP)).status == 201
        for path in ("/v2/groups/", "/v2/groups//"):
            answer = await client.put(path, json={"dependencies": []})
            assert answer.status == 200, await answer.text()
        for path in ("/v2/groups", "/v2/groups/", "/v2/groups/fuzz"):
            answer = await client.get(path)
            assert answer.status == 200, await answer.text()
        root = await (await client.get("/v2/groups")).json()
        assert root["id"] == "/" and [g["id"] for g in root["groups"]] == ["/fuzz"]
        answer = await client.post("/v2/groups", json={"id": ""})
        assert answer.status == 409, await answer.text()
        assert (await client.delete("/v2/groups?force=true")).status == 200
        assert (await client.get("/v2/groups")).status == 200

    run(test)


def test_a_partial_update_whose_args_are_no_list_is_refused() -> None:
    async def test(client: TestClient, shell: Shell) -> None:
        assert (await client.post("/v2/apps", json=APP)).status == 201
        for args in (True, 5, "sleep 1", {"a": 1}):
            answer = await client.put("/v2/apps/fuzz/a", json={**APP, "args": args})
            assert answer.status == 422, (args, await answer.text())
            details = (await answer.json())["details"]
            assert {"path": "/args", "errors": ["must be a non-empty list of strings"]} in details

    run(test)


def refuses_a_long_url_in_one_log_line(process: ManagedProcess, port: int) -> None:
    """Waits until the process answers ``/ping``, sends it a URL past aiohttp's 8 KB request
    line, and checks the 400 is logged as one line, without a traceback."""
    deadline = time.monotonic() + 30
    while True:
        assert process.running(), process.log_tail(40)
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, process.log_tail(40)
        time.sleep(0.1)
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    conn.request("GET", "/v2/apps/" + "a" * 10_000)
    assert conn.getresponse().status == 400
    while "Malformed HTTP request refused" not in process.log_tail(200):
        assert time.monotonic() < deadline, process.log_tail(40)
        time.sleep(0.1)
    assert "Traceback" not in process.log_tail(200), process.log_tail(200)


def test_a_url_past_the_request_line_limit_is_logged_in_one_line(tmp_path: Path) -> None:
    port, no_master = free_port(), free_port()  # nothing listens there: it keeps trying
    argv = [sys.executable, "-m", "butte", "marathon", "--master", f"{HOST}:{no_master}"]
    argv += ["--http_port", str(port), "--http_address", HOST, "--hostname", HOST]
    argv += ["--work_dir", str(tmp_path / "marathon")]
    process = ManagedProcess("marathon", argv, tmp_path / "marathon.log")
    process.start()
    try:
        refuses_a_long_url_in_one_log_line(process, port)
    finally:
        process.stop()


def test_a_lone_surrogate_in_a_body_is_invalid_json() -> None:
    # JSON lets a string escape half of a UTF-16 pair alone; such a string is no text: the
    # error naming it, or the app holding it, could not be encoded (500, and an app that
    # no listing could show any more).
    async def test(client: TestClient, shell: Shell) -> None:
        for path, body in (
            ("/v2/apps", b'{"id": "\\ud800", "": ""}'),
            ("/v2/apps", b'{"id": "/s", "cmd": "echo \\uDFFF"}'),
            (
                "/v2/groups",
                b'{"id": "/g", "apps": [{"id": "a", "cmd": "x", "env": {"\\ud800": "1"}}]}',
            ),
        ):
            answer = await client.post(path, data=body)
            assert answer.status == 400, await answer.text()
            assert (await answer.json())["message"] == "Invalid JSON"
        answer = await client.put("/v2/apps/s", data=b'{"cmd": "echo \\ud800x"}')
        assert answer.status == 400, await answer.text()
        listing = await client.get("/v2/apps")
        assert listing.status == 200 and await listing.json() == {"apps": []}
        # A pair is a character, as before.
        answer = await client.post("/v2/apps", data=b'{"id": "/s2", "cmd": "echo \\ud83d\\ude00"}')
        assert answer.status == 201 and (await answer.json())["cmd"] == "echo \U0001f600"

    run(test)
