"""Dynamic reservations, persistent volumes and operation feedback in the master core
(RESERVE, UNRESERVE, CREATE, DESTROY, GROW_VOLUME, SHRINK_VOLUME from ACCEPT and from
operators), and the resource arithmetic they rest on."""

from __future__ import annotations

from typing import Any

import pytest

from butte.coord.interface import AdmitAgent, RegistryState
from butte.core import internal
from butte.core.resource_ops import OperationError, apply, declared, parse_operation
from butte.core.resources import ResourceError, Resources
from butte.master.acls import parse_acls
from butte.master.effects import RegistryWrite
from butte.master.machine import MasterOptions
from butte.master.offer_ops import OperatorRefusal
from tests.unit.master_kit import Harness, command_task

AGENT = "cpus:4;mem:4096;disk:10000;ports:[31000-32000]"


def dyn(name: str, value: float, role: str = "web", principal: str | None = "ops", **disk: Any):
    r: dict[str, Any] = {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": role, "principal": principal}],
    }
    if principal is None:
        del r["reservations"][0]["principal"]
    if disk:
        r["disk"] = disk
    return r


def volume(pid: str, size: float, path: str = "data", role: str = "web", principal: str = "ops"):
    return dyn(
        "disk",
        size,
        role,
        principal,
        persistence={"id": pid, "principal": principal},
        volume={"container_path": path, "mode": "RW"},
    )


# -- resources ---------------------------------------------------------------------------------


def test_disk_identity_is_part_of_the_key_and_round_trips():
    res = Resources.from_json([volume("v1", 100), dyn("disk", 50)])
    assert res.scalar("disk") == 150
    assert len(list(res.items())) == 2  # the volume and the plain reserved disk stay apart
    assert Resources.from_json(res.to_json("post")) == res
    [vol] = [r for r in res.to_json("post") if "disk" in r]
    assert vol["disk"]["persistence"] == {"id": "v1", "principal": "ops"}
    assert vol["disk"]["volume"] == {"container_path": "data", "mode": "RW"}


def test_a_volume_or_mount_disk_is_used_whole():
    vol = Resources.from_json([volume("v1", 100)])
    part = Resources.from_json([volume("v1", 40)])
    assert vol.contains(vol) and not vol.contains(part)
    mount = {"type": "MOUNT", "mount": {"root": "/mnt/d1"}}
    disk = Resources.from_json([{**dyn("disk", 100, role="web"), "disk": {"source": mount}}])
    half = Resources.from_json([{**dyn("disk", 50, role="web"), "disk": {"source": mount}}])
    assert not disk.contains(half)
    plain = Resources.from_json([dyn("disk", 100)])
    assert plain.contains(Resources.from_json([dyn("disk", 40)]))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "disk": {}},
        {**dyn("disk", 1), "disk": {"persistence": {"id": ""}}},
        {**dyn("disk", 1), "disk": {"volume": {"container_path": "x", "mode": "RWX"}}},
        {**dyn("disk", 1), "disk": {"source": {"type": "PATH", "path": {"root": "rel"}}}},
        {**dyn("disk", 1), "disk": {"source": {"type": "BLOCK"}}},
        {**dyn("disk", 1), "disk": {}},  # Mesos: DiskInfo is set but empty
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1e-7}},  # Mesos: value <= 0
    ],
)
def test_malformed_disk_info_and_amounts_below_a_thousandth_are_refused(bad):
    with pytest.raises(ResourceError):
        Resources.from_json([bad])


def test_reserve_then_unreserve_converts_back_and_keeps_quantities():
    pool = Resources.from_json(Resources.scalars(cpus=4, disk=100).to_json())
    reserve = parse_operation("RESERVE", {"resources": [dyn("cpus", 1)]}, "ops")
    reserved = apply(pool, reserve)
    assert reserved.quantities() == pool.quantities()
    assert reserved.reserved("web").scalar("cpus") == 1
    unreserve = parse_operation("UNRESERVE", {"resources": [dyn("cpus", 1)]}, None)
    assert apply(reserved, unreserve) == pool
    assert declared(reserved) == pool


