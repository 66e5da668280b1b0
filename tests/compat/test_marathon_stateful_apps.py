"""Stateful (resident) Marathon apps with the unmodified PyPI ``marathon`` client against
``butte marathon --mesos_role db`` on a real cluster (one master, two agents, real tasks):
an app with a local persistent volume reserves its resources and creates its volume on one
agent, and everything its tasks write there outlives them: a killed task, a scale to 0 and
back, and a restart of marathon all come back to the same agent and the same data. Deleting
the app destroys the volume and frees the reservation (docs/marathon.md "Stateful apps")."""

from __future__ import annotations

import collections
import collections.abc
import json
from pathlib import Path
from typing import Any

import pytest

from butte.client.operator import OperatorClient
from butte.testing.cluster import start_cluster
from butte.testing.marathon import start_marathon
from butte.testing.require import require_module

marathon = require_module("marathon")
from marathon.exceptions import MarathonHttpError  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.container import MarathonContainer, MarathonContainerVolume  # noqa: E402

collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]

pytestmark = [pytest.mark.compat, pytest.mark.integration]

ROLE = "db"
# Each task appends its id to the volume, then stays.
CMD = 'echo "$MESOS_TASK_ID" >> data/log && exec sleep 600'


def _app(**fields: Any) -> MarathonApp:
    volume = MarathonContainerVolume(container_path="data", mode="RW", persistent={"size": 16})
    container = MarathonContainer(type="MESOS", volumes=[volume])
    return MarathonApp(**{"cmd": CMD, "cpus": 0.1, "mem": 32, "container": container, **fields})


def _running(client: Any, app_id: str, count: int) -> list[Any] | None:
    tasks = [t for t in client.list_tasks(app_id) if t.state == "TASK_RUNNING"]
    return tasks if len(tasks) == count else None


def _reserved(cluster: Any) -> list[dict[str, Any]]:
    """The resources reserved for the role on any agent, as the master's /slaves has them."""
    out = []
    for agent in cluster.get("/slaves")["slaves"]:
        out += [r for r in agent.get("reserved_resources_full", {}).get(ROLE, [])]
    return out


def _log(volume: Path) -> list[str]:
    path = volume / "log"
    return path.read_text().split() if path.exists() else []


