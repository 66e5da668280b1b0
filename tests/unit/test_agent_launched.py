"""The in-agent command executor of launcher-run tasks (`butte.agent.launched`) against the
pure agent core (tests/unit/agent_kit.py): which tasks the launcher may run, the updates it
makes (as the built-in executor's), kills with their grace period, recovery catch-up."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from agent_kit import FID, Harness, command_task, framework, run

from butte.agent.containerizer.launcher import LauncherRun
from butte.agent.effects import SendToExecutor
from butte.agent.launched import LaunchedExecutor, direct_task
from butte.core import internal
from butte.core.messages import ExecutorCall


class FakeShell:
    """What the agent shell does for a LaunchedExecutor, around the core harness."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.streams: dict[str, LaunchedExecutor] = {}
        self.signals: list[tuple[str, int]] = []
        self.kills: list[tuple[str, float]] = []  # (container, grace) asked of the launcher
        self.done: list[str] = []

    def deliver(self, effects: list) -> None:
        for effect in effects:
            if isinstance(effect, SendToExecutor) and effect.container_id in self.streams:
                self.streams[effect.container_id].put(effect.event)
            else:
                self.h.apply([effect])

    def executor_call(self, call: ExecutorCall) -> Any:
        reply = self.h.agent.executor_call(call, self.h.now())
        self.deliver(reply.effects)
        return reply

    def subscribe_launched(self, executor: LaunchedExecutor, call: ExecutorCall) -> bool:
        reply = self.h.agent.executor_call(call, self.h.now())
        if reply.status != 200:
            return False
        self.streams[executor.container_id] = executor
        self.deliver(reply.effects)
        return True

    def launcher_signal(self, container_id: str, number: int) -> None:
        self.signals.append((container_id, number))

    def launcher_kill(self, container_id: str, grace: float) -> None:
        self.kills.append((container_id, grace))

    def launched_done(self, container_id: str) -> None:
        self.done.append(container_id)
        self.deliver(self.h.agent.container_exited(container_id, 0, self.h.now()))

    def launched_task_state(self, container_id: str, task_id: str) -> str | None:
        ex = self.h.agent.containers.get(container_id)
        task = ex.tasks.get(task_id) if ex is not None else None
        return task.state if task is not None else None


def launched(h: Harness, task_id: str = "t1", fw=None, **extra: Any):
    h.register()
    run(h, command_task(task_id, **extra), fw)
    (cid,) = [c for c, e in h.launched.items() if e.executor_id == task_id]
    ex = h.agent.containers[cid]
    shell = FakeShell(h)
    info = direct_task(h.launched[cid], ex)
    assert info is not None
    loop = asyncio.new_event_loop()
    executor = LaunchedExecutor(shell, loop, cid, FID, task_id, info, 5.0)
    return shell, executor, cid, loop


def states(h: Harness, task_id: str = "t1") -> list[str]:
    return [s.state for s in h.updates() if s.task_id.value == task_id]


def ack_all(h: Harness) -> None:
    for _ in range(5):
        for status in list(h.updates()):
            if status.uuid is not None:
                h.ack(status)


def test_which_tasks_the_launcher_runs():
    h = Harness()
    h.register()
    cases = {
        "plain": ({}, True),
        "health": ({"health_check": {"type": "COMMAND", "command": {"value": "true"}}}, False),
        "check": ({"check": {"type": "COMMAND", "command": {"command": {"value": "true"}}}}, False),
        "deadline": ({"max_completion_time": {"nanoseconds": 10**9}}, False),
        "image": (
            {
                "container": {
                    "type": "MESOS",
                    "mesos": {"image": {"type": "DOCKER", "docker": {"name": "x"}}},
                }
            },
            False,
        ),
        "uris": ({"command": {"value": "true", "uris": [{"value": "http://127.0.0.1/x"}]}}, False),
    }
    for task_id, (extra, expected) in cases.items():
        run(h, command_task(task_id, **extra))
        (cid,) = [c for c, e in h.launched.items() if e.executor_id == task_id]
        assert (direct_task(h.launched[cid], h.agent.containers[cid]) is not None) == expected, (
            task_id
        )


def test_updates_are_the_command_executors_and_it_exits_after_the_ack():
    h = Harness()
    shell, executor, cid, loop = launched(h)
    h.apply(h.agent.container_started(cid, 4242, h.now()))
    executor.started(4242)
    ack_all(h)
    assert states(h) == ["TASK_STARTING", "TASK_RUNNING"]
    running = h.updates()[-1]
    assert running.source == "SOURCE_EXECUTOR" and running.executor_id.value == "t1"
    assert running.container_status["executor_pid"] == 4242
    executor.ended(3 << 8)  # exit status 3
    ack_all(h)
    assert states(h) == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
    assert h.updates()[-1].message == "Command exited with status 3"
    assert shell.done == [cid]
    assert cid not in h.agent.containers  # the executor "exited"
    loop.close()