def test_refined_reservation_must_lie_within_its_parent():
    stack = [
        {"type": "DYNAMIC", "role": "eng", "principal": "ops"},
        {"type": "DYNAMIC", "role": "eng/web", "principal": "ops"},
    ]
    ok = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "reservations": stack}
    conv = parse_operation("RESERVE", {"resources": [ok]}, None)
    assert [r.role for r in next(iter(conv.consumed.items()))[0][1]] == ["eng"]
    bad_stack = [stack[0], {"type": "DYNAMIC", "role": "ops", "principal": "ops"}]
    with pytest.raises(OperationError, match="is not a refinement of 'eng'"):
        parse_operation("RESERVE", {"resources": [{**ok, "reservations": bad_stack}]}, None)
    itself = [stack[0], stack[0]]  # a refinement is a strict sub-role
    with pytest.raises(OperationError, match="role 'eng' is not a refinement of 'eng'"):
        parse_operation("RESERVE", {"resources": [{**ok, "reservations": itself}]}, None)


@pytest.mark.parametrize(
    "kind, payload, principal, match",
    [
        ("RESERVE", {"resources": []}, None, "non-empty"),
        (
            "RESERVE",
            {"resources": [dyn("cpus", 1, principal="other")]},
            "ops",
            "by authenticated principal 'ops', which does not match .* principal 'other'",
        ),
        (
            "RESERVE",
            {"resources": [dyn("cpus", 1, principal=None)]},
            "ops",
            "by principal 'ops', but there is a reserved resource in the request with no "
            "principal set",
        ),
        ("UNRESERVE", {"resources": [volume("v", 1)]}, None, "DESTROY it first"),
        ("CREATE", {"volumes": [volume("v", 1, path="/abs")]}, None, "relative"),
        ("CREATE", {"volumes": [volume("v", 1, path="a/../../x")]}, None, "relative"),
        (
            "CREATE",
            {"volumes": [{**volume("v", 1), "reservations": []}]},
            None,
            "Persistent volumes cannot be created from unreserved resources",
        ),
        ("CREATE", {"volumes": [volume("a/b", 1)]}, None, "must not contain"),
        ("CREATE_DISK", {}, None, "resource provider"),
        ("RESERVE", {"resources": [dyn("cpus", 1)], "source": [dyn("cpus", 1)]}, None, "source"),
        ("SHRINK_VOLUME", {"volume": volume("v", 10), "subtract": {"value": 10}}, None, "below"),
    ],
)
def test_bad_operations_are_refused_with_a_reason(kind, payload, principal, match):
    with pytest.raises(OperationError, match=match):
        parse_operation(kind, payload, principal)


def test_grow_and_shrink_keep_the_volume_and_move_plain_disk():
    pool = Resources.from_json([volume("v", 10), dyn("disk", 5)])
    grow = parse_operation(
        "GROW_VOLUME", {"volume": volume("v", 10), "addition": dyn("disk", 5)}, None
    )
    grown = apply(pool, grow)
    assert grown == Resources.from_json([volume("v", 15)])
    shrink = parse_operation(
        "SHRINK_VOLUME", {"volume": volume("v", 15), "subtract": {"value": 5}}, None
    )
    assert apply(grown, shrink) == pool


# -- the master core ---------------------------------------------------------------------------


def _cluster(principal: str | None = "ops", options: MasterOptions | None = None):
    h = Harness(options)
    agent_id = h.register_agent("c1", AGENT)
    info: dict[str, Any] = {"roles": ["web"], "capabilities": [{"type": "MULTI_ROLE"}]}
    info["capabilities"].append({"type": "RESERVATION_REFINEMENT"})
    if principal is not None:
        info["principal"] = principal
    fid, stream = h.subscribe(**info)
    h.allocate()
    [offer] = h.offers(stream)
    return h, agent_id, fid, stream, offer


