"""butte chronos' REST API where it answers as Chronos 3's Jersey resources and servlet
filters answer (mesos/chronos src/main/scala/.../scheduler/api): the routes it serves, the
dependency graph in DOT, what a job name that names no job gets, and the CORS header. Against
a real ``butte chronos`` on a real cluster, over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from butte.testing.chronos import ChronosProcess

pytestmark = [pytest.mark.compat, pytest.mark.integration]

FAR = "R/2030-01-01T00:00:00Z/P1D"


def add(proc: ChronosProcess, name: str, parents: list[str] | None = None) -> None:
    body = {"name": name, "command": "true", "owner": "o@example.com"}
    kind = "dependency" if parents else "iso8601"
    body |= {"parents": parents} if parents else {"schedule": FAR}
    status, answer = proc.request("POST", f"/v1/scheduler/{kind}", json.dumps(body).encode())
    assert status == 204, answer


def raw(proc: ChronosProcess, method: str, path: str, body: bytes | None = None):
    """(status, headers, body text) of a request, errors included."""
    req = urllib.request.Request(f"{proc.url}{path}", data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_the_api_is_served_under_v1_scheduler_only_as_in_chronos_3(scheduler) -> None:
    # Chronos 3 mounts its Jersey resources at /v1/scheduler/* (ChronosRestModule); Chronos
    # 2's /scheduler/* is gone, so a client of the old paths gets 404, as from Chronos 3.
    add(scheduler, "a")
    assert [j["name"] for j in scheduler.get("/v1/scheduler/jobs")] == ["a"]
    for method, path in [
        ("GET", "/scheduler/jobs"),
        ("GET", "/scheduler/job/a"),
        ("PUT", "/scheduler/job/a"),
        ("GET", "/scheduler/graph/csv"),
    ]:
        assert raw(scheduler, method, path)[0] == 404, path


def test_graph_dot_renders_the_dependency_graph_as_chronos_does(scheduler) -> None:
    # GraphManagementResource.dotGraph: JGraphT's DOTExporter with integer ids and the job
    # names as labels, one edge per parent -> child.
    for name, parents in (("a", None), ("b", None), ("c", ["a"]), ("d", ["a", "c"])):
        add(scheduler, name, parents)
    status, headers, text = raw(scheduler, "GET", "/v1/scheduler/graph/dot")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert text == (
        "digraph G {\n"
        '  1 [ label="a" ];\n'
        '  2 [ label="b" ];\n'
        '  3 [ label="c" ];\n'
        '  4 [ label="d" ];\n'
        "  1 -> 3;\n"
        "  1 -> 4;\n"
        "  3 -> 4;\n"
        "}\n"
    )
    # The CSV form of the same graph.
    status, _, csv = raw(scheduler, "GET", "/v1/scheduler/graph/csv")
    assert status == 200 and "link,a,c\nlink,a,d\nlink,c,d\n" in csv
    assert raw(scheduler, "GET", "/v1/scheduler/graph/dot?x=1")[0] == 400


def test_an_unknown_job_gets_what_chronos_answers(scheduler) -> None:
    # Each resource `require`s the job; the failed requirement is a 400 whose ApiResult
    # carries the reason phrase and the exception; marking success answers false with 200.
    add(scheduler, "known")
    prefix = "java.lang.IllegalArgumentException: requirement failed: "
    cases = [
        ("GET", "/v1/scheduler/job/nope", "Job 'nope' not found"),
        ("PUT", "/v1/scheduler/job/nope", "Job 'nope' not found"),
        ("PUT", "/v1/scheduler/job/nope?arguments=x", "Job 'nope' not found"),
        ("DELETE", "/v1/scheduler/job/nope", "JobSchedule 'nope' not found"),
        ("GET", "/v1/scheduler/job/stat/nope", "Job 'nope' not found"),
        ("DELETE", "/v1/scheduler/task/kill/nope", "JobSchedule 'nope' not found"),
        (
            "POST",
            "/v1/scheduler/job/nope/task/ct:1:0:nope:/progress",
            "JobSchedule 'nope' not found",
        ),
        ("POST", "/v1/scheduler/job/known/task/bogus/progress", "Invalid task id format bogus"),
        (
            "POST",
            "/v1/scheduler/job/known/task/ct:1:0:known:/progress",
            "JobSchedule 'known' is not enabled to track data",
        ),
    ]
    for method, path, reason in cases:
        body = b'{"numAdditionalElementsProcessed": 5}' if method == "POST" else None
        status, answer = scheduler.request(method, path, body)
        assert (status, answer) == (400, {"status": "Bad Request", "message": prefix + reason}), (
            method,
            path,
        )
    status, _, text = raw(scheduler, "PUT", "/v1/scheduler/job/success/nope")
    assert (status, text) == (200, "marked job nope as successful: false")
    status, _, text = raw(scheduler, "PUT", "/v1/scheduler/job/success/known")
    assert (status, text) == (200, "marked job known as successful: true")
    # Other refusals carry the reason phrase too.
    status, answer = scheduler.request("POST", "/v1/scheduler/iso8601", b"{")
    assert status == 400 and answer["status"] == "Bad Request"
    assert [j["name"] for j in scheduler.get("/v1/scheduler/jobs")] == ["known"]


def test_every_answer_allows_any_origin_as_chronos_cors_filter_does(scheduler) -> None:
    # CorsFilter is installed in front of everything Chronos serves.
    add(scheduler, "a")
    for method, path, want in [
        ("GET", "/v1/scheduler/jobs", 200),
        ("PUT", "/v1/scheduler/job/a", 204),
        ("GET", "/v1/scheduler/job/nope", 400),
        ("GET", "/v1/scheduler/graph/csv", 200),
        ("GET", "/v1/scheduler/nothing", 404),
        ("GET", "/ping", 200),
        ("GET", "/metrics", 200),
        ("GET", "/", 200),
    ]:
        status, headers, _ = raw(scheduler, method, path)
        assert status == want, path
        assert headers["Access-Control-Allow-Origin"] == "*", path


def test_a_manual_run_of_a_disabled_job_is_answered_204_and_dropped(scheduler) -> None:
    # JobManagementResource.trigger queues the run of a disabled job all the same (204) and
    # TaskManager drops it when it takes it from the queue (JobExpired): no run, no count
    # in the job's statistics; here the drop is counted in the metrics.
    body = {"name": "off", "command": "true", "owner": "o@example.com", "schedule": FAR}
    body["disabled"] = True
    status, answer = scheduler.request("POST", "/v1/scheduler/iso8601", json.dumps(body).encode())
    assert status == 204, answer
    status, _, text = raw(scheduler, "PUT", "/v1/scheduler/job/off?arguments=x")
    assert (status, text) == (204, "")
    (summary,) = scheduler.get("/v1/scheduler/jobs/summary")["jobs"]
    assert (summary["name"], summary["state"], summary["status"]) == ("off", "idle", "fresh")
    counters = scheduler.get("/metrics")["counters"]
    assert counters["manual_runs_dropped"]["count"] == 1
    assert counters["runs_queued"]["count"] == 0
    stat = scheduler.get("/v1/scheduler/job/stat/off")
    assert stat["taskStatHistory"] == [] and stat["successCount"] == stat["errorCount"] == 0
    assert stat["droppedCount"] == 0  # slots dropped; a disabled job's slots are not run
