"""Master and network faults with real processes: the standalone master is restarted (its
memory is gone; agents and frameworks register again and nothing running is lost), and the
agent is cut off (SIGSTOP) longer than the master's ping timeouts, then comes back."""

from __future__ import annotations

import signal

import pytest
from fault_kit import AGENT_FLAGS, check_updates, command_task, pid_alive, wait_until

from butte.core import task_states as ts

pytestmark = pytest.mark.integration

LIFECYCLE = [ts.STARTING, ts.RUNNING, ts.FINISHED]
FAST_PINGS = ("--agent_ping_timeout=500ms", "--max_agent_ping_timeouts=2")


def test_master_restart(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    ids = ["m0", "m1", "m2"]
    tasks = [command_task(t, "sleep 2") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, reconcile=True).start()
    framework.wait_states(ids, ts.RUNNING)
    agent_ids = [a["id"] for a in cluster.state()["slaves"]]
    cluster.master.kill()
    cluster.master.restart()
    framework.wait_states(ids, ts.FINISHED, timeout=25)
    state = cluster.state()
    assert [a["id"] for a in state["slaves"]] == agent_ids
    assert len(framework.events("SUBSCRIBED")) >= 2
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault("master restart (state lost)", check)
    check.assert_clean()


def read_pid(path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def partition(cluster, framework, ids: list[str], cut_state: str) -> None:
    """SIGSTOPs the agent until every task was reported ``cut_state``, then SIGCONTs it."""
    agent = cluster.agents[0]
    agent.signal(signal.SIGSTOP)
    try:
        framework.wait_states(ids, cut_state, timeout=15)
    finally:
        agent.signal(signal.SIGCONT)


def test_partition_partition_aware(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    cluster = cluster_factory(master_flags=FAST_PINGS, agent_flags=AGENT_FLAGS)
    ids = ["u0", "u1"]
    tasks = [command_task(t, f"echo $$ > {tmp_path}/{t}; sleep 5") for t in ids]
    framework = scheduler(
        cluster.master_address,
        tasks=tasks,
        checkpoint=True,
        partition_aware=True,
        reconcile_every=0.3,
    ).start()
    framework.wait_states(ids, ts.RUNNING)
    pids = {t: int(wait_until(lambda t=t: read_pid(tmp_path / t), "task pid")) for t in ids}
    partition(cluster, framework, ids, ts.UNREACHABLE)
    unreachable = [s for s in framework.statuses() if s["state"] == ts.UNREACHABLE]
    assert all(s["reason"] == "REASON_AGENT_REMOVED" for s in unreachable)
    assert all("unreachable_time" in s for s in unreachable)
    # Back: the tasks never stopped, and reconciliation reports them running again.
    wait_until(
        lambda: all(framework.states(t)[-1] in (ts.RUNNING, ts.FINISHED) for t in ids),
        "tasks reported RUNNING again",
    )
    for t in ids:
        assert pid_alive(pids[t]) or ts.FINISHED in framework.states(t), f"{t} was stopped"
    framework.wait_states(ids, ts.FINISHED, timeout=20)
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault("agent partitioned > ping timeout (partition-aware)", check)
    check.assert_clean()


def test_partition_not_partition_aware(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    cluster = cluster_factory(master_flags=FAST_PINGS, agent_flags=AGENT_FLAGS)
    ids = ["v0"]
    tasks = [command_task(t, f"echo $$ > {tmp_path}/{t}; sleep 30") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    framework.wait_states(ids, ts.RUNNING)
    pid = int(wait_until(lambda: read_pid(tmp_path / "v0"), "task pid"))
    partition(cluster, framework, ids, ts.LOST)
    # Mesos: when the agent comes back, tasks of frameworks that are not partition-aware
    # are killed (the framework was told TASK_LOST; the kill's update follows).
    framework.wait_states(ids, ts.KILLED, timeout=20)
    wait_until(lambda: not pid_alive(pid), "task process killed")
    check = check_updates(
        framework.statuses(), {t: ([ts.STARTING, ts.RUNNING, ts.KILLED], ts.KILLED) for t in ids}
    )
    record_fault("agent partitioned > ping timeout (not partition-aware)", check)
    check.assert_clean()
