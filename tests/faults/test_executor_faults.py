"""Executor faults with real processes: a SIGKILLed executor (its task fails; a custom
executor's death is also a FAILURE event), and an unmodified pymesos executor that rides out
an agent restart (checkpointing: it re-subscribes and its task finishes)."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from fault_kit import AGENT_FLAGS, check_updates, command_task, resources, wait_until

from butte.core import task_states as ts
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

PYMESOS_EXECUTOR = """
import os, sys, threading, time
import pymesos

HOLD = sys.argv[1]


class Worker(pymesos.Executor):
    def launchTask(self, driver, task):
        def run():
            driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING"})
            while os.path.exists(HOLD):
                time.sleep(0.05)
            driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_FINISHED"})

        threading.Thread(target=run, daemon=True).start()


pymesos.MesosExecutorDriver(Worker(), use_addict=False).run()
"""


def custom_task(tmp_path: Path, task_id: str, hold: Path) -> dict:
    script = tmp_path / "worker_executor.py"
    script.write_text(PYMESOS_EXECUTOR)
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "resources": resources(),
        "executor": {
            "executor_id": {"value": f"ex-{task_id}"},
            "command": {"value": f"{sys.executable} {script} {hold}"},
            "resources": resources(0.1, 32),
        },
    }


def executor_pid(framework, task_id: str) -> int:
    running = [s for s in framework.statuses(task_id) if s["state"] == ts.RUNNING]
    return int(running[0]["container_status"]["executor_pid"])


def test_command_executor_sigkill(cluster_factory, scheduler, record_fault, fault_run):
    # An executor process per task (plain tasks otherwise run under the command launcher).
    cluster = cluster_factory(agent_flags=[*AGENT_FLAGS, "--command_launcher=false"])
    framework = scheduler(cluster.master_address, tasks=[command_task("c0", "sleep 30")]).start()
    framework.wait_states(["c0"], ts.RUNNING)
    os.kill(executor_pid(framework, "c0"), signal.SIGKILL)
    framework.wait_states(["c0"], ts.FAILED)
    failed = framework.statuses("c0")[-1]
    assert failed["source"] == "SOURCE_AGENT" and failed["reason"] == "REASON_EXECUTOR_TERMINATED"
    assert "signal" in failed["message"], failed
    check = check_updates(
        framework.statuses(), {"c0": ([ts.STARTING, ts.RUNNING, ts.FAILED], ts.FAILED)}
    )
    record_fault("command executor SIGKILL (expect FAILED)", check)
    check.assert_clean()


def test_launcher_task_sigkill(cluster_factory, scheduler, record_fault, fault_run):
    # Under the command launcher the container's pid is the task's: killing it is the task's
    # end, reported by its (in-agent) command executor as the command executor reports it.
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    framework = scheduler(cluster.master_address, tasks=[command_task("l0", "sleep 30")]).start()
    framework.wait_states(["l0"], ts.RUNNING)
    os.kill(executor_pid(framework, "l0"), signal.SIGKILL)
    framework.wait_states(["l0"], ts.FAILED)
    failed = framework.statuses("l0")[-1]
    assert failed["source"] == "SOURCE_EXECUTOR", failed
    assert failed["message"] == "Command terminated with signal Killed", failed
    check = check_updates(
        framework.statuses(), {"l0": ([ts.STARTING, ts.RUNNING, ts.FAILED], ts.FAILED)}
    )
    record_fault("command launcher task SIGKILL (expect FAILED)", check)
    check.assert_clean()


def test_custom_executor_sigkill(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    require_module("pymesos")
    hold = tmp_path / "hold"
    hold.touch()
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    task = custom_task(tmp_path, "p0", hold)
    framework = scheduler(cluster.master_address, tasks=[task]).start()
    framework.wait_states(["p0"], ts.RUNNING, timeout=20)
    os.kill(executor_pid(framework, "p0"), signal.SIGKILL)
    framework.wait_states(["p0"], ts.FAILED)
    (failure,) = wait_until(lambda: framework.events("FAILURE"), "FAILURE event")
    assert failure["failure"]["executor_id"] == {"value": "ex-p0"}
    assert os.WIFSIGNALED(failure["failure"]["status"])
    check = check_updates(framework.statuses(), {"p0": ([ts.RUNNING, ts.FAILED], ts.FAILED)})
    record_fault("custom executor SIGKILL (expect FAILED + FAILURE)", check)
    check.assert_clean()


def test_pymesos_executor_survives_agent_restart(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    require_module("pymesos")
    hold = tmp_path / "hold"
    hold.touch()
    # pymesos retries every 2 s, doubling: give it Mesos' longest re-registration window.
    flags = (*AGENT_FLAGS, "--executor_reregistration_timeout=15secs")
    cluster = cluster_factory(agent_flags=flags)
    task = custom_task(tmp_path, "q0", hold)
    framework = scheduler(cluster.master_address, tasks=[task], checkpoint=True).start()
    framework.wait_states(["q0"], ts.RUNNING, timeout=20)
    pid = executor_pid(framework, "q0")
    cluster.agents[0].kill()
    cluster.agents[0].restart()
    wait_until(
        lambda: (
            b"re-subscribed" in cluster.agents[0].log_path.read_bytes()
            or executor_reregistered(cluster)
        ),
        "pymesos executor re-subscribed",
        timeout=20,
    )
    hold.unlink()  # now the task may finish, through the restarted agent
    framework.wait_states(["q0"], ts.FINISHED, timeout=20)
    assert executor_pid(framework, "q0") == pid
    check = check_updates(framework.statuses(), {"q0": ([ts.RUNNING, ts.FINISHED], ts.FINISHED)})
    record_fault("agent SIGKILL mid-run, pymesos executor", check)
    check.assert_clean()


def executor_reregistered(cluster) -> bool:
    """The restarted agent has the executor subscribed again (its metrics say so)."""
    url = f"http://127.0.0.1:{cluster.agents[0].port}/metrics/snapshot"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            metrics = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return metrics.get("slave/executors_reregistered", 0) >= 1
