"""The operator API v1 of a real master and agent (docs/protocol.md §3.1-3.3), the master event
stream, the legacy endpoints and the metrics endpoints, with bad input of every kind."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests
from operator_kit import (
    JSON,
    EventStream,
    RunJob,
    call,
    cluster_with_jobs,
    post,
    wait_for,
    wait_task,
)
from prometheus_client.parser import text_string_to_metric_families

from butte.testing.cluster import daemons_missing
from butte.testing.require import require

pytestmark = pytest.mark.integration

SLEEPER = "echo sleeper-out; echo sleeper-err >&2; sleep 600"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("operator")
    started = cluster_with_jobs(
        tmp, {"sleeper": SLEEPER}, running=("sleeper",), written=("sleeper",)
    )
    with started as (cluster, jobs):
        yield cluster, jobs, tmp


@pytest.fixture
def master(env) -> str:
    return env[0].master_url


@pytest.fixture
def agent(env) -> str:
    return env[0].agents[0].url


def sleeper(master: str) -> dict:
    return wait_task(master, "sleeper", "TASK_RUNNING")


# -- master calls -------------------------------------------------------------------------------


def test_read_only_calls_answer_their_payloads(master):
    assert call(master, "GET_HEALTH") == {"healthy": True}
    flags = {f["name"]: f["value"] for f in call(master, "GET_FLAGS")["flags"]}
    assert flags["allocation_interval"] == "100ms"
    assert call(master, "GET_VERSION")["version_info"]["version"].replace(".", "").isdigit()
    metrics = {
        m["name"]: m["value"]
        for m in call(master, "GET_METRICS", {"timeout": {"nanoseconds": 10**9}})["metrics"]
    }
    assert metrics["master/elected"] == 1.0 and metrics["master/tasks_running"] >= 1
    assert call(master, "GET_LOGGING_LEVEL") == {"level": 0}
    info = call(master, "GET_MASTER")
    assert info["master_info"]["address"]["port"] == int(master.rsplit(":", 1)[1])
    assert info["start_time"] > 0 and info["elected_time"] >= info["start_time"]
    for empty in ("GET_OPERATIONS", "GET_QUOTA", "GET_MAINTENANCE_STATUS"):
        call(master, empty)


def test_state_agents_frameworks_tasks_roles(master):
    task = sleeper(master)
    agents = call(master, "GET_AGENTS")["agents"]
    assert len(agents) == 1 and agents[0]["active"]
    assert agents[0]["agent_info"]["id"] == task["agent_id"]
    cpus = [r for r in agents[0]["allocated_resources"] if r["name"] == "cpus"]
    assert cpus and cpus[0]["scalar"]["value"] >= 0.1
    frameworks = call(master, "GET_FRAMEWORKS")["frameworks"]
    (fw,) = [f for f in frameworks if f["framework_info"]["name"] == "fw-sleeper"]
    assert fw["active"] and fw["connected"] and fw["registered_time"]["nanoseconds"] > 0
    assert fw["framework_info"]["id"] == task["framework_id"]
    assert task["statuses"][-1]["state"] == "TASK_RUNNING"
    state = call(master, "GET_STATE")
    assert set(state) == {"get_tasks", "get_executors", "get_frameworks", "get_agents"}
    assert any(t["task_id"] == task["task_id"] for t in state["get_tasks"]["tasks"])
    assert "executors" in call(master, "GET_EXECUTORS")
    roles = {r["name"]: r for r in call(master, "GET_ROLES")["roles"]}
    assert task["framework_id"] in roles["*"]["frameworks"]
    # Mesos' `resources`: quantities allocated or offered, without roles or reservations.
    held = {r["name"]: r for r in roles["*"]["resources"]}
    assert held["cpus"]["scalar"]["value"] >= 0.1 and "role" not in held["cpus"]
    assert set(held) <= {"cpus", "mem", "disk", "gpus"}


def test_every_path_under_api_v1_reaches_the_operator(master):
    for path in ("/api/v1", "/api/v1/operator", "/master/api/v1", "/api/v1/anything/"):
        response = post(master, {"type": "GET_HEALTH"}, path=path)
        assert response.status_code == 200, path
    # ... but the scheduler API still wins its own prefix.
    assert post(master, {"type": "GET_HEALTH"}, path="/api/v1/scheduler").status_code == 400


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"type": "NO_SUCH_CALL"}, JSON, 400),
        ({"type": "get_health"}, JSON, 400),
        ({"typo": "GET_HEALTH"}, JSON, 400),
        (b"{not json", JSON, 400),
        (b"[]", JSON, 400),
        ({"type": "READ_FILE", "read_file": {"path": 5, "offset": "x"}}, JSON, 400),
        ({"type": "READ_FILE"}, JSON, 400),
        ({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": "heavy"}}, JSON, 400),
        ({"type": "TEARDOWN", "teardown": {"framework_id": "not-an-object"}}, JSON, 400),
        ({"type": "SET_LOGGING_LEVEL", "set_logging_level": {"level": 1}}, JSON, 400),
        ({"type": "GET_HEALTH"}, {}, 400),
        ({"type": "GET_HEALTH"}, {"Content-Type": "text/plain"}, 415),
        ({"type": "GET_HEALTH"}, {**JSON, "Accept": "text/html"}, 406),
        ({"type": "UNKNOWN"}, JSON, 501),  # Mesos: NotImplemented
    ],
)
def test_bad_calls_get_4xx_and_the_master_keeps_serving(master, body, headers, status):
    response = post(master, body, headers=headers)
    assert response.status_code == status, response.text
    assert response.text  # a message saying what is wrong
    assert call(master, "GET_HEALTH") == {"healthy": True}


def test_get_is_not_allowed(master):
    response = requests.get(master + "/api/v1", timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


def test_weights_are_validated_and_applied(master):
    call(master, "UPDATE_WEIGHTS", {"weight_infos": [{"role": "web", "weight": 2.5}]})
    assert {"role": "web", "weight": 2.5} in call(master, "GET_WEIGHTS")["weight_infos"]
    for bad in (
        [{"role": "web", "weight": 0}],
        [{"role": "web", "weight": -1}],
        [{"weight": 1}],
        [{"role": "../bad", "weight": 1}],
        [{"role": "web", "weight": "Infinity"}],
    ):
        call(master, "UPDATE_WEIGHTS", {"weight_infos": bad}, status=400)
    response = requests.put(master + "/master/weights", json=[{"role": "db", "weight": 3}])
    assert response.status_code == 200
    weights = requests.get(master + "/master/weights", timeout=5).json()
    assert {"role": "db", "weight": 3.0} in weights and {"role": "web", "weight": 2.5} in weights
    for bad in ([{"role": "db", "weight": 0}], {"role": "db"}, "x"):
        assert requests.put(master + "/master/weights", json=bad).status_code == 400
    call(master, "GET_ROLES")  # weighted roles show up
    assert "web" in {r["name"] for r in call(master, "GET_ROLES")["roles"]}


def test_logging_level_can_be_raised_for_a_while(master):
    payload = {"level": 1, "duration": {"nanoseconds": 5 * 10**8}}
    call(master, "SET_LOGGING_LEVEL", payload)
    assert call(master, "GET_LOGGING_LEVEL") == {"level": 1}
    wait_for(lambda: call(master, "GET_LOGGING_LEVEL") == {"level": 0}, 5, "level reverted")
    bad = {"level": 1, "duration": {"nanoseconds": -1}}
    call(master, "SET_LOGGING_LEVEL", bad, status=400)


def test_teardown_kills_the_framework_tasks(env, master):
    cluster, _, tmp = env
    stream = EventStream(master)
    job = RunJob(cluster, "doomed", "sleep 600", tmp / "doomed.log")
    try:
        task = wait_task(master, "doomed", "TASK_RUNNING")
        fid = task["framework_id"]["value"]
        call(master, "TEARDOWN", {"framework_id": {"value": fid}})
        done = wait_for(
            lambda: [
                f
                for f in call(master, "GET_FRAMEWORKS")["completed_frameworks"]
                if f["framework_info"]["id"]["value"] == fid
            ],
            what="framework completed",
        )
        assert done
        stream.wait(
            "FRAMEWORK_REMOVED",
            lambda e: e["framework_removed"]["framework_info"]["id"]["value"] == fid,
        )
        stream.wait(
            "TASK_UPDATED",
            lambda e: (
                e["task_updated"]["status"]["task_id"] == task["task_id"]
                and e["task_updated"]["state"] == "TASK_KILLED"
            ),
        )
        call(master, "TEARDOWN", {"framework_id": {"value": fid}}, status=400)
        call(master, "TEARDOWN", {"framework_id": {"value": "nope"}}, status=400)
    finally:
        stream.close()
        job.stop()


# -- the event stream ---------------------------------------------------------------------------


def test_subscribe_streams_state_then_task_and_framework_events(env, master):
    cluster, _, tmp = env
    stream = EventStream(master, path="/api/v1/operator")
    try:
        subscribed = stream.wait("SUBSCRIBED")["subscribed"]
        assert subscribed["heartbeat_interval_seconds"] == 15
        assert {"get_tasks", "get_agents", "get_frameworks"} <= set(subscribed["get_state"])
        stream.wait("HEARTBEAT")
        job = RunJob(cluster, "evented", "echo hi", tmp / "evented.log")
        try:
            added = stream.wait(
                "FRAMEWORK_ADDED",
                lambda e: (
                    e["framework_added"]["framework"]["framework_info"]["name"] == "fw-evented"
                ),
            )
            fid = added["framework_added"]["framework"]["framework_info"]["id"]
            task = stream.wait(
                "TASK_ADDED", lambda e: e["task_added"]["task"]["framework_id"] == fid
            )
            assert task["task_added"]["task"]["state"] == "TASK_STAGING"
            # The update's own state; `state` is the task's latest, which may be ahead of
            # it while the framework has not acknowledged (Mesos' latest_state).
            for state in ("TASK_RUNNING", "TASK_FINISHED"):
                stream.wait(
                    "TASK_UPDATED",
                    lambda e, s=state: (
                        e["task_updated"]["framework_id"] == fid
                        and e["task_updated"]["status"]["state"] == s
                    ),
                )
            mine = [e["task_updated"] for e in stream.of("TASK_UPDATED")]
            assert [u for u in mine if u["framework_id"] == fid][-1]["state"] == "TASK_FINISHED"
            stream.wait(
                "FRAMEWORK_REMOVED", lambda e: e["framework_removed"]["framework_info"]["id"] == fid
            )
        finally:
            job.stop()
        metrics = requests.get(master + "/metrics/snapshot", timeout=5).json()
        assert metrics["master/operator_event_stream_subscribers"] >= 1
    finally:
        stream.close()
    wait_for(
        lambda: (
            requests.get(master + "/metrics/snapshot", timeout=5).json()[
                "master/operator_event_stream_subscribers"
            ]
            == 0
        ),
        what="subscriber gone",
    )


# -- files through the master ---------------------------------------------------------------


def sandbox(task: dict) -> str:
    return (
        f"/slaves/{task['agent_id']['value']}/frameworks/{task['framework_id']['value']}"
        f"/executors/{task['task_id']['value']}/runs/latest"
    )


def test_list_and_read_files_through_the_master(master):
    task = sleeper(master)
    path = sandbox(task)
    names = {
        f["path"].rsplit("/", 1)[-1]
        for f in call(master, "LIST_FILES", {"path": path})["file_infos"]
    }
    assert {"stdout", "stderr"} <= names
    read = call(master, "READ_FILE", {"path": path + "/stdout", "offset": 0})
    assert base64.b64decode(read["data"]) == b"sleeper-out\n" and read["size"] == 12
    part = call(master, "READ_FILE", {"path": path + "/stderr", "offset": 8, "length": 3})
    assert base64.b64decode(part["data"]) == b"err"
    far = call(master, "READ_FILE", {"path": path + "/stdout", "offset": 10**15})
    assert far["data"] == "" and far["size"] == 12
    # Mesos' virtual path (the master finds the agent from its records) works too.
    virtual = path.split("/", 3)[3]
    call(master, "LIST_FILES", {"path": "/" + virtual})
    for bad, status in (
        (path + "/../../x", 400),
        ("/etc/passwd", 404),
        ("/slaves/no-such-agent/frameworks/f/executors/e/runs/latest", 404),
        (path + "/missing", 404),
    ):
        call(master, "LIST_FILES", {"path": bad}, status=status)
    call(master, "READ_FILE", {"path": path + "/stdout", "offset": -2}, status=400)
    call(master, "READ_FILE", {"path": path + "/stdout", "offset": 0, "length": -1}, status=400)
    response = requests.get(master + "/files/read", params={"path": path + "/stdout", "offset": -1})
    assert response.json() == {"data": "", "offset": 12}
    response = requests.get(master + "/files/download", params={"path": path + "/stdout"})
    assert response.content == b"sleeper-out\n"
    browse = requests.get(master + "/files/browse", params={"path": path}).json()
    assert any(e["path"].endswith("/stdout") and e["mode"].startswith("-") for e in browse)
    assert requests.get(master + "/files/read", params={"path": "/etc/passwd"}).status_code == 404
    assert call(master, "GET_HEALTH") == {"healthy": True}


# -- legacy endpoints and metrics -----------------------------------------------------------


def test_legacy_endpoints(master):
    task = sleeper(master)
    tid, fid = task["task_id"]["value"], task["framework_id"]["value"]
    summary = requests.get(master + "/master/state-summary", timeout=5).json()
    (slave,) = summary["slaves"]
    assert slave["TASK_RUNNING"] >= 1 and fid in slave["framework_ids"]
    assert any(f["id"] == fid and f["TASK_RUNNING"] == 1 for f in summary["frameworks"])
    frameworks = requests.get(master + "/master/frameworks", timeout=5).json()
    assert any(f["id"] == fid for f in frameworks["frameworks"])
    only = requests.get(master + "/master/frameworks", params={"framework_id": fid}).json()
    assert [f["id"] for f in only["frameworks"]] == [fid]
    slaves = requests.get(master + "/master/slaves", timeout=5).json()["slaves"]
    assert slaves[0]["id"] == task["agent_id"]["value"] and "used_resources" in slaves[0]
    tasks = requests.get(master + "/master/tasks", params={"task_id": tid}).json()["tasks"]
    assert tasks[0]["id"] == tid and tasks[0]["slave_id"] == task["agent_id"]["value"]
    page = requests.get(master + "/master/tasks", params={"limit": 1, "order": "asc"}).json()
    assert len(page["tasks"]) == 1
    # As Mesos reads them (never a 400): defaults for what is not a number, a negative
    # offset is past the end, an unknown order is descending
    # (tests/unit/test_master_parity_views.py).
    for odd in ({"limit": "x"}, {"offset": -3}, {"order": "sideways"}):
        assert requests.get(master + "/master/tasks", params=odd).status_code == 200
    # A negative limit means every task, as in Mesos (the Mesos CLI sends limit=-1).
    every = requests.get(master + "/master/tasks", params={"limit": -1}).json()["tasks"]
    assert tid in {t["id"] for t in every}
    roles = requests.get(master + "/master/roles", timeout=5).json()["roles"]
    assert any(r["name"] == "*" and fid in r["frameworks"] for r in roles)
    flags = requests.get(master + "/master/flags", timeout=5).json()["flags"]
    assert flags["allocation_interval"] == "100ms"
    jsonp = requests.get(master + "/master/slaves", params={"jsonp": "cb"}).text
    assert jsonp.startswith("cb(")
    assert requests.get(master + "/master/teardown").status_code == 405
    assert requests.post(master + "/master/teardown", data={}).status_code == 400
    unknown = requests.post(master + "/master/teardown", data={"frameworkId": "nope"})
    assert unknown.status_code == 400


def test_json_endpoints_of_agent_and_master_answer_jsonp(master, agent):
    """Every JSON endpoint wraps its reply for ?jsonp=, as Mesos' do: Mesos' web UI reads an
    agent's state, statistics, sandbox listings and metrics that way."""
    sleeper(master)
    state = requests.get(agent + "/state", timeout=5).json()
    (framework,) = [f for f in state["frameworks"] if f["executors"]]
    directory = framework["executors"][0]["directory"]
    for url, params in (
        (agent + "/state", {}),
        (agent + "/slave(1)/state", {}),
        (agent + "/monitor/statistics", {}),
        (agent + "/containers", {}),
        (agent + "/files/browse", {"path": directory}),
        (agent + "/files/read", {"path": directory + "/stdout", "offset": 0}),
        (agent + "/metrics/snapshot", {}),
        (agent + "/flags", {}),
        (master + "/metrics/snapshot", {}),
        (master + "/master/state", {}),
    ):
        plain = requests.get(url, params=params, timeout=5)
        wrapped = requests.get(url, params={**params, "jsonp": "angular.callbacks._0"}, timeout=5)
        assert plain.status_code == wrapped.status_code == 200, url
        assert wrapped.headers["Content-Type"].startswith("text/javascript"), url
        text = wrapped.text
        assert text.startswith("angular.callbacks._0(") and text.endswith(");"), url
        inner = json.loads(text[len("angular.callbacks._0(") : -2])
        assert type(inner) is type(plain.json()), url
    bad = requests.get(agent + "/state", params={"jsonp": "alert(1)//"}, timeout=5)
    assert bad.status_code == 400


