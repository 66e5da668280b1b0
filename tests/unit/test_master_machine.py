"""The master core driven event by event, with a fake clock; invariants checked after each
step by the harness."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from master_kit import Harness, call, command_task, launch_body

from butte.core import internal
from butte.core.messages import ID, FrameworkInfo, TaskStatus
from butte.core.resources import Resources, parse_resources
from butte.master import operator_views
from butte.master.machine import MasterOptions


def _cluster(**fw_info):
    h = Harness()
    agent_id = h.register_agent("c1")
    fid, stream = h.subscribe(**fw_info)
    h.allocate()
    offers = h.offers(stream)
    return h, agent_id, fid, stream, offers


def group_body(offer: dict, executor: dict, *tasks: dict, refuse_seconds: float = 5) -> dict:
    """An ACCEPT of ``offer`` launching ``tasks`` as one group under ``executor``."""
    group = {"executor": executor, "task_group": {"tasks": list(tasks)}}
    return {
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH_GROUP", "launch_group": group}],
            "filters": {"refuse_seconds": refuse_seconds},
        },
    }


def test_subscribe_sends_subscribed_then_heartbeat():
    h = Harness()
    fid, stream = h.subscribe("alpha")
    events = h.events(stream)
    assert [e["type"] for e in events[:2]] == ["SUBSCRIBED", "HEARTBEAT"]
    assert fid == "M-0000"
    assert events[0]["subscribed"]["heartbeat_interval_seconds"] == 15.0
    assert events[0]["subscribed"]["master_info"]["address"]["port"] == 5050


def test_agent_resources_are_offered_in_one_event_with_role_and_allocation_info():
    h, agent_id, fid, stream, offers = _cluster()
    assert agent_id == "M-S0"
    assert len(offers) == 1
    offer = offers[0]
    assert offer["framework_id"] == {"value": fid}
    assert offer["agent_id"] == {"value": agent_id}
    assert offer["allocation_info"] == {"role": "*"}
    names = {r["name"]: r for r in offer["resources"]}
    assert names["cpus"]["scalar"] == {"value": 4.0}
    assert names["cpus"]["role"] == "*"
    assert names["cpus"]["allocation_info"] == {"role": "*"}
    assert names["ports"]["ranges"] == {"range": [{"begin": 31000, "end": 32000}]}
    assert offer["url"]["address"] == {"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": 5051}


def test_launch_update_acknowledge_and_resources_come_back():
    h, agent_id, fid, stream, offers = _cluster()
    task = command_task("t1", offers[0])
    assert h.call(fid, stream, launch_body(offers[0], task, refuse_seconds=0)).status == 202
    runs = h.agent_messages("c1", internal.RunTask)
    assert [r.task.task_id.value for r in runs] == ["t1"]
    assert runs[0].framework.id == ID(fid)
    # The unused part was recovered without a filter: offered again at once.
    h.allocate()
    rest = h.offers(stream)
    assert {r["name"]: r["scalar"]["value"] for r in rest[0]["resources"] if "scalar" in r}[
        "cpus"
    ] == 3.0

    uid = h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    [status] = h.updates(stream)
    assert status["state"] == "TASK_RUNNING" and status["uuid"] == uid
    assert status["agent_id"] == {"value": agent_id}
    h.call(
        fid,
        stream,
        {
            "type": "ACKNOWLEDGE",
            "acknowledge": {
                "agent_id": {"value": agent_id},
                "task_id": {"value": "t1"},
                "uuid": uid,
            },
        },
    )
    acks = h.agent_messages("c1", internal.StatusUpdateAck)
    assert acks[-1].uuid == uid

    uid = h.status_update("c1", fid, "t1", "TASK_FINISHED", agent_id)
    assert h.updates(stream)[0]["state"] == "TASK_FINISHED"
    h.call(
        fid,
        stream,
        {
            "type": "ACKNOWLEDGE",
            "acknowledge": {
                "agent_id": {"value": agent_id},
                "task_id": {"value": "t1"},
                "uuid": uid,
            },
        },
    )
    fw = h.master.frameworks[fid]
    assert "t1" not in fw.tasks and fw.completed_tasks[-1].state == "TASK_FINISHED"
    # Decline what is outstanding, then everything comes back as one full offer.
    h.call(
        fid,
        stream,
        {
            "type": "DECLINE",
            "decline": {"offer_ids": [rest[0]["id"]], "filters": {"refuse_seconds": 0}},
        },
    )
    h.allocate()
    [full] = h.offers(stream)
    cpus = [r for r in full["resources"] if r["name"] == "cpus"][0]
    assert cpus["scalar"]["value"] == 4.0


def test_invalid_offer_drops_tasks_without_uuid():
    h, agent_id, fid, stream, offers = _cluster()
    bogus = {**offers[0], "id": {"value": "nope"}}
    h.call(fid, stream, launch_body(bogus, command_task("t1", offers[0])))
    [status] = h.updates(stream)
    assert status["state"] == "TASK_LOST"
    assert status["reason"] == "REASON_INVALID_OFFERS"
    assert status["source"] == "SOURCE_MASTER"
    assert "uuid" not in status


def test_invalid_offer_is_dropped_for_partition_aware_frameworks():
    h, agent_id, fid, stream, offers = _cluster(capabilities=[{"type": "PARTITION_AWARE"}])
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.call(fid, stream, launch_body(offers[0], command_task("t2", offers[0])))
    [status] = h.updates(stream)
    assert status["state"] == "TASK_DROPPED" and status["task_id"] == {"value": "t2"}


def test_invalid_tasks_get_task_error():
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    both = command_task(
        "both", offer, executor={"executor_id": {"value": "e"}, "command": {"value": "x"}}
    )
    neither = {k: v for k, v in command_task("neither", offer).items() if k != "command"}
    greedy = command_task("greedy", offer, resources="cpus:64;mem:1")
    bad_res = command_task("badres", offer)
    bad_res["resources"] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": -1}}]
    slash = command_task("a/b", offer)
    dup1, dup2 = command_task("dup", offer), command_task("dup", offer)
    gpu = command_task("gpu", offer, resources="cpus:1;gpus:0.5")
    h.call(fid, stream, launch_body(offer, both, neither, greedy, bad_res, slash, dup1, dup2, gpu))
    statuses = {s["task_id"]["value"] + str(i): s for i, s in enumerate(h.updates(stream))}
    errors = [s for s in statuses.values() if s["state"] == "TASK_ERROR"]
    assert {s["task_id"]["value"] for s in errors} == {
        "both",
        "neither",
        "greedy",
        "badres",
        "a/b",
        "dup",
        "gpu",
    }
    assert all(s["reason"] == "REASON_TASK_INVALID" and "uuid" not in s for s in errors)
    assert len(h.agent_messages("c1", internal.RunTask)) == 1  # only the first "dup"


def test_decline_filter_holds_until_expiry_and_revive_clears_it():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(
        fid,
        stream,
        {
            "type": "DECLINE",
            "decline": {"offer_ids": [offers[0]["id"]], "filters": {"refuse_seconds": 10}},
        },
    )
    h.allocate()
    assert h.offers(stream) == []
    h.clock.advance(11)
    h.allocate()
    again = h.offers(stream)
    assert len(again) == 1
    h.call(
        fid,
        stream,
        {
            "type": "DECLINE",
            "decline": {"offer_ids": [again[0]["id"]], "filters": {"refuse_seconds": 1000}},
        },
    )
    h.allocate()
    assert h.offers(stream) == []
    h.call(fid, stream, {"type": "REVIVE"})
    h.allocate()
    assert len(h.offers(stream)) == 1


def test_suppress_stops_offers():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, {"type": "SUPPRESS"})
    h.call(
        fid,
        stream,
        {
            "type": "DECLINE",
            "decline": {"offer_ids": [offers[0]["id"]], "filters": {"refuse_seconds": 0}},
        },
    )
    h.allocate()
    assert h.offers(stream) == []
    refused = h.call(fid, stream, {"type": "SUPPRESS", "suppress": {"roles": ["nope"]}})
    assert refused.status == 400
    assert (
        refused.message == "suppression role 'nope' is not one of the framework's subscribed roles"
    )
    refused = h.call(fid, stream, {"type": "REVIVE", "revive": {"roles": ["-bad"]}})
    assert refused.status == 400 and refused.message.startswith("revive role '-bad' is invalid")


def test_call_errors_match_mesos():
    h, agent_id, fid, stream, offers = _cluster(failover_timeout=60)
    assert h.call("unknown", stream, {"type": "REVIVE"}).status == 400
    no_stream = call({"type": "REVIVE", "framework_id": {"value": fid}})
    assert h.master.scheduler_call(no_stream, None, h.now())[0].status == 400
    assert h.call(fid, "other-stream", {"type": "REVIVE"}).status == 400
    bad_uuid = h.call(
        fid,
        stream,
        {
            "type": "ACKNOWLEDGE",
            "acknowledge": {
                "agent_id": {"value": agent_id},
                "task_id": {"value": "t"},
                "uuid": "abc",
            },
        },
    )
    assert bad_uuid.status == 400
    message = {"agent_id": {"value": agent_id}, "executor_id": {"value": "e"}, "data": "%%"}
    bad_data = h.call(fid, stream, {"type": "MESSAGE", "message": message})
    assert bad_data.status == 400  # Mesos: "Failed to base64 decode bytes field 'data'"
    h.pump(h.master.framework_disconnected(stream, h.now()))
    assert h.call(fid, stream, {"type": "REVIVE"}).status == 403


def test_multi_role_validation():
    h = Harness()
    bad = call(
        {
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"user": "u", "name": "n", "roles": ["a"]}},
        }
    )
    assert h.master.subscribe(bad, "s", h.now())[0].status == 400
    bad_role = call(
        {
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"user": "u", "name": "n", "role": "-x"}},
        }
    )
    assert h.master.subscribe(bad_role, "s", h.now())[0].status == 400
    fid, stream = h.subscribe(roles=["a", "b/c"], capabilities=[{"type": "MULTI_ROLE"}])
    assert h.master.frameworks[fid].roles == ["a", "b/c"]


def test_failover_timeout_removes_framework_and_kills_tasks():
    h, agent_id, fid, stream, offers = _cluster(failover_timeout=30)
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.pump(h.master.framework_disconnected(stream, h.now()))
    h.clock.advance(29)
    h.pump(h.master.tick(h.now()))
    assert fid in h.master.frameworks
    h.clock.advance(2)
    h.pump(h.master.tick(h.now()))
    assert fid not in h.master.frameworks
    shutdowns = h.agent_messages("c1", internal.ShutdownFramework)
    assert shutdowns and shutdowns[-1].framework_id == ID(fid)
    # The removed framework cannot come back.
    _, s2 = h.subscribe(id={"value": fid})
    assert h.events(s2)[0] == {"type": "ERROR", "error": {"message": "Framework has been removed"}}


def test_resubscribe_closes_old_stream_and_keeps_tasks():
    h, agent_id, fid, stream, offers = _cluster(failover_timeout=100)
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    fid2, stream2 = h.subscribe(id={"value": fid})
    assert fid2 == fid
    assert h.events(stream)[-1] == {"type": "ERROR", "error": {"message": "Framework failed over"}}
    assert stream in h.closed_streams
    assert "t1" in h.master.frameworks[fid].tasks
    h.call(fid, stream2, {"type": "RECONCILE", "reconcile": {"tasks": []}})
    [status] = h.updates(stream2)
    assert status["state"] == "TASK_STAGING" and status["reason"] == "REASON_RECONCILIATION"


def test_explicit_reconciliation_of_unknown_tasks():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(
        fid,
        stream,
        {
            "type": "RECONCILE",
            "reconcile": {
                "tasks": [
                    {"task_id": {"value": "x"}, "agent_id": {"value": agent_id}},
                    {"task_id": {"value": "y"}, "agent_id": {"value": "M-S99"}},
                    {"task_id": {"value": "z"}},
                ]
            },
        },
    )
    states = {s["task_id"]["value"]: s["state"] for s in h.updates(stream)}
    # Not partition-aware: TASK_GONE and TASK_UNKNOWN become TASK_LOST.
    assert states == {"x": "TASK_LOST", "y": "TASK_LOST", "z": "TASK_LOST"}

    h2, agent2, fid2, stream2, _ = _cluster(capabilities=[{"type": "PARTITION_AWARE"}])
    h2.call(
        fid2,
        stream2,
        {
            "type": "RECONCILE",
            "reconcile": {
                "tasks": [
                    {"task_id": {"value": "x"}, "agent_id": {"value": agent2}},
                    {"task_id": {"value": "y"}, "agent_id": {"value": "M-S99"}},
                ]
            },
        },
    )
    states = {s["task_id"]["value"]: s["state"] for s in h2.updates(stream2)}
    assert states == {"x": "TASK_GONE", "y": "TASK_UNKNOWN"}


def test_kill_of_unknown_task_answers_like_reconciliation():
    h, agent_id, fid, stream, offers = _cluster(capabilities=[{"type": "PARTITION_AWARE"}])
    h.call(
        fid,
        stream,
        {"type": "KILL", "kill": {"task_id": {"value": "ghost"}, "agent_id": {"value": agent_id}}},
    )
    [status] = h.updates(stream)
    assert status["state"] == "TASK_GONE"
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.call(fid, stream, {"type": "KILL", "kill": {"task_id": {"value": "t1"}}})
    kills = h.agent_messages("c1", internal.KillTask)
    assert kills[-1].task_id == ID("t1")


def test_agent_disconnect_rescinds_offers_and_loses_non_checkpointed_tasks():
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    h.call(fid, stream, launch_body(offer, command_task("t1", offer), refuse_seconds=0))
    h.allocate()
    outstanding = h.offers(stream)
    assert outstanding
    h.pump(h.master.agent_disconnected("c1", h.now()))
    rescinds = h.take(stream, "RESCIND")
    assert rescinds[0]["rescind"]["offer_id"] == outstanding[0]["id"]
    [lost] = h.updates(stream)
    assert lost["state"] == "TASK_LOST" and lost["reason"] == "REASON_AGENT_DISCONNECTED"


def test_missed_pings_make_the_agent_unreachable():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2))
    agent_id = h.register_agent("c1")
    fid, stream = h.subscribe(capabilities=[{"type": "PARTITION_AWARE"}], checkpoint=True)
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer)))
    for _ in range(3):
        h.pump(h.master.ping_agents(h.now()))
    assert agent_id not in h.master.agents
    [status] = h.updates(stream)
    assert status["state"] == "TASK_UNREACHABLE" and "unreachable_time" in status
    assert h.take(stream, "FAILURE")[0]["failure"] == {"agent_id": {"value": agent_id}}
    h.call(
        fid,
        stream,
        {
            "type": "RECONCILE",
            "reconcile": {"tasks": [{"task_id": {"value": "t1"}, "agent_id": {"value": agent_id}}]},
        },
    )
    assert h.updates(stream)[0]["state"] == "TASK_UNREACHABLE"


def test_pong_keeps_the_agent():
    h = Harness(MasterOptions(max_agent_ping_timeouts=2))
    agent_id = h.register_agent("c1")
    for _ in range(5):
        h.pump(h.master.ping_agents(h.now()))
        h.pump(h.master.agent_message("c1", internal.Pong(), "127.0.0.1", h.now()))
    assert agent_id in h.master.agents


def test_new_master_rebuilds_from_reregistering_agent_and_resubscribing_framework():
    # A master that lost its memory: the agent reports its task, the framework comes back.
    h = Harness()
    fw_info = FrameworkInfo(user="root", name="fw", id=ID("OLD-0000"), failover_timeout=60)
    task = internal.Task(
        name="t1",
        task_id=ID("t1"),
        framework_id=ID("OLD-0000"),
        agent_id=ID("OLD-S3"),
        state="TASK_RUNNING",
        resources=[
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 1},
                "allocation_info": {"role": "*"},
            }
        ],
    )
    agent_id = h.register_agent("c9", agent_id="OLD-S3", frameworks=[fw_info], tasks=[task])
    assert agent_id == "OLD-S3"
    fw = h.master.frameworks["OLD-0000"]
    assert fw.recovered and not fw.connected
    fid, stream = h.subscribe(id={"value": "OLD-0000"}, failover_timeout=60)
    assert fid == "OLD-0000"
    h.call(
        fid, stream, {"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "t1"}}]}}
    )
    [status] = h.updates(stream)
    assert status["state"] == "TASK_RUNNING"
    h.allocate()
    [offer] = h.offers(stream)
    cpus = [r for r in offer["resources"] if r["name"] == "cpus"][0]
    assert cpus["scalar"]["value"] == 3.0  # the running task's cpu stays allocated


def test_teardown_removes_everything():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    assert h.call(fid, stream, {"type": "TEARDOWN"}).status == 202
    assert stream in h.closed_streams
    assert fid not in h.master.frameworks
    assert h.master.completed_frameworks[-1].completed_tasks[-1].state == "TASK_KILLED"
    assert not h.master.offers


def test_tasks_the_master_ends_are_counted_with_their_reason():
    """Mesos' updateTask counts every end, the master's own too (a teardown's TASK_KILLED),
    as master/tasks_<state> and master/<state>/<source>/<reason>."""
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    assert h.call(fid, stream, {"type": "TEARDOWN"}).status == 202
    counters = h.master.counters
    assert counters["tasks_killed"] == 1
    assert counters["task_killed/source_master/reason_framework_removed"] == 1


def test_status_updates_and_acknowledgements_are_counted_valid_or_invalid():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    uid = h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    h.status_update("c1", "no-such-framework", "t1", "TASK_RUNNING", agent_id)
    ack = {"agent_id": {"value": agent_id}, "task_id": {"value": "t1"}, "uuid": uid}
    h.call(fid, stream, {"type": "ACKNOWLEDGE", "acknowledge": ack})
    gone = dict(ack, agent_id={"value": "no-such-agent"})
    h.call(fid, stream, {"type": "ACKNOWLEDGE", "acknowledge": gone})
    counters = h.master.counters
    assert counters["valid_status_updates"] == counters["invalid_status_updates"] == 1
    assert counters["valid_status_update_acknowledgements"] == 1
    assert counters["invalid_status_update_acknowledgements"] == 1


def test_latest_state_ends_a_task_whose_updates_wait_for_acknowledgements():
    """Mesos' updateTask takes a task to the agent's latest state while earlier updates wait
    for the framework's acknowledgement: it is terminal and its resources free at once."""
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id, latest_state="TASK_FINISHED")
    task = h.master.frameworks[fid].tasks["t1"]
    assert task.state == "TASK_FINISHED"
    assert [u["state"] for u in h.updates(stream)] == ["TASK_RUNNING"]  # as the agent sent it
    assert h.master.counters["tasks_finished"] == 1
    assert operator_views.framework_used(h.master.frameworks[fid], h.master).quantities() == {}
    h.status_update("c1", fid, "t1", "TASK_FINISHED", agent_id)
    assert h.master.counters["tasks_finished"] == 1  # counted once


