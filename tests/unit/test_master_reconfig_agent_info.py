"""The master taking the new AgentInfo of an agent restarted under
``--reconfiguration_policy=additive`` (Mesos' reregisterSlave with a changed SlaveInfo):
its total (reservations kept, additions joined) and attributes change in the records, the
allocator's offers, GET_AGENTS and the registry, also after a master failover."""

from __future__ import annotations

from typing import Any

from master_kit import Harness, command_task, launch_body

from butte.coord.interface import AdmitAgent, RegistryState
from butte.core import internal
from butte.core import task_states as ts
from butte.core.messages import ID
from butte.core.resources import Resources, parse_attributes, parse_resources
from butte.master import operator_views
from butte.master.effects import Effect, RegistryWrite

BEFORE = "cpus:2;mem:1024"
AFTER = "cpus:4;mem:1024;disk:100"


def message(
    agent_id: str | None,
    resources: str | list[dict[str, Any]],
    attributes: str = "rack:r1",
    tasks: list[internal.Task] | None = None,
) -> internal.RegisterAgent:
    res = parse_resources(resources).to_json() if isinstance(resources, str) else resources
    info = internal.AgentInfo(
        hostname="127.0.0.1",
        port=5051,
        resources=res,
        attributes=[a.to_json() for a in parse_attributes(attributes)],
        id=ID(agent_id) if agent_id is not None else None,
    )
    return internal.RegisterAgent(agent_info=info, version="0.1.0", tasks=tasks or [])


def send(h: Harness, conn: str, msg: internal.RegisterAgent) -> list[Effect]:
    return h.pump(h.master.agent_message(conn, msg, "127.0.0.1", h.now()))


def admitted(effects: list[Effect]) -> list[AdmitAgent]:
    return [
        e.operation
        for e in effects
        if isinstance(e, RegistryWrite) and isinstance(e.operation, AdmitAgent)
    ]


def running(h: Harness) -> tuple[str, str, str, internal.Task]:
    """An agent (BEFORE, rack:r1) with a RUNNING task of 1 cpu: (agent, framework, stream,
    the task as the agent reports it)."""
    send(h, "c1", message(None, BEFORE))
    agent_id = h.agent_inbox["c1"][-1].agent_id.value
    fid, stream = h.subscribe(checkpoint=True)  # its tasks outlive the disconnection
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer, "cpus:1;mem:128")))
    h.status_update("c1", fid, "t1", ts.RUNNING, agent_id)
    h.updates(stream)
    task = internal.Task(
        name="t1",
        task_id=ID("t1"),
        framework_id=ID(fid),
        agent_id=ID(agent_id),
        state=ts.RUNNING,
        resources=parse_resources("cpus:1;mem:128").to_json(),
    )
    return agent_id, fid, stream, task


def test_a_known_agent_back_with_more_resources_and_attributes_is_offered_them():
    h = Harness()
    agent_id, fid, stream, task = running(h)
    disconnect(h, "c1", h.now())
    effects = send(h, "c2", message(agent_id, AFTER, "rack:r1;zone:a", [task]))
    assert isinstance(h.agent_inbox["c2"][0], internal.AgentReregistered)
    agent = h.master.agents[agent_id]
    assert agent.total == parse_resources(AFTER)
    assert {a.name for a in agent.attributes} == {"rack", "zone"}
    assert h.master.frameworks[fid].tasks["t1"].state == ts.RUNNING
    # The registry holds the new AgentInfo.
    [record] = admitted(effects)
    assert Resources.from_json(record.info["resources"]) == parse_resources(AFTER)
    assert {a["name"] for a in record.info["attributes"]} == {"rack", "zone"}
    # GET_AGENTS shows it; the offer is the new total less the running task.
    [shown] = operator_views.get_agents(h.master)["agents"]
    assert Resources.from_json(shown["total_resources"]) == parse_resources(AFTER)
    assert {a["name"] for a in shown["agent_info"]["attributes"]} == {"rack", "zone"}
    h.clock.advance(10)
    h.allocate()
    [offer] = h.offers(stream)
    assert Resources.from_json(offer["resources"]) == parse_resources("cpus:3;mem:896;disk:100")
    assert {a["name"] for a in offer["attributes"]} == {"rack", "zone"}


