"""What operators touch every day, against one real master and agent: ``butte local`` on a
taken port, tables on an 80-column terminal, ``tasks --state``, ``state --json``, killing one
task (``butte task kill`` and the master's ``/master/kill-task``), and ``butte run``
saying what it waits for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from butte.cli.local import ClusterError, LocalCluster
from butte.testing.cluster import daemons_missing
from butte.testing.require import require

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_kit import call, cluster_with_jobs, wait_for, wait_task  # noqa: E402

pytestmark = pytest.mark.integration
WAIT = 60.0


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("cli-daily")
    jobs = {
        "steady": "sleep 600",
        "victim": "sleep 600",
        "webkill": "sleep 600",
        "broken": "exit 7",
    }
    with cluster_with_jobs(tmp, jobs) as (cluster, _):
        # Generous: the suite may share a busy machine.
        for name in ("steady", "victim", "webkill"):
            wait_task(cluster.master_url, name, "TASK_RUNNING", timeout=WAIT)
        wait_task(cluster.master_url, "broken", "TASK_FAILED", timeout=WAIT)
        yield {"cluster": cluster, "tmp": tmp}


def butte(
    env: dict[str, Any], *argv: str, master: bool = True, columns: int = 80, timeout: float = 120
) -> tuple:
    """``butte ARGV --master ...`` in a subprocess whose terminal is ``columns`` wide:
    (exit status, stdout, stderr)."""
    command = [sys.executable, "-m", "butte", *argv]
    if master:
        command += ["--master", env["cluster"].master_address]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS=str(columns)),
    )
    return done.returncode, done.stdout, done.stderr


def every_task(env: dict[str, Any]) -> list[dict]:
    answer = call(env["cluster"].master_url, "GET_TASKS")
    return answer["tasks"] + answer["completed_tasks"]


# -- butte local on a taken port ---------------------------------------------------------------


def test_local_refuses_a_port_another_master_holds(env):
    cluster = env["cluster"]
    before = len(call(cluster.master_url, "GET_AGENTS")["agents"])
    rc, out, err = butte(
        env, "local", "--port", str(cluster.master.port), "--agents", "1", master=False
    )
    assert rc != 0
    assert "cluster up" not in out
    assert f"port {cluster.master.port}" in err and "already in use" in err
    assert "\n" not in err.strip()  # one line: nothing was started, so nothing to stop
    assert len(call(cluster.master_url, "GET_AGENTS")["agents"]) == before


def test_local_cluster_checks_the_master_answering_is_its_own(env, tmp_path):
    # As if another master took the port between the check and our master's start: the
    # master answering is recognised as foreign by its work_dir.
    cluster = env["cluster"]
    other = LocalCluster(tmp_path, port=cluster.master.port, agents=0)
    with pytest.raises(ClusterError, match="is not the one this cluster started"):
        other.active_agents()
    with pytest.raises(ClusterError, match="already in use"):
        other.start()
    assert other.master.process is None  # nothing was started


# -- tables --------------------------------------------------------------------------------------


def widest_table_line(output: str) -> int:
    """Width of the widest line of the tables in ``output`` (top's header is text that the
    terminal wraps; tables are what must fit)."""
    return max(len(line) for line in output.splitlines() if line[:1] in "┏┃┡│└")


def ids_in(output: str) -> set[str]:
    return set(re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}-(?:S\d+|\d{4})", output))


@pytest.mark.parametrize("command", [("agents",), ("frameworks",), ("top", "--once")])
def test_tables_keep_whole_ids_at_80_columns(env, command):
    url = env["cluster"].master_url
    agents = {a["agent_info"]["id"]["value"] for a in call(url, "GET_AGENTS")["agents"]}
    frameworks = {
        f["framework_info"]["id"]["value"] for f in call(url, "GET_FRAMEWORKS")["frameworks"]
    }
    rc, out, err = butte(env, *command)
    assert rc == 0, err
    assert widest_table_line(out) <= 80, out
    assert "…" not in out
    wanted = {"agents": agents, "frameworks": frameworks, "top": agents | frameworks}[command[0]]
    assert wanted <= ids_in(out), out


def test_task_table_keeps_whole_ids_and_wide_shows_every_column(env):
    tasks = every_task(env)
    rc, out, _ = butte(env, "tasks", "--all")
    assert rc == 0
    assert widest_table_line(out) <= 80, out
    assert "…" not in out
    for task in tasks:
        assert task["task_id"]["value"] in out
    assert "FRAMEWORK" not in out  # dropped whole, not cut, at 80 columns
    for wide in (("--wide",), ("-o", "wide")):
        rc, out, _ = butte(env, "tasks", "--all", *wide)
        assert rc == 0 and "FRAMEWORK" in out and "AGENT" in out
        for task in tasks:
            assert task["framework_id"]["value"] in out and task["agent_id"]["value"] in out
    rc, out, _ = butte(env, "tasks", "-o", "json")
    assert rc == 0 and isinstance(json.loads(out), list)


# -- tasks --state, state --json -------------------------------------------------------------


def test_tasks_state_filter_looks_at_completed_tasks(env):
    failed = [t["task_id"]["value"] for t in every_task(env) if t["state"] == "TASK_FAILED"]
    assert failed
    rc, out, _ = butte(env, "tasks", "--state", "failed", "--json")
    assert rc == 0
    listed = json.loads(out)
    assert {t["task_id"]["value"] for t in listed} >= set(failed)
    assert all(t["state"] == "TASK_FAILED" for t in listed)
    rc, out, _ = butte(env, "tasks", "--state", "running", "--json")
    assert rc == 0 and all(t["state"] == "TASK_RUNNING" for t in json.loads(out))


def test_tasks_unknown_state_is_an_error_listing_the_valid_ones(env):
    rc, out, err = butte(env, "tasks", "--state", "bogus")
    assert rc == 2 and not out
    assert "unknown task state 'bogus'" in err and "running" in err and "failed" in err


def test_state_json(env):
    rc, out, _ = butte(env, "state", "--json")
    assert rc == 0
    assert json.loads(out)["id"] == env["cluster"].state()["id"]


# -- killing one task ------------------------------------------------------------------------


def test_task_kill_by_cli(env):
    url = env["cluster"].master_url
    task = wait_task(url, "victim", "TASK_RUNNING", timeout=WAIT)
    task_id = task["task_id"]["value"]
    rc, out, err = butte(env, "task", "kill", task_id, "--signal", "TERM", "--wait", "60")
    assert rc == 0, err
    assert f"Task {task_id} ended: TASK_KILLED" in out
    ended = wait_task(url, "victim", "TASK_KILLED", timeout=WAIT)
    assert "signal" in ended["statuses"][-1].get("message", "").lower()
    # Its process is gone: the container's pid no longer exists.
    pid = next(
        s["container_status"]["executor_pid"]
        for s in task["statuses"]
        if "executor_pid" in s.get("container_status", {})
    )
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), WAIT, "the executor exited")
    rc, _, err = butte(env, "task", "kill", task_id)
    assert rc == 1 and "already ended" in err
    rc, _, err = butte(env, "task", "kill", "no-such-task")
    assert rc == 1 and "no task" in err


def test_kill_task_endpoint_for_the_web_ui(env):
    url = env["cluster"].master_url
    task = wait_task(url, "webkill", "TASK_RUNNING", timeout=WAIT)
    body = {"task_id": task["task_id"]["value"], "framework_id": task["framework_id"]["value"]}
    for bad, status in (
        (b"{", 400),
        (b"[]", 400),
        (json.dumps({"task_id": 3}).encode(), 400),
        (json.dumps({**body, "signal": 999}).encode(), 400),
        (json.dumps({**body, "extra": 1}).encode(), 400),
        (json.dumps({"task_id": "nope"}).encode(), 404),
    ):
        assert requests.post(f"{url}/master/kill-task", data=bad, timeout=30).status_code == status
    assert requests.get(f"{url}/master/kill-task", timeout=30).status_code == 405
    answer = requests.post(f"{url}/master/kill-task", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    # SIGKILL (the default, as in Mesos) takes the executor down with the task.
    ended = wait_for(
        lambda: [
            t
            for t in every_task(env)
            if t["task_id"] == task["task_id"] and t["state"] != "TASK_RUNNING"
        ],
        WAIT,
        "the killed task ended",
    )[0]
    assert ended["state"] in ("TASK_KILLED", "TASK_FAILED"), ended
    again = requests.post(f"{url}/master/kill-task", json=body, timeout=30)
    assert again.status_code == 409


# -- butte run says what it waits for ---------------------------------------------------------


def test_run_says_what_it_waits_for(env):
    # Resources no agent has: offers come but never fit; the note repeats while it waits.
    command = [sys.executable, "-m", "butte", "run", "--master", env["cluster"].master_address]
    command += ["--name", "huge", "--command", "true", "--resources", "cpus:64;mem:32"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(WAIT, process.kill)  # a silent run ends the readline loop
    watchdog.start()
    try:
        notes = []
        assert process.stderr is not None
        while len(notes) < 2:
            line = process.stderr.readline()
            assert line, "butte run ended"
            if line.startswith("Waiting for offers"):
                notes.append(line)
        assert "cpus:64" in notes[0]
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(30)


# -- legacy agent endpoints ------------------------------------------------------------------


def test_agent_monitor_statistics(env):
    cluster = env["cluster"]
    running = {
        t["task_id"]["value"]
        for t in call(cluster.master_url, "GET_TASKS")["tasks"]
        if t["state"] == "TASK_RUNNING"
    }
    assert running
    for path in ("/monitor/statistics", "/monitor/statistics.json", "/slave(1)/monitor/statistics"):
        answer = requests.get(cluster.agents[0].url + path, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        entries = answer.json()
        # A command task's executor is named after the task.
        assert running <= {e["executor_id"] for e in entries}, entries
        for entry in entries:
            assert set(entry) == {
                "executor_id",
                "executor_name",
                "framework_id",
                "source",
                "statistics",
            }
            stats = entry["statistics"]
            assert stats["cpus_limit"] > 0 and stats["mem_limit_bytes"] > 0
            assert stats["timestamp"] > 0