def test_agent_containers_endpoint_selects_by_its_query(master, agent):
    sleeper(master)
    every = requests.get(agent + "/containers", timeout=5).json()
    mine = every[0]
    cid, fid, eid = mine["container_id"], mine["framework_id"], mine["executor_id"]
    for params in (
        {"container_id": cid},
        {"framework_id": fid, "executor_id": eid},
    ):
        found = requests.get(agent + "/containers", params=params, timeout=5).json()
        assert [c["container_id"] for c in found] == [cid], params
    by_framework = requests.get(agent + "/containers", params={"framework_id": fid}).json()
    assert cid in {c["container_id"] for c in by_framework}
    assert requests.get(agent + "/containers", params={"container_id": "nope"}).json() == []
    for bad in ({"executor_id": eid}, {"container_id": cid, "framework_id": fid}):
        assert requests.get(agent + "/containers", params=bad, timeout=5).status_code == 400


def test_legacy_teardown_by_form(env, master):
    cluster, _, tmp = env
    job = RunJob(cluster, "formdown", "sleep 600", tmp / "formdown.log")
    try:
        fid = wait_task(master, "formdown", "TASK_RUNNING")["framework_id"]["value"]
        response = requests.post(master + "/master/teardown", data={"frameworkId": fid})
        assert response.status_code == 200
        wait_task(master, "formdown", "TASK_KILLED")
    finally:
        job.stop()