def test_teardown_keeps_the_end_of_a_task_that_had_ended():
    """Mesos' master ignores an update of a terminal task: a task FINISHED (not yet
    acknowledged) stays FINISHED when its framework is removed, and no status is added."""
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_FINISHED", agent_id)
    assert h.call(fid, stream, {"type": "TEARDOWN"}).status == 202
    (task,) = h.master.completed_frameworks[-1].completed_tasks
    assert task.state == "TASK_FINISHED"
    assert [s.state for s in task.statuses] == ["TASK_FINISHED"]


def test_update_from_agent_without_uuid_retry_is_recorded_once():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    uid = h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    # The agent resends the same update (no ack yet): forwarded again, recorded once.
    again = TaskStatus(task_id=ID("t1"), state="TASK_RUNNING", uuid=uid, agent_id=ID(agent_id))
    h.pump(
        h.master.agent_message(
            "c1", internal.StatusUpdate(framework_id=ID(fid), status=again), "127.0.0.1", h.now()
        )
    )
    assert len(h.updates(stream)) == 2
    assert len(h.master.frameworks[fid].tasks["t1"].statuses) == 1
    assert base64.b64decode(uid)


def test_statuses_of_one_state_collapse_and_keep_no_data():
    """Mesos' master keeps one status per run of a state (health and check updates of a
    running task replace each other) and drops status data (MESOS-1746)."""
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_STARTING", agent_id)
    for healthy in (True, False, True):
        h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id, healthy=healthy, data="eA==")
    h.status_update("c1", fid, "t1", "TASK_FINISHED", agent_id)
    task = h.master.frameworks[fid].tasks["t1"]  # terminal, until acknowledged
    assert [(s.state, s.healthy) for s in task.statuses] == [
        ("TASK_STARTING", None),
        ("TASK_RUNNING", True),
        ("TASK_FINISHED", None),
    ]
    assert all(s.data is None for s in task.statuses)
    # The framework still got every update, data included.
    running = [u for u in h.updates(stream) if u["state"] == "TASK_RUNNING"]
    assert len(running) == 3 and all(u["data"] == "eA==" for u in running)


