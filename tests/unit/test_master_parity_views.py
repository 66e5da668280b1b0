"""Where the master answers as Mesos' master does, on the pure core and its views: when
FRAMEWORK_UPDATED is sent,
the fields of GET_FRAMEWORKS / GET_AGENTS / GET_TASKS and of the legacy agents and tasks, an
agent's AgentInfo resources after RESERVE and CREATE, ``view_roles`` on resources, the
``/master/tasks`` query parameters and the registrar's metrics
(tests/integration/test_master_mesos_parity.py checks the same over HTTP)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from butte.coord.interface import (
    AdmitAgent,
    MarkGone,
    MarkUnreachable,
    PruneAgents,
    RegistryState,
    UpdateAgentDrain,
    UpdateQuotas,
    UpdateWeights,
)
from butte.core.codec import encode_json
from butte.core.resources import Resources, parse_resources
from butte.master import legacy, operator_views, registrar, state_json, view_acls, views
from butte.master.acls import parse_acls
from butte.master.effects import OperatorEvent
from tests.unit.master_kit import Harness, call, command_task, launch_body

STATIC = "cpus:4;mem:4096;disk:10000;ports:[31000-32000];cpus(static):1;mem(static):128"


def _dyn(name: str, value: float, role: str = "a", **disk: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": role, "principal": "ops"}],
    }
    if disk:
        res["disk"] = disk
    return res


def _volume(pid: str, size: float, role: str = "a") -> dict[str, Any]:
    return _dyn(
        "disk",
        size,
        role,
        persistence={"id": pid, "principal": "ops"},
        volume={"container_path": "data", "mode": "RW"},
    )


def _multi_role(h: Harness, *roles: str, **info: Any) -> tuple[str, str]:
    return h.subscribe(roles=list(roles), capabilities=[{"type": "MULTI_ROLE"}], **info)


def _operator_events(effects: list[Any]) -> list[dict[str, Any]]:
    return [e.event for e in effects if isinstance(e, OperatorEvent)]


# -- FRAMEWORK_UPDATED and the framework's times -------------------------------------------


def test_framework_updated_is_sent_on_resubscription_and_info_changes_not_on_disconnection():
    """Mesos sends FRAMEWORK_UPDATED when a framework subscribes again and when
    UPDATE_FRAMEWORK changes its FrameworkInfo (`sendFrameworkUpdates`), never when its
    connection drops; `unregistered_time` is set when it is removed."""
    h = Harness()
    h.register_agent("c1")
    h.master.operator_subscribers = 1  # the core builds operator events only for someone
    fid, stream = h.subscribe("fw", failover_timeout=600)
    registered = h.master.frameworks[fid].registered_time

    h.clock.advance(5)
    gone = h.pump(h.master.framework_disconnected(stream, h.now()))
    assert [e["type"] for e in _operator_events(gone)] == []
    [entry] = operator_views.get_frameworks(h.master)["frameworks"]
    assert (entry["connected"], entry["active"]) == (False, False)
    assert "unregistered_time" not in entry
    assert entry["reregistered_time"] == entry["registered_time"]
    assert state_json.legacy_framework(h.master, h.master.frameworks[fid])["unregistered_time"] == 0

    h.clock.advance(5)
    body = {
        "type": "SUBSCRIBE",
        "framework_id": {"value": fid},
        "subscribe": {"framework_info": {"user": "root", "name": "fw", "id": {"value": fid}}},
    }
    result, effects = h.master.subscribe(call(body), "stream-2", h.now())
    assert result.status == 200
    [updated] = _operator_events(h.pump(effects))
    assert updated["type"] == "FRAMEWORK_UPDATED"
    framework = updated["framework_updated"]["framework"]
    assert framework["connected"] is True
    assert framework["reregistered_time"]["nanoseconds"] > int(registered * 1e9)

    info = {"user": "root", "name": "fw", "id": {"value": fid}, "failover_timeout": 0.0}
    same = {"type": "UPDATE_FRAMEWORK", "update_framework": {"framework_info": info}}
    result, effects = h.master.scheduler_call(
        call({**same, "framework_id": {"value": fid}}), "stream-2", h.now()
    )
    assert result.status == 200 and _operator_events(h.pump(effects)) == []
    renamed = {**same, "update_framework": {"framework_info": {**info, "name": "fw2"}}}
    result, effects = h.master.scheduler_call(
        call({**renamed, "framework_id": {"value": fid}}), "stream-2", h.now()
    )
    assert result.status == 200
    assert [e["type"] for e in _operator_events(h.pump(effects))] == ["FRAMEWORK_UPDATED"]

    h.clock.advance(1)
    h.pump(h.master.teardown_framework(fid, h.now()) or [])
    [done] = operator_views.get_frameworks(h.master)["completed_frameworks"]
    assert done["unregistered_time"] == {"nanoseconds": int(h.now() * 1e9)}


# -- GET_FRAMEWORKS, GET_AGENTS, GET_TASKS and the legacy shapes ----------------------------


def _running_task(h: Harness, **task: Any) -> tuple[str, str, str]:
    """A framework of role 'a' with one running task 't1' (cpus 1, mem 128): (framework id,
    stream, agent id)."""
    agent_id = h.register_agent("c1")
    fid, stream = _multi_role(h, "a", failover_timeout=60)
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("t1", offer, **task)))
    h.status_update("c1", fid, "t1", "TASK_RUNNING", agent_id)
    h.allocate()
    return fid, stream, agent_id


def test_allocated_and_offered_resources_carry_the_role_they_are_allocated_to():
    h = Harness()
    fid, stream, agent_id = _running_task(h)
    h.clock.advance(10)
    h.allocate()  # offers what is left to role 'a'
    [fw] = operator_views.get_frameworks(h.master)["frameworks"]
    assert fw["allocated_resources"] and all(
        r["allocation_info"] == {"role": "a"} for r in fw["allocated_resources"]
    )
    assert Resources.from_json(fw["allocated_resources"]) == parse_resources("cpus:1;mem:128")
    assert all(r["allocation_info"] == {"role": "a"} for r in fw["offered_resources"])
    assert fw["offer_constraints"] == {}
    assert fw["reregistered_time"] == fw["registered_time"]
    [agent] = operator_views.get_agents(h.master)["agents"]
    assert agent["allocated_resources"] and all(
        r["allocation_info"] == {"role": "a"} for r in agent["allocated_resources"]
    )
    full = state_json.agent_resources_full(h.master, h.master.agents[agent_id])
    assert full["used_resources_full"] == agent["allocated_resources"]
    assert full["offered_resources_full"] == agent["offered_resources"]
    legacy_fw = state_json.legacy_framework(h.master, h.master.frameworks[fid])
    assert legacy_fw["offer_constraints"] == {}


def test_a_task_shows_its_user_and_health_check_as_mesos_does():
    h = Harness()
    check = {"type": "COMMAND", "command": {"value": "true"}}
    fid, _, _ = _running_task(
        h, command={"value": "sleep 100", "user": "alice"}, health_check=check
    )
    task = h.master.frameworks[fid].tasks["t1"]
    assert views.task_json(task)["user"] == "alice"
    legacy_task = state_json.legacy_task(task)
    assert legacy_task["user"] == "alice" and legacy_task["health_check"] == check
    plain = Harness()
    fid, _, _ = _running_task(plain)
    assert "user" not in views.task_json(plain.master.frameworks[fid].tasks["t1"])


def test_a_tasks_limits_reach_the_agent_and_show_in_the_state_as_mesos_renders_them():
    h = Harness()
    limits = {"cpus": {"value": "Infinity"}, "mem": {"value": 512}}
    fid, _, _ = _running_task(h, limits=limits)
    task = h.master.frameworks[fid].tasks["t1"]
    assert views.task_json(task)["limits"] == {
        "cpus": {"value": "Infinity"},
        "mem": {"value": 512.0},
    }
    assert state_json.legacy_task(task)["limits"] == {"cpus": "Infinity", "mem": 512.0}
    [agent] = operator_views.get_agents(h.master)["agents"]
    assert {"type": "TASK_RESOURCE_LIMITS"} in agent["capabilities"]


def test_agent_info_resources_are_those_the_agent_was_started_with():
    """After a RESERVE and a CREATE an agent's AgentInfo still shows its ``--resources``
    (static reservations included); the dynamic reservation and the volume are in its
    total and in /slaves' reserved_resources_full."""
    h = Harness()
    agent_id = h.register_agent("c1", STATIC)
    reserve = {"resources": [_dyn("cpus", 1), _dyn("disk", 100)]}
    h.pump(h.master.operator_operation(agent_id, "RESERVE", reserve, "ops", h.now()))
    create = {"volumes": [_volume("v1", 50)]}
    h.pump(h.master.operator_operation(agent_id, "CREATE", create, "ops", h.now()))

    [agent] = operator_views.get_agents(h.master)["agents"]
    assert agent["agent_info"]["resources"] == parse_resources(STATIC).to_json("post")
    total = Resources.from_json(agent["total_resources"])
    assert total.reserved("a") == Resources.from_json(
        [_dyn("cpus", 1), _dyn("disk", 50), _volume("v1", 50)]
    )
    full = state_json.agent_resources_full(h.master, h.master.agents[agent_id])
    assert sorted(full["reserved_resources_full"]) == ["a", "static"]
    assert any("persistence" in r.get("disk", {}) for r in full["reserved_resources_full"]["a"])
    assert Resources.from_json(full["unreserved_resources_full"]) == parse_resources(
        "cpus:3;mem:4096;disk:9900;ports:[31000-32000]"
    )
    # The legacy map sums what the agent has, reservations and volumes included, as Mesos'
    # `totalResources` does.
    legacy_agent = state_json.legacy_agent(h.master, h.master.agents[agent_id])
    assert (legacy_agent["resources"]["cpus"], legacy_agent["resources"]["disk"]) == (5.0, 10000.0)
    # A registry record (the total, as the registry keeps it) of an agent not back yet.
    record = {"id": {"value": agent_id}, "resources": agent["total_resources"]}
    recovered = operator_views.recovered_agent_json(agent_id, record)
    assert recovered["resources"] == parse_resources(STATIC).to_json("post")


