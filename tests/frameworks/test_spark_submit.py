"""``butte spark-submit`` against a real two-agent butte cluster: real PySpark jobs on a
Spark standalone cluster launched as butte tasks.

JVMs start slowly on small machines, so most checks share one Spark run: a pi estimate and a
word count whose results are checked, then a job that survives an agent killed mid-job, then
a failing job (exit 1, everything cleaned up). Ctrl-C is checked during start-up.
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from butte.core import task_states as ts
from butte.testing.require import require, require_module

require_module("pyspark", "the spark extra: pip install butte[spark]")
require(None if shutil.which("java") else "no java on PATH", "Java 17 (scripts/test-deps)")

APPS = Path(__file__).parent / "spark_apps"
# One host, two agents: disjoint port ranges; each holds one 1-core worker, one also the
# master (0.5 cpus).
AGENTS = [
    "cpus:1.5;mem:3000;disk:1024;ports:[31000-31099]",
    "cpus:1.5;mem:3000;disk:1024;ports:[31100-31199]",
]
FAST_PINGS = ["--agent_ping_timeout=500ms", "--max_agent_ping_timeouts=2"]
SUBMIT_OPTIONS = [
    "--total-executor-cores", "2",
    "--executor-memory", "512m",
    "--driver-memory", "512m",
    # run the jobs once both executors are in, so both agents take part
    "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
    "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=300s",
    "--conf", "spark.ui.enabled=false",
]  # fmt: skip
pytestmark = pytest.mark.timeout(900)


def spark_submit(cluster, *app: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "butte", "spark-submit", "--master", cluster.master_address]
    with log.open("wb") as out:
        return subprocess.Popen([*argv, *SUBMIT_OPTIONS, *app], stdout=out, stderr=out)


def live_tasks(state: dict) -> list[dict]:
    return [t for f in state["frameworks"] for t in f["tasks"] if not ts.is_terminal(t["state"])]


def assert_cleaned_up(cluster) -> None:
    """No task left, the framework gone, no Spark process left on the agents."""
    cluster.wait_until(lambda s: not live_tasks(s) and not s["frameworks"], 60, "teardown")

    def spark_processes() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            if str(cluster.work_dir) in (proc.info["cwd"] or "") and "java" in " ".join(
                proc.info["cmdline"] or []
            ):
                found.append(proc)
        return found

    deadline = time.monotonic() + 30
    while spark_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert spark_processes() == []


@pytest.mark.cluster(agents=2, resources=AGENTS, master_flags=FAST_PINGS)
def test_jobs_on_two_agents_survive_a_killed_agent_then_a_failing_job_exits_1(cluster, tmp_path):
    words = tmp_path / "words.txt"
    vocabulary = ["spark", "butte", "mesos", "dask", "offer", "task", "agent"]
    lines = [" ".join(vocabulary[(i * 7 + j) % (i % 5 + 2)] for j in range(9)) for i in range(400)]
    words.write_text("\n".join(lines) + "\n")
    out, log = tmp_path / "out", tmp_path / "submit.log"
    markers = out / "markers"
    markers.mkdir(parents=True)
    proc = spark_submit(cluster, str(APPS / "jobs.py"), str(out), str(words), "400000", log=log)
    try:
        deadline = time.monotonic() + 600
        while not any(markers.iterdir()):
            assert proc.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "the slow job did not start"
            time.sleep(0.2)
        # the pi estimate and the word count, on executors on both agents
        result = json.loads((out / "results.json").read_text())
        assert abs(result["pi"] - 3.14159) < 0.05
        assert result["counts"] == collections.Counter(words.read_text().split())
        agents = {Path(p).parts[len(cluster.work_dir.parts)] for p in result["executors"]}
        assert agents == {"agent-0", "agent-1"}
        (framework,) = cluster.state()["frameworks"]
        assert framework["name"] == "spark: jobs.py"
        assert framework["webui_url"].startswith("http://127.0.0.1:")
        # mid-job, kill the agent that runs a worker but not the master, with its processes
        tasks = live_tasks(cluster.state())
        master_agent = next(t["slave_id"] for t in tasks if t["id"].startswith("spark-master"))
        victim_id = next(t["slave_id"] for t in tasks if t["slave_id"] != master_agent)
        victim = next(a for a in cluster.agents if agent_id_of(cluster, a) == victim_id)
        doomed = psutil.Process(victim.pid).children(recursive=True)
        victim.kill()
        for child in doomed:
            try:
                child.kill()
            except psutil.Error:
                pass
        status = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    # the slow job finished on the surviving worker; the failing job made the driver exit 1
    assert status == 1, text[-5000:]
    slow_tasks = 12  # jobs.SLOW_TASKS
    assert json.loads((out / "survived.json").read_text()) == {"sum": sum(range(slow_tasks))}
    assert "Pi is roughly" in text and "ZeroDivisionError" in text
    assert f"web UI {framework['webui_url']}" in text
    assert "replacing Spark worker" in text and "driver exited with status 1" in text
    (done,) = cluster.state()["completed_frameworks"]
    assert len(done["completed_tasks"]) == 3
    assert_cleaned_up(cluster)


def agent_id_of(cluster, handle) -> str | None:
    for agent in cluster.state()["slaves"]:
        if agent["pid"].endswith(f":{handle.port}"):
            return agent["id"]
    return None


@pytest.mark.cluster(agents=2, resources=AGENTS)
def test_ctrl_c_tears_the_spark_cluster_down(cluster, tmp_path):
    log = tmp_path / "submit.log"
    proc = spark_submit(cluster, str(APPS / "jobs.py"), "x", "y", "1", log=log)
    try:
        cluster.wait_until(
            lambda s: any(t["state"] == ts.RUNNING for t in live_tasks(s)), 120, "a Spark task"
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted; stopping the driver and the Spark cluster" in log.read_text()
    assert_cleaned_up(cluster)
