"""The Marathon planner, pure: fed API changes, offers and statuses with the time passed
in, checked through its effects and views."""

from __future__ import annotations

import itertools

import pytest

from butte.frameworks.marathon.appdef import Invalid, merge_update, normalize_app
from butte.frameworks.marathon.constraints import balanced_kills, first_violation
from butte.frameworks.marathon.model import (
    Decline,
    Kill,
    Launch,
    Publish,
    Reconcile,
    Revive,
    Suppress,
)
from butte.frameworks.marathon.planner import ApiError, Planner

_ids = itertools.count()


def offer(
    agent: str = "a1",
    host: str = "h1",
    cpus: float = 4,
    mem: float = 4096,
    ports: tuple[int, int] = (31000, 32000),
    attributes: dict | None = None,
) -> dict:
    return {
        "id": {"value": f"o{next(_ids)}"},
        "agent_id": {"value": agent},
        "hostname": host,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": ports[0], "end": ports[1]}]},
            },
        ],
        "attributes": [
            {"name": k, "type": "TEXT", "text": {"value": v}} for k, v in (attributes or {}).items()
        ],
    }


def app(app_id: str = "/web", **fields) -> dict:
    return normalize_app({"id": app_id, "cmd": "sleep 100", "cpus": 0.5, "mem": 64, **fields})


class World:
    """A planner with a clock and helpers that play the master's part."""

    def __init__(self) -> None:
        self.p = Planner(seed=7)
        self.now = 1000.0
        self.p.subscribed("fw-1", self.now)
        self.p.take_effects()

    def step(self, seconds: float = 0.1) -> list:
        self.now += seconds
        self.p.tick(self.now, full=True)
        return self.p.take_effects()

    def offer(self, *offers: dict) -> list[Launch]:
        self.p.tick(self.now)
        self.p.offers(list(offers), self.now)
        return [e for e in self.p.take_effects() if isinstance(e, Launch)]

    def update(self, task_id: str, state: str, **extra) -> None:
        status = {"task_id": {"value": task_id}, "state": state, **extra}
        self.p.status(status, self.now)

    def run_all(self, launches: list[Launch], healthy: bool | None = None) -> None:
        for launch in launches:
            for t in launch.tasks:
                extra = {} if healthy is None else {"healthy": healthy}
                self.update(t["task_id"]["value"], "TASK_RUNNING", **extra)

    def running(self, app_id: str) -> list:
        return [i for i in self.p.app_instances(app_id) if i.state == "TASK_RUNNING"]


def test_deploy_launch_run_converge():
    w = World()
    d = w.p.deploy({"/web": app(instances=3)}, w.now)
    assert [a["action"] for s in d.steps for a in s] == ["StartApplication", "ScaleApplication"]
    launches = w.offer(offer())
    tasks = [t for launch in launches for t in launch.tasks]
    assert len(tasks) == 3
    env = {v["name"]: v["value"] for v in tasks[0]["command"]["environment"]["variables"]}
    assert env["PORT0"] == env["PORT"] and env["HOST"] == "h1"
    assert env["MARATHON_APP_ID"] == "/web"
    ports = [int(env["PORT0"])]
    assert 31000 <= ports[0] <= 32000
    assert w.p.deployments and ("instance", tasks[0]["task_id"]["value"]) not in w.p.dirty or True
    w.run_all(launches)
    w.step()
    assert not w.p.deployments and len(w.running("/web")) == 3
    # nothing more wanted: suppressed, and the next offer is declined for long
    assert w.p.suppressed
    effects = (w.p.offers([offer()], w.now), w.p.take_effects())[1]
    assert isinstance(effects[0], Decline) and effects[0].refuse_seconds >= 60


def test_instances_are_dirty_before_their_launch_leaves():
    w = World()
    w.p.deploy({"/web": app(instances=1)}, w.now)
    w.p.take_dirty()
    launches = w.offer(offer())
    task_id = launches[0].tasks[0]["task_id"]["value"]
    dirty = {(k, key): v for k, key, v in w.p.take_dirty()}
    assert dirty[("instance", task_id)]["state"] == "TASK_STAGING"