def test_an_agent_is_deactivated_only_by_an_operator():
    h = Harness()
    agent_id = h.register_agent("c1")
    h.pump(h.master.agent_disconnected("c1", h.now()))
    agent = h.master.agents[agent_id]
    legacy_agent = state_json.legacy_agent(h.master, agent)
    assert (legacy_agent["active"], legacy_agent["deactivated"]) == (False, False)
    h.pump(h.master.deactivate_agent(agent_id, h.now()) or [])
    assert state_json.legacy_agent(h.master, agent)["deactivated"] is True


# -- view_roles ----------------------------------------------------------------------------

ROLE_ACLS = parse_acls(
    json.dumps(
        {
            "view_roles": [
                {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}},
                {"principals": {"values": ["alice"]}, "roles": {"values": ["a"]}},
                {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
            ]
        }
    )
)


def _reserved_cluster() -> tuple[Harness, str, str]:
    """An agent with a static reservation for 'static', dynamic ones for 'a' and 'b' and a
    task of role 'a'."""
    h = Harness()
    fid, stream, agent_id = _running_task(h)
    h.pump(h.master.framework_disconnected(stream, h.now()))  # its offers back
    reserve = {"resources": [_dyn("cpus", 1, "a"), _dyn("mem", 64, "b")]}
    h.pump(h.master.operator_operation(agent_id, "RESERVE", reserve, "ops", h.now()))
    return h, fid, agent_id


