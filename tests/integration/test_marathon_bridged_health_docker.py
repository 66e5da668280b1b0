"""Health checks of Marathon apps on Docker's bridge network, end to end: `butte marathon`
against a real master and an agent with the Docker containerizer, and the private Docker
daemon of `bridged_daemon` (tests/integration/test_marathon_bridge_docker.py) in a network
namespace of this test's own. The Docker executor runs each MESOS_HTTP probe in the
container's network namespace, on the container port (docs/docker.md "Checks",
docs/marathon.md): an app whose server answers there goes healthy, one whose server does not
is killed as unhealthy and replaced. Nothing listens on those ports in the host's namespace,
so a probe sent from there could only fail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import ClusterHandle
from butte.testing.marathon import MarathonHandle
from tests.integration.test_marathon_bridge_docker import bridged_cluster, refused_on_host

pytestmark = pytest.mark.integration

# The agent's ports, in this test's range (28500-28999); they are published inside the
# daemon's namespace only.
PORTS = (28600, 28609)
CONTAINER_PORT = 8080


@contextlib.contextmanager
def health_cluster(tmp_path: Path) -> Iterator[tuple[str, ClusterHandle, MarathonHandle]]:
    """`bridged_cluster` with the ports `PORTS`: (the busybox image, cluster, marathon)."""
    with bridged_cluster(tmp_path, PORTS) as (_, image, cluster, marathon):
        yield image, cluster, marathon


def bridged_app(app_id: str, image: str, cmd: str, check: dict[str, Any]) -> dict[str, Any]:
    """A bridged app with one port mapping (`CONTAINER_PORT`, any host port) and ``check``."""
    return {
        "id": app_id,
        "cmd": cmd,
        "cpus": 0.1,
        "mem": 32,
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": image},
            "portMappings": [{"containerPort": CONTAINER_PORT, "hostPort": 0, "name": "http"}],
        },
        "healthChecks": [check],
    }


def running(marathon: MarathonHandle, app: str) -> list[dict[str, Any]]:
    tasks = marathon.get(f"/v2/apps/{app}/tasks")["tasks"]
    return [t for t in tasks if t["state"] == "TASK_RUNNING"]


def test_a_bridged_apps_health_check_goes_healthy_and_a_silent_one_is_replaced(
    tmp_path: Path,
) -> None:
    with health_cluster(tmp_path) as (image, cluster, marathon):
        serve = (
            "mkdir -p /www && echo ok > /www/index.html && "
            f"exec httpd -f -p {CONTAINER_PORT} -h /www"
        )
        check = {
            "protocol": "MESOS_HTTP",
            "portIndex": 0,
            "path": "/index.html",
            "gracePeriodSeconds": 60,
            "intervalSeconds": 1,
            "timeoutSeconds": 2,
            "maxConsecutiveFailures": 3,
            "delaySeconds": 0,
        }
        status, body = marathon.request("POST", "/v2/apps", bridged_app("/ok", image, serve, check))
        assert status == 201, body
        # no server: every probe fails, and past maxConsecutiveFailures the task is killed
        silent = {**check, "gracePeriodSeconds": 0, "maxConsecutiveFailures": 2}
        status, body = marathon.request(
            "POST", "/v2/apps", bridged_app("/silent", image, "exec sleep 3600", silent)
        )
        assert status == 201, body

        [task] = marathon.wait_until(
            lambda: [
                t
                for t in running(marathon, "ok")
                if [r["alive"] for r in t["healthCheckResults"]] == [True]
            ],
            90,
            "the bridged app to be healthy",
        )
        # probed inside the container: the host's namespace has neither the container port
        # nor the host port
        [host_port] = task["ports"]
        assert refused_on_host(CONTAINER_PORT) and refused_on_host(host_port)
        counts = marathon.get("/v2/apps/ok")["app"]
        assert counts["tasksHealthy"] == 1 and counts["tasksUnhealthy"] == 0

        # the Mesos HealthCheck the master got asks for the container port
        infos = [t for f in cluster.state()["frameworks"] for t in f["tasks"]]
        [info] = [t for t in infos if t["id"] == task["id"]]
        assert info["health_check"]["type"] == "HTTP"
        assert info["health_check"]["http"]["port"] == CONTAINER_PORT
        assert info["container"]["docker"]["network"] == "BRIDGE"

        [first] = marathon.wait_until(
            lambda: running(marathon, "silent"), 90, "the silent app to run"
        )

        def replaced() -> bool:
            state = cluster.state()
            done = [t for f in state["frameworks"] for t in f["completed_tasks"]]
            killed = [t for t in done if t["id"] == first["id"] and t["state"] == "TASK_KILLED"]
            others = [t for t in running(marathon, "silent") if t["id"] != first["id"]]
            return bool(killed and others)

        marathon.wait_until(replaced, 90, "the unhealthy task to be killed and replaced")
        # the healthy one was never touched
        assert [t["id"] for t in running(marathon, "ok")] == [task["id"]]
