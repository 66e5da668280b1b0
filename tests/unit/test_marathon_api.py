"""Marathon's REST API (`butte.frameworks.marathon.api`) over a planner, in-process: the
routes' answers and what they change, without a cluster (the compat test drives the same
routes with the real client against real tasks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from butte.frameworks.marathon.api import Api
from butte.frameworks.marathon.model import Launch
from butte.frameworks.marathon.planner import Planner
from butte.frameworks.marathon.pods import PodManager
from tests.unit.test_marathon_planner import offer
from tests.unit.test_marathon_pod_manager import _offer as pod_offer


class Shell:
    """The service as the routes see it: a planner and pods whose effects are kept, a clock."""

    def __init__(self) -> None:
        self.planner = Planner(seed=3)
        self.pods = PodManager()
        self.clock = 1000.0
        self.planner.subscribed("fw-1", self.clock)
        self.effects: list[Any] = []
        self.hub: Any = None
        self.scheme = "http"
        self.zk = None
        self.leading = True

    def now(self) -> float:
        self.clock += 0.01
        return self.clock

    def own_address(self) -> str:
        return "127.0.0.1:8080"

    def leader_address(self) -> str | None:
        return self.own_address()

    def abdicate(self) -> None:
        raise AssertionError("not with --zk")

    async def proxy(self, request: web.Request, leader: str) -> web.Response:
        raise AssertionError("the leader serves everything")

    async def flush(self) -> None:
        self.planner.take_dirty()
        self.effects += self.planner.take_effects() + self.pods.take_effects()

    def info(self) -> dict[str, Any]:
        return {}

    def metrics(self) -> dict[str, Any]:
        return {}

    def launch(self, app_id: str, running: bool = True) -> list[str]:
        """Lets the planner place the app's wanted instances on one offer; the tasks go to
        TASK_RUNNING (else stay staging). Their ids."""
        self.planner.tick(self.now(), full=True)
        self.planner.offers([offer()], self.now())
        launches = [e for e in self.planner.take_effects() if isinstance(e, Launch)]
        ids = [t["task_id"]["value"] for launch in launches for t in launch.tasks]
        for task_id in ids if running else ():
            status = {"task_id": {"value": task_id}, "state": "TASK_RUNNING"}
            self.planner.status(status, self.now())
        self.planner.tick(self.now(), full=True)
        return ids


def run(test: Callable[[TestClient, Shell], Awaitable[None]]) -> None:
    async def main() -> None:
        shell = Shell()
        async with TestClient(TestServer(Api(shell).app())) as client:  # type: ignore[arg-type]
            await test(client, shell)

    asyncio.run(main())


async def call(client: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await client.request(method, path, json=body)
    try:
        return response.status, await response.json()
    except Exception:
        return response.status, await response.text()


APP = {"cmd": "sleep 100", "cpus": 0.1, "mem": 16}


def test_a_top_level_group_id_follows_the_path_id_rules():
    # Taken before, then unreachable: GET and DELETE /v2/groups/G_bad could not name it.
    async def test(client: TestClient, shell: Shell) -> None:
        for bad in ("/G_bad", "/Weird Group!", "ok/Bad"):
            status, body = await call(client, "POST", "/v2/groups", {"id": bad})
            assert status == 422, (bad, body)
            assert [d["path"] for d in body["details"]] == ["/id"]
        assert shell.planner.groups == {}
        status, _ = await call(client, "POST", "/v2/groups", {"id": "/fine"})
        assert status == 201 and "/fine" in shell.planner.groups

    run(test)


def test_delete_of_the_root_group_removes_every_app_and_group():
    async def test(client: TestClient, shell: Shell) -> None:
        group = {
            "id": "/shop",
            "apps": [{"id": "db", **APP}],
            "groups": [{"id": "admin", "apps": [{"id": "ui", **APP}]}],
        }
        assert (await call(client, "POST", "/v2/groups", group))[0] == 201
        assert (await call(client, "POST", "/v2/apps", {"id": "/top", **APP}))[0] == 201
        shell.launch("/top")
        status, body = await call(client, "DELETE", "/v2/groups?force=true")
        assert status == 200 and set(body) == {"deploymentId", "version"}
        assert shell.planner.apps == {} and shell.planner.groups == {}
        d = shell.planner.deployments[body["deploymentId"]]
        assert sorted(a["app"] for s in d.steps for a in s) == [
            "/shop/admin/ui",
            "/shop/db",
            "/top",
        ]
        assert {a["action"] for s in d.steps for a in s} == {"StopApplication"}
        status, body = await call(client, "GET", "/v2/groups")
        assert status == 200 and body["apps"] == [] and body["groups"] == []

    run(test)


def test_a_put_of_the_root_group_without_its_slash_changes_and_scales_it():
    # Marathon's GroupsResource takes PUT /v2/groups as an update of the root (updateRoot).
    async def test(client: TestClient, shell: Shell) -> None:
        root = {"apps": [{"id": "top", **APP}], "groups": [{"id": "shop", "apps": []}]}
        status, body = await call(client, "PUT", "/v2/groups", root)
        assert status == 200 and set(body) == {"deploymentId", "version"}, body
        assert set(shell.planner.apps) == {"/top"} and "/shop" in shell.planner.groups
        status, body = await call(client, "PUT", "/v2/groups?force=true", {"scaleBy": 3})
        assert status == 200, body
        assert shell.planner.apps["/top"]["instances"] == 3
        status, body = await call(client, "PUT", "/v2/groups", ["not", "a", "group"])
        assert status == 422, body
        status, _ = await call(client, "PATCH", "/v2/groups", {})
        assert status == 405

    run(test)


def test_group_dependencies_stay_the_groups_and_unknown_ones_are_accepted():
    async def test(client: TestClient, shell: Shell) -> None:
        group = {
            "id": "/prod",
            "groups": [
                {"id": "db", "apps": [{"id": "pg", **APP}]},
                {
                    "id": "web",
                    "dependencies": ["/prod/db"],
                    "apps": [{"id": "front", "dependencies": ["../db/pg"], **APP}],
                },
            ],
        }
        status, body = await call(client, "POST", "/v2/groups", group)
        assert status == 201
        d = shell.planner.deployments[body["deploymentId"]]
        steps = [[a["app"] for a in s] for s in d.steps]
        assert steps.index(["/prod/db/pg"]) < steps.index(["/prod/web/front"])
        _, body = await call(client, "GET", "/v2/apps/prod/web/front")
        assert body["app"]["dependencies"] == ["/prod/db/pg"]
        _, body = await call(client, "GET", "/v2/groups/prod/web")
        assert body["dependencies"] == ["/prod/db"]
        assert body["apps"][0]["dependencies"] == ["/prod/db/pg"]
        # RootGroup.applicationDependencies skips what does not resolve
        app = {"id": "/lonely", "dependencies": ["/nonexistent/app"], **APP}
        status, body = await call(client, "POST", "/v2/apps", app)
        assert status == 201 and body["dependencies"] == ["/nonexistent/app"]
        cyclic = {"id": "/prod/db/pg", "dependencies": ["/prod/web/front"], **APP}
        status, body = await call(client, "PUT", "/v2/apps/prod/db/pg?force=true", cyclic)
        assert status == 422
        assert body["details"] == [
            {"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}
        ]

    run(test)


def test_a_health_check_with_both_port_and_port_index_is_refused():
    async def test(client: TestClient, shell: Shell) -> None:
        hc = {"protocol": "HTTP", "path": "/", "port": 8080, "portIndex": 0}
        app = {"id": "/hc", "healthChecks": [hc], **APP}
        status, body = await call(client, "POST", "/v2/apps", app)
        assert status == 422
        assert body == {
            "message": "Object is not valid",
            "details": [
                {
                    "path": "/healthChecks(0)",
                    "errors": ["HealthCheck must specify either a port or a portIndex"],
                }
            ],
        }
        for fine in ({"port": 8080}, {"portIndex": 0}, {"port": None, "portIndex": 0}, {}):
            app = {"id": "/hc", "healthChecks": [{"protocol": "TCP", **fine}], **APP}
            assert (await call(client, "POST", "/v2/apps?force=true", app))[0] in (201, 409)

    run(test)


def test_task_kills_refuse_scale_with_wipe_and_malformed_ids():
    async def test(client: TestClient, shell: Shell) -> None:
        assert (await call(client, "POST", "/v2/apps", {"id": "/k", "instances": 2, **APP}))[0]
        ids = shell.launch("/k")
        assert len(ids) == 2
        shell.effects.clear()
        status, body = await call(
            client, "POST", "/v2/tasks/delete?scale=true&wipe=true", {"ids": ids}
        )
        assert (status, body) == (
            400,
            {"message": "You cannot use scale and wipe at the same time."},
        )
        for path in ("/v2/apps/k/tasks", f"/v2/apps/k/tasks/{ids[0]}"):
            status, body = await call(client, "DELETE", f"{path}?scale=true&wipe=true")
            assert status == 400, path
        status, body = await call(client, "POST", "/v2/tasks/delete", {"ids": [ids[0], "garbage"]})
        assert status == 400
        assert body["message"].startswith("Invalid task id 'garbage'.")
        assert shell.planner.apps["/k"]["instances"] == 2
        assert not any(i.killing for i in shell.planner.instances.values())
        # well-formed ids of no known task are skipped, as before
        unknown = "k.instance-6a3c39f2-0000-4000-8000-000000000000._app.1"
        status, body = await call(client, "POST", "/v2/tasks/delete", {"ids": [unknown]})
        assert (status, body) == (200, {"tasks": []})

    run(test)


def test_task_listing_ignores_unknown_status_values():
    async def test(client: TestClient, shell: Shell) -> None:
        await call(client, "POST", "/v2/apps", {"id": "/up", "instances": 2, **APP})
        running = shell.launch("/up")
        await call(client, "POST", "/v2/apps", {"id": "/stage", "instances": 1, **APP})
        staging = shell.launch("/stage", running=False)

        async def listed(query: str) -> set[str]:
            status, body = await call(client, "GET", f"/v2/tasks{query}")
            assert status == 200
            return {t["id"] for t in body["tasks"]}

        everything = set(running) | set(staging)
        assert await listed("") == everything
        assert await listed("?status=bogus") == everything
        assert await listed("?status=running") == set(running)
        assert await listed("?status=Staging") == set(staging)
        assert await listed("?status=running&status=bogus") == set(running)
        assert await listed("?status[]=running&status[]=staging") == everything

    run(test)


def test_task_lists_in_text_for_load_balancer_scripts():
    """``Accept: text/plain`` on /v2/tasks and /v2/apps/{id}/tasks gives Marathon's text list
    (EndpointsHelper.appsToEndpointString), which haproxy-marathon-bridge reads: per app and
    service port ``<id with _><TAB><port><TAB>`` and ``<host>:<port><TAB>`` per running
    task; an app without ports has a blank port and bare hosts. JSON stays the default."""

    async def test(client: TestClient, shell: Shell) -> None:
        two = {"portDefinitions": [{"port": 10001}, {"port": 10002, "name": "web"}]}
        await call(client, "POST", "/v2/apps", {"id": "/shop/web", "instances": 2, **two, **APP})
        running = shell.launch("/shop/web")
        await call(client, "POST", "/v2/apps", {"id": "/quiet", "portDefinitions": [], **APP})
        shell.launch("/quiet")
        await call(client, "POST", "/v2/apps", {"id": "/staged", **APP})
        shell.launch("/staged", running=False)
        service = shell.planner.apps["/staged"]["portDefinitions"][0]["port"]
        ports = [i.ports for i in shell.planner.app_instances("/shop/web")]
        assert {i.task_id for i in shell.planner.app_instances("/shop/web")} == set(running)

        async def text(path: str, accept: str = "text/plain") -> str:
            response = await client.get(path, headers={"Accept": accept})
            assert response.status == 200
            assert response.content_type == "text/plain"
            return await response.text()

        web = (
            f"shop_web\t10001\th1:{ports[0][0]}\th1:{ports[1][0]}\t\n"
            f"shop_web\t10002\th1:{ports[0][1]}\th1:{ports[1][1]}\t\n"
        )
        assert await text("/v2/tasks") == f"quiet\t \th1\t\n{web}staged\t{service}\t\n"
        assert await text("/v2/apps/shop/web/tasks") == web
        assert await text("/v2/apps/quiet/tasks", "text/plain, */*;q=0.5") == "quiet\t \th1\t\n"
        for accept in ("*/*", "application/json", "text/plain, application/json", ""):
            response = await client.get("/v2/tasks", headers={"Accept": accept})
            assert response.content_type == "application/json", accept
            assert len((await response.json())["tasks"]) == 4
        # a killed task leaves the list
        killed = shell.planner.app_instances("/shop/web")[0].task_id
        await call(client, "DELETE", f"/v2/apps/shop/web/tasks/{killed}")
        assert await text("/v2/apps/shop/web/tasks") == (
            f"shop_web\t10001\th1:{ports[1][0]}\t\nshop_web\t10002\th1:{ports[1][1]}\t\n"
        )

    run(test)


def test_a_groups_apps_are_listed():
    async def test(client: TestClient, shell: Shell) -> None:
        group = {
            "id": "/g",
            "apps": [{"id": "a", **APP}],
            "groups": [{"id": "sub", "apps": [{"id": "b", **APP}]}],
        }
        await call(client, "POST", "/v2/groups", group)
        await call(client, "POST", "/v2/apps", {"id": "/other", **APP})
        status, body = await call(client, "GET", "/v2/groups/g/apps")
        assert status == 200 and [a["id"] for a in body] == ["/g/a", "/g/sub/b"]
        _, body = await call(client, "GET", "/v2/groups/g/sub/apps")
        assert [a["id"] for a in body] == ["/g/sub/b"]
        _, body = await call(client, "GET", "/v2/groups/apps")
        assert [a["id"] for a in body] == ["/g/a", "/g/sub/b", "/other"]
        _, body = await call(client, "GET", "/v2/groups/g/apps?embed=group.apps.tasks")
        assert all(a["tasks"] == [] for a in body)
        assert await call(client, "GET", "/v2/groups/nope/apps") == (200, [])

    run(test)


class Standby(Shell):
    """A standby (``--zk``) whose leader is elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.zk = object()  # type: ignore[assignment]
        self.leading = False

    def leader_address(self) -> str | None:
        return "127.0.0.1:9"


