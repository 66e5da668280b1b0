"""`butte.dask.ButteCluster` against a real two-agent butte cluster with real Dask workers:
computations, the async form, adaptive scaling, and workers lost with their agent."""

from __future__ import annotations

import asyncio
import operator
import signal
import time

import pytest

from butte.cli.local import free_port
from butte.client.scheduler import MasterUnreachable
from butte.core import task_states as ts
from butte.testing.require import require_module

require_module("distributed", "the dask extra: pip install butte[dask]")
require_module("dask.array", "the dask extra: pip install butte[dask]")

import dask.array as da  # noqa: E402
import psutil  # noqa: E402
from distributed import Client  # noqa: E402

from butte.dask import ButteCluster  # noqa: E402

# One host, two agents: disjoint port ranges, room for two 512 MiB workers each.
AGENTS = [
    "cpus:2;mem:1024;disk:1024;ports:[31000-31099]",
    "cpus:2;mem:1024;disk:1024;ports:[31100-31199]",
]
FAST_PINGS = ["--agent_ping_timeout=500ms", "--max_agent_ping_timeouts=2"]
WORKER = {"worker_cpus": 1, "worker_memory": "512 MiB", "quiet": True}
pytestmark = pytest.mark.timeout(240)


def live_tasks(state: dict) -> list[dict]:
    return [t for f in state["frameworks"] for t in f["tasks"] if not ts.is_terminal(t["state"])]


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.1)


@pytest.mark.cluster(agents=2, resources=AGENTS)
def test_array_reduction_and_futures_on_two_agents_then_close_leaves_nothing(cluster):
    with ButteCluster(cluster.master_address, framework_name="dask-test", **WORKER) as dc:
        with Client(dc) as client:
            dc.scale(4)  # two per agent: the cluster is full
            client.wait_for_workers(4, timeout=90)
            state = cluster.state()
            (framework,) = state["frameworks"]
            assert framework["name"] == "dask-test"
            assert {t["slave_id"] for t in framework["tasks"]} == {a["id"] for a in state["slaves"]}
            assert {t["state"] for t in framework["tasks"]} == {ts.RUNNING}
            # the framework page links the Dask dashboard
            assert dc.dashboard_link and framework["webui_url"].startswith(
                dc.dashboard_link.rsplit("/", 1)[0]
            )
            x = da.arange(2_000_000, chunks=100_000)
            assert int((x % 7).sum().compute()) == sum(i % 7 for i in range(2_000_000))
            futures = client.map(operator.mul, range(200), range(200))
            total = client.submit(sum, futures)
            assert total.result(timeout=60) == sum(i * i for i in range(200))
            who = client.run(lambda dask_worker: dask_worker.name)
            assert sorted(who.values()) == sorted(dc.plan)
            logs = dc.get_logs()
            assert "Launching" in str(logs["Cluster"]) and len(logs) >= 2
    assert dc.status.name == "closed"
    cluster.wait_until(lambda s: not live_tasks(s), timeout=30, what="no task running")
    done = cluster.state()["completed_frameworks"]
    assert len(done) == 1 and len(done[0]["completed_tasks"]) == 4


class _ScalesWhileDeclining(ButteCluster):
    """Asks for a worker the moment its first idle decline (a 30 s filter) has reached the
    master, before the offers are synced: the window in which a scale() used to wait the
    filter out, as nothing cleared it."""

    async def _use_offer(self, offer: dict) -> None:
        client = self._client
        if client is not None and not getattr(self, "_hooked", False):
            self._hooked = True
            decline = client.decline

            async def declined_then_scaled(offers: list, refuse_seconds: float) -> None:
                await decline(offers, refuse_seconds=refuse_seconds)
                if refuse_seconds > 1 and not self.plan:
                    self._apply_scale(1)

            client.decline = declined_then_scaled  # type: ignore[method-assign]
        await super()._use_offer(offer)