def test_deactivate_rescinds_offers_and_survives_reconnection():
    h, agent_id, fid, stream, offers = _cluster()
    assert h.found(h.master.deactivate_agent(agent_id, h.now()))
    assert h.take(stream, "RESCIND")[0]["rescind"]["offer_id"] == offers[0]["id"]
    h.pump(h.master.agent_disconnected("c1", h.now()))
    h.register_agent("c2", agent_id=agent_id)
    h.allocate()
    assert h.offers(stream) == []
    error, effects = h.master.reactivate_agent(agent_id, h.now())
    assert error is None
    h.pump(effects)
    h.allocate()
    assert len(h.offers(stream)) == 1
    assert h.master.deactivate_agent("M-S404", h.now()) is None


def test_drain_kills_tasks_with_the_grace_period_then_marks_the_agent_gone():
    h, agent_id, fid, stream, offers = _cluster(capabilities=[{"type": "PARTITION_AWARE"}])
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    assert h.found(h.master.drain_agent(agent_id, 2.0, True, h.now()))
    [kill] = h.agent_messages("c1", internal.KillTask)
    assert kill.task_id == ID("t1") and kill.kill_policy.grace_period.nanoseconds == 2_000_000_000
    h.pump(h.master.tick(h.now()))
    assert h.master.agents[agent_id].drain.state == "DRAINING"
    h.status_update("c1", fid, "t1", "TASK_KILLED", agent_id)
    h.pump(h.master.tick(h.now()))
    assert agent_id in h.master.gone_agents and agent_id not in h.master.agents
    assert h.agent_messages("c1", internal.ShutdownAgent)


