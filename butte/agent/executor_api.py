"""The executor HTTP API side of the agent core (docs/protocol.md §2.1): SUBSCRIBE, UPDATE, MESSAGE
and HEARTBEAT calls, and the loss of an executor's stream. Part of `AgentMachine` (a mixin
only to keep modules small); pure like the rest of the core."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from butte.agent.containerizer.isolators.base import MIN_MEMORY_MB
from butte.agent.effects import Effect, SendToExecutor, SendToMaster
from butte.agent.launching import shutdown_grace_period
from butte.agent.records import (
    REGISTERING,
    RUNNING,
    TERMINATED,
    TERMINATING,
    Executor,
    Framework,
)
from butte.core import internal
from butte.core import task_states as ts
from butte.core.codec import base64_problem
from butte.core.messages import ID, ExecutorCall, TaskStatus

if TYPE_CHECKING:
    # Typed against the interface of the whole core, which never imports this module.
    from butte.agent.core import AgentCore as _Base
else:
    _Base = object


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one executor API call: HTTP status, error text, and effects. For a
    successful SUBSCRIBE, ``container_id`` names the stream the shell must open."""

    status: int
    message: str = ""
    effects: list[Effect] = field(default_factory=list)
    container_id: str | None = None


# The resource each limitation reason is about (TaskStatus.limitation names it).
_LIMITED_RESOURCE = {
    "REASON_CONTAINER_LIMITATION_MEMORY": "mem",
    "REASON_CONTAINER_LIMITATION_DISK": "disk",
}


def limitation_info(ex: Executor) -> dict[str, Any] | None:
    """``TaskStatus.limitation`` of the tasks of a container that went over a limit: the
    resource at the container's size of it (the memory limit, at least `MIN_MEMORY_MB`; the
    disk quota), as Mesos' isolators report it. None without a limitation of a resource."""
    name = _LIMITED_RESOURCE.get(ex.limitation[0]) if ex.limitation is not None else None
    if name is None:
        return None
    total = 0.0
    for task_resources in [ex.info.resources, *(t.info.resources for t in ex.tasks.values())]:
        for resource in task_resources or ():
            if isinstance(resource, dict) and resource.get("name") == name:
                value = (resource.get("scalar") or {}).get("value")
                total += float(value) if isinstance(value, int | float) else 0.0
    if name == "mem":
        total = max(total, MIN_MEMORY_MB)
    return {"resources": [{"name": name, "type": "SCALAR", "scalar": {"value": total}}]}


def validate_executor_status(status: TaskStatus, executor_id: str) -> str | None:
    """Why an executor's UPDATE is invalid (Mesos ``validateExecutorCall``), or None."""
    if status.uuid is None:
        return "Expecting 'uuid' to be present"
    try:
        raw = base64.b64decode(status.uuid, validate=True)
    except (binascii.Error, ValueError):
        return "'uuid' is not valid base64"
    if len(raw) != 16:
        return f"'uuid' must be 16 bytes, got {len(raw)}"
    if status.source != "SOURCE_EXECUTOR":
        return "Received Call from executor with invalid source (expected SOURCE_EXECUTOR)"
    if status.state not in ts.ALL_STATES:
        return f"Unknown task state {status.state!r}"
    if status.state == ts.STAGING:
        return "Received TASK_STAGING from executor"
    if status.executor_id is not None and status.executor_id.value != executor_id:
        return (
            f"ExecutorID in Call: {executor_id} does not match ExecutorID in TaskStatus: "
            f"{status.executor_id.value}"
        )
    return None


