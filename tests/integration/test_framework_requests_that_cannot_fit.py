"""``butte mpi`` and ``butte spark-submit`` asking for more than a real one-agent cluster has:
told within seconds (what was asked, the largest agent and offer) with exit status 2 and
nothing left running; asking for what a busy cluster could hold, they say what they wait for
and keep waiting. Neither needs MPI or a JVM: no job gets as far as starting them (Spark is
the test double of tests/frameworks/fake_spark)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from operator_kit import wait_task

from butte.core import task_states as ts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.cluster(agents=1, resources="cpus:2;mem:2048;disk:1000;ports:[22900-22949]"),
]

FAKE_SPARK = Path(__file__).parent.parent / "frameworks" / "fake_spark"


def butte(cluster, *args: str, timeout: float = 40) -> tuple[subprocess.CompletedProcess, float]:
    argv = [sys.executable, "-m", "butte", *args]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def mpi(cluster, *args: str, timeout: float = 40) -> tuple[subprocess.CompletedProcess, float]:
    return butte(cluster, "mpi", "--master", cluster.master_address, *args, "--", "/bin/true",
                 timeout=timeout)  # fmt: skip


def nothing_left(cluster) -> None:
    cluster.wait_until(lambda s: not s["frameworks"], 20, "every framework gone")
    for framework in cluster.state()["completed_frameworks"]:
        assert all(ts.is_terminal(t["state"]) for t in framework["completed_tasks"])


def test_mpi_ranks_bigger_than_any_agent_or_more_than_all_hold(cluster):
    done, took = mpi(cluster, "-np", "2", "--cpus", "4")
    assert done.returncode == 2, done.stderr
    assert took < 20, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "cannot run on this cluster: a rank needs cpus:4;mem:128" in last, last
    assert "the largest: cpus:2;" in last and "largest offer so far 2 cpus" in last, last

    done, took = mpi(cluster, "-np", "3", "--cpus", "1")
    assert done.returncode == 2 and took < 20, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "3 ranks of cpus:1;mem:128 need 3 slots" in last and "hold only 2" in last, last
    nothing_left(cluster)


def test_spark_executor_bigger_than_any_agent(cluster, tmp_path):
    home = tmp_path / "spark"
    shutil.copytree(FAKE_SPARK, home)
    done, took = butte(cluster, "spark-submit", "--master", cluster.master_address,
                       "--spark_home", str(home), "--total-executor-cores", "2",
                       "--executor-memory", "4g", "app.py", "exit:0")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert took < 20, done.stderr
    assert "fake driver" not in done.stdout  # the driver never started
    error = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(error) == 1, done.stderr
    assert "a Spark worker with one executor" in error[0] and "4096 MiB" in error[0], error
    assert "the largest: 2 cpus, 2048 MiB mem, " in error[0], error
    assert "largest offer so far" in error[0], error
    nothing_left(cluster)


def test_mpi_on_a_busy_cluster_says_what_it_waits_for_and_keeps_waiting(cluster, tmp_path):
    log = open(tmp_path / "busy.log", "wb")
    argv = [sys.executable, "-m", "butte", "run", "--master", cluster.master_address,
            "--name", "busy", "--resources", "cpus:2;mem:64", "--command", "sleep 60"]  # fmt: skip
    busy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_task(cluster.master_url, "busy", "TASK_RUNNING")
        # The agent could hold the rank once the other task ends: no error, a waiting note.
        done, _ = mpi(cluster, "-np", "1", "--cpus", "1", "--timeout", "14")
    finally:
        busy.terminate()
        busy.wait(10)
        log.close()
    assert done.returncode == 124, done.stderr
    waiting = [line for line in done.stderr.splitlines() if "waiting for 1 rank slot" in line]
    assert waiting, done.stderr
    assert "could hold it once" in waiting[0], waiting
    assert "cannot run on this cluster" not in done.stderr
