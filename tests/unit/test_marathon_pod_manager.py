"""The pod state machine (butte/frameworks/marathon/pods.py) fed by hand: placement on
offers as LAUNCH_GROUPs, status and deployments, failure replacement with backoff, restart
on a definition change, deletion, and a restore from its own records."""

from __future__ import annotations

import math
from typing import Any

import pytest

from butte.frameworks.marathon.model import Kill, LaunchGroup, Publish, Reconcile
from butte.frameworks.marathon.planner import ApiError
from butte.frameworks.marathon.pods import PodInstance, PodManager
from butte.frameworks.marathon.pods_def import normalize_pod

RAW = {
    "id": "/db",
    "containers": [
        {
            "name": "a",
            "exec": {"command": {"shell": "sleep 600"}},
            "resources": {"cpus": 0.5, "mem": 64},
            "endpoints": [{"name": "p", "hostPort": 0}],
        },
        {
            "name": "b",
            "exec": {"command": {"shell": "sleep 600"}},
            "resources": {"cpus": 0.5, "mem": 64},
        },
    ],
}


def _offer(n: int, cpus: float = 4.0, mem: float = 1024.0) -> dict[str, Any]:
    return {
        "id": {"value": f"o{n}"},
        "agent_id": {"value": "ag"},
        "hostname": "h",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": "*"},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}, "role": "*"},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 1000.0}, "role": "*"},
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": 31000, "end": 31010}]},
            },
        ],
    }


def _status(task_id: str, state: str) -> dict[str, Any]:
    return {"task_id": {"value": task_id}, "state": state, "agent_id": {"value": "ag"}}


def _manager(instances: int = 1) -> PodManager:
    m = PodManager()
    m.subscribed("fw")
    m.create(normalize_pod({**RAW, "scaling": {"instances": instances}}), 0.0, m.new_version(0.0))
    m.tick(0.0)
    return m


def _launch(m: PodManager, now: float, offer: int = 1) -> list[tuple[dict[str, Any], list]]:
    rest = m.offers([_offer(offer)], now)
    assert rest == []
    (effect,) = [e for e in m.take_effects() if isinstance(e, LaunchGroup)]
    return effect.groups


def _run(m: PodManager, now: float) -> None:
    for inst in list(m.instances.values()):
        for t in inst.tasks.values():
            if t["state"] == "TASK_STAGING":
                assert m.status(_status(t["task_id"], "TASK_RUNNING"), now)


def test_an_instance_is_placed_as_one_task_group_and_the_pod_gets_stable() -> None:
    m = _manager()
    assert m.demand(0.0)
    (dep,) = m.deployments.values()
    assert dep.json()["currentActions"][0] == {
        "action": "StartPod",
        "pod": "/db",
        "readinessCheckResults": [],
    }
    ((executor, tasks),) = _launch(m, 1.0)
    assert executor["type"] == "DEFAULT"
    cpus = [r["scalar"]["value"] for r in executor["resources"] if r["name"] == "cpus"]
    assert cpus == [0.1]
    (ports,) = [r for r in executor["resources"] if r["name"] == "ports"]
    assert [t["name"] for t in tasks] == ["a", "b"]
    assert [r["scalar"]["value"] for r in tasks[0]["resources"] if r["name"] == "cpus"] == [0.5]
    m.tick(1.0)
    assert not m.demand(1.0)
    assert m.status_json("/db", 1.0)["status"] == "DEPLOYING"
    _run(m, 2.0)
    m.tick(2.0)
    assert not m.deployments
    status = m.status_json("/db", 2.0)
    assert status["status"] == "STABLE"
    (inst,) = status["instances"]
    port = ports["ranges"]["range"][0]["begin"]
    assert inst["containers"][0]["endpoints"] == [{"name": "p", "allocatedHostPort": port}]
    assert inst["specReference"].startswith("/v2/pods/db::versions/")
    assert not m.status(_status("someone-else", "TASK_RUNNING"), 2.0)


def test_an_offer_too_small_is_left_for_the_planner() -> None:
    m = _manager()
    small = _offer(1, cpus=1.0)  # 0.1 + 0.5 + 0.5 does not fit
    assert m.offers([small], 1.0) == [small]
    assert not m.instances and m.demand(1.0)


