"""Resident Marathon apps (local persistent volumes), pure: the planner's reservations and
launches against agents whose resources change by the master's own operation rules
(`butte.core.resource_ops`), so every RESERVE, CREATE, DESTROY and UNRESERVE it sends is
one the master would carry out."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from butte.core import resource_ops
from butte.core.resources import Resources
from butte.frameworks.marathon.appdef import (
    Invalid,
    container_info,
    merge_update,
    normalize_app,
)
from butte.frameworks.marathon.model import TERMINAL_STATES, Launch, LaunchGroup
from butte.frameworks.marathon.planner import Planner, PlannerConfig
from butte.frameworks.marathon.pods import PodManager
from butte.frameworks.marathon.pods_def import normalize_pod

ROLE = "db"
_ids = itertools.count()


def source_disk(kind: str, root: str, size: float) -> dict[str, Any]:
    """An unreserved PATH or MOUNT disk as an agent's ``--resources`` gives it."""
    source = {"type": kind, kind.lower(): {"root": root}}
    return {"name": "disk", "type": "SCALAR", "scalar": {"value": size}, "disk": {"source": source}}


class Agent:
    """An agent's resources as the master keeps them: what is free (offered) and what its
    tasks hold."""

    def __init__(self, agent_id: str, host: str, disks: Iterable[dict[str, Any]] = ()) -> None:
        self.id, self.host = agent_id, host
        self.free = Resources.from_json(
            [
                *disks,
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 10000}},
                {
                    "name": "ports",
                    "type": "RANGES",
                    "ranges": {"range": [{"begin": 31000, "end": 31099}]},
                },
            ]
        )
        self.total = self.free
        self.tasks: dict[str, Resources] = {}

    def offer(self) -> dict[str, Any]:
        return {
            "id": {"value": f"o{next(_ids)}"},
            "agent_id": {"value": self.id},
            "hostname": self.host,
            "resources": self.free.to_json("pre", allocation_role=ROLE),
            "attributes": [],
        }

    def accept(self, launch: Launch | LaunchGroup) -> None:
        """The ACCEPT carried out: its operations by the master's rules, then what its
        tasks (a task group's executor and members, held under the executor's id) take."""
        for op in launch.operations:
            kind = op["type"]
            conversion = resource_ops.parse_operation(kind, op[kind.lower()], None)
            self.free = resource_ops.apply(self.free, conversion)
        held: dict[str, list[dict[str, Any]]] = {}
        if isinstance(launch, Launch):
            held = {t["task_id"]["value"]: t["resources"] for t in launch.tasks}
        for executor, tasks in getattr(launch, "groups", ()):
            resources = [*executor["resources"], *(r for t in tasks for r in t["resources"])]
            held[executor["executor_id"]["value"]] = resources
        for key, resources in held.items():
            used = Resources.from_json(resources)
            assert self.free.contains(used), "a task takes what was not offered"
            self.free = self.free - used
            self.tasks[key] = used

    def ended(self, task_id: str) -> None:
        self.free = self.free + self.tasks.pop(task_id)


class World:
    """A planner subscribed as ``fw-1`` with a clock, and agents playing the master's part."""

    def __init__(self, timeout: float = 20.0) -> None:
        self.p = Planner(PlannerConfig(role=ROLE, reservation_timeout=timeout), seed=3)
        self.now = 1000.0
        self.p.subscribed("fw-1", self.now)
        self.p.take_effects()
        self.agents = {a.id: a for a in (Agent("a1", "h1"), Agent("a2", "h2"))}

    def offer(self, agent_id: str) -> Launch | None:
        """The agent's offer to the planner; its answer carried out on the agent."""
        self.now += 0.1
        self.p.tick(self.now)
        agent = self.agents[agent_id]
        self.p.offers([agent.offer()], self.now)
        launches = [e for e in self.p.take_effects() if isinstance(e, Launch)]
        assert len(launches) <= 1
        for launch in launches:
            agent.accept(launch)
        return launches[0] if launches else None

    def status(self, task_id: str, state: str) -> None:
        self.p.status({"task_id": {"value": task_id}, "state": state}, self.now)
        if state in TERMINAL_STATES:
            for agent in self.agents.values():
                if task_id in agent.tasks:
                    agent.ended(task_id)

    def run_one(self) -> str:
        """A resident app ``/db`` of one instance, reserved and running on a1: its task id."""
        self.p.deploy({"/db": resident_app()}, self.now)
        self.offer("a1")  # reserve and create
        launch = self.offer("a1")
        assert launch is not None
        task_id = launch.tasks[0]["task_id"]["value"]
        self.status(task_id, "TASK_RUNNING")
        return task_id

    def tick(self, seconds: float = 0.1) -> list[Any]:
        self.now += seconds
        self.p.tick(self.now, full=True)
        return self.p.take_effects()


