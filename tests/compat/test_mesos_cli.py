"""The official Apache Mesos CLI (the ``mesos`` command, PyPI ``avmesos-cli`` 1.0.0, unmodified)
against a real butte master and agent: ``agent list``, ``framework list|inspect`` and
``task list|inspect``.

The CLI lives in a virtualenv of its own (scripts/test-deps/40-avmesos-cli.sh; its package
metadata pulls in build tools that would not belong in butte's). It reads the master's
address from a TOML file named by ``MESOS_CLI_CONFIG`` and talks to the legacy endpoints
``/slaves``, ``/master/frameworks/`` and ``/tasks?order=asc&limit=-1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import daemons_missing
from butte.testing.require import require

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from operator_kit import call, cluster_with_jobs, wait_task  # noqa: E402

pytestmark = [pytest.mark.compat, pytest.mark.integration]

VENV = Path(os.environ.get("BUTTE_AVMESOS_VENV", "/var/cache/butte-test/avmesos-venv"))
MESOS_CLI = VENV / "bin" / "mesos-cli"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require(daemons_missing(), "a real cluster")
    if not MESOS_CLI.exists():
        require(f"{MESOS_CLI} missing (scripts/setup.sh --test installs it)", "avmesos-cli")
    tmp = tmp_path_factory.mktemp("mesos-cli")
    jobs = {"steady": "echo steady; sleep 600", "brief": "echo brief"}
    with cluster_with_jobs(tmp, jobs) as (cluster, _):
        url = cluster.master_url
        finished = wait_task(url, "brief", "TASK_FINISHED", timeout=60)
        config = tmp / "config.toml"
        config.write_text(f'[master]\naddress = "{cluster.master_address}"\n')
        yield {
            "cluster": cluster,
            "config": config,
            "running": wait_task(url, "steady", "TASK_RUNNING", timeout=60),
            "finished": finished,
        }


def mesos(env: dict[str, Any], *argv: str) -> str:
    """Runs ``mesos ARGV`` (its wrapper script runs ``python -m avmesos.cli.mesos-cli``, so the
    venv's bin comes first on PATH); the output of a successful run."""
    environ = dict(
        os.environ,
        MESOS_CLI_CONFIG=str(env["config"]),
        PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
    )
    environ.pop("PYTHONPATH", None)  # the CLI must not see butte's own modules
    done = subprocess.run(
        [str(MESOS_CLI), *argv], env=environ, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The CLI reports many failures with exit status 0; its error lines start like this.
    assert "Error:" not in output, output
    return done.stdout


def rows(output: str) -> list[list[str]]:
    """The CLI's table as rows of cells (header first)."""
    return [line.split() for line in output.splitlines() if line.strip()]


def test_agent_list(env):
    agents = call(env["cluster"].master_url, "GET_AGENTS")["agents"]
    table = rows(mesos(env, "agent", "list"))
    assert table[0] == ["Agent", "ID", "Hostname", "Active"]
    listed = {row[0]: row for row in table[1:]}
    assert set(listed) == {a["agent_info"]["id"]["value"] for a in agents}
    assert all(row[2] == "True" for row in listed.values())


def test_framework_list_and_inspect(env):
    framework_id = env["running"]["framework_id"]["value"]
    table = rows(mesos(env, "framework", "list"))
    assert table[0] == ["ID", "Active", "Hostname", "Name"]
    listed = {row[0]: row for row in table[1:]}
    assert framework_id in listed
    assert listed[framework_id][1] == "True" and listed[framework_id][-1] == "fw-steady"
    inspected = json.loads(mesos(env, "framework", "inspect", framework_id))
    assert inspected["id"] == framework_id and inspected["name"] == "fw-steady"
    assert inspected["active"] is True


def test_task_list_and_inspect(env):
    running = env["running"]["task_id"]["value"]
    finished = env["finished"]["task_id"]["value"]
    live = {row[0]: row for row in rows(mesos(env, "task", "list"))[1:]}
    assert live[running][1] == "TASK_RUNNING"
    assert finished not in live  # only running tasks without --all
    every = {row[0]: row for row in rows(mesos(env, "task", "list", "--all"))[1:]}
    assert every[finished][1] == "TASK_FINISHED" and running in every
    inspected = json.loads(mesos(env, "task", "inspect", running))
    assert inspected["id"] == running and inspected["state"] == "TASK_RUNNING"
    assert inspected["framework_id"] == env["running"]["framework_id"]["value"]
    assert inspected["slave_id"] == env["running"]["agent_id"]["value"]