def _accept(h: Harness, fid: str, stream: str, offer: dict, *ops: dict) -> None:
    body = {"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]], "operations": list(ops)}}
    assert h.call(fid, stream, body).status == 202


def _op_statuses(h: Harness, stream: str) -> list[dict]:
    return [
        e["update_operation_status"]["status"] for e in h.take(stream, "UPDATE_OPERATION_STATUS")
    ]


def test_reserve_create_and_launch_in_one_accept():
    h, agent_id, fid, stream, offer = _cluster()
    task = command_task("t1", offer)
    task["resources"] = [dyn("cpus", 1), volume("v1", 100)]
    _accept(
        h,
        fid,
        stream,
        offer,
        {
            "type": "RESERVE",
            "id": {"value": "r1"},
            "reserve": {"resources": [dyn("cpus", 1), dyn("disk", 100)]},
        },
        {"type": "CREATE", "id": {"value": "c1"}, "create": {"volumes": [volume("v1", 100)]}},
        {"type": "LAUNCH", "launch": {"task_infos": [task]}},
    )
    statuses = _op_statuses(h, stream)
    assert [(s["operation_id"]["value"], s["state"]) for s in statuses] == [
        ("r1", "OPERATION_FINISHED"),
        ("c1", "OPERATION_FINISHED"),
    ]
    assert all(s["agent_id"] == {"value": agent_id} and "uuid" in s for s in statuses)
    assert "resource_provider_id" not in statuses[0]
    assert h.updates(stream) == []  # no TASK_ERROR
    [run] = h.agent_messages("c1", internal.RunTask)
    assert run.task.task_id.value == "t1"
    checkpoints = h.agent_messages("c1", internal.CheckpointResources)
    assert len(checkpoints) == 2
    total = Resources.from_json(checkpoints[-1].resources)
    assert total == h.master.agents[agent_id].total
    assert total.reserved("web").scalar("disk") == 100
    assert total.quantities() == Resources.from_json(offer["resources"]).quantities()
    # The volume is in use: DESTROY is refused, nothing changes.
    h.clock.advance(10)  # past the ACCEPT's default refusal of what was left
    h.allocate()
    [offer2] = h.offers(stream)
    _accept(
        h,
        fid,
        stream,
        offer2,
        {"type": "DESTROY", "id": {"value": "d1"}, "destroy": {"volumes": [volume("v1", 100)]}},
    )
    [err] = _op_statuses(h, stream)
    assert err["state"] == "OPERATION_ERROR"
    assert h.master.agents[agent_id].total == total


def test_reserved_resources_go_only_to_their_role_and_come_back_after_the_task():
    h, agent_id, fid, stream, offer = _cluster()
    _accept(h, fid, stream, offer, {"type": "RESERVE", "reserve": {"resources": [dyn("cpus", 4)]}})
    assert _op_statuses(h, stream) == []  # no id: no feedback
    h.call(fid, stream, {"type": "TEARDOWN"})
    _, batch = h.subscribe("batch", role="batch")
    team_fid, team = h.subscribe("team", role="web/team")
    h.clock.advance(10)
    h.allocate()
    batch_offers, team_offers = h.offers(batch), h.offers(team)
    assert not any(r["name"] == "cpus" for o in batch_offers for r in o["resources"])
    [team_offer] = team_offers  # a sub-role gets what is reserved for its parent
    cpus = [r for r in team_offer["resources"] if r["name"] == "cpus"]
    assert cpus and cpus[0]["role"] == "web" and cpus[0]["scalar"]["value"] == 4
    task = command_task("t", team_offer)
    task["resources"] = [
        {**dyn("cpus", 1), "reservations": None, "role": "web", "reservation": {"principal": "ops"}}
    ]
    body = {
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [team_offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            "filters": {"refuse_seconds": 0},
        },
    }
    assert h.call(team_fid, team, body).status == 202
    assert h.updates(team) == []
    h.status_update("c1", team_fid, "t", "TASK_FINISHED", agent_id)
    h.clock.advance(10)
    h.allocate()
    [back] = h.offers(team)
    assert [r["scalar"]["value"] for r in back["resources"] if r["name"] == "cpus"] == [4]


def test_bad_operation_leaves_state_unchanged_and_later_operations_still_run():
    h, agent_id, fid, stream, offer = _cluster()
    before = h.master.agents[agent_id].total
    _accept(
        h,
        fid,
        stream,
        offer,
        {"type": "RESERVE", "id": {"value": "big"}, "reserve": {"resources": [dyn("cpus", 40)]}},
        {
            "type": "UNRESERVE",
            "id": {"value": "none"},
            "unreserve": {"resources": [dyn("cpus", 1)]},
        },
        {
            "type": "CREATE",
            "id": {"value": "other-role"},
            "create": {"volumes": [volume("v", 1, role="batch")]},
        },
        {"type": "CREATE_DISK", "id": {"value": "csi"}, "create_disk": {}},
        {"type": "RESERVE", "id": {"value": "ok"}, "reserve": {"resources": [dyn("mem", 64)]}},
    )
    states = {
        s["operation_id"]["value"]: (s["state"], s.get("message", ""))
        for s in _op_statuses(h, stream)
    }
    assert states["big"][0] == "OPERATION_ERROR" and "insufficient" in states["big"][1]
    assert states["none"][0] == "OPERATION_ERROR"
    assert states["other-role"][0] == "OPERATION_ERROR"
    assert states["csi"][0] == "OPERATION_ERROR" and "resource provider" in states["csi"][1]
    assert states["ok"][0] == "OPERATION_FINISHED"
    after = h.master.agents[agent_id].total
    assert after == before - Resources.scalars(mem=64) + Resources.from_json([dyn("mem", 64)])


def test_duplicate_persistence_id_is_refused():
    h, agent_id, fid, stream, offer = _cluster()
    _accept(
        h,
        fid,
        stream,
        offer,
        {"type": "RESERVE", "reserve": {"resources": [dyn("disk", 200)]}},
        {"type": "CREATE", "create": {"volumes": [volume("v", 100)]}},
        {
            "type": "CREATE",
            "id": {"value": "again"},
            "create": {"volumes": [volume("v", 100, path="other")]},
        },
    )
    [status] = _op_statuses(h, stream)
    assert status["state"] == "OPERATION_ERROR" and "already in use" in status["message"]


def test_a_reservation_needs_the_frameworks_principal_and_the_acl():
    acls = parse_acls(
        '{"permissive": true, "reserve_resources": '
        '[{"principals": {"values": ["ops"]}, "roles": {"type": "NONE"}}]}'
    )
    h, agent_id, fid, stream, offer = _cluster(options=MasterOptions(acls=acls))
    _accept(
        h,
        fid,
        stream,
        offer,
        {
            "type": "RESERVE",
            "id": {"value": "who"},
            "reserve": {"resources": [dyn("cpus", 1, principal="eve")]},
        },
        {"type": "RESERVE", "id": {"value": "acl"}, "reserve": {"resources": [dyn("cpus", 1)]}},
    )
    states = {s["operation_id"]["value"]: s for s in _op_statuses(h, stream)}
    assert "principal" in states["who"]["message"]
    assert "Not authorized" in states["acl"]["message"]
    assert not h.master.agents[agent_id].total.reserved()


def test_acknowledge_and_reconcile_operations():
    h, agent_id, fid, stream, offer = _cluster()
    _accept(
        h,
        fid,
        stream,
        offer,
        {"type": "RESERVE", "id": {"value": "r"}, "reserve": {"resources": [dyn("cpus", 1)]}},
    )
    [status] = _op_statuses(h, stream)
    [listed] = h.master.operations_json()
    assert (
        listed["info"]["type"] == "RESERVE"
        and listed["latest_status"]["state"] == "OPERATION_FINISHED"
    )
    reconcile = {
        "type": "RECONCILE_OPERATIONS",
        "reconcile_operations": {
            "operations": [{"operation_id": {"value": "r"}}, {"operation_id": {"value": "nope"}}]
        },
    }
    assert h.call(fid, stream, reconcile).status == 202
    answers = {s["operation_id"]["value"]: s["state"] for s in _op_statuses(h, stream)}
    assert answers == {"r": "OPERATION_FINISHED", "nope": "OPERATION_UNKNOWN"}
    ack = {"operation_id": {"value": "r"}, "agent_id": {"value": agent_id}, "uuid": status["uuid"]}
    result = h.call(
        fid, stream, {"type": "ACKNOWLEDGE_OPERATION_STATUS", "acknowledge_operation_status": ack}
    )
    assert result.status == 202
    assert h.master.operations_json() == []
    bad = h.call(
        fid, stream, {"type": "ACKNOWLEDGE_OPERATION_STATUS", "acknowledge_operation_status": {}}
    )
    assert bad.status == 400


def test_operator_reserve_rescinds_offers_and_refuses_what_is_not_there():
    h, agent_id, fid, stream, offer = _cluster()
    payload = {"resources": [dyn("cpus", 2)]}
    with pytest.raises(OperatorRefusal) as e:
        h.master.operator_operation(
            agent_id, "RESERVE", {"resources": [dyn("cpus", 9)]}, None, h.now()
        )
    assert e.value.status == 409
    with pytest.raises(OperatorRefusal) as e:
        h.master.operator_operation("nope", "RESERVE", payload, None, h.now())
    assert (e.value.status, str(e.value)) == (400, "No agent found with specified ID")
    with pytest.raises(OperatorRefusal) as e:
        h.master.operator_operation(agent_id, "RESERVE", payload, "eve", h.now())
    assert e.value.status == 400
    assert h.master.offers  # nothing happened: the offer stands
    effects = h.pump(h.master.operator_operation(agent_id, "RESERVE", payload, "ops", h.now()))
    assert not h.master.offers and h.take(stream, "RESCIND")
    assert any(
        isinstance(e, RegistryWrite) and isinstance(e.operation, AdmitAgent) for e in effects
    )
    assert h.master.agents[agent_id].total.reserved("web").scalar("cpus") == 2
    # A volume in use cannot be destroyed by an operator either (409).
    h.pump(
        h.master.operator_operation(
            agent_id, "RESERVE", {"resources": [dyn("disk", 10)]}, None, h.now()
        )
    )
    h.pump(
        h.master.operator_operation(
            agent_id, "CREATE", {"volumes": [volume("v", 10)]}, None, h.now()
        )
    )
    h.clock.advance(10)  # past the ACCEPT's default refusal of what was left
    h.allocate()
    [offer2] = h.offers(stream)
    task = command_task("t", offer2)
    task["resources"] = [dyn("cpus", 1), volume("v", 10)]
    _accept(h, fid, stream, offer2, {"type": "LAUNCH", "launch": {"task_infos": [task]}})
    assert h.updates(stream) == []
    with pytest.raises(OperatorRefusal) as e:
        h.master.operator_operation(
            agent_id, "DESTROY", {"volumes": [volume("v", 10)]}, None, h.now()
        )
    assert e.value.status == 409 and "in use" in e.value.message


def test_the_masters_total_wins_when_an_agent_reregisters_after_failover():
    h, agent_id, fid, stream, offer = _cluster()
    effects = h.pump(
        h.master.operator_operation(
            agent_id, "RESERVE", {"resources": [dyn("cpus", 2)]}, None, h.now()
        )
    )
    [record] = [e.operation for e in effects if isinstance(e, RegistryWrite)]
    # A new master recovers the registry; the agent comes back reporting its old total
    # (it missed the CHECKPOINT_RESOURCES).
    h2 = Harness()
    h2.pump(h2.master.recover_registry(RegistryState(agents={agent_id: record.info}), h2.now()))
    info = internal.AgentInfo(
        hostname="127.0.0.1",
        port=5051,
        resources=Resources.from_json(offer["resources"]).to_json(),
        id=internal.ID(agent_id),
    )
    msg = internal.RegisterAgent(agent_info=info, version="0.1.0")
    h2.pump(h2.master.agent_message("c9", msg, "127.0.0.1", h2.now()))
    assert h2.agent_messages("c9", internal.AgentReregistered)
    assert h2.master.agents[agent_id].total.reserved("web").scalar("cpus") == 2
    [fix] = h2.agent_messages("c9", internal.CheckpointResources)
    assert Resources.from_json(fix.resources) == h2.master.agents[agent_id].total


def test_unreserving_another_principals_reservation_follows_the_acl():
    acls = parse_acls(
        '{"unreserve_resources": [{"principals": {"values": ["ops"]}, '
        '"reserver_principals": {"values": ["ops"]}}, {"principals": {"type": "ANY"}, '
        '"reserver_principals": {"type": "NONE"}}]}'
    )
    h, agent_id, fid, stream, offer = _cluster(principal="eve", options=MasterOptions(acls=acls))
    h.pump(
        h.master.operator_operation(
            agent_id, "RESERVE", {"resources": [dyn("cpus", 1)]}, "ops", h.now()
        )
    )
    with pytest.raises(OperatorRefusal) as e:
        h.master.operator_operation(
            agent_id, "UNRESERVE", {"resources": [dyn("cpus", 1)]}, "eve", h.now()
        )
    assert e.value.status == 403
    h.pump(
        h.master.operator_operation(
            agent_id, "UNRESERVE", {"resources": [dyn("cpus", 1)]}, "ops", h.now()
        )
    )
    assert not h.master.agents[agent_id].total.reserved()


def test_unacknowledged_operation_statuses_are_sent_again_on_resubscription():
    h, agent_id, fid, stream, offer = _cluster()
    reserve = {"resources": [dyn("cpus", 1)]}
    _accept(h, fid, stream, offer, {"type": "RESERVE", "id": {"value": "r"}, "reserve": reserve})
    [status] = _op_statuses(h, stream)
    info = {"id": {"value": fid}, "roles": ["web"], "principal": "ops"}
    info["capabilities"] = [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}]
    _, again = h.subscribe(**info)
    assert _op_statuses(h, again) == [status]


