"""``/files/debug`` on a real master and agent, as Mesos' files process serves it: the attached
virtual paths -> real paths as JSON, guarded by the ``get_endpoints`` ACL (object
``/files/debug``) and no other. The agent lists each executor run the files endpoints serve
in Mesos' three forms; the master has none of its own (it serves no log)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest
import requests

from butte.client.scheduler import SchedulerClient
from butte.core.auth import basic_header

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-d1", "alice": "alice-Secret-d2", "carol": "carol-Secret-d3"}
ACLS = {
    "get_endpoints": [
        {"principals": {"values": ["ops"]}, "paths": {"type": "ANY"}},
        {"principals": {"values": ["carol"]}, "paths": {"values": ["/files/debug"]}},
        {"principals": {"type": "ANY"}, "paths": {"type": "NONE"}},
    ],
    # carol may read no sandbox: /files/debug is not a sandbox read (Mesos checks only
    # GET_ENDPOINT_WITH_PATH there).
    "access_sandboxes": [
        {"principals": {"values": ["ops"]}, "users": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "users": {"type": "NONE"}},
    ],
}


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


async def _run_task(master: str) -> str:
    """Launches a sleeping command task ``t1`` and waits for TASK_RUNNING; the framework id."""
    info = {"name": "gaps-files", "user": "root", "failover_timeout": 600.0}
    async with SchedulerClient(master, info) as client:
        deadline = time.monotonic() + 60
        while True:
            event = await client.next_event(max(0.1, deadline - time.monotonic()))
            assert event is not None, "the subscription ended"
            if event["type"] == "OFFERS":
                offer = event["offers"]["offers"][0]
                task = {
                    "name": "t1",
                    "task_id": {"value": "t1"},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                    ],
                    "command": {"value": "sleep 120"},
                }
                await client.launch(offer, [task], refuse_seconds=600.0)
            elif event["type"] == "UPDATE":
                status = event["update"]["status"]
                await client.acknowledge_status(status)
                assert status["state"] in ("TASK_STARTING", "TASK_RUNNING"), status
                if status["state"] == "TASK_RUNNING":
                    framework_id = client.framework_id
                    assert framework_id is not None
                    return framework_id


def test_files_debug_lists_the_served_paths_under_get_endpoints(cluster_factory, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    auth_flags = ["--authenticate_http_readonly", "--authenticate_http_readwrite"]
    cluster = cluster_factory(
        master_flags=[*auth_flags, f"--credentials={creds}", f"--acls={json.dumps(ACLS)}"],
        agent_flags=[
            *auth_flags,
            f"--http_credentials={creds}",
            f"--acls={json.dumps(ACLS)}",
            "--switch_user=false",
        ],
        http_auth=("ops", SECRETS["ops"]),
    )
    master, agent = cluster.master_url, cluster.agents[0].url
    framework_id = asyncio.run(_run_task(master))

    def get(base: str, endpoint: str, principal: str | None, **params: Any) -> requests.Response:
        headers = auth(principal) if principal is not None else {}
        return requests.get(base + endpoint, headers=headers, params=params, timeout=10)

    # The master: its own attachments, none; the same ACL and realm.
    for path in ("/files/debug", "/master/files/debug"):
        answer = get(master, path, "ops")
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json() == {}
    assert get(master, "/files/debug", "carol").json() == {}
    assert get(master, "/files/debug", "alice").status_code == 403
    assert get(master, "/files/debug", None).status_code == 401
    posted = requests.post(master + "/files/debug", headers=auth("ops"), timeout=10)
    assert posted.status_code == 405, posted.text
    wrapped = get(master, "/files/debug", "ops", jsonp="cb")
    assert wrapped.text.replace(" ", "").startswith("cb({})")

    # The agent: every form of the task's sandbox path, each one that the files API serves.
    state = get(agent, "/state", "ops").json()
    [fw] = state["frameworks"]
    [executor] = fw["executors"]
    sandbox = executor["directory"]
    agent_id = state["id"]
    runs = os.path.dirname(sandbox)
    expected = {
        f"/frameworks/{framework_id}/executors/t1/runs/latest": os.path.realpath(sandbox),
        os.path.join(runs, "latest"): os.path.realpath(sandbox),
        sandbox: os.path.realpath(sandbox),
    }
    for prefix in ("", "/slave(1)"):
        answer = get(agent, prefix + "/files/debug", "ops")
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected, (answer.json(), expected)
    assert agent_id in sandbox
    for virtual in expected:
        listing = get(agent, "/files/browse", "ops", path=virtual)
        assert listing.status_code == 200, (virtual, listing.text)
        assert any(e["path"].endswith("/stdout") for e in listing.json())
    # carol may GET /files/debug, though she may read no sandbox.
    assert get(agent, "/files/debug", "carol").json() == expected
    assert get(agent, "/files/browse", "carol", path=sandbox).status_code == 403
    assert get(agent, "/files/debug", "alice").status_code == 403
    assert get(agent, "/files/debug", None).status_code == 401
