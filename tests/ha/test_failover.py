"""Master failover with a real ZooKeeper ensemble, 3 masters, 2 agents and an unmodified
pymesos framework running long tasks (checkpointing, long failover timeout).

Every scenario asserts that no task is lost (all still TASK_RUNNING in the new leader's
/state and in the answers to explicit reconciliation, and the framework never saw a
terminal or unreachable state), that the framework re-subscribed, and prints the time from
the leader's death to (a) a new leader serving, (b) every agent re-registered, (c) the
framework back with all its tasks (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import signal
import time

import pytest
from ha_kit import (
    HaCluster,
    LongTasks,
    measure_failover,
    reconcile_all,
    running_tasks,
    start_framework,
    wait_framework,
)

from butte.core import task_states as ts
from butte.testing.require import require_module

pytestmark = [pytest.mark.ha, pytest.mark.integration]
pymesos = require_module("pymesos")

TASKS = 4


@contextlib.contextmanager
def framework(cluster: HaCluster):
    scheduler, driver = start_framework(cluster.zk_url, TASKS)
    try:
        scheduler.wait(lambda: len(scheduler.running()) == TASKS, 40, "all tasks running")
        yield scheduler, driver
    finally:
        driver.stop(True)  # failover=True: no TEARDOWN (the cluster is torn down anyway)
        driver.join()


def assert_nothing_lost(cluster: HaCluster, scheduler: LongTasks, driver) -> None:
    state = cluster.wait_state(lambda s: s, 10, "leader state")
    assert scheduler.framework_id is not None
    assert running_tasks(state, scheduler.framework_id) == set(scheduler.states)
    answers = reconcile_all(scheduler, driver)
    assert answers == dict.fromkeys(scheduler.states, ts.RUNNING)
    assert scheduler.lost() == {}
    assert len(scheduler.running()) == TASKS


def report(name: str, times: list) -> None:
    for i, t in enumerate(times):
        print(
            f"FAILOVER {name} #{i + 1}: leader {t.leader:.2f}s, agents {t.agents:.2f}s, "
            f"framework {t.framework:.2f}s"
        )


@pytest.mark.timeout(150)
def test_leader_sigkill_three_times(ha_cluster_factory):
    cluster = ha_cluster_factory()
    with framework(cluster) as (scheduler, driver):
        times = []
        for _ in range(3):
            leader = cluster.masters.wait_leader(30)
            times.append(measure_failover(cluster, scheduler, cluster.masters.kill))
            assert_nothing_lost(cluster, scheduler, driver)
            cluster.masters.restart(leader)  # back as a standby for the next round
        report("sigkill", times)
        assert all(t.leader < 10 for t in times)


@pytest.mark.timeout(120)
def test_paused_leader_never_leads_again(ha_cluster_factory):
    cluster = ha_cluster_factory()
    with framework(cluster) as (scheduler, driver):
        old = cluster.masters.wait_leader(30)
        times = measure_failover(cluster, scheduler, cluster.masters.pause)
        # Past the session timeout (2 s) already; resume it and watch it not lead again.
        cluster.masters.resume(old)
        process = cluster.masters.masters[old]
        deadline = time.monotonic() + 10
        while process.running() and time.monotonic() < deadline:
            answer = cluster.masters.state(old, timeout=0.5)
            assert answer is None or answer.get("leader") != answer.get("pid")
            time.sleep(0.05)
        assert not process.running(), "the resumed ex-leader kept running"
        assert process.process is not None and process.process.returncode != 0
        assert "stops acting as leader" in process.log_tail(50)
        assert_nothing_lost(cluster, scheduler, driver)
        report("sigstop", [times])


@pytest.mark.timeout(120)
def test_losing_one_zookeeper_server(ha_cluster_factory):
    cluster = ha_cluster_factory()
    with framework(cluster) as (scheduler, driver):
        before = cluster.masters.restarts
        registrations = scheduler.registrations
        zk_leader = cluster.zk.leader_index()
        assert zk_leader is not None
        cluster.zk.kill(zk_leader)
        # The two remaining servers elect a leader; masters connected to the dead server
        # reconnect (a leading master that saw SUSPENDED exits and is restarted).
        cluster.zk.wait_serving(60, servers=[i for i in range(3) if i != zk_leader])
        time.sleep(3)  # past the session timeout: every consequence has happened
        cluster.masters.wait_leader(30)
        cluster.wait_agents(30)
        if cluster.masters.restarts > before:  # the leader changed: the framework follows
            wait_framework(cluster, scheduler, registrations, 30)
        assert_nothing_lost(cluster, scheduler, driver)
        print(f"ZOOKEEPER server killed: masters restarted {cluster.masters.restarts - before}")


@pytest.mark.timeout(120)
def test_restarting_all_masters_at_once(ha_cluster_factory):
    cluster = ha_cluster_factory()
    with framework(cluster) as (scheduler, driver):

        def restart_all(leader: int) -> None:
            for i in range(len(cluster.masters.masters)):
                cluster.masters.kill(i)
            for i in range(len(cluster.masters.masters)):
                cluster.masters.restart(i)

        times = measure_failover(cluster, scheduler, restart_all, same_may_lead=True)
        assert_nothing_lost(cluster, scheduler, driver)
        report("restart-all", [times])


@pytest.mark.timeout(60)
def test_sigterm_resigns_at_once(ha_cluster_factory):
    """A master stopped on purpose deletes its node: the next one leads within a second."""
    cluster = ha_cluster_factory(agents=1)
    leader = cluster.masters.wait_leader(30)
    started = time.monotonic()
    cluster.masters.masters[leader].expected_down = True
    cluster.masters.masters[leader].signal(signal.SIGTERM)
    cluster.masters.wait_leader(10, exclude=leader)
    assert time.monotonic() - started < 1.5
    cluster.wait_agents(10)