def test_resource_values_from_outside_are_range_checked_per_task():
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    huge = command_task("huge", offer)
    huge["resources"] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1e308}}]
    ranged = command_task("ranged", offer)
    ranged["resources"] = [
        {"name": "cpus", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 2}]}}
    ]
    good = command_task("good", offer)
    h.call(fid, stream, launch_body(offer, huge, ranged, good, refuse_seconds=0))
    states = {s["task_id"]["value"]: s["state"] for s in h.updates(stream)}
    assert states == {"huge": "TASK_ERROR", "ranged": "TASK_ERROR"}
    assert len(h.agent_messages("c1", internal.RunTask)) == 1  # "good"
    # What "good" did not use is offered again.
    h.allocate()
    [again] = h.offers(stream)
    scalars = {r["name"]: r["scalar"]["value"] for r in again["resources"] if "scalar" in r}
    total = {r["name"]: r["scalar"]["value"] for r in offer["resources"] if "scalar" in r}
    assert scalars["cpus"] == total["cpus"] - 1


def test_an_accept_with_an_unknown_operation_type_is_refused_whole():
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    body = launch_body(offer, command_task("t1", offer))
    odd = {"type": "FROBNICATE", "id": {"value": "op-1"}}
    body["accept"]["operations"].insert(0, odd)
    assert h.call(fid, stream, body).status == 202
    [status] = h.updates(stream)
    assert status["state"] == "TASK_ERROR" and "FROBNICATE" in status["message"]
    [op] = h.take(stream, "UPDATE_OPERATION_STATUS")
    op_status = op["update_operation_status"]["status"]
    assert op_status["operation_id"] == {"value": "op-1"}
    assert op_status["state"] == "OPERATION_ERROR"
    assert h.agent_messages("c1", internal.RunTask) == []
    h.allocate()
    [again] = h.offers(stream)  # the whole offer came back
    assert again["resources"] == offer["resources"]


