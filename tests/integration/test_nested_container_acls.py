"""The agent's --acls guard its nested container calls as Mesos' agent does (docs/exec.md
"Authorization"): each call's action, with the user the top-level container's executor runs
as for object; a refused call gets 403 and starts, signals or removes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_agent_process import FakeMaster, wait_for
from test_nested_recovery import Agent, run_with_restartable_agent
from test_standalone_containers import call

ANY = {"type": "ANY"}


def rules(**actions: dict[str, Any]) -> str:
    """``--acls`` with one rule per action (any principal, the given users) and nothing
    else allowed."""
    return json.dumps(
        {
            "permissive": False,
            **{action: [{"principals": ANY, "users": users}] for action, users in actions.items()},
            # What the scenario needs besides (reading the containers).
            "view_containers": [{"principals": ANY, "users": ANY}],
            "view_frameworks": [{"principals": ANY, "users": ANY}],
            "view_executors": [{"principals": ANY, "users": ANY}],
            "view_tasks": [{"principals": ANY, "users": ANY}],
        }
    )


async def running_parent(master: FakeMaster, agent: Agent) -> str:
    """A task's container (its framework's user: root) to nest under; its id."""
    await master.run_task("box", "exec sleep 60")
    await wait_for(lambda: "TASK_RUNNING" in master.states("box"), "the task running")
    ((parent_id, _),) = (await agent.nested()).items()
    return parent_id


def nested(parent_id: str, name: str) -> dict[str, Any]:
    return {"container_id": {"value": name, "parent": {"value": parent_id}}}


def test_nested_container_calls_are_checked_against_the_parents_user(tmp_path: Path) -> None:
    acls = rules(
        launch_nested_containers={"values": ["root"]},  # the parent runs as root: allowed
        wait_nested_containers={"values": ["someone-else"]},  # refused
        kill_nested_containers={"type": "NONE"},  # refused
    )

    async def scenario(master: FakeMaster, _process: Any, agent: Agent) -> None:
        parent_id = await running_parent(master, agent)
        launch = {**nested(parent_id, "inner"), "command": {"value": "exec sleep 30"}}
        status, text = await call(agent, "LAUNCH_NESTED_CONTAINER", launch)
        assert status == 200, text
        status, text = await call(agent, "WAIT_NESTED_CONTAINER", nested(parent_id, "inner"))
        assert status == 403 and "containers root (wait_nested_containers)" in text, text
        status, text = await call(agent, "KILL_NESTED_CONTAINER", nested(parent_id, "inner"))
        assert status == 403 and "kill_nested_containers" in text, text
        assert "inner" in await agent.nested()  # the refused kill signalled nothing
        status, text = await call(agent, "REMOVE_NESTED_CONTAINER", nested(parent_id, "inner"))
        assert status == 403 and "remove_nested_containers" in text, text  # no rule: refused

    run_with_restartable_agent(tmp_path / "work", scenario, "--acls", acls)


def test_a_refused_nested_launch_starts_nothing(tmp_path: Path) -> None:
    acls = rules(launch_nested_containers={"values": ["someone-else"]})

    async def scenario(master: FakeMaster, _process: Any, agent: Agent) -> None:
        parent_id = await running_parent(master, agent)
        launch = {**nested(parent_id, "inner"), "command": {"value": "exec sleep 30"}}
        status, text = await call(agent, "LAUNCH_NESTED_CONTAINER", launch)
        assert status == 403 and "containers root (launch_nested_containers)" in text, text
        status, text = await call(agent, "LAUNCH_CONTAINER", launch)
        assert status == 403, text
        assert "inner" not in await agent.nested()

    run_with_restartable_agent(tmp_path / "work", scenario, "--acls", acls)