def resident_app(app_id: str = "/db", **fields: Any) -> dict[str, Any]:
    raw = {
        "id": app_id,
        "cmd": "sleep 100",
        "cpus": 0.5,
        "mem": 64,
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 100}}],
        },
        **fields,
    }
    return normalize_app(raw, role=ROLE)


def _kinds(launch: Launch | LaunchGroup | None) -> list[str]:
    return [op["type"] for op in launch.operations] if launch else []


def _reserved(agent: Agent) -> Resources:
    return Resources.from_json(
        [r for r in agent.free.to_json("pre") if r.get("role") == ROLE]
        + [r for held in agent.tasks.values() for r in held.to_json("pre") if r.get("role") == ROLE]
    )


def test_an_instance_reserves_creates_its_volume_then_launches_on_exactly_that():
    w = World()
    w.p.deploy({"/db": resident_app()}, w.now)
    first = w.offer("a1")
    assert first is not None and not first.tasks
    assert _kinds(first) == ["RESERVE", "CREATE"]
    (res,) = w.p.reservations.of("/db")
    labels = {
        lb["key"]: lb["value"]
        for lb in first.operations[0]["reserve"]["resources"][0]["reservation"]["labels"]["labels"]
    }
    assert labels == {"marathon_framework_id": "fw-1", "marathon_task_id": res.id}
    assert res.id.startswith("db.instance-") and res.agent_id == "a1"
    assert res.volumes[0]["containerPath"] == "data"
    assert res.volumes[0]["persistenceId"].startswith("db#data#")
    # A second app's offer from elsewhere is not used for it: it waits for its agent.
    assert w.offer("a2") is None
    second = w.offer("a1")
    assert second is not None and _kinds(second) == [] and len(second.tasks) == 1
    task = second.tasks[0]
    assert task["task_id"]["value"] == f"{res.id}._app.1"
    volumes = [r for r in task["resources"] if (r.get("disk") or {}).get("persistence")]
    assert volumes[0]["disk"]["volume"] == {"container_path": "data", "mode": "RW"}
    assert volumes[0]["scalar"]["value"] == 100
    assert all(r.get("role") == ROLE for r in task["resources"])  # only the reservation's
    w.status(task["task_id"]["value"], "TASK_RUNNING")
    (inst,) = w.p.app_instances("/db")
    rendered = w.p.task_json(inst)
    assert rendered["localVolumes"] == res.local_volumes()
    assert rendered["ports"] == res.ports and len(res.ports) == 1
    stored = {(k, key): v for k, key, v in w.p.take_dirty()}
    assert stored[("reservation", res.id)]["task_id"] == task["task_id"]["value"]


def test_a_failed_task_is_relaunched_on_its_reservation_and_nowhere_else():
    w = World()
    task_id = w.run_one()
    w.status(task_id, "TASK_FAILED")
    w.tick(5)  # past the backoff
    assert w.offer("a2") is None  # not elsewhere
    queued = w.p.queue(w.now)[0]
    assert queued["processedOffersSummary"]["rejectSummaryLastOffers"][2] == {
        "reason": "NoCorrespondingReservationFound",
        "declined": 1,
        "processed": 1,
    }
    again = w.offer("a1")
    assert again is not None and _kinds(again) == []
    assert again.tasks[0]["task_id"]["value"] == task_id.removesuffix("1") + "2"
    assert len(w.p.reservations.of("/db")) == 1