def test_a_stateful_app_keeps_its_agent_and_its_data_until_it_is_deleted(tmp_path: Path) -> None:
    with (
        start_cluster(tmp_path, agents=2) as cluster,
        start_marathon(cluster.master_address, tmp_path, ["--mesos_role", ROLE]) as m,
    ):
        client = marathon.MarathonClient(m.url, timeout=20)
        created = client.create_app("/db", _app())
        assert created.residency["taskLostBehavior"] == "WAIT_FOREVER"
        assert created.upgrade_strategy.maximum_over_capacity == 0
        [task] = m.wait_until(lambda: _running(client, "/db", 1), 60, "the task running")
        assert task.id.endswith("._app.1")
        [local] = task.local_volumes
        assert local["containerPath"] == "data" and local["runSpecId"] == "/db"
        assert local["persistenceId"] == f"db#data#{local['uuid']}"
        volumes = list(tmp_path.rglob(f"volumes/roles/{ROLE}/{local['persistenceId']}"))
        assert len(volumes) == 1, volumes
        volume = volumes[0]
        m.wait_until(lambda: _log(volume) == [task.id], 20, "the task's line in its volume")
        reserved = _reserved(cluster)
        assert {r["name"] for r in reserved} >= {"cpus", "mem", "disk", "ports"}
        labels = {
            lb["key"]: lb["value"] for r in reserved for lb in r["reservation"]["labels"]["labels"]
        }
        assert labels["marathon_task_id"] == task.id.removesuffix("._app.1")

        # A killed task comes back on the same agent, to the same volume.
        client.kill_task("/db", task.id)
        [second] = m.wait_until(
            lambda: [t for t in _running(client, "/db", 1) or [] if t.id != task.id] or None,
            60,
            "the task relaunched",
        )
        assert second.id.endswith("._app.2") and second.slave_id == task.slave_id
        m.wait_until(lambda: _log(volume) == [task.id, second.id], 20, "both lines")

        # Scaled to 0, the reservation and the volume stay; they survive marathon's restart.
        m.wait_until(lambda: not client.list_deployments(), 30, "no deployment")
        client.scale_app("/db", instances=0)
        m.wait_until(lambda: client.list_tasks("/db") == [], 60, "the task killed")
        assert _reserved(cluster) and volume.is_dir()
        m.wait_until(lambda: not client.list_deployments(), 30, "no deployment")
        m.restart()
        client.scale_app("/db", instances=1)
        [third] = m.wait_until(lambda: _running(client, "/db", 1), 60, "scaled back up")
        assert third.id.endswith("._app.3") and third.slave_id == task.slave_id
        m.wait_until(lambda: _log(volume) == [task.id, second.id, third.id], 20, "three lines")

        # Its resources may not change.
        m.wait_until(lambda: not client.list_deployments(), 30, "no deployment")
        with pytest.raises(MarathonHttpError) as e:
            client.update_app("/db", _app(mem=64))
        assert e.value.status_code == 422
        assert "create a new service" in str(e.value.error_details)
        # Its command may: the instance is replaced on its own reservation (the default
        # upgrade strategy of a resident app kills first, nothing over capacity).
        client.update_app("/db", _app(cmd=CMD.replace('"$MESOS_TASK_ID"', 'v2-"$MESOS_TASK_ID"')))
        [fourth] = m.wait_until(
            lambda: [t for t in _running(client, "/db", 1) or [] if t.id != third.id] or None,
            60,
            "the new version running",
        )
        assert fourth.id.endswith("._app.4") and fourth.slave_id == task.slave_id
        m.wait_until(lambda: _log(volume)[3:] == [f"v2-{fourth.id}"], 20, "the new line")

        # Deleted: the volume is destroyed and the reservation freed.
        m.wait_until(lambda: not client.list_deployments(), 30, "no deployment")
        client.delete_app("/db")
        m.wait_until(lambda: not _reserved(cluster) and not volume.exists(), 60, "all freed")


def test_a_stateful_app_needs_a_role_to_reserve_in(tmp_path: Path) -> None:
    with (
        start_cluster(tmp_path) as cluster,
        start_marathon(cluster.master_address, tmp_path) as m,
    ):
        client = marathon.MarathonClient(m.url, timeout=20)
        with pytest.raises(MarathonHttpError) as e:
            client.create_app("/db", _app())
        assert e.value.status_code == 422
        assert "--mesos_role" in str(e.value.error_details)


def test_a_mount_volume_takes_a_whole_mount_disk_and_is_emptied_when_freed(tmp_path: Path) -> None:
    mount_root = tmp_path / "mnt-data"
    mount_root.mkdir()
    disk = {
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": 64},
        "disk": {"source": {"type": "MOUNT", "mount": {"root": str(mount_root)}}},
    }
    plain = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024}},
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31100}]}},
    ]
    with (
        start_cluster(tmp_path, resources=json.dumps([*plain, disk])) as cluster,
        start_marathon(cluster.master_address, tmp_path, ["--mesos_role", ROLE]) as m,
    ):
        client = marathon.MarathonClient(m.url, timeout=20)
        volume = MarathonContainerVolume(
            container_path="data", mode="RW", persistent={"type": "mount", "size": 32}
        )
        app = MarathonApp(
            cmd=CMD, cpus=0.1, mem=32, container=MarathonContainer(type="MESOS", volumes=[volume])
        )
        client.create_app("/db", app)
        [task] = m.wait_until(lambda: _running(client, "/db", 1), 60, "the task running")
        m.wait_until(lambda: _log(mount_root) == [task.id], 20, "its line on the MOUNT disk")
        [held] = [r for r in _reserved(cluster) if (r.get("disk") or {}).get("persistence")]
        assert held["scalar"]["value"] == 64  # the whole disk
        m.wait_until(lambda: not client.list_deployments(), 30, "no deployment")
        client.delete_app("/db")
        m.wait_until(lambda: not _reserved(cluster), 60, "the reservation freed")
        m.wait_until(lambda: not any(mount_root.iterdir()), 30, "the MOUNT disk emptied")
        assert mount_root.is_dir()


