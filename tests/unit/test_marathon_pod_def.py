"""Pod definitions (butte/frameworks/marathon/pods_def.py): validation into the canonical
form, refusal (422 naming the field) of what butte does not build, and the ExecutorInfo /
TaskGroupInfo of one instance."""

from __future__ import annotations

from typing import Any

import pytest

from butte.frameworks.marathon.appdef import Invalid
from butte.frameworks.marathon.pods_def import build_task_group, normalize_pod

BASE: dict[str, Any] = {
    "id": "/shop/web",
    "containers": [{"name": "main", "exec": {"command": {"shell": "sleep 600"}}}],
}


def _paths(raw: Any, **kw: Any) -> list[str]:
    with pytest.raises(Invalid) as e:
        normalize_pod(raw, **kw)
    return [d["path"] for d in e.value.details]


def test_a_minimal_pod_gets_marathons_defaults() -> None:
    pod = normalize_pod(BASE)
    assert pod["id"] == "/shop/web"
    (c,) = pod["containers"]
    assert c["resources"] == {"cpus": 1.0, "mem": 128.0, "disk": 0.0}
    assert c["exec"] == {"command": {"shell": "sleep 600"}}
    assert pod["executorResources"] == {"cpus": 0.1, "mem": 32.0, "disk": 10.0}
    assert pod["networks"] == [{"mode": "host"}]
    assert pod["scaling"] == {"kind": "fixed", "instances": 1}
    assert pod["scheduling"]["placement"]["acceptedResourceRoles"] == ["*"]
    assert pod["scheduling"]["killSelection"] == "YOUNGEST_FIRST"
    assert pod["scheduling"]["upgrade"] == {"minimumHealthCapacity": 1, "maximumOverCapacity": 1}
    unreachable = {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
    assert pod["scheduling"]["unreachableStrategy"] == unreachable
    # The canonical form is accepted again as it is (GET then PUT).
    assert normalize_pod({**pod, "version": "2026-01-01T00:00:00.000Z"}) == pod


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"secrets": {"s": {"source": "x"}}}, "/secrets"),
        ({"networks": [{"mode": "container", "name": "dcos"}]}, "/networks"),
        ({"fetch": [{"uri": "http://x/y"}]}, "/fetch"),
        ({"linuxInfo": {"seccomp": {}}}, "/linuxInfo"),
        ({"scaling": {"kind": "elastic"}}, "/scaling/kind"),
        ({"role": "other"}, "/role"),
        ({"colour": "red"}, "/colour"),
    ],
)
def test_what_butte_does_not_build_is_refused_naming_the_field(
    change: dict[str, Any], path: str
) -> None:
    assert path in _paths({**BASE, **change})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tty", True),
        ("colour", "red"),
    ],
)
def test_container_fields_butte_does_not_build_are_refused(field: str, value: Any) -> None:
    container = {**BASE["containers"][0], field: value}
    assert f"/containers/0/{field}" in _paths({**BASE, "containers": [container]})


