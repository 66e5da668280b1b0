"""``butte task tail -f`` while the task's agent restarts, against a real master and agent:
the follow rides out the restart (reads retried at the same offset, nothing lost or printed
twice) and ends with the task; it ends with an error once the task is gone for good."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_kit import wait_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# 40 lines over about 10 s: the agent is down for a few of them.
TICKER = "for i in $(seq 1 40); do echo line $i; sleep 0.25; done"
EXPECTED = "".join(f"line {i}\n" for i in range(1, 41))


def butte(cluster, *args: str) -> list[str]:
    return [sys.executable, "-m", "butte", *args, "--master", cluster.master_address]


@pytest.fixture
def ticker(cluster, tmp_path) -> Iterator[str]:
    """A checkpointing framework's task (it outlives an agent restart) printing lines; its
    task id."""
    log = open(tmp_path / "run.log", "wb")
    argv = butte(cluster, "run", "--name", "ticker", "--checkpoint", "--command", TICKER)
    job = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield wait_task(cluster.master_url, "ticker", "TASK_RUNNING")["task_id"]["value"]
    finally:
        if job.poll() is None:
            job.terminate()
            job.wait(10)
        log.close()


def start_tail(cluster, task_id: str, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    argv = butte(cluster, "task", "tail", "-f", "-n", "100", task_id)
    with out.open("wb") as o, err.open("wb") as e:
        return subprocess.Popen(argv, stdout=o, stderr=e), out, err


def wait_output(path: Path, text: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"{text!r} not printed: {path.read_text()!r}"
        time.sleep(0.05)


@pytest.mark.cluster(agents=1)
def test_tail_follow_goes_on_across_an_agent_restart(cluster, ticker, tmp_path):
    tail, out, err = start_tail(cluster, ticker, tmp_path)
    try:
        wait_output(out, "line 3\n", tail)
        agent = cluster.agents[0]
        agent.kill()  # a crash: the task goes on, its agent is away for a while
        time.sleep(3)
        agent.restart()
        # It keeps following until the task has ended and all it wrote was printed.
        assert tail.wait(60) == 0, err.read_text()
    finally:
        if tail.poll() is None:
            tail.kill()
    assert out.read_text() == EXPECTED, err.read_text()
    notes = err.read_text()
    assert "still following" in notes and "again from byte" in notes, notes
    assert wait_task(cluster.master_url, "ticker", "TASK_FINISHED")


@pytest.mark.cluster(agents=1)
def test_tail_follow_ends_with_an_error_once_the_task_is_gone(cluster, ticker, tmp_path):
    tail, out, err = start_tail(cluster, ticker, tmp_path)
    try:
        wait_output(out, "line 3\n", tail)
        # An agent stopped with SIGUSR1 unregisters: its tasks are lost, its sandboxes
        # out of reach through the master for good.
        cluster.agents[0].terminate()
        started = time.monotonic()
        assert tail.wait(30) == 1, (out.read_text(), err.read_text())
        assert time.monotonic() - started < 15
    finally:
        if tail.poll() is None:
            tail.kill()
    message = err.read_text().strip().splitlines()[-1]
    assert message.startswith("butte: error: task ") and "ended (TASK_LOST)" in message, message
    assert "cannot be read any more" in message and "printed up to byte" in message
    printed = out.read_text()
    assert printed and EXPECTED.startswith(printed)
    assert os.path.getsize(out) == int(message.rsplit(" ", 1)[-1])