@pytest.mark.cluster(agents=1, resources=AGENTS[:1])
def test_a_scale_during_an_idle_decline_launches_at_once(cluster):
    started = time.monotonic()
    with _ScalesWhileDeclining(cluster.master_address, **WORKER):
        wait_for(lambda: live_tasks(cluster.state()), "a worker launched", 25)
        assert time.monotonic() - started < 25  # not the decline's 30 s


@pytest.mark.cluster(agents=2, resources=AGENTS)
def test_async_form_and_adaptive_scaling_up_and_down(cluster):
    async def main() -> None:
        async with ButteCluster(cluster.master_address, asynchronous=True, **WORKER) as dc:
            dc.adapt(minimum=0, maximum=3, interval="200ms", wait_count=2, target_duration="1s")
            async with Client(dc, asynchronous=True) as client:
                # four seconds of work each: the adaptive target asks for the maximum
                futures = client.map(time.sleep, [4] * 6, pure=False)
                await wait_async(lambda: len(dc.scheduler_info["workers"]) == 3, "3 workers")
                assert len(live_tasks(cluster.state())) == 3
                assert await client.gather(futures) == [None] * 6
                del futures  # held results would keep a worker alive to hold them
                # idle: every worker is retired and its task ends
                await wait_async(lambda: not dc.plan, "adaptive scale down to 0", 60)
                await wait_async(lambda: not live_tasks(cluster.state()), "tasks ended", 30)

                def ended() -> list[dict]:
                    state = cluster.state()
                    return [t for f in state["frameworks"] for t in f["completed_tasks"]]

                # A task that ended stays among the tasks until its end is acknowledged.
                await wait_async(lambda: len(ended()) == 3, "all three tasks completed", 30)
                assert {t["state"] for t in ended()} <= {ts.FINISHED, ts.KILLED}

    asyncio.run(main())


async def wait_async(predicate, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.1)


@pytest.mark.cluster(agents=2, resources=AGENTS, master_flags=FAST_PINGS)
def test_workers_lost_with_their_agent_are_replaced(cluster):
    with ButteCluster(cluster.master_address, **WORKER) as dc, Client(dc) as client:
        dc.scale(2)
        client.wait_for_workers(2, timeout=90)
        by_agent = {t["slave_id"]: t["id"] for t in live_tasks(cluster.state())}
        agents = {a["id"] for a in cluster.state()["slaves"]}
        victim = next(iter(by_agent))
        # the agent's machine fails: the agent and the workers it ran die together
        handle = next(a for a in cluster.agents if agent_id_of(cluster, a) == victim)
        doomed = psutil.Process(handle.pid).children(recursive=True)
        assert doomed, "the agent runs the worker processes"
        handle.kill()
        for proc in doomed:
            with_suppressed(proc.send_signal, signal.SIGKILL)
        wait_for(lambda: dc.replaced_workers >= 1, "a lost worker replaced", 60)
        client.wait_for_workers(2, timeout=90)
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, "2 workers again", 60)
        survivors = live_tasks(cluster.state())
        assert len(survivors) == 2 and {t["slave_id"] for t in survivors} == agents - {victim}
        assert client.submit(sum, range(1000)).result(timeout=60) == 499500
    cluster.wait_until(lambda s: not live_tasks(s), timeout=30, what="no task running")


def agent_id_of(cluster, handle) -> str | None:
    for agent in cluster.state()["slaves"]:
        if agent["pid"].endswith(f":{handle.port}"):
            return agent["id"]
    return None


def with_suppressed(fn, *args) -> None:
    try:
        fn(*args)
    except psutil.Error:
        pass


def test_bad_arguments_and_an_unreachable_master_raise_clearly():
    with pytest.raises(ValueError, match="worker_cpus"):
        ButteCluster("127.0.0.1:5050", worker_cpus=0)
    with pytest.raises(ValueError, match="below 32 MiB"):
        ButteCluster("127.0.0.1:5050", worker_memory="1 MiB")
    with pytest.raises(MasterUnreachable):
        ButteCluster(f"127.0.0.1:{free_port()}", connect_timeout=0.5, quiet=True)