def test_bad_definitions_name_every_offending_field() -> None:
    assert _paths([1]) == ["/"]
    assert _paths({"id": "/x"}) == ["/containers"]
    assert "/id" in _paths({**BASE, "id": "/Bad_Id"})
    assert "/id" in _paths({"containers": BASE["containers"]})
    two = [BASE["containers"][0], BASE["containers"][0]]
    assert "/containers/1/name" in _paths({**BASE, "containers": [*two]})
    no_cmd = {"name": "main"}
    assert "/containers/0/exec/command" in _paths({**BASE, "containers": [no_cmd]})
    big = {**BASE["containers"][0], "resources": {"cpus": -1, "mem": "x"}}
    assert {"/containers/0/resources/cpus", "/containers/0/resources/mem"} <= set(
        _paths({**BASE, "containers": [big]})
    )
    gpus = {**BASE["containers"][0], "resources": {"gpus": 1}}
    assert "/containers/0/resources/gpus" in _paths({**BASE, "containers": [gpus]})
    assert "/scaling/instances" in _paths({**BASE, "scaling": {"instances": 3, "maxInstances": 2}})
    assert "/scaling/instances" in _paths({**BASE, "scaling": {"instances": 10**400}})
    ep = {**BASE["containers"][0], "endpoints": [{"name": "a", "containerPort": 80}]}
    assert "/containers/0/endpoints/0/containerPort" in _paths({**BASE, "containers": [ep]})
    hc = {**BASE["containers"][0], "healthCheck": {"http": {"endpoint": "nope"}}}
    assert "/containers/0/healthCheck/http/endpoint" in _paths({**BASE, "containers": [hc]})
    # not a name at all (it was compared against the names as a set key: a TypeError, 500)
    hc = {**BASE["containers"][0], "healthCheck": {"tcp": {"endpoint": ["x"]}}}
    assert "/containers/0/healthCheck/tcp/endpoint" in _paths({**BASE, "containers": [hc]})
    fixed = [
        {**BASE["containers"][0], "name": n, "endpoints": [{"name": n, "hostPort": 8080}]}
        for n in ("a", "b")
    ]
    assert "/containers" in _paths({**BASE, "containers": fixed})
    assert "/id" in _paths(BASE, path_id="/other")
    for upgrade, path in [
        ({"minimumHealthCapacity": 1.5}, "/scheduling/upgrade/minimumHealthCapacity"),
        ({"maximumOverCapacity": "x"}, "/scheduling/upgrade/maximumOverCapacity"),
        ({"rolling": True}, "/scheduling/upgrade/rolling"),
        ([0.5], "/scheduling/upgrade"),
    ]:
        assert path in _paths({**BASE, "scheduling": {"upgrade": upgrade}}), upgrade
    for unreachable, path in [
        ({"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}, "/scheduling/unreachableStrategy"),
        ({"inactiveAfterSeconds": -1}, "/scheduling/unreachableStrategy/inactiveAfterSeconds"),
        ({"after": 1}, "/scheduling/unreachableStrategy/after"),
        ("enabled", "/scheduling/unreachableStrategy"),
    ]:
        raw = {**BASE, "scheduling": {"unreachableStrategy": unreachable}}
        assert path in _paths(raw), unreachable
    disabled = {**BASE, "scheduling": {"unreachableStrategy": "disabled"}}
    assert normalize_pod(disabled)["scheduling"]["unreachableStrategy"] == "disabled"


def test_users_artifacts_and_constraints_are_taken_in_marathons_form() -> None:
    container = {
        **BASE["containers"][0],
        "user": "root",
        "artifacts": [
            {"uri": "http://x/a.tgz"},
            {"uri": "http://x/run.sh", "executable": True, "destPath": "bin/run"},
        ],
    }
    rules = [["hostname", "UNIQUE"], {"fieldName": "rack", "operator": "GROUP_BY", "value": 2}]
    raw = {
        **BASE,
        "user": "nobody",
        "containers": [container, {**BASE["containers"][0], "name": "other"}],
        "scheduling": {"placement": {"constraints": rules}},
    }
    pod = normalize_pod(raw)
    assert pod["user"] == "nobody"
    main, other = pod["containers"]
    assert main["user"] == "root" and "user" not in other
    assert main["artifacts"] == [
        {"uri": "http://x/a.tgz", "executable": False, "extract": True, "cache": False},
        {
            "uri": "http://x/run.sh",
            "executable": True,
            "extract": True,
            "cache": False,
            "destPath": "bin/run",
        },
    ]
    assert "artifacts" not in other
    assert pod["scheduling"]["placement"]["constraints"] == [
        {"fieldName": "hostname", "operator": "UNIQUE"},
        {"fieldName": "rack", "operator": "GROUP_BY", "value": "2"},
    ]
    # The canonical form is accepted again as it is (GET then PUT).
    assert normalize_pod(pod) == pod
    # Nothing given: no new keys, so definitions stored before are the same config.
    assert "user" not in normalize_pod(BASE)
    bad = [
        ({"user": "no body"}, "/user"),
        ({"user": 7}, "/user"),
        ({"scheduling": {"placement": {"constraints": [["rack", "SOMETIMES"]]}}}, None),
        ({"scheduling": {"placement": {"constraints": "UNIQUE"}}}, None),
    ]
    for change, path in bad:
        paths = _paths({**BASE, **change})
        if path is None:
            assert paths[0].startswith("/scheduling/placement/constraints"), paths
        else:
            assert path in paths, change
    for artifacts, path in [
        ([{"uri": ""}], "/containers/0/artifacts/0"),
        ([{"uri": "http://x/y", "destPath": "/etc/passwd"}], "/containers/0/artifacts/0/destPath"),
        ([{"uri": "http://x/y", "destPath": "a/../../b"}], "/containers/0/artifacts/0/destPath"),
        ([{"uri": "http://x/y", "extract": "yes"}], "/containers/0/artifacts/0/extract"),
        ([{"uri": "http://x/y", "outputFile": "y"}], "/containers/0/artifacts/0/outputFile"),
        ({"uri": "http://x/y"}, "/containers/0/artifacts"),
    ]:
        c = {**BASE["containers"][0], "artifacts": artifacts}
        assert path in _paths({**BASE, "containers": [c]}), artifacts
    c = {**BASE["containers"][0], "user": "a b"}
    assert "/containers/0/user" in _paths({**BASE, "containers": [c]})


def test_members_fetch_their_artifacts_and_run_as_their_user_or_the_pods() -> None:
    raw = {
        **BASE,
        "user": "nobody",
        "containers": [
            {
                **BASE["containers"][0],
                "artifacts": [{"uri": "http://x/run.sh", "executable": True, "destPath": "r"}],
            },
            {**BASE["containers"][0], "name": "admin", "user": "root"},
        ],
    }
    pod = {**normalize_pod(raw), "version": "2026-12-05T10:00:00.000Z"}
    _, (main, admin) = build_task_group(pod, "shop_web.instance-1", "fw", "ag", "h", [], {}, {})
    assert main["command"]["user"] == "nobody" and admin["command"]["user"] == "root"
    assert main["command"]["uris"] == [
        {
            "value": "http://x/run.sh",
            "executable": True,
            "extract": True,
            "cache": False,
            "output_file": "r",
        }
    ]
    assert "uris" not in admin["command"]
    _, (plain,) = build_task_group(
        {**normalize_pod(BASE), "version": pod["version"]},
        "i.instance-1",
        "f",
        "a",
        "h",
        [],
        {},
        {},
    )
    assert "user" not in plain["command"] and "uris" not in plain["command"]


def test_volumes_are_shared_by_the_members_that_mount_them() -> None:
    raw = {
        **BASE,
        "volumes": [
            {"name": "scratch"},
            {"name": "logs", "host": "/var/log"},
            {"name": "rel", "host": "r"},
        ],
        "containers": [
            {
                **BASE["containers"][0],
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "data"},
                    {"name": "logs", "mountPath": "logs", "readOnly": True},
                ],
            },
            {
                **BASE["containers"][0],
                "name": "side",
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "in"},
                    {"name": "rel", "mountPath": "r"},
                ],
            },
            {**BASE["containers"][0], "name": "plain"},
        ],
    }
    pod = normalize_pod(raw)
    assert pod["volumes"] == [
        {"name": "scratch"},
        {"name": "logs", "host": "/var/log"},
        {"name": "rel", "host": "r"},
    ]
    assert pod["containers"][0]["volumeMounts"][1] == {
        "name": "logs",
        "mountPath": "logs",
        "readOnly": True,
    }
    assert "volumeMounts" not in pod["containers"][2]
    assert normalize_pod(pod) == pod
    pod["version"] = "2026-12-05T10:00:00.000Z"
    executor, (main, side, plain) = build_task_group(pod, "i.instance-1", "f", "a", "h", [], {}, {})
    # The executor makes each ephemeral volume in its sandbox; members mount it from there.
    assert executor["container"] == {
        "type": "MESOS",
        "volumes": [
            {
                "container_path": "volumes/scratch",
                "mode": "RW",
                "source": {
                    "type": "SANDBOX_PATH",
                    "sandbox_path": {"type": "SELF", "path": "volumes/scratch"},
                },
            }
        ],
    }
    shared = {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "volumes/scratch"}}
    assert main["container"]["volumes"] == [
        {"container_path": "data", "mode": "RW", "source": shared},
        {
            "container_path": "logs",
            "mode": "RO",
            "source": {"type": "HOST_PATH", "host_path": {"path": "/var/log"}},
        },
    ]
    assert side["container"]["volumes"] == [
        {"container_path": "in", "mode": "RW", "source": shared},
        {
            "container_path": "r",
            "mode": "RW",
            "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "r"}},
        },
    ]
    assert "container" not in plain
    _, (alone,) = build_task_group(
        {**normalize_pod(BASE), "version": pod["version"]},
        "i.instance-1",
        "f",
        "a",
        "h",
        [],
        {},
        {},
    )
    assert "container" not in alone
    mount = {"name": "nope", "mountPath": "x"}
    for volumes, mounts, path in [
        ([], [mount], "/containers/0/volumeMounts/0/name"),
        (
            [{"name": "v"}],
            [{"name": "v", "mountPath": "/abs"}],
            "/containers/0/volumeMounts/0/mountPath",
        ),
        (
            [{"name": "v"}],
            [{"name": "v", "mountPath": "a/../../b"}],
            "/containers/0/volumeMounts/0/mountPath",
        ),
        (
            [{"name": "v"}],
            [{"name": "v", "mountPath": "x", "readOnly": "no"}],
            "/containers/0/volumeMounts/0/readOnly",
        ),
        (
            [{"name": "v"}],
            [{"name": "v", "mountPath": "x", "size": 1}],
            "/containers/0/volumeMounts/0/size",
        ),
        ([{"name": "v"}, {"name": "v"}], [], "/volumes/1/name"),
        ([{"name": "V"}], [], "/volumes/0/name"),
        ([{"name": "v", "host": "../etc"}], [], "/volumes/0/host"),
        ([{"name": "v", "colour": 1}], [], "/volumes/0/colour"),
        ({"name": "v"}, [], "/volumes"),
    ]:
        c = {**BASE["containers"][0], "volumeMounts": mounts}
        assert path in _paths({**BASE, "volumes": volumes, "containers": [c]}), (volumes, mounts)


