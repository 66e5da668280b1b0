"""A task that fills the file system of the agent's work dir, with a real master and agent on a
small tmpfs: the agent survives a checkpoint it cannot write (it waits for space, holding
what depends on it, instead of exiting), comes back after a restart on the full disk, kills
the task for going over its disk quota (``disk/du``, REASON_CONTAINER_LIMITATION_DISK),
and once the task's sandbox is collected writes the checkpoint and carries on: the update
that waited reaches its framework. docs/reliability.md "A full disk on the agent"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from butte.testing.cluster import ClusterHandle
from butte.testing.require import require

pytestmark = pytest.mark.integration

DISK_MB = 32
FILLER = "dd if=/dev/zero of=fill bs=1M; exec sleep 600"
AGENT_FLAGS = [
    # Launches are refused only once the disk is full (the default, 64MB, is more than the
    # whole tmpfs): the filler starts, and a launch while it holds the disk is refused.
    "--work_dir_min_free=4KB",
    "--isolation=posix/cpu,posix/mem,disk/du",
    "--enforce_container_disk_quota",
    # Long enough for a launch to come while the filler holds the disk full, after the
    # agent's restart (the measuring starts again with the recovered container).
    "--container_disk_watch_interval=6secs",
    "--disk_watch_interval=1secs",  # finished sandboxes are looked for every second
]


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    require(done.stderr.strip() if done.returncode else None, "mounting a tmpfs (root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def butte_run(cluster: ClusterHandle, name: str, command: str, resources: str) -> list[str]:
    argv = [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
    return [*argv, "--name", name, "--command", command, "--resources", resources, "--checkpoint"]


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def wait_for(what: str, condition, timeout: float = 15.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def agent_metric(url: str, name: str) -> float | None:
    return requests.get(url + "/metrics/snapshot", timeout=10).json().get(name)


def last_run(log: str) -> str:
    """The agent's log since its last start (the log file is appended to at each start)."""
    return log.rsplit("\n==== ", 1)[-1]


def test_a_task_that_fills_the_disk_does_not_bring_the_agent_down(cluster_factory, small_disk):
    cluster = cluster_factory(agent_flags=[f"--work_dir={small_disk / 'agent'}", *AGENT_FLAGS])
    agent = cluster.agents[0]
    filler = subprocess.Popen(
        butte_run(cluster, "filler", FILLER, "cpus:0.1;mem:32;disk:4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    during: subprocess.Popen[str] | None = None
    try:
        wait_for("the task to fill the disk", lambda: free_bytes(small_disk) < 256 * 1024)
        # Restarted on the full disk, the agent recovers: reading needs no space.
        agent.kill()
        agent.restart()
        cluster.wait_until(
            lambda s: [a["active"] for a in s["slaves"]] == [True], what="the agent re-registered"
        )
        pid = agent.pid
        # A framework's first checkpoint cannot be written now: its task, refused for want
        # of space, and the TASK_FAILED saying so wait for the checkpoint.
        during = subprocess.Popen(
            butte_run(cluster, "during", "echo done", "cpus:0.1;mem:32"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(
            "the refused task's update (or the agent's end)",
            lambda: during.poll() is not None or not agent.running(),
            timeout=30,
        )
        assert agent.running() and agent.pid == pid, last_run(agent.log_text())
        during_out, _ = during.communicate(timeout=5)
        out, _ = filler.communicate(timeout=30)
        # The filler's sandbox was collected: launches are taken again once the agent has
        # measured the space (every 2 s).
        wait_for("space back", lambda: agent_metric(agent.url, "slave/work_dir_low") == 0.0)
        after = subprocess.run(
            butte_run(cluster, "after", "echo done", "cpus:0.1;mem:32"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        for client in (filler, during):
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
    log = last_run(agent.log_text())
    assert agent.running() and agent.pid == pid, log  # the agent never exited
    # The update that waited for the checkpoint was not lost.
    assert "TASK_FAILED" in during_out and "work_dir" in during_out, during_out + log
    assert after.returncode == 0 and "TASK_FINISHED" in after.stdout, after.stdout + log
    # The filler went over its quota: killed by disk/du, its update carried the reason.
    assert "TASK_FAILED" in out and "exceeds quota" in out, out
    reasons = [
        (s["state"], s.get("reason"))
        for f in cluster.state()["completed_frameworks"]
        for t in f["completed_tasks"]
        if t["name"] == "filler"
        for s in t["statuses"]
    ]
    assert ("TASK_FAILED", "REASON_CONTAINER_LIMITATION_DISK") in reasons, reasons
    # One clear error for the checkpoint that waited (not one per attempt), one line once
    # it was written.
    assert log.count("cannot write the checkpoint") == 1, log
    assert "No space left on device" in log and "could be written again" in log, log
    assert "Traceback" not in log, log
