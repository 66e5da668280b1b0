"""A harness that drives the pure agent core like its shell does, with a fake clock: every
effect lands in a mailbox (to the master, to each executor stream, launched and destroyed
containers, checkpoints) that tests read."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from butte.agent.effects import (
    Checkpoint,
    CloseExecutorStream,
    DestroyContainer,
    ExecutorRemoved,
    LaunchContainer,
    SendToExecutor,
    SendToMaster,
    StopAgent,
    UpdateContainer,
)
from butte.agent.machine import AgentConfig, AgentMachine, Reply
from butte.core import internal
from butte.core.clock import FakeClock
from butte.core.codec import encode_json
from butte.core.messages import ID, ExecutorCall, FrameworkInfo, TaskInfo, TaskStatus, decode
from butte.core.resources import parse_attributes, parse_resources

FID = "M-0000"
AID = "M-S0"


def fresh_uuid(n: int) -> str:
    return base64.b64encode(n.to_bytes(16, "big")).decode()


class Harness:
    """The agent core plus mailboxes for the master and every executor stream."""

    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        options: dict[str, Any] = {
            "hostname": "node1",
            "ip": "127.0.0.1",
            "port": 5051,
            "work_dir": "/var/butte",
            "resources": parse_resources("cpus:4;mem:1024;ports:[31000-32000]"),
            "attributes": parse_attributes("rack:r1"),
            "command_executor_argv": ("python", "-m", "butte.agent.executor.command"),
            "base_environment": {"PATH": "/usr/bin:/bin", "MESOS_CHECKPOINT": "stale"},
        }
        options.update(config)
        containers = itertools.count()
        uuids = itertools.count(1)
        self.agent = AgentMachine(
            AgentConfig(**options),
            new_container_id=lambda: f"c{next(containers)}",
            new_status_uuid=lambda: fresh_uuid(next(uuids)),
        )
        self.executor_uuids = itertools.count(1000)
        self.to_master: list[Any] = []
        self.to_executor: dict[str, list[dict]] = {}
        self.launched: dict[str, LaunchContainer] = {}
        self.destroyed: list[DestroyContainer] = []
        self.updated: list[UpdateContainer] = []
        self.closed: list[str] = []
        self.stopped: list[str] = []
        self.removed: list[str] = []  # sandboxes of removed executors (ExecutorRemoved)
        self.checkpoints: list[Checkpoint] = []

    def now(self) -> float:
        return self.clock.now()

    def apply(self, effects: list) -> None:
        for effect in effects:
            if isinstance(effect, SendToMaster):
                self.to_master.append(effect.message)
            elif isinstance(effect, SendToExecutor):
                self.to_executor.setdefault(effect.container_id, []).append(effect.event)
            elif isinstance(effect, LaunchContainer):
                self.launched[effect.container_id] = effect
            elif isinstance(effect, DestroyContainer):
                self.destroyed.append(effect)
            elif isinstance(effect, UpdateContainer):
                self.updated.append(effect)
            elif isinstance(effect, CloseExecutorStream):
                self.closed.append(effect.container_id)
            elif isinstance(effect, StopAgent):
                self.stopped.append(effect.message)
            elif isinstance(effect, ExecutorRemoved):
                self.removed.append(effect.sandbox)
            elif isinstance(effect, Checkpoint):
                self.checkpoints.append(effect)
            else:  # pragma: no cover - a new effect type must be handled here
                raise AssertionError(effect)

    def master(self, message: Any) -> None:
        self.apply(self.agent.handle_master(message, self.now()))

    def register(self) -> None:
        self.apply(self.agent.master_connected(self.now()))
        self.master(internal.AgentRegistered(agent_id=ID(AID), master_id="M"))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.apply(self.agent.tick(self.now()))

    def sent(self, kind: type) -> list[Any]:
        return [m for m in self.to_master if isinstance(m, kind)]

    def updates(self) -> list[TaskStatus]:
        return [m.status for m in self.sent(internal.StatusUpdate)]

    def call(self, body: dict[str, Any]) -> Reply:
        call = decode(encode_json(body), ExecutorCall)
        reply = self.agent.executor_call(call, self.now())
        self.apply(reply.effects)
        return reply

    def subscribe(self, executor_id: str, **subscribe: Any) -> Reply:
        return self.call(
            {
                "type": "SUBSCRIBE",
                "framework_id": {"value": FID},
                "executor_id": {"value": executor_id},
                "subscribe": subscribe,
            }
        )

    def update(self, executor_id: str, task_id: str, state: str, **extra: Any) -> Reply:
        status = {
            "task_id": {"value": task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "uuid": fresh_uuid(next(self.executor_uuids)),
            **extra,
        }
        return self.call(
            {
                "type": "UPDATE",
                "framework_id": {"value": FID},
                "executor_id": {"value": executor_id},
                "update": {"status": status},
            }
        )

    def ack(self, status: TaskStatus) -> None:
        assert status.uuid is not None
        self.master(internal.StatusUpdateAck(ID(FID), status.task_id, status.uuid))

    def events(self, container_id: str) -> list[str]:
        return [e["type"] for e in self.to_executor.get(container_id, [])]

    def check(self) -> None:
        self.agent.check_invariants()


def framework(**extra: Any) -> FrameworkInfo:
    return decode(
        encode_json({"user": "u", "name": "f", "id": {"value": FID}, **extra}), FrameworkInfo
    )


def command_task(task_id: str, cmd: str = "echo hi", **extra: Any) -> TaskInfo:
    body = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 1},
                "allocation_info": {"role": "web"},
            }
        ],
        "command": {"value": cmd},
        **extra,
    }
    return decode(encode_json(body), TaskInfo)


def custom_task(task_id: str, executor_id: str = "exec1") -> TaskInfo:
    body = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "executor": {
            "executor_id": {"value": executor_id},
            "command": {
                "value": "./my-executor --flag",
                "environment": {"variables": [{"name": "FOO", "value": "bar"}]},
            },
        },
    }
    return decode(encode_json(body), TaskInfo)


def run(h: Harness, task: TaskInfo, fw: FrameworkInfo | None = None) -> None:
    h.master(internal.RunTask(framework=fw or framework(), task=task))


def started(h: Harness, task_id: str = "t1", cmd: str = "echo hi") -> str:
    """Registers, runs a command task and subscribes its executor; returns the container."""
    h.register()
    run(h, command_task(task_id, cmd))
    (container_id,) = [c for c, e in h.launched.items() if e.executor_id == task_id]
    h.apply(h.agent.container_started(container_id, 4242, h.now()))
    assert h.subscribe(task_id).status == 200
    return container_id
