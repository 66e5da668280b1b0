"""Marathon 1.10's ``resourceLimits`` in ``butte marathon``, in-process over a planner:
validated as Marathon's ``AppValidation.validResourceLimits`` (422 with its paths and
messages), rendered back by GET as Marathon renders it, kept across partial updates, and put
in each launched TaskInfo as ``limits`` (``"unlimited"`` as ``"Infinity"``) in the form the
master takes (docs/marathon.md "App definitions"; the real cgroups are in
tests/integration/test_marathon_limits_cgroups.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp.test_utils import TestClient

from butte.core import task_limits
from butte.core.messages import TaskInfo
from butte.frameworks.marathon.appdef import Invalid, normalize_app
from butte.frameworks.marathon.model import Launch
from tests.unit.test_marathon_api import Shell, call, run
from tests.unit.test_marathon_planner import World, offer

BASE = {"id": "/burst", "cmd": "sleep 100", "cpus": 0.5, "mem": 64}


def details(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Marathon's ``details`` of a definition refused by `normalize_app`."""
    try:
        normalize_app(raw)
    except Invalid as e:
        return e.details
    raise AssertionError(f"taken: {raw}")


def test_limits_at_or_above_the_request_and_unlimited_are_taken_as_given():
    spec = normalize_app({**BASE, "resourceLimits": {"mem": 64, "cpus": "unlimited"}})
    # cpus before mem, numbers as doubles (as Marathon's ResourceLimits renders them)
    assert list(spec["resourceLimits"].items()) == [("cpus", "unlimited"), ("mem", 64.0)]
    spec = normalize_app({**BASE, "resourceLimits": {"cpus": 2}})
    assert spec["resourceLimits"] == {"cpus": 2.0}
    # None given, null or {}: no limits at all (the tasks get none either)
    for absent in ({}, {"resourceLimits": None}, {"resourceLimits": {}}):
        assert "resourceLimits" not in normalize_app({**BASE, **absent})
    assert normalize_app({**BASE, "resourceLimits": {"mem": None}}).get("resourceLimits") is None


def test_limits_below_the_request_unknown_words_and_keys_are_refused_with_marathons_paths():
    below = {**BASE, "cpus": 2, "mem": 256, "resourceLimits": {"cpus": 1, "mem": 200}}
    assert details(below) == [
        {
            "path": "/resourceLimits/cpus",
            "errors": ["resource limit must be greater than or equal to requested resource (2.0)"],
        },
        {
            "path": "/resourceLimits/mem",
            "errors": [
                "resource limit must be greater than or equal to requested resource (256.0)"
            ],
        },
    ]
    word = {**BASE, "resourceLimits": {"mem": "Infinity"}}
    assert details(word) == [
        {
            "path": "/resourceLimits/mem",
            "errors": [
                "'Infinity' is an invalid resource limit. It must be 'unlimited' or a number"
            ],
        }
    ]
    assert [d["path"] for d in details({**BASE, "resourceLimits": {"disk": 10}})] == [
        "/resourceLimits/disk"
    ]
    assert [d["path"] for d in details({**BASE, "resourceLimits": [1]})] == ["/resourceLimits"]
    for bad in (True, {"value": 2}, [2], float("inf"), float("nan"), 1e12):
        (d,) = details({**BASE, "resourceLimits": {"cpus": bad}})
        assert d["path"] == "/resourceLimits/cpus", bad


async def app_of(client: TestClient, app_id: str = "/burst") -> dict[str, Any]:
    status, body = await call(client, "GET", f"/v2/apps{app_id}")
    assert status == 200, body
    return body["app"]


def test_get_renders_limits_and_partial_updates_keep_them():
    async def test(client: TestClient, shell: Shell) -> None:
        limits = {"cpus": "unlimited", "mem": 8192}
        status, body = await call(client, "POST", "/v2/apps", {**BASE, "resourceLimits": limits})
        assert status == 201 and body["resourceLimits"] == {"cpus": "unlimited", "mem": 8192.0}
        shell.launch("/burst")
        app = await app_of(client)
        assert app["resourceLimits"] == {"cpus": "unlimited", "mem": 8192.0}
        status, body = await call(client, "GET", "/v2/apps")
        assert body["apps"][0]["resourceLimits"] == app["resourceLimits"]
        # What GET shows goes back unchanged.
        status, body = await call(client, "PUT", "/v2/apps/burst?force=true", app)
        assert status == 200 and (await app_of(client))["resourceLimits"] == app["resourceLimits"]
        # A partial update that does not name them keeps them: a scale stays a scale.
        status, body = await call(client, "PUT", "/v2/apps/burst?force=true", {"instances": 2})
        assert status == 200
        steps = shell.planner.deployments[body["deploymentId"]].steps
        assert [a["action"] for s in steps for a in s] == ["ScaleApplication"]
        assert (await app_of(client))["resourceLimits"] == app["resourceLimits"]
        status, _ = await call(client, "PATCH", "/v2/apps/burst?force=true", {"cmd": "sleep 200"})
        assert status == 200
        assert (await app_of(client))["resourceLimits"] == app["resourceLimits"]
        # Given, they replace the whole object (a change of the config: a restart).
        status, body = await call(
            client, "PUT", "/v2/apps/burst?force=true", {"resourceLimits": {"mem": 64}}
        )
        assert status == 200
        steps = shell.planner.deployments[body["deploymentId"]].steps
        assert [a["action"] for s in steps for a in s] == ["RestartApplication"]
        assert (await app_of(client))["resourceLimits"] == {"mem": 64.0}
        # A request raised above the kept limit is refused, naming the limit.
        status, body = await call(client, "PUT", "/v2/apps/burst?force=true", {"mem": 128})
        assert status == 422
        assert [d["path"] for d in body["details"]] == ["/resourceLimits/mem"]
        # Every version keeps its own limits.
        status, body = await call(client, "GET", "/v2/apps/burst/versions")
        shown = []
        for version in body["versions"]:
            status, old = await call(client, "GET", f"/v2/apps/burst/versions/{version}")
            assert status == 200
            shown.append(old.get("resourceLimits"))
        assert {"cpus": "unlimited", "mem": 8192.0} in shown and {"mem": 64.0} in shown
        # null removes them, and so does a full replacement without them.
        status, _ = await call(client, "PUT", "/v2/apps/burst?force=true", {"resourceLimits": None})
        assert status == 200 and "resourceLimits" not in await app_of(client)
        await call(client, "PUT", "/v2/apps/burst?force=true", {"resourceLimits": {"cpus": 1}})
        assert (await app_of(client))["resourceLimits"] == {"cpus": 1.0}
        status, _ = await call(client, "PUT", "/v2/apps/burst?partialUpdate=false&force=true", BASE)
        assert status == 200 and "resourceLimits" not in await app_of(client)

    run(test)


