"""Operator reservations and persistent volumes over real HTTP (v1 calls and the legacy
form endpoints), bad input answered with a reason and no change, and both surviving a
standalone master restart and an agent restart (docs/reservations.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.integration

ROLE = "ops"


def _reserved(name: str, value: float) -> dict[str, Any]:
    return {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": ROLE}],
    }


def _volume(pid: str, size: float) -> dict[str, Any]:
    return {
        **_reserved("disk", size),
        "disk": {"persistence": {"id": pid}, "volume": {"container_path": "d", "mode": "RW"}},
    }


def _call(url: str, call_type: str, payload: dict[str, Any]) -> requests.Response:
    body = {"type": call_type, call_type.lower(): payload}
    return requests.post(url + "/api/v1", json=body, timeout=10)


def _agent(cluster) -> dict[str, Any]:
    [agent] = cluster.state()["slaves"]
    return agent


def _agent_id(cluster) -> str:
    return _agent(cluster)["id"]


def _reservations(cluster) -> dict[str, Any]:
    return _agent(cluster)["reserved_resources"]


def _volumes(url: str) -> list[str]:
    answer = requests.post(url + "/api/v1", json={"type": "GET_AGENTS"}, timeout=10).json()
    [agent] = answer["get_agents"]["agents"]
    return [
        r["disk"]["persistence"]["id"]
        for r in agent["total_resources"]
        if r.get("disk", {}).get("persistence")
    ]


def _sizes(url: str) -> dict[str, float]:
    answer = requests.post(url + "/api/v1", json={"type": "GET_AGENTS"}, timeout=10).json()
    [agent] = answer["get_agents"]["agents"]
    return {
        r["disk"]["persistence"]["id"]: r["scalar"]["value"]
        for r in agent["total_resources"]
        if r.get("disk", {}).get("persistence")
    }


def _reserve_and_create(cluster) -> str:
    url, agent_id = cluster.master_url, _agent_id(cluster)
    reserve = {
        "agent_id": {"value": agent_id},
        "resources": [_reserved("cpus", 1), _reserved("disk", 32)],
    }
    assert _call(url, "RESERVE_RESOURCES", reserve).status_code == 202
    create = {"agent_id": {"value": agent_id}, "volumes": [_volume("keep", 32)]}
    assert _call(url, "CREATE_VOLUMES", create).status_code == 202
    return agent_id


def test_operator_reserves_creates_destroys_and_refuses_bad_input(cluster):
    url = cluster.master_url
    agent_id = _reserve_and_create(cluster)
    assert _reservations(cluster)[ROLE]["cpus"] == 1
    assert _volumes(url) == ["keep"]
    volume_dir = cluster.agents[0].work_dir / "volumes" / "roles" / ROLE / "keep"
    cluster.wait_until(lambda s: volume_dir.is_dir(), timeout=10, what="volume directory")
    before = _agent(cluster)
    aid = {"value": agent_id}
    refusals = [
        ("RESERVE_RESOURCES", {"agent_id": aid, "resources": [_reserved("cpus", 100)]}, 409),
        ("UNRESERVE_RESOURCES", {"agent_id": aid, "resources": [_reserved("mem", 1)]}, 409),
        (
            "RESERVE_RESOURCES",
            {"agent_id": {"value": "nope"}, "resources": [_reserved("cpus", 1)]},
            400,  # Mesos: BadRequest("No agent found with specified ID")
        ),
        ("RESERVE_RESOURCES", {"agent_id": aid, "resources": [{"name": "cpus"}]}, 400),
        ("CREATE_VOLUMES", {"agent_id": aid, "volumes": [_volume("keep", 0.001)]}, 409),
        ("UNRESERVE_RESOURCES", {"agent_id": aid, "resources": [_volume("keep", 32)]}, 400),
        (
            "GROW_VOLUME",
            {"agent_id": aid, "volume": _volume("keep", 32), "addition": _reserved("disk", 1)},
            409,
        ),
    ]
    for call_type, payload, status in refusals:
        response = _call(url, call_type, payload)
        assert response.status_code == status, (call_type, response.status_code, response.text)
        assert response.text  # a reason
    assert _call(url, "RESERVE_RESOURCES", {"resources": []}).status_code == 400
    after = _agent(cluster)
    assert after["reserved_resources"] == before["reserved_resources"]
    assert after["unreserved_resources"] == before["unreserved_resources"]
    # Grow the volume by 8 of newly reserved disk, shrink it back.
    more = {"agent_id": aid, "resources": [_reserved("disk", 8)]}
    assert _call(url, "RESERVE_RESOURCES", more).status_code == 202
    grow = {"agent_id": aid, "volume": _volume("keep", 32), "addition": _reserved("disk", 8)}
    assert _call(url, "GROW_VOLUME", grow).status_code == 202
    assert _sizes(url) == {"keep": 40}
    shrink = {"agent_id": aid, "volume": _volume("keep", 40), "subtract": {"value": 8}}
    assert _call(url, "SHRINK_VOLUME", shrink).status_code == 202
    assert _sizes(url) == {"keep": 32}
    assert _call(url, "UNRESERVE_RESOURCES", more).status_code == 202
    # Destroy the volume, then undo the reservation through the legacy form endpoint.
    destroy = {"agent_id": aid, "volumes": [_volume("keep", 32)]}
    assert _call(url, "DESTROY_VOLUMES", destroy).status_code == 202
    cluster.wait_until(lambda s: not volume_dir.exists(), timeout=10, what="volume removed")
    form = {
        "slaveId": agent_id,
        "resources": json.dumps([_reserved("cpus", 1), _reserved("disk", 32)]),
    }
    assert requests.post(url + "/unreserve", data=form, timeout=10).status_code == 202
    assert _reservations(cluster) == {}
    # The legacy /reserve answers 409 for what is not there, 400 for a malformed body.
    too_much = {"slaveId": agent_id, "resources": json.dumps([_reserved("cpus", 99)])}
    assert requests.post(url + "/master/reserve", data=too_much, timeout=10).status_code == 409
    assert (
        requests.post(
            url + "/reserve", data={"slaveId": agent_id, "resources": "[{"}, timeout=10
        ).status_code
        == 400
    )
    answer = requests.post(url + "/api/v1", json={"type": "GET_OPERATIONS"}, timeout=10)
    assert answer.json() == {"type": "GET_OPERATIONS", "get_operations": {"operations": []}}


def test_reservations_and_volumes_survive_a_standalone_master_restart(cluster):
    _reserve_and_create(cluster)
    cluster.master.restart()
    cluster.wait_agents_active(timeout=30)
    cluster.wait_until(lambda s: s["slaves"] and s["slaves"][0]["reserved_resources"], timeout=30)
    assert _reservations(cluster)[ROLE] == {
        **_reservations(cluster)[ROLE],
        "cpus": 1.0,
        "disk": 32.0,
    }
    assert _volumes(cluster.master_url) == ["keep"]


def test_reservations_and_volume_data_survive_an_agent_restart(cluster):
    old_id = _reserve_and_create(cluster)
    volume_dir = cluster.agents[0].work_dir / "volumes" / "roles" / ROLE / "keep"
    cluster.wait_until(lambda s: volume_dir.is_dir(), timeout=10, what="volume directory")
    (volume_dir / "data").write_text("still here")
    # SIGTERM: the agent leaves for good and comes back as a new agent, with the total it
    # checkpointed (reservations and the volume) and the volume's data.
    cluster.agents[0].restart()
    cluster.wait_until(
        lambda s: s["slaves"] and s["slaves"][0]["id"] != old_id and s["slaves"][0]["active"],
        timeout=30,
        what="agent back",
    )
    assert _reservations(cluster)[ROLE]["cpus"] == 1
    assert _volumes(cluster.master_url) == ["keep"]
    assert (volume_dir / "data").read_text() == "still here"
    own = requests.get(f"http://{cluster.agents[0].address}/state", timeout=10).json()
    assert own["reserved_resources"][ROLE]["cpus"] == 1  # the agent's own view too
    # Started with other resources than its reservations were made of, it refuses to start.
    agent = cluster.agents[0]
    agent.terminate()
    argv = [sys.executable, "-m", "butte", "agent", "--master", cluster.master_address]
    argv += ["--work_dir", str(agent.work_dir), "--port", "0", "--ip", "127.0.0.1"]
    argv += ["--resources", "cpus:1;mem:256;disk:100"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "do not match --resources" in done.stderr, done.stderr


def test_volumes_on_path_and_mount_disks_declared_in_agent_resources(cluster_factory, tmp_path):
    path_root, mount_root = tmp_path / "path-disk", tmp_path / "mount-disk"
    path_root.mkdir()
    mount_root.mkdir()
    path_source = {"type": "PATH", "path": {"root": str(path_root)}}
    mount_source = {"type": "MOUNT", "mount": {"root": str(mount_root)}}
    resources = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 512}},
        {
            "name": "disk",
            "type": "SCALAR",
            "scalar": {"value": 100},
            "disk": {"source": path_source},
        },
        {
            "name": "disk",
            "type": "SCALAR",
            "scalar": {"value": 50},
            "disk": {"source": mount_source},
        },
    ]
    cluster = cluster_factory(resources=json.dumps(resources))
    url, agent_id = cluster.master_url, _agent_id(cluster)
    aid = {"value": agent_id}
    reserve = [
        {**_reserved("disk", 30), "disk": {"source": path_source}},
        {**_reserved("disk", 50), "disk": {"source": mount_source}},
    ]
    assert (
        _call(url, "RESERVE_RESOURCES", {"agent_id": aid, "resources": reserve}).status_code == 202
    )

    def vol(pid: str, size: float, source: dict) -> dict:
        v = _volume(pid, size)
        v["disk"]["source"] = source
        return v

    # A MOUNT disk is used whole: part of it holds no volume.
    half = {"agent_id": aid, "volumes": [vol("m", 25, mount_source)]}
    assert _call(url, "CREATE_VOLUMES", half).status_code == 409
    volumes = [vol("p", 30, path_source), vol("m", 50, mount_source)]
    assert _call(url, "CREATE_VOLUMES", {"agent_id": aid, "volumes": volumes}).status_code == 202
    on_path = path_root / "volumes" / "roles" / ROLE / "p"
    cluster.wait_until(lambda s: on_path.is_dir(), timeout=10, what="PATH volume directory")
    (mount_root / "f").write_text("x")
    assert _sizes(url) == {"p": 30, "m": 50}
    assert _call(url, "DESTROY_VOLUMES", {"agent_id": aid, "volumes": volumes}).status_code == 202
    cluster.wait_until(lambda s: not on_path.exists(), timeout=10, what="PATH volume removed")
    cluster.wait_until(lambda s: not (mount_root / "f").exists(), timeout=10, what="MOUNT emptied")
    assert mount_root.is_dir()
