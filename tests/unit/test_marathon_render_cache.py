"""The planner's cache of encoded app listings (`Planner.app_bytes`): after every kind of
change, what the cache serves equals a fresh rendering, and a change shows at once."""

from __future__ import annotations

import json

import msgspec

from butte.frameworks.marathon.model import Kill
from tests.unit.test_marathon_planner import World, app, offer

EMBEDS = [set(), {"tasks"}, {"tasks", "lastTaskFailure", "taskStats", "readiness"}, {"counts"}]


def warm(w: World) -> None:
    """Renders every app through the cache, so that a missed invalidation would show."""
    for app_id in w.p.apps:
        for embed in EMBEDS:
            w.p.app_bytes(app_id, embed)


def check(w: World) -> None:
    for app_id in w.p.apps:
        for embed in EMBEDS:
            fresh = msgspec.json.encode(w.p.app_json(app_id, embed))
            assert w.p.app_bytes(app_id, embed) == fresh, (app_id, embed)


def step(w: World, action) -> object:
    warm(w)
    out = action()
    check(w)
    return out


def test_cached_listing_follows_every_change():
    w = World()
    hc = [{"protocol": "COMMAND", "command": {"value": "true"}}]
    step(w, lambda: w.p.deploy({"/a": app("/a", instances=2, healthChecks=hc)}, w.now))
    step(w, lambda: w.p.deploy({"/b": app("/b", instances=1)}, w.now))
    launches = step(w, lambda: w.offer(offer()))
    tasks = [t["task_id"]["value"] for launch in launches for t in launch.tasks]
    assert len(tasks) == 3
    for task_id in tasks:
        step(w, lambda t=task_id: w.update(t, "TASK_STARTING"))
        step(w, lambda t=task_id: w.update(t, "TASK_RUNNING", healthy=True))
    step(w, w.step)  # deployments finish: the apps lose their deployment ids
    assert not w.p.deployments
    # health flips, a failure (lastTaskFailure), a scale, a restart, kills, a delete
    a_task = next(i.task_id for i in w.p.app_instances("/a"))
    step(w, lambda: w.update(a_task, "TASK_RUNNING", healthy=False, message="bad"))
    b_task = next(i.task_id for i in w.p.app_instances("/b"))
    step(w, lambda: w.update(b_task, "TASK_FAILED", message="boom"))
    assert json.loads(w.p.app_bytes("/b", {"lastTaskFailure"}))["lastTaskFailure"]["message"] == (
        "boom"
    )
    step(w, lambda: w.p.deploy({"/b": {**w.p.apps["/b"], "instances": 3}}, w.now))
    step(w, lambda: w.p.deploy({"/a": w.p.apps["/a"]}, w.now, restart=["/a"], force=True))
    for _ in range(3):
        effects = step(w, w.step)
        for kill in (e for e in effects if isinstance(e, Kill)):
            step(w, lambda k=kill: w.update(k.task_id, "TASK_KILLED"))
        step(w, lambda: w.offer(offer()))
    step(w, lambda: w.p.kill_tasks([i.task_id for i in w.p.app_instances("/b")][:1], w.now))
    step(w, lambda: w.p.deploy({"/b": None}, w.now, force=True))
    check(w)


def test_a_changed_app_shows_in_the_next_listing():
    w = World()
    w.p.deploy({"/web": app(instances=1, labels={"v": "1"})}, w.now)
    launch = w.offer(offer())[0]
    task_id = launch.tasks[0]["task_id"]["value"]
    w.update(task_id, "TASK_RUNNING")
    first = json.loads(w.p.app_bytes("/web", {"tasks"}))
    assert first["tasks"][0]["state"] == "TASK_RUNNING" and first["labels"] == {"v": "1"}
    w.p.deploy({"/web": {**w.p.apps["/web"], "labels": {"v": "2"}}}, w.now, force=True)
    second = json.loads(w.p.app_bytes("/web", {"tasks"}))
    assert second["labels"] == {"v": "2"} and second["deployments"]
    w.update(task_id, "TASK_KILLED")
    third = json.loads(w.p.app_bytes("/web", {"tasks"}))
    assert third["tasks"] == [] and third["tasksRunning"] == 0
