"""Marathon's ``resourceLimits`` end to end: ``butte marathon`` against a real master and an
agent with ``--isolation cgroups/cpu,cgroups/mem``. An app asking for 32 MB with a memory
limit of 256 MB and no cpu ceiling gets tasks whose memory cgroup's hard limit is the limit
plus the command executor's 32 MB (the request, with the executor's, the soft limit) and
whose cpu cgroup has no CFS quota; the task holds far more than its request and runs on
(docs/marathon.md "App definitions", docs/isolation.md "Burstable tasks"). Needs root and
the cgroup v1 memory, cpu, cpuacct, pids and freezer controllers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_isolation import cgroups_root, group  # noqa: F401

from butte.testing.cluster import start_cluster
from butte.testing.marathon import start_marathon

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def _container_of(task: dict[str, Any]) -> str | None:
    for status in task.get("statuses", ()):
        value = ((status.get("container_status") or {}).get("container_id") or {}).get("value")
        if value:
            return str(value)
    return None


def test_an_app_with_resource_limits_bursts_to_its_limit_in_real_cgroups(
    tmp_path: Path,
    cgroups_root: str,  # noqa: F811
) -> None:
    # 150 MB held by tail against a request of 32 MB (64 with the executor's): without the
    # limit of 256 MB the kernel would kill the task.
    burst = "head -c 150000000 /dev/zero | tail > /dev/null && touch burst-done; exec sleep 600"
    flags = ("--isolation", "cgroups/cpu,cgroups/mem", "--cgroups_root", cgroups_root)
    with (
        start_cluster(tmp_path, agent_flags=flags) as cluster,
        start_marathon(cluster.master_address, tmp_path) as marathon,
    ):
        app = {
            "id": "/burst",
            "cmd": burst,
            "cpus": 0.1,
            "mem": 32,
            "resourceLimits": {"cpus": "unlimited", "mem": 256},
        }
        status, body = marathon.request("POST", "/v2/apps", app)
        assert status == 201, body
        assert body["resourceLimits"] == {"cpus": "unlimited", "mem": 256.0}

        def launched() -> dict[str, Any] | None:
            tasks = [t for f in cluster.state()["frameworks"] for t in f["tasks"]]
            running = [t for t in tasks if t["state"] == "TASK_RUNNING" and _container_of(t)]
            return running[0] if running else None

        task = marathon.wait_until(launched, 60, "the instance running")
        # The master took the limits of the TaskInfo marathon built.
        assert task["limits"] == {"cpus": "Infinity", "mem": 256.0}
        container = _container_of(task)
        assert container is not None
        memory = group(cgroups_root, "memory", container)
        assert int((memory / "memory.limit_in_bytes").read_text()) == (256 + 32) * MB
        assert int((memory / "memory.soft_limit_in_bytes").read_text()) == (32 + 32) * MB
        cpu = group(cgroups_root, "cpu", container)
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == -1
        marathon.wait_until(
            lambda: any(tmp_path.glob("**/runs/*/burst-done")), 60, "the burst held and let go"
        )
        (shown,) = marathon.get("/v2/apps/burst/tasks")["tasks"]
        assert shown["id"] == task["id"] and shown["state"] == "TASK_RUNNING"
        assert marathon.get("/v2/apps/burst")["app"]["resourceLimits"] == body["resourceLimits"]
