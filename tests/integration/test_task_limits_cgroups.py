"""TaskInfo.limits with real processes in real cgroups: a real agent (``--isolation
cgroups/cpu,cgroups/mem``) against the fake master of `test_agent_process`. A task that asks
for little memory but may burst to a limit uses more than its request and finishes; one
that goes over its limit fails with the memory limitation; the cgroup files, the task's OOM
score and the agent's statistics say what Mesos' would (docs/isolation.md "Burstable
tasks"). Needs root and the cgroup v1 memory, cpu, cpuacct, pids and freezer controllers."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest
from test_agent_process import (
    AID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    agent_port,
    run_scenario,
    wait_for,
)
from test_agent_process import sandbox as sandbox_of
from test_isolation import cgroups_root, container_of, flags, group, terminal  # noqa: F401

from butte.core.task_limits import oom_score_adj
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def burstable(task_id: str, command: str, mem: float, limits: dict) -> dict:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "command": {"value": command},
        "limits": limits,
    }


@pytest.mark.parametrize("launcher", ["true", "false"])
def test_a_burstable_task_uses_more_than_its_request_up_to_its_limit(
    tmp_path,
    cgroups_root,  # noqa: F811
    launcher: str,
):
    """With the command launcher (the task is its container's first process) and without it
    (a command executor process is, and the task its child)."""

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        go = tmp_path / "go"
        # 200 MB held by tail, against a request of 32 MB (64 with the executor's): without
        # the limit of 512 MB the kernel would kill it.
        burst = (
            "cat /proc/self/oom_score_adj > adj; "
            f"while [ ! -e {go} ]; do sleep 0.05; done; "
            "head -c 200000000 /dev/zero | tail > /dev/null"
        )
        limits = {"mem": {"value": 512}, "cpus": {"value": "Infinity"}}
        task = burstable("burst", burst, 32, limits)
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("burst") and container_of(master, "burst"),
            "running",
        )
        memory = group(cgroups_root, "memory", container)
        assert int((memory / "memory.limit_in_bytes").read_text()) == 544 * MB
        assert int((memory / "memory.soft_limit_in_bytes").read_text()) == 64 * MB
        cpu = group(cgroups_root, "cpu", container)
        # An infinite cpu limit: no quota, even with --cgroups_enable_cfs.
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == -1
        assert int((cpu / "cpu.shares").read_text()) == int(0.2 * 1024)
        adj = sandbox_of(tmp_path, "burst") / "adj"
        await wait_for(lambda: adj.exists() and adj.read_text().strip(), "the task's OOM score")
        assert int(adj.read_text()) == oom_score_adj(64 * MB)
        port = agent_port(master)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/monitor/statistics") as response:
                monitor = await response.json()
            async with http.get(f"http://127.0.0.1:{port}/state") as response:
                state = await response.json()
        (stats,) = [e["statistics"] for e in monitor if e["executor_id"] == "burst"]
        assert stats["mem_limit_bytes"] == 544 * MB
        assert stats["mem_soft_limit_bytes"] == 64 * MB
        assert stats["cpus_soft_limit"] == pytest.approx(0.2)
        (executor,) = state["frameworks"][0]["executors"]
        assert executor["tasks"][0]["limits"] == {"cpus": "Infinity", "mem": 512.0}
        go.touch()
        status = await wait_for(lambda: terminal(master, "burst"), "the burst's end", 30)
        assert status["state"] == "TASK_FINISHED", status

        # Over its limit it fails as a task over its request would without one.
        hog = burstable(
            "hog", "head -c 600000000 /dev/zero | tail > /dev/null", 32, {"mem": {"value": 100}}
        )
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": hog})
        status = await wait_for(lambda: terminal(master, "hog"), "the hog's end", 30)
        assert status["state"] == "TASK_FAILED", status
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
        assert "Memory limit exceeded: Requested: 132MB" in status["message"]

    agent_flags = flags(
        cgroups_root,
        "cgroups/cpu,cgroups/mem",
        "--cgroups_enable_cfs",
        f"--command_launcher={launcher}",
    )
    run_scenario(tmp_path, scenario, agent_flags=agent_flags)


def test_a_cpu_limit_throttles_the_task_to_it(tmp_path, cgroups_root):  # noqa: F811
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        # A busy loop asking for 0.1 cpus may use 0.3 (0.4 with the executor's 0.1).
        task = burstable("spin", "while :; do :; done", 32, {"cpus": {"value": 0.3}})
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("spin") and container_of(master, "spin"),
            "running",
        )
        cpu = group(cgroups_root, "cpu", container)
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 40_000
        stat = cpu / "cpu.stat"
        await wait_for(lambda: _throttled(stat) > 0, "the task throttled", 15)
        port = agent_port(master)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/monitor/statistics") as response:
                monitor = await response.json()
        (stats,) = [e["statistics"] for e in monitor if e["executor_id"] == "spin"]
        assert stats["cpus_limit"] == pytest.approx(0.4)
        assert stats["cpus_nr_throttled"] > 0  # reported without --cgroups_enable_cfs

    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, "cgroups/cpu,cgroups/mem"))


def _throttled(stat: Path) -> int:
    fields = dict(line.split() for line in stat.read_text().splitlines())
    return int(fields.get("nr_throttled", 0))


RUNNING_EXECUTOR = """
import pymesos


class Runs(pymesos.Executor):
    def launchTask(self, driver, task):
        driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING"})

    def killTask(self, driver, task_id):
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})


pymesos.MesosExecutorDriver(Runs(), use_addict=False).run()
"""


def test_a_task_joining_a_running_executor_grows_its_container(tmp_path, cgroups_root):  # noqa: F811
    """A custom executor's second task, with a memory limit, raises its container's limits
    to the sum Mesos computes (its tasks' limits plus the requests of those without one)."""
    require_module("pymesos")
    script = tmp_path / "runs_executor.py"
    script.write_text(RUNNING_EXECUTOR)
    executor = {"executor_id": {"value": "ex"}, "command": {"value": f"{sys.executable} {script}"}}

    def task(task_id: str, mem: float, limits: dict | None) -> dict:
        body = burstable(task_id, "unused", mem, limits or {})
        del body["command"]
        return {**body, "executor": executor}

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        first = task("first", 64, None)
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": first})
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("first") and container_of(master, "first"),
            "the first task running",
        )
        memory = group(cgroups_root, "memory", container)
        assert int((memory / "memory.limit_in_bytes").read_text()) == 64 * MB
        second = task("second", 128, {"mem": {"value": 512}})
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": second})
        await wait_for(lambda: "TASK_RUNNING" in master.states("second"), "the second task")
        assert int((memory / "memory.limit_in_bytes").read_text()) == (512 + 64) * MB
        assert int((memory / "memory.soft_limit_in_bytes").read_text()) == (64 + 128) * MB
        cpu = group(cgroups_root, "cpu", container)
        shares = int((cpu / "cpu.shares").read_text())
        # The second task's end shrinks the container back (as Mesos' agent does on every
        # terminal update), except its hard memory limit, which is never lowered.
        kill = {"framework_id": FRAMEWORK["id"], "task_id": {"value": "second"}}
        await master.send({"type": "KILL_TASK", **kill})
        await wait_for(lambda: "TASK_KILLED" in master.states("second"), "the second killed")
        assert int((memory / "memory.soft_limit_in_bytes").read_text()) == 64 * MB
        assert int((memory / "memory.limit_in_bytes").read_text()) == (512 + 64) * MB
        assert int((cpu / "cpu.shares").read_text()) < shares

    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, "cgroups/cpu,cgroups/mem"))
