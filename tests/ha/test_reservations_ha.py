"""Dynamic reservations and persistent volumes survive a master failover with ZooKeeper:
the new leader knows them from the registry's agent records and the re-registered agent
(docs/reservations.md)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from butte.testing.require import require_module

pytestmark = [pytest.mark.ha, pytest.mark.integration]
require_module("kazoo")

ROLE = "ops"


def _reserved(name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": ROLE}],
        **extra,
    }


@pytest.mark.timeout(120)
def test_reservations_and_volumes_survive_master_failover(ha_cluster_factory):
    cluster = ha_cluster_factory(zk_size=1, masters=2, agents=1)
    leader = cluster.masters.wait_leader(30)
    url = f"http://{cluster.masters.addresses[leader]}/api/v1"
    [agent] = cluster.leader_state()["slaves"]
    aid = {"value": agent["id"]}
    reserve = {"agent_id": aid, "resources": [_reserved("cpus", 1), _reserved("disk", 16)]}
    body = {"type": "RESERVE_RESOURCES", "reserve_resources": reserve}
    assert requests.post(url, json=body, timeout=10).status_code == 202
    disk = {"persistence": {"id": "v1"}, "volume": {"container_path": "v", "mode": "RW"}}
    create = {"agent_id": aid, "volumes": [_reserved("disk", 16, disk=disk)]}
    body = {"type": "CREATE_VOLUMES", "create_volumes": create}
    assert requests.post(url, json=body, timeout=10).status_code == 202

    cluster.masters.kill(leader)
    new_leader = cluster.masters.wait_leader(30, exclude=leader)
    state = cluster.wait_state(
        lambda s: s["slaves"] and s["slaves"][0]["active"] and s, 60, "agent re-registered"
    )
    assert state["slaves"][0]["id"] == agent["id"]
    assert state["slaves"][0]["reserved_resources"][ROLE]["cpus"] == 1
    url = f"http://{cluster.masters.addresses[new_leader]}/api/v1"
    answer = requests.post(url, json={"type": "GET_AGENTS"}, timeout=10).json()
    [total] = [a["total_resources"] for a in answer["get_agents"]["agents"]]
    assert [r["disk"]["persistence"]["id"] for r in total if "disk" in r] == ["v1"]
