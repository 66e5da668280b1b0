"""Marathon apps on Docker's bridge network with port mappings, pure: the two definition
formats (Marathon 1.4's ``container.docker.portMappings`` with ``docker.network: BRIDGE``,
1.5's ``container.portMappings`` with ``networks: [{"mode": "container/bridge"}]``) and their
canonical form, what stays refused, the host ports an offer gives, the TaskInfo built
(container, port resources, environment, discovery), service ports, and the REST answers."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from butte.frameworks.marathon import appdef
from butte.frameworks.marathon.appdef import Invalid, config_of, merge_update, normalize_app
from butte.frameworks.marathon.launch import Pool, task_info
from butte.frameworks.marathon.model import Instance, Probe
from tests.unit.test_marathon_api import Shell, call, run
from tests.unit.test_marathon_planner import World, offer

IMAGE = "nginx:1.25"
MAPPINGS = [
    {"containerPort": 80, "hostPort": 0, "servicePort": 0, "protocol": "tcp", "name": "http"},
    {"containerPort": 0, "hostPort": 31555, "protocol": "udp,tcp", "labels": {"VIP_0": "/x:53"}},
]


def v14(**fields: Any) -> dict[str, Any]:
    """An app in Marathon 1.4's form."""
    docker = {"image": IMAGE, "network": "BRIDGE", "portMappings": MAPPINGS}
    return {
        "id": "/web",
        "cpus": 0.5,
        "mem": 64,
        "container": {"type": "DOCKER", "docker": docker},
        **fields,
    }


def v15(**fields: Any) -> dict[str, Any]:
    """The same app in Marathon 1.5's form."""
    return {
        "id": "/web",
        "cpus": 0.5,
        "mem": 64,
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": MAPPINGS},
        **fields,
    }


CANONICAL_MAPPINGS = [
    {
        "containerPort": 80,
        "hostPort": 0,
        "servicePort": 0,
        "protocol": "tcp",
        "labels": {},
        "name": "http",
    },
    {
        "containerPort": 0,
        "hostPort": 31555,
        "servicePort": 0,
        "protocol": "udp,tcp",
        "labels": {"VIP_0": "/x:53"},
    },
]


def test_both_formats_give_marathons_canonical_form() -> None:
    old, new = normalize_app(v14()), normalize_app(v15())
    assert old == new
    assert new["networks"] == [{"mode": "container/bridge"}]
    assert new["container"] == {
        "type": "DOCKER",
        "docker": {"image": IMAGE, "parameters": [], "forcePullImage": False, "privileged": False},
        "volumes": [],
        "portMappings": CANONICAL_MAPPINGS,
    }
    assert new["requirePorts"] is False
    # rendered as Marathon 1.5+ renders a bridged app: no portDefinitions, no docker.network
    shown = appdef.render_app(new)
    assert "portDefinitions" not in shown and "network" not in shown["container"]["docker"]
    # what GET shows can be sent back as it is, and a scale keeps everything
    assert normalize_app(shown) == new
    assert normalize_app(merge_update(new, {"instances": 3})) == {**new, "instances": 3}
    # nulls (marathon-python with minimal=False) are the defaults
    nulls = {
        "containerPort": 8080,
        "hostPort": None,
        "servicePort": None,
        "name": None,
        "labels": None,
    }
    one = normalize_app(
        v15(container={"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": [nulls]})
    )
    assert one["container"]["portMappings"] == [
        {"containerPort": 8080, "hostPort": 0, "servicePort": 0, "protocol": "tcp", "labels": {}}
    ]


