"""Command launcher tasks (docs/design.md "The command launcher") under the cgroup and pid
namespace isolators, with a real agent against the fake master of `test_agent_process`: the
task is pid 1 of its own pid namespace and the launcher's own child (no holder process),
kills end it as TASK_KILLED with a SIGTERM handler (which runs) or without one (at once),
and an OOM kill inside a task that goes on running fails it at once with the memory
limitation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import test_isolation as iso
from test_agent_process import AgentProcess, FakeMaster, process_gone, run_scenario, wait_for
from test_command_launcher import KILLING, _launcher_pid, _ppid, kill_task

pytestmark = pytest.mark.integration

cgroups_root = iso.cgroups_root  # the fixture
ISOLATED = "cgroups/cpu,cgroups/mem,cgroups/pids,namespaces/pid"
WAIT = 60.0  # generous: the machine running the tests may be loaded


def _nspid(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


def _members(root: str, container: str) -> list[int]:
    procs = iso.group(root, "memory", container) / "cgroup.procs"
    return [int(p) for p in procs.read_text().split()]


async def _killed(master: FakeMaster, task_id: str, message: str) -> None:
    """Kills the task with a grace period far longer than the wait: it ends by its handler,
    or at once."""
    started = time.monotonic()
    await kill_task(master, task_id, grace_ns=600_000_000_000)
    status = await wait_for(lambda: iso.terminal(master, task_id), "its kill", WAIT)
    assert status["state"] == "TASK_KILLED", status
    assert status["message"] == message
    assert time.monotonic() - started < WAIT


def test_a_pid_namespace_task_is_pid_1_and_the_launchers_own_child_and_kills_end_it(
    tmp_path, cgroups_root
):
    term = tmp_path / "term"
    # A SIGTERM handler: pid 1 of a namespace gets SIGTERM only through one.
    handles = f"trap 'echo term > {term}; exit 3' TERM; echo $$ > pid.txt; "
    handles += "while :; do sleep 0.05; done"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await iso.run_task(master, "ns", handles, framework=KILLING)
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("ns") and iso.container_of(master, "ns"),
            "running",
            WAIT,
        )
        box = tmp_path / "work"
        await wait_for(lambda: next(box.rglob("pid.txt"), None), "pid.txt", WAIT)
        pid_txt = next(box.rglob("pid.txt"))
        assert pid_txt.read_text().strip() == "1"  # its own view
        launcher = _launcher_pid(tmp_path / "work")
        # The launcher's child in the container's groups is the task itself, pid 1 of its
        # namespace: no holder process in between.
        children = [p for p in _members(cgroups_root, container) if _ppid(p) == launcher]
        assert len(children) == 1, children
        (task,) = children
        assert len(_nspid(task)) == 2 and _nspid(task)[-1] == "1", _nspid(task)
        await _killed(master, "ns", "Command exited with status 3")
        assert term.exists()
        await wait_for(lambda: process_gone(task), "the task gone", WAIT)

        # Without a handler the kernel drops SIGTERM to a namespace's init, where any other
        # process would end: the launcher ends it then, at once rather than after the grace,
        # and reports it ended by SIGTERM, as any other process would have (and as in Mesos,
        # where the task is not its namespace's init).
        await iso.run_task(master, "plain", "exec sleep 600", framework=KILLING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("plain"), "plain runs", WAIT)
        await _killed(master, "plain", "Command terminated with signal Terminated")

    run_scenario(tmp_path, scenario, agent_flags=iso.flags(cgroups_root, ISOLATED))


def test_an_oom_kill_inside_a_running_task_fails_it_at_once(tmp_path, cgroups_root):
    """The task's shell lives on after the OOM killer took its hog: only the kernel's OOM
    notification can end it, as the memory limitation, long before its own end."""
    hog = "head -c 600000000 /dev/zero | tail > /dev/null; exec sleep 600"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        started = time.monotonic()
        await iso.run_task(master, "oom", hog)
        status = await wait_for(lambda: iso.terminal(master, "oom"), "the OOM's report", WAIT)
        assert status["state"] == "TASK_FAILED", status
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY", status
        assert "Memory limit exceeded" in status["message"]
        assert time.monotonic() - started < WAIT

    run_scenario(tmp_path, scenario, agent_flags=iso.flags(cgroups_root, ISOLATED))


def test_a_pid_namespace_task_of_an_executor_process_ends_at_a_kill_without_a_handler(
    tmp_path, cgroups_root
):
    """Without the launcher the built-in executor runs the task through a holder, with the
    task as its namespace's init: a kill's SIGTERM, which the kernel drops there, still ends
    a task that has no handler at once; one with a handler runs it."""
    term, trapped = tmp_path / "term", tmp_path / "trapped"
    handles = (
        f"trap 'echo term > {term}; exit 3' TERM; touch {trapped}; while :; do sleep 0.05; done"
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await iso.run_task(master, "plain", "exec sleep 600", framework=KILLING)
        await iso.run_task(master, "handles", handles, framework=KILLING)
        for task in ("plain", "handles"):
            await wait_for(lambda t=task: "TASK_RUNNING" in master.states(t), task, WAIT)
        # TASK_RUNNING comes when the shell starts, before it has set its trap.
        await wait_for(trapped.exists, "the trap set", WAIT)
        await _killed(master, "plain", "Command terminated with signal Terminated")
        await _killed(master, "handles", "Command exited with status 3")
        assert term.exists()

    flags = (*iso.flags(cgroups_root, ISOLATED), "--command_launcher=false")
    run_scenario(tmp_path, scenario, agent_flags=flags)