def test_restore_reconciles_and_does_not_relaunch():
    w = World()
    w.p.deploy({"/web": app(instances=2)}, w.now)
    launches = w.offer(offer())
    records = w.p.take_dirty()
    records.append(("meta", "framework_id", "fw-1"))
    restored = Planner(seed=1)
    restored.restore([r for r in records if r[2] is not None])
    restored.subscribed("fw-1", w.now + 1)
    effects = restored.take_effects()
    explicit = [e for e in effects if isinstance(e, Reconcile) and e.tasks]
    assert {t for t, _ in explicit[0].tasks} == {
        t["task_id"]["value"] for launch in launches for t in launch.tasks
    }
    assert any(isinstance(e, Reconcile) and not e.tasks for e in effects)
    restored.tick(w.now + 1, full=True)
    restored.offers([offer()], w.now + 1)
    assert not [e for e in restored.take_effects() if isinstance(e, Launch)]
    # a task the master does not know comes back GONE: it is replaced
    lost = explicit[0].tasks[0][0]
    restored.status({"task_id": {"value": lost}, "state": "TASK_GONE"}, w.now + 2)
    restored.tick(w.now + 2, full=True)
    restored.offers([offer()], w.now + 2)
    relaunched = [e for e in restored.take_effects() if isinstance(e, Launch)]
    assert sum(len(e.tasks) for e in relaunched) == 1


def test_unknown_running_task_is_killed():
    w = World()
    w.update("stranger", "TASK_RUNNING", agent_id={"value": "a9"})
    kills = [e for e in w.p.take_effects() if isinstance(e, Kill)]
    assert kills == [Kill("stranger", "a9", None)]


def _restarting(instances: int, strategy: dict) -> tuple[World, set[str]]:
    """An app of ``instances`` healthy instances (a COMMAND health check) whose restart
    with ``strategy`` has just been asked for; the world and the old instances' ids."""
    w = World()
    hc = [{"protocol": "COMMAND", "command": {"value": "true"}}]
    w.p.deploy({"/web": app(instances=instances, healthChecks=hc, upgradeStrategy=strategy)}, w.now)
    w.run_all(w.offer(offer()), healthy=True)
    w.step()
    assert not w.p.deployments
    old = {i.task_id for i in w.p.app_instances("/web")}
    w.p.deploy({"/web": w.p.apps["/web"]}, w.now, restart=["/web"])
    return w, old


def test_rolling_restart_keeps_minimum_health_capacity():
    w, old = _restarting(4, {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0})
    for _ in range(20):
        effects = w.step()
        for kill in (e for e in effects if isinstance(e, Kill)):
            w.update(kill.task_id, "TASK_KILLED")
        alive_old_healthy = [
            i for i in w.p.app_instances("/web") if i.task_id in old and not i.killing and i.healthy
        ]
        new_healthy = [i for i in w.p.app_instances("/web") if i.task_id not in old and i.healthy]
        assert len(alive_old_healthy) + len(new_healthy) >= 2  # never below 50 % of 4
        assert len([i for i in w.p.app_instances("/web") if not i.killing]) <= 4  # no over-capacity
        w.run_all(w.offer(offer()), healthy=True)
        if not w.p.deployments:
            break
    assert not w.p.deployments
    assert not {i.task_id for i in w.p.app_instances("/web")} & old
    assert len(w.p.app_instances("/web")) == 4


def test_adding_a_health_check_keeps_minimum_health_capacity():
    # The old instances were launched without health checks: running, they count as
    # healthy (Marathon's Instance.consideredHealthy judges an instance by its own run
    # spec), so at most half of them go before new ones are healthy.
    w = World()
    strategy = {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}
    w.p.deploy({"/web": app(instances=20, upgradeStrategy=strategy)}, w.now)
    w.run_all(w.offer(offer(cpus=100, mem=100000)))
    w.step()
    assert not w.p.deployments and len(w.running("/web")) == 20
    old = {i.task_id for i in w.p.app_instances("/web")}
    hc = [{"protocol": "COMMAND", "command": {"value": "true"}}]
    w.p.deploy({"/web": app(instances=20, healthChecks=hc, upgradeStrategy=strategy)}, w.now)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert len(kills) == 10
    for kill in kills:
        w.update(kill.task_id, "TASK_KILLED")
    launched = w.offer(offer(cpus=100, mem=100000))
    assert sum(len(launch.tasks) for launch in launched) == 10
    w.run_all(launched)  # running, not yet healthy: no old instance may go
    assert not [e for e in w.step() if isinstance(e, Kill)]
    assert len([i for i in w.running("/web") if i.task_id in old]) == 10
    w.run_all(launched, healthy=True)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert {k.task_id for k in kills} <= old and len(kills) == 10


