"""``butte chronos`` across an agent partition, with real processes: the agent running a
job's task is stopped (SIGSTOP) longer than the master's ping timeouts, so the master marks
it unreachable and tells chronos (not partition-aware, as Chronos) ``TASK_LOST``; the task
finishes while the agent is stopped; then the agent goes on (SIGCONT), re-registers and
reports ``TASK_FINISHED``. As Chronos, the loss counts as a failure at once and is retried
per ``retries``; unlike Chronos, the success reported afterwards is neither lost nor counted
twice: it replaces the loss's failure, its retry is dropped (or killed, if it was running),
and the job's children run once."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_kit import AGENT_FLAGS

from butte.testing.chronos import ChronosProcess
from butte.testing.waiting import wait_for

pytestmark = pytest.mark.integration

FAST_PINGS = ("--agent_ping_timeout=500ms", "--max_agent_ping_timeouts=2")
ACTIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


@pytest.fixture
def chronos_on(tmp_path: Path) -> Iterator[Callable[[str], ChronosProcess]]:
    started: list[ChronosProcess] = []

    def start(master: str) -> ChronosProcess:
        proc = ChronosProcess(tmp_path / "chronos", master)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def post(chronos: ChronosProcess, kind: str, body: dict) -> None:
    status, answer = chronos.request("POST", f"/v1/scheduler/{kind}", json.dumps(body).encode())
    assert status == 204, answer


def job(chronos: ChronosProcess, name: str) -> dict:
    return chronos.get(f"/v1/scheduler/job/{name}")


def tasks_of(cluster: Any, name: str) -> list[dict]:
    """The master's tasks (active and completed) of chronos job ``name``."""
    out = []
    for fw in cluster.state()["frameworks"]:
        for t in fw["tasks"] + fw.get("completed_tasks", []):
            if t["id"].split(":")[3] == name:
                out.append(t)
    return out


def agent_running(cluster: Any, name: str) -> Any:
    """The agent process whose agent runs a task of job ``name`` (None until one runs)."""
    running = [t for t in tasks_of(cluster, name) if t["state"] == "TASK_RUNNING"]
    if not running:
        return None
    slave = next(s for s in cluster.state()["slaves"] if s["id"] == running[0]["slave_id"])
    return next(a for a in cluster.agents if a.port == slave["port"])


def setup_jobs(chronos: ChronosProcess, tmp_path: Path, retries: int) -> None:
    """Job "nightly" (its first attempt runs 6 s, a retry a minute) and its child "report"."""
    command = (
        f'echo "$CHRONOS_JOB_RUN_ATTEMPT" >> {tmp_path}/attempts; '
        f'if [ "$CHRONOS_JOB_RUN_ATTEMPT" = 0 ]; then sleep 6; touch {tmp_path}/done; '
        "else sleep 60; fi"
    )
    nightly = {"name": "nightly", "command": command, "owner": "ops@example.com"}
    nightly |= {"schedule": "R1//PT1H", "retries": retries, "cpus": 0.1, "mem": 32}
    post(chronos, "iso8601", nightly)
    child = {"name": "report", "command": f"touch {tmp_path}/report.$CHRONOS_JOB_RUN_TIME"}
    child["owner"] = "ops@example.com"
    post(chronos, "dependency", {**child, "parents": ["nightly"], "cpus": 0.1, "mem": 32})


def cut_until_finished(cluster: Any, chronos: ChronosProcess, tmp_path: Path, lost: Any) -> None:
    """Stops the agent running nightly's first attempt until chronos heard it lost
    (``lost()``) and the task finished behind the partition, then lets the agent go on."""
    agent = wait_for(lambda: agent_running(cluster, "nightly"), "nightly running")
    agent.signal(signal.SIGSTOP)
    try:
        wait_for(lost, "chronos told the task is lost", timeout=20)
        wait_for(lambda: (tmp_path / "done").exists(), "the task finished meanwhile")
    finally:
        agent.signal(signal.SIGCONT)


def test_a_success_behind_a_partition_replaces_the_failure_its_loss_counted(
    cluster_factory, chronos_on, tmp_path
) -> None:
    cluster = cluster_factory(master_flags=FAST_PINGS, agent_flags=AGENT_FLAGS)
    chronos = chronos_on(cluster.master_address)
    setup_jobs(chronos, tmp_path, retries=0)
    cut_until_finished(
        cluster, chronos, tmp_path, lambda: job(chronos, "nightly")["errorCount"] == 1
    )
    # Back: the agent reports the task finished; that success counts, the loss's failure not.
    wait_for(lambda: job(chronos, "nightly")["successCount"] == 1, "the success counted")
    nightly = job(chronos, "nightly")
    assert nightly["errorCount"] == 0 and nightly["lastError"] == ""
    wait_for(lambda: job(chronos, "report")["successCount"] == 1, "the child ran")
    graph = chronos.request("GET", "/v1/scheduler/graph/csv")[1]
    assert "node,nightly,success,idle" in graph
    stat = chronos.get("/v1/scheduler/job/stat/nightly")["taskStatHistory"]
    assert [s["state"] for s in stat] == ["TASK_FINISHED", "TASK_LOST"]
    assert stat[0]["taskId"] == stat[1]["taskId"]
    time.sleep(2)  # nothing else runs: no retry, one child run
    assert (tmp_path / "attempts").read_text().split() == ["0"]
    assert len(list(tmp_path.glob("report.*"))) == 1
    counters = chronos.get("/metrics")["counters"]
    assert counters["lost_runs_succeeded"]["count"] == 1


def test_a_success_behind_a_partition_supersedes_the_retry_running_elsewhere(
    cluster_factory, chronos_on, tmp_path
) -> None:
    cluster = cluster_factory(agents=2, master_flags=FAST_PINGS, agent_flags=AGENT_FLAGS)
    chronos = chronos_on(cluster.master_address)
    setup_jobs(chronos, tmp_path, retries=2)

    def retry_running() -> bool:
        return any(
            t["state"] == "TASK_RUNNING" and t["id"].split(":")[2] == "1"
            for t in tasks_of(cluster, "nightly")
        )

    # The loss is retried at once (--failure_retry 200 ms), on the other agent: while the
    # partition lasts, two copies of the run go on, as with Chronos (the lost one may be
    # running or not; nobody can tell).
    cut_until_finished(cluster, chronos, tmp_path, retry_running)
    wait_for(lambda: job(chronos, "nightly")["successCount"] == 1, "the success counted")

    def settled() -> bool:
        return not [t for t in tasks_of(cluster, "nightly") if t["state"] in ACTIVE]

    wait_for(settled, "the superseded retry killed", timeout=20)
    states = {t["id"].split(":")[2]: t["state"] for t in tasks_of(cluster, "nightly")}
    assert states == {"0": "TASK_FINISHED", "1": "TASK_KILLED"}
    wait_for(lambda: job(chronos, "report")["successCount"] == 1, "the child ran")
    time.sleep(2)
    nightly = job(chronos, "nightly")
    assert (nightly["successCount"], nightly["errorCount"]) == (1, 0)
    assert len(list(tmp_path.glob("report.*"))) == 1
    assert (tmp_path / "attempts").read_text().split() == ["0", "1"]
