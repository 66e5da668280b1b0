"""Operation feedback survives a standalone master restart (docs/reservations.md): a
framework's unacknowledged RESERVE status is kept by the agent, reported when it
re-registers with the restarted master, sent to the re-subscribed framework again, listed
by GET_OPERATIONS and answered by RECONCILE_OPERATIONS; acknowledging it stops the resends.
The scenario is in tests/integration/operation_feedback_kit.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.operation_feedback_kit import reserve_fail_over_and_acknowledge

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_unacknowledged_operation_status_survives_a_standalone_master_restart(cluster):
    def restart() -> None:
        cluster.master.kill()  # a crash: nothing is handed over
        cluster.master.restart()

    asyncio.run(
        reserve_fail_over_and_acknowledge(
            cluster.master_address,
            restart,
            lambda: cluster.master_url,
            cluster.agents[0].work_dir,
            cluster.agents[0].url,
        )
    )


@pytest.mark.timeout(180)
def test_the_agent_reports_its_checkpointed_operation_after_both_crash(cluster):
    """The master and the agent crash together: the restarted agent reads the operation back
    from its checkpoint and reports it to the restarted master."""

    def crash_both() -> None:
        cluster.master.kill()
        cluster.agents[0].kill()
        cluster.master.restart()
        cluster.agents[0].restart()

    asyncio.run(
        reserve_fail_over_and_acknowledge(
            cluster.master_address,
            crash_both,
            lambda: cluster.master_url,
            cluster.agents[0].work_dir,
        )
    )
