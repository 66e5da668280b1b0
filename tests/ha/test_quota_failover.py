"""Quota survives master failover: set on the leader through UPDATE_QUOTA, it is in the
ZooKeeper registry, and the next leader answers GET_QUOTA with it and enforces its limit."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = [pytest.mark.ha, pytest.mark.integration]


def v1(address: str, body: dict) -> tuple[int, dict | None]:
    request = urllib.request.Request(
        f"http://{address}/api/v1",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data = response.read()
        return response.status, json.loads(data) if data else None


@pytest.mark.timeout(120)
def test_quota_survives_leader_failover(ha_cluster_factory):
    cluster = ha_cluster_factory(zk_size=1, masters=2, agents=1)
    masters = cluster.masters
    leader = masters.wait_leader(30)
    config = {
        "role": "analytics",
        "guarantees": {"cpus": {"value": 1.0}},
        "limits": {"cpus": {"value": 2.0}, "mem": {"value": 512.0}},
    }
    status, _ = v1(
        masters.addresses[leader],
        {"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [config]}},
    )
    assert status == 200
    masters.kill(leader)
    new_leader = masters.wait_leader(60, exclude=leader)
    _, answer = v1(masters.addresses[new_leader], {"type": "GET_QUOTA"})
    assert answer is not None
    assert answer["get_quota"]["status"]["configs"] == [config]
    _, roles = v1(masters.addresses[new_leader], {"type": "GET_ROLES"})
    assert roles is not None
    by_name = {r["name"]: r for r in roles["get_roles"]["roles"]}
    assert by_name["analytics"]["quota"]["limit"] == {"cpus": 2.0, "mem": 512.0}
