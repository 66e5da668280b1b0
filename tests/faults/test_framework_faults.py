"""Framework faults with real processes: the scheduler is SIGKILLed and a new process fails
over with the same framework id (it gets the updates it missed), and a scheduler that stops
acknowledging (updates are retried, one in flight per task, and drain once it acks again)."""

from __future__ import annotations

import pytest
from fault_kit import AGENT_FLAGS, check_updates, command_task, wait_until

from butte.core import task_states as ts

pytestmark = pytest.mark.integration

LIFECYCLE = [ts.STARTING, ts.RUNNING, ts.FINISHED]


def test_scheduler_killed_and_failed_over_from_a_new_process(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    ids = ["f0", "f1", "f2"]
    tasks = [command_task(t, "sleep 1") for t in ids]
    first = scheduler(cluster.master_address, tasks=tasks, failover_timeout=60).start()
    first.wait_states(ids, ts.RUNNING)
    framework_id = first.framework_id()
    first.kill()
    # The tasks finish while no scheduler is connected: their updates wait on the agent.
    wait_until(
        lambda: (
            all(
                t["state"] == ts.FINISHED
                for f in cluster.state()["frameworks"]
                for t in f.get("tasks", []) + f.get("completed_tasks", [])
            )
            and cluster.state()["frameworks"]
        ),
        "tasks finished while the scheduler was away",
    )
    assert not any(ts.FINISHED in first.states(t) for t in ids)
    second = first.start(framework_id=framework_id)
    second.wait_states(ids, ts.FINISHED, timeout=20)
    subscribed = second.events("SUBSCRIBED")
    assert all(s["subscribed"]["framework_id"]["value"] == framework_id for s in subscribed)
    check = check_updates(second.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault("scheduler SIGKILL, failover from a new process", check)
    check.assert_clean()


def test_scheduler_stops_acknowledging(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run
):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    hold = tmp_path / "no-acks"
    hold.touch()
    ids = ["a0", "a1"]
    tasks = [command_task(t, "sleep 0.3") for t in ids]
    framework = scheduler(cluster.master_address, tasks=tasks, ack_hold=str(hold)).start()

    def resent(task_id: str) -> bool:
        return len(framework.statuses(task_id)) >= 3

    wait_until(lambda: all(resent(t) for t in ids), "unacknowledged updates resent")
    for t in ids:
        # Only the oldest unacknowledged update is in flight: the same one, again and again.
        assert {s["uuid"] for s in framework.statuses(t)} == {framework.statuses(t)[0]["uuid"]}
        assert set(framework.states(t)) == {ts.STARTING}
    hold.unlink()
    framework.wait_states(ids, ts.FINISHED, timeout=20)
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    assert check.duplicates >= 2 * len(ids)
    record_fault("scheduler stops acknowledging, then acks", check)
    check.assert_clean()