def test_a_stateful_pod_keeps_its_volume_across_instance_kills_until_deleted(
    tmp_path: Path,
) -> None:
    pod = {
        "id": "/pdb",
        "volumes": [{"name": "data", "persistent": {"size": 16}}],
        "containers": [
            {
                "name": "db",
                "exec": {"command": {"shell": CMD.replace("data/log", "store/log")}},
                "resources": {"cpus": 0.1, "mem": 32},
                "volumeMounts": [{"name": "data", "mountPath": "store"}],
            }
        ],
    }
    with (
        start_cluster(tmp_path, agents=2) as cluster,
        start_marathon(cluster.master_address, tmp_path, ["--mesos_role", ROLE]) as m,
    ):
        status, body = m.request("POST", "/v2/pods", pod)
        assert status == 201, body
        assert body["scheduling"]["upgrade"]["maximumOverCapacity"] == 0

        def stable(not_id: str = "") -> dict[str, Any] | None:
            status = m.get("/v2/pods/pdb::status")
            running = [
                i
                for i in status.get("instances", ())
                if i["status"] == "STABLE" and i["containers"][0]["containerId"] != not_id
            ]
            return running[0] if len(running) == 1 else None

        first = m.wait_until(stable, 60, "the pod running")
        [local] = first["localVolumes"]
        [volume] = tmp_path.rglob(f"volumes/roles/{ROLE}/{local['persistenceId']}")
        task = first["containers"][0]["containerId"]
        m.wait_until(lambda: _log(volume) == [task], 20, "the member's line in the volume")
        m.request("DELETE", f"/v2/pods/pdb::instances/{first['id']}")
        second = m.wait_until(lambda: stable(not_id=task), 60, "the instance back")
        assert second["id"] == first["id"] and second["agentId"] == first["agentId"]
        again = second["containers"][0]["containerId"]
        assert again == f"{task}.2"
        m.wait_until(lambda: _log(volume) == [task, again], 20, "both lines")
        m.wait_until(lambda: not m.get("/v2/deployments"), 30, "no deployment")
        m.request("DELETE", "/v2/pods/pdb")
        m.wait_until(lambda: not _reserved(cluster) and not volume.exists(), 60, "all freed")


def test_an_instance_whose_agent_is_marked_gone_reserves_anew_on_another(tmp_path: Path) -> None:
    with (
        start_cluster(tmp_path, agents=2) as cluster,
        start_marathon(cluster.master_address, tmp_path, ["--mesos_role", ROLE]) as m,
    ):
        client = marathon.MarathonClient(m.url, timeout=20)
        client.create_app("/db", _app())
        [task] = m.wait_until(lambda: _running(client, "/db", 1), 60, "the task running")
        # The operator says the agent is gone for good: its reservation and volume with it.
        OperatorClient(cluster.master_address).call(
            "MARK_AGENT_GONE", {"agent_id": {"value": task.slave_id}}
        )
        [moved] = m.wait_until(
            lambda: [t for t in _running(client, "/db", 1) or [] if t.id != task.id] or None,
            60,
            "the instance anew on the other agent",
        )
        assert moved.slave_id != task.slave_id
        assert moved.id.endswith("._app.1")  # a new instance, a new reservation
        assert moved.local_volumes[0]["persistenceId"] != task.local_volumes[0]["persistenceId"]
