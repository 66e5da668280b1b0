"""stdout/stderr rotation (``--container_logger=logrotate``) by the log rotator process
(butte/agent/executor/rotator.py), with a real agent: rotation goes on while the agent is
down, the restarted agent adopts the same rotator (one rotates, no copy is made twice and
no line is lost), a rotator that dies is replaced, an agent with the sandbox logger stops a
leftover one, and a graceful shutdown stops it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from test_agent_process import (
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    process_gone,
    run_scenario,
    sandbox,
    wait_for,
)

pytestmark = pytest.mark.integration

FW = {**FRAMEWORK, "checkpoint": True}  # its tasks outlive the agent
MAX = 8 * 1024
# 1,001-byte numbered lines, about 15 to 20 KB a second.
CHATTY = "i=0; while :; do i=$((i+1)); printf 'line-%06d-%0988d\\n' $i 0; sleep 0.05; done"
FLAGS = (
    "--container_logger",
    "logrotate",
    "--logrotate_max_stdout_size",
    "8KB",
    "--logrotate_stdout_options",
    "rotate 200",
)
# What a file may hold past its maximum: up to a second (the check interval) of output, and
# a loaded machine's delay.
MARGIN = 48 * 1024


def rotator_pid(work: Path) -> int | None:
    """The pid in the rotator's lock file, if the process lives."""
    try:
        pid = int((work / "rotator.lock").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return None if process_gone(pid) else pid


def rotators(work: Path) -> list[int]:
    """Every live rotator process of this work dir (by command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if (
            any(b"butte.agent.executor.rotator" in a for a in argv)
            and os.fsencode(str(work)) in argv
            and not process_gone(int(entry))
        ):
            found.append(int(entry))
    return found


def first_line(path: Path) -> int | None:
    """The number of the first line of a rotated copy (None: no copy yet)."""
    try:
        with open(path, "rb") as f:
            head = f.read(11)
    except FileNotFoundError:
        return None
    return int(head[5:11]) if head.startswith(b"line-") else None


def kept_lines(box: Path) -> list[bytes]:
    """Every line kept, oldest first: stdout.N .. stdout.1, then stdout."""
    names = sorted(
        (p for p in box.iterdir() if p.name.startswith("stdout.") and p.name[7:].isdigit()),
        key=lambda p: -int(p.name[7:]),
    )
    data = b"".join(p.read_bytes() for p in [*names, box / "stdout"])
    return data.splitlines()


async def rerun(agent: AgentProcess, master: FakeMaster) -> None:
    """Starts the agent again and waits for its re-registration."""
    before = len(master.of_type("REGISTER_AGENT"))
    await agent.start()
    await wait_for(
        lambda: [m for m in master.of_type("REGISTER_AGENT")[before:] if "id" in m["agent_info"]],
        "re-registration",
        30,
    )


def test_rotation_goes_on_while_the_agent_is_down_and_the_next_agent_adopts_it(tmp_path):
    work = tmp_path / "work"
    seen: dict[str, int] = {}

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("chatty", CHATTY, framework=FW)
        await wait_for(lambda: "TASK_RUNNING" in master.states("chatty"), "TASK_RUNNING", 20)
        box = sandbox(tmp_path, "chatty")
        await wait_for(lambda: first_line(box / "stdout.1"), "a first rotation", 20)
        pid = rotator_pid(work)
        assert pid is not None and rotators(work) == [pid]
        seen["rotator"] = pid

        await agent.kill()  # SIGKILL: the task and the rotator run on
        rotated = first_line(box / "stdout.1")
        await wait_for(
            lambda: (first_line(box / "stdout.1") or 0) > (rotated or 0),
            "a rotation while the agent is down",
            10,
        )
        for _ in range(10):  # stdout stays near its maximum while nobody else rotates
            assert (box / "stdout").stat().st_size <= MAX + MARGIN
            await asyncio.sleep(0.3)
        rotated = first_line(box / "stdout.1")

        await rerun(agent, master)
        register = [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]]
        assert [t["task_id"]["value"] for t in register[-1]["tasks"]] == ["chatty"]
        await wait_for(lambda: "adopted the log rotator" in agent.logs(), "the adoption", 10)
        await wait_for(
            lambda: (first_line(box / "stdout.1") or 0) > (rotated or 0),
            "a rotation after the restart",
            10,
        )
        await asyncio.sleep(2.5)  # more rotations: by one rotator only
        assert rotators(work) == [pid] and rotator_pid(work) == pid
        assert (box / "stdout").stat().st_size <= MAX + MARGIN

        kill = {"framework_id": FW["id"], "task_id": {"value": "chatty"}}
        await master.send({"type": "KILL_TASK", **kill})
        await wait_for(lambda: "TASK_KILLED" in master.states("chatty"), "TASK_KILLED", 20)
        lines = kept_lines(box)
        # Whole lines, numbered without a gap or a repeat from the first: no copy was made
        # twice and none was lost, across the agent's death and its successor's adoption.
        assert all(len(line) == 1000 and line.startswith(b"line-") for line in lines)
        numbers = [int(line[5:11]) for line in lines]
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(numbers) * 1001 > 5 * MAX  # several rotations happened

    run_scenario(tmp_path, scenario, agent_flags=FLAGS)
    # The graceful shutdown (SIGUSR1) killed the task and stopped its rotation.
    assert process_gone(seen["rotator"])


def test_a_dead_rotator_is_replaced_and_a_sandbox_logger_agent_stops_a_leftover(tmp_path):
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("chatty", CHATTY, framework=FW)
        box = sandbox(tmp_path, "chatty")
        await wait_for(lambda: first_line(box / "stdout.1"), "a first rotation", 20)
        old = rotator_pid(work)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        new = await wait_for(
            lambda: (pid := rotator_pid(work)) is not None and pid != old and pid,
            "a new rotator",
            10,
        )
        rotated = first_line(box / "stdout.1")
        await wait_for(
            lambda: (first_line(box / "stdout.1") or 0) > (rotated or 0),
            "rotation by the new rotator",
            10,
        )
        assert rotators(work) == [new]

        # SIGTERM leaves everything running; the next run rotates nothing and so must not
        # leave the old rotator rotating.
        assert await agent.stop(number=signal.SIGTERM) == 0
        assert rotator_pid(work) == new
        agent.argv = [a for a in agent.argv if a not in FLAGS]
        await rerun(agent, master)
        await wait_for(lambda: process_gone(new), "the leftover rotator's exit", 10)
        assert rotators(work) == []
        size = (box / "stdout").stat().st_size
        await wait_for(
            lambda: (box / "stdout").stat().st_size > max(size, MAX + MARGIN),
            "stdout growing unrotated",
            10,
        )

    run_scenario(tmp_path, scenario, agent_flags=FLAGS)


def test_an_agent_with_the_sandbox_logger_starts_no_rotator(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("quiet", "echo hello; sleep 30")
        await wait_for(lambda: "TASK_RUNNING" in master.states("quiet"), "TASK_RUNNING", 20)
        await asyncio.sleep(1.5)
        assert not (tmp_path / "work" / "rotator.sock").exists()
        assert rotators(tmp_path / "work") == []

    run_scenario(tmp_path, scenario)


def test_recover_cleanup_stops_the_rotator_with_the_containers(tmp_path):
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("chatty", CHATTY, framework=FW)
        box = sandbox(tmp_path, "chatty")
        await wait_for(lambda: first_line(box / "stdout.1"), "a first rotation", 20)
        pid = rotator_pid(work)
        assert pid is not None
        assert await agent.stop(number=signal.SIGTERM) == 0
        assert rotator_pid(work) == pid
        agent.argv = [*agent.argv, "--recover", "cleanup"]
        await agent.start()
        assert agent.proc is not None
        await asyncio.wait_for(agent.proc.wait(), 30)
        await wait_for(lambda: process_gone(pid), "the rotator's exit", 10)
        assert rotators(work) == []

    run_scenario(tmp_path, scenario, agent_flags=FLAGS)
