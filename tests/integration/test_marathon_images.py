"""A Marathon app with a ``container``: `butte marathon` hands its image to the agent's
mesos containerizer (``--image_providers docker``), and the app's instances run inside it."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from butte.testing.cluster import start_cluster
from butte.testing.images import busybox_rootfs, save_archive
from butte.testing.marathon import start_marathon
from butte.testing.require import require

pytestmark = pytest.mark.integration


def _registry(tmp_path: Path) -> Path:
    """A registry directory with ``svc:1``: busybox whose entrypoint is /bin/sh (a task's
    arguments follow it), with GREETING in its environment and /etc/from-image, a file
    only the image has."""
    require("the tests run as root only (mount namespaces)" if os.geteuid() else None, "root")
    busybox_rootfs()
    registry = tmp_path / "registry"
    registry.mkdir()
    save_archive(
        registry / "svc:1.tar",
        "svc",
        "1",
        config={"Entrypoint": ["/bin/sh"], "Env": ["GREETING=from-image"]},
        layers=[{"/etc/from-image": b"layered\n"}],
    )
    return registry


def test_an_app_in_an_image_runs_its_instances_inside_the_image(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    script = 'cat /etc/from-image; echo "$GREETING"; exec sleep 600'
    flags = ("--image_providers", "docker", "--docker_registry", str(registry))
    with (
        start_cluster(tmp_path, agent_flags=flags) as cluster,
        start_marathon(cluster.master_address, tmp_path) as marathon,
    ):
        status, body = marathon.request(
            "POST",
            "/v2/apps",
            {
                "id": "/svc",
                "args": ["-c", script],
                "cpus": 0.1,
                "mem": 32,
                "instances": 2,
                "container": {"type": "MESOS", "docker": {"image": "svc:1"}},
            },
        )
        assert status == 201, body
        assert body["container"]["docker"]["image"] == "svc:1"
        marathon.wait_until(
            lambda: marathon.get("/v2/apps/svc")["app"]["tasksRunning"] == 2, 60, "2 instances"
        )
        state = cluster.state()
        tasks = [t for f in state["frameworks"] for t in f["tasks"]]
        assert len(tasks) == 2
        assert all(t["container"]["mesos"]["image"]["docker"]["name"] == "svc:1" for t in tasks)
        marathon.wait_until(
            lambda: (
                sum(  # runs/latest links to a run: count each file once
                    p.read_text().splitlines()[:2] == ["layered", "from-image"]
                    for p in {q.resolve() for q in tmp_path.glob("**/runs/*/stdout")}
                )
                == 2
            ),
            30,
            "both instances printed the image's file and environment",
        )
        # An image the agent does not have: the instance fails and the app does not run.
        status, body = marathon.request(
            "POST",
            "/v2/apps",
            {
                "id": "/missing",
                "cpus": 0.1,
                "mem": 32,
                "container": {"type": "MESOS", "docker": {"image": "nope:1"}},
            },
        )
        assert status == 201, body
        marathon.wait_until(
            lambda: "nope:1" in str(marathon.get("/v2/apps/missing")["app"].get("lastTaskFailure")),
            60,
            "the missing image reported as the last task failure",
        )


def test_a_pod_container_in_an_image_shares_a_volume_with_one_on_the_host(tmp_path: Path) -> None:
    """A pod's container with an ``image`` runs in its own root filesystem as a task group
    member (its arguments after the image's entrypoint, its sandbox at /mnt/mesos/sandbox,
    its output in its own directory), beside a container without one; an ephemeral volume
    at an absolute path in the image is the same directory the other container sees in its
    sandbox. Across an agent SIGKILL and restart the instance keeps running with its root
    filesystem, and its deletion (right after the restart: the kill waits for the executor
    to re-subscribe) removes the root filesystem and undoes the volume's mounts."""
    registry = _registry(tmp_path)
    script = (
        'cat /etc/from-image; echo "$GREETING $MESOS_SANDBOX"; '
        "echo from-the-image > /data/note; exec sleep 600"
    )
    pod = {
        "id": "/imaged",
        "volumes": [{"name": "data"}],
        "containers": [
            {
                "name": "boxed",
                "image": {"kind": "DOCKER", "id": "svc:1"},
                "exec": {"command": {"argv": ["-c", script]}},
                "resources": {"cpus": 0.1, "mem": 32},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            {
                "name": "host",
                "exec": {
                    "command": {
                        "shell": "until [ -s in/note ]; do sleep 0.05; done; "
                        "cp in/note got; test -e /etc/from-image || echo host > where; "
                        "exec sleep 600"
                    }
                },
                "resources": {"cpus": 0.1, "mem": 16},
                "volumeMounts": [{"name": "data", "mountPath": "in", "readOnly": True}],
            },
        ],
    }
    flags = ("--image_providers", "docker", "--docker_registry", str(registry))
    with (
        start_cluster(tmp_path, agent_flags=flags) as cluster,
        start_marathon(cluster.master_address, tmp_path) as marathon,
    ):
        status, body = marathon.request("POST", "/v2/pods", pod)
        assert status == 201, body

        def members() -> dict[str, Path] | None:
            status = marathon.get("/v2/pods/imaged::status")
            for inst in status["instances"]:
                if [c["status"] for c in inst["containers"]] == ["TASK_RUNNING"] * 2:
                    found = {
                        name: next(tmp_path.glob(f"agent-0/slaves/**/tasks/{inst['id']}.{name}"))
                        for name in ("boxed", "host")
                    }
                    return found
            return None

        boxes = marathon.wait_until(members, 60, "both containers running")
        marathon.wait_until(lambda: (boxes["host"] / "where").read_text(), 20, "the note shared")
        assert (boxes["host"] / "got").read_text() == "from-the-image\n"
        assert (boxes["host"] / "where").read_text() == "host\n"  # on the host's file system
        out = (boxes["boxed"] / "stdout").read_text().splitlines()
        assert out[:2] == ["layered", "from-image /mnt/mesos/sandbox"], out
        tasks = [t for f in cluster.state()["frameworks"] for t in f["tasks"]]
        (boxed,) = [t for t in tasks if t["name"] == "boxed"]
        assert boxed["container"]["mesos"]["image"]["docker"]["name"] == "svc:1"

        # An agent SIGKILLed and started again recovers the instance (marathon checkpoints)
        # and keeps the member's root filesystem: it is in use.
        provisioned = sorted(tmp_path.glob("agent-0/provisioner/*"))
        assert len(provisioned) == 1, "a root filesystem for the boxed member"
        cluster.agents[0].kill()
        cluster.agents[0].restart()
        cluster.wait_agents_active(1)
        boxed_id = f"{boxes['boxed'].name}"

        def agent_runs_it() -> bool:
            with urllib.request.urlopen(cluster.agents[0].url + "/state", timeout=5) as r:
                state = json.load(r)
            return any(
                t["id"] == boxed_id and t["state"] == "TASK_RUNNING"
                for f in state["frameworks"]
                for e in f["executors"]
                for t in e["tasks"]
            )

        marathon.wait_until(agent_runs_it, 30, "the restarted agent runs the member")
        assert sorted(tmp_path.glob("agent-0/provisioner/*")) == provisioned
        (inst,) = marathon.get("/v2/pods/imaged::status")["instances"]
        assert [c["status"] for c in inst["containers"]] == ["TASK_RUNNING"] * 2
        assert boxes["boxed"].name == f"{inst['id']}.boxed"  # the same instance
        # Its root filesystem goes with the instance.
        marathon.wait_until(lambda: not marathon.get("/v2/deployments"), 30, "deployed")
        status, _ = marathon.request("DELETE", "/v2/pods/imaged")
        assert status == 202
        marathon.wait_until(
            lambda: not list(tmp_path.glob("agent-0/provisioner/*")), 30, "the rootfs removed"
        )

        # The shared volume's mounts were made by the agent before the restart, and undone by
        # the one after it, once the instance ended.
        def mounted() -> list[str]:
            with open("/proc/self/mountinfo") as f:
                return [line for line in f if str(tmp_path) in line.split()[4]]

        marathon.wait_until(lambda: not mounted(), 10, "the volume unmounted")


def test_a_stateful_app_in_an_image_finds_its_volume_in_its_sandbox(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    flags = ("--image_providers", "docker", "--docker_registry", str(registry))
    # Run inside the image (its own file), each task appends its id to the volume.
    script = 'cat /etc/from-image && echo "$MESOS_TASK_ID" >> "$MESOS_SANDBOX/data/log"'
    with (
        start_cluster(tmp_path, agent_flags=flags) as cluster,
        start_marathon(cluster.master_address, tmp_path, ["--mesos_role", "db"]) as marathon,
    ):
        volume = {"containerPath": "data", "mode": "RW", "persistent": {"size": 8}}
        app = {
            "id": "/kv",
            "args": ["-c", f"{script} && exec sleep 600"],
            "cpus": 0.1,
            "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "svc:1"}, "volumes": [volume]},
        }
        status, body = marathon.request("POST", "/v2/apps", app)
        assert status == 201, body

        def running() -> list[dict] | None:
            tasks = marathon.get("/v2/apps/kv/tasks")["tasks"]
            return [t for t in tasks if t["state"] == "TASK_RUNNING"] or None

        [first] = marathon.wait_until(running, 60, "the task running")
        [local] = first["localVolumes"]
        [path] = tmp_path.rglob(f"volumes/roles/db/{local['persistenceId']}")
        log = path / "log"
        marathon.wait_until(lambda: log.exists() and log.read_text().split() == [first["id"]], 20)
        marathon.request("DELETE", f"/v2/apps/kv/tasks/{first['id']}")
        [second] = marathon.wait_until(
            lambda: [t for t in running() or [] if t["id"] != first["id"]] or None, 60, "again"
        )
        assert second["slaveId"] == first["slaveId"]
        marathon.wait_until(lambda: log.read_text().split() == [first["id"], second["id"]], 20)
