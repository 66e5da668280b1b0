"""DEACTIVATE_AGENT, REACTIVATE_AGENT and DRAIN_AGENT on a real cluster, driven through the
operator API and `butte agent drain`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from operator_kit import call, cluster_with_jobs, wait_for, wait_task

from butte.testing.cluster import daemons_missing
from butte.testing.require import require

pytestmark = pytest.mark.integration


def agent_view(url: str) -> dict:
    [agent] = call(url, "GET_AGENTS")["agents"]
    return agent


def test_deactivate_reactivate_and_drain(tmp_path):
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    jobs = {"sleeper": "trap 'echo got-term; exit 0' TERM; sleep 600 & wait"}
    with cluster_with_jobs(tmp_path, jobs, running=("sleeper",)) as (cluster, _):
        url = cluster.master_url
        agent_id = agent_view(url)["agent_info"]["id"]["value"]

        call(url, "DEACTIVATE_AGENT", {"agent_id": {"value": agent_id}})
        view = agent_view(url)
        assert view["deactivated"] is True and view["active"] is False
        call(url, "REACTIVATE_AGENT", {"agent_id": {"value": agent_id}})
        assert agent_view(url)["active"] is True
        call(url, "DRAIN_AGENT", {"agent_id": {"value": "nope"}}, status=400)

        env = {**os.environ, "BUTTE_MASTER": cluster.master_address}
        for action, active in (("deactivate", False), ("reactivate", True)):
            done = subprocess.run(
                [sys.executable, "-m", "butte", "agent", action, agent_id],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            assert agent_view(url)["active"] is active
        done = subprocess.run(
            [sys.executable, "-m", "butte", "agent", "drain", agent_id, "--grace", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        # The task is asked to stop (SIGTERM first, within the grace period), then DRAINED.
        task = wait_task(url, "sleeper", "TASK_KILLED")
        assert task["state"] == "TASK_KILLED"
        # As Mesos' draining agent says why (its KILLING and KILLED).
        reasons = {s["state"]: s.get("reason") for s in task["statuses"]}
        assert reasons["TASK_KILLED"] == "REASON_AGENT_DRAINING", task["statuses"]
        drained = wait_for(
            lambda: agent_view(url).get("drain_info", {}).get("state") == "DRAINED",
            what="agent drained",
        )
        assert drained
        view = agent_view(url)
        assert view["active"] is False
        assert view["drain_info"]["config"]["max_grace_period"] == {"nanoseconds": 2_000_000_000}