def test_a_container_in_an_image_runs_its_entrypoint_or_its_command() -> None:
    def container(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "image": {"kind": "DOCKER", "id": "svc:1"}, **fields}

    raw = {
        **BASE,
        "containers": [
            container("plain"),
            container("args", exec={"command": {"argv": ["-c", "x"]}}),
            container(
                "own",
                exec={"command": {"argv": ["/bin/app", "-v"]}, "overrideEntrypoint": True},
            ),
            {**container("shell", exec={"command": {"shell": "echo hi"}})},
            container("fresh", image={"kind": "DOCKER", "id": "svc:1", "forcePull": True}),
        ],
    }
    pod = normalize_pod(raw)
    assert "exec" not in pod["containers"][0]
    assert pod["containers"][0]["image"] == {"kind": "DOCKER", "id": "svc:1"}
    assert normalize_pod(pod) == pod
    pod["version"] = "2026-12-05T10:00:00.000Z"
    _, tasks = build_task_group(pod, "i.instance-1", "f", "a", "h", [], {}, {})
    plain, args, own, shell, fresh = tasks
    image = {"type": "DOCKER", "docker": {"name": "svc:1"}}
    assert plain["container"] == {"type": "MESOS", "mesos": {"image": image}}
    assert plain["command"]["shell"] is False and "value" not in plain["command"]
    assert args["command"]["arguments"] == ["-c", "x"] and "value" not in args["command"]
    assert own["command"]["value"] == "/bin/app"
    assert own["command"]["arguments"] == ["/bin/app", "-v"]
    assert shell["command"]["shell"] is True and shell["command"]["value"] == "echo hi"
    assert fresh["container"]["mesos"]["image"]["cached"] is False
    for image_raw, path in [
        ({"kind": "APPC", "id": "svc"}, "/containers/0/image/kind"),
        ({"kind": "DOCKER", "id": "../x"}, "/containers/0/image/id"),
        ({"kind": "DOCKER"}, "/containers/0/image/id"),
        ({"kind": "DOCKER", "id": "x", "forcePull": "yes"}, "/containers/0/image/forcePull"),
        ({"kind": "DOCKER", "id": "x", "labels": {"os": "linux"}}, "/containers/0/image/labels"),
        ("busybox", "/containers/0/image"),
    ]:
        assert path in _paths({**BASE, "containers": [container("c", image=image_raw)]}), image_raw
    no_image = {
        **BASE["containers"][0],
        "exec": {"command": {"shell": "x"}, "overrideEntrypoint": True},
    }
    assert "/containers/0/exec/overrideEntrypoint" in _paths({**BASE, "containers": [no_image]})
    shell_kept = container("c", exec={"command": {"shell": "x"}, "overrideEntrypoint": False})
    assert "/containers/0/exec/overrideEntrypoint" in _paths({**BASE, "containers": [shell_kept]})
    assert "/containers/0/exec/command" in _paths({**BASE, "containers": [{"name": "c"}]})