def test_scaling_down_keeps_the_reservation_and_scaling_up_reuses_it():
    w = World()
    task_id = w.run_one()
    w.tick()
    w.p.deploy({"/db": merge_update(w.p.apps["/db"], {"instances": 0})}, w.now, force=True)
    kills = [e for e in w.tick() if type(e).__name__ == "Kill"]
    assert [k.task_id for k in kills] == [task_id]
    w.status(task_id, "TASK_KILLED")
    w.tick()
    assert w.offer("a1") is None  # nothing destroyed, nothing launched
    (res,) = w.p.reservations.of("/db")
    assert not res.decommissioned and res.task_id is None
    w.p.deploy({"/db": merge_update(w.p.apps["/db"], {"instances": 1})}, w.now, force=True)
    assert w.offer("a2") is None
    back = w.offer("a1")
    assert back is not None and _kinds(back) == []
    assert back.tasks[0]["task_id"]["value"] == f"{res.id}._app.2"


def test_deleting_the_app_destroys_its_volumes_and_frees_its_reservation():
    w = World()
    w.p.deploy({"/db": resident_app(instances=2, constraints=[["hostname", "UNIQUE"]])}, w.now)
    w.offer("a1")
    assert _kinds(w.offer("a1")) == []  # launched; a1 may not hold the second instance
    assert _kinds(w.offer("a2")) == ["RESERVE", "CREATE"]
    tasks = [t for a in w.agents.values() for t in a.tasks]
    second = w.offer("a2")
    assert second is not None and len(second.tasks) == 1
    tasks = [t for a in w.agents.values() for t in a.tasks]
    assert len(tasks) == 2
    for t in tasks:
        w.status(t, "TASK_RUNNING")
    w.p.deploy({"/db": None}, w.now, force=True)
    w.tick()
    # While its task is being killed, the reservation stays.
    assert w.offer("a1") is None
    for t in tasks:
        w.status(t, "TASK_KILLED")
    w.tick()
    assert w.p.suppressed is False  # offers are still wanted, to free the reservations
    for agent_id in ("a1", "a2"):
        freed = w.offer(agent_id)
        assert _kinds(freed) == ["DESTROY", "UNRESERVE"]
        agent = w.agents[agent_id]
        assert agent.free == agent.total and not _reserved(agent)
    assert not w.p.reservations.by_id
    dirty = {(k, key): v for k, key, v in w.p.take_dirty()}
    assert all(v is None for (k, _), v in dirty.items() if k == "reservation")
    w.tick()
    assert w.p.suppressed


def test_wipe_gives_the_instance_a_new_reservation():
    w = World()
    task_id = w.run_one()
    (old,) = w.p.reservations.of("/db")
    w.p.kill_tasks([task_id], w.now, wipe=True)
    w.status(task_id, "TASK_KILLED")
    w.tick()
    launch = w.offer("a1")
    # the old one freed and a new one made, in one ACCEPT
    assert _kinds(launch) == ["DESTROY", "UNRESERVE", "RESERVE", "CREATE"]
    (new,) = w.p.reservations.of("/db")
    assert new.id != old.id and new.volumes != old.volumes


def test_a_reservation_never_offered_back_times_out_and_is_freed_when_seen():
    w = World(timeout=20.0)
    w.p.deploy({"/db": resident_app()}, w.now)
    w.offer("a1")
    (old,) = w.p.reservations.of("/db")
    w.tick(25)
    assert not w.p.reservations.of("/db")  # given up
    launch = w.offer("a1")
    assert _kinds(launch) == ["DESTROY", "UNRESERVE", "RESERVE", "CREATE"]
    (new,) = w.p.reservations.of("/db")
    assert new.id != old.id