def test_rolling_restart_with_full_health_capacity_and_no_over_capacity():
    # Refused before; Marathon accepts it and replaces one instance at a time, one over
    # capacity (TaskReplaceActor.computeRestartStrategy).
    w, old = _restarting(3, {"minimumHealthCapacity": 1, "maximumOverCapacity": 0})
    for _ in range(30):
        effects = w.step()
        for kill in (e for e in effects if isinstance(e, Kill)):
            w.update(kill.task_id, "TASK_KILLED")
        alive = [i for i in w.p.app_instances("/web") if not i.killing]
        assert len([i for i in alive if i.healthy]) >= 3  # never below 100 % of 3
        assert len(alive) <= 4  # at most one over capacity
        launched = w.offer(offer())
        assert sum(len(launch.tasks) for launch in launched) <= 1
        w.run_all(launched, healthy=True)
        if not w.p.deployments:
            break
    assert not w.p.deployments
    assert not {i.task_id for i in w.p.app_instances("/web")} & old
    assert len(w.p.app_instances("/web")) == 3


def test_instance_ids_and_instance_events_are_marathons():
    # Marathon's instance id is the task id without its container and attempt
    # (``web.instance-<uuid>`` of ``web.instance-<uuid>._app.1``, docs/docs/event-bus.md).
    w = World()
    hc = [{"protocol": "COMMAND", "command": {"value": "true"}}]
    w.p.deploy({"/hc/web": app("/hc/web", instances=1, healthChecks=hc)}, w.now)
    task = w.offer(offer())[0].tasks[0]["task_id"]["value"]
    instance = task.removesuffix("._app.1")
    assert instance.startswith("hc_web.instance-") and instance != task
    w.p.take_effects()
    w.update(task, "TASK_STARTING")
    w.update(task, "TASK_RUNNING", healthy=True)
    w.update(task, "TASK_RUNNING", healthy=False, message="down")
    events = [e.event for e in w.p.take_effects() if isinstance(e, Publish)]
    by_type: dict[str, list[dict]] = {}
    for event in events:
        by_type.setdefault(event["eventType"], []).append(event)
    changed = by_type["instance_changed_event"]
    assert [e["condition"] for e in changed] == ["Starting", "Running"]
    assert {k: v for k, v in changed[1].items() if k != "timestamp"} == {
        "eventType": "instance_changed_event",
        "instanceId": instance,
        "condition": "Running",
        "runSpecId": "/hc/web",
        "agentId": "a1",
        "host": "h1",
        "runSpecVersion": w.p.apps["/hc/web"]["version"],
    }
    health = by_type["instance_health_changed_event"]
    assert [(e["instanceId"], e["healthy"], e["runSpecId"]) for e in health] == [
        (instance, True, "/hc/web"),
        (instance, False, "/hc/web"),
    ]
    assert health[0]["runSpecVersion"] == w.p.apps["/hc/web"]["version"]
    assert [e["instanceId"] for e in by_type["health_status_changed_event"]] == [instance] * 2
    assert [e["taskId"] for e in by_type["failed_health_check_event"]] == [task]
    assert [e["instanceId"] for e in by_type["failed_health_check_event"]] == [instance]
    rendered = w.p.task_json(w.p.instances[task])
    assert rendered["id"] == task
    assert rendered["healthCheckResults"][0]["instanceId"] == instance
    assert rendered["healthCheckResults"][0]["taskId"] == task
    w.update(task, "TASK_FAILED", message="boom")
    failure = w.p.app_json("/hc/web", {"lastTaskFailure"})["lastTaskFailure"]
    assert (failure["taskId"], failure["instanceId"]) == (task, instance)
    ended = [e.event for e in w.p.take_effects() if isinstance(e, Publish)]
    assert [e["condition"] for e in ended if e["eventType"] == "instance_changed_event"] == [
        "Failed"
    ]


