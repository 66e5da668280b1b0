"""The calls Chronos 3's own web UI makes (src/main/resources/ui of mesos/chronos: the job
forms' and the JSON editor's POSTs, ``jobs/summary`` polled for the job table, run, stop and
delete buttons), and chronos-python's ``run``, against ``butte chronos`` on a real cluster."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from butte.testing.chronos import ChronosProcess
from butte.testing.require import require_module
from butte.testing.waiting import wait_for

chronos = require_module("chronos")

pytestmark = [pytest.mark.compat, pytest.mark.integration]

# The UI's ajax calls: relative URLs, JSON bodies of this type.
JSON = "application/json; charset=utf-8"
STATS = ("lastError", "lastSuccess", "errorsSinceLastSuccess", "successCount", "errorCount")


def post(proc: ChronosProcess, path: str, body: dict) -> tuple[int, Any]:
    return proc.request("POST", path, json.dumps(body).encode())


def summary(proc: ChronosProcess) -> dict[str, dict]:
    return {j["name"]: j for j in proc.get("/v1/scheduler/jobs/summary")["jobs"]}


def test_what_the_chronos_web_ui_sends(scheduler, tmp_path) -> None:
    # JobForm.toJS(): what was typed, numbers as the strings typed, unset fields left out;
    # the default schedule is the next hour, PT24H.
    hour = (datetime.now(UTC) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    form = {
        "name": "ui-job",
        "schedule": "R/" + hour.strftime("%Y-%m-%dT%H:%M:%S.000Z") + "/PT24H",
        "command": f"echo $MESOS_TASK_ID >> {tmp_path}/ran; sleep 30",
        "cpus": "0.1",
        "mem": "32",
        "owner": "ops@example.com",
        "ownerName": "Ops",
    }
    assert post(scheduler, "/v1/scheduler/iso8601", form)[0] == 204
    child = {"name": "ui-child", "command": "true", "parents": "ui-job".split(",")}
    child |= {"concurrent": True, "owner": "ops@example.com"}
    assert post(scheduler, "/v1/scheduler/dependency", child)[0] == 204
    # A container image: refused with a message the form shows (responseJSON.message).
    image = {"image": "busybox", "network": "BRIDGE", "type": "DOCKER"}
    status, answer = post(scheduler, "/v1/scheduler/iso8601", {**form, "container": image})
    assert status == 400 and "container" in answer["message"]

    # JobSummaryStore polls jobs/summary (JobSummaryWrapperSerializer's fields).
    jobs = summary(scheduler)
    assert jobs["ui-job"] == {
        "name": "ui-job",
        "status": "fresh",
        "state": "idle",
        "schedule": form["schedule"],
        "parents": [],
        "disabled": False,
    }
    assert jobs["ui-child"]["schedule"] == "" and jobs["ui-child"]["parents"] == ["ui-job"]

    # The JSON editor: GET job, the statistics deleted, POSTed back unchanged.
    for name, kind in (("ui-job", "iso8601"), ("ui-child", "dependency")):
        listed = scheduler.get(f"/v1/scheduler/job/{name}")
        edited = {k: v for k, v in listed.items() if k not in STATS}
        assert post(scheduler, f"/v1/scheduler/{kind}", edited)[0] == 204
        assert scheduler.get(f"/v1/scheduler/job/{name}") == listed

    # Run, twice: the second click while the first run is queued or running is dropped.
    assert scheduler.request("PUT", "/v1/scheduler/job/ui-job")[0] == 204
    assert scheduler.request("PUT", "/v1/scheduler/job/ui-job")[0] == 204
    wait_for(lambda: summary(scheduler)["ui-job"]["state"] == "1 running", "1 running")
    assert scheduler.request("PUT", "/v1/scheduler/job/ui-job")[0] == 204
    time.sleep(1)
    assert summary(scheduler)["ui-job"]["state"] == "1 running"
    ran = (tmp_path / "ran").read_text().split()
    assert len(ran) == 1 and ran[0].startswith("ct:") and ran[0].endswith(":0:ui-job:")
    # Stop: the running task is killed (no failure, no child run).
    assert scheduler.request("DELETE", "/v1/scheduler/task/kill/ui-job")[0] == 204
    wait_for(lambda: summary(scheduler)["ui-job"]["state"] == "idle", "the run stopped")
    assert summary(scheduler)["ui-job"]["status"] == "fresh"
    stat = scheduler.get("/v1/scheduler/job/stat/ui-job")["taskStatHistory"]
    assert [s["taskId"] for s in stat] == ran and stat[0]["state"] == "TASK_KILLED"
    assert scheduler.get("/metrics")["counters"]["manual_runs_dropped"]["count"] == 2
    # Delete.
    for name in ("ui-child", "ui-job"):
        assert scheduler.request("DELETE", f"/v1/scheduler/job/{name}")[0] == 204
    assert summary(scheduler) == {}


def test_chronos_python_runs_with_arguments_as_chronos_appends_them(scheduler, tmp_path) -> None:
    client = chronos.connect(scheduler.address)
    client.add(
        {
            "name": "args",
            "command": f"printf '<%s>' >> {tmp_path}/out",
            "owner": "ops@example.com",
            "schedule": "R/2030-01-01T00:00:00Z/P1D",
            "disabled": False,
        }
    )
    # As Chronos: the arguments go into the task id (less ';') and after the command, for
    # the shell to split (quotes hold words together).
    query = "arguments=" + '--name "a b";x'.replace(" ", "%20").replace('"', "%22")
    assert scheduler.request("PUT", f"/v1/scheduler/job/args?{query}")[0] == 204
    wait_for(lambda: (tmp_path / "out").exists(), "the run", timeout=30)
    wait_for(lambda: client.list()[0]["successCount"] == 1, "its success")
    assert (tmp_path / "out").read_text() == "<--name><a bx>"
    (entry,) = client.job_stat("args")["taskStatHistory"]
    assert entry["taskId"].endswith(':0:args:--name "a b"x')
    client.run("args")  # chronos-python's run: the job's own (no) arguments
    wait_for(lambda: client.list()[0]["successCount"] == 2, "the second run")
    assert client.job_stat("args")["taskStatHistory"][0]["taskId"].endswith(":0:args:")
