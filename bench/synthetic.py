"""A master core at cluster scale, built in-process by feeding it the events a real cluster
would: agent registrations, framework subscriptions, allocation runs, ACCEPTs that launch
tasks, TASK_STARTING / TASK_RUNNING updates from the agents and the schedulers'
acknowledgements. No sockets: the effects the core returns are drained and dropped (a shell
would encode and send them).

Used by the memory benchmark (50k agents / 500k tasks in one process) and to profile the
state endpoints at 10k agents / 100k tasks without 10k sockets::

    machine = build_machine(agents=10_000, tasks_per_agent=10)
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from butte.core import internal, task_states  # noqa: E402
from butte.core.ids import IdGenerator  # noqa: E402
from butte.core.messages import (  # noqa: E402
    ID,
    Accept,
    Acknowledge,
    CommandInfo,
    Filters,
    FrameworkInfo,
    Launch,
    Operation,
    SchedulerCall,
    Subscribe,
    TaskInfo,
    TaskStatus,
)
from butte.core.resources import parse_resources  # noqa: E402
from butte.master import views  # noqa: E402
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator  # noqa: E402
from butte.master.allocator.interface import AllocatorOptions  # noqa: E402
from butte.master.effects import Effect, SendToAgent, SendToFramework  # noqa: E402
from butte.master.machine import MasterMachine, MasterOptions  # noqa: E402

AGENT_RESOURCES = "cpus:16;mem:65536;disk:65536;ports:[31000-32000]"
TASK_RESOURCES = parse_resources("cpus:0.1;mem:32").to_json("pre")


@dataclass
class _Driver:
    """Bookkeeping of the synthetic cluster around the core."""

    machine: MasterMachine
    agent_connections: dict[str, str] = field(default_factory=dict)  # agent id -> conn
    framework_streams: dict[str, str] = field(default_factory=dict)  # fid -> stream
    offers: list[tuple[str, dict]] = field(default_factory=list)  # (fid, offer json)
    launched: list[tuple[str, str, str]] = field(default_factory=list)  # (fid, tid, agent)
    now: float = 1.0

    def apply(self, effects: list[Effect]) -> None:
        """Keeps what the cluster needs from the effects (offers, agent ids), drops the rest."""
        streams = {v: k for k, v in self.framework_streams.items()}
        for effect in effects:
            if isinstance(effect, SendToFramework):
                event = effect.event
                if event.get("type") == "OFFERS":
                    fid = streams.get(effect.stream_id, "")
                    self.offers.extend((fid, o) for o in event["offers"]["offers"])
            elif isinstance(effect, SendToAgent):
                msg = effect.message
                if isinstance(msg, internal.AgentRegistered):
                    self.agent_connections[msg.agent_id.value] = effect.connection_id


def new_machine() -> MasterMachine:
    """A master core as `butte master` builds it (default options, 1 s allocation)."""
    ids = IdGenerator()
    return MasterMachine(
        allocator=HierarchicalDRFAllocator(AllocatorOptions(allocation_interval=1.0)),
        master_info=views.master_info(ids.master_id, "127.0.0.1", 5050, "127.0.0.1", "1.11.0"),
        options=MasterOptions(),
        ids=ids,
    )


def _register_agents(d: _Driver, agents: int) -> None:
    resources = parse_resources(AGENT_RESOURCES).to_json("endpoint")
    for i in range(agents):
        info = internal.AgentInfo(hostname=f"sim-{i}", port=5051, resources=resources)
        msg = internal.RegisterAgent(agent_info=info, version="0.1.0")
        d.apply(d.machine.agent_message(f"conn-{i}", msg, "127.0.0.1", d.now))


def _subscribe(d: _Driver, frameworks: int) -> None:
    for j in range(frameworks):
        info = FrameworkInfo(user="bench", name=f"bench-{j}", checkpoint=True)
        call = SchedulerCall(type="SUBSCRIBE", subscribe=Subscribe(framework_info=info))
        stream = f"stream-{j}"
        _, effects = d.machine.subscribe(call, stream, d.now)
        d.framework_streams[d.machine.streams[stream]] = stream
        d.apply(effects)


def _launch_round(d: _Driver, tasks_per_offer: int, remaining: int) -> int:
    """One allocation run and one ACCEPT per offer; returns the tasks launched."""
    d.offers.clear()
    d.apply(d.machine.allocate(d.now))
    launched = 0
    for fid, offer in d.offers:
        count = min(tasks_per_offer, remaining - launched)
        agent_id = offer["agent_id"]["value"]
        infos = []
        for _ in range(max(count, 0)):
            tid = f"task-{len(d.launched)}"
            d.launched.append((fid, tid, agent_id))
            infos.append(
                TaskInfo(
                    name=tid,
                    task_id=ID(tid),
                    agent_id=ID(agent_id),
                    resources=TASK_RESOURCES,
                    command=CommandInfo(value="sleep 1000"),
                )
            )
        launched += len(infos)
        operations = [Operation(type="LAUNCH", launch=Launch(task_infos=infos))] if infos else []
        call = SchedulerCall(
            type="ACCEPT",
            framework_id=ID(fid),
            accept=Accept(
                offer_ids=[ID(offer["id"]["value"])],
                operations=operations,
                filters=Filters(refuse_seconds=0.0),
            ),
        )
        d.machine.scheduler_call(call, d.framework_streams[fid], d.now)
    d.now += 1.0
    return launched


def _report_status(d: _Driver, fid: str, tid: str, agent_id: str, state: str) -> None:
    uuid = base64.b64encode(os.urandom(16)).decode()
    status = TaskStatus(
        task_id=ID(tid),
        state=state,
        source="SOURCE_EXECUTOR",
        agent_id=ID(agent_id),
        executor_id=ID(tid),
        timestamp=d.now,
        uuid=uuid,
    )
    conn = d.agent_connections[agent_id]
    msg = internal.StatusUpdate(framework_id=ID(fid), status=status)
    d.machine.agent_message(conn, msg, "127.0.0.1", d.now)  # effects dropped, as before
    ack = SchedulerCall(
        type="ACKNOWLEDGE",
        framework_id=ID(fid),
        acknowledge=Acknowledge(agent_id=ID(agent_id), task_id=ID(tid), uuid=uuid),
    )
    d.machine.scheduler_call(ack, d.framework_streams[fid], d.now)


def build_machine(
    agents: int,
    tasks_per_agent: int,
    frameworks: int = 10,
    tasks_per_offer: int = 10,
    updates: tuple[str, ...] = (task_states.STARTING, task_states.RUNNING),
) -> MasterMachine:
    """A master core with ``agents`` agents and ``agents * tasks_per_agent`` tasks launched
    through ACCEPT and moved through ``updates`` (each acknowledged)."""
    d = _Driver(new_machine())
    _register_agents(d, agents)
    _subscribe(d, frameworks)
    total = agents * tasks_per_agent
    launched = 0
    while launched < total:
        got = _launch_round(d, tasks_per_offer, total - launched)
        if got == 0:
            raise RuntimeError(f"no room for more tasks after {launched}")
        launched += got
    for fid, tid, agent_id in d.launched:
        for state in updates:
            _report_status(d, fid, tid, agent_id, state)
    return d.machine
