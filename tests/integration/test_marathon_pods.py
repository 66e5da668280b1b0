"""Marathon pods end to end (docs/marathon.md "Pods"): ``butte marathon`` against a real
master and agent. A pod of two containers is created (201, Location, deployment header, a
deployment in /v2/deployments), runs as one task group under the DEFAULT executor (both
members TASK_RUNNING, the pod STABLE), is scaled to two instances by PUT, has an instance
killed and replaced, survives a restart of marathon unchanged, is changed (the new instances
run before the old ones go), and is deleted (202, every
task killed, 404 after). Invalid definitions get 422 naming the field."""

from __future__ import annotations

import json
import pwd
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import start_cluster
from butte.testing.marathon import MarathonHandle, start_marathon

pytestmark = pytest.mark.integration

POD = {
    "id": "/shop/web",
    "labels": {"team": "shop"},
    "environment": {"GREETING": "hello"},
    "containers": [
        {
            "name": "writer",
            "exec": {"command": {"shell": 'echo "$GREETING" > out; exec sleep 600'}},
            "resources": {"cpus": 0.1, "mem": 16},
            "endpoints": [{"name": "http", "hostPort": 0}],
        },
        {
            "name": "sidecar",
            "exec": {"command": {"shell": "exec sleep 600"}},
            "resources": {"cpus": 0.1, "mem": 16},
            # STABLE only once the default executor reported it healthy
            "healthCheck": {
                "exec": {"command": {"shell": 'test -n "$MESOS_TASK_ID"'}},
                "delaySeconds": 0,
                "intervalSeconds": 1,
                "gracePeriodSeconds": 10,
            },
        },
    ],
    "scaling": {"kind": "fixed", "instances": 1},
}