def test_a_standby_answers_delete_v2_leader_as_marathon():
    # Marathon's LeaderResource: 404 "There is no leader" on an instance not leading.
    async def test(client: TestClient, shell: Shell) -> None:
        assert await call(client, "DELETE", "/v2/leader") == (
            404,
            {"message": "There is no leader"},
        )
        assert await call(client, "GET", "/v2/leader") == (200, {"leader": "127.0.0.1:9"})

    async def main() -> None:
        shell = Standby()
        async with TestClient(TestServer(Api(shell).app())) as client:  # type: ignore[arg-type]
            await test(client, shell)

    asyncio.run(main())


def test_a_standby_whose_leader_is_unreachable_answers_502():
    # Marathon's request forwarder: 502 "Connection to leader refused." (RequestForwarder).
    import argparse
    import socket

    from butte.frameworks.marathon.main import Service, add_flags

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--master", "127.0.0.1:1", "--hostname", "127.0.0.1"])

    async def main() -> None:
        service = Service(args)
        service.leader = f"127.0.0.1:{port}"
        try:
            async with TestClient(TestServer(Api(service).app())) as client:  # type: ignore[arg-type]
                status, body = await call(client, "GET", "/v2/apps")
                assert (status, body) == (502, {"message": "Connection to leader refused."})
        finally:
            if service._proxy_session is not None:
                await service._proxy_session.close()

    asyncio.run(main())