def test_a_bridged_app_without_port_mappings_gets_marathons_default_ones() -> None:
    bare = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "BRIDGE"}}
    default = {
        "containerPort": 0,
        "hostPort": 0,
        "servicePort": 0,
        "protocol": "tcp",
        "labels": {},
        "name": "default",
    }
    assert normalize_app({"id": "/a", "container": bare})["container"]["portMappings"] == [default]
    # port definitions beyond the mappings become empty mappings, the definitions go
    spec = normalize_app({"id": "/a", "container": bare, "portDefinitions": [{"port": 0}] * 3})
    unnamed = {k: v for k, v in default.items() if k != "name"}
    assert spec["container"]["portMappings"] == [default, unnamed, unnamed]
    assert spec["portDefinitions"] == []
    # an explicit empty list: no ports at all, as in Marathon
    none = {"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": []}
    spec = normalize_app(
        {"id": "/a", "networks": [{"mode": "container/bridge"}], "container": none}
    )
    assert spec["container"]["portMappings"] == []


def test_updates_switch_between_the_network_apis_as_marathon_applies_them() -> None:
    bridged = normalize_app(v15())
    # a 1.4 container naming HOST replaces the networks (and has no mappings)
    host = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "HOST"}}
    spec = normalize_app(merge_update(bridged, {"container": host}))
    assert "networks" not in spec and spec["container"]["docker"]["network"] == "HOST"
    # networks alone: the current container's network and mappings give way
    back = normalize_app(merge_update(spec, {"networks": [{"mode": "container/bridge"}]}))
    assert back["networks"] == [{"mode": "container/bridge"}]
    assert [m["name"] for m in back["container"]["portMappings"]] == ["default"]
    spec = normalize_app(merge_update(bridged, {"networks": [{"mode": "host"}]}))
    assert spec["container"]["docker"]["network"] == "HOST"
    assert "portMappings" not in spec["container"] and "networks" not in spec


REFUSED = [
    (
        {"networks": [{"mode": "container", "name": "dcos"}]},
        "/networks(0)/mode",
        "container networks (IP-per-task on a named network) are not supported",
    ),
    ({"networks": [{"name": "dcos"}]}, "/networks(0)/mode", "container networks"),
    (
        {"networks": [{"mode": "container/bridge"}, {"mode": "host"}]},
        "/networks",
        "May specify a single host network",
    ),
    ({"networks": [{"mode": "container/bridge", "name": "x"}]}, "/networks(0)/name", "may not"),
    ({"networks": "bridge"}, "/networks", "must be a list"),
    ({"networks": [{"mode": "overlay"}]}, "/networks(0)/mode", "must be one of"),
    (
        {"container": {"type": "DOCKER", "docker": {"image": IMAGE, "network": "USER"}}},
        "/container/docker/network",
        "USER networks",
    ),
    (
        {
            "networks": [{"mode": "container/bridge"}],
            "container": {"type": "DOCKER", "docker": {"image": IMAGE, "network": "BRIDGE"}},
        },
        "/networks",
        "must not specify both container.docker.network and networks",
    ),
    (
        {
            "networks": [{"mode": "container/bridge"}],
            "container": {"type": "MESOS", "docker": {"image": IMAGE}, "portMappings": MAPPINGS},
        },
        "/container/type",
        "container/bridge networking needs a DOCKER container",
    ),
    (
        {"networks": [{"mode": "container/bridge"}], "cmd": "sleep 1", "container": None},
        "/networks",
        "container/bridge networking needs a DOCKER container",
    ),
    (
        {"container": {"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": MAPPINGS}},
        "/container/portMappings",
        "portMappings are not allowed with host-networking",
    ),
    (
        {"container": {"type": "MESOS", "portMappings": MAPPINGS}},
        "/container/portMappings",
        "portMappings are not allowed with host-networking",
    ),
    (
        {
            "container": {
                "type": "DOCKER",
                "docker": {"image": IMAGE, "network": "HOST", "portMappings": MAPPINGS},
            }
        },
        "/container/docker/portMappings",
        "portMappings are not allowed with host-networking",
    ),
    (
        {
            "networks": [{"mode": "container/bridge"}],
            "container": {
                "type": "DOCKER",
                "docker": {"image": IMAGE, "portMappings": MAPPINGS},
                "portMappings": MAPPINGS,
            },
        },
        "/container/portMappings",
        "cannot specify both portMappings and docker.portMappings",
    ),
]