def test_the_same_agent_info_writes_nothing():
    h = Harness()
    agent_id, _, _, task = running(h)
    disconnect(h, "c1", h.now())
    effects = send(h, "c2", message(agent_id, BEFORE, "rack:r1", [task]))
    assert admitted(effects) == []
    assert h.master.agents[agent_id].total == parse_resources(BEFORE)


def test_added_resources_join_the_reservations_the_master_made():
    h = Harness()
    send(h, "c1", message(None, BEFORE))
    agent_id = h.agent_inbox["c1"][-1].agent_id.value
    reserve = {"resources": [dyn_cpus(1)]}
    h.pump(h.master.operator_operation(agent_id, "RESERVE", reserve, None, h.now()))
    reserved = h.master.agents[agent_id].total
    disconnect(h, "c1", h.now())
    # The agent reports its checkpointed total plus what it now declares on top.
    reported = (reserved + parse_resources("cpus:2;disk:100")).to_json()
    effects = send(h, "c2", message(agent_id, reported))
    total = h.master.agents[agent_id].total
    assert total.reserved("web").scalar("cpus") == 1
    assert total.scalar("cpus") == 4 and total.scalar("disk") == 100
    assert not h.agent_messages("c2", internal.CheckpointResources)  # it agrees
    [record] = admitted(effects)
    assert Resources.from_json(record.info["resources"]) == total
    # An agent that missed the reservation and declares more: the master's view wins for
    # what it had, and it is told the total to checkpoint.
    disconnect(h, "c2", h.now())
    send(h, "c3", message(agent_id, "cpus:5;mem:1024;disk:100"))
    total = h.master.agents[agent_id].total
    assert total.reserved("web").scalar("cpus") == 1 and total.scalar("cpus") == 5
    [fix] = h.agent_messages("c3", internal.CheckpointResources)
    assert Resources.from_json(fix.resources) == total


def test_a_failed_over_master_records_the_new_agent_info():
    h = Harness()
    send(h, "c1", message(None, BEFORE))
    agent_id = h.agent_inbox["c1"][-1].agent_id.value
    [old] = [
        op
        for op in admitted(
            h.pump(
                h.master.operator_operation(
                    agent_id, "RESERVE", {"resources": [dyn_cpus(1)]}, None, h.now()
                )
            )
        )
    ]
    reserved = Resources.from_json(old.info["resources"])
    # A new master recovers the registry; the agent comes back with more.
    h2 = Harness()
    h2.pump(h2.master.recover_registry(RegistryState(agents={agent_id: old.info}), h2.now()))
    reported = (reserved + parse_resources("disk:100")).to_json()
    effects = send(h2, "c9", message(agent_id, reported, "rack:r1;zone:a"))
    total = h2.master.agents[agent_id].total
    assert total.reserved("web").scalar("cpus") == 1 and total.scalar("disk") == 100
    [record] = admitted(effects)
    assert Resources.from_json(record.info["resources"]) == total
    assert {a["name"] for a in record.info["attributes"]} == {"rack", "zone"}
    # A third master recovering that registry and seeing the agent as it was: no write.
    h3 = Harness()
    h3.pump(h3.master.recover_registry(RegistryState(agents={agent_id: record.info}), h3.now()))
    assert admitted(send(h3, "c7", message(agent_id, reported, "zone:a;rack:r1"))) == []
    assert h3.master.agents[agent_id].total == total


def disconnect(h: Harness, conn: str, now: float) -> None:
    h.pump(h.master.agent_disconnected(conn, now) or [])


def dyn_cpus(value: float) -> dict[str, Any]:
    return {
        "name": "cpus",
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": "web", "principal": "ops"}],
    }
