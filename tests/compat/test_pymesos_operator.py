"""The unmodified PyPI pymesos operator drivers (``pymesos.operator_v1``) against a real
butte master and agent: synchronous calls and the master's SUBSCRIBE event stream."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from butte.testing.require import require, require_module

pymesos = require_module("pymesos")
operator_v1 = require_module("pymesos.operator_v1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from operator_kit import RunJob, cluster_with_jobs, wait_for, wait_task  # noqa: E402

from butte.testing.cluster import daemons_missing  # noqa: E402

pytestmark = [pytest.mark.compat, pytest.mark.integration]


class Recorder(pymesos.OperatorMaster):
    """Keeps what the driver's event callbacks were given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks_added: list[dict] = []
        self.tasks_updated: list[dict] = []
        self.frameworks: list[tuple[str, dict]] = []

    def taskAdded(self, task_info):
        with self.lock:
            self.tasks_added.append(task_info)

    def taskUpdated(self, task_info):
        with self.lock:
            self.tasks_updated.append(task_info)

    def frameworkAdded(self, framework_info):
        self.frameworks.append(("added", framework_info))

    def frameworkUpdated(self, framework_info):
        self.frameworks.append(("updated", framework_info))

    def frameworkRemoved(self, framework_info):
        self.frameworks.append(("removed", framework_info))

    def agentAdded(self, agent_info):
        pass

    def agentRemoved(self, agent_id):
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("pymesos-operator")
    with cluster_with_jobs(tmp, {"steady": "echo steady; sleep 600"}, running=("steady",)) as (
        cluster,
        _,
    ):
        yield cluster, tmp


def test_master_driver_sync_calls(env):
    cluster, _ = env
    driver = operator_v1.MesosOperatorMasterDriver(cluster.master_address)
    assert driver.getHealth()["get_health"]["healthy"] is True
    assert driver.getVersion()["get_version"]["version_info"]["version"]
    assert driver.getFlags()["get_flags"]["flags"]
    metrics = driver.getMetrics(10**9)["get_metrics"]["metrics"]
    assert any(m["name"] == "master/uptime_secs" for m in metrics)
    assert "level" in driver.getLoggingLevel()["get_logging_level"]
    driver.setLoggingLevel(0, 10**9)
    state = driver.getState()["get_state"]
    assert any(t["name"] == "steady" for t in state["get_tasks"]["tasks"])
    assert driver.getAgents()["get_agents"]["agents"]
    assert driver.getFrameworks()["get_frameworks"]["frameworks"]
    assert "executors" in driver.getExecutors()["get_executors"]
    assert driver.getTasks()["get_tasks"]["tasks"]
    assert driver.getRoles()["get_roles"]["roles"]
    driver.updateWeights([{"role": "pymesos", "weight": 2.0}])
    weights = driver.getWeights()["get_weights"]["weight_infos"]
    assert {"role": "pymesos", "weight": 2.0} in weights
    assert driver.getMaster()["get_master"]["master_info"]["id"]
    with pytest.raises(RuntimeError, match="code=404"):
        driver.markAgentGone("no-such-agent")
    task = wait_task(cluster.master_url, "steady", "TASK_RUNNING")
    path = (
        f"/slaves/{task['agent_id']['value']}/frameworks/{task['framework_id']['value']}"
        f"/executors/{task['task_id']['value']}/runs/latest"
    )
    files = driver.listFiles(path)["list_files"]["file_infos"]
    assert any(f["path"].endswith("stdout") for f in files)
    read = driver.readFile(path + "/stdout", 100, 0)["read_file"]
    assert read["size"] == len(b"steady\n")


def test_agent_driver_sync_calls(env):
    cluster, _ = env
    driver = operator_v1.MesosOperatorAgentDriver(cluster.agents[0].address)
    assert driver.getHealth()["get_health"]["healthy"] is True
    assert driver.getState()["get_state"]["get_tasks"]["launched_tasks"]
    containers = driver.getContainers()["get_containers"]["containers"]
    assert containers and containers[0]["container_id"]["value"]
    assert driver.getFrameworks()["get_frameworks"]["frameworks"]
    assert driver.getExecutors()["get_executors"]["executors"]
    assert driver.getTasks()["get_tasks"]["launched_tasks"]
    assert driver.getMetrics(10**9)["get_metrics"]["metrics"]


def test_master_driver_event_stream_sees_a_task_run(env):
    cluster, tmp = env
    recorder = Recorder()
    driver = operator_v1.MesosOperatorMasterDriver(cluster.master_address, recorder)
    driver.start()
    job = None
    try:
        # The driver connects in the background: wait until the stream is open.
        wait_for(
            lambda: cluster.get("/metrics/snapshot")["master/operator_event_stream_subscribers"],
            10,
            "operator subscribed",
        )
        job = RunJob(cluster, "watched", "echo watched", tmp / "watched.log")

        def seen() -> bool:
            with recorder.lock:
                added = [t for t in recorder.tasks_added if t["name"] == "watched"]
                # The updates' own states (`state` is the task's latest: Mesos' latest_state).
                states = {u["status"]["state"] for u in recorder.tasks_updated}
            return bool(added) and {"TASK_RUNNING", "TASK_FINISHED"} <= states

        wait_for(seen, 20, "TASK_ADDED and TASK_UPDATED through pymesos")
        assert any(kind == "added" for kind, _ in recorder.frameworks)
        update = next(u for u in recorder.tasks_updated if u["status"]["state"] == "TASK_FINISHED")
        assert update["status"]["task_id"]["value"].startswith("watched.")
        assert update["framework_id"]["value"]
    finally:
        if job is not None:
            job.stop()
        driver.stop()