def bridged_with(*mappings: dict[str, Any]) -> dict[str, Any]:
    return v15(
        container={"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": list(mappings)}
    )


REFUSED += [
    (
        bridged_with({"containerPort": 80, "protocol": "sctp"}),
        "/container/portMappings(0)/protocol",
        "must be tcp",
    ),
    (bridged_with({"containerPort": "80"}), "/container/portMappings(0)/containerPort", "integer"),
    (
        bridged_with({"hostPort": 70000}),
        "/container/portMappings(0)/hostPort",
        "between 0 and 65535",
    ),
    (bridged_with({"servicePort": -1}), "/container/portMappings(0)/servicePort", "between"),
    (bridged_with({"name": "Web"}), "/container/portMappings(0)/name", "[a-z0-9-]+"),
    (bridged_with({"networkNames": ["a"]}), "/container/portMappings(0)/networkNames", "named"),
    (bridged_with({"hostPortz": 1}), "/container/portMappings(0)/hostPortz", "unknown field"),
    (bridged_with({"labels": {"a": 1}}), "/container/portMappings(0)/labels/a", "string"),
    (bridged_with("80"), "/container/portMappings(0)", "must be an object"),  # type: ignore[arg-type]
    (
        bridged_with({"name": "a"}, {"name": "a"}),
        "/container/portMappings",
        "Port names must be unique.",
    ),
    (
        bridged_with({"hostPort": 31001}, {"hostPort": 31001}),
        "/container/portMappings",
        "host ports must be unique",
    ),
    (
        v15(container={"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": {"a": 1}}),
        "/container/portMappings",
        "must be a list",
    ),
]


@pytest.mark.parametrize(("fields", "path", "words"), REFUSED)
def test_what_butte_does_not_run_is_refused_naming_the_field(
    fields: dict[str, Any], path: str, words: str
) -> None:
    raw = {"id": "/x", "cpus": 0.1, "mem": 16, **fields}
    raw.setdefault("container", {"type": "DOCKER", "docker": {"image": IMAGE}})
    with pytest.raises(Invalid) as e:
        normalize_app(raw)
    errors = {d["path"]: d["errors"] for d in e.value.details}
    assert path in errors, e.value.details
    assert any(words in m for m in errors[path]), errors[path]


def instance(ports: list[int], host: str = "h1") -> Instance:
    return Instance("web.1", "/web", "v1", "v1", "a1", host, "10.0.0.1", {}, ports, 0.0)


def test_host_ports_come_from_the_offer_any_for_zero_the_given_one_else() -> None:
    spec = normalize_app(v15())
    for seed in range(20):
        pool = Pool(offer(ports=(31550, 31560)), random.Random(seed))
        taken = pool.take(spec)
        assert taken is not None
        resources, ports = taken
        assert ports[1] == 31555 and 31550 <= ports[0] <= 31560 and ports[0] != 31555
        assert [r["ranges"] for r in resources if r["name"] == "ports"] == [
            {"range": [{"begin": p, "end": p}]} for p in ports
        ]
    # the fixed host port is not offered: no launch, for want of ports
    pool = Pool(offer(ports=(31000, 31100)), random.Random(1))
    assert pool.take(spec) is None and pool.reasons == ["InsufficientPorts"]
    # an offer with a single port: the fixed one cannot also be the random one
    pool = Pool(offer(ports=(31555, 31555)), random.Random(1))
    assert pool.take(spec) is None