def test_completed_tasks_kept_per_framework_follow_the_flag():
    h = Harness(MasterOptions(max_completed_tasks_per_framework=2))
    agent_id = h.register_agent("c1")
    fid, stream = h.subscribe()
    h.allocate()
    [offer] = h.offers(stream)
    tasks = [command_task(f"t{i}", offer, resources="cpus:0.1;mem:8") for i in range(4)]
    h.call(fid, stream, launch_body(offer, *tasks))
    for i in range(4):
        uid = h.status_update("c1", fid, f"t{i}", "TASK_FINISHED", agent_id)
        ack = {"agent_id": {"value": agent_id}, "task_id": {"value": f"t{i}"}, "uuid": uid}
        h.call(fid, stream, {"type": "ACKNOWLEDGE", "acknowledge": ack})
    completed = h.master.frameworks[fid].completed_tasks
    assert [t.task_id for t in completed] == ["t2", "t3"]


def test_a_default_executor_with_a_command_of_its_own_is_refused():
    """The agent runs its own default executor for a task group; a framework's command there
    would run instead of it (as Mesos does, the master refuses it)."""
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    member = command_task("m", offer)
    executor = {"executor_id": {"value": "g1"}, "type": "DEFAULT", "command": {"value": "x"}}
    h.call(fid, stream, group_body(offer, executor, member))
    [status] = h.updates(stream)
    assert status["state"] == "TASK_ERROR"
    assert "'ExecutorInfo.command' must not be set for 'DEFAULT' executor" in status["message"]
    assert h.agent_messages("c1", internal.RunTaskGroup) == []


