"""Operation feedback survives a master failover with ZooKeeper (docs/reservations.md): a
framework's unacknowledged RESERVE status, kept by the agent, reaches the framework again
through the new leader, which lists it in GET_OPERATIONS and answers RECONCILE_OPERATIONS
for it; acknowledging it stops the resends (tests/integration/operation_feedback_kit.py)."""

from __future__ import annotations

import asyncio

import pytest

from butte.testing.require import require_module
from tests.integration.operation_feedback_kit import reserve_fail_over_and_acknowledge

pytestmark = [pytest.mark.ha, pytest.mark.integration]
require_module("kazoo")


@pytest.mark.timeout(180)
def test_unacknowledged_operation_status_survives_master_failover(ha_cluster_factory):
    cluster = ha_cluster_factory(zk_size=1, masters=2, agents=1)
    leader = cluster.masters.wait_leader(30)
    leaders = {"now": leader}

    def fail_over() -> None:
        cluster.masters.kill(leader)
        leaders["now"] = cluster.masters.wait_leader(30, exclude=leader)

    asyncio.run(
        reserve_fail_over_and_acknowledge(
            cluster.zk_url,
            fail_over,
            lambda: f"http://{cluster.masters.addresses[leaders['now']]}",
            cluster.directory / "agent-0",
        )
    )
