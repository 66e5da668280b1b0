"""Agent recovery in the core: what a checkpoint holds (`RecoveredState`, read from disk by
`butte.agent.checkpoint`) and how `AgentMachine` is rebuilt from it (`Recovery.recover`), plus
the small helpers that emit the checkpoint effects. A mixin of `AgentMachine`, pure like the
rest of the core.

Rebuilding (``--recover=reconnect``, Mesos' default)::

    framework.info             -> Framework (only checkpointing frameworks are on disk)
    executor.info + run.info   -> Executor in REGISTERING, ``recovered``; its process is alive
                                  (the shell checked) and must re-subscribe within
                                  --executor_reregistration_timeout, else its tasks go
                                  TASK_GONE (TASK_LOST if not partition-aware)
                                  its process is gone -> its tasks go TASK_FAILED
                                  never started (the agent died between checkpointing the
                                  launch and carrying it out) -> launched now, as it would
                                  have been (only while every task is still TASK_STAGING)
    task.info + task.updates   -> Task with the state of its last update; the status update
                                  stream replayed (UPDATE adds, ACK pops), so unacknowledged
                                  updates are resent after registration and resends of known
                                  uuids are recognised as duplicates
                                  a task still in TASK_STAGING is queued: delivered when the
                                  executor re-subscribes without listing it as unacknowledged
                                  (Mesos drops it as TASK_LOST; butte has the TaskInfo, so it
                                  delivers it - the executor never saw it)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from butte.agent import paths
from butte.agent.effects import CheckpointUpdate, Effect, RemoveCheckpoint
from butte.agent.launching import allocation_role
from butte.agent.records import DEFAULT, MAX_STATUSES_PER_TASK, Executor, Framework, Task
from butte.agent.status_updates import StatusUpdateStream
from butte.core import task_states as ts
from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus

if TYPE_CHECKING:
    # Typed against the interface of the whole core, which never imports this module.
    from butte.agent.core import AgentCore as _Base
else:
    _Base = object

REREGISTRATION_TIMER = "registration"  # shared with first registrations; the record tells


@dataclass(slots=True)
class RecoveredTask:
    """A checkpointed task: its TaskInfo and its update log."""

    info: TaskInfo
    updates: list[TaskStatus] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)  # acknowledged uuids, in order

    @property
    def id(self) -> str:
        return self.info.task_id.value


@dataclass(slots=True)
class RecoveredRun:
    """A checkpointed executor run (container) and its tasks. ``pid`` is the live process the
    shell found for it, or None if none is running."""

    framework_id: str
    executor_id: str
    container_id: str
    info: ExecutorInfo
    kind: str
    pid: int | None = None
    tasks: list[RecoveredTask] = field(default_factory=list)
    # Set by the shell: no process was ever started for this run (no pid checkpointed, no
    # sandbox), so the agent died between checkpointing the launch and carrying it out.
    never_started: bool = False


@dataclass(slots=True)
class RecoveredState:
    """Everything under ``meta/slaves/<agent_id>`` that could be read."""

    agent_id: str
    agent_info: dict[str, Any] | None = None
    frameworks: dict[str, FrameworkInfo] = field(default_factory=dict)
    runs: list[RecoveredRun] = field(default_factory=list)
    # What could not be read (logged by the shell; those parts are not recovered).
    problems: list[str] = field(default_factory=list)


class Recovery(_Base):
    """Rebuilding the core from a checkpoint, and the checkpoint effects; mixed into
    `AgentMachine`."""

    def recover(self, state: RecoveredState, now: float) -> list[Effect]:
        """Rebuilds frameworks, executors, tasks and update streams from ``state`` (see the
        module docstring). Call once, before the master connection opens."""
        self.agent_id = state.agent_id
        self._checkpointed_agent_id = state.agent_id
        for fid, info in state.frameworks.items():
            if info.id is not None and info.id.value == fid:
                self.frameworks[fid] = Framework(info)
        effects: list[Effect] = []
        dead: list[Executor] = []
        # Live runs first, so a stale run of the same executor id cannot take its place.
        for run in sorted(state.runs, key=lambda r: r.pid is None):
            fw = self.frameworks.get(run.framework_id)
            if fw is None or run.executor_id in fw.executors:
                effects.append(
                    RemoveCheckpoint(run.framework_id, run.executor_id, run.container_id)
                )
                continue
            ex, more = self._recover_run(fw, run, now)
            effects += more
            if run.pid is None and run.never_started and self._unstarted(ex):
                effects.append(self._relaunch(fw, ex, now))
            elif run.pid is None:
                dead.append(ex)
        for ex in dead:
            ex.pending_termination = (
                ts.FAILED,
                "REASON_EXECUTOR_TERMINATED",
                "Executor terminated while the agent was down",
            )
            effects += self._executor_terminated(ex, None, now)
        for fw in list(self.frameworks.values()):
            effects += self._cleanup_framework(fw)
        self._count("recovered_executors", len(state.runs) - len(dead))
        return effects

    def _recover_run(
        self, fw: Framework, run: RecoveredRun, now: float
    ) -> tuple[Executor, list[Effect]]:
        assert self.agent_id is not None
        sandbox = paths.sandbox_dir(
            self.config.work_dir, self.agent_id, fw.id, run.executor_id, run.container_id
        )
        ex = Executor(run.info, fw.id, run.container_id, sandbox, run.kind)
        ex.recovered = True
        ex.pid = run.pid
        fw.executors[ex.id] = ex
        self.containers[ex.container_id] = ex
        effects: list[Effect] = []
        staging: list[str] = []
        for recovered in run.tasks:
            task = Task(recovered.info, fw.id, ex.id, group=run.kind == DEFAULT)
            stream = self._replay(fw.id, recovered)
            for update in recovered.updates:
                stored = msgspec.structs.replace(update, data=None)
                ts.record_status(task.statuses, stored, MAX_STATUSES_PER_TASK)
            if task.statuses:
                task.state = task.statuses[-1].state
            if stream is not None and stream.done:
                ex.completed_tasks.append(task)  # acknowledged terminal: only the files left
                effects.append(RemoveCheckpoint(fw.id, ex.id, ex.container_id, task.id))
                continue
            ex.tasks[task.id] = task
            self.task_executor[(fw.id, task.id)] = ex
            if stream is not None:
                self._add_stream(stream)
            if task.state == ts.STAGING:
                staging.append(task.id)
            else:
                task.launched = True
        if staging:
            ex.queued = [staging] if run.kind == DEFAULT else [[tid] for tid in staging]
        if run.pid is not None:
            ex.registration_deadline = now + self.config.executor_reregistration_timeout
            self._push_timer(ex.registration_deadline, REREGISTRATION_TIMER, ex.container_id)
        return ex, effects

    @staticmethod
    def _unstarted(ex: Executor) -> bool:
        """Whether nothing of ``ex`` ever ran: every task still queued in TASK_STAGING."""
        queued = {tid for entry in ex.queued for tid in entry}
        return bool(ex.tasks) and all(
            t.state == ts.STAGING and not t.statuses and t.id in queued for t in ex.tasks.values()
        )

    def _relaunch(self, fw: Framework, ex: Executor, now: float) -> Effect:
        """Launches a checkpointed executor run that never started, as a new container
        with the same id (its checkpoint already describes it)."""
        ex.recovered = False
        tasks = [t.info for t in ex.tasks.values()]
        resources = [r for t in tasks for r in t.resources] + list(ex.info.resources)
        role = allocation_role(resources, fw.info)
        self._count("executors_relaunched")
        return self._register_launch(fw, ex, role, tasks, now)

    def _replay(self, framework_id: str, recovered: RecoveredTask) -> StatusUpdateStream | None:
        """The task's update stream as the log leaves it (None if it has no updates)."""
        if not recovered.updates:
            return None
        stream = StatusUpdateStream(
            framework_id,
            recovered.id,
            self.config.status_update_retry_interval_min,
            self.config.status_update_retry_interval_max,
        )
        for status in recovered.updates:
            if status.uuid is not None:
                stream.add(status)
        for uuid in recovered.acks:
            stream.ack(uuid)
        return stream

    def _claim_delivered(self, ex: Executor, known: set[str]) -> None:
        """A re-subscribing executor listed these task ids as its own: they were delivered
        before the agent restarted, so they leave the queue instead of going out again."""
        remaining: list[list[str]] = []
        for entry in ex.queued:
            for tid in entry:
                if tid in known:
                    ex.tasks[tid].launched = True
            left = [tid for tid in entry if tid not in known]
            if left:
                remaining.append(left)
        ex.queued = remaining

    # -- checkpoint effects ------------------------------------------------------------------

    def _checkpoint_record(
        self, fw: Framework, task_id: str, status: TaskStatus | None, ack: str | None
    ) -> list[Effect]:
        """An UPDATE or ACK record for the task's log, if the framework checkpoints."""
        if not fw.info.checkpoint:
            return []
        ex = self.task_executor.get((fw.id, task_id))
        if ex is None:
            return []
        return [CheckpointUpdate(fw.id, ex.id, ex.container_id, task_id, status, ack)]