def test_task_fields_the_master_checks_are_refused_before_reaching_the_agent():
    """Limits, a bad environment and a ContainerInfo field butte does not implement are each
    TASK_ERROR from the master (Mesos' messages), in a LAUNCH and in a LAUNCH_GROUP."""
    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    limited = {**command_task("lim", offer), "limits": {"mem": {"value": 64}}}
    capped = {
        **command_task("cap", offer),
        "container": {"type": "MESOS", "rlimit_info": {"rlimits": []}},
    }
    h.call(fid, stream, launch_body(offer, limited, capped, refuse_seconds=0))
    messages = {s["task_id"]["value"]: s for s in h.updates(stream)}
    assert messages["lim"]["state"] == "TASK_ERROR"
    assert messages["lim"]["message"] == (
        "The memory limit must be greater than or equal to the memory request"
    )
    assert "'posix/rlimits'" in messages["cap"]["message"]
    assert h.agent_messages("c1", internal.RunTask) == []

    h.allocate()
    [offer] = h.offers(stream)
    member = command_task("m", offer)
    member["command"]["environment"] = {"variables": [{"name": "X", "type": "VALUE"}]}
    executor = {"executor_id": {"value": "g1"}, "type": "DEFAULT"}
    h.call(fid, stream, group_body(offer, executor, member, refuse_seconds=0))
    [status] = h.updates(stream)
    assert status["state"] == "TASK_ERROR"
    assert status["message"] == (
        "Task's `CommandInfo` is invalid: "
        "Environment variable 'X' of type 'VALUE' must have a value set"
    )
    assert h.agent_messages("c1", internal.RunTaskGroup) == []

    h.allocate()
    [offer] = h.offers(stream)
    member = command_task("m2", offer)
    shared = {"type": "MESOS", "linux_info": {"share_pid_namespace": True}}
    h.call(
        fid, stream, group_body(offer, {**executor, "container": shared}, member, refuse_seconds=0)
    )
    [status] = h.updates(stream)
    assert "'share_pid_namespace' is supported for command tasks only" in status["message"]

    h.allocate()
    [offer] = h.offers(stream)
    member = {**command_task("m3", offer), "limits": {"cpus": {"value": "Infinity"}}}
    h.call(fid, stream, group_body(offer, executor, member, refuse_seconds=0))
    [status] = h.updates(stream)
    assert status["message"] == (
        "Resource limits may only be set for tasks within a task group when "
        "the 'share_cgroups' field is set to 'false'."
    )
    assert h.agent_messages("c1", internal.RunTaskGroup) == []