def test_metrics_snapshot_and_prometheus(master, agent):
    snapshot = requests.get(master + "/metrics/snapshot", timeout=5).json()
    for name in (
        "master/uptime_secs",
        "master/elected",
        "master/cpus_total",
        "master/cpus_used",
        "master/cpus_percent",
        "master/mem_total",
        "master/tasks_running",
        "master/slaves_active",
        "master/frameworks_active",
        "master/messages_status_update",
        "allocator/mesos/allocation_runs",
        "allocator/mesos/allocation_run_ms",
    ):
        assert name in snapshot, name
    assert snapshot["master/cpus_total"] == 4.0 and snapshot["master/cpus_used"] > 0
    for daemon in (master, agent):  # libprocess: the timeout must be a duration
        url = daemon + "/metrics/snapshot"
        assert requests.get(url, params={"timeout": "5secs"}, timeout=5).status_code == 200
        bad = requests.get(url, params={"timeout": "abc"}, timeout=5)
        assert bad.status_code == 400 and "Invalid timeout 'abc'" in bad.text
    text = requests.get(master + "/metrics", timeout=5)
    assert text.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text.text)}
    assert families["master_uptime_secs"].samples[0].value > 0
    assert families["master_cpus_total"].samples[0].value == 4.0
    agent_snapshot = requests.get(agent + "/metrics/snapshot", timeout=5).json()
    for name in (
        "slave/uptime_secs",
        "slave/registered",
        "slave/tasks_running",
        "slave/cpus_total",
        "slave/cpus_used",
        "slave/executors_running",
        "slave/container_launch_errors",
        "slave/recovery_errors",
        "slave/executor_directory_max_allowed_age_secs",
        "system/mem_total_bytes",  # every Mesos process serves the system/* figures
        "system/mem_free_bytes",
    ):
        assert name in agent_snapshot, name
    assert agent_snapshot["slave/registered"] == 1.0 and agent_snapshot["slave/tasks_running"] >= 1
    agent_text = requests.get(agent + "/metrics", timeout=5).text
    names = {f.name for f in text_string_to_metric_families(agent_text)}
    assert {"slave_uptime_secs", "slave_cpus_total"} <= names


