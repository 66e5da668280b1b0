"""The agent's in-process command executor for tasks the command launcher runs
(docs/design.md "The command launcher").

A plain command task (`direct_task` says which) gets no executor process: the launcher
(`butte.agent.executor.launcher`) starts the task itself, and a `LaunchedExecutor` in the
agent plays the part of its command executor. It makes the same executor API calls the
built-in executor makes (SUBSCRIBE, then UPDATEs with source SOURCE_EXECUTOR: TASK_STARTING,
TASK_RUNNING, TASK_KILLING when the framework wants it, and the terminal update with the
same messages) through the agent core, in-process instead of over HTTP, and takes the
events the core writes to an executor's stream (LAUNCH, KILL, ACKNOWLEDGED, SHUTDOWN)
through `put`. So checkpointing, retries, acknowledgements and the executor's records
(ExecutorInfo, executor id = task id, sandbox) are the core's, unchanged; only the process
that does the work differs. Once its terminal update is acknowledged the "executor" exits
with status 0, as the command executor does.

Recovery: after an agent restart the launcher reports which tasks still run and how the
others ended; `resume` re-subscribes with the task as unacknowledged (as a checkpointing
executor does) and then reports what the checkpoint lacks (TASK_RUNNING, the end). Kills
are the launcher's to finish (SIGTERM, then SIGKILL when the grace period ends), as the
command executor, which outlives its agent, finishes them: a task the old agent was
killing is still being killed, on the grace it was given, and ends TASK_KILLED whatever its
exit status, whether or not its framework was told TASK_KILLING.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from typing import Any, Protocol

from butte.agent.containerizer.launcher import LauncherRun
from butte.agent.effects import LaunchContainer
from butte.agent.executor.command import DEFAULT_KILL_GRACE, describe_exit, exit_state
from butte.agent.records import COMMAND, Executor
from butte.core import task_states as ts
from butte.core.container_info import image_of
from butte.core.messages import (
    ID,
    ExecutorCall,
    ExecutorSubscribe,
    ExecutorUpdate,
    KillPolicy,
    TaskInfo,
    TaskStatus,
)


def direct_task(spec: LaunchContainer, ex: Executor) -> TaskInfo | None:
    """The task of a container the launcher can run without an executor process: one plain
    command task (no health check, check, completion deadline, image, fetched URIs, task
    group or Docker). None: it needs the executor process."""
    if ex.kind != COMMAND or not spec.builtin or spec.containerizer != "mesos" or spec.fetch:
        return None
    if image_of(spec.container) is not None or len(ex.tasks) != 1:
        return None
    task = next(iter(ex.tasks.values()))
    info = task.info
    if task.group or info.command is None or info.executor is not None:
        return None
    if info.health_check is not None or info.check is not None:
        return None
    if info.max_completion_time is not None:
        return None
    return info


def grace_of(policy: KillPolicy | None) -> float | None:
    """Seconds of a KillPolicy's grace period (None: not given)."""
    if policy is None or policy.grace_period is None:
        return None
    return max(0.0, policy.grace_period.nanoseconds / 1e9)


class LaunchedShell(Protocol):
    """What a `LaunchedExecutor` needs of the agent shell."""

    def executor_call(self, call: ExecutorCall) -> Any: ...

    def subscribe_launched(self, executor: LaunchedExecutor, call: ExecutorCall) -> bool: ...

    def launcher_signal(self, container_id: str, number: int) -> None: ...

    def launcher_kill(self, container_id: str, grace: float) -> None: ...

    def launched_done(self, container_id: str) -> None: ...

    def launched_task_state(self, container_id: str, task_id: str) -> str | None: ...