def test_other_apps_never_take_a_reservation_or_a_volume():
    w = World()
    w.p.deploy({"/db": resident_app()}, w.now)
    w.offer("a1")
    (res,) = w.p.reservations.of("/db")
    w.p.deploy({"/db": merge_update(w.p.apps["/db"], {"instances": 0})}, w.now, force=True)
    w.tick()
    hungry = normalize_app(
        {
            "id": "/hungry",
            "cmd": "sleep 1",
            "cpus": 0.1,
            "mem": 16,
            "disk": 50,
            "acceptedResourceRoles": [ROLE, "*"],
            "instances": 50,
        },
        role=ROLE,
    )
    w.p.deploy({"/hungry": hungry}, w.now)
    for _ in range(3):
        w.offer("a1")
    for task in w.agents["a1"].tasks.values():
        assert not any(r.get("reservation") for r in task.to_json("pre"))
    assert res.id in w.p.reservations.by_id


def test_resident_definitions_follow_marathons_rules():
    spec = resident_app()
    assert spec["upgradeStrategy"] == {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}
    assert spec["unreachableStrategy"] == "disabled"
    assert spec["residency"] == {
        "relaunchEscalationTimeoutSeconds": 3600,
        "taskLostBehavior": "WAIT_FOREVER",
    }
    assert spec["container"] == {
        "type": "MESOS",
        "volumes": [
            {
                "containerPath": "data",
                "mode": "RW",
                "persistent": {"type": "root", "size": 100, "constraints": []},
            }
        ],
    }
    assert normalize_app(spec, role=ROLE) == spec  # its own rendering is accepted back

    def errors(role: str = ROLE, **fields: Any) -> str:
        with pytest.raises(Invalid) as e:
            resident_app(**fields) if role == ROLE else normalize_app(
                {**resident_app(), **fields}, role=role
            )
        return str(e.value.details)

    assert "--mesos_role" in errors(role="*")
    assert "maximumOverCapacity" in errors(
        upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}
    )
    assert "disabled for resident" in errors(unreachableStrategy={"inactiveAfterSeconds": 5})
    assert "acceptedResourceRoles" in errors(acceptedResourceRoles=[ROLE])
    assert "residency" in errors(residency={"taskLostBehavior": "SOMETIMES"})

    def volume(**v: Any) -> dict[str, Any]:
        return {
            "type": "MESOS",
            "volumes": [{"containerPath": "data", "persistent": {"size": 1}, **v}],
        }

    assert 'must not contain "/"' in errors(container=volume(containerPath="a/b"))
    assert "a persistent volume is RW" in errors(container=volume(mode="RO"))
    assert "must be one of" in errors(container=volume(persistent={"size": 1, "type": "nfs"}))
    assert "Only mount volumes" in errors(container=volume(persistent={"size": 1, "maxSize": 9}))
    mount = {"size": 5, "type": "mount", "maxSize": 5}
    assert "larger than size" in errors(container=volume(persistent=mount))
    on_root = {"size": 1, "constraints": [["path", "LIKE", "/ssd.*"]]}
    assert "Constraints on root" in errors(container=volume(persistent=on_root))
    bad_op = {"size": 1, "type": "path", "constraints": [["path", "CLUSTER", "x"]]}
    assert "LIKE, UNLIKE" in errors(container=volume(persistent=bad_op))
    assert "expected between 1" in errors(container=volume(persistent={"size": 0}))
    assert "MESOS container" in errors(
        container={**volume(), "type": "DOCKER", "docker": {"image": "busybox"}}
    )


def test_a_resident_apps_resources_and_volumes_may_not_change():
    w = World()
    w.p.deploy({"/db": resident_app()}, w.now)
    current = w.p.apps["/db"]
    for change in (
        {"cpus": 1.0},
        {"mem": 128},
        {"container": resident_app()["container"] | {"volumes": []}},
    ):
        with pytest.raises(Invalid) as e:
            w.p.deploy(
                {"/db": normalize_app(merge_update(current, change), role=ROLE)}, w.now, force=True
            )
        assert "create a new service" in str(e.value.details)
    # the command may change: a rolling restart onto the same reservations
    w.p.deploy(
        {"/db": normalize_app(merge_update(current, {"cmd": "sleep 200"}), role=ROLE)},
        w.now,
        force=True,
    )


