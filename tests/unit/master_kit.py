"""A harness that drives the pure master core like the shell does, with a fake clock."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from butte.core import internal
from butte.core.clock import FakeClock
from butte.core.codec import encode_json
from butte.core.ids import IdGenerator
from butte.core.messages import ID, SchedulerCall, TaskStatus, decode
from butte.core.resources import parse_resources
from butte.master import views
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions
from butte.master.effects import (
    CloseAgentConnection,
    CloseFrameworkStream,
    Effect,
    SendToAgent,
    SendToFramework,
)
from butte.master.machine import CallResult, MasterMachine, MasterOptions

AGENT_RESOURCES = "cpus:4;mem:4096;disk:10000;ports:[31000-32000]"


def call(obj: dict[str, Any]) -> SchedulerCall:
    return decode(encode_json(obj), SchedulerCall)


class Harness:
    """The master core plus mailboxes for every stream and agent connection."""

    def __init__(self, options: MasterOptions | None = None) -> None:
        self.clock = FakeClock()
        ids = IdGenerator("M")
        self.master = MasterMachine(
            allocator=HierarchicalDRFAllocator(AllocatorOptions()),
            master_info=views.master_info("M", "127.0.0.1", 5050, "localhost", "1.11.0"),
            options=options or MasterOptions(),
            ids=ids,
        )
        self.streams: dict[str, list[dict]] = {}
        self.closed_streams: set[str] = set()
        self.agent_inbox: dict[str, list[Any]] = {}
        self.closed_connections: set[str] = set()

    def now(self) -> float:
        return self.clock.now()

    def pump(self, effects: list[Effect]) -> list[Effect]:
        """Carries out the effects an event method of the core returned, as the shell does,
        then checks the core's invariants; returns the effects."""
        for effect in effects:
            if isinstance(effect, SendToFramework):
                if effect.stream_id not in self.closed_streams:
                    self.streams.setdefault(effect.stream_id, []).append(effect.event)
            elif isinstance(effect, CloseFrameworkStream):
                self.closed_streams.add(effect.stream_id)
            elif isinstance(effect, SendToAgent):
                self.agent_inbox.setdefault(effect.connection_id, []).append(effect.message)
            elif isinstance(effect, CloseAgentConnection):
                self.closed_connections.add(effect.connection_id)
        self.master.check_invariants()
        return effects

    def found(self, effects: list[Effect] | None) -> bool:
        """For operator events that answer None for an unknown id: pumps what they returned
        and says whether the id was known."""
        self.pump(effects or [])
        return effects is not None

    # frameworks ------------------------------------------------------------------------

    def subscribe(
        self, name: str = "fw", stream: str | None = None, **info: Any
    ) -> tuple[str, str]:
        """Subscribes a framework; returns (framework_id, stream_id)."""
        stream = stream or f"stream-{uuid.uuid4().hex[:8]}"
        fi = {"user": "root", "name": name, **info}
        body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}}
        if "id" in fi:
            body["framework_id"] = fi["id"]
        result, effects = self.master.subscribe(call(body), stream, self.now())
        assert result.status == 200, result
        self.pump(effects)
        events = self.streams.get(stream, [])
        if result.stream_error:
            # What the shell does: a 200 stream carrying one ERROR, then closed.
            self.streams[stream] = [views.error_event(result.stream_error)]
            return "", stream
        assert events[0]["type"] == "SUBSCRIBED"
        return events[0]["subscribed"]["framework_id"]["value"], stream

    def call(self, fid: str, stream: str, obj: dict[str, Any]) -> CallResult:
        result, effects = self.master.scheduler_call(
            call({"framework_id": {"value": fid}, **obj}), stream, self.now()
        )
        self.pump(effects)
        return result

    def events(self, stream: str, kind: str | None = None) -> list[dict]:
        evs = self.streams.get(stream, [])
        return [e for e in evs if kind is None or e["type"] == kind]

    def take(self, stream: str, kind: str | None = None) -> list[dict]:
        """Events of a kind, removed from the mailbox."""
        out = self.events(stream, kind)
        self.streams[stream] = [e for e in self.streams.get(stream, []) if e not in out]
        return out

    def updates(self, stream: str) -> list[dict]:
        return [e["update"]["status"] for e in self.take(stream, "UPDATE")]

    def offers(self, stream: str) -> list[dict]:
        out = []
        for ev in self.take(stream, "OFFERS"):
            out.extend(ev["offers"]["offers"])
        return out

    def allocate(self) -> None:
        self.pump(self.master.allocate(self.now()))

    # agents ----------------------------------------------------------------------------

    def register_agent(
        self, conn: str = "c1", resources: str = AGENT_RESOURCES, **extra: Any
    ) -> str:
        info = internal.AgentInfo(
            hostname="127.0.0.1",
            port=5051,
            resources=parse_resources(resources).to_json(),
            id=ID(extra.pop("agent_id")) if "agent_id" in extra else None,
        )
        msg = internal.RegisterAgent(agent_info=info, version="0.1.0", **extra)
        self.pump(self.master.agent_message(conn, msg, "127.0.0.1", self.now()))
        reply = self.agent_inbox[conn][-1]
        assert isinstance(reply, internal.AgentRegistered | internal.AgentReregistered), reply
        assert reply.batches  # this master takes frames of several messages
        return reply.agent_id.value

    def agent_messages(self, conn: str, kind: type) -> list[Any]:
        return [m for m in self.agent_inbox.get(conn, []) if isinstance(m, kind)]

    def status_update(
        self,
        conn: str,
        fid: str,
        task_id: str,
        state: str,
        agent_id: str,
        latest_state: str | None = None,
        **fields: Any,
    ) -> str:
        uid = base64.b64encode(uuid.uuid4().bytes).decode()
        status = TaskStatus(
            task_id=ID(task_id),
            state=state,
            source="SOURCE_EXECUTOR",
            agent_id=ID(agent_id),
            executor_id=ID(task_id),
            uuid=uid,
            timestamp=self.now(),
            **fields,
        )
        self.pump(
            self.master.agent_message(
                conn,
                internal.StatusUpdate(
                    framework_id=ID(fid), status=status, latest_state=latest_state
                ),
                "127.0.0.1",
                self.now(),
            )
        )
        return uid


def launch_body(offer: dict, *tasks: dict, refuse_seconds: float | None = None) -> dict:
    body: dict[str, Any] = {
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": list(tasks)}}],
        },
    }
    if refuse_seconds is not None:
        body["accept"]["filters"] = {"refuse_seconds": refuse_seconds}
    return body


def command_task(
    task_id: str, offer: dict, resources: str = "cpus:1;mem:128", **extra: Any
) -> dict:
    from butte.core.resources import parse_resources

    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"],
        "resources": parse_resources(resources).to_json(),
        "command": {"value": "true"},
        **extra,
    }
