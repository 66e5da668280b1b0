"""Two `butte.dask.ButteCluster`s on one real agent: both compute, each scheduler is where its
cluster says it is, and every port a worker task listens on (the worker's, its HTTP
server's, the nanny's) is one its offer gave it, so tasks on one agent never race for a
port."""

from __future__ import annotations

import operator

import pytest

from butte.testing.require import require_module

require_module("distributed", "the dask extra: pip install butte[dask]")

from distributed import Client  # noqa: E402

from butte.dask import ButteCluster  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.cluster(agents=1, resources="cpus:2;mem:2048;disk:1000;ports:[22900-22949]"),
]
WORKER = {"worker_cpus": 1, "worker_memory": "256 MiB", "n_workers": 1, "quiet": True}


def task_ports(state: dict) -> dict[str, set[int]]:
    """The ports each live task took from its offer, by task id."""
    out: dict[str, set[int]] = {}
    for framework in state["frameworks"]:
        for task in framework["tasks"]:
            ports = set()
            for part in task["resources"].get("ports", "[]").strip("[]").split(","):
                if part.strip():
                    begin, _, end = part.strip().partition("-")
                    ports.update(range(int(begin), int(end or begin) + 1))
            out[task["id"]] = ports
    return out


def worker_ports(client: Client) -> dict[str, set[int]]:
    """The ports each worker listens on, as the Dask scheduler knows them, by name."""
    out: dict[str, set[int]] = {}
    for address, worker in client.scheduler_info()["workers"].items():
        ports = {int(address.rsplit(":", 1)[1])}
        ports.update(int(p) for p in (worker.get("services") or {}).values())
        if worker.get("nanny"):
            ports.add(int(worker["nanny"].rsplit(":", 1)[1]))
        out[worker["name"]] = ports
    return out


def test_two_dask_clusters_on_one_agent_listen_only_on_offered_ports(cluster):
    with (
        ButteCluster(cluster.master_address, **WORKER) as plain,
        ButteCluster(cluster.master_address, nanny=True, **WORKER) as nannied,
        Client(plain) as a,
        Client(nannied) as b,
    ):
        a.wait_for_workers(1, timeout=60)
        b.wait_for_workers(1, timeout=60)
        # Each client reaches its own scheduler at the address its cluster gives.
        assert plain.scheduler_address != nannied.scheduler_address
        assert a.scheduler.address == plain.scheduler_address
        assert b.scheduler.address == nannied.scheduler_address
        assert a.submit(operator.add, 1, 2).result() == 3
        assert b.submit(operator.mul, 3, 4).result() == 12
        offered = task_ports(cluster.state())
        listening = {**worker_ports(a), **worker_ports(b)}
        assert set(listening) == set(offered) and len(listening) == 2
        for name, ports in listening.items():
            # The worker, its HTTP server (and the nanny): each on a port of its own offer.
            assert len(ports) == len(offered[name]) and ports == offered[name], (name, ports)
        every = [p for ports in offered.values() for p in ports]
        assert len(every) == len(set(every)) == 5
