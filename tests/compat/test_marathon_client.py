"""The unmodified PyPI ``marathon`` client (0.13.0) against ``butte marathon`` on a real
butte cluster (one master, two agents, real tasks).

The client's JSON encoder uses ``collections.Iterable``, which Python 3.10 removed; the alias
is restored here (the package itself is not touched) so that it can encode nested objects.
"""

from __future__ import annotations

import collections
import collections.abc
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from butte.testing.cluster import start_cluster
from butte.testing.marathon import MarathonHandle, start_marathon
from butte.testing.require import require_module
from butte.testing.tls import make_pki

marathon = require_module("marathon")
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models import MarathonApp, MarathonGroup  # noqa: E402

collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]

pytestmark = [pytest.mark.compat, pytest.mark.integration]

SLEEP = "sleep 600"


class Env:
    """The module's cluster, marathon and client, plus every event seen on /v2/events."""

    def __init__(self, cluster, m: MarathonHandle) -> None:
        self.cluster = cluster
        self.m = m
        self.client = marathon.MarathonClient(m.url, timeout=20)
        self.events: list = []
        self._thread = threading.Thread(target=self._read_events, daemon=True)
        self._thread.start()

    def _read_events(self) -> None:
        sse = marathon.MarathonClient(self.m.url)
        try:
            for event in sse.event_stream():
                self.events.append(event)
        except Exception:  # the stream ends when marathon stops
            pass

    def event_types(self) -> set[str]:
        return {e.event_type for e in list(self.events)}

    def wait(self, predicate, timeout: float = 60.0, what: str = ""):
        return self.m.wait_until(predicate, timeout, what)

    def settled(self, app_id: str, running: int, healthy: int | None = None) -> bool:
        app = self.client.get_app(app_id)
        if app.deployments or app.tasks_running != running:
            return False
        return healthy is None or app.tasks_healthy == healthy

    def master_tasks(self, app_prefix: str) -> list[dict]:
        """Active tasks of this framework in the master's state whose id starts so."""
        state = self.cluster.state()
        out = []
        for fw in state["frameworks"]:
            for t in fw["tasks"]:
                if t["id"].startswith(app_prefix) and t["state"] in (
                    "TASK_STAGING",
                    "TASK_STARTING",
                    "TASK_RUNNING",
                    "TASK_KILLING",
                ):
                    out.append(t)
        return out


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    path = tmp_path_factory.mktemp("marathon-compat")
    with start_cluster(path / "cluster", agents=2) as cluster:
        with start_marathon(cluster.master_address, path) as m:
            yield Env(cluster, m)


def test_info_leader_ping_metrics(env: Env):
    c = env.client
    assert c.ping().strip() == b"pong"
    info = c.get_info()
    assert info.name == "marathon" and info.framework_id
    assert info.marathon_config.master == env.cluster.master_address
    assert c.get_leader() == {"leader": f"127.0.0.1:{env.m.port}"}
    metrics = c.get_metrics()
    assert "marathon.apps.active.gauge" in metrics["gauges"]
    frameworks = [f for f in env.cluster.state()["frameworks"] if f["name"] == "marathon"]
    assert frameworks and frameworks[0]["checkpoint"] is True


