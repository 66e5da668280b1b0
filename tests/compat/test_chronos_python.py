"""The unmodified PyPI chronos-python client (1.2.1) against ``butte chronos`` on a real
butte cluster, and the scheduler's restart with reconciliation."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from butte.testing.require import require_module
from butte.testing.waiting import wait_for

chronos = require_module("chronos")

pytestmark = [pytest.mark.compat, pytest.mark.integration]

OWNER = "ops@example.com"


def start_at(seconds_from_now: float) -> str:
    t = math.ceil(time.time() + seconds_from_now)
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(client: Any, name: str) -> dict:
    return next(j for j in client.list() if j["name"] == name)


def master_tasks(cluster: Any, framework_id: str) -> list[dict]:
    url = f"{cluster.master_url}/master/tasks?limit=1000&framework_id={framework_id}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["tasks"]


def test_everything_chronos_python_offers(cluster, scheduler) -> None:
    client = chronos.connect(scheduler.address)
    client.add(
        {
            "name": "tick",
            "command": 'echo "tick $CHRONOS_JOB_NAME"',
            "owner": OWNER,
            "disabled": False,
            "schedule": f"R3/{start_at(2)}/PT2S",
            "epsilon": "PT30S",
            "description": "three runs, two seconds apart",
        }
    )
    client.add(
        {"name": "after", "command": "true", "owner": OWNER, "disabled": False, "parents": ["tick"]}
    )
    assert sorted(j["name"] for j in client.list()) == ["after", "tick"]
    assert [j["name"] for j in client.search(name="ic")] == ["tick"]
    assert [j["name"] for j in client.search(command="echo")] == ["tick"]

    wait_for(lambda: job(client, "tick")["successCount"] == 3, "three runs of tick", 60)
    wait_for(lambda: job(client, "after")["successCount"] == 3, "three runs of after", 60)
    tick = job(client, "tick")
    assert tick["schedule"].startswith("R0/") and tick["skippedCount"] == 0
    assert tick["lastSuccess"] and not tick["lastError"]

    stat = client.job_stat("tick")
    assert stat["histogram"]["count"] == 3
    states = [r["state"] for r in stat["taskStatHistory"]]
    assert states == ["TASK_FINISHED"] * 3
    first = stat["taskStatHistory"][0]
    assert first["status"] == "Success" and first["jobName"] == "tick"
    assert first["taskId"].startswith("ct:") and first["slaveId"]
    graph = client.scheduler_graph()
    assert "link,tick,after" in graph and "node,tick,success,idle" in graph
    for stat_call in (
        client.scheduler_stat_99th,
        client.scheduler_stat_98th,
        client.scheduler_stat_95th,
        client.scheduler_stat_75th,
        client.scheduler_stat_median,
        client.scheduler_stat_mean,
    ):
        assert {s["jobNameLabel"] for s in stat_call()} == {"tick", "after"}
    metrics = client.metrics()
    assert metrics["counters"]["runs_finished"]["count"] == 6

    # The tasks ran on the cluster, each slot once.
    fid = scheduler.get("/ui/info")["framework_id"]
    tasks = master_tasks(cluster, fid)
    # Chronos' ids: ct:<due ms>:<attempt>:<job>:<arguments>
    ticks = sorted(t["id"] for t in tasks if t["id"].split(":")[3] == "tick")
    assert all(t.endswith(":tick:") for t in ticks)
    assert len(ticks) == 3 and len(set(ticks)) == 3

    # Update (a failing command now), run it by hand, retries counted as one error.
    # Its repetitions used up, Chronos shows it disabled; enabled again to run it by hand.
    assert job(client, "tick")["disabled"] is True
    update = dict(
        job(client, "tick"), command="exit 3", retries=1, schedule="R0//PT1H", disabled=False
    )
    client.update(update)
    client.run("tick")
    wait_for(lambda: job(client, "tick")["errorCount"] == 1, "the failed manual run", 60)
    assert job(client, "tick")["command"] == "exit 3"

    # A long run is killed with delete_tasks.
    client.update(dict(update, command="sleep 300", retries=0))
    client.run("tick")
    wait_for(lambda: scheduler.get("/metrics")["gauges"]["runs.active"]["value"] == 1, "run", 30)
    wait_for(
        lambda: any(
            t["state"] == "TASK_RUNNING"
            for t in master_tasks(cluster, fid)
            if t["id"].split(":")[3] == "tick"
        ),
        "the manual run running",
        30,
    )
    client.delete_tasks("tick")
    wait_for(
        lambda: scheduler.get("/metrics")["counters"]["runs_killed"]["count"] == 1, "the kill", 30
    )
    # As in Chronos, a killed run is no failure.
    assert job(client, "tick")["errorCount"] == 1

    # Marked successful by hand, a job starts its children (Chronos' job/success).
    assert scheduler.request("PUT", "/v1/scheduler/job/success/tick")[0] == 200
    wait_for(lambda: job(client, "after")["successCount"] == 4, "after, run by tick's mark", 60)
    assert scheduler.get("/v1/scheduler/job/tick")["command"] == "sleep 300"
    assert scheduler.get("/v1/scheduler/leader") == {"leader": scheduler.address}
    # Deleting its only parent makes "after" a scheduled job with tick's schedule.
    client.delete("tick")
    after = job(client, "after")
    assert "parents" not in after and after["schedule"].startswith("R0/")
    client.delete("after")
    assert client.list() == []


INVALID = [
    ({"schedule": "R/bogus/PT1M"}, "not an ISO8601 date-time"),
    ({"schedule": "R99999999999/2026-01-01T00:00:00Z/PT1M"}, "over the limit"),
    ({"schedule": "R/2026-01-01T00:00:00Z/PT1M", "scheduleTimeZone": "No/Where"}, "zone"),
    ({"schedule": "R/2026-01-01T00:00:00Z/PT1M", "cpus": -1}, "cpus"),
    (
        {"schedule": "R/2026-01-01T00:00:00Z/PT1M", "container": {"type": "DOCKER", "image": "x"}},
        "container",
    ),
    ({"schedule": "R/2026-01-01T00:00:00Z/PT1M", "color": "red"}, "color"),
]


def test_bad_input_gets_4xx_and_state_stays(scheduler) -> None:
    client = chronos.connect(scheduler.address)
    client.add({"name": "keep", "command": "true", "owner": OWNER, "disabled": False,
                "schedule": "R/2030-01-01T00:00:00Z/P1D"})  # fmt: skip
    for body, why in INVALID:
        full = {"name": "keep", "command": "changed", "owner": OWNER, "disabled": False, **body}
        data = json.dumps(full).encode()
        status, answer = scheduler.request("POST", "/v1/scheduler/iso8601", data)
        assert status == 400 and why in answer["message"], (body, status, answer)
        with pytest.raises(chronos.ChronosAPIError):
            client.add(full)
    assert job(client, "keep")["command"] == "true"
    client.delete("keep")
    client.add({"name": "a", "command": "true", "owner": OWNER, "disabled": False,
                "schedule": "R/2030-01-01T00:00:00Z/P1D"})  # fmt: skip
    dep = {"name": "b", "command": "true", "owner": OWNER, "disabled": False}
    cases = [
        ("POST", "/v1/scheduler/iso8601", b"{not json", "malformed JSON"),
        ("POST", "/v1/scheduler/iso8601", b"[1, 2]", "JSON object"),
        ("POST", "/v1/scheduler/dependency", json.dumps({**dep, "parents": ["zz"]}), "zz"),
        ("POST", "/v1/scheduler/dependency", json.dumps({**dep, "parents": ["b"]}), "own parent"),
        ("GET", "/v1/scheduler/jobs?bogus=1", None, "bogus"),
        ("GET", "/v1/scheduler/jobs/search?limit=x", None, "integers"),
    ]
    for method, path, body, why in cases:
        data = body.encode() if isinstance(body, str) else body
        status, answer = scheduler.request(method, path, data)
        assert status == 400 and why in answer["message"], (path, status, answer)
    client.add({**dep, "parents": ["a"]})
    status, answer = scheduler.request(
        "POST",
        "/v1/scheduler/dependency",
        json.dumps({**dep, "name": "a", "parents": ["b"]}).encode(),
    )
    assert status == 400  # a is a scheduled job; and b -> a -> b would be a cycle
    for method, path in [
        ("DELETE", "/v1/scheduler/job/nope"),
        ("PUT", "/v1/scheduler/job/nope"),
        ("GET", "/v1/scheduler/job/stat/nope"),
        ("DELETE", "/v1/scheduler/task/kill/nope"),
    ]:
        # Chronos' resources `require` the job: a failed requirement is a 400.
        status, answer = scheduler.request(method, path)
        assert status == 400 and "'nope' not found" in answer["message"], (path, status)
    huge = json.dumps({**dep, "name": "big", "command": "x" * (2 * 1024 * 1024)}).encode()
    assert scheduler.request("POST", "/v1/scheduler/iso8601", huge)[0] == 413
    assert sorted(j["name"] for j in client.list()) == ["a", "b"]
    assert scheduler.get("/metrics")["gauges"]["leader"]["value"] == 1


def test_sigkill_and_restart_reconciles_runs_and_catches_up_once(cluster, scheduler) -> None:
    """Runs are in flight when the scheduler is SIGKILLed; the slots due during the outage
    (within epsilon) come due together after the restart: the first runs, the others are
    dropped as Chronos drops a slot of a job that has a run queued (TaskManager keeps one per
    job); the runs that were going are followed through reconciliation (not relaunched), and
    every slot is run once or dropped, none skipped, none doubled."""
    client = chronos.connect(scheduler.address)
    client.add(
        {
            "name": "steady",
            "command": "sleep 3",
            "owner": OWNER,
            "disabled": False,
            "concurrent": True,
            "schedule": f"R/{start_at(1)}/PT2S",
            "epsilon": "PT60S",
        }
    )
    fid = scheduler.get("/ui/info")["framework_id"]
    wait_for(
        lambda: sum(t["state"] == "TASK_RUNNING" for t in master_tasks(cluster, fid)) >= 1,
        "a running task",
        30,
    )
    time.sleep(1.5)
    scheduler.kill()
    killed_at = time.time()
    running_at_kill = {t["id"] for t in master_tasks(cluster, fid) if t["state"] == "TASK_RUNNING"}
    assert running_at_kill
    time.sleep(5)  # two or three slots fall into the outage
    scheduler.start()
    restarted_at = time.time()
    assert scheduler.get("/ui/info")["framework_id"] == fid
    time.sleep(5)
    client.update(dict(job(client, "steady"), disabled=True))
    stopped_at = time.time()

    def settled() -> bool:
        return all(t["state"] == "TASK_FINISHED" for t in master_tasks(cluster, fid))

    wait_for(settled, "every run finished", 60)
    tasks = master_tasks(cluster, fid)
    dues = sorted(int(t["id"].split(":")[1]) / 1000 for t in tasks)
    assert len(dues) == len(set(dues)), "a slot ran twice"
    gaps = {round(b - a, 3) for a, b in zip(dues, dues[1:], strict=False)}
    assert all(g > 0 and g % 2.0 == 0 for g in gaps), f"runs off the slots: {dues}"
    outage = [d for d in dues if killed_at < d < restarted_at]
    assert outage, f"no slot of the outage ran: {dues}"
    assert dues[-1] >= stopped_at - 3
    stats = job(client, "steady")
    assert stats["skippedCount"] == 0 and stats["errorCount"] == 0
    assert stats["successCount"] == len(dues)
    dropped = scheduler.get("/v1/scheduler/job/stat/steady")["droppedCount"]
    assert dropped >= 1, "two or more slots of the outage came due together"
    slots = round((dues[-1] - dues[0]) / 2.0) + 1
    assert len(dues) + dropped == slots, f"a slot is missing: {dues}, {dropped} dropped"
    # The metric counts since the restart (the catch-up), the job's count since its start.
    assert 1 <= scheduler.get("/metrics")["counters"]["slot_runs_dropped"]["count"] <= dropped
    metrics = scheduler.get("/metrics")
    assert metrics["counters"]["runs_relaunched"]["count"] == 0
    assert metrics["counters"]["orphans_killed"]["count"] == 0
