"""`ButteCluster(scheduler_on_agent=True)` whose scheduler task is lost (its process
SIGKILLed) against a real master and agent: a new scheduler task is launched on offered ports
(the old ones again: the same address, so the client reconnects by itself), every worker is
restarted against it, and the client computes again."""

from __future__ import annotations

import operator
import time

import pytest

from butte.core import task_states as ts
from butte.testing.require import require_module

require_module("distributed", "the dask extra: pip install butte[dask]")

import psutil  # noqa: E402
from distributed import Client  # noqa: E402

from butte.dask import ButteCluster  # noqa: E402
from butte.dask.plan import SchedulerLaunch, WorkerPlan, WorkerShape, place_scheduler  # noqa: E402
from butte.frameworks.offers import OfferView  # noqa: E402

PORTS = range(30200, 30220)
AGENT = f"cpus:3;mem:2048;disk:1000;ports:[{PORTS[0]}-{PORTS[-1]}]"
SCHEDULER = {"scheduler_on_agent": True, "scheduler_cpus": 0.5, "scheduler_memory": "384 MiB"}
WORKER = {"worker_cpus": 1, "worker_memory": "256 MiB", "quiet": True}


def view(agent: str, ports: tuple[tuple[int, int], ...]) -> OfferView:
    return OfferView("o1", agent, "h-" + agent, "*", 2.0, 1024.0, ports)


def test_a_replacement_scheduler_keeps_its_predecessors_ports_where_offered():
    shape = WorkerShape(0.5, 384, 2)
    old = SchedulerLaunch("a1", "h-a1", 30205, 30206)
    assert place_scheduler(view("a1", ((30200, 30210),)), shape, old) == old
    # Another agent, or the old ports not all offered: the offer's lowest ports.
    assert place_scheduler(view("a2", ((30200, 30210),)), shape, old) == SchedulerLaunch(
        "a2", "h-a2", 30200, 30201
    )
    assert place_scheduler(view("a1", ((30206, 30210),)), shape, old) == SchedulerLaunch(
        "a1", "h-a1", 30206, 30207
    )
    assert place_scheduler(view("a1", ((30200, 30210),)), shape) == SchedulerLaunch(
        "a1", "h-a1", 30200, 30201
    )


def test_restart_stops_every_launched_worker_and_wants_as_many_new_ones():
    plan = WorkerPlan("w", WorkerShape(1, 256, 2))
    plan.scale(3)
    plan.place(view("a1", ((1, 4),)))  # two of the three fit
    assert sorted(plan.live) == ["w-0", "w-1"] and plan.pending == ["w-2"]
    stops = plan.restart()
    assert sorted((s.name, s.agent_id, s.retire) for s in stops) == [
        ("w-0", "a1", False),
        ("w-1", "a1", False),
    ]
    assert not plan.live and sorted(plan.stopping) == ["w-0", "w-1"]
    assert len(plan.pending) == 3 and "w-2" in plan.pending and plan.restarted == 2
    assert plan.replaced == 0  # not counted as lost workers
    # Their last updates do not bring them back or replace them again.
    plan.update("w-0", ts.FINISHED)
    plan.update("w-1", ts.KILLED)
    assert len(plan.pending) == 3 and not plan.stopping
    plan.close()
    assert plan.restart() == [] and not plan.pending


def live_tasks(state: dict) -> list[dict]:
    return [t for f in state["frameworks"] for t in f["tasks"] if not ts.is_terminal(t["state"])]


def scheduler_process(address: str) -> psutil.Process:
    port = address.rsplit(":", 1)[1]
    (process,) = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "distributed.cli.dask_scheduler" in (p.info["cmdline"] or [])
        and port in (p.info["cmdline"] or [])
    ]
    return process


@pytest.mark.integration
@pytest.mark.timeout(200)
@pytest.mark.cluster(agents=1, resources=AGENT)
def test_a_lost_scheduler_task_is_replaced_and_its_workers_restarted_against_it(cluster):
    with ButteCluster(cluster.master_address, n_workers=2, **SCHEDULER, **WORKER) as dc:
        with Client(dc) as client:
            client.wait_for_workers(2, timeout=90)
            assert client.submit(operator.add, 1, 2).result(timeout=30) == 3
            address, first_task = dc.scheduler_address, dc.scheduler_task_id
            before = {w["name"] for w in client.scheduler_info()["workers"].values()}
            scheduler_process(address).kill()

            deadline = time.monotonic() + 90
            said: list[str] = []
            while time.monotonic() < deadline:
                said = [line for _, line in dc._cluster_manager_logs]
                if any(line.startswith("The Dask scheduler was replaced at") for line in said):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the scheduler was not replaced: {said}")
            assert dc.scheduler_replacements == 1
            assert f"The Dask scheduler was replaced at {address}, the same address" in "\n".join(
                said
            )
            assert dc.scheduler_address == address and dc.scheduler_task_id != first_task

            # The client reconnects to the same address by itself and computes again, on
            # two new workers (the old ones were stopped: their scheduler was gone).
            client.wait_for_workers(2, timeout=90)
            assert client.submit(operator.mul, 6, 7).result(timeout=30) == 42
            after = {w["name"] for w in client.scheduler_info()["workers"].values()}
            assert len(after) == 2 and not after & before
            assert {w["name"] for w in dc.scheduler_info["workers"].values()} == after

            state = cluster.state()
            (framework,) = state["frameworks"]
            tasks = {t["id"]: t for t in framework["tasks"] + framework["completed_tasks"]}
            assert tasks[dc.scheduler_task_id]["state"] == ts.RUNNING
            assert ts.is_terminal(tasks[first_task]["state"])
            for name in before:
                assert ts.is_terminal(tasks[name]["state"])
            assert framework["webui_url"] == f"{dc.dashboard_link.rsplit('/', 1)[0]}/status"
            assert dc.replaced_workers == 0 and len(dc.plan) == 2
    assert dc.status.name == "closed"
    cluster.wait_until(lambda s: not live_tasks(s), timeout=30, what="no task running")
