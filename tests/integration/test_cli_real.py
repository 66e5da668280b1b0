"""`butte run` and `butte local` against real master and agent processes on 127.0.0.1.

These use the ``cluster`` fixture (tests/conftest.py), which skips while the master or agent
module does not exist yet.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from butte.cli.main import main
from butte.testing.cluster import daemons_missing, free_port
from butte.testing.require import require

pytestmark = pytest.mark.integration


def butte_run(cluster, *extra: str) -> int:
    argv = ["run", "--master", cluster.master_address, "--name", "it"]
    return main([*argv, *extra])


def task_lines(out: str, state: str) -> list[str]:
    return [line for line in out.splitlines() if f" {state} on " in line]


def test_run_single_task_to_completion(cluster, capsys):
    assert butte_run(cluster, "--command", "echo hello") == 0
    out = capsys.readouterr().out
    assert len(task_lines(out, "TASK_RUNNING")) == 1
    (finished,) = task_lines(out, "TASK_FINISHED")
    assert re.match(r"it\.[0-9a-f]{8}\.0 TASK_FINISHED on \S+", finished)
    state = cluster.wait_until(
        lambda s: s["completed_frameworks"], what="framework torn down and completed"
    )
    assert state[0]["name"] == "butte-run"


def test_run_propagates_the_exit_status(cluster, capsys):
    assert butte_run(cluster, "--command", "exit 3") == 3
    assert "Command exited with status 3" in capsys.readouterr().out


@pytest.mark.cluster(agents=2)
def test_run_many_instances_over_two_agents(cluster, capsys):
    rc = butte_run(
        cluster, "--command", "echo $GREETING", "--instances", "4", "--env", "GREETING=hi"
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert len(task_lines(out, "TASK_FINISHED")) == 4


def test_run_environment_and_no_shell(cluster, tmp_path, capsys):
    marker = tmp_path / "marker"
    rc = butte_run(cluster, "--no-shell", "--command", f"touch {marker}")
    assert rc == 0
    assert marker.exists()


def test_ctrl_c_kills_the_tasks_and_tears_down(cluster):
    process = subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
        + ["--name", "sleepy", "--command", "sleep 100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "TASK_RUNNING" in line or not line:
                break
        assert "TASK_RUNNING" in line
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=20)[0]
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 130
    assert "TASK_KILLED" in rest
    cluster.wait_until(
        lambda s: not any(f["tasks"] for f in s["frameworks"]), what="no running tasks"
    )


def _read_until(stream, needle: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(seen)}")


def test_butte_local_starts_serves_and_stops_cleanly(tmp_path):
    reason = daemons_missing()
    if reason:
        require(reason, "a real cluster")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "butte", "local", "--port", str(port), "--agents", "2"]
        + ["--work_dir", str(tmp_path), "--demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        out = _read_until(process.stdout, "Press Ctrl-C", timeout=60)
        assert f"http://127.0.0.1:{port}/master/state" in out
        assert out.count("TASK_FINISHED") == 3
        assert "Demo job finished with exit status 0" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/master/state", timeout=5) as r:
            assert r.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.communicate()
    assert (tmp_path / "master.log").exists() and (tmp_path / "agent-1.log").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/master/state", timeout=2)


def test_cluster_helper_can_kill_and_restart_an_agent(cluster):
    agent = cluster.agents[0]
    old_pid = agent.pid
    agent.kill()
    assert not agent.running()
    agent.restart()
    assert agent.running() and agent.pid != old_pid
    cluster.wait_agents_active(1, timeout=30)
    assert len([s for s in cluster.state()["slaves"] if s["active"]]) == 1
