"""Malformed JSON of every kind on every v1 endpoint of a real master and agent: a clear 400,
never a 500, and both daemons keep serving (the second, untyped decode on the error path once
let msgspec's DecodeError and RecursionError through)."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration

BODIES = {
    "trailing-garbage": b"[1]x",
    "object-then-garbage": b'{"type":"SUBSCRIBE"}x',
    "lone-surrogate-escape": b'["\\ud800"]',
    "lone-surrogate-bytes": '["\ud800"]'.encode("utf-8", "surrogatepass"),
    "deep-array": b"[" * 100_000,
    "deep-in-object": b'{"type":"SUBSCRIBE","x":' + b"[" * 100_000,
    "not-utf8": b'{"type":"\xff"}',
}


def test_malformed_json_is_400_on_every_endpoint(cluster) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    agent = cluster.agents[0].url
    endpoints = [
        cluster.master_url + "/api/v1/scheduler",
        cluster.master_url + "/api/v1",
        cluster.master_url + "/api/v1/operator",
        agent + "/api/v1",
        agent + "/api/v1/executor",
    ]
    for name, body in BODIES.items():
        for url in endpoints:
            answer = requests.post(url, data=body, headers=headers, timeout=30)
            assert answer.status_code == 400, (name, url, answer.status_code, answer.text[:200])
            assert answer.text.strip(), (name, url)
    assert requests.get(cluster.master_url + "/health", timeout=10).status_code == 200
    assert requests.get(agent + "/health", timeout=10).status_code == 200


def test_huge_numbers_and_long_urls_are_refused_and_logged_briefly(cluster) -> None:
    huge = "9" * 400
    headers = {"Content-Type": "application/json"}
    set_level = (
        '{"type":"SET_LOGGING_LEVEL","set_logging_level":'
        f'{{"level":1,"duration":{{"nanoseconds":{huge}}}}}}}'
    )
    read_file = f'{{"type":"READ_FILE","read_file":{{"path":"/x","offset":{huge}}}}}'
    agent = cluster.agents[0].url
    for base in (cluster.master_url, agent):
        for body in (set_level, read_file):
            answer = requests.post(base + "/api/v1", data=body, headers=headers, timeout=30)
            assert answer.status_code == 400, (base, body[:40], answer.text[:200])
            assert "9223372036854775807" in answer.text
        answer = requests.get(base + "/" + "a" * 9000, timeout=30)
        assert answer.status_code in (414, 431, 400), (base, answer.status_code)
        assert requests.get(base + "/health", timeout=10).status_code == 200
    for process in (cluster.master, cluster.agents[0]):
        log = process.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert "Error handling request" not in log