POD = {
    "id": "/db",
    "containers": [
        {
            "name": "a",
            "exec": {"command": {"shell": "sleep 600"}},
            "resources": {"cpus": 0.5, "mem": 64},
        }
    ],
    "scaling": {"kind": "fixed", "instances": 2},
}


def test_an_app_or_a_group_cannot_take_a_pods_id():
    # Apps, groups and pods share one tree of ids: an app /db beside a pod /db could be
    # named by neither's routes alone.
    async def test(client: TestClient, shell: Shell) -> None:
        assert (await call(client, "POST", "/v2/pods", POD))[0] == 201
        for method, path, body in [
            ("POST", "/v2/apps", {"id": "/db", **APP}),
            ("PUT", "/v2/apps/db", APP),
            ("PUT", "/v2/apps", [{"id": "/db", **APP}]),
            ("PUT", "/v2/groups", {"apps": [{"id": "db", **APP}]}),
        ]:
            status, answer = await call(client, method, path, body)
            assert status == 409, (method, path, answer)
            assert answer["message"] == "A pod with id [/db] already exists.", answer
        status, answer = await call(client, "POST", "/v2/groups", {"id": "/db"})
        assert status == 409, answer
        assert shell.planner.apps == {} and shell.planner.groups == {}
        assert (await call(client, "POST", "/v2/apps", {"id": "/db2", **APP}))[0] == 201

    run(test)


def test_pod_instances_are_killed_by_a_list_all_or_none():
    async def test(client: TestClient, shell: Shell) -> None:
        assert (await call(client, "POST", "/v2/pods", POD))[0] == 201
        shell.pods.subscribed("fw-1")
        shell.pods.tick(shell.now())
        shell.pods.offers([pod_offer(1), pod_offer(2)], shell.now())
        one, two = sorted(shell.pods.instances)
        path = "/v2/pods/db::instances"
        status, answer = await call(client, "DELETE", path, [one, "db.instance-nope"])
        assert status == 404 and "'db.instance-nope'" in answer["message"], answer
        assert not any(i.killing for i in shell.pods.instances.values())
        for bad in ({"ids": [one]}, [one, 7]):
            assert (await call(client, "DELETE", path, bad))[0] == 422
        status, answer = await call(client, "DELETE", path, [two, one, two])
        assert status == 200 and [i["id"] for i in answer] == [two, one], answer
        assert all(shell.pods.instances[i].killing for i in (one, two))
        assert (await call(client, "GET", path))[0] == 405

    run(test)
