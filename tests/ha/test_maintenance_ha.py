"""Maintenance and registry pruning across a master failover with ZooKeeper: the schedule and
DOWN machines written by one leader are the next leader's, and gone agents are pruned from the
ZooKeeper registry after ``--registry_max_agent_age`` (docs/maintenance.md)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kazoo.client import KazooClient

from butte.coord.zk_registry import ZooKeeperRegistry

pytestmark = pytest.mark.ha

WINDOW = {"start": {"nanoseconds": 1_900_000_000 * 10**9}}


def operator(address: str, call_type: str, payload: dict | None = None) -> Any:
    body: dict[str, Any] = {"type": call_type}
    if payload is not None:
        body[call_type.lower()] = payload
    request = urllib.request.Request(
        f"http://{address}/api/v1",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data = response.read()
    return json.loads(data)[call_type.lower()] if data else None


def registry_of(zk_hosts: str) -> Any:
    client = KazooClient(hosts=zk_hosts)
    client.start(timeout=10)
    try:
        return ZooKeeperRegistry(client, "/mesos", lambda: None).load()
    finally:
        client.stop()
        client.close()


@pytest.mark.timeout(120)
def test_maintenance_survives_failover_and_gone_agents_are_pruned(ha_cluster_factory):
    cluster = ha_cluster_factory(
        zk_size=1,
        masters=2,
        agents=1,
        master_flags=["--registry_gc_interval=1secs", "--registry_max_agent_age=6secs"],
    )
    leader = cluster.masters.wait_leader(30)
    address = cluster.masters.addresses[leader]
    (agent,) = operator(address, "GET_AGENTS")["agents"]
    agent_id = agent["agent_info"]["id"]["value"]
    machine = {"hostname": agent["agent_info"]["hostname"]}
    schedule = {
        "windows": [
            {"machine_ids": [machine], "unavailability": WINDOW},
            {"machine_ids": [{"hostname": "spare"}], "unavailability": WINDOW},
        ]
    }
    operator(address, "UPDATE_MAINTENANCE_SCHEDULE", {"schedule": schedule})
    operator(address, "START_MAINTENANCE", {"machines": [{"hostname": "spare"}]})
    operator(address, "MARK_AGENT_GONE", {"agent_id": {"value": agent_id}})
    stored = registry_of(cluster.zk.hosts)
    assert agent_id in stored.gone
    assert stored.maintenance["down_machines"] == [{"hostname": "spare"}]

    cluster.masters.kill(leader)
    new = cluster.masters.wait_leader(30, exclude=leader)
    address = cluster.masters.addresses[new]
    assert operator(address, "GET_MAINTENANCE_SCHEDULE")["schedule"] == schedule
    status = operator(address, "GET_MAINTENANCE_STATUS")["status"]
    assert status["down_machines"] == [{"hostname": "spare"}]
    assert status["draining_machines"] == [{"id": machine}]

    # The gone agent is forgotten once older than --registry_max_agent_age.
    deadline = time.monotonic() + 30
    while agent_id in registry_of(cluster.zk.hosts).gone:
        assert time.monotonic() < deadline, "gone agent not pruned from the registry"
        time.sleep(0.5)
    assert registry_of(cluster.zk.hosts).maintenance["schedule"] == schedule


@pytest.mark.timeout(120)
def test_deactivated_and_drained_agents_stay_so_after_failover(ha_cluster_factory):
    cluster = ha_cluster_factory(zk_size=1, masters=2, agents=2)
    leader = cluster.masters.wait_leader(30)
    address = cluster.masters.addresses[leader]
    deadline = time.monotonic() + 30
    while len(operator(address, "GET_AGENTS")["agents"]) < 2:
        assert time.monotonic() < deadline, "agents not registered"
        time.sleep(0.2)
    deactivated, drained = sorted(
        a["agent_info"]["id"]["value"] for a in operator(address, "GET_AGENTS")["agents"]
    )
    operator(address, "DEACTIVATE_AGENT", {"agent_id": {"value": deactivated}})
    grace = {"nanoseconds": 1_000_000_000}
    operator(address, "DRAIN_AGENT", {"agent_id": {"value": drained}, "max_grace_period": grace})

    cluster.masters.kill(leader)
    new = cluster.masters.wait_leader(30, exclude=leader)
    address = cluster.masters.addresses[new]
    deadline = time.monotonic() + 30
    while len(agents := operator(address, "GET_AGENTS")["agents"]) < 2:
        assert time.monotonic() < deadline, "agents not re-registered with the new leader"
        time.sleep(0.2)
    views = {a["agent_info"]["id"]["value"]: a for a in agents}
    assert views[deactivated]["deactivated"] and not views[deactivated]["active"]
    assert "drain_info" not in views[deactivated]
    assert views[drained]["deactivated"] and not views[drained]["active"]
    assert views[drained]["drain_info"] == {
        "state": "DRAINED",
        "config": {"mark_gone": False, "max_grace_period": grace},
    }
