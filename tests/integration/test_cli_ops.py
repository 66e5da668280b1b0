"""The operator subcommands of ``butte`` as subprocesses against a real cluster: tables,
``--json``, exit statuses, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from operator_kit import RunJob, call, cluster_with_jobs, wait_task

from butte.testing.cluster import daemons_missing, free_port
from butte.testing.require import require

pytestmark = pytest.mark.integration

JOBS = {
    "sleeper": "echo sleeper-out; echo sleeper-err >&2; sleep 600",
    "short": "echo first; echo second; echo third",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("cli-ops")
    started = cluster_with_jobs(tmp, JOBS, running=("sleeper",), written=("sleeper",))
    with started as (cluster, jobs):
        wait_task(cluster.master_url, "short", "TASK_FINISHED")
        # Its framework is gone only once `butte run` acknowledged the end and tore it down.
        jobs["short"].process.wait(30)
        yield cluster, tmp


def butte(
    cluster, *args: str, master: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUTTE_MASTER": master or cluster.master_address, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "butte", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("butte: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def task_of(cluster, prefix: str, state: str) -> dict:
    return wait_task(cluster.master_url, prefix, state)


def test_agents_table_and_json(env):
    cluster, _ = env
    agent_id = call(cluster.master_url, "GET_AGENTS")["agents"][0]["agent_info"]["id"]["value"]
    table = ok(butte(cluster, "agents"))
    assert agent_id in table and "CPUS" in table and "/4" in table
    agents = json.loads(ok(butte(cluster, "agents", "--json")))
    assert agents[0]["agent_info"]["id"]["value"] == agent_id


def test_frameworks_and_all(env):
    cluster, _ = env
    live = ok(butte(cluster, "frameworks"))
    assert "fw-sleeper" in live and "fw-short" not in live
    everything = json.loads(ok(butte(cluster, "frameworks", "--all", "--json")))
    names = {f["framework_info"]["name"] for f in everything}
    assert {"fw-sleeper", "fw-short"} <= names


def test_tasks_ps_and_filters(env):
    cluster, _ = env
    sleeper = task_of(cluster, "sleeper", "TASK_RUNNING")["task_id"]["value"]
    short = task_of(cluster, "short", "TASK_FINISHED")["task_id"]["value"]
    table = ok(butte(cluster, "tasks"))
    assert sleeper in table and "RUNNING" in table and short not in table
    assert sleeper in ok(butte(cluster, "ps"))
    every = json.loads(ok(butte(cluster, "ps", "--all", "--json")))
    assert {sleeper, short} <= {t["task_id"]["value"] for t in every}
    finished = json.loads(ok(butte(cluster, "tasks", "--all", "--state", "finished", "--json")))
    assert [t["task_id"]["value"] for t in finished] == [short]
    fid = task_of(cluster, "short", "TASK_FINISHED")["framework_id"]["value"]
    mine = json.loads(ok(butte(cluster, "tasks", "--all", "--framework", fid, "--json")))
    assert [t["task_id"]["value"] for t in mine] == [short]


def test_task_info_cat_tail_ls(env):
    cluster, _ = env
    task = task_of(cluster, "sleeper", "TASK_RUNNING")
    tid = task["task_id"]["value"]
    info = ok(butte(cluster, "task", "info", tid))
    assert tid in info and "TASK_RUNNING" in info and "Status history" in info
    assert json.loads(ok(butte(cluster, "task", "info", tid, "--json")))["task_id"]["value"] == tid
    assert ok(butte(cluster, "task", "cat", tid)) == "sleeper-out\n"
    assert ok(butte(cluster, "task", "cat", tid, "--stderr")) == "sleeper-err\n"
    assert ok(butte(cluster, "task", "info", tid[:10]))  # a unique prefix is enough
    listing = ok(butte(cluster, "task", "ls", tid))
    assert "stdout" in listing and "stderr" in listing
    short = task_of(cluster, "short", "TASK_FINISHED")["task_id"]["value"]
    assert ok(butte(cluster, "task", "tail", "-n", "2", short)) == "second\nthird\n"
    assert ok(butte(cluster, "task", "cat", short)) == "first\nsecond\nthird\n"


def test_task_tail_follow_ends_with_the_task(env):
    cluster, tmp = env
    job = RunJob(cluster, "follow", "echo a; sleep 1; echo b; sleep 1; echo c", tmp / "f.log")
    try:
        tid = task_of(cluster, "follow", "TASK_RUNNING")["task_id"]["value"]
        result = butte(cluster, "task", "tail", "-f", tid, timeout=40)
        assert ok(result) == "a\nb\nc\n"
    finally:
        job.stop()


def test_roles_state_and_top(env):
    cluster, _ = env
    roles = ok(butte(cluster, "roles"))
    assert "*" in roles and "WEIGHT" in roles
    assert json.loads(ok(butte(cluster, "roles", "--json")))[0]["name"]
    state = json.loads(ok(butte(cluster, "state")))
    assert state["slaves"] and state["frameworks"]
    frame = ok(butte(cluster, "top", "--once"))
    for word in (
        "butte top",
        "CPUS",
        "MEM",
        "Busiest agents",
        "fw-sleeper",
        "running 1",
        "Tasks: used vs container limits",
    ):
        assert word in frame, word
    # The running task's row in the used-vs-asked table (its id, as far as it fits).
    sleeper = task_of(cluster, "sleeper", "TASK_RUNNING")["task_id"]["value"]
    assert sleeper[:6] in frame.split("Tasks: used vs container limits")[1]


def test_teardown_and_unknown_ids(env):
    cluster, tmp = env
    job = RunJob(cluster, "victim", "sleep 600", tmp / "victim.log")
    try:
        fid = task_of(cluster, "victim", "TASK_RUNNING")["framework_id"]["value"]
        assert f"Framework {fid} torn down" in ok(butte(cluster, "teardown", fid))
        task_of(cluster, "victim", "TASK_KILLED")
    finally:
        job.stop()
    assert "nope" in one_line_error(butte(cluster, "teardown", "nope"), 1)
    one_line_error(butte(cluster, "task", "info", "no-such-task"), 1)
    one_line_error(butte(cluster, "task", "cat", "sleeper", "../../etc/passwd"), 2)
    one_line_error(butte(cluster, "agent", "gone", "no-such-agent"), 1)
    message = one_line_error(butte(cluster, "agent", "drain", "no-such-agent"), 1)
    assert message.endswith("no-such-agent: Unknown agent"), message


def test_unreachable_master_and_usage_errors(env):
    cluster, _ = env
    dead = f"127.0.0.1:{free_port()}"
    for args in (("agents",), ("tasks", "--json"), ("task", "cat", "x"), ("top", "--once")):
        assert "unreachable" in one_line_error(butte(cluster, *args, master=dead), 2)
    assert butte(cluster, "tasks", "--bogus").returncode == 2
    assert butte(cluster, "task").returncode == 2
    bad = butte(cluster, "agents", "--master", "not-a-port:x")
    assert "bad master address" in one_line_error(bad, 2)


def test_completion(env):
    cluster, _ = env
    text = ok(butte(cluster, "completion", "bash"))
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "complete -o default -F _butte_complete butte" in text
