"""``--switch_user`` is on by default, as in Mesos: an agent started without isolation flags
runs a task as its framework's user; ``--no-switch_user`` runs it as the agent's."""

from __future__ import annotations

import os

import pytest
from test_agent_process import FRAMEWORK, AgentProcess, FakeMaster, run_scenario, sandbox, wait_for
from test_isolation import run_task

from butte.testing.require import require

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("flags", "expected"), [((), "nobody"), (("--no-switch_user",), "root")])
def test_tasks_run_as_their_frameworks_user_by_default(tmp_path, flags, expected):
    if os.geteuid() != 0:
        require("the test runs as root only (switching users)", "root")

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        nobody = {**FRAMEWORK, "user": "nobody"}
        await run_task(master, "who", "id -un > who; sleep 60", framework=nobody)
        who = sandbox(tmp_path, "who") / "who"
        await wait_for(lambda: who.exists() and who.read_text(), "the task ran", 20)
        assert who.read_text().strip() == expected

    run_scenario(tmp_path, scenario, agent_flags=flags)