def test_app_lifecycle(env: Env):
    c = env.client
    created = c.create_app("/life/web", MarathonApp(cmd=SLEEP, cpus=0.05, mem=16, instances=2))
    assert created.id == "/life/web" and created.deployments
    env.wait(lambda: env.settled("/life/web", 2), what="2 running")
    app = c.get_app("/life/web", embed_tasks=True)
    first_ids = {t.id for t in app.tasks}
    assert len(first_ids) == 2 and all(t.state == "TASK_RUNNING" for t in app.tasks)
    assert all(t.ports and t.host for t in app.tasks)
    assert {t["id"] for t in env.master_tasks("life_web.")} == first_ids
    listed = c.list_apps(embed_tasks=True)
    assert [len(a.tasks) for a in listed if a.id == "/life/web"] == [2]

    c.scale_app("/life/web", instances=3)
    env.wait(lambda: env.settled("/life/web", 3), what="scaled to 3")
    scaled_ids = {t.id for t in c.list_tasks("/life/web")}
    assert first_ids < scaled_ids  # scaling keeps the running instances

    c.restart_app("/life/web")
    env.wait(
        lambda: (
            env.settled("/life/web", 3)
            and not {t.id for t in c.list_tasks("/life/web")} & scaled_ids
        ),
        what="restarted",
    )
    versions = c.list_versions("/life/web")
    assert len(versions) >= 3 and versions == sorted(versions, reverse=True)
    oldest = c.get_version("/life/web", versions[-1])
    assert oldest.instances == 2 and oldest.cmd == SLEEP
    with pytest.raises(NotFoundError) as e:
        c.get_version("/life/web", "2000-01-01T00:00:00.000Z")
    assert e.value.error_message == (
        "App '/life/web' does not exist in version 2000-01-01T00:00:00.000Z"
    )

    c.update_app("/life/web", MarathonApp(cmd="sleep 601"))
    env.wait(lambda: env.settled("/life/web", 3), what="updated")
    assert c.get_app("/life/web").cmd == "sleep 601"
    # PATCH merges into an existing app, and creates none.
    status, _ = env.m.request("PATCH", "/v2/apps/life/web", {"labels": {"tier": "web"}})
    assert status == 200 and c.get_app("/life/web").labels == {"tier": "web"}
    assert c.get_app("/life/web").cmd == "sleep 601"
    env.wait(lambda: not c.get_app("/life/web").deployments, what="patched")
    status, answer = env.m.request("PATCH", "/v2/apps/life/nope", {"instances": 1})
    assert (status, answer["message"]) == (404, "App '/life/nope' does not exist")
    c.rollback_app("/life/web", versions[-1])
    env.wait(lambda: env.settled("/life/web", 2), what="rolled back")
    assert c.get_app("/life/web").cmd == SLEEP

    # kill without scale: replaced; kill with scale: one fewer
    victim = c.list_tasks("/life/web")[0].id
    killed = c.kill_task("/life/web", victim)
    assert killed.id == victim
    env.wait(
        lambda: (
            env.settled("/life/web", 2) and victim not in {t.id for t in c.list_tasks("/life/web")}
        ),
        what="replaced",
    )
    victim = c.list_tasks("/life/web")[0].id
    c.kill_task("/life/web", victim, scale=True)
    env.wait(lambda: env.settled("/life/web", 1), what="killed and scaled")
    assert c.get_app("/life/web").instances == 1
    assert c.kill_given_tasks([c.list_tasks("/life/web")[0].id], scale=True)
    env.wait(lambda: env.settled("/life/web", 0), what="scaled to 0")

    c.delete_app("/life/web")
    env.wait(lambda: not [a for a in c.list_apps() if a.id == "/life/web"], what="deleted")
    env.wait(lambda: not env.master_tasks("life_web."), what="tasks gone")
    with pytest.raises(NotFoundError):
        c.get_app("/life/web")
    env.wait(
        lambda: (
            {
                "deployment_info",
                "deployment_success",
                "status_update_event",
                "app_terminated_event",
                "deployment_step_success",
            }
            <= env.event_types()
        ),
        what="events",
    )


def test_health_checks_and_replacement(env: Env):
    c = env.client
    healthy = {
        "protocol": "MESOS_HTTP",
        "path": "/",
        "portIndex": 0,
        "gracePeriodSeconds": 30,
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
        "delaySeconds": 0,
    }
    cmd = "exec python3 -m http.server --bind 127.0.0.1 $PORT0"
    c.create_app(
        "/hc/ok", MarathonApp(cmd=cmd, cpus=0.05, mem=32, instances=2, health_checks=[healthy])
    )
    env.wait(lambda: env.settled("/hc/ok", 2, healthy=2), what="2 healthy")
    task = c.list_tasks("/hc/ok")[0]
    assert task.health_check_results and task.health_check_results[0].alive is True

    failing = {
        "protocol": "COMMAND",
        "command": {"value": "test -e does-not-exist"},
        "gracePeriodSeconds": 0,
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
        "delaySeconds": 0,
        "maxConsecutiveFailures": 2,
    }
    c.create_app(
        "/hc/bad", MarathonApp(cmd=SLEEP, cpus=0.05, mem=16, instances=1, health_checks=[failing])
    )
    first = env.wait(lambda: c.list_tasks("/hc/bad"), what="launched")[0].id
    # The agent's health checker kills it; marathon replaces it with a new task.
    env.wait(
        lambda: [t for t in c.list_tasks("/hc/bad") if t.id != first],
        what="unhealthy task replaced",
    )
    env.wait(
        lambda: (
            {
                "health_status_changed_event",
                "unhealthy_task_kill_event",
                "failed_health_check_event",
            }
            <= env.event_types()
        ),
        what="health events",
    )
    assert c.get_app("/hc/bad").deployments  # never healthy: the deployment stays open
    c.delete_app("/hc/bad", force=True)
    c.delete_app("/hc/ok")
    env.wait(lambda: not env.master_tasks("hc_"), what="hc tasks gone")