def test_a_new_version_replaces_each_instance_on_its_own_reservation():
    w = World()
    w.p.deploy({"/db": resident_app(instances=2)}, w.now)
    w.offer("a1")
    w.offer("a1")  # both reserved there (no constraint), then both launched
    tasks = list(w.agents["a1"].tasks)
    assert len(tasks) == 2
    for t in tasks:
        w.status(t, "TASK_RUNNING")
    w.tick()
    assert not w.p.deployments
    changed = normalize_app(merge_update(w.p.apps["/db"], {"cmd": "sleep 200"}), role=ROLE)
    w.p.deploy({"/db": changed}, w.now)
    # (0.5, 0) of 2: one killed at a time, nothing launched beside them
    kills = [e.task_id for e in w.tick() if type(e).__name__ == "Kill"]
    assert len(kills) == 1
    # While it is being killed no new reservation is made for its replacement.
    assert w.offer("a1") is None and w.offer("a2") is None
    w.status(kills[0], "TASK_KILLED")
    w.tick()
    launch = w.offer("a1")
    assert launch is not None and _kinds(launch) == [] and len(launch.tasks) == 1
    assert launch.tasks[0]["task_id"]["value"].endswith("._app.2")
    assert len(w.p.reservations.by_id) == 2


def test_a_restarted_planner_still_frees_what_was_decommissioned():
    w = World()
    task_id = w.run_one()
    w.p.deploy({"/db": None}, w.now, force=True)
    w.tick()
    w.status(task_id, "TASK_KILLED")
    records = {(k, key): v for k, key, v in w.p.take_dirty()}
    reborn = Planner(PlannerConfig(role=ROLE), seed=3)
    reborn.restore([(k, key, v) for (k, key), v in records.items() if v is not None])
    reborn.subscribed("fw-1", w.now)
    reborn.tick(w.now, full=True)
    assert not reborn.suppressed  # it asks for offers to free the reservation
    reborn.take_effects()
    reborn.offers([w.agents["a1"].offer()], w.now)
    [launch] = [e for e in reborn.take_effects() if isinstance(e, Launch)]
    assert _kinds(launch) == ["DESTROY", "UNRESERVE"]


def test_path_and_mount_volumes_are_made_on_disks_of_their_kind_and_freed_with_them():
    w = World()
    w.agents["a3"] = Agent(
        "a3",
        "h3",
        [
            source_disk("PATH", "/hdd", 5000),
            source_disk("PATH", "/ssd", 1000),
            source_disk("MOUNT", "/mnt/small", 300),
            source_disk("MOUNT", "/mnt/big", 2000),
        ],
    )
    volumes = [
        {"containerPath": "logs", "persistent": {"size": 50}},
        {
            "containerPath": "fast",
            "persistent": {"type": "path", "size": 100, "constraints": [["path", "LIKE", "/ssd"]]},
        },
        {"containerPath": "data", "persistent": {"type": "mount", "size": 500, "maxSize": 4000}},
    ]
    spec = resident_app(container={"type": "MESOS", "volumes": volumes})
    assert spec["container"]["volumes"][2]["persistent"]["maxSize"] == 4000
    w.p.deploy({"/db": spec}, w.now)
    assert w.offer("a1") is None  # no MOUNT disk there
    reserved = w.offer("a3")
    assert _kinds(reserved) == ["RESERVE", "CREATE"]
    created = {
        v["disk"]["volume"]["container_path"]: v
        for v in reserved.operations[1]["create"]["volumes"]
    }
    assert "source" not in created["logs"]["disk"] and created["logs"]["scalar"]["value"] == 50
    assert created["fast"]["disk"]["source"]["path"]["root"] == "/ssd"  # the constraint's
    assert created["fast"]["scalar"]["value"] == 100
    # a MOUNT disk is taken whole: the big one (the small one is under the size asked for)
    assert created["data"]["disk"]["source"]["mount"]["root"] == "/mnt/big"
    assert created["data"]["scalar"]["value"] == 2000
    launch = w.offer("a3")
    assert launch is not None and len(launch.tasks) == 1
    held = [r for r in launch.tasks[0]["resources"] if (r.get("disk") or {}).get("persistence")]
    assert len(held) == 3
    task_id = launch.tasks[0]["task_id"]["value"]
    w.status(task_id, "TASK_RUNNING")
    (res,) = w.p.reservations.of("/db")
    assert [v["containerPath"] for v in res.volumes] == ["logs", "fast", "data"]
    w.p.deploy({"/db": None}, w.now, force=True)
    w.tick()
    w.status(task_id, "TASK_KILLED")
    assert _kinds(w.offer("a3")) == ["DESTROY", "UNRESERVE"]
    agent = w.agents["a3"]
    assert agent.free == agent.total  # every disk back with its source


