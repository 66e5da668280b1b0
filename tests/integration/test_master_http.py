"""The master's HTTP surface as a real process on loopback: wire details real clients need,
and bad input of every kind answered with a clear 4xx while the master keeps serving."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from butte.core.codec import RecordIOReader
from butte.testing.cluster import free_port

pytestmark = pytest.mark.integration

SUBSCRIBE = {
    "type": "SUBSCRIBE",
    "subscribe": {"framework_info": {"user": "root", "name": "http-test", "failover_timeout": 60}},
}


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    work = tmp_path_factory.mktemp("master")
    log = open(work / "log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "butte",
            "master",
            "--port",
            str(port),
            "--work_dir",
            str(work),
            "--allocation_interval=100ms",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        # /health answers before the election and registry recovery are over; the
        # tests need a leading master, which /state shows by its leader_info.
        try:
            if "leader_info" in requests.get(url + "/state", timeout=1).json():
                break
        except (requests.ConnectionError, ValueError):
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("master did not start: " + (work / "log").read_text())
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def post(url: str, body: object, headers: dict | None = None) -> requests.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(url + "/api/v1/scheduler", data=data, headers=hdrs, timeout=5)


class Stream:
    """A raw SUBSCRIBE stream read with http.client, as pymesos-like clients do."""

    def __init__(self, url: str, body: dict) -> None:
        host = url.split("//")[1]
        self.conn = http.client.HTTPConnection(host, timeout=5)
        self.conn.request(
            "POST",
            "/api/v1/scheduler",
            json.dumps(body),
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Connection": "close",
            },
        )
        self.response = self.conn.getresponse()
        self.reader = RecordIOReader()
        self.pending: list[bytes] = []

    def next(self) -> dict:
        while not self.pending:
            chunk = self.response.read1(65536)
            assert chunk, "stream ended"
            self.pending.extend(self.reader.feed(chunk))
        return json.loads(self.pending.pop(0))

    def close(self) -> None:
        self.conn.close()


def test_version_is_numeric_for_pymesos(master):
    version = requests.get(master + "/version", timeout=5).json()["version"]
    assert all(part.isdigit() for part in version.split("."))
    assert tuple(int(p) for p in version.split(".")) >= (1, 0, 0)


def test_health_state_and_aliases(master):
    assert requests.get(master + "/health", timeout=5).status_code == 200
    for path in ("/state", "/master/state", "/state.json", "/master/state/"):
        state = requests.get(master + path, timeout=5).json()
        assert state["pid"].startswith("master@127.0.0.1:")
        assert {"slaves", "frameworks", "completed_frameworks", "leader_info"} <= state.keys()
    jsonp = requests.get(master + "/master/state?jsonp=cb", timeout=5)
    assert jsonp.text.startswith("cb(")
    redirect = requests.get(master + "/master/redirect", allow_redirects=False, timeout=5)
    assert redirect.status_code == 307
    assert redirect.headers["Location"] == "//" + master.split("//")[1]


def test_subscribe_stream_framing_and_headers(master):
    stream = Stream(master, SUBSCRIBE)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Transfer-Encoding") == "chunked"
        assert stream.response.getheader("Content-Type") == "application/json"
        stream_id = stream.response.getheader("Mesos-Stream-Id")
        assert stream_id
        first, second = stream.next(), stream.next()
        assert first["type"] == "SUBSCRIBED" and second == {"type": "HEARTBEAT"}
        fid = first["subscribed"]["framework_id"]
        # Later calls need the stream id, and the right one.
        revive = {"type": "REVIVE", "framework_id": fid}
        assert post(master, revive).status_code == 400
        assert post(master, revive, {"Mesos-Stream-Id": "nope"}).status_code == 400
        ok = post(master, revive, {"Mesos-Stream-Id": stream_id})
        assert ok.status_code == 202 and ok.headers["Content-Length"] == "0"
        again = post(master, SUBSCRIBE, {"Mesos-Stream-Id": stream_id})
        assert again.status_code == 400
        teardown = post(
            master, {"type": "TEARDOWN", "framework_id": fid}, {"Mesos-Stream-Id": stream_id}
        )
        assert teardown.status_code == 202
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", None, 400, "JSON"),
        ({"type": "NOT_A_CALL", "framework_id": {"value": "x"}}, None, 400, "Expecting 'type'"),
        ({"type": "SUBSCRIBE"}, None, 400, "subscribe"),
        ({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "x"}}}, None, 400, "user"),
        (
            {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": 5, "name": "x"}}},
            None,
            400,
            "str",
        ),
        (
            {
                "type": "SUBSCRIBE",
                "subscribe": {"framework_info": {"user": "u", "name": "x", "id": {"value": "a/b"}}},
            },
            None,
            400,
            "/",
        ),
        (
            {
                "type": "SUBSCRIBE",
                "subscribe": {
                    "framework_info": {"user": "u", "name": "x", "id": {"value": "a\u0001b"}}
                },
            },
            None,
            400,
            "control",
        ),
        (
            {"type": "ACCEPT", "framework_id": {"value": "ghost"}, "accept": {}},
            None,
            400,
            "cannot be found",
        ),
        ([1, 2, 3], None, 400, "object"),
        ({"type": "SUBSCRIBE"}, {"Content-Type": "text/plain"}, 415, "application/json"),
        ({"type": "SUBSCRIBE"}, {"Content-Type": "application/x-protobuf"}, 415, "JSON"),
        ({"type": "SUBSCRIBE"}, {"Accept": "text/html"}, 406, "Accept"),
    ],
)
def test_bad_requests_get_clear_4xx(master, body, headers, status, words):
    response = post(master, body, headers)
    assert response.status_code == status, response.text
    assert words.lower() in response.text.lower()
    assert requests.get(master + "/health", timeout=5).status_code == 200


def test_wrong_method_and_missing_content_type(master):
    assert requests.get(master + "/api/v1/scheduler", timeout=5).status_code == 405
    raw = requests.post(
        master + "/api/v1/scheduler", data=b"{}", timeout=5, headers={"Content-Type": ""}
    )
    assert raw.status_code in (400, 415)


def test_huge_body_is_refused_and_master_survives(master):
    blob = b'{"type":"SUBSCRIBE","pad":"' + b"x" * (17 * 1024 * 1024) + b'"}'
    try:
        response = post(master, blob)
        assert response.status_code == 413
    except requests.ConnectionError:
        pass  # the server may close the connection before reading everything
    assert requests.get(master + "/health", timeout=5).status_code == 200


def test_invalid_task_resources_get_task_error(master):
    # Without agents there are no offers; an ACCEPT naming a bogus offer drops the task.
    stream = Stream(master, SUBSCRIBE)
    try:
        sid = stream.response.getheader("Mesos-Stream-Id")
        fid = stream.next()["subscribed"]["framework_id"]
        stream.next()
        task = {
            "name": "t",
            "task_id": {"value": "t1"},
            "agent_id": {"value": "a"},
            "command": {"value": "true"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": -1}}],
        }
        body = {
            "type": "ACCEPT",
            "framework_id": fid,
            "accept": {
                "offer_ids": [{"value": "bogus"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            },
        }
        assert post(master, body, {"Mesos-Stream-Id": sid}).status_code == 202
        event = stream.next()
        while event["type"] == "HEARTBEAT":
            event = stream.next()
        status = event["update"]["status"]
        assert status["state"] == "TASK_LOST" and status["reason"] == "REASON_INVALID_OFFERS"
        assert "uuid" not in status
        post(master, {"type": "TEARDOWN", "framework_id": fid}, {"Mesos-Stream-Id": sid})
    finally:
        stream.close()


def test_unknown_path_is_404(master):
    assert requests.get(master + "/no/such/thing", timeout=5).status_code == 404


# -- the scheduler calls' fast path (butte.master.fast_http) -----------------------------------


def _subscribed(master: str) -> tuple[Stream, str, dict]:
    stream = Stream(master, SUBSCRIBE)
    sid = stream.response.getheader("Mesos-Stream-Id")
    fid = stream.next()["subscribed"]["framework_id"]
    return stream, sid, fid


def _exchange(master: str, data: bytes, answers: int, piece: int = 0) -> list:
    """Sends raw bytes on one connection (``piece`` bytes at a time if given) and parses
    ``answers`` responses."""
    import socket

    from butte.client.http1 import _ResponseParser

    host, port = master.split("//")[1].split(":")
    parser = _ResponseParser()
    replies: list = []
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        if piece:
            for start in range(0, len(data), piece):
                sock.sendall(data[start : start + piece])
                time.sleep(0.002)
        else:
            sock.sendall(data)
        while len(replies) < answers:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(replies)} answers"
            replies += parser.feed(chunk)
    return replies


def _raw_call(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_fast_path_answers_exactly_as_the_aiohttp_path(master):
    stream, sid, fid = _subscribed(master)
    try:
        json_headers = {"Content-Type": "application/json", "Mesos-Stream-Id": sid}
        cases = [
            ({"type": "REVIVE", "framework_id": fid}, json_headers),
            ({"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": []}}, json_headers),
            ({"type": "REVIVE", "framework_id": fid}, {**json_headers, "Mesos-Stream-Id": "x"}),
            ({"type": "REVIVE", "framework_id": {"value": "ghost"}}, json_headers),
            ({"type": "ACCEPT", "framework_id": fid}, json_headers),
            ({"type": "NOPE", "framework_id": fid}, json_headers),
            (SUBSCRIBE, json_headers),
            (b"{not json", json_headers),
            ({"type": "REVIVE", "framework_id": fid}, {**json_headers, "Accept": "text/html"}),
            ({"type": "REVIVE"}, {**json_headers, "Content-Type": "text/plain"}),
        ]
        for body, headers in cases:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            # The trailing slash is routed by aiohttp (PrefixRouter), the plain path is not.
            fast, slow = (
                _exchange(master, _raw_call(path, data, headers), 1)[0]
                for path in ("/api/v1/scheduler", "/master/api/v1/scheduler/")
            )
            assert (fast.status, fast.body) == (slow.status, slow.body), (body, headers)
            for name in ("content-type", "content-length"):
                assert fast.headers[name] == slow.headers[name], (name, body)
            assert "date" in fast.headers and fast.status in (202, 400, 406, 415)
    finally:
        stream.close()


def test_pipelined_calls_are_answered_in_order_and_the_connection_serves_anything_after(master):
    stream, sid, fid = _subscribed(master)
    try:
        headers = {"Content-Type": "application/json", "Mesos-Stream-Id": sid}
        revive = json.dumps({"type": "REVIVE", "framework_id": fid}).encode()
        bad = json.dumps({"type": "REVIVE", "framework_id": {"value": "ghost"}}).encode()
        data = (
            _raw_call("/api/v1/scheduler", revive, headers)
            + _raw_call("/api/v1/scheduler", bad, headers)
            + _raw_call("/api/v1/scheduler", revive, headers)
            # ... then a request for aiohttp, and a call again on the same connection.
            + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
            + _raw_call("/api/v1/scheduler", revive, headers)
        )
        replies = _exchange(master, data, 5)
        assert [r.status for r in replies] == [202, 400, 202, 200, 202]
        assert b"cannot be found" in replies[1].body
        # Arriving in pieces, the calls get the same answers.
        assert [r.status for r in _exchange(master, data, 5, piece=37)] == [202, 400, 202, 200, 202]
        call = _raw_call("/api/v1/scheduler", revive, {**headers, "Connection": "close"})
        assert [r.status for r in _exchange(master, call, 1)] == [202]
    finally:
        stream.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/v1/scheduler HTTP/1.1\r\nHost: t\r\nContent-Length : 2\r\n\r\n{}",
        b"POST /api/v1/scheduler HTTP/1.1\r\nHost: t\x00u\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/scheduler HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/scheduler HTTP/1.1\nHost: t\nContent-Length: 2\n\n{}",
        b"GET /health HTTP/1.1\nHost: t\n\n",
    ],
    ids=["space-before-colon", "nul-in-value", "no-host", "bare-lf", "bare-lf-get"],
)
def test_malformed_requests_get_400_and_the_master_keeps_serving(master, request_bytes):
    (reply,) = _exchange(master, request_bytes, 1)
    assert reply.status == 400 and reply.body.startswith(b"Bad Request: ")
    assert requests.get(master + "/health", timeout=5).status_code == 200