def test_groups(env: Env):
    c = env.client
    group = MarathonGroup(
        id="/shop",
        apps=[
            MarathonApp(id="db", cmd=SLEEP, cpus=0.05, mem=16, instances=1),
            MarathonApp(
                id="web", cmd=SLEEP, cpus=0.05, mem=16, instances=1, dependencies=["/shop/db"]
            ),
        ],
        groups=[
            MarathonGroup(
                id="/shop/admin",
                apps=[MarathonApp(id="ui", cmd=SLEEP, cpus=0.05, mem=16, instances=1)],
            )
        ],
    )
    result = c.create_group(group)
    assert result["deploymentId"]
    deployment = [d for d in c.list_deployments() if d.id == result["deploymentId"]]
    if deployment:  # dependency order: db is in an earlier step than web
        steps = [[a.app for a in s.actions] for s in deployment[0].steps]
        db_step = next(i for i, s in enumerate(steps) if "/shop/db" in s and i > 0)
        web_step = next(i for i, s in enumerate(steps) if "/shop/web" in s and i > 0)
        assert db_step < web_step
    env.wait(
        lambda: all(env.settled(a, 1) for a in ("/shop/db", "/shop/web", "/shop/admin/ui")),
        what="group up",
    )
    got = c.get_group("/shop")
    assert sorted(a.id for a in got.apps) == ["/shop/db", "/shop/web"]
    assert [g.id for g in got.groups] == ["/shop/admin"]
    assert "/shop" in [g.id for g in c.list_groups()]

    c.scale_group("/shop", 2)
    env.wait(
        lambda: all(env.settled(a, 2) for a in ("/shop/db", "/shop/web", "/shop/admin/ui")),
        what="scaled x2",
    )
    c.update_group(
        "/shop/admin",
        MarathonGroup(
            apps=[MarathonApp(id="/shop/admin/api", cmd=SLEEP, cpus=0.05, mem=16, instances=1)]
        ),
    )
    env.wait(
        lambda: (
            env.settled("/shop/admin/api", 1)
            and "/shop/admin/ui" not in [a.id for a in c.list_apps()]
        ),
        what="group updated",
    )
    versions = env.m.get("/v2/groups/shop/versions")
    c.rollback_group("/shop", versions[-1])  # back to the group as it was created
    env.wait(
        lambda: (
            all(env.settled(a, 1) for a in ("/shop/db", "/shop/web", "/shop/admin/ui"))
            and "/shop/admin/api" not in [a.id for a in c.list_apps()]
        ),
        what="group rolled back",
    )
    c.delete_group("/shop")
    env.wait(
        lambda: not [a for a in c.list_apps() if a.id.startswith("/shop/")], what="group deleted"
    )
    env.wait(lambda: not env.master_tasks("shop_"), what="shop tasks gone")
    with pytest.raises(NotFoundError):
        c.get_group("/shop")


