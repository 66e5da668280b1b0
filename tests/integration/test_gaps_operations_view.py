"""GET_OPERATIONS of the master and of the agent under ``view_roles`` (``--acls``), as Mesos
answers it: a principal sees only the operations whose consumed resources it may view. Two
frameworks, of roles 'a' and 'b', each RESERVE with an operation id on a real master and
agent over HTTP and leave the status unacknowledged (so both keep listing the operation)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import requests

from butte.client.scheduler import SchedulerClient
from butte.core.auth import basic_header
from butte.testing.cluster import daemons_missing, start_cluster
from butte.testing.require import require

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-g1", "alice": "alice-Secret-g2", "carol": "carol-Secret-g3"}
ACLS = {
    "view_roles": [
        {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}},
        {"principals": {"values": ["alice"]}, "roles": {"values": ["a"]}},
        {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
    ]
}


def _framework(role: str) -> dict[str, Any]:
    return {
        "name": f"gaps-{role}",
        "user": "root",
        "roles": [role],
        "capabilities": [{"type": "MULTI_ROLE"}],
        "failover_timeout": 600.0,
    }


async def _reserve(client: SchedulerClient, role: str) -> None:
    """Takes an offer and RESERVEs one cpu of it for ``role`` with the id ``reserve-<role>``;
    waits for OPERATION_FINISHED (not acknowledged)."""
    deadline = time.monotonic() + 60
    while True:
        event = await client.next_event(max(0.1, deadline - time.monotonic()))
        assert event is not None, "the subscription ended"
        if event["type"] == "OFFERS":
            offers = event["offers"]["offers"]
            cpus = {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 1},
                "reservations": [{"type": "DYNAMIC", "role": role}],
                "allocation_info": {"role": role},
            }
            operation = {
                "type": "RESERVE",
                "id": {"value": f"reserve-{role}"},
                "reserve": {"resources": [cpus]},
            }
            await client.accept([offers[0]["id"]], [operation], refuse_seconds=600.0)
            await client.decline([o["id"] for o in offers[1:]], 600.0)
        elif event["type"] == "UPDATE_OPERATION_STATUS":
            status = event["update_operation_status"]["status"]
            assert status["state"] == "OPERATION_FINISHED", status
            return


def _operations(url: str, principal: str) -> list[str]:
    """The ids of the operations GET_OPERATIONS lists for ``principal``."""
    answer = requests.post(
        url + "/api/v1",
        json={"type": "GET_OPERATIONS"},
        headers={"Authorization": basic_header(principal, SECRETS[principal])},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return sorted(o["info"]["id"]["value"] for o in answer.json()["get_operations"]["operations"])


async def _scenario(url: str, agent_url: str) -> None:
    async with (
        SchedulerClient(url, _framework("a")) as first,
        SchedulerClient(url, _framework("b")) as second,
    ):
        await asyncio.gather(_reserve(first, "a"), _reserve(second, "b"))
        for where in (url, agent_url):
            assert await asyncio.to_thread(_operations, where, "ops") == [
                "reserve-a",
                "reserve-b",
            ]
            assert await asyncio.to_thread(_operations, where, "alice") == ["reserve-a"]
            assert await asyncio.to_thread(_operations, where, "carol") == []


def test_get_operations_lists_only_the_operations_on_roles_a_principal_may_view(tmp_path):
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    flags = [
        "--authenticate_http_readonly",
        "--authenticate_http_readwrite",
        f"--credentials={creds}",
        f"--acls={json.dumps(ACLS)}",
    ]
    with start_cluster(
        tmp_path / "cluster",
        master_flags=flags,
        agent_flags=[*flags[:2], f"--http_credentials={creds}", flags[3]],
        http_auth=("ops", SECRETS["ops"]),
    ) as cluster:
        asyncio.run(_scenario(cluster.master_url, cluster.agents[0].url))