def test_reservation_labels_and_refinement_survive_the_round_trip_to_the_agent():
    h, agent_id, fid, stream, offer = _cluster()
    labelled = dyn("cpus", 1)
    labelled["reservations"][0]["labels"] = {"labels": [{"key": "team", "value": "a"}]}
    refined = {**dyn("cpus", 1), "reservations": [
        {"type": "DYNAMIC", "role": "web", "principal": "ops"},
        {"type": "DYNAMIC", "role": "web/api", "principal": "ops"},
    ]}  # fmt: skip
    _accept(
        h,
        fid,
        stream,
        offer,
        {"type": "RESERVE", "reserve": {"resources": [labelled]}},
        {"type": "RESERVE", "reserve": {"resources": [dyn("cpus", 1)]}},
        {"type": "RESERVE", "id": {"value": "not-mine"}, "reserve": {"resources": [refined]}},
    )
    # Refining into web/api is for a framework of that role (Mesos: the reservation role
    # is the offer's allocation role, one of the framework's).
    [refused] = _op_statuses(h, stream)
    assert refused["state"] == "OPERATION_ERROR"
    assert "allocated to role 'web'" in refused["message"]
    capabilities = [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}]
    api, api_stream = h.subscribe("api", roles=["web/api"], capabilities=capabilities)
    h.allocate()
    [api_offer] = h.offers(api_stream)
    _accept(
        h,
        api,
        api_stream,
        api_offer,
        {"type": "RESERVE", "id": {"value": "refine"}, "reserve": {"resources": [refined]}},
    )
    [status] = _op_statuses(h, api_stream)
    assert status["state"] == "OPERATION_FINISHED", status
    [*_, last] = h.agent_messages("c1", internal.CheckpointResources)
    stacks = [
        r["reservations"] for r in last.resources if r["name"] == "cpus" and "reservations" in r
    ]
    team = {"labels": [{"key": "team", "value": "a"}]}
    assert any(s == [{**s[0], "labels": team}] and s[0]["role"] == "web" for s in stacks)
    assert any([x["role"] for x in s] == ["web", "web/api"] for s in stacks)
    assert Resources.from_json(last.resources) == h.master.agents[agent_id].total