def test_deployment_conflict_force_and_rollback(env: Env):
    c = env.client
    never_healthy = {
        "protocol": "COMMAND",
        "command": {"value": "false"},
        "gracePeriodSeconds": 600,
        "intervalSeconds": 5,
        "delaySeconds": 0,
        "timeoutSeconds": 2,
    }
    c.create_app(
        "/dep/app",
        MarathonApp(cmd=SLEEP, cpus=0.05, mem=16, instances=1, health_checks=[never_healthy]),
    )
    env.wait(lambda: c.list_tasks("/dep/app"), what="launched")
    with pytest.raises(ConflictError):
        c.scale_app("/dep/app", instances=2)
    result = c.scale_app("/dep/app", instances=2, force=True)
    deployments = c.list_deployments()
    assert [d.id for d in deployments if "/dep/app" in d.affected_apps] == [result["deploymentId"]]
    # DELETE without force rolls back: back to 1 instance (still never healthy: open)
    rollback = c.delete_deployment(result["deploymentId"])
    assert rollback["deploymentId"] != result["deploymentId"]
    env.wait(lambda: c.get_app("/dep/app").instances == 1, what="rolled back")
    assert c.delete_deployment(rollback["deploymentId"], force=True) == {}
    env.wait(
        lambda: not [d for d in c.list_deployments() if "/dep/app" in d.affected_apps],
        what="deployment gone",
    )
    c.delete_app("/dep/app")
    env.wait(lambda: not env.master_tasks("dep_app."), what="dep tasks gone")


def declined(steps: list[dict]) -> dict[str, int]:
    """The reasons of a queue entry's reject summary that declined offers, with counts."""
    return {s["reason"]: s["declined"] for s in steps if s["declined"]}


def test_queue_says_why(env: Env):
    c = env.client
    # Both agents have the same hostname: UNIQUE hostname fits one instance only.
    c.create_app(
        "/q/unique",
        MarathonApp(
            cmd=SLEEP, cpus=0.05, mem=16, instances=2, constraints=[["hostname", "UNIQUE"]]
        ),
    )

    def waiting():
        items = [q for q in c.list_queue() if q.app.id == "/q/unique"]
        if not items:
            return None
        summary = items[0].processed_offers_summary
        return (
            items[0]
            if "UnfulfilledConstraint" in declined(summary["rejectSummaryLastOffers"])
            else None
        )

    item = env.wait(waiting, what="queued with a reason")
    assert item.count == 1
    assert (item.delay.time_left_seconds, item.delay.overdue) == (0, True)
    summary = item.processed_offers_summary
    # Marathon's whole reason funnel, each step with the offers that reached it
    assert [s["reason"] for s in summary["rejectSummaryLaunchAttempt"]][:2] == [
        "UnfulfilledRole",
        "UnfulfilledConstraint",
    ]
    assert summary["unusedOffersCount"] >= 1 and summary["lastUsedOfferAt"]
    env.wait(lambda: c.get_app("/q/unique").tasks_running == 1, what="one running")
    c.delete_app("/q/unique", force=True)
    # Alone in the queue and bigger than any agent: every offer is looked at and declined.
    c.create_app("/q/big", MarathonApp(cmd=SLEEP, cpus=64, mem=16, instances=1))

    def big() -> dict | None:
        items = [q for q in c.list_queue(embed_last_unused_offers=True) if q.app.id == "/q/big"]
        if not items or not items[0].last_unused_offers:
            return None
        return {"item": items[0]}

    item = env.wait(big, what="/q/big's unused offers")["item"]
    summary = item.processed_offers_summary
    assert set(declined(summary["rejectSummaryLastOffers"])) == {"InsufficientCpus"}
    assert summary["processedOffersCount"] == summary["unusedOffersCount"] >= 1
    assert "lastUsedOfferAt" not in summary
    unused = item.last_unused_offers
    assert {u["reason"][0] for u in unused} == {"InsufficientCpus"}
    agents = {a["id"] for a in env.cluster.state()["slaves"]}
    assert {u["offer"]["agentId"] for u in unused} <= agents
    assert {r["name"] for r in unused[0]["offer"]["resources"]} >= {"cpus", "mem", "ports"}
    assert c.list_queue()[0].last_unused_offers is None  # only with the embed
    c.reset_delay("/q/big")  # queued: its delay is reset
    c.delete_app("/q/big", force=True)