def test_the_taskinfo_of_a_bridged_instance_is_marathons() -> None:
    spec = normalize_app(v14(env={"OWN": "x"}))
    task = task_info(spec, instance([31234, 31555]), [])
    docker = task["container"]["docker"]
    assert task["container"]["type"] == "DOCKER"
    assert docker["network"] == "BRIDGE" and docker["image"] == IMAGE
    # bound to the host ports; container port 0 is the host port; udp,tcp maps both
    assert docker["port_mappings"] == [
        {"host_port": 31234, "container_port": 80, "protocol": "tcp"},
        {"host_port": 31555, "container_port": 31555, "protocol": "udp"},
        {"host_port": 31555, "container_port": 31555, "protocol": "tcp"},
    ]
    env = {v["name"]: v["value"] for v in task["command"]["environment"]["variables"]}
    assert {k: env[k] for k in env if k.startswith("PORT") or k in ("HOST", "OWN")} == {
        "PORT0": "31234",
        "PORT1": "31555",
        "PORT": "31234",
        "PORTS": "31234,31555",
        "PORT_80": "31234",  # named by the container port
        "PORT_31555": "31555",  # container port 0: named by the host port
        "PORT_HTTP": "31234",
        "HOST": "h1",
        "OWN": "x",
    }
    assert env["MARATHON_APP_DOCKER_IMAGE"] == IMAGE
    # shell command with the image: as before
    assert task["discovery"]["ports"]["ports"] == [
        {
            "number": 31234,
            "protocol": "tcp",
            "name": "http",
            "labels": {"labels": [{"key": "network-scope", "value": "host"}]},
        },
        {
            "number": 31555,
            "protocol": "udp",
            "labels": {
                "labels": [
                    {"key": "VIP_0", "value": "/x:53"},
                    {"key": "network-scope", "value": "host"},
                ]
            },
        },
        {
            "number": 31555,
            "protocol": "tcp",
            "labels": {
                "labels": [
                    {"key": "VIP_0", "value": "/x:53"},
                    {"key": "network-scope", "value": "host"},
                ]
            },
        },
    ]
    assert "health_check" not in task


def test_a_host_networked_docker_app_keeps_its_container_and_gets_the_image_variable() -> None:
    host = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "HOST"}}
    spec = normalize_app({"id": "/web", "container": host, "portDefinitions": [{"port": 10007}]})
    task = task_info(spec, instance([31001]), [])
    assert task["container"]["docker"]["network"] == "HOST"
    assert "port_mappings" not in task["container"]["docker"]
    env = {v["name"]: v["value"] for v in task["command"]["environment"]["variables"]}
    assert env["MARATHON_APP_DOCKER_IMAGE"] == IMAGE and env["PORT_10007"] == "31001"
    # networks: host in 1.5's form is the same app
    same = normalize_app(
        {
            "id": "/web",
            "networks": [{"mode": "host"}],
            "container": {"type": "DOCKER", "docker": {"image": IMAGE}},
            "portDefinitions": [{"port": 10007}],
        }
    )
    assert same == spec


def test_service_ports_of_port_mappings_are_assigned_and_kept() -> None:
    w = World()
    w.p.deploy({"/other": normalize_app({"id": "/other", "cmd": "c", "ports": [0]})}, w.now)
    w.p.deploy({"/web": normalize_app(v15())}, w.now)
    mappings = w.p.apps["/web"]["container"]["portMappings"]
    assert [m["servicePort"] for m in mappings] == [10001, 10002]
    again = normalize_app(v15(instances=2, cmd="sleep 5"))
    w.p.deploy({"/web": again}, w.now, force=True)
    assert [m["servicePort"] for m in w.p.apps["/web"]["container"]["portMappings"]] == [
        10001,
        10002,
    ]
    fixed = [{**MAPPINGS[0], "servicePort": 10500}]
    w.p.deploy(
        {
            "/fixed": normalize_app(
                {
                    **v15(),
                    "id": "/fixed",
                    "container": {**v15()["container"], "portMappings": fixed},
                }
            )
        },
        w.now,
    )
    assert w.p.apps["/fixed"]["container"]["portMappings"][0]["servicePort"] == 10500


