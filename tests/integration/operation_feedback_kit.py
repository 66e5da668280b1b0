"""A framework (`butte.client.scheduler.SchedulerClient`, real HTTP) that makes a RESERVE
with an operation id and leaves its status unacknowledged while the master fails over or
restarts; shared by the standalone restart test (tests/integration/test_operation_feedback.py)
and the ZooKeeper failover test (tests/ha/test_operation_feedback_ha.py)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from butte.client.scheduler import SchedulerClient

ROLE = "ops"
OP_ID = "reserve-1"
RESERVED_CPUS = {
    "name": "cpus",
    "type": "SCALAR",
    "scalar": {"value": 1},
    "reservations": [{"type": "DYNAMIC", "role": ROLE}],
}
FRAMEWORK = {
    "name": "operation-feedback",
    "roles": [ROLE],
    "capabilities": [{"type": "MULTI_ROLE"}],
    "failover_timeout": 3600.0,
    "checkpoint": True,
}


def operator_call(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/api/v1",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_operations(url: str) -> list[dict[str, Any]]:
    return operator_call(url, {"type": "GET_OPERATIONS"})["get_operations"]["operations"]


async def _next(client: SchedulerClient, kind: str, timeout: float = 60.0) -> dict[str, Any]:
    """The next event of ``kind`` (offers met on the way are declined)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await client.next_event(max(0.1, deadline - time.monotonic()))
        assert event is not None, "the subscription ended"
        if event["type"] == kind:
            return event
        if event["type"] == "OFFERS":
            await client.decline([o["id"] for o in event["offers"]["offers"]], 1.0)


async def _op_status(client: SchedulerClient, timeout: float = 60.0) -> dict[str, Any]:
    event = await _next(client, "UPDATE_OPERATION_STATUS", timeout)
    return event["update_operation_status"]["status"]


async def _quiet(client: SchedulerClient, seconds: float) -> list[dict[str, Any]]:
    """Operation statuses that arrive within ``seconds``."""
    seen = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await client.next_event(left)
        except TimeoutError:
            break
        assert event is not None
        if event["type"] == "UPDATE_OPERATION_STATUS":
            seen.append(event["update_operation_status"]["status"])
        elif event["type"] == "OFFERS":
            await client.decline([o["id"] for o in event["offers"]["offers"]], 1.0)
    return seen


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


async def reserve_fail_over_and_acknowledge(
    master: str,
    fail_over: Callable[[], None],
    leader_url: Callable[[], str],
    agent_work_dir: Path,
    agent_url: str | None = None,
) -> None:
    """The scenario: RESERVE with an id, no acknowledgement (the agent resends the status),
    ``fail_over()``; after re-subscribing the framework hears the status again, the new
    leader's GET_OPERATIONS lists it and RECONCILE_OPERATIONS answers it; acknowledging it
    stops the resends and the agent forgets it (its own GET_OPERATIONS, at ``agent_url``,
    lists it until then)."""
    kept = agent_work_dir / "meta" / "operations" / "operations.info"
    async with SchedulerClient(master, FRAMEWORK, retry_timeout=90.0) as client:
        offers = (await _next(client, "OFFERS"))["offers"]["offers"]
        offer = offers[0]
        agent_id = offer["agent_id"]["value"]
        reserve = {"type": "RESERVE", "id": {"value": OP_ID}}
        reserve["reserve"] = {"resources": [{**RESERVED_CPUS, "allocation_info": {"role": ROLE}}]}
        await client.accept([offer["id"]], [reserve], refuse_seconds=1.0)
        await client.decline([o["id"] for o in offers[1:]], 1.0)
        first = await _op_status(client)
        assert first["state"] == "OPERATION_FINISHED", first
        assert first["operation_id"] == {"value": OP_ID} and first["agent_id"]["value"] == agent_id
        # Not acknowledged: the agent keeps it (checkpointed) and sends it again.
        again = await _op_status(client, 30.0)
        assert again == first
        assert OP_ID in kept.read_text()

        await asyncio.to_thread(fail_over)
        await _next(client, "SUBSCRIBED", 90.0)  # re-subscribed with the new master
        resent = await _op_status(client, 60.0)
        assert resent == first, (resent, first)
        url = leader_url()
        [listed] = await asyncio.to_thread(
            _wait, lambda: get_operations(url), 30.0, "GET_OPERATIONS listing the operation"
        )
        assert listed["info"]["id"] == {"value": OP_ID}
        assert listed["framework_id"] == {"value": client.framework_id}
        assert listed["agent_id"] == {"value": agent_id}
        assert listed["latest_status"] == first and listed["uuid"] == first["uuid"]
        if agent_url is not None:
            [held] = get_operations(agent_url)
            assert {k: held[k] for k in listed} == listed, (held, listed)
        await client.reconcile_operations(
            [{"operation_id": {"value": OP_ID}, "agent_id": {"value": agent_id}}]
        )
        while True:  # a resend may come before the reconciliation's answer (no uuid)
            answer = await _op_status(client, 30.0)
            if "uuid" not in answer:
                break
        assert answer["state"] == "OPERATION_FINISHED" and answer["operation_id"]["value"] == OP_ID

        await client.acknowledge_operation_status(agent_id, first["uuid"]["value"], OP_ID)
        await asyncio.to_thread(
            _wait, lambda: not get_operations(url), 30.0, "the operation forgotten by the master"
        )
        await asyncio.to_thread(
            _wait, lambda: json.loads(kept.read_text()) == [], 30.0, "the agent forgetting it"
        )
        if agent_url is not None:
            assert get_operations(agent_url) == []
        # Acknowledged: no more resends (they came every second or two before). A resend the
        # master forwarded before it took the acknowledgement may still be on its way here.
        await _quiet(client, 0.5)
        assert await _quiet(client, 3.0) == []
