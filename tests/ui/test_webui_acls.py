"""The master's endpoints behind the web UI under authentication and ``--acls``: the kill
button's ``POST /master/kill-task`` needs credentials (401), ``view_tasks`` on the task and
``teardown_frameworks`` on its framework (403); ``/master/ui/task-usage`` answers a task the
caller may not view as an unknown one. Both pass the caller's credentials on to an agent that
asks for them. No browser: plain requests against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from butte.core.auth import basic_header
from butte.testing.cluster import ClusterHandle

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-k1", "viewer": "viewer-Secret-k2", "peeker": "peeker-Secret-k3"}
ACLS = {
    # viewer sees no task; peeker sees them all but may not end a framework's work.
    "view_tasks": [{"principals": {"values": ["viewer"]}, "users": {"type": "NONE"}}],
    "teardown_frameworks": [
        {"principals": {"values": ["viewer", "peeker"]}, "framework_principals": {"type": "NONE"}}
    ],
}


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


@pytest.fixture
def secured(cluster_factory, tmp_path) -> Iterator[tuple[ClusterHandle, str]]:
    """A cluster whose master and agent authenticate every HTTP request, with one running
    task (``butte run`` as ``ops``); (the cluster, the task id)."""
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    auth_flags = ["--authenticate_http_readonly", "--authenticate_http_readwrite"]
    cluster = cluster_factory(
        master_flags=[*auth_flags, f"--credentials={creds}", f"--acls={json.dumps(ACLS)}"],
        agent_flags=[*auth_flags, f"--http_credentials={creds}"],
        http_auth=("ops", SECRETS["ops"]),
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
        + ["--name", "guarded", "--command", "sleep 600", "--principal", "ops"]
        + ["--secret", SECRETS["ops"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tasks = cluster.get("/master/tasks")["tasks"]
            running = [t for t in tasks if t["state"] == "TASK_RUNNING"]
            if running:
                yield cluster, running[0]["id"]
                return
            time.sleep(0.2)
        raise TimeoutError(f"the task did not start: {tasks}")
    finally:
        run.kill()
        run.wait(10)


def test_kill_task_needs_credentials_view_and_teardown_rights(secured) -> None:
    cluster, task_id = secured
    url = f"{cluster.master_url}/master/kill-task"
    body = {"task_id": task_id, "signal": 15}

    def kill(headers: dict[str, str]) -> requests.Response:
        return requests.post(url, json=body, headers=headers, timeout=30)

    refused = kill({})
    assert refused.status_code == 401, refused.text
    hidden = kill(auth("viewer"))
    assert hidden.status_code == 403 and "view_tasks" in hidden.text, hidden.text
    not_owner = kill(auth("peeker"))
    assert not_owner.status_code == 403 and "teardown_frameworks" in not_owner.text
    assert cluster.get(f"/master/tasks?task_id={task_id}")["tasks"][0]["state"] == "TASK_RUNNING"
    # ops may: the master passes its credentials on to the agent's /api/v1 (readwrite).
    allowed = kill(auth("ops"))
    assert allowed.status_code == 200, allowed.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (task,) = cluster.get(f"/master/tasks?task_id={task_id}")["tasks"]
        if task["state"] in ("TASK_KILLED", "TASK_FAILED"):
            break
        time.sleep(0.2)
    assert task["state"] in ("TASK_KILLED", "TASK_FAILED"), task


def test_task_usage_hides_what_the_caller_may_not_view(secured) -> None:
    cluster, task_id = secured
    url = f"{cluster.master_url}/master/ui/task-usage"

    def usage(principal: str) -> Any:
        answer = requests.get(url, params={"task_id": task_id}, headers=auth(principal), timeout=30)
        assert answer.status_code == 200, answer.text
        (entry,) = answer.json()["tasks"]
        return entry

    listed = requests.get(
        f"{cluster.master_url}/master/ui/tasks", headers=auth("viewer"), timeout=30
    )
    assert listed.json()["tasks"] == []
    assert usage("viewer") == {"task_id": task_id, "error": "no running task of this id"}
    # ... the same answer as for an id no task has:
    nothing = requests.get(
        url, params={"task_id": "no-such-task"}, headers=auth("viewer"), timeout=30
    ).json()["tasks"][0]
    assert nothing == {"task_id": "no-such-task", "error": "no running task of this id"}
    # peeker may view it: the figures come from the agent, which wants credentials too.
    seen = usage("peeker")
    assert "error" not in seen, seen
    assert seen["agent_id"] and seen["container_id"] and "mem_rss_bytes" in seen["statistics"]
