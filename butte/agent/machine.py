"""The agent core: a synchronous state machine fed events, returning effects.

Events come from the master (`handle_master`), from executors through the executor HTTP API
(`executor_call`, `executor_disconnected`), from the containerizer (`container_started`,
`container_failed`, `container_exited`) and from the clock (`tick` at `next_deadline`). Each
returns a list of `butte.agent.effects` for the shell to carry out. Nothing here touches a
socket, file, process, event loop or clock: ``now`` (epoch seconds) is always passed in, and
ids/uuids come from injectable generators so tests are deterministic.

Flow of one command task::

    RUN_TASK -> LaunchContainer (executor queued in REGISTERING)
    executor SUBSCRIBE -> SUBSCRIBED + LAUNCH to the executor (RUNNING)
    executor UPDATE -> STATUS_UPDATE to the master (one in flight per task, retried) and
                       ACKNOWLEDGED to the executor
    master STATUS_UPDATE_ACK -> next update of the task goes out; after the terminal one the
                       task is completed
    container exit -> TASK_FAILED for tasks left unfinished; executor TERMINATED and removed
"""

from __future__ import annotations

import base64
import heapq
import itertools
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from butte.agent import volumes
from butte.agent.core import AgentConfig
from butte.agent.effects import (
    CheckpointAgent,
    CheckpointFramework,
    CheckpointOperations,
    CheckpointPid,
    CheckpointResources,
    CloseExecutorStream,
    DestroyContainer,
    Effect,
    ExecutorRemoved,
    RemoveCheckpoint,
    SendToExecutor,
    SendToMaster,
    StopAgent,
)
from butte.agent.executor_api import ExecutorApi, Reply, limitation_info
from butte.agent.invariants import check_agent_invariants
from butte.agent.launch_events import REGISTRATION_TIMER, LaunchEvents
from butte.agent.launching import (
    exit_message,
    shutdown_grace_period,
)
from butte.agent.operation_updates import OperationStatusBook
from butte.agent.records import (
    COMMAND,
    FRAMEWORK_TERMINATING,
    MAX_COMPLETED_FRAMEWORKS,
    MAX_STATUSES_PER_TASK,
    REGISTERING,
    RUNNING,
    TERMINATED,
    TERMINATING,
    Executor,
    Framework,
    Task,
)
from butte.agent.recovery import Recovery
from butte.agent.status_updates import StatusUpdateStream
from butte.core import internal
from butte.core import task_states as ts
from butte.core.flags import duration_text
from butte.core.messages import ID, ExecutorInfo, TaskStatus
from butte.core.resources import ResourceError, Resources

__all__ = ["AgentConfig", "AgentMachine", "Reply", "REPORT_COMMAND_EXECUTOR_EXITS"]

# Mesos reports only custom executors' exits to the master (command executors are generated
# by the agent and unknown to the master); flip this to report every executor.
REPORT_COMMAND_EXECUTOR_EXITS = False

_STREAM_TIMER = "stream"
_REGISTRATION_TIMER = REGISTRATION_TIMER
_SHUTDOWN_TIMER = "shutdown"
_OPERATION_TIMER = "operation"


def _new_container_id() -> str:
    return str(uuid.uuid4())


def _new_status_uuid() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