def test_legacy_state_lists_a_groups_executor_and_its_members_name_it():
    """/master/state, as Mesos': a task group's members carry their executor's id and the
    framework's ``executors`` list it with its agent; a command task's executor_id is empty."""
    from butte.master.state_json import legacy_framework

    h, agent_id, fid, stream, offers = _cluster()
    offer = offers[0]
    member = command_task("m", offer, resources="cpus:0.5;mem:64")
    plain = command_task("plain", offer, resources="cpus:0.5;mem:64")
    executor = {
        "executor_id": {"value": "g1"},
        "type": "DEFAULT",
        "name": "group",
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
    }
    body = group_body(offer, executor, member)
    body["accept"]["operations"].append({"type": "LAUNCH", "launch": {"task_infos": [plain]}})
    assert h.call(fid, stream, body).status == 202
    state = legacy_framework(h.master, h.master.frameworks[fid])
    by_id = {t["id"]: t for t in state["tasks"]}
    assert by_id["m"]["executor_id"] == "g1"
    assert by_id["plain"]["executor_id"] == ""
    [listed] = state["executors"]
    assert listed["executor_id"] == "g1" and listed["slave_id"] == agent_id
    assert listed["name"] == "group" and listed["framework_id"] == fid
    assert listed["resources"]["cpus"] == 0.1
    # The statuses the master makes name the executor too (Mesos' removals pass it).
    h.updates(stream)
    h.pump(h.master.agent_message("c1", internal.UnregisterAgent(), "127.0.0.1", h.now()))
    lost = {u["task_id"]["value"]: u for u in h.updates(stream)}
    assert lost["m"]["executor_id"] == {"value": "g1"} and "executor_id" not in lost["plain"]


def _executor_task(task_id: str, offer: dict) -> dict:
    """A task of a custom executor (its own resources: cpus 0.1, mem 32)."""
    task = command_task(task_id, offer, resources="cpus:0.5;mem:64")
    del task["command"]
    task["executor"] = {
        "executor_id": {"value": f"E-{task_id}"},
        "type": "CUSTOM",
        "command": {"value": "exec-me"},
        "resources": parse_resources("cpus:0.1;mem:32").to_json(),
    }
    return task


def test_failure_of_an_executor_always_carries_a_status():
    # pymesos reads FAILURE's status unconditionally; Mesos' agent says -1 when unknown.
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], _executor_task("t1", offers[0])))
    exited = internal.ExecutorExited(framework_id=ID(fid), executor_id=ID("E-t1"))
    h.pump(h.master.agent_message("c1", exited, "127.0.0.1", h.now()))
    [failure] = h.take(stream, "FAILURE")
    assert failure["failure"] == {
        "agent_id": {"value": agent_id},
        "executor_id": {"value": "E-t1"},
        "status": -1,
    }