class ExecutorApi(_Base):
    """Executor calls and stream loss; mixed into `AgentMachine`."""

    def executor_call(self, call: ExecutorCall, now: float) -> Reply:
        """One ``POST /api/v1/executor`` call, already decoded (docs/protocol.md §2.1)."""
        if call.type == "HEARTBEAT":
            # Before any id check, as Mesos' agent does: libmesos' executor driver may send
            # dummy framework and executor ids in it (MESOS-6536).
            return Reply(202)
        fw = self.frameworks.get(call.framework_id.value)
        if fw is None:
            return self._refused(call, 400, f"Framework {call.framework_id.value} cannot be found")
        ex = fw.executors.get(call.executor_id.value)
        if ex is None:
            return self._refused(call, 400, f"Executor {call.executor_id.value} cannot be found")
        if call.type == "SUBSCRIBE":
            return self._executor_subscribe(fw, ex, call, now)
        if ex.state == REGISTERING:
            return self._refused(call, 403, "Executor is not subscribed")
        if ex.state == TERMINATED:
            return self._refused(call, 403, "Executor has terminated")
        if call.type == "UPDATE":
            if call.update is None:
                return self._refused(call, 400, "Expecting 'update' to be present")
            reply = self._executor_status(fw, ex, call.update.status, now)
            if reply.status >= 400:
                self._count("invalid_status_updates")
            return reply
        if call.type == "MESSAGE":
            if call.message is None:
                return Reply(400, "Expecting 'message' to be present")
            problem = base64_problem("data", call.message.data)
            if problem is not None:
                return Reply(400, problem)
            effects: list[Effect] = []
            if self.registered and not self.stopping:
                message = internal.ExecutorToFramework(
                    ID(fw.id), ex.info.executor_id, call.message.data
                )
                effects.append(SendToMaster(message))
                self._count("valid_framework_messages")
            else:
                # Dropped while the agent is not registered, as Mesos' agent drops (and
                # counts) it when it is not RUNNING.
                self._count("invalid_framework_messages")
            return Reply(202, effects=effects)
        return Reply(400, f"Unknown executor call type {call.type!r}")

    def _refused(self, call: ExecutorCall, status: int, message: str) -> Reply:
        """A refused call; a refused UPDATE is an update the agent ignores, counted as Mesos'
        agent counts those (``invalid_status_updates``)."""
        if call.type == "UPDATE":
            self._count("invalid_status_updates")
        return Reply(status, message)

    def _executor_subscribe(
        self, fw: Framework, ex: Executor, call: ExecutorCall, now: float
    ) -> Reply:
        if ex.state in (TERMINATING, TERMINATED):
            return Reply(403, "Executor is terminating")
        if ex.recovered and ex.state == REGISTERING:
            self._count("executors_reregistered")
        ex.move(RUNNING)
        ex.subscribed = True
        ex.registration_deadline = None
        effects: list[Effect] = [SendToExecutor(ex.container_id, self._subscribed_event(fw, ex))]
        if call.subscribe is not None:
            if ex.queued and ex.recovered:
                # Tasks it lists were delivered before the agent restarted: not again.
                known = {t.task_id.value for t in call.subscribe.unacknowledged_tasks}
                known |= {u.status.task_id.value for u in call.subscribe.unacknowledged_updates}
                self._claim_delivered(ex, known)
            # Updates the executor sent but never saw acknowledged (e.g. across a reconnect).
            for update in call.subscribe.unacknowledged_updates:
                reply = self._executor_status(fw, ex, update.status, now)
                if reply.status >= 400:
                    self._count("invalid_status_updates")
                effects += reply.effects
        for entry in ex.queued:
            effects.append(self._delivery(ex, entry))
        ex.queued.clear()
        for tid, kill in ex.pending_kills.items():
            task = ex.tasks.get(tid)
            if task is not None and not ts.is_terminal(task.state):
                effects.append(SendToExecutor(ex.container_id, {"type": "KILL", "kill": kill}))
        ex.pending_kills.clear()
        return Reply(200, effects=effects, container_id=ex.container_id)

    def _subscribed_event(self, fw: Framework, ex: Executor) -> dict[str, Any]:
        agent_info = self._executor_agent_info
        if agent_info is None or agent_info["id"]["value"] != self.agent_id:
            # Built once: encoding the resources per subscription is measurable at scale.
            agent_info = {
                "hostname": self.config.hostname,
                "port": self.config.port,
                "resources": self.config.resources.to_json("pre"),
                "attributes": [a.to_json() for a in self.config.attributes],
                "id": {"value": self.agent_id},
            }
            self._executor_agent_info = agent_info
        return {
            "type": "SUBSCRIBED",
            "subscribed": {
                "executor_info": ex.info,
                "framework_info": fw.info,
                "agent_info": agent_info,
                "container_id": {"value": ex.container_id},
            },
        }

    def _executor_status(
        self, fw: Framework, ex: Executor, status: TaskStatus, now: float
    ) -> Reply:
        problem = validate_executor_status(status, ex.id)
        if problem is not None:
            return Reply(400, problem)
        assert status.uuid is not None
        tid = status.task_id.value
        acknowledged = SendToExecutor(
            ex.container_id,
            {
                "type": "ACKNOWLEDGED",
                "acknowledged": {"task_id": status.task_id, "uuid": status.uuid},
            },
        )
        task = ex.tasks.get(tid)
        stream = self.streams.get((fw.id, tid))
        known = task is not None or self._task_of_framework(fw, tid)
        if stream is not None and stream.is_duplicate(status.uuid):
            # A resend for a task the agent does not know is not acknowledged either (below).
            # Valid to Mesos' agent, whose update manager then drops the duplicate.
            self._count("valid_status_updates")
            return Reply(202, effects=[acknowledged] if known else [])
        if task is None and any(t.id == tid for t in ex.completed_tasks):
            self._count("valid_status_updates")
            return Reply(202, effects=[acknowledged])  # a late resend of a finished task
        if not known:
            # A task this agent does not know: Mesos' agent (`Slave::statusUpdate`, no
            # executor holds the task) still takes it, 202, and forwards it to the master,
            # reliably, without a container status; the executor hears no ACKNOWLEDGED.
            status = msgspec.structs.replace(status, agent_id=ID(self.agent_id or ""))
            return Reply(202, effects=self._accept_update(fw, None, status, now))
        if task is None or not task.launched:
            return Reply(400, f"Task {tid} is unknown to executor {ex.id}")
        try:
            ts.transition(task.state, status.state)
        except ts.IllegalTransition as e:
            return Reply(400, f"Task {tid}: {e}")
        if ex.limitation is not None and status.state in (ts.FAILED, ts.KILLED):
            # The task ended because its container went over a limit: the agent says so
            # (Mesos reports the limitation, from the agent, not the kill it caused).
            reason, message = ex.limitation
            status = msgspec.structs.replace(
                status,
                state=ts.FAILED,
                reason=reason,
                message=message,
                source="SOURCE_AGENT",
                limitation=limitation_info(ex),
            )
        effects = self._accept_update(fw, task, self._complete_status(ex, status), now)
        effects.append(acknowledged)
        return Reply(202, effects=effects)

    @staticmethod
    def _task_of_framework(fw: Framework, task_id: str) -> bool:
        """Whether ``task_id`` is a task of one of ``fw``'s executors here (live or done)."""
        return any(
            task_id in other.tasks or any(t.id == task_id for t in other.completed_tasks)
            for other in fw.executors.values()
        )

    def _complete_status(self, ex: Executor, status: TaskStatus) -> TaskStatus:
        """Fills what the agent adds to an executor's update: agent and executor ids, and the
        container status of a TASK_RUNNING (Mesos adds it from the containerizer)."""
        changes: dict[str, Any] = {
            "agent_id": ID(self.agent_id or ""),
            "executor_id": ex.info.executor_id,
        }
        if status.state == ts.RUNNING:
            container_status = dict(status.container_status or {})
            container_status["container_id"] = {"value": ex.container_id}
            if ex.pid is not None:
                container_status["executor_pid"] = ex.pid
            container_status.setdefault(
                "network_infos",
                [{"ip_addresses": [{"protocol": "IPv4", "ip_address": self.config.ip}]}],
            )
            changes["container_status"] = container_status
        return msgspec.structs.replace(status, **changes)

    def executor_disconnected(self, container_id: str, now: float) -> list[Effect]:
        """An executor's SUBSCRIBE stream closed. Without checkpointing the executor is shut
        down (it kills its tasks itself; the container is destroyed after the grace)."""
        ex = self.containers.get(container_id)
        if ex is None or not ex.subscribed:
            return []
        ex.subscribed = False
        fw = self.frameworks.get(ex.framework_id)
        if ex.state == RUNNING and fw is not None and not fw.info.checkpoint:
            ex.move(TERMINATING)
            grace = shutdown_grace_period(ex.info, self.config.executor_shutdown_grace_period)
            self._arm_shutdown(ex, now + grace)
        return []