# -- the agent's operator API -----------------------------------------------------------------


def test_agent_calls(agent, master):
    task = sleeper(master)
    assert call(agent, "GET_HEALTH") == {"healthy": True}
    assert call(agent, "GET_FLAGS")["flags"]
    assert call(agent, "GET_VERSION")["version_info"]["version"]
    assert any(m["name"] == "slave/uptime_secs" for m in call(agent, "GET_METRICS", {})["metrics"])
    assert call(agent, "GET_LOGGING_LEVEL") == {"level": 0}
    assert call(agent, "GET_AGENT")["agent_info"]["id"] == task["agent_id"]
    assert call(agent, "GET_OPERATIONS") == {"operations": []}
    assert call(agent, "GET_RESOURCE_PROVIDERS") == {"resource_providers": []}
    assert post(agent, {"type": "UNKNOWN"}).status_code == 501  # Mesos: NotImplemented
    tasks = call(agent, "GET_TASKS")
    assert any(t["task_id"] == task["task_id"] for t in tasks["launched_tasks"])
    assert set(call(agent, "GET_STATE")) == {"get_tasks", "get_executors", "get_frameworks"}
    frameworks = call(agent, "GET_FRAMEWORKS")["frameworks"]
    assert any(f["framework_info"]["id"] == task["framework_id"] for f in frameworks)
    executors = call(agent, "GET_EXECUTORS")["executors"]
    assert any(e["executor_info"]["executor_id"] == task["task_id"] for e in executors)
    containers = call(agent, "GET_CONTAINERS")["containers"]
    mine = [c for c in containers if c["executor_id"] == task["task_id"]]
    assert mine and mine[0]["resource_statistics"]["mem_rss_bytes"] > 0
    assert mine[0]["container_status"]["container_id"] == mine[0]["container_id"]
    path = sandbox(task).split("/", 3)[3]
    files = call(agent, "LIST_FILES", {"path": "/" + path})["file_infos"]
    assert any(f["path"].endswith("/stdout") for f in files)
    for bad in (
        {"type": "NOPE"},
        {"type": "LIST_FILES"},
        {"type": "GET_TASKS", "get_containers": 3},
    ):
        assert post(agent, bad).status_code == 400
    assert requests.get(agent + "/api/v1", timeout=5).status_code == 405
    assert (
        post(agent, {"type": "GET_HEALTH"}, headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    kill = {"container_id": {"value": "no-such-container"}}
    call(agent, "KILL_CONTAINER", kill, status=404)
    state = requests.get(agent + "/state", timeout=5).json()
    assert state["id"] == task["agent_id"]["value"]
    assert requests.get(agent + "/flags", timeout=5).json()["flags"]
    assert requests.get(agent + "/health", timeout=5).status_code == 200
    assert requests.get(agent + "/containers", timeout=5).json()


def test_kill_container_ends_the_task(env, master, agent):
    cluster, _, tmp = env
    job = RunJob(cluster, "victim", "sleep 600", tmp / "victim.log")
    try:
        task = wait_task(master, "victim", "TASK_RUNNING")
        containers = call(agent, "GET_CONTAINERS")["containers"]
        (container,) = [c for c in containers if c["executor_id"] == task["task_id"]]
        call(
            agent,
            "KILL_CONTAINER",
            {"container_id": container["container_id"], "signal": 0},
            status=400,
        )
        call(agent, "KILL_CONTAINER", {"container_id": container["container_id"]})
        ended = wait_for(
            lambda: [
                t
                for t in call(master, "GET_TASKS")["completed_tasks"]
                + call(master, "GET_TASKS")["tasks"]
                if t["task_id"] == task["task_id"] and t["state"] in ("TASK_FAILED", "TASK_KILLED")
            ],
            15,
            "task ended",
        )
        assert ended
    finally:
        job.stop()


def test_a_subscriber_over_the_limit_closes_the_oldest_stream(cluster_factory):
    """As Mesos' --max_operator_event_stream_subscribers: the newest subscriber is taken and
    the oldest stream ends."""
    cluster = cluster_factory(master_flags=["--max_operator_event_stream_subscribers=2"])
    streams = [EventStream(cluster.master_url) for _ in range(2)]
    try:
        for stream in streams:
            stream.wait("SUBSCRIBED")
        streams.append(EventStream(cluster.master_url))
        streams[2].wait("SUBSCRIBED")
        wait_for(lambda: not streams[0]._thread.is_alive(), 10, "the oldest stream ended")
        assert streams[1]._thread.is_alive() and streams[2]._thread.is_alive()
        metrics = requests.get(cluster.master_url + "/metrics/snapshot", timeout=5).json()
        assert metrics["master/operator_event_stream_subscribers"] == 2
    finally:
        for stream in streams:
            stream.close()