def test_a_kill_while_the_agent_is_away_is_sent_when_it_is_back():
    h, agent_id, fid, stream, offers = _cluster(checkpoint=True)
    h.call(fid, stream, launch_body(offers[0], command_task("t1", offers[0])))
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    h.pump(h.master.agent_disconnected("c1", h.now()))
    policy = {"grace_period": {"nanoseconds": 7}}
    h.call(
        fid, stream, {"type": "KILL", "kill": {"task_id": {"value": "t1"}, "kill_policy": policy}}
    )
    assert h.agent_messages("c1", internal.KillTask) == []
    running = internal.Task(
        name="t1",
        task_id=ID("t1"),
        framework_id=ID(fid),
        agent_id=ID(agent_id),
        state="TASK_RUNNING",
        resources=parse_resources("cpus:1;mem:128").to_json(),
    )
    framework = FrameworkInfo(user="root", name="fw", id=ID(fid), checkpoint=True)
    info = internal.AgentInfo(
        hostname="127.0.0.1", port=5051, resources=h.master.agents[agent_id].info.resources
    )
    info = msgspec.structs.replace(info, id=ID(agent_id))
    again = internal.RegisterAgent(
        agent_info=info, version="0.1.0", tasks=[running], frameworks=[framework]
    )
    h.pump(h.master.agent_message("c2", again, "127.0.0.1", h.now()))
    reregistered, kill = h.agent_inbox["c2"]  # answered first, as in Mesos
    assert isinstance(reregistered, internal.AgentReregistered)
    assert kill.task_id == ID("t1") and kill.kill_policy.grace_period.nanoseconds == 7
    assert h.master.agents[agent_id].pending_kills == {}


def test_a_non_checkpointing_frameworks_executor_is_gone_with_its_agents_connection():
    h, agent_id, fid, stream, offers = _cluster()
    h.call(fid, stream, launch_body(offers[0], _executor_task("t1", offers[0])))
    agent = h.master.agents[agent_id]
    assert agent.executors
    h.pump(h.master.agent_disconnected("c1", h.now()))
    [lost] = h.updates(stream)
    assert lost["state"] == "TASK_LOST" and lost["message"] == "Agent 127.0.0.1 disconnected"
    assert agent.executors == {} and not h.master.frameworks[fid].executors.get(agent_id)
    # Nothing of it is counted as used any more.
    h.register_agent("c2", agent_id=agent_id)
    h.allocate()
    [offer] = h.offers(stream)
    assert Resources.from_json(offer["resources"]) == agent.total
    h.master.check_invariants()


def test_subscribe_validation_as_mesos_does_it():
    h = Harness()
    fid, stream = h.subscribe(principal="p1", failover_timeout=60)

    def subscribe(framework_id: dict | None, **info: Any) -> Any:
        body: dict[str, Any] = {
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"user": "root", "name": "fw", **info}},
        }
        if framework_id is not None:
            body["framework_id"] = framework_id
        result, effects = h.master.subscribe(call(body), "other", h.now())
        h.pump(effects)
        return result

    # An id in framework_info alone would take over the live framework: refused.
    result = subscribe(None, id={"value": fid})
    assert result.status == 400
    assert result.message == (
        "Failed to validate scheduler::Call: "
        "'framework_id' differs from 'subscribe.framework_info.id'"
    )
    # Another principal: the new subscriber is told; the old one keeps its stream.
    result = subscribe({"value": fid}, id={"value": fid}, principal="p2")
    assert result.stream_error == "Changing framework's principal is not allowed."
    assert h.master.frameworks[fid].stream_id == stream
    assert h.master.frameworks[fid].info.principal == "p1"
    # A failover timeout no duration can hold.
    result = subscribe(None, failover_timeout=1e300)
    assert result.status == 400
    assert result.message == "The framework failover_timeout (1e+300) is invalid"


def test_quota_consumption_counts_what_is_used_and_reserved_not_what_is_offered():
    """Mesos' master reports and checks UPDATE_QUOTA against RoleResourceBreakdown::
    consumedQuota: what tasks use plus unallocated reservations; an outstanding offer is
    not consumption (the allocator's own view, which enforces limits, counts it)."""
    h = Harness()
    h.register_agent("c1")
    fid, stream = h.subscribe(role="web")
    h.allocate()
    [offer] = h.offers(stream)
    assert operator_views.quota_consumption(h.master).get("web", {}) == {}
    assert h.master.allocator.consumed_quota("web")["cpus"] == 4000
    h.call(fid, stream, launch_body(offer, command_task("t1", offer)))
    assert operator_views.quota_consumption(h.master)["web"]["cpus"] == 1000