def killed(
    h: Harness, killing_state: bool = True
) -> tuple[FakeShell, Any, str, asyncio.AbstractEventLoop]:
    """A launched task with a 50 ms kill policy (of a TASK_KILLING_STATE framework unless
    ``killing_state`` is False), just KILLed: the launcher was asked to kill it."""
    caps = [{"type": "TASK_KILLING_STATE"}] if killing_state else []
    fw = framework(capabilities=caps)
    shell, executor, cid, loop = launched(
        h, fw=fw, kill_policy={"grace_period": {"nanoseconds": 50_000_000}}
    )
    executor.started(4242)
    ack_all(h)
    kill = internal.KillTask(framework_id=framework().id, task_id=h.updates()[0].task_id)
    shell.deliver(h.agent.handle_master(kill, h.now()))
    assert shell.kills == [(cid, 0.05)] and shell.signals == []
    return shell, executor, cid, loop


def test_a_kill_goes_to_the_launcher_with_the_policy_grace_after_killing_state():
    h = Harness()
    shell, executor, cid, loop = killed(h)
    again = internal.KillTask(framework_id=framework().id, task_id=h.updates()[0].task_id)
    shell.deliver(h.agent.handle_master(again, h.now()))
    assert shell.kills == [(cid, 0.05)]  # a second kill with the same grace changes nothing
    executor.ended(signal.SIGKILL)
    ack_all(h)
    assert states(h)[-2:] == ["TASK_KILLING", "TASK_KILLED"]
    assert h.updates()[-1].message == "Command terminated with signal Killed"
    loop.close()


def test_an_end_before_the_launch_event_is_reported_in_order():
    h = Harness()
    shell, executor, cid, loop = launched(h)
    executor.pid = 4242
    executor.ended(0)  # not subscribed yet: nothing to say until LAUNCH
    assert states(h) == []
    executor.started(4242)
    ack_all(h)
    assert states(h) == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert os.WIFEXITED(0)
    loop.close()


def killing(h: Harness, killing_state: bool = True) -> tuple[FakeShell, str]:
    """A launched task with a 50 ms kill policy, KILLed (TASK_KILLING checkpointed when the
    framework wants it); its executor then goes with the agent."""
    shell, _, cid, loop = killed(h, killing_state)
    ack_all(h)
    assert states(h)[-1] == ("TASK_KILLING" if killing_state else "TASK_RUNNING")
    loop.close()
    return shell, cid


def recovered(shell: FakeShell, cid: str, run: LauncherRun) -> LaunchedExecutor:
    """The in-agent executor the next agent makes for the task, as `resume` after recovery."""
    info = direct_task(shell.h.launched[cid], shell.h.agent.containers[cid])
    assert info is not None
    loop = asyncio.new_event_loop()
    executor = LaunchedExecutor(shell, loop, cid, FID, "t1", info, 5.0)
    executor.resume(run)
    return executor


def test_a_kill_under_way_at_a_restart_is_the_launchers_and_ends_task_killed():
    """The command executor outlives its agent and keeps its kill's timer and "killed" flag
    (Mesos src/launcher/executor.cpp kill() and reaped()); here the launcher does: the next
    agent asks nothing more of it, and the task ends TASK_KILLED even for an exit status of
    0, also for a framework that was never told TASK_KILLING."""
    for killing_state in (True, False):
        h = Harness()
        shell, cid = killing(h, killing_state)
        executor = recovered(shell, cid, LauncherRun(4242, None, killed=True, kill_in=0.03))
        assert shell.kills == [(cid, 0.05)] and shell.signals == []
        retry = internal.KillTask(framework_id=framework().id, task_id=h.updates()[0].task_id)
        shell.deliver(h.agent.handle_master(retry, h.now()))
        assert shell.kills == [(cid, 0.05)]  # the launcher's SIGKILL comes sooner already
        executor.ended(0)
        ack_all(h)
        assert states(h)[-1] == "TASK_KILLED", killing_state
        assert h.updates()[-1].message == "Command exited with status 0"
        executor.loop.close()


def test_a_task_that_exits_0_while_its_kill_spans_a_restart_is_killed():
    for killing_state in (True, False):
        h = Harness()
        shell, cid = killing(h, killing_state)
        # It ended while the agent was away.
        executor = recovered(shell, cid, LauncherRun(4242, 0, killed=True))
        ack_all(h)
        assert states(h)[-1] == "TASK_KILLED", killing_state
        assert h.updates()[-1].message == "Command exited with status 0"
        assert shell.kills == [(cid, 0.05)] and shell.done == [cid]
        executor.loop.close()


def test_killing_checkpointed_but_never_sent_to_the_launcher_starts_the_kill_on_recovery():
    """The old agent checkpointed TASK_KILLING and died before the launcher had the kill
    (or the launcher is of an older butte, which does not say): the kill starts now."""
    h = Harness()
    shell, cid = killing(h)
    executor = recovered(shell, cid, LauncherRun(4242, None))
    assert shell.kills == [(cid, 0.05), (cid, 0.05)]
    executor.ended(0)
    ack_all(h)
    assert states(h)[-2:] == ["TASK_KILLING", "TASK_KILLED"]
    executor.loop.close()
