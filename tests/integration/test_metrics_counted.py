"""The counters of Mesos' master and agent that butte's cores keep, read from a real
master's and agent's ``/metrics/snapshot`` after real tasks (one failing, one killed):
per framework ``calls/*``, ``events/*``, ``offers/*``, ``tasks/terminal/*``,
``operations/*``, the master's ``slave_unreachable_*``, and the agent's
``slave/valid|invalid_status_updates``, ``slave/valid|invalid_framework_messages``,
``slave/recovery_time_secs`` and ``slave/executors_preempted``
(tests/unit/test_metrics_counted_master.py and test_metrics_counted_agent.py drive each
counter in the cores)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests

from butte.client.scheduler import SchedulerClient

pytestmark = pytest.mark.integration

NAME = "metrics counted"
ENCODED = "metrics%20counted"


def _snapshot(url: str) -> dict[str, float]:
    answer = requests.get(url + "/metrics/snapshot", timeout=10)
    assert answer.status_code == 200, answer.text
    snapshot: dict[str, float] = answer.json()
    return snapshot


def _task(task_id: str, command: str, role: str) -> dict[str, Any]:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "resources": [
            {
                "name": name,
                "type": "SCALAR",
                "scalar": {"value": value},
                "allocation_info": {"role": role},
            }
            for name, value in (("cpus", 0.1), ("mem", 32))
        ],
        "command": {"value": command},
    }


class _Events:
    """The framework's events, UPDATEs acknowledged, counted by type as they arrive."""

    def __init__(self, client: SchedulerClient) -> None:
        self.client = client
        self.counts: dict[str, int] = {}
        self.states: dict[str, str] = {}

    async def until(self, kind: str, task_state: tuple[str, str] | None = None) -> dict:
        deadline = time.monotonic() + 60
        while True:
            event = await self.client.next_event(max(0.1, deadline - time.monotonic()))
            assert event is not None, "the subscription ended"
            self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1
            if event["type"] == "UPDATE":
                status = event["update"]["status"]
                self.states[status["task_id"]["value"]] = status["state"]
                await self.client.acknowledge_status(status)
            if event["type"] == kind and (
                task_state is None or self.states.get(task_state[0]) == task_state[1]
            ):
                return event


async def _wait(url: str, done: Any) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while True:
        snapshot = _snapshot(url)
        if done(snapshot):
            return snapshot
        assert time.monotonic() < deadline, snapshot
        await asyncio.sleep(0.1)


async def _scenario(master: str, agent: str) -> None:
    before = _snapshot(agent)
    for name in (
        "slave/valid_status_updates",
        "slave/invalid_status_updates",
        "slave/valid_framework_messages",
        "slave/invalid_framework_messages",
        "slave/executors_preempted",
    ):
        assert before[name] == 0.0, name
    # The agent recovered (nothing to recover) before it registered.
    assert 0.0 <= before["slave/recovery_time_secs"] < 60.0
    first = _snapshot(master)
    for name in ("scheduled", "completed", "canceled"):
        assert first[f"master/slave_unreachable_{name}"] == 0.0, name
    info = {"name": NAME, "user": "root"}
    async with SchedulerClient(master, info) as client:
        events = _Events(client)
        offer = (await events.until("OFFERS"))["offers"]["offers"][0]
        role = offer["allocation_info"]["role"]
        agent_id = offer["agent_id"]["value"]
        tasks = [_task("fails", "exit 3", role), _task("killed", "sleep 120", role)]
        await client.launch(offer, tasks, refuse_seconds=600.0)
        await events.until("UPDATE", ("fails", "TASK_FAILED"))
        if events.states.get("killed") != "TASK_RUNNING":
            await events.until("UPDATE", ("killed", "TASK_RUNNING"))
        executor = {"value": "killed"}  # a command task's executor is named after it
        await client.call(
            "MESSAGE", {"agent_id": {"value": agent_id}, "executor_id": executor, "data": "aGk="}
        )
        await client.call(
            "MESSAGE",
            {"agent_id": {"value": agent_id}, "executor_id": {"value": "nobody"}, "data": "aGk="},
        )
        await client.kill("killed")
        await events.until("UPDATE", ("killed", "TASK_KILLED"))
        fid = client.framework_id
        prefix = f"master/frameworks/{ENCODED}/{fid}/"
        updates = events.counts["UPDATE"]

        snapshot = await _wait(master, lambda s: s.get(prefix + "calls/acknowledge") == updates)
        assert snapshot[prefix + "calls/subscribe"] == 1.0
        assert snapshot[prefix + "calls/accept"] == 1.0
        assert snapshot[prefix + "calls/kill"] == 1.0
        assert snapshot[prefix + "calls/message"] == 2.0
        assert snapshot[prefix + "calls"] == 1 + 1 + 1 + 2 + updates
        assert snapshot[prefix + "events/subscribed"] == 1.0
        assert snapshot[prefix + "events/update"] == updates
        # The freed resources may be offered again after the last event read here.
        assert snapshot[prefix + "events/offers"] >= events.counts["OFFERS"]
        assert snapshot[prefix + "offers/sent"] >= snapshot[prefix + "events/offers"]
        assert snapshot[prefix + "offers/accepted"] == 1.0
        assert snapshot[prefix + "offers/declined"] == 0.0
        assert snapshot[prefix + "tasks/terminal/task_failed"] == 1.0
        assert snapshot[prefix + "tasks/terminal/task_killed"] == 1.0
        assert snapshot[prefix + "tasks/terminal/task_finished"] == 0.0
        assert snapshot[prefix + "operations/launch"] == 2.0
        assert snapshot[prefix + "operations"] == 2.0
        assert snapshot["master/tasks_failed"] == 1.0 and snapshot["master/tasks_killed"] == 1.0
        for name in ("scheduled", "completed", "canceled"):
            assert snapshot[f"master/slave_unreachable_{name}"] == 0.0, name
        text = requests.get(master + "/metrics", timeout=10)
        assert text.status_code == 200 and "master_slave_unreachable_scheduled 0.0" in text.text

        after = await _wait(agent, lambda s: s["slave/invalid_framework_messages"] == 1.0)
        # Every update the framework heard went through the agent once (no retries here).
        assert after["slave/valid_status_updates"] == updates
        assert after["slave/invalid_status_updates"] == 0.0
        assert after["slave/valid_framework_messages"] == 1.0
        assert after["slave/executors_preempted"] == 0.0
        assert after["slave/recovery_time_secs"] == before["slave/recovery_time_secs"]

        # The periodic HEARTBEATs the master writes on the stream count too.
        await _wait(master, lambda s: s[prefix + "events/heartbeat"] >= 3.0)


@pytest.mark.cluster(master_flags=["--heartbeat_interval=0.3secs"])
def test_the_counted_mesos_metrics_are_served_after_real_tasks(cluster) -> None:
    asyncio.run(_scenario(cluster.master_url, cluster.agents[0].url))