# -- resident pods --------------------------------------------------------------------------

POD = {
    "id": "/pdb",
    "volumes": [{"name": "data", "persistent": {"size": 50}}],
    "containers": [
        {
            "name": "db",
            "exec": {"command": {"shell": "sleep 600"}},
            "resources": {"cpus": 0.5, "mem": 64},
            "endpoints": [{"name": "sql", "hostPort": 0}],
            "volumeMounts": [{"name": "data", "mountPath": "data"}],
        },
        {
            "name": "backup",
            "exec": {"command": {"shell": "sleep 600"}},
            "resources": {"cpus": 0.1, "mem": 16},
            "volumeMounts": [{"name": "data", "mountPath": "snap", "readOnly": True}],
        },
    ],
}


class PodWorld(World):
    """The app world with a pod manager beside the planner, sharing its reservations, fed
    offers as the shell feeds them (pods first, the planner the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.m = PodManager(ROLE, reservations=self.p.reservations)
        self.m.subscribed("fw-1")

    def offer(self, agent_id: str) -> LaunchGroup | Launch | None:  # type: ignore[override]
        self.now += 0.1
        self.m.tick(self.now)
        self.p.tick(self.now)
        agent = self.agents[agent_id]
        self.p.offers(self.m.offers([agent.offer()], self.now), self.now)
        effects = self.m.take_effects() + self.p.take_effects()
        used = [e for e in effects if isinstance(e, LaunchGroup | Launch)]
        assert len(used) <= 1
        for e in used:
            agent.accept(e)
        return used[0] if used else None

    def pod_status(self, task_id: str, state: str) -> None:
        self.m.status({"task_id": {"value": task_id}, "state": state}, self.now)

    def executor_ended(self, executor_id: str) -> None:
        self.agents["a1"].ended(executor_id)


def test_a_resident_pods_instance_lives_on_its_reservation_and_its_executor_holds_the_volume():
    w = PodWorld()
    pod = normalize_pod(POD, role=ROLE)
    assert pod["scheduling"]["upgrade"] == {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}
    assert pod["scheduling"]["unreachableStrategy"] == "disabled"
    w.m.create(pod, w.now, w.m.new_version(w.now))
    first = w.offer("a1")
    assert isinstance(first, LaunchGroup) and not first.groups
    assert _kinds(first) == ["RESERVE", "CREATE"]
    (res,) = w.p.reservations.of("/pdb")
    assert res.id.startswith("pdb.instance-") and len(res.ports) == 1
    launch = w.offer("a1")
    assert isinstance(launch, LaunchGroup) and _kinds(launch) == []
    [(executor, tasks)] = launch.groups
    volume = [r for r in executor["resources"] if (r.get("disk") or {}).get("persistence")]
    assert volume[0]["disk"]["volume"]["container_path"] == "data"
    mounts = {t["name"]: t["container"]["volumes"][0] for t in tasks}
    assert mounts["db"]["source"]["sandbox_path"] == {"type": "PARENT", "path": "data"}
    assert mounts["backup"]["container_path"] == "snap" and mounts["backup"]["mode"] == "RO"
    every = executor["resources"] + [r for t in tasks for r in t["resources"]]
    assert all(r.get("role") == ROLE for r in every)
    ports = [r for r in every if r["name"] == "ports"]
    assert ports[0]["ranges"]["range"] == [{"begin": res.ports[0], "end": res.ports[0]}]
    ids = [t["task_id"]["value"] for t in tasks]
    for t in ids:
        w.pod_status(t, "TASK_RUNNING")
    # The pod's reservation, in an offer the pods do not use, is left alone by the planner.
    assert w.offer("a1") is None
    # A member fails: the instance goes and comes back on its reservation, a new executor.
    w.pod_status(ids[0], "TASK_FAILED")
    w.pod_status(ids[1], "TASK_KILLED")
    w.executor_ended(executor["executor_id"]["value"])
    w.now += 5  # past the backoff
    again = w.offer("a1")
    assert isinstance(again, LaunchGroup) and _kinds(again) == [] and len(again.groups) == 1
    [(executor2, tasks2)] = again.groups
    assert executor2["executor_id"]["value"] == executor["executor_id"]["value"] + ".2"
    assert [t["task_id"]["value"] for t in tasks2] == [f"{t}.2" for t in ids]
    assert len(w.p.reservations.of("/pdb")) == 1
    # Deleted: once its tasks end, the next offer frees it all.
    w.m.delete("/pdb", w.now, w.m.new_version(w.now), force=True)
    w.m.tick(w.now)
    for t in tasks2:
        w.pod_status(t["task_id"]["value"], "TASK_KILLED")
    w.executor_ended(executor2["executor_id"]["value"])
    w.p.tick(w.now, full=True)
    assert not w.p.suppressed
    freed = w.offer("a1")
    assert _kinds(freed) == ["DESTROY", "UNRESERVE"]
    assert w.agents["a1"].free == w.agents["a1"].total
    assert not w.p.reservations.of("/pdb")


def test_resident_pods_follow_marathons_rules():
    def errors(role: str = ROLE, **fields: Any) -> str:
        with pytest.raises(Invalid) as e:
            normalize_pod({**POD, **fields}, role=role)
        return str(e.value.details)

    assert "--mesos_role" in errors(role="*")
    upgrade = {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}
    assert "maximumOverCapacity" in errors(scheduling={"upgrade": upgrade})
    assert "disabled for pods" in errors(scheduling={"unreachableStrategy": {}})
    placement = {"acceptedResourceRoles": ["*", ROLE]}
    assert "acceptedResourceRoles" in errors(scheduling={"placement": placement})
    both = [{"name": "data", "host": "/tmp", "persistent": {"size": 1}}]
    assert "either host or persistent" in errors(volumes=both)
    m = PodManager(ROLE)
    m.create(normalize_pod(POD, role=ROLE), 0.0, m.new_version(0.0))
    bigger = {**POD, "containers": [{**POD["containers"][0], "resources": {"cpus": 1}}]}
    with pytest.raises(Invalid) as e:
        m.update(normalize_pod(bigger, role=ROLE), 1.0, m.new_version(1.0), force=True)
    assert "create a new pod" in str(e.value.details)


def test_a_mesos_container_without_an_image_carries_only_volumes():
    host = {"containerPath": "logs", "hostPath": "/var/log/app", "mode": "RO"}
    spec = normalize_app(
        {"id": "/v", "cmd": "ls logs", "container": {"type": "MESOS", "volumes": [host]}}
    )
    assert spec["container"] == {"type": "MESOS", "volumes": [host]}
    assert container_info(spec["container"]) == {
        "type": "MESOS",
        "volumes": [{"container_path": "logs", "host_path": "/var/log/app", "mode": "RO"}],
    }
    # no root filesystem of its own to mount into: a path in the sandbox only
    with pytest.raises(Invalid) as e:
        normalize_app(
            {
                "id": "/v",
                "cmd": "true",
                "container": {"type": "MESOS", "volumes": [{**host, "containerPath": "/logs"}]},
            }
        )
    assert "relative path in the sandbox" in str(e.value.details)
    # a persistent volume's container carries no volume of its own: the disk resource does
    assert container_info(resident_app()["container"]) == {"type": "MESOS"}


def test_a_resident_pods_mount_volume_takes_a_whole_mount_disk():
    w = PodWorld()
    w.agents["a3"] = Agent("a3", "h3", [source_disk("MOUNT", "/mnt/m1", 700)])
    raw = {**POD, "volumes": [{"name": "data", "persistent": {"type": "mount", "size": 500}}]}
    w.m.create(normalize_pod(raw, role=ROLE), w.now, w.m.new_version(w.now))
    assert w.offer("a1") is None  # no MOUNT disk there
    reserved = w.offer("a3")
    [created] = reserved.operations[1]["create"]["volumes"]
    assert created["disk"]["source"]["mount"]["root"] == "/mnt/m1"
    assert created["scalar"]["value"] == 700
    launch = w.offer("a3")
    [(executor, _)] = launch.groups
    [volume] = [r for r in executor["resources"] if (r.get("disk") or {}).get("persistence")]
    assert volume["disk"]["source"]["type"] == "MOUNT"


def test_an_instance_whose_agent_was_marked_gone_reserves_anew_elsewhere():
    w = World()
    task_id = w.run_one()
    (old,) = w.p.reservations.of("/db")
    # An agent that only rebooted keeps its volumes: TASK_GONE leaves the reservation.
    w.status(task_id, "TASK_GONE")
    w.tick(5)
    assert w.p.reservations.of("/db") == [old]
    relaunched = w.offer("a1")
    again = relaunched.tasks[0]["task_id"]["value"]  # type: ignore[union-attr]
    w.status(again, "TASK_RUNNING")
    # Marked gone by the operator: its reservation went with it.
    w.status(again, "TASK_GONE_BY_OPERATOR")
    w.tick(5)
    assert not w.p.reservations.of("/db") and old.id not in w.p.reservations.to_free
    assert _kinds(w.offer("a2")) == ["RESERVE", "CREATE"]


def test_a_resident_pod_instance_whose_agent_was_marked_gone_reserves_anew():
    w = PodWorld()
    w.m.create(normalize_pod(POD, role=ROLE), w.now, w.m.new_version(w.now))
    w.offer("a1")
    [(_, tasks)] = w.offer("a1").groups  # type: ignore[union-attr]
    for t in tasks:
        w.pod_status(t["task_id"]["value"], "TASK_GONE_BY_OPERATOR")
    w.now += 5
    assert not w.p.reservations.of("/pdb")
    assert _kinds(w.offer("a2")) == ["RESERVE", "CREATE"]


def test_an_unreachable_instance_waits_for_its_agent_and_relaunches_on_its_reservation():
    w = World()
    task_id = w.run_one()
    w.status(task_id, "TASK_UNREACHABLE")
    w.tick(600)
    # unreachableStrategy disabled: the task is given up at once, the reservation kept
    assert not w.p.app_instances("/db")
    (res,) = w.p.reservations.of("/db")
    assert w.offer("a2") is None  # it waits for its agent (Marathon's WAIT_FOREVER)
    # The agent is back with the old task: unknown now, so killed; then relaunched there.
    w.p.status({"task_id": {"value": task_id}, "state": "TASK_RUNNING"}, w.now)
    assert [e.task_id for e in w.p.take_effects() if type(e).__name__ == "Kill"] == [task_id]
    w.status(task_id, "TASK_KILLED")
    launch = w.offer("a1")
    assert launch is not None and _kinds(launch) == []
    assert launch.tasks[0]["task_id"]["value"] == f"{res.id}._app.2"