def test_backoff_after_failures_and_reset():
    w = World()
    w.p.deploy({"/web": app(backoffSeconds=2, backoffFactor=2, maxLaunchDelaySeconds=5)}, w.now)
    delays = []
    for _ in range(4):
        launches = w.offer(offer())
        while not launches:
            w.now += 0.5
            launches = w.offer(offer())
        w.update(launches[0].tasks[0]["task_id"]["value"], "TASK_FAILED", message="boom")
        delays.append(w.p.runtime["/web"].delay)
        w.p.tick(w.now)
        queue = w.p.queue(w.now)
        assert queue[0]["delay"]["timeLeftSeconds"] > 0
    assert delays == [2, 4, 5, 5]
    assert w.p.app_json("/web", {"lastTaskFailure"})["lastTaskFailure"]["message"] == "boom"
    w.p.reset_delay("/web")
    assert w.offer(offer())


def test_constraints_and_queue_reason():
    w = World()
    w.p.deploy({"/web": app(instances=3, constraints=[["hostname", "UNIQUE"]])}, w.now)
    launches = w.offer(offer("a1", "h1"), offer("a2", "h1"), offer("a3", "h2"))
    hosts = sorted(launch.agent_id for launch in launches)
    assert hosts == ["a1", "a3"]
    reasons = w.p.queue(w.now)[0]["processedOffersSummary"]["rejectSummaryLastOffers"]
    assert {r["reason"]: r["declined"] for r in reasons if r["declined"]} == {
        "UnfulfilledConstraint": 1
    }


@pytest.mark.parametrize(
    ("constraint", "here", "placed", "ok"),
    [
        (["rack", "CLUSTER", "r1"], {"rack": "r1"}, [], True),
        (["rack", "CLUSTER", "r1"], {"rack": "r2"}, [], False),
        (["rack", "CLUSTER"], {"rack": "r2"}, [{"rack": "r1"}], False),
        (["rack", "LIKE", "r[12]"], {"rack": "r2"}, [], True),
        (["rack", "UNLIKE", "r[12]"], {"rack": "r2"}, [], False),
        (["rack", "MAX_PER", "2"], {"rack": "r1"}, [{"rack": "r1"}], True),
        (["rack", "MAX_PER", "2"], {"rack": "r1"}, [{"rack": "r1"}] * 2, False),
        (["rack", "GROUP_BY"], {"rack": "r1"}, [{"rack": "r1"}, {"rack": "r2"}], True),
        (
            ["rack", "GROUP_BY"],
            {"rack": "r1"},
            [{"rack": "r1"}, {"rack": "r2"}] * 0 + [{"rack": "r1"}, {"rack": "r1"}, {"rack": "r2"}],
            False,
        ),
        (["rack", "GROUP_BY", "3"], {"rack": "r1"}, [{"rack": "r1"}, {"rack": "r2"}], False),
        (["rack", "IS", "r1"], {"rack": "r1"}, [], True),
        (["rack", "IS", "r1"], {}, [], False),
    ],
)
def test_constraint_operators(constraint, here, placed, ok):
    result = first_violation([constraint], "h", here, [("h", p) for p in placed])
    assert (result is None) == ok


def test_unreachable_strategy_replaces_after_inactive_and_expunges():
    w = World()
    strategy = {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 20}
    w.p.deploy({"/web": app(instances=1, unreachableStrategy=strategy)}, w.now)
    launches = w.offer(offer())
    w.run_all(launches)
    task = launches[0].tasks[0]["task_id"]["value"]
    w.update(task, "TASK_UNREACHABLE")
    w.step(5)
    assert not w.offer(offer("a2"))  # still counted
    w.step(6)
    replacement = w.offer(offer("a2"))
    assert len(replacement) == 1
    w.step(10)
    assert task not in w.p.instances  # expunged
    w.update(task, "TASK_RUNNING", agent_id={"value": "a1"})  # it came back: unknown now
    assert any(isinstance(e, Kill) and e.task_id == task for e in w.p.take_effects())


def test_conflict_force_and_rollback():
    w = World()
    w.p.deploy({"/web": app(instances=1)}, w.now)
    with pytest.raises(ApiError) as e:
        w.p.deploy({"/web": app(instances=2)}, w.now)
    assert e.value.status == 409 and e.value.body["deployments"]
    d = w.p.deploy({"/web": app(instances=2)}, w.now, force=True)
    assert len(w.p.deployments) == 1
    rollback = w.p.cancel_deployment(d.id, w.now, force=False)
    assert rollback is not None and w.p.apps["/web"]["instances"] == 1
    assert w.p.cancel_deployment(rollback.id, w.now, force=True) is None
    assert not w.p.deployments
    with pytest.raises(ApiError):
        w.p.cancel_deployment("nope", w.now, force=True)