class AgentMachine(ExecutorApi, LaunchEvents, Recovery):
    """The agent's frameworks, executors, tasks and status update streams; see module doc."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        new_container_id: Callable[[], str] = _new_container_id,
        new_status_uuid: Callable[[], str] = _new_status_uuid,
    ) -> None:
        self.config = config
        self.agent_id: str | None = None
        self.master_id: str | None = None
        self.connected = False
        self.registered = False
        self.stopping = False
        self.disk_problem: str | None = None
        self.frameworks: dict[str, Framework] = {}
        self.completed_frameworks: deque[Framework] = deque(maxlen=MAX_COMPLETED_FRAMEWORKS)
        self.containers: dict[str, Executor] = {}
        self.task_executor: dict[tuple[str, str], Executor] = {}
        self.streams: dict[tuple[str, str], StatusUpdateStream] = {}
        self.counters: dict[str, int] = {}
        self._streams_per_framework: dict[str, int] = {}
        self._timers: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._new_container_id = new_container_id
        self._new_status_uuid = new_status_uuid
        self._resources_json = config.resources.to_json("endpoint")
        self._declared_json = self._resources_json
        self._executor_agent_info: dict[str, Any] | None = None
        self._checkpointed_agent_id: str | None = None
        # Custom executor exits seen while not registered: reported at the next registration.
        self._unreported_exits: list[internal.ExecutorExited] = []
        # Offer operations with an id awaiting acknowledgement (butte.agent.operation_updates).
        self.operation_book = OperationStatusBook(
            config.status_update_retry_interval_min, config.status_update_retry_interval_max
        )
        self._operation_timer: float | None = None
        self._master_handlers: dict[type, Callable[[Any, float], list[Effect]]] = {
            internal.AgentRegistered: self._registered,
            internal.AgentReregistered: self._registered,
            internal.RunTask: self._run_task,
            internal.RunTaskGroup: self._run_task_group,
            internal.KillTask: self._kill_task,
            internal.StatusUpdateAck: self._status_update_ack,
            internal.Ping: lambda msg, now: [SendToMaster(internal.Pong())],
            internal.ShutdownFramework: self._shutdown_framework,
            internal.ShutdownExecutor: self._shutdown_executor_message,
            internal.FrameworkToExecutor: self._framework_message,
            internal.UpdateFramework: self._update_framework,
            internal.ShutdownAgent: self._shutdown_agent,
            internal.CheckpointResources: self._checkpoint_resources,
            internal.ApplyOperation: self._apply_operation,
            internal.OperationStatusAck: self._operation_status_ack,
        }

    def recover_resources(self, resources: list[dict[str, Any]]) -> None:
        """The total checkpointed by the last CHECKPOINT_RESOURCES (read at start, already
        checked against ``--resources``): what the agent registers with."""
        self._resources_json = resources

    def total_resources(self) -> Resources:
        """The agent's total now: ``--resources`` with the master's offer operations
        (dynamic reservations, volumes) applied."""
        if self._resources_json is self._declared_json:
            return self.config.resources
        try:
            return Resources.from_json(self._resources_json)
        except ResourceError:  # the master checked it; keep the view usable regardless
            return self.config.resources

    def _checkpoint_resources(self, msg: internal.CheckpointResources, now: float) -> list[Effect]:
        """The master applied offer operations: the new total is checkpointed and reported
        from now on; volumes no longer in it are removed."""
        work_dir = self.config.work_dir
        before = volumes.volumes(work_dir, self._resources_json)
        after = volumes.volumes(work_dir, msg.resources)
        gone = set(before) - set(after)
        roots = volumes.mount_roots(work_dir, self._resources_json)
        self._resources_json = list(msg.resources)
        return [
            CheckpointResources(
                list(msg.resources),
                removed=tuple(sorted(gone - roots)),
                emptied=tuple(sorted(gone & roots)),
            )
        ]

    # -- operation status updates (butte.agent.operation_updates) -------------------------------

    def recover_operations(self, reports: list[internal.OperationReport]) -> None:
        """The operations checkpointed before a restart: reported at re-registration."""
        self.operation_book.recover(reports)

    def _apply_operation(self, msg: internal.ApplyOperation, now: float) -> list[Effect]:
        """The master applied an operation with an id here: kept, and its status resent
        until acknowledged."""
        if not self.operation_book.add(msg.operation, now):
            return []
        self._arm_operation_retry()
        return [self._checkpoint_operations()]

    def _operation_status_ack(self, msg: internal.OperationStatusAck, now: float) -> list[Effect]:
        book = self.operation_book
        if not book.acknowledge(msg.framework_id.value, msg.operation_id.value, msg.uuid):
            return []
        return [self._checkpoint_operations()]

    def _checkpoint_operations(self) -> CheckpointOperations:
        reports = self.operation_book.reports()
        return CheckpointOperations([msgspec.to_builtins(r) for r in reports])

    def _arm_operation_retry(self) -> None:
        when = self.operation_book.next_deadline()
        if when is not None and (self._operation_timer is None or when < self._operation_timer):
            self._operation_timer = when
            self._push_timer(when, _OPERATION_TIMER, when)

    def _resend_operations(self, now: float) -> list[Effect]:
        self._operation_timer = None
        due = self.operation_book.due(now)
        self._arm_operation_retry()
        if not self.registered:
            return []  # the registration reports them all
        return [SendToMaster(internal.OperationStatusUpdate(operation=r)) for r in due]

    def disk_space(self, problem: str | None, now: float) -> list[Effect]:
        """The work dir's free space went under (``problem`` says how) or back over the
        minimum: new launches fail with TASK_FAILED while it is low, before a checkpoint
        write finds no space and everything behind it has to wait (docs/reliability.md "A
        full disk on the agent")."""
        self.disk_problem = problem
        return []

    # -- master connection -------------------------------------------------------------------

    def master_connected(self, now: float) -> list[Effect]:
        """A new master connection opened: (re-)register."""
        self.connected = True
        self.registered = False
        return [SendToMaster(self.register_message())]

    def master_disconnected(self, now: float) -> list[Effect]:
        """The master connection closed: hold updates until the next registration."""
        self.connected = False
        self.registered = False
        return []

    def handle_master(self, message: internal.MasterMessage, now: float) -> list[Effect]:
        """One message from the master."""
        return self._master_handlers[type(message)](message, now)

    def register_message(self) -> internal.RegisterAgent:
        """REGISTER_AGENT with everything the master must learn again after a reconnect."""
        tasks: list[internal.Task] = []
        executors: list[ExecutorInfo] = []
        for fw in self.frameworks.values():
            for ex in fw.executors.values():
                if ex.kind != COMMAND and ex.state != TERMINATED:
                    executors.append(ex.info)
                tasks.extend(self._task_report(fw, ex, t) for t in ex.tasks.values())
        return internal.RegisterAgent(
            agent_info=self.agent_info(),
            version=self.config.version,
            frameworks=[fw.info for fw in self.frameworks.values()],
            executors=executors,
            tasks=tasks,
            operations=self.operation_book.reports() if self.agent_id is not None else [],
        )

    def agent_info(self) -> internal.AgentInfo:
        """This agent's AgentInfo (with its id once registered)."""
        return internal.AgentInfo(
            hostname=self.config.hostname,
            port=self.config.port,
            resources=self._resources_json,
            attributes=[a.to_json() for a in self.config.attributes],
            id=ID(self.agent_id) if self.agent_id is not None else None,
            domain=self.config.domain,
        )

    def _task_report(self, fw: Framework, ex: Executor, task: Task) -> internal.Task:
        stream = self.streams.get((fw.id, task.id))
        head = stream.head if stream is not None else None
        info = task.info
        return internal.Task(
            name=info.name,
            task_id=info.task_id,
            framework_id=ID(fw.id),
            agent_id=ID(self.agent_id or ""),
            state=task.state,
            resources=info.resources,
            executor_id=ex.info.executor_id if ex.kind != COMMAND else None,
            statuses=task.statuses,
            status_update_state=head.state if head is not None else None,
            status_update_uuid=head.uuid if head is not None else None,
            labels=info.labels,
            discovery=info.discovery,
            container=info.container,
            health_check=info.health_check,
            kill_policy=info.kill_policy,
            user=fw.info.user,
        )

    def _registered(
        self, msg: internal.AgentRegistered | internal.AgentReregistered, now: float
    ) -> list[Effect]:
        self.agent_id = msg.agent_id.value
        self.master_id = msg.master_id
        self.registered = True
        effects: list[Effect] = []
        if self._checkpointed_agent_id != self.agent_id:
            # Before anything is launched under this id: recovery must find it.
            self._checkpointed_agent_id = self.agent_id
            info = msgspec.to_builtins(self.agent_info())
            effects.append(CheckpointAgent(self.agent_id, info))
        if self.operation_book.keep_agent(self.agent_id):
            effects.append(self._checkpoint_operations())
        self.operation_book.rearm(now)
        self._arm_operation_retry()
        for exited in self._unreported_exits:
            effects.append(SendToMaster(exited))
        self._unreported_exits.clear()
        # Everything unacknowledged goes out again on the new connection.
        for stream in self.streams.values():
            stream.rewind()
            effects += self._flush(stream, now)
        return effects

    # -- killing and shutting down ---------------------------------------------------------

    def _kill_task(self, msg: internal.KillTask, now: float) -> list[Effect]:
        fid, tid = msg.framework_id.value, msg.task_id.value
        fw = self.frameworks.get(fid)
        if fw is None or fw.state == FRAMEWORK_TERMINATING:
            return []
        ex = self.task_executor.get((fid, tid))
        if ex is None:
            if (fid, tid) in self.streams:
                return []  # the agent already made this task terminal
            lost = ts.DROPPED if fw.info.has_capability("PARTITION_AWARE") else ts.LOST
            return self._orphan_update(
                fw, tid, lost, "REASON_EXECUTOR_TERMINATED", "Cannot find executor", now
            )
        task = ex.tasks[tid]
        if ts.is_terminal(task.state):
            return []
        task.draining = task.draining or msg.draining
        if not task.launched:
            return self._kill_queued(fw, ex, tid, now)
        kill: dict[str, Any] = {"task_id": msg.task_id}
        if msg.kill_policy is not None:
            kill["kill_policy"] = msg.kill_policy
        if ex.state == RUNNING:
            return [SendToExecutor(ex.container_id, {"type": "KILL", "kill": kill})]
        if ex.state == REGISTERING and ex.recovered:
            # The master reaches a restarted agent before its executors re-subscribe (Mesos'
            # agent registers only after them): the kill waits for the executor, not lost.
            ex.pending_kills[tid] = kill
        return []

    def _kill_queued(self, fw: Framework, ex: Executor, task_id: str, now: float) -> list[Effect]:
        """Kill of a task its executor has not been given: TASK_KILLED without launching (a
        whole task group goes together), and the executor goes if nothing is left for it."""
        entry = next(e for e in ex.queued if task_id in e)
        ex.queued.remove(entry)
        effects: list[Effect] = []
        # Mesos' Slave::kill words it so for a group, whose members all go.
        message = (
            "A task within the task group was killed before delivery to the executor"
            if len(entry) > 1
            else "Killed before delivery to the executor"
        )
        for tid in entry:
            effects += self._agent_update(
                fw, ex, ex.tasks[tid], ts.KILLED, "REASON_TASK_KILLED_DURING_LAUNCH", message, now
            )
        if ex.state == REGISTERING and not ex.queued and not ex.live_tasks():
            ex.move(TERMINATING)
            effects.append(DestroyContainer(ex.container_id, 0.0))
        return effects

    def _shutdown_framework(self, msg: internal.ShutdownFramework, now: float) -> list[Effect]:
        fw = self.frameworks.get(msg.framework_id.value)
        if fw is None:
            return []
        fw.state = FRAMEWORK_TERMINATING
        # A terminating framework acknowledges nothing: drop its pending updates (Mesos too).
        for key in [k for k in self.streams if k[0] == fw.id]:
            self._drop_stream(key)
        effects: list[Effect] = []
        for ex in list(fw.executors.values()):
            effects += self._shutdown_executor(fw, ex, now)
            self._sweep_terminal_tasks(ex)
            effects += self._cleanup_executor(ex)
        effects += self._cleanup_framework(fw)
        return effects

    def _shutdown_executor_message(
        self, msg: internal.ShutdownExecutor, now: float
    ) -> list[Effect]:
        fw = self.frameworks.get(msg.framework_id.value)
        ex = fw.executors.get(msg.executor_id.value) if fw is not None else None
        if fw is None or ex is None:
            return []
        return self._shutdown_executor(fw, ex, now)

    def _shutdown_executor(self, fw: Framework, ex: Executor, now: float) -> list[Effect]:
        """SHUTDOWN to a subscribed executor and destroy after its grace period; an executor
        that has not subscribed is destroyed at once."""
        if ex.state == REGISTERING:
            ex.move(TERMINATING)
            return [DestroyContainer(ex.container_id, 0.0)]
        if ex.state != RUNNING:
            return []
        ex.move(TERMINATING)
        grace = shutdown_grace_period(ex.info, self.config.executor_shutdown_grace_period)
        self._arm_shutdown(ex, now + grace)
        if not ex.subscribed:
            return []
        return [SendToExecutor(ex.container_id, {"type": "SHUTDOWN"})]

    def _arm_shutdown(self, ex: Executor, deadline: float) -> None:
        ex.shutdown_deadline = deadline
        self._push_timer(deadline, _SHUTDOWN_TIMER, ex.container_id)

    def _framework_message(self, msg: internal.FrameworkToExecutor, now: float) -> list[Effect]:
        fw = self.frameworks.get(msg.framework_id.value)
        ex = fw.executors.get(msg.executor_id.value) if fw is not None else None
        if ex is None or ex.state != RUNNING or not ex.subscribed:
            # Best effort, like Mesos, which counts what it drops.
            self._count("invalid_framework_messages")
            return []
        self._count("valid_framework_messages")
        return [SendToExecutor(ex.container_id, {"type": "MESSAGE", "message": {"data": msg.data}})]

    def _update_framework(self, msg: internal.UpdateFramework, now: float) -> list[Effect]:
        info = msg.framework
        fw = self.frameworks.get(info.id.value) if info.id is not None else None
        if fw is None:
            return []
        # `checkpoint` cannot change once the framework registered (Mesos ignores changes).
        info = msgspec.structs.replace(info, checkpoint=fw.info.checkpoint)
        changed = info != fw.info
        fw.info = info
        if changed and info.checkpoint:
            return [CheckpointFramework(fw.id, info)]
        return []

    def _shutdown_agent(self, msg: internal.ShutdownAgent, now: float) -> list[Effect]:
        effects = self.shutdown(now, unregister=False)
        effects.append(StopAgent(msg.message))
        return effects

    def shutdown(self, now: float, unregister: bool = True) -> list[Effect]:
        """The agent is stopping for good: tell the master (UNREGISTER_AGENT), send nothing
        more, and destroy every container."""
        effects: list[Effect] = []
        if unregister and self.registered and not self.stopping:
            effects.append(SendToMaster(internal.UnregisterAgent()))
        self.stopping = True
        grace = self.config.executor_shutdown_grace_period
        for ex in list(self.containers.values()):
            if ex.state in (REGISTERING, RUNNING):
                ex.move(TERMINATING)
            if ex.state == TERMINATING:
                effects.append(DestroyContainer(ex.container_id, grace))
        return effects

    # -- status updates ----------------------------------------------------------------------

    def _status_update_ack(self, msg: internal.StatusUpdateAck, now: float) -> list[Effect]:
        key = (msg.framework_id.value, msg.task_id.value)
        stream = self.streams.get(key)
        if stream is None or stream.ack(msg.uuid) is None:
            return []  # stale or duplicate acknowledgement
        fw = self.frameworks[key[0]]
        effects = self._checkpoint_record(fw, key[1], None, msg.uuid)
        if not stream.done:
            return effects + self._flush(stream, now)
        self._drop_stream(key)
        return effects + self._task_completed(key)

    def _agent_update(
        self,
        fw: Framework,
        ex: Executor,
        task: Task,
        state: str,
        reason: str,
        message: str,
        now: float,
    ) -> list[Effect]:
        status = self._agent_status(task.id, ex.id, state, reason, message, now)
        if ex.limitation is not None and reason == ex.limitation[0]:
            status = msgspec.structs.replace(status, limitation=limitation_info(ex))
        return self._accept_update(fw, task, status, now)

    def _orphan_update(
        self, fw: Framework, task_id: str, state: str, reason: str, message: str, now: float
    ) -> list[Effect]:
        """An agent-made update for a task that has no executor here."""
        status = self._agent_status(task_id, None, state, reason, message, now)
        return self._accept_update(fw, None, status, now)

    def _agent_status(
        self,
        task_id: str,
        executor_id: str | None,
        state: str,
        reason: str,
        message: str,
        now: float,
    ) -> TaskStatus:
        return TaskStatus(
            task_id=ID(task_id),
            state=state,
            message=message,
            source="SOURCE_AGENT",
            reason=reason,
            agent_id=ID(self.agent_id or ""),
            executor_id=ID(executor_id) if executor_id is not None else None,
            timestamp=now,
            uuid=self._new_status_uuid(),
        )

    def _accept_update(
        self, fw: Framework, task: Task | None, status: TaskStatus, now: float
    ) -> list[Effect]:
        """Records an update (agent's or executor's) and starts its delivery to the master."""
        if task is not None and task.draining and status.state in (ts.KILLING, ts.KILLED):
            status = msgspec.structs.replace(status, reason="REASON_AGENT_DRAINING")
        resized: list[Effect] = []
        if task is not None:
            if ts.is_terminal(status.state) and not ts.is_terminal(task.state):
                resized = self._shrunk(task)
            task.state = status.state
            stored = msgspec.structs.replace(status, data=None)
            ts.record_status(task.statuses, stored, MAX_STATUSES_PER_TASK)
        self._count(f"updates_{status.state[5:].lower()}")
        if fw.state == FRAMEWORK_TERMINATING:
            # Not forwarded: Mesos' agent ignores, and counts as invalid, an update for a
            # terminating framework.
            self._count("invalid_status_updates")
            if task is not None and ts.is_terminal(status.state):
                return self._task_completed((fw.id, task.id))
            return []
        self._count("valid_status_updates")
        key = (fw.id, status.task_id.value)
        stream = self.streams.get(key)
        if stream is None:
            stream = StatusUpdateStream(
                fw.id,
                key[1],
                self.config.status_update_retry_interval_min,
                self.config.status_update_retry_interval_max,
            )
            self._add_stream(stream)
        if not stream.add(status):
            return []
        # Durable before it goes anywhere (and before the executor hears ACKNOWLEDGED).
        effects = self._checkpoint_record(fw, key[1], status, None) if task is not None else []
        return resized + effects + self._flush(stream, now)

    def _shrunk(self, task: Task) -> list[Effect]:
        """The container of a task that just ended, resized to the executor's other tasks
        (Mesos' agent updates the container on every terminal update). A command executor
        runs one task and ends with it, so its container is left as it is."""
        ex = self.task_executor.get((task.framework_id, task.id))
        if ex is None or ex.kind == COMMAND or ex.state == TERMINATED:
            return []
        return [self._resized(ex, ending=task.id)]

    def _add_stream(self, stream: StatusUpdateStream) -> None:
        fid = stream.framework_id
        self.streams[(fid, stream.task_id)] = stream
        self._streams_per_framework[fid] = self._streams_per_framework.get(fid, 0) + 1

    def _flush(self, stream: StatusUpdateStream, now: float) -> list[Effect]:
        """Sends the stream's head if it is due and the master can take it."""
        if not self.registered or self.stopping:
            return []
        status = stream.due(now)
        if status is None:
            return []
        assert stream.next_retry is not None
        self._push_timer(stream.next_retry, _STREAM_TIMER, (stream.framework_id, stream.task_id))
        latest = stream.pending[-1].state
        return [
            SendToMaster(
                internal.StatusUpdate(
                    ID(stream.framework_id),
                    status,
                    latest_state=latest if latest != status.state else None,
                )
            )
        ]

    def _drop_stream(self, key: tuple[str, str]) -> None:
        if self.streams.pop(key, None) is not None:
            self._streams_per_framework[key[0]] -= 1
            if not self._streams_per_framework[key[0]]:
                del self._streams_per_framework[key[0]]

    # -- removal -----------------------------------------------------------------------------

    def _task_completed(self, key: tuple[str, str]) -> list[Effect]:
        """The task's terminal update was acknowledged (or needs none): it is done here."""
        ex = self.task_executor.pop(key, None)
        fw = self.frameworks.get(key[0])
        if ex is None:
            return self._cleanup_framework(fw) if fw is not None else []
        task = ex.tasks.pop(key[1])
        ex.completed_tasks.append(task)
        self._count("tasks_completed")
        effects: list[Effect] = []
        if fw is not None and fw.info.checkpoint:
            effects.append(RemoveCheckpoint(fw.id, ex.id, ex.container_id, task.id))
        return effects + self._cleanup_executor(ex)

    def _sweep_terminal_tasks(self, ex: Executor) -> None:
        """Completes terminal tasks that will get no acknowledgement (framework gone)."""
        for task in [t for t in ex.tasks.values() if ts.is_terminal(t.state)]:
            if (ex.framework_id, task.id) not in self.streams:
                self.task_executor.pop((ex.framework_id, task.id), None)
                ex.completed_tasks.append(ex.tasks.pop(task.id))

    def _cleanup_executor(self, ex: Executor) -> list[Effect]:
        if ex.state != TERMINATED or ex.tasks:
            return []
        fw = self.frameworks.get(ex.framework_id)
        effects: list[Effect] = []
        if fw is not None and fw.executors.get(ex.id) is ex:
            del fw.executors[ex.id]
            fw.completed_executors.append(ex)
            if fw.info.checkpoint:
                effects.append(RemoveCheckpoint(fw.id, ex.id, ex.container_id))
            effects.append(ExecutorRemoved(ex.sandbox))
        self.containers.pop(ex.container_id, None)
        if fw is not None:
            effects += self._cleanup_framework(fw)
        return effects

    def _cleanup_framework(self, fw: Framework) -> list[Effect]:
        """Moves a framework with nothing left here to the completed ones."""
        if fw.executors or self._streams_per_framework.get(fw.id):
            return []
        if self.frameworks.get(fw.id) is not fw:
            return []
        del self.frameworks[fw.id]
        self.completed_frameworks.append(fw)
        return [RemoveCheckpoint(fw.id)] if fw.info.checkpoint else []

    # -- containers ----------------------------------------------------------------------------

    def container_started(self, container_id: str, pid: int, now: float) -> list[Effect]:
        """The executor process of a container is running."""
        ex = self.containers.get(container_id)
        if ex is None:
            return []
        ex.pid = pid
        fw = self.frameworks.get(ex.framework_id)
        if fw is not None and fw.info.checkpoint:
            return [CheckpointPid(fw.id, ex.id, container_id, pid)]
        return []

    def container_failed(self, container_id: str, message: str, now: float) -> list[Effect]:
        """The executor could not be started: its tasks fail."""
        ex = self.containers.get(container_id)
        if ex is None:
            return []
        if ex.pending_termination is None:
            ex.pending_termination = (
                ts.FAILED,
                "REASON_CONTAINER_LAUNCH_FAILED",
                f"Failed to launch container: {message}",
            )
        return self._executor_terminated(ex, None, now)

    def container_limited(
        self, container_id: str, reason: str, message: str, now: float
    ) -> list[Effect]:
        """The container went over a limit (an isolator saw it): its unfinished tasks fail
        with ``reason`` and the container is destroyed, as Mesos does."""
        ex = self.containers.get(container_id)
        if ex is None or ex.state == TERMINATED or ex.limitation is not None:
            return []
        ex.limitation = (reason, message)
        ex.pending_termination = (ts.FAILED, reason, message)
        self._count("container_limitations")
        return [DestroyContainer(container_id, 0.0)]

    def container_exited(self, container_id: str, status: int | None, now: float) -> list[Effect]:
        """The executor process ended with raw wait ``status``."""
        ex = self.containers.get(container_id)
        if ex is None:
            return []
        return self._executor_terminated(ex, status, now)

    def _executor_terminated(self, ex: Executor, status: int | None, now: float) -> list[Effect]:
        if ex.state == TERMINATED:
            return []
        fw = self.frameworks[ex.framework_id]
        ex.move(TERMINATED)
        ex.exit_status = status
        ex.queued.clear()
        effects: list[Effect] = []
        if ex.subscribed:
            ex.subscribed = False
            effects.append(CloseExecutorStream(ex.container_id))
        state, reason, message = ex.pending_termination or (
            ts.FAILED,
            "REASON_EXECUTOR_TERMINATED",
            exit_message(status),
        )
        for task in ex.live_tasks():
            effects += self._agent_update(fw, ex, task, state, reason, message, now)
        if fw.state == FRAMEWORK_TERMINATING:
            self._sweep_terminal_tasks(ex)
        elif not self.stopping and (ex.kind != COMMAND or REPORT_COMMAND_EXECUTOR_EXITS):
            exited = internal.ExecutorExited(ID(fw.id), ex.info.executor_id, status)
            if self.registered:
                effects.append(SendToMaster(exited))
            else:
                self._unreported_exits.append(exited)
        self._count("executors_terminated")
        effects += self._cleanup_executor(ex)
        return effects

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (may be early; never late)."""
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list[Effect]:
        """Runs everything due by ``now``: update retries, registration and shutdown timeouts."""
        effects: list[Effect] = []
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == _STREAM_TIMER:
                stream = self.streams.get(key)
                if stream is not None:
                    effects += self._flush(stream, now)
            elif kind == _REGISTRATION_TIMER:
                effects += self._registration_timeout(key, now)
            elif kind == _OPERATION_TIMER and key == self._operation_timer:
                effects += self._resend_operations(now)
            elif kind == _SHUTDOWN_TIMER:
                ex = self.containers.get(key)
                deadline = ex.shutdown_deadline if ex is not None else None
                if ex is not None and ex.state == TERMINATING and deadline and deadline <= now:
                    ex.shutdown_deadline = None
                    effects.append(DestroyContainer(ex.container_id, 0.0))
        return effects

    def _registration_timeout(self, container_id: str, now: float) -> list[Effect]:
        ex = self.containers.get(container_id)
        if ex is None or ex.state != REGISTERING or ex.registration_deadline is None:
            return []
        if ex.registration_deadline > now:
            return []
        if ex.recovered:
            # Mesos: the task was started, but its executor is hung or gone for good.
            fw = self.frameworks[ex.framework_id]
            timeout = self.config.executor_reregistration_timeout
            gone = ts.GONE if fw.info.has_capability("PARTITION_AWARE") else ts.LOST
            ex.pending_termination = (
                gone,
                "REASON_EXECUTOR_REREGISTRATION_TIMEOUT",
                f"Executor did not reregister within {duration_text(timeout)}",
            )
        else:
            timeout = self.config.executor_registration_timeout
            ex.pending_termination = (
                ts.FAILED,
                "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
                f"Executor did not register within {timeout:g} seconds",
            )
        ex.move(TERMINATING)
        return [DestroyContainer(container_id, 0.0)]

    def _push_timer(self, when: float, kind: str, key: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), kind, key))

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # -- inspection --------------------------------------------------------------------------

    def executors(self) -> Iterable[Executor]:
        """Every executor still on the agent (any state)."""
        for fw in self.frameworks.values():
            yield from fw.executors.values()

    def check_invariants(self) -> None:
        """Raises AssertionError if the bookkeeping is inconsistent (tests call this)."""
        check_agent_invariants(self)
