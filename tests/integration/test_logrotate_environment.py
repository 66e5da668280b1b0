"""A container's own log rotation (Mesos' logrotate logger reads ``CONTAINER_LOGGER_*`` from
the container's CommandInfo environment) with a real agent: a task's variables override the
agent's ``--logrotate_*`` flags; an invalid one fails the launch."""

from __future__ import annotations

import pytest
from test_agent_process import (
    AID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    run_scenario,
    sandbox,
    wait_for,
)
from test_isolation import run_task, terminal

pytestmark = pytest.mark.integration

# 20 lines of 1,001 bytes, then a marker file.
CHATTY = (
    "for i in $(seq 1 20); do printf 'line-%04d-%0990d\\n' $i 0; done; "
    "sleep 1.5; echo done > finished; sleep 60"
)


def env(**variables: str) -> dict:
    return {"variables": [{"name": k, "value": v} for k, v in variables.items()]}


def test_a_tasks_environment_overrides_the_agents_rotation(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        own = env(
            CONTAINER_LOGGER_MAX_STDOUT_SIZE="4KB",
            CONTAINER_LOGGER_LOGROTATE_STDOUT_OPTIONS="rotate 1",
        )
        await run_task(master, "own", CHATTY, environment=own)
        await run_task(master, "default", CHATTY)
        bad = env(CONTAINER_LOGGER_MAX_STDERR_SIZE="lots")
        await run_task(master, "bad", "true", environment=bad)
        failed = await wait_for(lambda: terminal(master, "bad"), "bad's end", 20)
        assert (failed["state"], failed["reason"]) == (
            "TASK_FAILED",
            "REASON_CONTAINER_LAUNCH_FAILED",
        )
        assert "CONTAINER_LOGGER_MAX_STDERR_SIZE" in failed["message"]
        boxes = {t: sandbox(tmp_path, t) for t in ("own", "default")}
        for task, box in boxes.items():
            await wait_for(lambda box=box: (box / "finished").exists(), f"{task} written", 30)
        # 20,020 bytes: over the task's 4KB, under the agent's 64KB.
        own_box = boxes["own"]
        await wait_for(lambda: (own_box / "stdout.1").exists(), "own's rotation", 10)
        assert not (own_box / "stdout.2").exists()  # rotate 1
        assert not (boxes["default"] / "stdout.1").exists()
        assert (boxes["default"] / "stdout").stat().st_size == 20_020

    flags = ("--container_logger", "logrotate", "--logrotate_max_stdout_size", "64KB")
    flags += ("--logrotate_stdout_options", "rotate 3")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_each_task_group_member_rotates_by_its_own_tasks_environment(tmp_path):
    """In Mesos each member is a nested container whose logger reads its own CommandInfo, so
    a member's variables apply to its logs alone; an invalid one fails the group's launch."""

    def member(task_id: str, environment: dict | None = None) -> dict:
        command: dict = {"value": CHATTY}
        if environment is not None:
            command["environment"] = environment
        return {"name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": AID}} | {
            "command": command
        }

    def group(executor_id: str, *members: dict) -> dict:
        return {
            "type": "RUN_TASK_GROUP",
            "framework": FRAMEWORK,
            "executor": {"executor_id": {"value": executor_id}, "type": "DEFAULT"},
            "task_group": {"tasks": list(members)},
        }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        own = env(CONTAINER_LOGGER_MAX_STDOUT_SIZE="4KB")
        await master.send(group("g1", member("own", own), member("plain")))
        bad = env(CONTAINER_LOGGER_LOGROTATE_STDOUT_OPTIONS="compress")
        await master.send(group("g2", member("fine"), member("bad", bad)))
        failed = await wait_for(lambda: terminal(master, "bad"), "bad's end", 20)
        assert (failed["state"], failed["reason"]) == (
            "TASK_FAILED",
            "REASON_CONTAINER_LAUNCH_FAILED",
        )
        assert "task bad" in failed["message"]
        assert "CONTAINER_LOGGER_LOGROTATE_STDOUT_OPTIONS" in failed["message"]
        assert terminal(master, "fine")["state"] == "TASK_FAILED"  # the group goes as one
        tasks = sandbox(tmp_path, "g1") / "tasks"
        for task in ("own", "plain"):
            await wait_for(lambda t=task: (tasks / t / "finished").exists(), f"{task}", 30)
        await wait_for(lambda: (tasks / "own" / "stdout.1").exists(), "own's rotation", 10)
        # 20,020 bytes: over its own 4KB, under the agent's 64KB.
        assert not (tasks / "plain" / "stdout.1").exists()
        assert (tasks / "plain" / "stdout").stat().st_size == 20_020

    flags = ("--container_logger", "logrotate", "--logrotate_max_stdout_size", "64KB")
    run_scenario(tmp_path, scenario, agent_flags=flags)