def test_api_post_event_names_the_client_and_the_request(env: Env):
    c = env.client
    c.create_app("/post/web", MarathonApp(cmd=SLEEP, cpus=0.01, mem=8, instances=0))
    c.update_app("/post/web", MarathonApp(cmd=SLEEP, cpus=0.01, mem=9, instances=0), force=True)
    c.delete_app("/post/web", force=True)

    def posts() -> list | None:
        found = [
            e
            for e in list(env.events)
            if e.event_type == "api_post_event" and e.app_definition["id"] == "/post/web"
        ]
        return found if len(found) >= 2 else None

    created, updated = env.wait(posts, what="api_post_event")
    assert (created.client_ip, created.uri) == ("127.0.0.1", "/v2/apps")
    # The path as the client sent it (this client joins "/v2/apps/" and "/post/web"), as
    # Marathon's HttpServletRequest.getRequestURI gives it.
    assert (updated.client_ip, updated.uri) == ("127.0.0.1", "/v2/apps//post/web")
    assert updated.app_definition["mem"] == 9
    env.wait(lambda: "/post/web" not in [a.id for a in c.list_apps()], what="deleted")
    assert len(posts() or []) == 2  # a delete posts none, as in Marathon


def test_pod_events_reach_the_clients_event_stream(env: Env):
    # The client has no pod calls, but its event stream knows pod_created_event,
    # pod_updated_event, pod_deleted_event, instance_changed_event and status_update_event
    # (a type it did not know would end its stream with MarathonError).
    pod = {
        "id": "/evented",
        "containers": [
            {
                "name": "main",
                "exec": {"command": {"shell": SLEEP}},
                "resources": {"cpus": 0.02, "mem": 16},
            }
        ],
    }
    assert env.m.request("POST", "/v2/pods", pod)[0] == 201
    scaled = {**pod, "scaling": {"kind": "fixed", "instances": 2}}
    assert env.m.request("PUT", "/v2/pods/evented?force=true", scaled)[0] == 200

    def changes(condition: str) -> list | None:
        found = [
            e
            for e in list(env.events)
            if e.event_type == "instance_changed_event"
            and e.run_spec_id == "/evented"
            and e.condition == condition
        ]
        return found if len(found) >= 2 else None

    running = env.wait(lambda: changes("Running"), what="two pod instances Running")
    assert {e.instance_id for e in running} == {
        i["id"] for i in env.m.get("/v2/pods/evented::status")["instances"]
    }
    updates = [
        e
        for e in list(env.events)
        if e.event_type == "status_update_event" and e.app_id == "/evented"
    ]
    running_tasks = {e.task_id for e in updates if e.task_status == "TASK_RUNNING"}
    assert running_tasks == {f"{e.instance_id}.main" for e in running}
    assert all(e.ip_addresses and e.host for e in updates if e.task_status == "TASK_RUNNING")
    assert env.m.request("DELETE", "/v2/pods/evented?force=true")[0] == 202
    killed = env.wait(lambda: changes("Killed"), what="both instances Killed")
    assert {e.instance_id for e in killed} == {e.instance_id for e in running}
    pod_events = [
        (e.event_type, e.client_ip, e.uri) for e in list(env.events) if "pod_" in e.event_type
    ]
    assert pod_events == [
        ("pod_created_event", "127.0.0.1", "/v2/pods"),
        ("pod_updated_event", "127.0.0.1", "/v2/pods/evented"),
        ("pod_deleted_event", "127.0.0.1", "/v2/pods/evented"),
    ]