def test_a_bridged_app_launches_runs_and_is_checked_for_readiness_on_its_host_port() -> None:
    w = World()
    check = {"portName": "http", "path": "/ready", "intervalSeconds": 5, "timeoutSeconds": 1}
    w.p.deploy({"/web": normalize_app(v15(readinessChecks=[check]))}, w.now)
    [launch] = w.offer(offer(ports=(31500, 31600)))
    [task] = launch.tasks
    ports = [pm["host_port"] for pm in task["container"]["docker"]["port_mappings"]]
    assert ports[1:] == [31555, 31555]
    w.run_all([launch])
    [probe] = [e for e in w.step() if isinstance(e, Probe)]
    assert probe.url == f"http://h1:{ports[0]}/ready"
    [shown] = w.p.app_json("/web", {"tasks"})["tasks"]
    assert shown["ports"] == [ports[0], 31555]
    assert shown["servicePorts"] == [10000, 10001]


def test_the_rest_api_takes_renders_and_refuses_bridged_apps() -> None:
    async def test(client: TestClient, shell: Shell) -> None:
        status, body = await call(client, "POST", "/v2/apps", v14())
        assert status == 201, body
        assert body["networks"] == [{"mode": "container/bridge"}]
        assert "portDefinitions" not in body
        assert [m["servicePort"] for m in body["container"]["portMappings"]] == [10000, 10001]
        shell.launch("/web")
        status, body = await call(client, "GET", "/v2/apps/web")
        app = body["app"]
        assert "portDefinitions" not in app and "network" not in app["container"]["docker"]
        [task] = app["tasks"]
        assert task["ports"][1] == 31555 and task["servicePorts"] == [10000, 10001]
        status, body = await call(client, "GET", f"/v2/apps/web/versions/{app['version']}")
        assert "portDefinitions" not in body and body["networks"] == app["networks"]
        # the text list for load balancers: service port, host:host port
        response = await client.get("/v2/apps/web/tasks", headers={"Accept": "text/plain"})
        assert await response.text() == (
            f"web\t10000\th1:{task['ports'][0]}\t\nweb\t10001\th1:31555\t\n"
        )
        # what GET showed goes back in a PUT unchanged: the same definition
        before = config_of(shell.planner.apps["/web"])
        status, body = await call(client, "PUT", "/v2/apps/web", app)
        assert status == 200, body
        assert config_of(shell.planner.apps["/web"]) == before
        status, body = await call(
            client,
            "POST",
            "/v2/apps",
            {**v15(), "id": "/ip", "networks": [{"mode": "container", "name": "dcos"}]},
        )
        assert status == 422
        assert body["message"] == "Object is not valid"
        assert body["details"][0]["path"] == "/networks(0)/mode"

    run(test)


@pytest.mark.parametrize(
    "fields",
    [
        {"networks": [{"mode": 5}]},
        {"networks": [{"mode": ["container/bridge"]}]},
        {"networks": ["container/bridge"]},
        {"networks": {"mode": "container/bridge"}},
        {"networks": [{"mode": "container/bridge"}], "portDefinitions": 5},
        {"networks": [{"mode": "container/bridge"}], "ports": "abc"},
        bridged_with({"protocol": ["tcp"]}),
        bridged_with({"containerPort": True}),
        bridged_with({"hostPort": 10**30}),
        bridged_with({"containerPort": 1.5}),
        bridged_with({"labels": "x"}),
        bridged_with({"name": 5}),
        v15(container={"type": "DOCKER", "docker": "nginx", "portMappings": MAPPINGS}),
        v15(container=[1]),
    ],
)
def test_malformed_networking_is_a_422_never_a_crash(fields: dict[str, Any]) -> None:
    raw = {"id": "/x", "cpus": 0.1, "mem": 16, **fields}
    raw.setdefault("container", {"type": "DOCKER", "docker": {"image": IMAGE}})
    with pytest.raises(Invalid):
        normalize_app(raw)
    # and as an update of a bridged app
    current = normalize_app(v15())
    with pytest.raises(Invalid):
        normalize_app(merge_update(current, fields))
