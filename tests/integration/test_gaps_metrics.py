"""Metrics of Mesos' master (src/master/metrics.cpp) and agent (src/slave/metrics.cpp) that
butte's ``/metrics/snapshot`` used to lack, computed from a real master's and agent's own
state: the REQUEST / RECONCILE_OPERATIONS / ACKNOWLEDGE_OPERATION_STATUS message counters,
the agent-shutdown counters Mesos never counts, the per-framework ``subscribed``,
``tasks/active/*`` and ``roles/<role>/suppressed``, and the agent's
``slave/executors_terminated``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests

from butte.client.scheduler import SchedulerClient

pytestmark = pytest.mark.integration

ADDED_MASTER = (
    "master/messages_resource_request",
    "master/messages_reconcile_operations",
    "master/messages_operation_status_update_acknowledgement",
    "master/slave_shutdowns_scheduled",
    "master/slave_shutdowns_completed",
    "master/slave_shutdowns_canceled",
)
ACTIVE = ("task_staging", "task_starting", "task_running", "task_killing", "task_unreachable")
ACTIVE_ALSO = ("task_unknown",)  # butte's task states include it, non-terminal, as Mesos'
ADDED_AGENT = ("slave/executors_terminated",)
# A name Mesos' master percent-encodes in the metric's path.
NAME = "gaps metrics/x"
ENCODED = "gaps%20metrics%2Fx"


def _snapshot(url: str) -> dict[str, float]:
    answer = requests.get(url + "/metrics/snapshot", timeout=10)
    assert answer.status_code == 200, answer.text
    snapshot: dict[str, float] = answer.json()
    return snapshot


async def _until(client: SchedulerClient, kind: str, state: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        event = await client.next_event(max(0.1, deadline - time.monotonic()))
        assert event is not None, "the subscription ended"
        if event["type"] == "UPDATE":
            await client.acknowledge_status(event["update"]["status"])
        if event["type"] == kind and (state is None or event["update"]["status"]["state"] == state):
            return event


async def _scenario(master: str, agent: str) -> None:
    info = {
        "name": NAME,
        "user": "root",
        "roles": ["a", "b"],
        "capabilities": [{"type": "MULTI_ROLE"}],
    }
    before = _snapshot(agent)
    for name in ADDED_AGENT:
        assert before[name] == 0.0, name
    async with SchedulerClient(master, info) as client:
        offer = (await _until(client, "OFFERS"))["offers"]["offers"][0]
        task = {
            "name": "t1",
            "task_id": {"value": "t1"},
            "resources": [
                {
                    "name": name,
                    "type": "SCALAR",
                    "scalar": {"value": value},
                    "allocation_info": {"role": offer["allocation_info"]["role"]},
                }
                for name, value in (("cpus", 0.1), ("mem", 32))
            ],
            "command": {"value": "sleep 120"},
        }
        await client.launch(offer, [task], refuse_seconds=600.0)
        await _until(client, "UPDATE", "TASK_RUNNING")
        await client.suppress(["b"])
        await client.reconcile_operations([])
        fid = client.framework_id
        prefix = f"master/frameworks/{ENCODED}/{fid}/"

        deadline = time.monotonic() + 20
        while True:  # the calls are taken asynchronously
            snapshot = _snapshot(master)
            if snapshot.get(prefix + "roles/b/suppressed") == 1.0 and snapshot.get(
                "master/messages_reconcile_operations"
            ):
                break
            assert time.monotonic() < deadline, snapshot
            await asyncio.sleep(0.1)
        for name in ADDED_MASTER:
            assert name in snapshot, name
        assert snapshot["master/messages_reconcile_operations"] == 1.0
        assert snapshot["master/messages_resource_request"] == 0.0
        assert snapshot["master/slave_shutdowns_completed"] == 0.0
        assert snapshot[prefix + "subscribed"] == 1.0
        for state in ACTIVE + ACTIVE_ALSO:
            expected = 1.0 if state == "task_running" else 0.0
            assert snapshot[f"{prefix}tasks/active/{state}"] == expected, state
        assert snapshot[prefix + "roles/a/suppressed"] == 0.0
        text = requests.get(master + "/metrics", timeout=10)
        assert text.status_code == 200
        assert "master_messages_reconcile_operations 1.0" in text.text

        await client.kill("t1")
        await _until(client, "UPDATE", "TASK_KILLED")
        deadline = time.monotonic() + 20
        while _snapshot(agent)["slave/executors_terminated"] != 1.0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        after = _snapshot(master)
        for state in ACTIVE + ACTIVE_ALSO:
            assert after[f"{prefix}tasks/active/{state}"] == 0.0, state


def test_the_added_mesos_metrics_are_served(cluster) -> None:
    asyncio.run(_scenario(cluster.master_url, cluster.agents[0].url))
