"""Framework failover timeout with a real cluster: a scheduler that goes away for longer
than its failover_timeout is removed, its tasks are killed on the agent (the processes are
gone), and re-subscribing with its id is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from butte.client.scheduler import SchedulerClient, SubscriptionError

pytestmark = pytest.mark.integration

RESOURCES = [
    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def run_until_running(master: str, pid_file: Path) -> str:
    """Subscribes (failover_timeout 1 s, checkpointing), runs one task, leaves without a
    TEARDOWN once it runs; the framework id."""
    info = {"name": "short-lived", "failover_timeout": 1.0, "checkpoint": True}
    async with SchedulerClient(master, info) as client:
        async for event in client:
            if event["type"] == "OFFERS":
                offer = event["offers"]["offers"][0]
                task = {
                    "name": "ft",
                    "task_id": {"value": "ft"},
                    "resources": RESOURCES,
                    "command": {"value": f"echo $$ > {pid_file}; exec sleep 60"},
                }
                await client.launch(offer, [task])
            elif event["type"] == "UPDATE":
                await client.acknowledge_status(event["update"]["status"])
                if event["update"]["status"]["state"] == "TASK_RUNNING":
                    assert client.framework_id is not None
                    return client.framework_id
    raise AssertionError("event stream ended")


def test_framework_removed_after_failover_timeout(cluster, tmp_path):
    pid_file = tmp_path / "pid"
    framework_id = asyncio.run(run_until_running(cluster.master_address, pid_file))
    pid = int(pid_file.read_text())
    cluster.wait_until(
        lambda s: any(f["id"] == framework_id for f in s["completed_frameworks"]),
        what="framework removed after its failover timeout",
    )
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "the task must be killed with its framework"

    async def resubscribe() -> None:
        info = {"name": "short-lived", "id": {"value": framework_id}}
        async with SchedulerClient(cluster.master_address, info, retry_timeout=5):
            pass

    with pytest.raises(SubscriptionError, match="removed"):
        asyncio.run(resubscribe())
