"""Agent faults with real processes: SIGKILL mid-launch and mid-run (checkpointing framework:
everything survives, same agent id), SIGKILL without checkpointing (tasks lost and cleaned
up), and a reboot-like loss of the checkpoint (new agent id, old tasks lost)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fault_kit import (
    AGENT_FLAGS,
    check_updates,
    command_task,
    pid_alive,
    wait_until,
)

from butte.agent.checkpoint import read_state
from butte.core import task_states as ts

pytestmark = pytest.mark.integration

LIFECYCLE = [ts.STARTING, ts.RUNNING, ts.FINISHED]


def checkpointed_tasks(agent_dir: Path) -> int:
    """Tasks in the agent's checkpoint, as recovery would read them."""
    state = read_state(str(agent_dir))
    return sum(len(run.tasks) for run in state.runs) if state is not None else 0


def task_pids(directory: Path, task_ids: list[str]) -> dict[str, int]:
    def read() -> dict[str, int] | None:
        try:
            return {t: int((directory / t).read_text()) for t in task_ids}
        except (OSError, ValueError):
            return None

    return wait_until(read, "task pid files")


def agent_ids(cluster) -> list[str]:
    return [a["id"] for a in cluster.state()["slaves"]]


def test_agent_sigkill_mid_launch(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    agent = cluster.agents[0]
    ids = [f"l{i}" for i in range(4)]
    tasks = [command_task(t, "sleep 0.5") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    # The moment the agent has checkpointed the tasks: executors are being forked.
    wait_until(lambda: checkpointed_tasks(agent.work_dir) == len(ids), "checkpointed tasks")
    agent.kill()
    running_at_kill = sum(ts.RUNNING in framework.states(t) for t in ids)
    first_id = agent_ids(cluster)
    agent.restart()
    framework.wait_states(ids, ts.FINISHED, timeout=20)
    assert agent_ids(cluster) == first_id, "the agent must keep its id"
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault(
        "agent SIGKILL mid-launch",
        check,
        f"{running_at_kill}/{len(ids)} tasks were RUNNING when the agent died",
    )
    check.assert_clean()


def test_agent_sigkill_mid_run(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    agent = cluster.agents[0]
    pids = tmp_path / "pids"
    pids.mkdir()
    ids = ["r0", "r1", "r2"]
    tasks = [command_task(t, f"echo $$ > {pids}/{t}; sleep 2.5") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    framework.wait_states(ids, ts.RUNNING)
    before = task_pids(pids, ids)
    first_id = agent_ids(cluster)
    agent.kill()
    assert all(pid_alive(pid) for pid in before.values()), "tasks must outlive the agent"
    agent.restart()
    framework.wait_states(ids, ts.FINISHED, timeout=20)
    assert task_pids(pids, ids) == before, "tasks must not be started again"
    assert agent_ids(cluster) == first_id, "the agent must keep its id"
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault("agent SIGKILL mid-run", check)
    check.assert_clean()


def test_agent_sigkill_without_checkpointing(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    agent = cluster.agents[0]
    pids = tmp_path / "pids"
    pids.mkdir()
    ids = ["n0", "n1"]
    tasks = [command_task(t, f"echo $$ > {pids}/{t}; sleep 30") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=False).start()
    framework.wait_states(ids, ts.RUNNING)
    before = task_pids(pids, ids)
    agent.kill()
    # Mesos: tasks of frameworks that do not checkpoint die with their agent.
    framework.wait_states(ids, ts.LOST)
    agent.restart()
    wait_until(lambda: not any(pid_alive(p) for p in before.values()), "tasks cleaned up")
    check = check_updates(
        framework.statuses(), {t: ([ts.STARTING, ts.RUNNING], ts.LOST) for t in ids}
    )
    record_fault("agent SIGKILL, no checkpointing (expect LOST)", check)
    check.assert_clean()


def test_agent_restart_after_reboot_like_loss(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    agent = cluster.agents[0]
    pids = tmp_path / "pids"
    pids.mkdir()
    ids = ["b0", "b1"]
    tasks = [command_task(t, f"echo $$ > {pids}/{t}; sleep 30") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    framework.wait_states(ids, ts.RUNNING)
    before = task_pids(pids, ids)
    first_id = agent_ids(cluster)
    agent.kill()
    # What a reboot leaves: no trace of which agent this was (Mesos: rm meta/slaves/latest).
    os.unlink(agent.work_dir / "meta" / "slaves" / "latest")
    agent.restart()
    framework.wait_states(ids, ts.LOST, timeout=20)
    wait_until(lambda: not any(pid_alive(p) for p in before.values()), "old tasks killed")
    new_id = wait_until(lambda: [i for i in agent_ids(cluster) if i not in first_id], "new id")
    assert agent_ids(cluster) == new_id, "the old agent must be gone"
    lost = [s for s in framework.statuses() if s["state"] == ts.LOST]
    assert all(s["reason"] == "REASON_AGENT_REMOVED" for s in lost), lost
    check = check_updates(
        framework.statuses(), {t: ([ts.STARTING, ts.RUNNING], ts.LOST) for t in ids}
    )
    record_fault("agent restart, checkpoint lost (expect LOST)", check)
    check.assert_clean()
    shutil.rmtree(pids)