def test_a_refined_reservation_needs_the_capability():
    h = Harness()
    h.register_agent("c1", AGENT)
    fid, stream = h.subscribe(roles=["web"], capabilities=[{"type": "MULTI_ROLE"}])
    h.allocate()
    [offer] = h.offers(stream)
    refined = {**dyn("cpus", 1), "reservations": [
        {"type": "DYNAMIC", "role": "web", "principal": "ops"},
        {"type": "DYNAMIC", "role": "web/api", "principal": "ops"},
    ]}  # fmt: skip
    _accept(
        h,
        fid,
        stream,
        offer,
        {"type": "RESERVE", "id": {"value": "r"}, "reserve": {"resources": [refined]}},
    )
    [status] = _op_statuses(h, stream)
    assert status["state"] == "OPERATION_ERROR" and "RESERVATION_REFINEMENT" in status["message"]


def test_a_framework_reserves_only_for_its_offers_role_and_accepts_one_role_at_a_time():
    h = Harness()
    h.register_agent("c1", AGENT)
    caps = [{"type": "MULTI_ROLE"}]
    fid, stream = h.subscribe(roles=["a", "eng"], capabilities=caps, principal="ops")
    h.allocate()
    offers = {o["allocation_info"]["role"]: o for o in h.offers(stream)}
    assert set(offers) <= {"a", "eng"} and offers
    role, offer = next(iter(offers.items()))
    other = "b"
    grab = dyn("cpus", 1, role=other)
    grab["allocation_info"] = {"role": role}
    _accept(h, fid, stream, offer, {"type": "RESERVE", "id": {"value": "r"}, "reserve": {
        "resources": [grab]}})  # fmt: skip
    [status] = _op_statuses(h, stream)
    assert status["state"] == "OPERATION_ERROR"
    assert status["message"] == (
        f"A reserve operation was attempted for a resource with role '{other}', "
        f"but the resource was allocated to role '{role}'"
    )
    assert not h.master.agents[next(iter(h.master.agents))].total.reserved(other)


