"""A Marathon app with a ``container``: `butte marathon` hands its image to the agent's
mesos containerizer (``--image_providers docker``), and the app's instances run inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from butte.testing.cluster import start_cluster
from butte.testing.images import busybox_rootfs, save_archive
from butte.testing.marathon import start_marathon
from butte.testing.require import require

pytestmark = pytest.mark.integration


def test_an_app_in_an_image_runs_its_instances_inside_the_image(tmp_path: Path) -> None:
    require("the tests run as root only (mount namespaces)" if os.geteuid() else None, "root")
    busybox_rootfs()
    registry = tmp_path / "registry"
    registry.mkdir()
    # /etc/from-image exists only in the image; the app's args follow its entrypoint.
    save_archive(
        registry / "svc:1.tar",
        "svc",
        "1",
        config={"Entrypoint": ["/bin/sh"], "Env": ["GREETING=from-image"]},
        layers=[{"/etc/from-image": b"layered\n"}],
    )
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
