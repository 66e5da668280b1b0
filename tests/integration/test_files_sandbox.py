"""Sandbox files of a real agent (``/files/*``) and through the master, with a task that
plants symlinks out of its sandbox: every escape is refused and both daemons keep serving."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from operator_kit import call, cluster_with_jobs, wait_for, wait_task

from butte.testing.cluster import daemons_missing
from butte.testing.require import require

pytestmark = pytest.mark.integration

HOSTILE = (
    "ln -s /etc/passwd passwd; ln -s ../../../../../.. up; mkdir -p d; echo inner > d/f; "
    "ln -s d/f ok-link; printf 'line1\\nline2\\n'; sleep 600"
)
NEIGHBOUR = "echo neighbour-secret; sleep 600"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("files")
    jobs = {"hostile": HOSTILE, "neighbour": NEIGHBOUR}
    with cluster_with_jobs(tmp, jobs, running=tuple(jobs)) as (cluster, _):
        master, agent = cluster.master_url, cluster.agents[0].url
        hostile = wait_task(master, "hostile", "TASK_RUNNING")
        neighbour = wait_task(master, "neighbour", "TASK_RUNNING")
        state = requests.get(agent + "/state", timeout=5).json()
        directories = {
            ex["id"]: ex["directory"] for fw in state["frameworks"] for ex in fw["executors"]
        }
        virtual = (
            f"/frameworks/{hostile['framework_id']['value']}/executors/"
            f"{hostile['task_id']['value']}/runs/latest"
        )
        # The links exist once the task printed (it does so after making them).
        wait_for(
            lambda: (
                "line2"
                in requests.get(
                    agent + "/files/read",
                    params={"path": virtual + "/stdout", "offset": 0},
                    timeout=5,
                ).text
            ),
            what="hostile task set up",
        )
        yield {
            "master": master,
            "agent": agent,
            "virtual": virtual,
            "real": directories[hostile["task_id"]["value"]],
            "neighbour_real": directories[neighbour["task_id"]["value"]],
            "via_master": f"/slaves/{hostile['agent_id']['value']}{virtual}",
        }


def get(base: str, op: str, **params) -> requests.Response:
    return requests.get(f"{base}/files/{op}", params=params, timeout=5)


def test_virtual_and_real_paths_browse_the_sandbox(env):
    for base, path in (
        (env["agent"], env["virtual"]),
        (env["agent"], env["real"]),
        (env["master"], env["via_master"]),
        (env["master"], env["real"]),
        (env["master"], env["virtual"]),
    ):
        response = get(base, "browse", path=path)
        assert response.status_code == 200, (base, path, response.text)
        names = {e["path"].rsplit("/", 1)[-1] for e in response.json()}
        assert {"stdout", "stderr", "d", "passwd", "up"} <= names


def test_reading_with_offsets_and_lengths(env):
    agent, path = env["agent"], env["virtual"] + "/stdout"
    whole = {"data": "line1\nline2\n", "offset": 0}
    assert get(agent, "read", path=path, offset=0).json() == whole
    assert get(agent, "read", path=path, offset=6, length=5).json()["data"] == "line2"
    assert get(agent, "read", path=path, offset=-1).json() == {"data": "", "offset": 12}
    # Without an offset, as with -1 (Mesos): the size only.
    assert get(agent, "read", path=path).json() == {"data": "", "offset": 12}
    assert get(agent, "read", path=path, offset=10**12).json()["data"] == ""
    assert get(agent, "read", path=path, offset=0, length=10**12).json() == whole
    link = env["virtual"] + "/ok-link"
    assert get(agent, "read", path=link, offset=0).json()["data"] == "inner\n"
    assert get(agent, "download", path=path).content == b"line1\nline2\n"
    for params in (
        {"offset": "abc"},
        {"offset": -7},
        {"length": -5},
        {"length": "1e9"},
        {"offset": 2**70},
        {"offset": ""},  # Mesos: "Failed to parse offset"
        {"length": ""},
    ):
        response = get(agent, "read", path=path, **params)
        assert response.status_code == 400, params


@pytest.mark.parametrize(
    ("suffix", "status"),
    [
        ("/passwd", 403),
        ("/up/etc/passwd", 403),
        ("/../../../../../../etc/passwd", 400),
        ("/d/../stdout", 400),
        ("/missing", 404),
    ],
)
def test_escapes_are_refused_on_agent_and_master(env, suffix, status):
    for base, path in ((env["agent"], env["virtual"]), (env["master"], env["via_master"])):
        for op in ("read", "browse", "download"):
            response = get(base, op, path=path + suffix)
            assert response.status_code == status, (base, op, suffix, response.text)
        assert "root:" not in get(base, "read", path=path + suffix).text


def test_paths_outside_sandboxes_are_not_found(env):
    agent = env["agent"]
    work_dir = env["real"].split("/slaves/")[0]
    for path in ("/etc/passwd", work_dir, work_dir + "/slaves", "relative/stdout", ""):
        response = get(agent, "read", path=path)
        assert response.status_code in (400, 404), path
    assert get(agent, "read").status_code == 400


def test_another_frameworks_sandbox_is_only_reachable_by_its_own_path(env):
    agent = env["agent"]
    # Through the hostile task's path, walking over to the neighbour's sandbox is refused ...
    relative = "/".join([".."] * 6) + env["neighbour_real"]
    assert get(agent, "read", path=env["virtual"] + "/" + relative).status_code == 400
    assert (
        get(
            agent, "read", path=env["virtual"] + "/up" + env["neighbour_real"] + "/stdout"
        ).status_code
        == 403
    )
    # ... while the neighbour's own sandbox path serves it.
    own = get(agent, "read", path=env["neighbour_real"] + "/stdout", offset=0).json()
    assert own["data"] == "neighbour-secret\n"


def test_operator_file_calls_refuse_escapes_too(env):
    for base, path in ((env["agent"], env["virtual"]), (env["master"], env["via_master"])):
        call(base, "READ_FILE", {"path": path + "/passwd", "offset": 0}, status=403)
        call(base, "LIST_FILES", {"path": path + "/../.."}, status=400)
        call(base, "READ_FILE", {"path": path + "/stdout", "offset": 0, "length": 3})
    assert call(env["master"], "GET_HEALTH") == {"healthy": True}
    assert call(env["agent"], "GET_HEALTH") == {"healthy": True}