def test_a_launch_with_an_operation_id_is_refused():
    h, agent_id, fid, stream, offer = _cluster()
    task = command_task("t1", offer)
    _accept(h, fid, stream, offer, {"type": "LAUNCH", "id": {"value": "x"}, "launch": {
        "task_infos": [task]}})  # fmt: skip
    [status] = h.updates(stream)
    assert (status["state"], status["reason"]) == ("TASK_ERROR", "REASON_TASK_INVALID")
    assert status["message"] == "The `id` field cannot be set on LAUNCH operations"
    assert not h.agent_messages("c1", internal.RunTask)


def test_offers_of_two_roles_cannot_be_accepted_together():
    from butte.master.state import Offer

    h = Harness()
    agent_id = h.register_agent("c1", AGENT)
    fid, _ = h.subscribe(roles=["a", "b"], capabilities=[{"type": "MULTI_ROLE"}])
    fw = h.master.frameworks[fid]
    for oid, role in (("o-a", "a"), ("o-b", "b")):
        h.master.offers[oid] = Offer(oid, fid, agent_id, role, Resources())
    offers, error = h.master._validate_offers(fw, ["o-a", "o-b"])
    assert error == (
        "Aggregated offers must be allocated to the same role. Offer o-b uses role 'b' but "
        "another is using role 'a'"
    )
