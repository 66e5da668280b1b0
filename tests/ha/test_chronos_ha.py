"""``butte chronos --zk``: two instances on a real ZooKeeper, the standby proxies the API to
the leader, and takes over (state from ZooKeeper, same framework id, reconciliation) when
the leader is SIGKILLed, with every slot run once."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from butte.testing.chronos import ChronosProcess
from butte.testing.require import require_module
from butte.testing.waiting import wait_for

chronos = require_module("chronos")

pytestmark = [pytest.mark.ha, pytest.mark.integration]


def tasks_of(cluster, framework_id: str) -> list[dict]:
    url = f"{cluster.master_url}/master/tasks?limit=1000&framework_id={framework_id}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["tasks"]


def leads(proc: ChronosProcess) -> bool:
    try:
        info = proc.get("/ui/info")
        return proc.get("/metrics")["gauges"]["leader"]["value"] == 1 and bool(info["master"])
    except (OSError, ValueError):
        return False


def test_standby_proxies_then_takes_over_without_skipping_or_doubling(
    zookeeper, cluster_factory, tmp_path
) -> None:
    cluster = cluster_factory()
    url = zookeeper.url("/chronos")
    flags = ["--zk_timeout", "4"]
    first = ChronosProcess(tmp_path / "a", cluster.master_address, zk=url, flags=flags, name="a")
    second = ChronosProcess(tmp_path / "b", cluster.master_address, zk=url, flags=flags, name="b")
    first.start()
    second.start(leading=False)
    try:
        client = chronos.connect(second.address)  # the standby: every call is proxied
        start = datetime.fromtimestamp(math.ceil(time.time() + 1), UTC)
        client.add(
            {
                "name": "steady",
                "command": "sleep 3",
                "owner": "ops@example.com",
                "disabled": False,
                "concurrent": True,
                "schedule": f"R/{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/PT2S",
                "epsilon": "PT60S",
            }
        )
        fid = first.get("/ui/info")["framework_id"]
        wait_for(lambda: len(tasks_of(cluster, fid)) >= 2, "runs from the first leader", 30)
        first.kill()
        killed_at = time.time()
        wait_for(lambda: leads(second), "the standby to lead", 40)
        assert second.get("/ui/info")["framework_id"] == fid
        took_over = time.time()
        time.sleep(4)
        client.update(dict(next(j for j in client.list() if j["name"] == "steady"), disabled=True))
        wait_for(
            lambda: all(t["state"] == "TASK_FINISHED" for t in tasks_of(cluster, fid)),
            "every run finished",
            60,
        )
        dues = sorted(int(t["id"].split(":")[1]) / 1000 for t in tasks_of(cluster, fid))
        assert len(dues) == len(set(dues)), "a slot ran twice"
        assert [d for d in dues if killed_at < d < took_over], "no slot fell into the outage"
        job = next(j for j in client.list() if j["name"] == "steady")
        assert job["skippedCount"] == 0 and job["successCount"] == len(dues)
        # The outage's slots come due together on the new leader: the first runs, the others
        # are dropped as Chronos drops a slot of a job with a run queued (docs/chronos.md).
        dropped = second.get("/v1/scheduler/job/stat/steady")["droppedCount"]
        assert len(dues) + dropped == round((dues[-1] - dues[0]) / 2.0) + 1, (dues, dropped)
        assert second.get("/metrics")["counters"]["runs_relaunched"]["count"] == 0
    finally:
        second.stop()
        first.stop()
