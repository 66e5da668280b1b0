"""Agent recovery with a real agent process against the fake master of `test_agent_process`:
unacknowledged updates survive a SIGKILL (they were checkpointed before ACKNOWLEDGED) and are
resent under the same uuid; executors that died or hang while the agent was down; a
checkpoint from another boot and ``--recover=cleanup`` start a new agent and kill what ran."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from test_agent_process import (
    AID,
    FID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    process_gone,
    run_scenario,
    wait_for,
)

from butte.cli.local import free_port

CHECKPOINTING = {**FRAMEWORK, "checkpoint": True}


def fixed_port() -> tuple[str, ...]:
    """A port of our own: executors find a restarted agent at the same address."""
    return ("--port", str(free_port()))


def reregistrations(master: FakeMaster) -> list[dict]:
    return [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]]


async def pid_of(path: Path) -> int:
    await wait_for(lambda: path.exists() and path.read_text().strip(), f"pid in {path}")
    return int(path.read_text())


def test_unacknowledged_updates_survive_an_agent_sigkill(tmp_path):
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        command = f"echo $$ > {pid_file}; exec sleep 60"
        await master.run_task("k1", command, framework=CHECKPOINTING)
        # Nothing acknowledged: TASK_STARTING is the update in flight, TASK_RUNNING queued.
        await wait_for(lambda: len(master.updates("k1")) >= 2, "STARTING resent")
        starting = master.updates("k1")[0]
        pid = await pid_of(pid_file)
        await agent.kill()
        assert not process_gone(pid)
        before = len(master.updates("k1"))
        await agent.start()
        register = await wait_for(lambda: reregistrations(master), "re-registration")
        assert register[0]["agent_info"]["id"] == {"value": AID}
        (task,) = register[0]["tasks"]
        assert task["status_update_uuid"] == starting["uuid"]
        await wait_for(lambda: len(master.updates("k1")) > before, "resent after restart")
        assert master.updates("k1")[before]["uuid"] == starting["uuid"]
        master.auto_ack = True
        await master.ack(starting)
        await wait_for(lambda: "TASK_RUNNING" in master.states("k1"), "the queued RUNNING")
        assert master.states("k1") == ["TASK_STARTING", "TASK_RUNNING"]
        assert not process_gone(pid)

    run_scenario(tmp_path, scenario, auto_ack=False, agent_flags=fixed_port())


def test_executor_gone_or_hung_while_the_agent_was_down(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        for task_id in ("dead", "hung"):
            await master.run_task(task_id, "sleep 60", framework=CHECKPOINTING)
        await wait_for(
            lambda: all("TASK_RUNNING" in master.states(t) for t in ("dead", "hung")), "running"
        )
        executors = {}
        for task_id in ("dead", "hung"):
            running = next(s for s in master.updates(task_id) if s["state"] == "TASK_RUNNING")
            executors[task_id] = running["container_status"]["executor_pid"]
        await agent.kill()
        os.killpg(executors["dead"], signal.SIGKILL)
        os.kill(executors["hung"], signal.SIGSTOP)
        await agent.start()
        await wait_for(lambda: "TASK_FAILED" in master.states("dead"), "dead executor's task")
        failed = master.updates("dead")[-1]
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED"
        assert failed["message"] == "Executor terminated while the agent was down"
        await wait_for(lambda: "TASK_LOST" in master.states("hung"), "hung executor's task", 15)
        lost = master.updates("hung")[-1]
        assert lost["reason"] == "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
        await wait_for(lambda: process_gone(executors["hung"]), "hung executor destroyed")

    # Executor processes (the command launcher's tasks have none: tests of their own).
    flags = (*fixed_port(), "--executor_reregistration_timeout=1secs", "--command_launcher=false")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def first_registrations(master: FakeMaster) -> list[dict]:
    return [m for m in master.of_type("REGISTER_AGENT") if "id" not in m["agent_info"]]


def change_boot_id(work_dir: Path) -> None:
    (work_dir / "meta" / "boot_id").write_text("00000000-0000-0000-0000-000000000000\n")


def recovery_refused(tmp_path: Path, flags: tuple[str, ...], meddle) -> None:
    """Runs a checkpointed task, SIGKILLs the agent, ``meddle``s, restarts it with ``flags``:
    it must register as a new agent and kill the old task."""
    pid_file = tmp_path / "pid"
    port = fixed_port()

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("o1", f"echo $$ > {pid_file}; exec sleep 60", framework=CHECKPOINTING)
        pid = await pid_of(pid_file)
        await agent.kill()
        meddle(tmp_path / "work")
        agent.argv += list(flags)
        await agent.start()
        await wait_for(lambda: process_gone(pid), "old task killed")
        await wait_for(lambda: len(first_registrations(master)) == 2, "a new registration")
        assert not reregistrations(master)

    run_scenario(tmp_path, scenario, agent_flags=port)


def test_checkpoint_from_another_boot_starts_a_new_agent(tmp_path):
    recovery_refused(tmp_path, (), change_boot_id)


def test_recover_cleanup_kills_everything_and_exits(tmp_path):
    """Mesos: ``--recover=cleanup`` kills the old executors and exits; the next start is a
    new agent."""
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("o1", f"echo $$ > {pid_file}; exec sleep 60", framework=CHECKPOINTING)
        pid = await pid_of(pid_file)
        await agent.kill()
        plain = list(agent.argv)
        agent.argv += ["--recover=cleanup"]
        await agent.start()
        assert agent.proc is not None
        assert await asyncio.wait_for(agent.proc.wait(), 30) == 0
        assert process_gone(pid)
        assert len(first_registrations(master)) == 1 and not reregistrations(master)
        agent.argv = plain
        await agent.start()
        await wait_for(lambda: len(first_registrations(master)) == 2, "a new registration")
        assert not reregistrations(master)

    run_scenario(tmp_path, scenario, agent_flags=fixed_port())


async def start_refused(agent: AgentProcess, *flags: str) -> str:
    """Starts the agent with ``flags`` added; it must refuse to start (exit status 1). Its
    log; the agent's flags are as before afterwards."""
    plain = list(agent.argv)
    agent.argv = plain + list(flags)
    try:
        await agent.start()
        assert agent.proc is not None
        assert await asyncio.wait_for(agent.proc.wait(), 30) == 1
    finally:
        agent.argv = plain
    return agent.logs()


