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