def _rack_offer(n: int, host: str, rack: str, cpus: float = 4.0) -> dict[str, Any]:
    attribute = {"name": "rack", "type": "TEXT", "text": {"value": rack}}
    offer = _offer(n, cpus=cpus)
    return {**offer, "agent_id": {"value": host}, "hostname": host, "attributes": [attribute]}


def _constrained(instances: int, *rules: list[str]) -> PodManager:
    m = PodManager()
    m.subscribed("fw")
    raw = {
        **RAW,
        "scaling": {"instances": instances},
        "scheduling": {"placement": {"constraints": list(rules)}},
    }
    m.create(normalize_pod(raw), 0.0, m.new_version(0.0))
    m.tick(0.0)
    return m


def test_placement_constraints_decide_which_offers_an_instance_takes() -> None:
    # UNIQUE hostname: one instance per host, even from one big offer; the rest waits.
    m = _constrained(3, ["hostname", "UNIQUE"])
    offers = [_rack_offer(1, "h1", "r1"), _rack_offer(2, "h1", "r1"), _rack_offer(3, "h2", "r1")]
    assert m.offers(offers, 1.0) == [offers[1]]
    assert sorted(i.host for i in m.instances.values()) == ["h1", "h2"]
    assert m.wanted == {"/db": 1}
    # An attribute: only agents whose rack is r2 take it; the instance keeps the attributes.
    m = _constrained(1, ["rack", "IS", "r2"])
    assert m.offers([_rack_offer(1, "h1", "r1")], 1.0) != []
    assert not m.instances
    assert m.offers([_rack_offer(2, "h2", "r2")], 1.0) == []
    (inst,) = m.instances.values()
    assert inst.host == "h2" and inst.attributes == {"rack": "r2"}
    # It survives the stored records (a restarted scheduler still knows where it is).
    restored = PodManager()
    restored.restore(m.take_dirty())
    assert restored.instances[inst.instance_id].attributes == {"rack": "r2"}


def test_a_scale_down_keeps_group_by_groups_even() -> None:
    m = _constrained(4, ["rack", "GROUP_BY"])
    racks = [("h1", "r1"), ("h2", "r2"), ("h3", "r1"), ("h4", "r2")]
    for n, (host, rack) in enumerate(racks):
        m.offers([_rack_offer(n, host, rack, cpus=1.5)], 1.0 + n)  # room for one
    assert sorted(i.attributes["rack"] for i in m.instances.values()) == ["r1", "r1", "r2", "r2"]
    # Only the r1 instances run: the pod's kill order alone would take both r2 ones.
    for inst in m.instances.values():
        if inst.attributes["rack"] == "r1":
            for t in inst.tasks.values():
                assert m.status(_status(t["task_id"], "TASK_RUNNING"), 5.0)
    m.tick(5.0)
    m.take_effects()
    pod = normalize_pod(
        {
            **RAW,
            "scaling": {"instances": 2},
            "scheduling": {"placement": {"constraints": [["rack", "GROUP_BY"]]}},
        }
    )
    m.update(pod, 6.0, m.new_version(6.0), force=True)
    m.tick(6.0)
    killed = {k.task_id.rsplit(".", 1)[0] for k in m.take_effects() if isinstance(k, Kill)}
    left = [i for i in m.instances.values() if i.instance_id not in killed]
    assert len(killed) == 2 and sorted(i.attributes["rack"] for i in left) == ["r1", "r2"]


def test_a_failed_member_ends_the_instance_which_is_replaced_after_the_backoff() -> None:
    m = _manager()
    _launch(m, 1.0)
    _run(m, 1.5)
    m.tick(1.5)
    (inst,) = m.instances.values()
    a, b = (t["task_id"] for t in inst.tasks.values())
    m.take_effects()
    m.status(_status(a, "TASK_FAILED"), 2.0)
    kills = [e for e in m.take_effects() if isinstance(e, Kill)]
    assert [k.task_id for k in kills] == [b]  # the rest of the group goes too
    m.tick(2.0)
    assert m.status_json("/db", 2.0)["status"] == "DEGRADED"
    m.status(_status(b, "TASK_KILLED"), 2.1)
    assert not m.instances  # gone once every member ended
    m.tick(2.1)
    assert m.wanted == {"/db": 1}
    assert not m.demand(2.5)  # backed off for 1 s
    assert m.offers([_offer(2)], 2.5) != []
    assert m.demand(3.2)
    _launch(m, 3.2, offer=3)
    assert len(m.instances) == 1