def _post(m: MarathonHandle, path: str, body: Any, method: str = "POST") -> tuple[int, Any, Any]:
    req = urllib.request.Request(
        m.url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, json.loads(r.read() or b"null")


def _stable(m: MarathonHandle, count: int) -> dict[str, Any] | None:
    status = m.get("/v2/pods/shop/web::status")
    instances = status["instances"]
    if status["status"] != "STABLE" or len(instances) != count:
        return None
    for inst in instances:
        if [c["status"] for c in inst["containers"]] != ["TASK_RUNNING", "TASK_RUNNING"]:
            return None
    return dict(status)


def _master_tasks(cluster: Any, completed: bool = False) -> list[dict[str, Any]]:
    frameworks = cluster.state()["frameworks"]
    tasks = [t for f in frameworks for t in f["tasks"]]
    if completed:
        tasks += [t for f in frameworks for t in f.get("completed_tasks", ())]
    return tasks


def test_a_pod_runs_as_a_task_group_scales_heals_persists_and_goes(tmp_path: Path) -> None:
    with (
        start_cluster(tmp_path) as cluster,
        start_marathon(cluster.master_address, tmp_path) as m,
    ):
        status, headers, body = _post(m, "/v2/pods", POD)
        assert status == 201, body
        assert headers["Location"] == "/v2/pods/shop/web"
        deployment = headers["Marathon-Deployment-Id"]
        assert body["id"] == "/shop/web" and body["scaling"]["instances"] == 1
        shown = m.get("/v2/deployments")
        assert any(d["id"] == deployment and d["affectedPods"] == ["/shop/web"] for d in shown)
        assert m.request("POST", "/v2/pods", POD)[0] == 409

        first = m.wait_until(lambda: _stable(m, 1), 60, "the pod stable")
        (inst,) = first["instances"]
        sidecar = inst["containers"][1]
        assert sidecar["conditions"][0]["name"] == "healthy"
        assert sidecar["conditions"][0]["value"] == "true"
        assert inst["id"].startswith("shop_web.instance-")
        assert {c["containerId"] for c in inst["containers"]} == {
            f"{inst['id']}.writer",
            f"{inst['id']}.sidecar",
        }
        m.wait_until(lambda: not m.get("/v2/deployments"), 30, "the deployment done")
        # One task group under the DEFAULT executor in the master.
        tasks = _master_tasks(cluster)
        assert sorted(t["id"] for t in tasks) == sorted(
            [f"{inst['id']}.sidecar", f"{inst['id']}.writer"]
        )
        executor = inst["id"].replace("shop_web.instance-", "instance-shop_web.")
        assert {t["executor_id"] for t in tasks} == {executor}
        assert (writer_out := list(tmp_path.glob(f"**/tasks/{inst['id']}.writer/out")))
        assert writer_out[0].read_text() == "hello\n"

        # Scale to two (a plain scale: the first instance stays).
        scaled = {**POD, "scaling": {"kind": "fixed", "instances": 2}}
        status, headers, body = _post(m, "/v2/pods/shop/web", scaled, "PUT")
        assert status == 200 and headers["Marathon-Deployment-Id"]
        two = m.wait_until(lambda: _stable(m, 2), 60, "two instances")
        ids = {i["id"] for i in two["instances"]}
        assert inst["id"] in ids

        # Kill one instance: it is replaced.
        status, body = m.request("DELETE", f"/v2/pods/shop/web::instances/{inst['id']}")
        assert status == 200, body
        assert body["id"] == inst["id"]

        def replaced() -> dict[str, Any] | None:
            now = _stable(m, 2)
            return now if now and inst["id"] not in {i["id"] for i in now["instances"]} else None

        healed = m.wait_until(replaced, 60, "the killed instance replaced")
        kept = {i["id"] for i in healed["instances"]}
        killed = [t for t in _master_tasks(cluster, True) if t["id"].startswith(inst["id"])]
        assert len(killed) == 2
        assert {t["state"] for t in killed} == {"TASK_KILLED"}

        # A restart of marathon keeps the pod and its instances (nothing relaunched).
        m.restart()
        assert m.get("/v2/pods/shop/web")["scaling"]["instances"] == 2
        after = m.wait_until(lambda: _stable(m, 2), 30, "stable after the restart")
        assert {i["id"] for i in after["instances"]} == kept
        versions = m.get("/v2/pods/shop/web::versions")
        assert m.get("/v2/pods/shop/web")["version"] in versions and len(versions) == 2
        current = m.get("/v2/pods/shop/web")
        assert m.get(f"/v2/pods/shop/web::versions/{current['version']}") == current
        assert m.request("GET", "/v2/pods/shop/web::versions/1999-01-01T00:00:00.000Z")[0] == 404
        assert [p["id"] for p in m.get("/v2/pods")] == ["/shop/web"]
        assert [s["id"] for s in m.get("/v2/pods/::status")] == ["/shop/web"]

        # A changed definition rolls (Marathon's default upgrade strategy, 1 and 1): the new
        # instances run before any old one is killed.
        changed = {**POD, "environment": {"GREETING": "bye"}}
        changed["scaling"] = {"kind": "fixed", "instances": 2}
        status, _, _ = _post(m, "/v2/pods/shop/web", changed, "PUT")
        assert status == 200

        def rolled() -> dict[str, Any] | None:
            now = _stable(m, 2)
            return now if now and not kept & {i["id"] for i in now["instances"]} else None

        fresh = {i["id"] for i in m.wait_until(rolled, 90, "the new instances alone")["instances"]}
        m.wait_until(lambda: not m.get("/v2/deployments"), 30, "the restart deployment done")

        def first(ids: set[str], states: set[str]) -> float:
            return min(
                s["timestamp"]
                for t in _master_tasks(cluster, True)
                if t["id"].rsplit(".", 1)[0] in ids
                for s in t["statuses"]
                if s["state"] in states
            )

        assert first(fresh, {"TASK_RUNNING"}) < first(kept, {"TASK_KILLING", "TASK_KILLED"})
        for inst in fresh:
            out = list(tmp_path.glob(f"**/tasks/{inst}.writer/out"))
            assert out and out[0].read_text() == "bye\n"

        # Delete: 202, every task killed, then 404.
        req = urllib.request.Request(m.url + "/v2/pods/shop/web", method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 202 and r.headers["Marathon-Deployment-Id"]

        def all_killed() -> bool:
            tasks = _master_tasks(cluster, True)
            ours = [t for t in tasks if t["id"].startswith("shop_web.")]
            return len(ours) == 10 and all(t["state"] == "TASK_KILLED" for t in ours)

        m.wait_until(all_killed, 60, "every pod task killed")
        assert m.request("GET", "/v2/pods/shop/web")[0] == 404
        m.wait_until(lambda: not m.get("/v2/deployments"), 30, "the stop deployment done")

        # Bad definitions: 422 naming the field.
        appc = {"kind": "APPC", "id": "busybox"}
        bad = {**POD, "containers": [{**POD["containers"][0], "image": appc}]}
        status, body = m.request("POST", "/v2/pods", bad)
        assert status == 422 and body["details"][0]["path"] == "/containers/0/image/kind", body
        status, body = m.request("POST", "/v2/pods", {**POD, "networks": [{"mode": "container"}]})
        assert status == 422 and body["details"][0]["path"] == "/networks", body
        assert m.request("POST", "/v2/pods", {"id": "/x", "containers": []})[0] == 422
        # Hostile requests: clear 4xx, never a 500.
        assert m.request("POST", "/v2/pods", b"{not json")[0] == 400
        assert m.request("POST", "/v2/pods", [1, 2])[0] == 422
        assert m.request("PUT", "/v2/pods/a", {**POD, "id": "/b"})[0] == 422
        assert m.request("PUT", "/v2/pods/a?force=maybe", {**POD, "id": "/a"})[0] == 400
        assert m.request("GET", "/v2/pods/a")[0] == 404
        assert m.request("GET", "/v2/pods/nope::status")[0] == 404
        assert m.request("GET", "/v2/pods/nope::frobnicate")[0] == 404
        assert m.request("DELETE", "/v2/pods/nope::instances/x")[0] == 404
        assert m.request("PATCH", "/v2/pods")[0] == 405
        assert m.request("POST", "/v2/pods/::status", {})[0] == 404


def test_a_pod_fetches_artifacts_shares_volumes_runs_as_its_user_and_keeps_to_constraints(
    tmp_path: Path,
) -> None:
    """A container's ``artifacts`` are fetched into its own sandbox before it starts, it
    runs as its ``user`` (the pod's, where it names none), its containers share an ephemeral
    volume, and ``scheduling.placement.constraints`` hold: ``rack IS r1`` places on the
    agent with that attribute, and ``hostname UNIQUE`` keeps the second instance off the
    only host."""
    data = tmp_path / "data.txt"
    data.write_text("payload\n")
    pod = {
        "id": "/shop/fetch",
        "user": "nobody",
        "containers": [
            {
                "name": "reader",
                "exec": {
                    "command": {
                        "shell": "cat in.txt > copy; id -un > who; "
                        "until [ -s from-root/hello ]; do sleep 0.05; done; "
                        "cp from-root/hello seen; exec sleep 600"
                    }
                },
                "resources": {"cpus": 0.1, "mem": 16},
                "artifacts": [{"uri": f"file://{data}", "destPath": "in.txt"}],
                "volumeMounts": [{"name": "share", "mountPath": "from-root", "readOnly": True}],
            },
            {
                "name": "root",
                "user": "root",
                "exec": {"command": {"shell": "id -un > who; echo hi > out/hello; exec sleep 600"}},
                "resources": {"cpus": 0.1, "mem": 16},
                "volumeMounts": [{"name": "share", "mountPath": "out"}],
            },
        ],
        "volumes": [{"name": "share"}],
        "scaling": {"kind": "fixed", "instances": 2},
        "scheduling": {
            "placement": {
                "constraints": [
                    {"fieldName": "hostname", "operator": "UNIQUE"},
                    ["rack", "IS", "r1"],
                ]
            }
        },
    }
    with (
        start_cluster(tmp_path, agent_flags=["--attributes=rack:r1"]) as cluster,
        start_marathon(cluster.master_address, tmp_path) as m,
    ):
        status, _, body = _post(m, "/v2/pods", pod)
        assert status == 201, body
        assert body["user"] == "nobody"
        assert body["containers"][0]["artifacts"] == [
            {
                "uri": f"file://{data}",
                "extract": True,
                "executable": False,
                "cache": False,
                "destPath": "in.txt",
            }
        ]
        assert body["scheduling"]["placement"]["constraints"] == [
            {"fieldName": "hostname", "operator": "UNIQUE"},
            {"fieldName": "rack", "operator": "IS", "value": "r1"},
        ]

        def one_running() -> dict[str, Any] | None:
            status = m.get("/v2/pods/shop/fetch::status")
            running = [
                i
                for i in status["instances"]
                if [c["status"] for c in i["containers"]] == ["TASK_RUNNING"] * 2
            ]
            return running[0] if running else None

        inst = m.wait_until(one_running, 60, "one instance running")
        sandbox = next(tmp_path.glob(f"agent-0/slaves/**/tasks/{inst['id']}.reader"))
        # Written, not just made: the shell creates a file before it writes to it.
        m.wait_until(lambda: (sandbox / "seen").read_text(), 10, "the reader's output")
        # The ephemeral volume: what one container wrote, the other read (it is the
        # executor's volumes/share).
        assert (sandbox / "seen").read_text() == "hi\n"
        assert (sandbox.parent.parent / "volumes" / "share" / "hello").read_text() == "hi\n"
        assert (sandbox / "copy").read_text() == "payload\n"
        assert (sandbox / "who").read_text() == "nobody\n"
        # What was fetched belongs to the user too, as Mesos' fetcher running as it leaves it.
        assert (sandbox / "in.txt").stat().st_uid == pwd.getpwnam("nobody").pw_uid
        root_box = next(tmp_path.glob(f"agent-0/slaves/**/tasks/{inst['id']}.root"))
        m.wait_until(lambda: (root_box / "who").read_text(), 10, "the root member's output")
        assert (root_box / "who").read_text() == "root\n"
        # The second instance finds no other host: through more offer rounds (the master
        # offers every 100 ms here) it is never placed, and the deployment waits for it.
        time.sleep(2)
        assert len(m.get("/v2/pods/shop/fetch::status")["instances"]) == 1
        assert m.get("/v2/deployments")

        # Bad ones: 422 naming the field.
        bad = {**pod, "id": "/bad", "user": "no body"}
        status, body = m.request("POST", "/v2/pods", bad)
        assert status == 422 and body["details"][0]["path"] == "/user", body
        escape = [{"uri": f"file://{data}", "destPath": "../x"}]
        bad = {**pod, "id": "/bad", "containers": [{**pod["containers"][0], "artifacts": escape}]}
        status, body = m.request("POST", "/v2/pods", bad)
        assert status == 422, body
        assert body["details"][0]["path"] == "/containers/0/artifacts/0/destPath", body
        bad_rule = {"placement": {"constraints": [["rack", "SOMETIMES"]]}}
        status, body = m.request("POST", "/v2/pods", {**pod, "id": "/bad", "scheduling": bad_rule})
        assert status == 422, body
        assert body["details"][0]["path"].startswith("/scheduling/placement/constraints"), body