def test_dependencies_order_and_cycles():
    w = World()
    d = w.p.deploy({"/a": app("/a"), "/b": app("/b", dependencies=["/a"])}, w.now)
    order = [[a["app"] for a in s] for s in d.steps]
    assert order.index(["/a"]) < order.index(["/b"])
    # /b waits for /a: only /a launches until /a runs
    launches = w.offer(offer())
    assert {t["name"] for launch in launches for t in launch.tasks} == {"a"}
    with pytest.raises(ApiError) as e:
        w.p.deploy(
            {"/c": app("/c", dependencies=["/d"]), "/d": app("/d", dependencies=["/c"])}, w.now
        )
    assert e.value.status == 422
    assert e.value.body["details"] == [
        {"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}
    ]
    # a cycle through an app the change leaves alone (RootGroup checks the whole graph)
    with pytest.raises(ApiError) as e:
        w.p.deploy({"/a": app("/a", dependencies=["/b"])}, w.now, force=True)
    assert e.value.status == 422
    # Marathon ignores dependencies that resolve to nothing
    d = w.p.deploy({"/e": app("/e", dependencies=["/missing", "/nonexistent/app"])}, w.now)
    assert [[a["app"] for a in s] for s in d.steps] == [["/e"], ["/e"]]


def test_group_dependencies_order_deployments_and_stay_the_groups():
    # Marathon keeps a group's dependencies on the group and combines them with the apps'
    # own only to order the deployment (RootGroup.applicationDependencies).
    w = World()
    groups = {"/prod/web": {"id": "/prod/web", "dependencies": ["/prod/db"]}}
    w.p.deploy({"/prod/db/pg": app("/prod/db/pg")}, w.now)
    w.p.deploy({"/prod/web/front": app("/prod/web/front")}, w.now, groups=groups)
    assert w.p.apps["/prod/web/front"]["dependencies"] == []
    assert w.p.groups["/prod/web"]["dependencies"] == ["/prod/db"]
    # the group's dependency alone orders the apps' deployment
    changes = {a: app(a, cmd="sleep 6") for a in ("/prod/db/pg", "/prod/web/front")}
    d = w.p.deploy(changes, w.now, force=True)
    assert [[a["app"] for a in s] for s in d.steps] == [["/prod/db/pg"], ["/prod/web/front"]]
    assert w.p.apps["/prod/web/front"]["dependencies"] == []
    # and one closing a cycle is refused
    with pytest.raises(ApiError) as e:
        w.p.deploy(
            {"/prod/db/pg": app("/prod/db/pg", dependencies=["/prod/web"])}, w.now, force=True
        )
    assert e.value.status == 422


def test_scale_down_kill_selection():
    w = World()
    w.p.deploy({"/web": app(instances=3, killSelection="OLDEST_FIRST")}, w.now)
    for _ in range(3):
        w.now += 1
        w.run_all(w.offer(offer(cpus=0.5)))
    w.step()
    oldest = min(w.p.app_instances("/web"), key=lambda i: i.staged_at)
    spec = dict(w.p.apps["/web"], instances=2)
    w.p.deploy({"/web": spec}, w.now)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert [k.task_id for k in kills] == [oldest.task_id]


def test_scale_down_keeps_group_by_groups_even():
    # Marathon's Constraints.selectInstancesToKill: the largest groups lose instances
    # first, so no rack is emptied even though its instances are the youngest.
    w = World()
    racks = {"r1": "a1", "r2": "a2", "r3": "a3"}
    w.p.deploy({"/web": app(instances=6, constraints=[["rack", "GROUP_BY", "3"]])}, w.now)
    for rack, agent in [*racks.items(), *racks.items()]:
        w.now += 1
        w.run_all(w.offer(offer(agent, agent, cpus=0.5, attributes={"rack": rack})))
    w.step()
    assert not w.p.deployments

    def spread() -> list[int]:
        alive = [i for i in w.p.app_instances("/web") if not i.killing]
        return [sum(1 for i in alive if i.attributes["rack"] == r) for r in racks]

    assert spread() == [2, 2, 2]
    # The youngest three are both of r3 and one of r2: youngest-first alone would
    # leave 2/1/0.
    for n, inst in enumerate(sorted(w.p.app_instances("/web"), key=lambda i: i.attributes["rack"])):
        inst.staged_at = w.now - 10 + n
    w.p.deploy({"/web": dict(w.p.apps["/web"], instances=3)}, w.now)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert len(kills) == 3 and spread() == [1, 1, 1]


@pytest.mark.parametrize(
    ("racks", "count", "left"),
    [
        ("aaabc", 2, {"a": 1, "b": 1, "c": 1}),  # the largest group first
        ("aaaabb", 3, {"a": 1, "b": 2}),  # once even, the first candidate goes
        ("aabbcc", 3, {"a": 1, "b": 1, "c": 1}),
        ("abc", 1, {"b": 1, "c": 1}),  # even: the caller's order decides (first candidate)
    ],
)
def test_balanced_kills_even_out_group_by(racks, count, left):
    candidates = [(f"h{n}", {"rack": r}) for n, r in enumerate(racks)]
    killed = balanced_kills([["rack", "GROUP_BY"]], candidates, count, lambda c: c)
    assert len(killed) == count
    remaining = [c[1]["rack"] for c in candidates if c not in killed]
    assert {r: remaining.count(r) for r in set(remaining)} == left


def test_balanced_kills_only_for_group_by():
    candidates = [(f"h{n}", {"rack": r}) for n, r in enumerate("aab")]
    for constraints in ([], [["rack", "MAX_PER", "2"]], [["hostname", "UNIQUE"]]):
        assert balanced_kills(constraints, candidates, 1, lambda c: c) == []
    assert balanced_kills([["rack", "GROUP_BY"]], candidates, 3, lambda c: c) == candidates


def test_delete_kills_everything_and_terminates():
    w = World()
    w.p.deploy({"/web": app(instances=2)}, w.now)
    w.run_all(w.offer(offer()))
    w.step()
    w.p.deploy({"/web": None}, w.now)
    effects = w.step()
    kills = [e for e in effects if isinstance(e, Kill)]
    assert len(kills) == 2
    for k in kills:
        w.update(k.task_id, "TASK_KILLED")
    effects = w.step()
    assert not w.p.deployments and "/web" not in w.p.apps and not w.p.instances
    assert any(getattr(e, "event", {}).get("eventType") == "app_terminated_event" for e in effects)
    assert any(isinstance(e, Suppress) for e in effects) or w.p.suppressed
    w.p.deploy({"/web": app()}, w.now)
    assert any(isinstance(e, Revive) for e in w.step())


def test_validation_lists_offending_fields():
    with pytest.raises(Invalid) as e:
        normalize_app(
            {
                "id": "/x",
                "cmd": "c",
                "cpus": -1,
                "instances": "many",
                "healthChecks": [{"protocol": "HTTP", "portIndex": 3}],
                "upgradeStrategy": {"minimumHealthCapacity": 2},
            }
        )
    paths = {d["path"] for d in e.value.details}
    assert {
        "/cpus",
        "/instances",
        "/healthChecks(0)/portIndex",
        "/upgradeStrategy/minimumHealthCapacity",
    } <= paths
    with pytest.raises(Invalid) as e:
        normalize_app(
            {
                "id": "/x",
                "container": {"type": "DOCKER", "docker": {"image": "b", "portMappings": [{}]}},
            }
        )
    assert e.value.details[0]["path"] == "/container/docker/portMappings"
    with pytest.raises(Invalid) as e:
        normalize_app({"id": "/x", "container": {"type": "MESOS", "docker": {"image": ""}}})
    assert e.value.details[0]["path"] == "/container/docker/image"
    with pytest.raises(Invalid):
        normalize_app({"id": "/x/tasks", "cmd": "c"})
    with pytest.raises(Invalid):
        normalize_app({"id": "/x", "cmd": "c", "readinessChecks": [{"name": "r"}]})
    spec = normalize_app({"id": "/x", "cmd": "c", "ports": [0, 0]})
    merged = normalize_app(merge_update(spec, {"instances": 5}))
    assert merged["instances"] == 5 and len(merged["portDefinitions"]) == 2


def test_versions_are_strictly_increasing():
    p = Planner()
    versions = [p.new_version(1000.0) for _ in range(1500)]
    assert versions == sorted(set(versions))


def test_idle_declines_are_revived_when_demand_appears():
    w = World()
    w.p.offers([offer()], w.now)  # nothing wanted yet: declined with the long filter
    assert isinstance(w.p.take_effects()[0], Decline)
    w.p.deploy({"/web": app()}, w.now)  # before any tick suppressed anything
    assert any(isinstance(e, Revive) for e in w.step())


def test_revives_again_while_launches_wait_without_offers():
    w = World()
    w.p.deploy({"/web": app()}, w.now)
    assert any(isinstance(e, Revive) for e in w.step())
    assert not any(isinstance(e, Revive) for e in w.step(1))
    assert any(isinstance(e, Revive) for e in w.step(6))  # no offer came: the REVIVE was lost?


def test_container_apps_become_mesos_container_infos():
    """An image app needs no cmd; its TaskInfo carries the ContainerInfo the agent's
    containerizers take (docs/docker.md, docs/containers.md)."""
    from butte.frameworks.marathon.launch import task_info
    from butte.frameworks.marathon.model import Instance

    mesos = normalize_app(
        {
            "id": "/img",
            "args": ["-c", "echo hi"],
            "container": {
                "type": "MESOS",
                "docker": {"image": "busybox:1"},
                "volumes": [{"containerPath": "/data", "hostPath": "/srv/d", "mode": "RO"}],
            },
        }
    )
    docker = normalize_app(
        {
            "id": "/d",
            "container": {
                "type": "DOCKER",
                "docker": {"image": "nginx", "network": "NONE", "forcePullImage": True},
            },
        }
    )
    inst = Instance(
        task_id="img.1",
        app_id="/img",
        version="v",
        config_version="v",
        agent_id="a1",
        host="h",
        ip="127.0.0.1",
        attributes={},
        ports=[],
        staged_at=0.0,
    )
    task = task_info(mesos, inst, [])
    assert task["container"] == {
        "type": "MESOS",
        "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox:1"}}},
        "volumes": [{"container_path": "/data", "host_path": "/srv/d", "mode": "RO"}],
    }
    assert task["command"]["shell"] is False and "value" not in task["command"]
    assert task["command"]["arguments"] == ["-c", "echo hi"]
    task = task_info(docker, inst, [])
    assert task["container"]["docker"]["image"] == "nginx"
    assert task["container"]["docker"]["network"] == "NONE"
    assert task["container"]["docker"]["force_pull_image"] is True
    assert task["command"] == {**task["command"], "shell": False} and "value" not in task["command"]