def test_view_roles_leaves_out_the_reservations_of_roles_a_principal_may_not_view():
    h, fid, agent_id = _reserved_cluster()
    agent = h.master.agents[agent_id]
    assert view_acls.viewer(ROLE_ACLS, "alice", h.master) is None  # callers without resources
    view = view_acls.viewer(ROLE_ACLS, "alice", h.master, roles=True)
    assert view is not None and view.hides_roles
    everything = view_acls.viewer(ROLE_ACLS, "ops", h.master, roles=True)
    assert everything is not None

    slave = {**state_json.legacy_agent(h.master, agent)}
    slave.update(state_json.agent_resources_full(h.master, agent))
    assert sorted(slave["reserved_resources"]) == ["a", "b"]
    mine = view.legacy_agent(slave)
    assert sorted(mine["reserved_resources"]) == ["a"]
    assert sorted(mine["reserved_resources_full"]) == ["a"]
    assert mine["used_resources_full"] == slave["used_resources_full"]  # role 'a' only
    assert everything.legacy_agent(slave) == slave
    assert slave["reserved_resources"].keys() == {"a", "b"}  # the original is unchanged

    v1 = operator_views.get_agents(h.master)
    narrowed = view.get_agents(v1)["agents"][0]
    roles = {
        (r.get("role"), (r.get("allocation_info") or {}).get("role"))
        for r in narrowed["total_resources"] + narrowed["allocated_resources"]
    }
    assert roles <= {("*", None), ("a", None), ("*", "a")}
    assert ("a", None) in roles
    assert all(
        "reservations" not in r for r in narrowed["agent_info"]["resources"]
    )  # the static reservation is of a role alice may not view
    nobody = view_acls.viewer(ROLE_ACLS, None, h.master, roles=True)
    assert nobody is not None
    nothing = nobody.get_agents(v1)["agents"][0]
    assert nothing["allocated_resources"] == []  # allocated to 'a'
    assert all(r["role"] == "*" for r in nothing["total_resources"])

    state = view.get_state({"get_agents": v1})
    assert state["get_agents"]["agents"][0] == narrowed

    # Events: AGENT_ADDED's total and FRAMEWORK_UPDATED's allocated and offered resources.
    added = view.event(operator_views.agent_added(h.master, agent))
    assert added is not None
    assert added["agent_added"]["agent"]["total_resources"] == narrowed["total_resources"]
    updated = nobody.event(operator_views.framework_updated(h.master, h.master.frameworks[fid]))
    assert updated is not None
    assert updated["framework_updated"]["framework"]["allocated_resources"] == []