def test_bad_limits_in_a_request_are_a_422_with_marathons_shape():
    async def test(client: TestClient, shell: Shell) -> None:
        body = {**BASE, "resourceLimits": {"mem": 10}}
        status, answer = await call(client, "POST", "/v2/apps", body)
        assert status == 422 and answer["message"] == "Object is not valid"
        assert answer["details"] == [
            {
                "path": "/resourceLimits/mem",
                "errors": [
                    "resource limit must be greater than or equal to requested resource (64.0)"
                ],
            }
        ]
        assert shell.planner.apps == {}
        status, _ = await call(client, "POST", "/v2/apps", {**BASE, "resourceLimits": "lots"})
        assert status == 422 and shell.planner.apps == {}
        # A JSON integer of 400 digits is no float: a 422 naming it, not a crash.
        for huge in ({"resourceLimits": {"mem": 10**400}}, {"mem": 10**400}, {"cpus": -(10**400)}):
            status, answer = await call(client, "POST", "/v2/apps", {**BASE, **huge})
            assert status == 422, (huge, answer)
            (path,) = {d["path"] for d in answer["details"]}
            assert path in ("/resourceLimits/mem", "/mem", "/cpus"), answer
        assert shell.planner.apps == {}

    run(test)


def test_each_task_of_an_app_with_limits_carries_them_as_the_master_takes_them():
    w = World()
    limited = normalize_app(
        {**BASE, "instances": 2, "resourceLimits": {"cpus": "unlimited", "mem": 512}}
    )
    plain = normalize_app({**BASE, "id": "/plain"})
    w.p.deploy({"/burst": limited, "/plain": plain}, w.now)
    w.p.tick(w.now, full=True)
    w.p.offers([offer()], w.now)
    tasks = [t for e in w.p.take_effects() if isinstance(e, Launch) for t in e.tasks]
    by_app: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        by_app.setdefault(t["task_id"]["value"].split(".")[0], []).append(t)
    assert len(by_app["burst"]) == 2 and len(by_app["plain"]) == 1
    for t in by_app["burst"]:
        assert t["limits"] == {"cpus": {"value": "Infinity"}, "mem": {"value": 512.0}}
        # The master's own checks (Mesos' validateResourceLimits) take them.
        info = msgspec.convert(t, TaskInfo)
        assert task_limits.problem(info) is None
        assert task_limits.parse(info.limits) == {"cpus": float("inf"), "mem": 512.0}
    assert "limits" not in by_app["plain"][0]


def test_a_task_dropped_by_an_agent_without_the_isolator_is_replaced_after_the_backoff():
    # The agent's refusal (docs/isolation.md): TASK_DROPPED with Mesos' message. Marathon
    # treats it as any launch that failed: the last failure, the backoff, a new launch.
    w = World()
    spec = normalize_app({**BASE, "backoffSeconds": 5, "resourceLimits": {"mem": 128}})
    w.p.deploy({"/burst": spec}, w.now)
    (launch,) = w.offer(offer())
    (task,) = launch.tasks
    message = (
        "Memory limits can only be set on tasks launched in Mesos containers when the agent "
        "has loaded the 'cgroups/mem' isolator"
    )
    w.update(task["task_id"]["value"], "TASK_DROPPED", message=message)
    w.step()
    failure = w.p.app_json("/burst", {"lastTaskFailure"})["lastTaskFailure"]
    assert failure["state"] == "TASK_DROPPED" and failure["message"] == message
    (item,) = w.p.queue(w.now)
    assert item["delay"]["overdue"] is False and item["count"] == 1
    assert w.offer(offer()) == []  # backed off
    w.now += 5
    (again,) = w.offer(offer())
    (retry,) = again.tasks
    assert retry["task_id"] != task["task_id"] and retry["limits"] == {"mem": {"value": 128.0}}
