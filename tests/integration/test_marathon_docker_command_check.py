"""COMMAND health checks of Marathon Docker apps on the bridge network, end to end: `butte
marathon` against a real master and an agent with the Docker containerizer, and the private
Docker daemon of `bridged_daemon` (tests/integration/test_marathon_bridge_docker.py) in a
network namespace of this test's own. Marathon's COMMAND health check becomes a Mesos COMMAND
health check, which the Docker executor runs in the container with ``docker exec``
(docs/docker.md "Checks", docs/marathon.md): an app whose command finds the file its own
command made inside the container goes healthy; one whose command looks for a path that
exists nowhere is killed as unhealthy and replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from butte.testing.marathon import MarathonHandle
from tests.integration.test_marathon_bridge_docker import bridged_cluster

pytestmark = pytest.mark.integration

# The agent's ports, in this helper's range (11500-11999); published in the daemon's
# namespace only.
PORTS = (11600, 11609)


def bridged_app(app_id: str, image: str, check: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": app_id,
        "cmd": "touch /only-in-container && exec sleep 3600",
        "cpus": 0.1,
        "mem": 32,
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": image},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}],
        },
        "healthChecks": [check],
    }


def running(marathon: MarathonHandle, app: str) -> list[dict[str, Any]]:
    tasks = marathon.get(f"/v2/apps/{app}/tasks")["tasks"]
    return [t for t in tasks if t["state"] == "TASK_RUNNING"]


def test_marathon_docker_command_check_goes_healthy_and_a_failing_one_is_replaced(
    tmp_path: Path,
) -> None:
    assert not Path("/only-in-container").exists()  # a probe on the host would fail
    with bridged_cluster(tmp_path, PORTS) as (_, image, cluster, marathon):
        check = {
            "protocol": "COMMAND",
            "command": {"value": "test -f /only-in-container"},
            "gracePeriodSeconds": 60,
            "intervalSeconds": 1,
            "timeoutSeconds": 5,
            "maxConsecutiveFailures": 3,
            "delaySeconds": 0,
        }
        status, body = marathon.request("POST", "/v2/apps", bridged_app("/ok", image, check))
        assert status == 201, body
        failing = {
            **check,
            "command": {"value": "test -f /no-such-path"},
            "gracePeriodSeconds": 0,
            "maxConsecutiveFailures": 2,
        }
        status, body = marathon.request("POST", "/v2/apps", bridged_app("/failing", image, failing))
        assert status == 201, body

        [task] = marathon.wait_until(
            lambda: [
                t
                for t in running(marathon, "ok")
                if [r["alive"] for r in t["healthCheckResults"]] == [True]
            ],
            90,
            "the app to be healthy",
        )
        counts = marathon.get("/v2/apps/ok")["app"]
        assert counts["tasksHealthy"] == 1 and counts["tasksUnhealthy"] == 0
        # What the master got: a Mesos COMMAND health check, as Marathon sends it.
        infos = [t for f in cluster.state()["frameworks"] for t in f["tasks"]]
        [info] = [t for t in infos if t["id"] == task["id"]]
        assert info["health_check"]["type"] == "COMMAND"
        assert info["health_check"]["command"]["value"] == "test -f /only-in-container"
        assert info["container"]["docker"]["network"] == "BRIDGE"

        [first] = marathon.wait_until(
            lambda: running(marathon, "failing"), 90, "the failing app to run"
        )

        def replaced() -> bool:
            state = cluster.state()
            done = [t for f in state["frameworks"] for t in f["completed_tasks"]]
            killed = [t for t in done if t["id"] == first["id"] and t["state"] == "TASK_KILLED"]
            others = [t for t in running(marathon, "failing") if t["id"] != first["id"]]
            return bool(killed and others)

        marathon.wait_until(replaced, 90, "the unhealthy task to be killed and replaced")
        assert [t["id"] for t in running(marathon, "ok")] == [task["id"]]