def test_a_task_is_shown_only_when_its_framework_may_be_viewed_too():
    h = Harness()
    fid, _, _ = _running_task(h)
    acls = parse_acls(
        json.dumps(
            {
                "view_frameworks": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}],
                "view_tasks": [{"principals": {"type": "ANY"}, "users": {"type": "ANY"}}],
            }
        )
    )
    view = view_acls.viewer(acls, "alice", h.master)
    assert view is not None
    assert not view.task(views.task_json(h.master.frameworks[fid].tasks["t1"]))


# -- /master/tasks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (None, 100),
        ("5", 5),
        ("+5", 5),
        ("-1", -1),
        ("0x10", 16),
        ("-0x10", -16),
        ("abc", 100),
        (" 5", 100),
        ("1.5", 100),
        ("2147483648", 100),
        ("-2147483648", -(2**31)),
    ],
)
def test_tasks_parameters_are_read_as_stout_numify_reads_a_c_int(text, value):
    assert legacy._c_int(text, 100) == value


def test_tasks_without_a_status_sort_as_the_oldest():
    h = Harness()
    fid, stream, _ = _running_task(h)
    h.clock.advance(10)
    h.allocate()
    [offer] = h.offers(stream)
    h.call(fid, stream, launch_body(offer, command_task("staging", offer, "cpus:0.5;mem:32")))
    tasks = h.master.frameworks[fid].tasks
    assert not tasks["staging"].statuses
    ordered = sorted(tasks.values(), key=legacy._start_time)
    assert [t.task_id for t in ordered] == ["staging", "t1"]  # asc: first; des: last


# -- registrar metrics ---------------------------------------------------------------------


def _registry_json(state: RegistryState) -> int:
    return len(
        encode_json(
            {
                "agents": state.agents,
                "unreachable": state.unreachable,
                "gone": state.gone,
                "deactivated": state.deactivated,
                "weights": state.weights,
                "maintenance": state.maintenance,
                "quotas": state.quotas,
            }
        )
    )


def test_registry_size_is_the_registry_as_compact_json_as_it_changes():
    loaded = RegistryState(agents={"S1": {"hostname": "h1", "port": 5051}}, weights={"a": 2.0})
    mirror = RegistryState(agents=dict(loaded.agents), weights=dict(loaded.weights))
    size = registrar.RegistrySize(loaded)
    assert size.bytes() == _registry_json(mirror)
    batches = [
        [AdmitAgent("S2", {"hostname": "h2", "resources": [{"name": "cpus"}]})],
        [MarkUnreachable("S1", 10.0), UpdateAgentDrain("S2", {"drain": None})],
        [UpdateWeights({"a": 1.0, "b/c": 3.0}), UpdateQuotas({"a": {"guarantees": {"cpus": 1}}})],
        [MarkGone("S2", 11.0), PruneAgents(unreachable=("S1",))],
        [AdmitAgent("S3", {"hostname": "h3"}), AdmitAgent("S3", {"hostname": "h3", "port": 1})],
    ]
    for batch in batches:
        size.apply(batch)
        for op in batch:
            mirror.apply(op)
        assert size.bytes() == _registry_json(mirror)


def test_registrar_metrics_appear_once_measured_with_the_store_timers_statistics():
    metrics = registrar.RegistrarMetrics()
    assert metrics.metrics(0.0) == {"registrar/queued_operations": 0.0}
    metrics.recovered(RegistryState(), 4.0)
    metrics.stored([UpdateWeights({"a": 2.0})], 1.0, 10.0)
    out = metrics.metrics(11.0)
    assert out["registrar/state_fetch_ms"] == 4.0 and out["registrar/state_store_ms"] == 1.0
    assert out["registrar/registry_size_bytes"] > 0
    assert "registrar/state_store_ms/count" not in out  # one value: no statistics yet
    for ms in (3.0, 2.0, 4.0):
        metrics.stored([], ms, 12.0)
    out = metrics.metrics(13.0)
    assert out["registrar/state_store_ms"] == 4.0
    assert out["registrar/state_store_ms/count"] == 4.0
    assert (out["registrar/state_store_ms/min"], out["registrar/state_store_ms/max"]) == (1.0, 4.0)
    assert out["registrar/state_store_ms/p50"] == 2.5
    assert out["registrar/state_store_ms/p90"] == pytest.approx(3.7)
    # A day later the window is empty: the last value stays, the statistics go.
    later = metrics.metrics(13.0 + registrar.WINDOW_SECONDS + 1)
    assert later["registrar/state_store_ms"] == 4.0
    assert "registrar/state_store_ms/count" not in later