def test_changed_resources_or_attributes_refuse_the_recovery(tmp_path):
    """Mesos' --reconfiguration_policy=equal: an agent restarted with other resources or
    attributes does not recover (and does not take its old id with a config its master and
    frameworks never saw); with the flags it had it recovers its running task."""
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("r1", f"echo $$ > {pid_file}; exec sleep 60", framework=CHECKPOINTING)
        pid = await pid_of(pid_file)
        await agent.kill()
        for changed in (["--attributes", "rack:r9"], ["--resources", "cpus:2;mem:1024"]):
            log = await start_refused(agent, *changed)
            assert "incompatible agent info" in log and "rm -f " in log
            assert not process_gone(pid)
        await agent.start()
        await wait_for(lambda: reregistrations(master), "re-registered with its old id")
        assert not process_gone(pid)

    run_scenario(tmp_path, scenario, agent_flags=fixed_port())


def test_strict_refuses_a_damaged_checkpoint_and_the_default_recovers_the_rest(tmp_path):
    """Mesos' --strict: a checkpoint problem stops the start and the executors keep running
    for the operator; without it (butte's default) the agent recovers what it can read."""
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("d1", f"echo $$ > {pid_file}; exec sleep 60", framework=CHECKPOINTING)
        pid = await pid_of(pid_file)
        await agent.kill()
        (framework,) = (tmp_path / "work" / "meta" / "slaves" / "latest").glob("frameworks/*")
        (framework / "framework.info").write_text("{not json")
        log = await start_refused(agent, "--strict")
        assert "Failed to perform recovery (--strict)" in log and "framework.info" in log
        assert not process_gone(pid)
        await agent.start()
        # The framework cannot be read, so neither can its executor: killed as an orphan.
        await wait_for(lambda: process_gone(pid), "the unrecoverable task killed")
        await wait_for(lambda: reregistrations(master), "re-registered with its old id")

    run_scenario(tmp_path, scenario, agent_flags=fixed_port())


@pytest.mark.parametrize("launcher", [True, False])
def test_sigterm_ends_the_agent_and_leaves_checkpointed_tasks_to_the_next_start(tmp_path, launcher):
    """As with Mesos' agent killed for an upgrade: SIGTERM ends the process without
    unregistering; a checkpointing framework's task runs on and the next start recovers
    it; a task of a framework that does not checkpoint ends with its agent."""
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("k", f"echo $$ > {kept}; exec sleep 100", framework=CHECKPOINTING)
        other = {**FRAMEWORK, "id": {"value": "not-checkpointing"}}
        await master.run_task("d", f"echo $$ > {dropped}; exec sleep 100", framework=other)
        for task_id in ("k", "d"):
            await wait_for(lambda t=task_id: "TASK_RUNNING" in master.states(t), task_id)
        kept_pid, dropped_pid = int(kept.read_text()), int(dropped.read_text())
        assert await agent.stop(number=signal.SIGTERM) == 0
        assert not master.of_type("UNREGISTER_AGENT")
        await wait_for(lambda: process_gone(dropped_pid), "the unchecked task ended", 10.0)
        assert not process_gone(kept_pid)
        await agent.start()
        register = await wait_for(
            lambda: [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]],
            "re-registration with the old id",
        )
        assert [t["task_id"]["value"] for t in register[-1]["tasks"]] == ["k"]
        assert not process_gone(kept_pid)

    flags = [] if launcher else ["--command_launcher=false"]
    run_scenario(tmp_path, scenario, agent_flags=[*fixed_port(), *flags])


def test_checkpoint_layout_and_cleanup(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("c1", "sleep 0.2", framework=CHECKPOINTING)
        meta = tmp_path / "work" / "meta" / "slaves"
        # A command task's run is in the agent's journal (butte/agent/paths.py).
        journal = meta / AID / "command-runs.log"
        await wait_for(lambda: journal.exists() and b'"type":"PID"' in journal.read_bytes(), "pid")
        assert (meta / "latest").resolve().name == AID
        assert (meta / AID / "slave.info").exists()
        assert (meta / AID / "frameworks" / FID / "framework.info").exists()
        assert b'"type":"EXECUTOR"' in journal.read_bytes()
        assert not (meta / AID / "frameworks" / FID / "executors").exists()
        await wait_for(lambda: "TASK_FINISHED" in master.states("c1"), "finished")
        # Everything of a finished, acknowledged task and its framework is forgotten: the
        # run's end and the framework's tree, by one rename into the trash, which the
        # agent's trash thread then empties.
        await wait_for(lambda: not (meta / AID / "frameworks" / FID).exists(), "cleaned up")
        assert b'"type":"END"' in journal.read_bytes()
        trash = tmp_path / "work" / "meta" / "trash"
        await wait_for(lambda: trash.is_dir() and not any(trash.iterdir()), "trash emptied")
        await master.run_task("n1", "true")  # not checkpointing: nothing written
        await wait_for(lambda: "TASK_FINISHED" in master.states("n1"), "n1 finished")
        assert not (meta / AID / "frameworks" / FID).exists()

    run_scenario(tmp_path, scenario)