def test_an_apps_user_becomes_its_tasks_command_user():
    from butte.frameworks.marathon.launch import task_info
    from butte.frameworks.marathon.model import Instance

    inst = Instance("u.1", "/u", "v", "v", "a1", "h", "127.0.0.1", {}, [], 0.0)
    spec = normalize_app({"id": "/u", "cmd": "id -un", "user": "nobody"})
    assert spec["user"] == "nobody"
    assert task_info(spec, inst, [])["command"]["user"] == "nobody"
    plain = normalize_app({"id": "/u", "cmd": "id -un", "user": ""})
    assert "user" not in plain and "user" not in task_info(plain, inst, [])["command"]
    for bad in (3, "no body", "../x"):
        with pytest.raises(Invalid) as e:
            normalize_app({"id": "/u", "cmd": "c", "user": bad})
        assert e.value.details[0]["path"] == "/user"


def test_tasks_carry_marathons_discovery_info():
    """Every TaskInfo has a DiscoveryInfo as Marathon's TaskBuilder builds it (Mesos-DNS makes
    its SRV records of it): the app id as a host name, FRAMEWORK visibility, one port per port
    definition and protocol with the instance's host port, name and labels."""
    from butte.frameworks.marathon.launch import task_info
    from butte.frameworks.marathon.model import Instance

    spec = normalize_app(
        {
            "id": "/shop/web",
            "cmd": "c",
            "portDefinitions": [
                {"port": 0, "name": "http", "labels": {"VIP_0": "/web:80"}},
                {"port": 0, "protocol": "udp,tcp", "name": "dns"},
                {"port": 0},
            ],
        }
    )
    inst = Instance("shop_web.1", "/shop/web", "v", "v", "a1", "h", "10.0.0.1", {}, [], 0.0)
    inst.ports = [31001, 31002, 31003]
    assert task_info(spec, inst, [])["discovery"] == {
        "visibility": "FRAMEWORK",
        "name": "web.shop",
        "ports": {
            "ports": [
                {
                    "number": 31001,
                    "protocol": "tcp",
                    "name": "http",
                    "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]},
                },
                {"number": 31002, "protocol": "udp", "name": "dns"},
                {"number": 31002, "protocol": "tcp", "name": "dns"},
                {"number": 31003, "protocol": "tcp"},
            ]
        },
    }
    # no ports: an empty Ports message
    bare = normalize_app({"id": "/bare", "cmd": "c", "portDefinitions": []})
    inst = Instance("bare.1", "/bare", "v", "v", "a1", "h", "10.0.0.1", {}, [], 0.0)
    assert task_info(bare, inst, [])["discovery"] == {
        "visibility": "FRAMEWORK",
        "name": "bare",
        "ports": {},
    }
    # a bridged Docker app's ports are port mappings with a host port to Marathon
    bridged = normalize_app(
        {
            "id": "/b",
            "container": {
                "type": "DOCKER",
                "docker": {
                    "image": "nginx",
                    "network": "BRIDGE",
                    "portMappings": [{"containerPort": 80, "name": "http"}],
                },
            },
        }
    )
    inst = Instance("b.1", "/b", "v", "v", "a1", "h", "10.0.0.1", {}, [31005], 0.0)
    assert task_info(bridged, inst, [])["discovery"]["ports"]["ports"] == [
        {
            "number": 31005,
            "protocol": "tcp",
            "name": "http",
            "labels": {"labels": [{"key": "network-scope", "value": "host"}]},
        }
    ]