class LaunchedExecutor:
    """The command executor of one launcher-run task, inside the agent (module docstring).
    It is also the task's executor "stream": the shell registers it where an HTTP
    executor's stream would be, and the core's events reach it through `put`."""

    def __init__(
        self,
        shell: LaunchedShell,
        loop: asyncio.AbstractEventLoop,
        container_id: str,
        framework_id: str,
        executor_id: str,
        task: TaskInfo,
        shutdown_grace: float,
    ) -> None:
        self.shell = shell
        self.loop = loop
        self.container_id = container_id
        self.framework_id = framework_id
        self.executor_id = executor_id
        self.task = task
        self.task_id = task.task_id.value
        self.shutdown_grace = shutdown_grace
        self.pid: int | None = None
        self.exit_status: int | None = None
        self.exited = False
        self.recovered = False
        self.launched = False  # the task is ours (LAUNCH, or re-subscribed with it)
        self.killed = False
        self.kill_deadline: float | None = None  # monotonic: when the launcher SIGKILLs it
        self.task_killing_state = False
        self.terminal_uuid: str | None = None
        self.finished = False

    # -- from the launcher (through the containerizer and the shell) -------------------------

    def started(self, pid: int) -> None:
        """The task's process runs: subscribe, as the executor would on its start."""
        self.pid = pid
        self._subscribe([])

    def resume(self, run: LauncherRun) -> None:
        """After an agent restart: the task runs, or ended meanwhile (the launcher's
        snapshot says which, and whether it was being killed)."""
        self.recovered = True
        self.pid = run.pid
        self.exited, self.exit_status = run.exit is not None, run.exit
        if run.killed:
            self.killed = True
            if run.kill_in is not None:
                self.kill_deadline = time.monotonic() + run.kill_in
        state = self.shell.launched_task_state(self.container_id, self.task_id)
        live = state is not None and not ts.is_terminal(state)
        self._subscribe([self.task] if live else [])

    def ended(self, status: int | None) -> None:
        """The task's process ended with raw wait ``status``."""
        self.exited, self.exit_status = True, status
        if self.launched:
            self._report_exit()
            return
        state = self.shell.launched_task_state(self.container_id, self.task_id)
        if state is None or ts.is_terminal(state):
            self._finish()  # the core ended it without us (killed before delivery)

    # -- the executor "stream": events from the core -------------------------------------------

    def put(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "SUBSCRIBED":
            info = event["subscribed"]["framework_info"]
            self.task_killing_state = info.has_capability("TASK_KILLING_STATE")
            if self.recovered and not self.launched:
                self._catch_up()
        elif kind == "LAUNCH":
            self._launch()
        elif kind == "KILL":
            kill = event.get("kill") or {}
            self.kill(grace_of(kill.get("kill_policy")))
        elif kind == "ACKNOWLEDGED":
            if event["acknowledged"]["uuid"] == self.terminal_uuid:
                self._finish()
        elif kind == "SHUTDOWN":
            if self.terminal_uuid is None and not self.exited:
                self.kill(max(0.0, self.shutdown_grace - 1.0))
            elif self.exited and not self.launched:
                self._finish()
        # MESSAGE: the command executor has nothing to do with framework messages.

    def close(self) -> None:
        """The core closed the stream (the executor terminated)."""

    def signalled(self, number: int) -> None:
        """An operator's KILL_CONTAINER is about to send ``number`` to the container. An
        executor process would get it too: SIGTERM or SIGINT makes the built-in executor shut
        down and kill its task (TASK_KILLED), so here they count as a kill of the task."""
        if number in (signal.SIGTERM, signal.SIGINT) and not self.exited:
            self.killed = True

    # -- the executor's work -------------------------------------------------------------------

    def _subscribe(self, unacknowledged: list[TaskInfo]) -> None:
        call = ExecutorCall(
            "SUBSCRIBE",
            ID(self.executor_id),
            ID(self.framework_id),
            subscribe=ExecutorSubscribe(unacknowledged_tasks=unacknowledged),
        )
        if not self.shell.subscribe_launched(self, call):
            # The core is done with this executor (it destroys the container): nothing to
            # report; the end comes from the launcher.
            self.launched = False
            if self.exited:
                self._finish()
            else:
                self._signal(signal.SIGKILL)

    def _launch(self) -> None:
        if self.launched:
            return
        self.launched = True
        self._update(ts.STARTING)
        if self.pid is not None:
            self._update(ts.RUNNING)
        if self.exited:
            self._report_exit()

    def _catch_up(self) -> None:
        """After a restart: what the checkpointed state lacks of what happened."""
        self.launched = True
        state = self.shell.launched_task_state(self.container_id, self.task_id)
        if state is None or ts.is_terminal(state):
            if self.exited:
                self._finish()
            else:
                self._signal(signal.SIGKILL)
            return
        if state == ts.STAGING:
            self._update(ts.STARTING)
            state = ts.STARTING
        if state == ts.STARTING:
            self._update(ts.RUNNING)
        if state == ts.KILLING and not self.killed:
            # TASK_KILLING was checkpointed but the launcher has no kill (the old agent died
            # before it asked, or a launcher of an older butte does not say): it starts now.
            self.kill(None)
            self.killed = True
        if self.exited:
            self._report_exit()

    def kill(self, grace: float | None) -> None:
        """The launcher SIGTERMs the task's process group and SIGKILLs it after the grace
        period: KILL's kill policy, the task's, or 3 seconds (TASK_KILLING first when the
        framework wants it, and the task is not already being killed)."""
        if self.terminal_uuid is not None or self.exited or self.pid is None:
            return
        if grace is None:
            grace = grace_of(self.task.kill_policy)
        if grace is None:
            grace = DEFAULT_KILL_GRACE
        deadline = time.monotonic() + grace
        if self.kill_deadline is not None and deadline >= self.kill_deadline:
            return  # a second kill may only shorten the grace
        self.kill_deadline = deadline
        if not self.killed:
            self.killed = True
            state = self.shell.launched_task_state(self.container_id, self.task_id)
            if self.task_killing_state and self.launched and state != ts.KILLING:
                self._update(ts.KILLING)
        self.shell.launcher_kill(self.container_id, grace)

    def _signal(self, number: int) -> None:
        if not self.exited:
            self.shell.launcher_signal(self.container_id, number)

    def _report_exit(self) -> None:
        if self.terminal_uuid is not None:
            return
        status = self.exit_status
        if status is None:
            state, message = ts.FAILED, "Command terminated (exit status unknown)"
        else:
            state, message = exit_state(status, self.killed), describe_exit(status)
        self._update(state, message)

    def _update(self, state: str, message: str | None = None) -> None:
        uuid = base64.b64encode(os.urandom(16)).decode()
        status = TaskStatus(
            task_id=self.task.task_id,
            state=state,
            message=message,
            source="SOURCE_EXECUTOR",
            timestamp=time.time(),
            uuid=uuid,
        )
        terminal = ts.is_terminal(state)
        if terminal:
            self.terminal_uuid = uuid
        call = ExecutorCall(
            "UPDATE",
            ID(self.executor_id),
            ID(self.framework_id),
            update=ExecutorUpdate(status),
        )
        reply = self.shell.executor_call(call)
        if terminal and not 200 <= reply.status < 300:
            self._finish()  # refused for good: nothing to wait for

    def _finish(self) -> None:
        """The executor's work is over: it "exits" 0 (once the task's process is gone)."""
        if self.finished:
            return
        self.finished = True
        self.shell.launched_done(self.container_id)