def test_an_instance_changed_event_follows_the_condition_of_the_whole_instance() -> None:
    m = _manager()
    _launch(m, 1.0)
    (inst,) = m.instances.values()
    a, b = (t["task_id"] for t in inst.tasks.values())
    m.take_effects()

    def conditions() -> list[str]:
        events = [e.event for e in m.take_effects() if isinstance(e, Publish)]
        # every task update first (as Marathon), then a change of the instance's condition
        updates = [e for e in events if e["eventType"] == "status_update_event"]
        assert events[0] == updates[0] and len(updates) == 1
        assert (updates[0]["appId"], updates[0]["slaveId"]) == ("/db", "ag")
        changes = events[1:]
        assert all(e["eventType"] == "instance_changed_event" for e in changes)
        assert all(e["instanceId"] == inst.instance_id for e in changes)
        assert all((e["runSpecId"], e["agentId"]) == ("/db", "ag") for e in changes)
        return [e["condition"] for e in changes]

    running = {**_status(a, "TASK_RUNNING"), "message": "up"}
    running["container_status"] = {
        "network_infos": [{"ip_addresses": [{"ip_address": "10.1.2.3"}]}]
    }
    m.status(running, 1.5)
    (update,) = [e.event for e in m.outbox if isinstance(e, Publish)]
    port = inst.ports["p"]  # a's endpoint; b has none
    assert {k: update[k] for k in ("taskId", "taskStatus", "message", "ports", "ipAddresses")} == {
        "taskId": a,
        "taskStatus": "TASK_RUNNING",
        "message": "up",
        "ports": [port],
        "ipAddresses": [{"ipAddress": "10.1.2.3", "protocol": "IPv4"}],
    }
    assert conditions() == []  # b still staging: the instance is Staging
    m.status(_status(b, "TASK_RUNNING"), 1.6)
    assert conditions() == ["Running"]
    m.status(_status(b, "TASK_RUNNING"), 1.7)  # a repeated state changes nothing
    assert conditions() == []
    m.status(_status(a, "TASK_FAILED"), 2.0)
    assert conditions() == ["Failed"]
    m.status(_status(b, "TASK_KILLED"), 2.1)  # one failed member keeps it Failed
    assert conditions() == []


def test_api_events_name_the_kind_client_and_path() -> None:
    m = PodManager()
    m.api_event("deleted", "10.0.0.7", "/v2/pods//db", 0.0)
    (effect,) = m.take_effects()
    assert isinstance(effect, Publish)
    assert effect.event == {
        "eventType": "pod_deleted_event",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "clientIp": "10.0.0.7",
        "uri": "/v2/pods//db",
    }


def _unreachable_pod(strategy: Any) -> tuple[PodManager, PodInstance]:
    m = PodManager()
    m.subscribed("fw")
    raw = {**RAW, "scheduling": {"unreachableStrategy": strategy} if strategy else {}}
    m.create(normalize_pod(raw), 0.0, m.new_version(0.0))
    m.tick(0.0)
    _launch(m, 1.0)
    _run(m, 1.0)
    m.tick(1.0)
    (inst,) = m.instances.values()
    for t in inst.tasks.values():  # the agent is partitioned away
        assert m.status(_status(t["task_id"], "TASK_UNREACHABLE"), 2.0)
    return m, inst


def test_an_unreachable_instance_is_replaced_and_forgotten_at_once_by_default() -> None:
    m, inst = _unreachable_pod(None)  # Marathon's default: 0 and 0
    m.tick(2.0)
    assert not m.instances and m.wanted == {"/db": 1}
    _launch(m, 2.0, offer=2)
    # The old tasks come back: unknown to the pods now (the planner kills those it knows
    # nothing of, as Marathon kills an expunged instance that returns).
    task = next(iter(inst.tasks.values()))
    assert not m.status(_status(task["task_id"], "TASK_RUNNING"), 3.0)


