"""An executor's UPDATE for a task the agent does not know, as Mesos' agent takes it
(`Slave::statusUpdate`: no executor holds the task): 202, and the update goes to the master
and on to the framework, reliably (resent until the framework acknowledges it), with the
agent's id and no container status. A real master, agent and framework over HTTP."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from fault_kit import AGENT_FLAGS, command_task, wait_until

from butte.core import task_states as ts

pytestmark = pytest.mark.integration


def post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_an_update_for_a_task_the_agent_does_not_know_reaches_the_framework(
    cluster_factory, scheduler, tmp_path
):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    go = tmp_path / "go"
    task = command_task("e0", f"while [ ! -e {go} ]; do sleep 0.05; done")
    framework = scheduler(cluster.master_address, tasks=[task]).start()
    framework.wait_states(["e0"], ts.RUNNING)
    [running] = [s for s in framework.statuses("e0") if s["state"] == ts.RUNNING]
    agent = cluster.agents[0]
    url = f"http://127.0.0.1:{agent.port}/api/v1/executor"
    uuid = base64.b64encode(b"ghost-update-001").decode()
    status = {
        "task_id": {"value": "ghost"},
        "state": ts.RUNNING,
        "source": "SOURCE_EXECUTOR",
        "uuid": uuid,
        "message": "from an executor that knows more than the agent",
    }
    call = {
        "type": "UPDATE",
        "framework_id": {"value": framework.framework_id()},
        "executor_id": {"value": "e0"},
        "update": {"status": status},
    }
    assert post(url, call) == (202, "")

    def forwarded() -> list[dict]:
        return [s for s in framework.statuses("ghost") if s.get("uuid") == uuid]

    wait_until(lambda: bool(forwarded()), "the ghost update at the framework", 15.0)
    ghost = forwarded()[0]
    assert ghost["state"] == ts.RUNNING and ghost["source"] == "SOURCE_EXECUTOR"
    assert ghost["agent_id"] == running["agent_id"]
    assert ghost["message"] == status["message"]
    assert "container_status" not in ghost  # the agent knows no container of that task
    # The framework acknowledged it: the agent stops resending (every 0.2 s to 1 s before).
    wait_until(
        lambda: any(
            e.get("acked") and e["event"]["update"]["status"].get("uuid") == uuid
            for e in framework.entries()
            if e.get("event", {}).get("type") == "UPDATE"
        ),
        "the framework's acknowledgement",
        15.0,
    )
    time.sleep(0.5)  # a resend already on its way when the acknowledgement came
    seen = len(forwarded())
    time.sleep(2.5)
    assert len(forwarded()) == seen
    # The agent's own task goes on undisturbed.
    go.touch()
    framework.wait_states(["e0"], ts.FINISHED)
    assert agent.running()