def test_health_check_timeouts_and_port_uniqueness_as_marathon_validates_them():
    # Marathon has no timeout < interval rule for an app's health checks: an app with a 1 s
    # interval (and the default 20 s timeout) must stay updatable.
    check = {"protocol": "COMMAND", "command": {"value": "true"}, "intervalSeconds": 1}
    current = normalize_app({"id": "/hc", "cmd": "c", "healthChecks": [check]})
    assert normalize_app(merge_update(current, {"instances": 2}))["instances"] == 2
    for ports, message in (
        ([{"port": 10005}, {"port": 10005}], "Ports must be unique."),
        ([{"port": 0, "name": "http"}, {"port": 0, "name": "http"}], "Port names must be unique."),
    ):
        with pytest.raises(Invalid) as e:
            normalize_app({"id": "/p", "cmd": "c", "portDefinitions": ports})
        assert e.value.details == [{"path": "/portDefinitions", "errors": [message]}]
    # Several ports left to Marathon (0) are fine.
    normalize_app({"id": "/p", "cmd": "c", "portDefinitions": [{"port": 0}, {"port": 0}]})


def test_service_ports_given_as_zero_are_assigned_as_marathon_does():
    w = World()
    w.p.deploy({"/a": app("/a", portDefinitions=[{"port": 0}, {"port": 0}])}, w.now)
    w.p.deploy({"/b": app("/b", portDefinitions=[{"port": 0}, {"port": 10005}])}, w.now)
    ports = {a: [p["port"] for p in w.p.apps[a]["portDefinitions"]] for a in ("/a", "/b")}
    assert ports == {"/a": [10000, 10001], "/b": [10002, 10005]}
    # An update that asks for 0 again keeps what the app has; a scale changes nothing.
    again = app("/a", portDefinitions=[{"port": 0}, {"port": 0}], instances=2)
    w.p.deploy({"/a": again}, w.now, force=True)
    assert [p["port"] for p in w.p.apps["/a"]["portDefinitions"]] == [10000, 10001]


def test_deployment_events_carry_the_current_step():
    w = World()
    w.p.deploy({"/web": app(instances=1)}, w.now)
    events = [getattr(e, "event", {}) for e in w.p.take_effects()]
    [info] = [e for e in events if e.get("eventType") == "deployment_info"]
    assert info["currentStep"] == {"actions": [{"action": "StartApplication", "app": "/web"}]}
    w.run_all(w.offer(offer()))
    events = [getattr(e, "event", {}) for e in w.step()]
    steps = [
        (e["eventType"], e["currentStep"]["actions"][0]["action"])
        for e in events
        if e.get("eventType") in ("deployment_step_success", "deployment_info")
    ]
    assert steps == [("deployment_step_success", "ScaleApplication")]  # the last step
