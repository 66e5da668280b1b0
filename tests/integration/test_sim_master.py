"""Simulated agents against a real master process: registration, the task lifecycle with
acknowledged updates, kills, resends of unacknowledged updates, re-registration with a
restarted master."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.cli.local import free_port
from butte.client.scheduler import SchedulerClient
from butte.sim.agents import SimOptions, SimulatedCluster
from butte.sim.durations import TaskDuration

pytestmark = pytest.mark.integration


class MasterProcess:
    """A ``butte master`` on a free port, restartable on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.tmp_path / "master.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "butte",
                "master",
                f"--port={self.port}",
                f"--work_dir={self.tmp_path / 'master'}",
                "--allocation_interval=100ms",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://{self.address}/health", timeout=1).close()
                return
            time.sleep(0.05)
        raise TimeoutError("master did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.address}/master/state", timeout=5) as r:
            return json.loads(r.read())


@pytest.fixture
def master(tmp_path: Path) -> Iterator[MasterProcess]:
    proc = MasterProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@contextlib.asynccontextmanager
async def sim_cluster(master: str, agents: int, **options: Any) -> AsyncIterator[SimulatedCluster]:
    cluster = SimulatedCluster(master, agents, SimOptions.from_text("cpus:2;mem:1024", **options))
    await cluster.start()
    try:
        await cluster.wait_registered(timeout=10)
        yield cluster
    finally:
        await cluster.stop()


async def launch(client: SchedulerClient, task_ids: list[str], command: str) -> None:
    """Launches the tasks on the first offer that arrives."""
    async for event in client:
        if event["type"] == "OFFERS":
            offer = event["offers"]["offers"][0]
            tasks = [
                {
                    "name": tid,
                    "task_id": {"value": tid},
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
                    "command": {"value": command},
                }
                for tid in task_ids
            ]
            await client.launch(offer, tasks)
            return


async def updates_until(
    client: SchedulerClient, done: Any, ack: bool = True, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Collects UPDATE statuses (acknowledging them) until ``done(statuses)``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for event in client:
            if event["type"] != "UPDATE":
                continue
            status = event["update"]["status"]
            seen.append(status)
            if ack:
                await client.acknowledge_status(status)
            if done(seen):
                return seen
    return seen


def test_tasks_run_through_their_lifecycle(master: MasterProcess) -> None:
    async def scenario() -> None:
        async with sim_cluster(master.address, 3) as cluster:
            assert master.state()["activated_slaves"] == 3
            async with SchedulerClient(master.address, {"name": "sim-test"}) as client:
                await launch(client, ["a", "b"], "sleep 0.2")
                seen = await updates_until(
                    client, lambda s: sum(x["state"] == "TASK_FINISHED" for x in s) == 2
                )
                for tid in ("a", "b"):
                    states = [s["state"] for s in seen if s["task_id"]["value"] == tid]
                    assert states == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
                assert all(s.get("uuid") for s in seen)
                deadline = time.monotonic() + 5
                while any(a.tasks for a in cluster.agents) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert not any(a.tasks for a in cluster.agents), "acked tasks are forgotten"
                assert cluster.counters["tasks_finished"] == 2

    asyncio.run(scenario())


def test_kill_and_resend_of_unacknowledged_updates(master: MasterProcess) -> None:
    async def scenario() -> None:
        async with sim_cluster(master.address, 1, status_update_retry_interval_min=0.2) as cluster:
            async with SchedulerClient(master.address, {"name": "sim-kill"}) as client:
                await launch(client, ["k"], "serve forever")
                # STARTING is not acknowledged: the agent sends it again, same uuid.
                seen = await updates_until(client, lambda s: len(s) == 2, ack=False)
                assert [s["state"] for s in seen] == ["TASK_STARTING"] * 2
                assert seen[0]["uuid"] == seen[1]["uuid"]
                await client.acknowledge_status(seen[0])
                seen = await updates_until(client, lambda s: s[-1]["state"] == "TASK_RUNNING")
                await client.kill("k")
                seen = await updates_until(client, lambda s: s[-1]["state"] == "TASK_KILLED")
                assert cluster.counters["updates_retried"] >= 1

    asyncio.run(scenario())


def test_agents_reregister_with_their_tasks_after_a_master_restart(
    master: MasterProcess,
) -> None:
    async def scenario() -> None:
        async with sim_cluster(
            master.address,
            2,
            registration_backoff_factor=0.2,
            task_duration=TaskDuration.parse("forever"),
        ) as cluster:
            async with SchedulerClient(
                master.address,
                {"name": "sim-restart", "checkpoint": True, "failover_timeout": 3600.0},
            ) as client:
                await launch(client, ["r"], "serve")
                await updates_until(client, lambda s: s[-1]["state"] == "TASK_RUNNING")
            ids = sorted(a.agent_id or "" for a in cluster.agents)
            killed = time.monotonic()
            master.kill()
            master.start()
            await cluster.wait_registered(timeout=15, since=killed)
            state = master.state()
            assert sorted(s["id"] for s in state["slaves"]) == ids
            tasks = [t for f in state["frameworks"] for t in f["tasks"]]
            assert [(t["id"], t["state"]) for t in tasks] == [("r", "TASK_RUNNING")]
            assert cluster.counters["reregistrations"] == 2

    asyncio.run(scenario())