def _pod() -> dict[str, Any]:
    raw = {
        "id": "/shop/web",
        "labels": {"team": "shop"},
        "environment": {"A": "pod", "B": "pod"},
        "containers": [
            {
                "name": "web",
                "exec": {"command": {"shell": "serve"}},
                "resources": {"cpus": 0.5, "mem": 64},
                "environment": {"B": "container"},
                "endpoints": [{"name": "http-api", "hostPort": 0}],
                "healthCheck": {"http": {"endpoint": "http-api", "path": "/ok"}},
                "lifecycle": {"killGracePeriodSeconds": 3},
            },
            {
                "name": "side",
                "exec": {"command": {"argv": ["sleep", "600"]}},
                "resources": {"cpus": 0.1, "mem": 16},
                "labels": {"role": "side"},
            },
        ],
    }
    return {**normalize_pod(raw), "version": "2026-12-05T10:00:00.000Z"}


def test_the_task_group_of_an_instance_is_marathons() -> None:
    instance = "shop_web.instance-1234"
    scalar = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*"}]
    port = {
        "name": "ports",
        "type": "RANGES",
        "ranges": {"range": [{"begin": 31005, "end": 31005}]},
    }
    executor, tasks = build_task_group(
        _pod(),
        instance,
        "fw-1",
        "agent-1",
        "host-a",
        [*scalar, port],
        {"web": scalar, "side": scalar},
        {"http-api": 31005},
    )
    assert executor["type"] == "DEFAULT"
    assert executor["executor_id"] == {"value": "instance-shop_web.1234"}
    assert executor["framework_id"] == {"value": "fw-1"}
    assert executor["resources"] == [*scalar, port]
    assert executor["labels"] == {"labels": [{"key": "team", "value": "shop"}]}
    web, side = tasks
    assert web["task_id"] == {"value": f"{instance}.web"} and web["name"] == "web"
    assert side["task_id"] == {"value": f"{instance}.side"}
    assert web["agent_id"] == {"value": "agent-1"} and web["resources"] == scalar
    assert "executor" not in web
    assert web["command"]["shell"] is True and web["command"]["value"] == "serve"
    assert side["command"]["shell"] is False
    assert side["command"]["arguments"] == ["sleep", "600"]
    env = {v["name"]: v["value"] for v in web["command"]["environment"]["variables"]}
    assert env["A"] == "pod" and env["B"] == "container"  # the container's wins
    assert env["HOST"] == "host-a"
    assert env["MESOS_TASK_ID"] == f"{instance}.web"
    assert env["MARATHON_APP_ID"] == "/shop/web"
    assert env["MARATHON_APP_VERSION"] == "2026-12-05T10:00:00.000Z"
    assert env["MARATHON_CONTAINER_ID"] == "web"
    assert env["ENDPOINT_HTTP_API"] == "31005" and env["EP_HOST_HTTP_API"] == "31005"
    assert env["MARATHON_APP_LABEL_TEAM"] == "shop"
    assert web["health_check"]["type"] == "HTTP"
    assert web["health_check"]["http"] == {"port": 31005, "path": "/ok", "scheme": "http"}
    assert web["kill_policy"] == {"grace_period": {"nanoseconds": 3_000_000_000}}
    assert side["labels"] == {"labels": [{"key": "role", "value": "side"}]}
    assert "health_check" not in side
