"""`ButteCluster(scheduler_on_agent=True)`: the Dask scheduler runs as a butte task and
listens, with its dashboard, on ports its offer gave it (as the workers do), against a real
master and agent whose ports are a range of their own; a scheduler that no offer holds makes
the cluster wait, saying what it waits for, and then give up."""

from __future__ import annotations

import operator
import time

import pytest

from butte.core import task_states as ts
from butte.testing.require import require_module

require_module("distributed", "the dask extra: pip install butte[dask]")

from distributed import Client  # noqa: E402

from butte.dask import ButteCluster  # noqa: E402
from butte.dask.cluster import scheduler_task_info  # noqa: E402
from butte.dask.plan import SchedulerLaunch, WorkerShape  # noqa: E402

PORTS = range(28000, 28020)
AGENT = f"cpus:3;mem:2048;disk:1000;ports:[{PORTS[0]}-{PORTS[-1]}]"
SCHEDULER = {"scheduler_on_agent": True, "scheduler_cpus": 0.5, "scheduler_memory": "384 MiB"}
WORKER = {"worker_cpus": 1, "worker_memory": "256 MiB", "quiet": True}


def listening_ports() -> set[int]:
    """Every TCP port something on this host listens on (/proc/net/tcp, state 0A)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def task_ports(task: dict) -> set[int]:
    out: set[int] = set()
    for part in task["resources"].get("ports", "[]").strip("[]").split(","):
        if part.strip():
            begin, _, end = part.strip().partition("-")
            out.update(range(int(begin), int(end or begin) + 1))
    return out


def live_tasks(state: dict) -> list[dict]:
    return [t for f in state["frameworks"] for t in f["tasks"] if not ts.is_terminal(t["state"])]


def test_scheduler_task_info_passes_the_offered_ports_to_dask_scheduler():
    launch = SchedulerLaunch("a1", "10.0.0.5", 28000, 28001)
    info = scheduler_task_info(
        launch, "dask-x-scheduler", WorkerShape(0.5, 384, 2), "dev", "/py", {"A": "1"}
    )
    argv = info["command"]["arguments"]
    assert argv[:3] == ["/py", "-m", "distributed.cli.dask_scheduler"]
    assert argv[3:] == [
        "--host",
        "10.0.0.5",
        "--port",
        "28000",
        "--dashboard-address",
        "10.0.0.5:28001",
    ]
    assert info["command"]["environment"] == {"variables": [{"name": "A", "value": "1"}]}
    assert info["task_id"] == {"value": "dask-x-scheduler"}
    assert info["agent_id"] == {"value": "a1"}
    ports = [r for r in info["resources"] if r["name"] == "ports"]
    assert ports[0]["ranges"]["range"] == [{"begin": 28000, "end": 28001}]
    assert all(r["allocation_info"]["role"] == "dev" for r in info["resources"])
    bare = scheduler_task_info(
        SchedulerLaunch("a1", "h", 28002, None), "s", WorkerShape(1, 512, 1), "*", "/py", {}
    )
    assert bare["command"]["arguments"][-1] == "--no-dashboard"
    assert "environment" not in bare["command"]


def test_scheduler_on_agent_refuses_what_it_cannot_honour():
    with pytest.raises(ValueError, match="scheduler_host"):
        ButteCluster("127.0.0.1:1", scheduler_on_agent=True, scheduler_host="127.0.0.1")
    with pytest.raises(ValueError, match="dashboard_address"):
        ButteCluster("127.0.0.1:1", scheduler_on_agent=True, dashboard_address=":8787")
    with pytest.raises(ValueError, match="scheduler_memory"):
        ButteCluster("127.0.0.1:1", scheduler_on_agent=True, scheduler_memory="1 MiB")


@pytest.mark.integration
@pytest.mark.timeout(150)
@pytest.mark.cluster(agents=1, resources=AGENT)
def test_scheduler_task_listens_on_offered_ports_and_the_cluster_computes(cluster):
    with ButteCluster(cluster.master_address, n_workers=2, **SCHEDULER, **WORKER) as dc:
        with Client(dc) as client:
            client.wait_for_workers(2, timeout=90)
            assert client.submit(operator.add, 1, 2).result(timeout=30) == 3
            assert sum(client.gather(client.map(operator.mul, range(50), range(50)))) == sum(
                i * i for i in range(50)
            )
            state = cluster.state()
            (framework,) = state["frameworks"]
            tasks = {t["id"]: t for t in framework["tasks"]}
            scheduler = tasks[dc.scheduler_task_id]
            assert scheduler["state"] == ts.RUNNING
            port = int(dc.scheduler_address.rsplit(":", 1)[1])
            dashboard = int(dc.dashboard_link.split("://")[1].split("/")[0].rsplit(":", 1)[1])
            # Both of the scheduler's ports are its task's offered ports, from the agent's
            # range, and something listens on them.
            assert task_ports(scheduler) == {port, dashboard} and {port, dashboard} <= set(PORTS)
            assert {port, dashboard} <= listening_ports()
            assert client.scheduler.address == dc.scheduler_address
            # The framework page links the scheduler task's dashboard.
            assert framework["webui_url"] == f"{dc.dashboard_link.rsplit('/', 1)[0]}/status"
            # The workers reach that scheduler and listen on ports of their own offers.
            workers = client.scheduler_info()["workers"]
            assert len(workers) == 2
            for address, worker in workers.items():
                assert int(address.rsplit(":", 1)[1]) in task_ports(tasks[worker["name"]])
            every = [p for t in tasks.values() for p in task_ports(t)]
            assert len(every) == len(set(every)) == 6 and set(every) <= set(PORTS)
    assert dc.status.name == "closed"
    cluster.wait_until(lambda s: not live_tasks(s), timeout=30, what="no task running")


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.cluster(agents=1, resources="cpus:2;mem:1024;disk:1000;ports:[28020-28020]")
def test_scheduler_task_waits_for_an_offer_with_two_ports_and_says_so(cluster):
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        ButteCluster(cluster.master_address, scheduler_timeout=12, **SCHEDULER, **WORKER)
    message = str(raised.value)
    assert time.monotonic() - started < 40
    assert "waiting for an offer of 0.5 cpus, 384 MiB mem and 2 port(s)" in message
    assert "largest offer so far 2 cpus, 1024 MiB mem, 1 ports" in message
    assert message.endswith("the last offer lacked 1 of 2 ports")
    # Nothing was launched on the one-port offer, and nothing is left behind.
    state = cluster.state()
    assert not live_tasks(state)
    assert all(not f["completed_tasks"] for f in state.get("completed_frameworks", []))


# A scheduler task lost after it ran is replaced: tests/frameworks/test_dask_scheduler_lost.py.
