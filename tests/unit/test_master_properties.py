"""Random event sequences through the master core. After every step the harness checks the
core's invariants, including that the allocator's books match offers + tasks + executors
exactly; here we also check that no launched task silently disappears."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from master_kit import Harness, command_task, launch_body

from butte.core import internal, task_states

NEXT = {
    "TASK_STAGING": ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"],
    "TASK_STARTING": ["TASK_RUNNING", "TASK_FAILED"],
    "TASK_RUNNING": ["TASK_FINISHED", "TASK_KILLED", "TASK_RUNNING"],
    "TASK_KILLING": ["TASK_KILLED"],
}


class MasterEvents(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()
        self.conns: dict[str, str] = {}  # connection -> agent id
        self.streams: dict[str, str] = {}  # framework id -> current stream
        self.task_seq = 0
        self.launched: dict[str, str] = {}  # task id -> framework id
        self.answered: set[str] = set()  # tasks the framework heard a terminal state for

    @initialize()
    def one_agent_and_one_framework(self) -> None:
        self.register_agent()
        self.subscribe(checkpoint=False)
        self.allocate()

    # agents ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.conns) < 3)
    @rule()
    def register_agent(self) -> None:
        conn = f"c{len(self.conns)}-{self.task_seq}"
        self.task_seq += 1
        self.conns[conn] = self.h.register_agent(conn, resources="cpus:2;mem:1024")

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def agent_disconnects_and_returns(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        agent_id = self.conns.pop(conn)
        if agent_id not in self.h.master.agents:
            return
        self.h.pump(self.h.master.agent_disconnected(conn, self.h.now()))
        agent = self.h.master.agents[agent_id]
        tasks = []
        for fid, tid in agent.tasks:
            t = self.h.master.frameworks[fid].tasks[tid]
            tasks.append(
                internal.Task(
                    name=t.name,
                    task_id=internal.ID(tid),
                    framework_id=internal.ID(fid),
                    agent_id=internal.ID(agent_id),
                    state=t.state,
                    resources=t.resources.to_json(allocation_role=t.role),
                )
            )
        new_conn = conn + "'"
        self.h.register_agent(new_conn, resources="cpus:2;mem:1024", agent_id=agent_id, tasks=tasks)
        self.conns[new_conn] = agent_id

    @precondition(lambda self: self.conns)
    @rule()
    def ping(self) -> None:
        self.h.pump(self.h.master.ping_agents(self.h.now()))
        for conn in self.conns:
            self.h.pump(
                self.h.master.agent_message(conn, internal.Pong(), "127.0.0.1", self.h.now())
            )

    # frameworks ------------------------------------------------------------------------

    @precondition(lambda self: len(self.streams) < 3)
    @rule(checkpoint=st.booleans())
    def subscribe(self, checkpoint: bool) -> None:
        fid, stream = self.h.subscribe(failover_timeout=5, checkpoint=checkpoint)
        self.streams[fid] = stream

    @precondition(lambda self: self.streams)
    @rule(data=st.data())
    def framework_disconnects(self, data: st.DataObject) -> None:
        fid = data.draw(st.sampled_from(sorted(self.streams)))
        self.h.pump(self.h.master.framework_disconnected(self.streams.pop(fid), self.h.now()))

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.h.clock.advance(seconds)
        self.h.pump(self.h.master.tick(self.h.now()))
        self.streams = {f: s for f, s in self.streams.items() if f in self.h.master.frameworks}

    @rule()
    def allocate(self) -> None:
        self.h.allocate()

    @precondition(lambda self: self.streams)
    @rule(data=st.data(), count=st.integers(0, 3), decline=st.booleans())
    def answer_offers(self, data: st.DataObject, count: int, decline: bool) -> None:
        fid = data.draw(st.sampled_from(sorted(self.streams)))
        stream = self.streams[fid]
        for offer in self.h.offers(stream):
            if decline:
                body = {
                    "type": "DECLINE",
                    "decline": {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 1}},
                }
                self.h.call(fid, stream, body)
                continue
            tasks = []
            for _ in range(count):
                self.task_seq += 1
                tid = f"t{self.task_seq}"
                tasks.append(command_task(tid, offer, resources="cpus:0.5;mem:64"))
                self.launched[tid] = fid
            self.h.call(fid, stream, launch_body(offer, *tasks, refuse_seconds=0))

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), ack=st.booleans())
    def task_progresses(self, data: st.DataObject, ack: bool) -> None:
        live = [(c, a) for c, a in self.conns.items() if a in self.h.master.agents]
        on_agents = [(c, key) for c, a in live for key in sorted(self.h.master.agents[a].tasks)]
        if not on_agents:
            return
        conn, (fid, tid) = data.draw(st.sampled_from(on_agents))
        agent = self.h.master.agents[self.conns[conn]]
        task = self.h.master.frameworks[fid].tasks[tid]
        if task.state not in NEXT:
            return
        state = data.draw(st.sampled_from(NEXT[task.state]))
        uid = self.h.status_update(conn, fid, tid, state, agent.agent_id)
        stream = self.streams.get(fid)
        if stream is not None and ack:
            self.h.call(
                fid,
                stream,
                {
                    "type": "ACKNOWLEDGE",
                    "acknowledge": {
                        "agent_id": {"value": agent.agent_id},
                        "task_id": {"value": tid},
                        "uuid": uid,
                    },
                },
            )

    @precondition(lambda self: self.streams)
    @rule(data=st.data())
    def kill_something(self, data: st.DataObject) -> None:
        fid = data.draw(st.sampled_from(sorted(self.streams)))
        tasks = sorted(self.h.master.frameworks[fid].tasks)
        if tasks:
            tid = data.draw(st.sampled_from(tasks))
            self.h.call(
                fid, self.streams[fid], {"type": "KILL", "kill": {"task_id": {"value": tid}}}
            )

    # properties ------------------------------------------------------------------------

    @invariant()
    def no_task_silently_disappears(self) -> None:
        """Every launched task is still known to the master (live or completed), or its
        framework heard a terminal state for it, or its framework is gone."""
        for stream in self.h.streams.values():
            for event in stream:
                if event["type"] == "UPDATE":
                    status = event["update"]["status"]
                    if task_states.is_terminal(status["state"]):
                        self.answered.add(status["task_id"]["value"])
        m = self.h.master
        for tid, fid in self.launched.items():
            fw = m.frameworks.get(fid)
            if fw is None or tid in self.answered:
                continue
            known = tid in fw.tasks or any(t.task_id == tid for t in fw.completed_tasks)
            assert known, f"task {tid} of {fid} vanished without a terminal update"


MasterEvents.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_master_event_sequences = MasterEvents.TestCase
