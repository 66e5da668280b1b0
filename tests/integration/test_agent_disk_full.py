"""An agent whose work dir runs out of space refuses launches (TASK_FAILED naming the disk)
instead of failing tasks obscurely or exiting on a checkpoint it cannot write, reports it in
its metrics, and launches again once space is back. The work dir is a small tmpfs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from butte.testing.require import require

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    require(done.stderr.strip() if done.returncode else None, "mounting a tmpfs (root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def run_task(cluster, name: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
    command += ["--name", name, "--command", "true", "--resources", "cpus:0.1;mem:16"]
    command += ["--checkpoint"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def wait_metric(url: str, name: str, value: float) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(url + "/metrics/snapshot", timeout=10).json().get(name) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {value}")


def test_launches_are_refused_while_the_work_dir_is_nearly_full(cluster_factory, small_disk):
    work = small_disk / "agent"
    cluster = cluster_factory(agent_flags=[f"--work_dir={work}", "--work_dir_min_free=48MB"])
    agent = cluster.agents[0]
    assert run_task(cluster, "before").returncode == 0
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (64 * 1024 * 1024))
    wait_metric(agent.url, "slave/work_dir_low", 1.0)
    refused = run_task(cluster, "during")
    assert refused.returncode != 0
    assert "TASK_FAILED" in refused.stdout and "work_dir" in refused.stdout, refused.stdout
    assert agent.running()  # no checkpoint failed: the agent did not have to exit
    os.unlink(filler)
    wait_metric(agent.url, "slave/work_dir_low", 0.0)
    assert run_task(cluster, "after").returncode == 0
