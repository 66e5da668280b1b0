"""Many and slow clients against a real master: 2,000 idle connections, 200 slowloris
connections dribbling a request head, and a framework whose SUBSCRIBE stream is never read.
Meanwhile the master keeps answering /health and a framework's scheduler calls promptly, and
the slowloris connections are closed with 408 once ``--http_header_timeout`` has passed."""

from __future__ import annotations

import json
import resource
import socket
import time

import pytest
import requests

from butte.core.recordio import RecordIOReader
from butte.testing.cluster import daemons_missing, start_cluster
from butte.testing.require import require

pytestmark = pytest.mark.integration

IDLE, SLOW = 2000, 200


def _timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def test_idle_slow_and_non_reading_clients_do_not_stop_the_master(tmp_path) -> None:
    require(daemons_missing(), "a real cluster")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE + SLOW + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE + SLOW + 500), hard))
    flags = ["--http_header_timeout=3secs"]
    with start_cluster(tmp_path, master_flags=flags) as cluster:
        host, port = cluster.master_address.split(":")
        address = (host, int(port))
        idle = [socket.create_connection(address) for _ in range(IDLE)]
        slow = []
        for _ in range(SLOW):
            s = socket.create_connection(address)
            s.sendall(b"POST /api/v1/scheduler HTTP/1.1\r\nHo")
            slow.append(s)
        # A framework that subscribes and never reads its stream.
        deaf = socket.create_connection(address)
        body = json.dumps(
            {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "r", "name": "deaf"}}}
        ).encode()
        deaf.sendall(
            b"POST /api/v1/scheduler HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        try:
            for s in slow:
                s.sendall(b"s")  # a byte now and then does not keep a head alive
            url = cluster.master_url
            seconds, health = _timed(lambda: requests.get(url + "/health", timeout=10))
            assert health.status_code == 200 and seconds < 3.0, seconds
            subscribe = {
                "type": "SUBSCRIBE",
                "subscribe": {"framework_info": {"user": "root", "name": "busy"}},
            }
            with requests.post(
                url + "/api/v1/scheduler", json=subscribe, stream=True, timeout=10
            ) as stream:
                assert stream.status_code == 200
                reader, records = RecordIOReader(), []
                chunks = stream.iter_content(chunk_size=None)
                while not records:
                    records = reader.feed(next(chunks))
                framework_id = json.loads(records[0])["subscribed"]["framework_id"]
                revive = {"type": "REVIVE", "framework_id": framework_id}
                headers = {"Mesos-Stream-Id": stream.headers["Mesos-Stream-Id"]}
                seconds, answer = _timed(
                    lambda: requests.post(
                        url + "/api/v1/scheduler", json=revive, headers=headers, timeout=10
                    )
                )
                assert answer.status_code == 202 and seconds < 3.0, seconds
            # The slowloris connections are answered 408 and closed after the deadline.
            deadline = time.monotonic() + 20
            closed = 0
            for s in slow:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    continue
                closed += data.startswith(b"HTTP/1.1 408 ")
            assert closed == SLOW
            assert requests.get(url + "/health", timeout=10).status_code == 200
            assert cluster.master.running()
        finally:
            for s in [*idle, *slow, deaf]:
                s.close()
