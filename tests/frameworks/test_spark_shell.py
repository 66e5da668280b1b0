"""The shell of ``butte spark-submit`` on a real two-agent butte cluster, with a test double
of the Spark distribution (``fake_spark/``: no JVM, so these run in seconds): the driver's
exit status is passed on; Ctrl-C and a lost Spark master stop a running driver; every time
the tasks end, the framework goes and no Spark (double) process is left.
The real Spark runs are in test_spark_submit.py."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from butte.core import task_states as ts
from butte.testing.require import require_module

psutil = require_module("psutil", "the dask extra brings it: pip install butte[dask]")

FAKE_SPARK = Path(__file__).parent / "fake_spark"
AGENTS = [
    "cpus:1.5;mem:3000;disk:1024;ports:[31000-31099]",
    "cpus:1.5;mem:3000;disk:1024;ports:[31100-31199]",
]
pytestmark = [pytest.mark.timeout(180), pytest.mark.cluster(agents=2, resources=AGENTS)]


@pytest.fixture
def spark_home(tmp_path) -> Path:
    home = tmp_path / "spark"
    shutil.copytree(FAKE_SPARK, home)
    return home


def submit(cluster, home: Path, what: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "butte", "spark-submit", "--master", cluster.master_address,
            "--spark_home", str(home), "--total-executor-cores", "2", "--executor-memory",
            "512m", "--name", "shell-test", "app.py", what]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{path.name} did not appear: {log.read_text()}"
        time.sleep(0.1)
    time.sleep(0.1)  # written in one go; give the writer its moment
    return json.loads(path.read_text())


def assert_cleaned_up(cluster, home: Path) -> None:
    cluster.wait_until(
        lambda s: not s["frameworks"] and len(s["completed_frameworks"]) == 1, 30, "teardown"
    )
    (done,) = cluster.state()["completed_frameworks"]
    assert all(ts.is_terminal(t["state"]) for t in done["completed_tasks"])
    pids = [int(p.read_text()) for p in (home / "state").glob("*.pid")]
    assert len(pids) == 3  # the master and two workers ran
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_driver_exit_status_is_passed_on_and_the_cluster_torn_down(cluster, spark_home, tmp_path):
    log = tmp_path / "log"
    proc = submit(cluster, spark_home, "exit:7", log)
    assert proc.wait(timeout=120) == 7, log.read_text()
    driver = json.loads((spark_home / "state" / "driver.json").read_text())
    argv = driver["argv"]
    master = argv[argv.index("--master") + 1]
    assert master.startswith("spark://127.0.0.1:") and argv[-2:] == ["app.py", "exit:7"]
    assert argv[argv.index("--total-executor-cores") + 1] == "2"
    text = log.read_text()
    assert "fake driver running" in text and "driver exited with status 7" in text
    (framework,) = cluster.state()["completed_frameworks"]
    assert framework["name"] == "spark: shell-test"
    assert master.replace("spark://", "") in text  # the master's address was printed
    assert framework["webui_url"] and f"web UI {framework['webui_url']}" in text
    assert_cleaned_up(cluster, spark_home)


def test_ctrl_c_stops_a_running_driver(cluster, spark_home, tmp_path):
    log = tmp_path / "log"
    proc = submit(cluster, spark_home, "wait", log)
    driver = wait_for(spark_home / "state" / "driver.json", proc, log)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()
    assert not alive(driver["pid"])
    assert_cleaned_up(cluster, spark_home)


def test_a_lost_spark_master_stops_the_driver_with_status_1(cluster, spark_home, tmp_path):
    log = tmp_path / "log"
    proc = submit(cluster, spark_home, "wait", log)
    driver = wait_for(spark_home / "state" / "driver.json", proc, log)
    (master_pid,) = [int(p.read_text()) for p in (spark_home / "state").glob("master-*.pid")]
    psutil.Process(master_pid).kill()
    assert proc.wait(timeout=60) == 1, log.read_text()
    assert "the Spark cluster failed: the Spark master task ended: TASK_FAILED" in log.read_text()
    assert not alive(driver["pid"])
    assert_cleaned_up(cluster, spark_home)