def test_validation(env: Env):
    m, c = env.m, env.client
    before = m.get("/v2/apps")
    status, body = m.request(
        "POST",
        "/v2/apps",
        {
            "id": "/bad",
            "cmd": "x",
            "cpus": -1,
            "instances": 10**9,
            "constraints": [["hostname", "NOPE"]],
        },
    )
    assert status == 422
    paths = {d["path"] for d in body["details"]}
    assert {"/cpus", "/instances", "/constraints(0)"} <= paths
    status, body = m.request(
        "POST",
        "/v2/apps",
        {
            "id": "/img",
            "cmd": "x",
            "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "WEIRD"}},
        },
    )
    assert status == 422 and body["details"][0]["path"] == "/container/docker/network"
    status, body = m.request("POST", "/v2/apps", b"{not json")
    assert status == 400
    status, body = m.request("POST", "/v2/apps", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400
    status, body = m.request("POST", "/v2/apps", {"id": "/x", "cmd": "x", "bogus": 1})
    assert status == 422 and body["details"][0]["path"] == "/bogus"
    status, _ = m.request("POST", "/v2/apps", {"id": "/Upper", "cmd": "x"})
    assert status == 422
    status, _ = m.request("POST", "/v2/apps", [1, 2])
    assert status == 422
    with pytest.raises(NotFoundError):
        c.get_app("/nope")
    with pytest.raises(NotFoundError):
        c.delete_app("/nope")
    with pytest.raises(MarathonHttpError) as e:
        c.create_app("/neg", MarathonApp(cmd="x", mem=-5))
    assert e.value.status_code == 422
    status, _ = m.request("DELETE", "/v2/deployments/nope")
    assert status == 404
    assert m.get("/v2/apps") == before
    ok = m.request(
        "POST", "/v2/apps", {"id": "/dup", "cmd": SLEEP, "cpus": 0.01, "mem": 8, "instances": 0}
    )
    assert ok[0] == 201
    assert m.request("POST", "/v2/apps", {"id": "/dup", "cmd": SLEEP})[0] == 409
    c.delete_app("/dup", force=True)


def test_batch_update_kill_all_endpoints_and_delay(env: Env):
    c = env.client
    c.update_apps(
        [
            MarathonApp(id="/batch/a", cmd=SLEEP, cpus=0.05, mem=16, instances=1),
            MarathonApp(id="/batch/b", cmd=SLEEP, cpus=0.05, mem=16, instances=2),
        ]
    )
    env.wait(lambda: env.settled("/batch/a", 1) and env.settled("/batch/b", 2), what="batch")
    endpoints = [e for e in c.list_endpoints() if e.app_id.startswith("/batch/")]
    assert len(endpoints) == 3 and all(e.host and e.task_port for e in endpoints)
    old = {t.id for t in c.list_tasks("/batch/b")}
    killed = c.kill_tasks("/batch/b")
    assert {t.id for t in killed} == old
    env.wait(
        lambda: env.settled("/batch/b", 2) and not {t.id for t in c.list_tasks("/batch/b")} & old,
        what="all killed and replaced",
    )
    # Not in the queue (all its instances run), or no such app: Marathon's 404.
    for app_id in ("/batch/a", "/batch/nope"):
        with pytest.raises(NotFoundError) as e:
            c.reset_delay(app_id)
        assert e.value.error_message == f"Application {app_id} not found in tasks queue."
    with pytest.raises(MarathonHttpError):
        c.list_event_subscriptions()  # HTTP callbacks are refused, not faked
    for app_id in ("/batch/a", "/batch/b"):
        c.delete_app(app_id, force=True)
    env.wait(lambda: not env.master_tasks("batch_"), what="batch tasks gone")


def test_fetch_ports_and_environment(env: Env, tmp_path):
    c = env.client
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    checks = (
        'test -x hello.sh && test "$(./hello.sh)" = hello && test "$PORT0" = "$PORT" '
        '&& test "$PORTS" = "$PORT0,$PORT1" && test "$PORT_WEB" = "$PORT1" && test -n "$HOST" '
        '&& test "$MARATHON_APP_ID" = /env/app && test "$GREETING" = hi && touch all-ok '
        "&& exec sleep 600"
    )
    app = MarathonApp(
        cmd=checks,
        cpus=0.05,
        mem=16,
        env={"GREETING": "hi"},
        fetch=[{"uri": str(script), "executable": True}],
        port_definitions=[{"port": 0}, {"port": 0, "name": "web"}],
    )
    c.create_app("/env/app", app)
    env.wait(lambda: env.settled("/env/app", 1), what="running")
    first = c.list_tasks("/env/app")[0]
    assert len(set(first.ports)) == 2
    pattern = f"agent-*/slaves/*/frameworks/*/executors/{first.id}/runs/*/all-ok"
    env.wait(lambda: list(env.cluster.work_dir.glob(pattern)), what="every check passed")
    assert [t.id for t in c.list_tasks("/env/app")] == [first.id]
    assert c.get_app("/env/app", embed_failures=True).last_task_failure is None
    # What Mesos-DNS reads from the master: the task's DiscoveryInfo, as Marathon sets it
    (task,) = [t for t in env.master_tasks("env_app") if t["id"] == first.id]
    assert task["discovery"] == {
        "visibility": "FRAMEWORK",
        "name": "app.env",
        "ports": {
            "ports": [
                {"number": first.ports[0], "protocol": "tcp"},
                {"number": first.ports[1], "protocol": "tcp", "name": "web"},
            ]
        },
    }
    # What haproxy-marathon-bridge reads: the text/plain task list
    service = c.get_app("/env/app").port_definitions
    request = urllib.request.Request(env.m.url + "/v2/tasks", headers={"Accept": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as r:
        lines = [line for line in r.read().decode().splitlines() if line.startswith("env_app\t")]
    assert lines == [
        f"env_app\t{pd.port}\t{first.host}:{port}\t"
        for pd, port in zip(service, first.ports, strict=True)
    ]
    c.delete_app("/env/app", force=True)


def test_readiness_check_holds_the_deployment(env: Env, tmp_path):
    """The deployment of an app with a readiness check ends only once its task answers the
    check (an HTTP GET marathon itself sends to the task's named port), not when it runs."""
    c = env.client
    go = tmp_path / "go"
    cmd = (
        f"while [ ! -e {go} ]; do sleep 0.2; done; "
        "exec python3 -m http.server --bind 127.0.0.1 $PORT0"
    )
    check = {"portName": "http", "path": "/", "intervalSeconds": 1, "timeoutSeconds": 1}
    app = MarathonApp(
        cmd=cmd,
        cpus=0.05,
        mem=32,
        port_definitions=[{"port": 0, "name": "http"}],
        readiness_checks=[check],
    )
    c.create_app("/ready/web", app)
    env.wait(lambda: c.get_app("/ready/web").tasks_running == 1, what="running")

    def results() -> list[dict]:
        got = env.m.get("/v2/apps/ready/web?embed=app.readiness")["app"]
        return got["readinessCheckResults"]

    env.wait(lambda: results(), what="a readiness check answered")
    assert results()[0]["ready"] is False
    assert c.get_app("/ready/web").deployments  # running, not ready: not deployed yet
    actions = [
        a
        for d in env.m.get("/v2/deployments")
        for a in d["currentActions"]
        if a["app"] == "/ready/web"
    ]
    assert actions[0]["readinessCheckResults"][0]["ready"] is False
    go.touch()
    env.wait(lambda: env.settled("/ready/web", 1), what="ready: the deployment ends")
    assert results()[0]["ready"] is True
    c.delete_app("/ready/web", force=True)
    env.wait(lambda: not env.master_tasks("ready_"), what="ready tasks gone")


def test_an_https_readiness_check_speaks_tls_to_the_task(env: Env, tmp_path):
    """``protocol: HTTPS``: marathon probes the task over TLS, without verifying its
    certificate (one no system trusts here), as Marathon's readiness checker does; the task
    answers only TLS, so a plain HTTP probe would never see it ready."""
    pki = make_pki(str(tmp_path))  # signed by a CA of the test's own: nobody trusts it
    key, cert = pki.key, pki.cert
    server = (
        "import http.server, os, ssl; "
        "s = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT0'])), "
        "http.server.SimpleHTTPRequestHandler); "
        "c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); "
        f"c.load_cert_chain('{cert}', '{key}'); "
        "s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()"
    )
    check = {
        "protocol": "HTTPS",
        "portName": "https",
        "path": "/",
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
    }
    app = MarathonApp(
        cmd=f'exec python3 -c "{server}"',
        cpus=0.05,
        mem=32,
        port_definitions=[{"port": 0, "name": "https"}],
        readiness_checks=[check],
    )
    c = env.client
    c.create_app("/ready/tls", app)
    env.wait(lambda: env.settled("/ready/tls", 1), what="ready over TLS: deployed")
    got = env.m.get("/v2/apps/ready/tls?embed=app.readiness")["app"]
    assert got["readinessChecks"][0]["protocol"] == "HTTPS"
    assert got["readinessCheckResults"][0]["ready"] is True
    c.delete_app("/ready/tls", force=True)
    env.wait(lambda: not env.master_tasks("ready_tls"), what="tls tasks gone")


def test_services_page(env: Env):
    status, text = env.m.request("GET", "/ui")
    assert status == 200 and "/v2/apps?embed=apps.tasks" in text and "/v2/queue" in text