def test_an_unreachable_instance_counts_until_inactive_and_is_kept_until_expunged() -> None:
    m, inst = _unreachable_pod({"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120})
    m.tick(30.0)
    assert m.wanted == {} and inst.instance_id in m.instances  # still counted
    m.tick(62.5)
    assert m.wanted == {"/db": 1}  # inactive: replaced
    ((_, tasks),) = _launch(m, 63.0, offer=2)
    _run(m, 63.0)
    m.tick(63.0)
    assert len(m.instances) == 2 and not m.deployments
    m.take_effects()
    # It comes back before it is expunged: counted again, so one of the two goes (the
    # youngest, the pod's killSelection).
    for t in inst.tasks.values():
        assert m.status(_status(t["task_id"], "TASK_RUNNING"), 70.0)
    assert inst.unreachable_since is None
    m.tick(70.0)
    killed = {k.task_id for k in m.take_effects() if isinstance(k, Kill)}
    assert killed == {t["task_id"]["value"] for t in tasks}


def test_an_unreachable_instance_that_never_returns_is_expunged() -> None:
    m, inst = _unreachable_pod({"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120})
    m.tick(119.0)
    assert inst.instance_id in m.instances
    m.tick(122.5)
    assert inst.instance_id not in m.instances
    assert ("podinstance", inst.instance_id, None) in m.take_dirty()


def test_an_instance_that_does_not_come_up_in_the_launch_timeout_is_replaced() -> None:
    m = PodManager(task_launch_timeout=10.0)
    m.subscribed("fw")
    m.create(normalize_pod(RAW), 0.0, m.new_version(0.0))
    m.tick(0.0)
    _launch(m, 1.0)
    (inst,) = m.instances.values()
    a, b = (t["task_id"] for t in inst.tasks.values())
    m.status(_status(a, "TASK_RUNNING"), 2.0)  # b stays staging
    m.take_effects()
    m.tick(10.5)
    assert not [e for e in m.take_effects() if isinstance(e, Kill)] and not m.wanted
    m.tick(11.5)
    kills = {e.task_id for e in m.take_effects() if isinstance(e, Kill)}
    assert kills == {a, b} and inst.killing
    assert m.wanted == {"/db": 1}


def test_a_changed_definition_replaces_the_instances_a_scale_keeps_them() -> None:
    m = _manager()
    _launch(m, 1.0)
    _run(m, 1.0)
    m.tick(1.0)
    (first,) = m.instances
    scaled = normalize_pod({**RAW, "scaling": {"instances": 2}})
    d, created = m.update(scaled, 2.0, m.new_version(2.0), force=False)
    assert d.action == "ScalePod" and not created
    m.tick(2.0)
    assert not [e for e in m.take_effects() if isinstance(e, Kill)]
    assert m.wanted == {"/db": 1}
    _launch(m, 2.0, offer=2)
    _run(m, 2.0)
    m.tick(2.0)
    assert not m.deployments
    changed = normalize_pod({**RAW, "environment": {"X": "1"}, "scaling": {"instances": 2}})
    d, _ = m.update(changed, 3.0, m.new_version(3.0), force=False)
    assert d.action == "RestartPod"
    with pytest.raises(ApiError) as e:  # locked by that deployment
        m.update(changed, 3.0, m.new_version(3.0), force=False)
    assert e.value.status == 409
    m.tick(3.0)
    # Marathon's default upgrade strategy (1, 1): the new instances first, the old stay up
    assert not [e for e in m.take_effects() if isinstance(e, Kill)]
    assert m.wanted == {"/db": 2}
    old = set(m.instances)
    assert first in old
    _launch(m, 3.0, offer=3)
    m.tick(3.0)
    assert not [e for e in m.take_effects() if isinstance(e, Kill)]  # not stable yet
    _run(m, 3.5)
    m.tick(3.5)
    killed = {k.task_id for k in m.take_effects() if isinstance(k, Kill)}
    assert len(killed) == 4 and {i for i in m.instances if m.instances[i].killing} == old


@pytest.mark.parametrize(
    ("strategy", "killed_at_once", "launched_at_once"),
    [
        ({"minimumHealthCapacity": 0, "maximumOverCapacity": 0}, 2, 2),
        ({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}, 1, 1),
        ({"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5}, 0, 1),
        ({"minimumHealthCapacity": 1, "maximumOverCapacity": 0}, 0, 1),  # one over, at least
    ],
)
def test_a_restart_keeps_to_the_pods_upgrade_strategy(
    strategy: dict[str, float], killed_at_once: int, launched_at_once: int
) -> None:
    m = _manager(instances=2)
    _launch(m, 1.0)
    _run(m, 1.0)
    m.tick(1.0)
    assert not m.deployments and len(m.instances) == 2
    m.take_effects()
    changed = {**RAW, "environment": {"X": "1"}, "scaling": {"instances": 2}}
    changed["scheduling"] = {"upgrade": strategy}
    m.update(normalize_pod(changed), 2.0, m.new_version(2.0), force=False)
    m.tick(2.0)
    killed = {k.task_id for k in m.take_effects() if isinstance(k, Kill)}
    assert len(killed) == 2 * killed_at_once  # two members each
    assert m.wanted == {"/db": launched_at_once}
    # Step by step until only new instances run: never fewer stable than the strategy's
    # minimum, never more instances than its maximum.
    for step in range(10):
        now = 3.0 + step
        for inst in [i for i in m.instances.values() if i.killing]:
            for t in inst.tasks.values():
                m.status(_status(t["task_id"], "TASK_KILLED"), now)
        if m.wanted:
            _launch(m, now, offer=10 + step)
        assert len(m.instances) <= 2 + math.floor(2 * strategy["maximumOverCapacity"]) + (
            strategy == {"minimumHealthCapacity": 1, "maximumOverCapacity": 0}
        )
        _run(m, now)
        m.tick(now)
        stable = [i for i in m.instances.values() if i.status(m.pods["/db"]) == "STABLE"]
        assert len(stable) >= math.ceil(2 * strategy["minimumHealthCapacity"]), step
        if not m.deployments:
            break
    assert not m.deployments, step
    assert {i.version for i in m.instances.values()} == {m.pods["/db"]["version"]}
    assert len(m.instances) == 2


def test_create_twice_is_409_delete_unknown_is_404_and_delete_kills_everything() -> None:
    m = _manager()
    with pytest.raises(ApiError) as e:
        m.create(normalize_pod(RAW), 0.0, m.new_version(0.0))
    assert e.value.status == 409
    with pytest.raises(ApiError) as e:
        m.delete("/nope", 0.0, m.new_version(0.0), force=False)
    assert e.value.status == 404
    _launch(m, 1.0)
    _run(m, 1.0)
    m.tick(1.0)
    m.take_effects()
    d = m.delete("/db", 2.0, m.new_version(2.0), force=False)
    assert d.action == "StopPod" and "/db" not in m.pods
    m.tick(2.0)
    kills = [e for e in m.take_effects() if isinstance(e, Kill)]
    assert len(kills) == 2
    for k in kills:
        m.status(_status(k.task_id, "TASK_KILLED"), 2.5)
    m.tick(2.5)
    assert not m.instances and not m.deployments and "/db" not in m.versions


def test_the_stored_records_restore_the_same_state_and_are_reconciled() -> None:
    m = _manager(instances=2)
    _launch(m, 1.0)
    _run(m, 1.0)
    records = [(k, key, v) for k, key, v in m.take_dirty() if v is not None]
    assert {k for k, _, _ in records} == {"pod", "podver", "podinstance", "poddeployment"}
    again = PodManager()
    again.restore([("meta", "framework_id", "fw"), *records])
    assert again.pods == m.pods and set(again.instances) == set(m.instances)
    assert set(again.by_task) == set(m.by_task)
    assert set(again.deployments) == set(m.deployments)
    again.subscribed("fw")
    (reconcile,) = [e for e in again.take_effects() if isinstance(e, Reconcile)]
    assert {t for t, _ in reconcile.tasks} == set(m.by_task)
    again.tick(2.0)
    assert again.wanted == {}
