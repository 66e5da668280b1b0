"""Benchmark 8: ``/master/state`` and operator GET_STATE at 10k agents / 100k tasks, and
allocation latency while they are polled.

A real master; a ``butte sim`` process with ``--agents`` agents that each report
``--tasks_per_agent`` running tasks (``--preload_tasks``: they register as after a master
failover, so 100k tasks exist in seconds) and are fully used by them; a few free simulated
agents in this process; a probe framework that, in a loop, REVIVEs and times how long its
next OFFERS takes (one allocation), then declines. Figures: the time of a full GET of
``/master/state`` and of a ``GET_STATE`` call (median of ``--rounds``), and the p99
allocation latency while another thread polls ``/master/state`` back to back, next to the
same without polling.

    .venv/bin/python bench/bench_state.py [--agents 10000] [--tasks_per_agent 10]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from common import (
    Figure,
    Master,
    exit_on_sigterm,
    http_bytes,
    percentile,
    print_table,
    processes,
    sim_process,
    work_dir,
)

from butte.client.scheduler import SchedulerClient
from butte.sim.agents import SimOptions, SimulatedCluster


def time_get(url: str, body: dict | None = None) -> tuple[float, int]:
    started = time.perf_counter()
    data = http_bytes(url, body, timeout=120)
    return time.perf_counter() - started, len(data)


async def allocation_latencies(master: str, seconds: float) -> list[float]:
    """REVIVE -> OFFERS round trips of a probe framework for ``seconds``."""
    client = SchedulerClient(master, {"name": "alloc-probe", "failover_timeout": 0.0})
    await client.subscribe()
    samples: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        sent = None
        async for event in client:
            if event["type"] != "OFFERS":
                continue
            if sent is not None:
                samples.append(time.monotonic() - sent)
            await client.decline(event["offers"]["offers"], refuse_seconds=0)
            if time.monotonic() > deadline:
                break
            sent = time.monotonic()
            await client.revive()
    finally:
        await client.teardown()
        await client.close()
    return samples


def poll_forever(url: str, stop: threading.Event, times: list[float]) -> None:
    while not stop.is_set():
        seconds, _ = time_get(url)
        times.append(seconds)


async def _measure(master: Master, rounds: int, seconds: float) -> dict:
    free = SimulatedCluster(
        master.address, 5, SimOptions.from_text("cpus:4;mem:8192", hostname_prefix="free")
    )
    await free.start()
    try:
        await free.wait_registered(timeout=30)
        state_url = f"{master.url}/master/state"
        state = [await asyncio.to_thread(time_get, state_url) for _ in range(rounds)]
        body = {"type": "GET_STATE"}
        api = f"{master.url}/api/v1"
        get_state = [await asyncio.to_thread(time_get, api, body) for _ in range(rounds)]
        quiet = await allocation_latencies(master.address, seconds)
        stop = threading.Event()
        polls: list[float] = []
        poller = threading.Thread(target=poll_forever, args=(state_url, stop, polls))
        poller.start()
        try:
            busy = await allocation_latencies(master.address, seconds)
        finally:
            stop.set()
            await asyncio.to_thread(poller.join)
        return {
            "state": [s for s, _ in state],
            "state_bytes": state[-1][1],
            "get_state": [s for s, _ in get_state],
            "get_state_bytes": get_state[-1][1],
            "alloc_quiet": quiet,
            "alloc_polled": busy,
            "polls": polls,
        }
    finally:
        await free.stop()


def run_state_bench(
    agents: int = 10_000, tasks_per_agent: int = 10, rounds: int = 5, seconds: float = 8.0
) -> dict:
    with work_dir("state") as tmp:
        master = Master(tmp, ["--allocation_interval=1secs"])
        sim = sim_process(
            tmp,
            master.address,
            agents,
            [
                f"--resources=cpus:{tasks_per_agent * 0.1:g};mem:{tasks_per_agent * 32}",
                f"--preload_tasks={tasks_per_agent}",
                "--task_duration=forever",
            ],
        )
        with processes(master, sim):
            master.start()
            master.wait_healthy()
            sim.start()
            master.wait_agents(agents, timeout=60 + agents / 50)
            result = asyncio.run(_measure(master, rounds, seconds))
            result["master_rss"] = master.rss_bytes()
            return result


def figures(r: dict, agents: int, tasks: int) -> list[Figure]:
    quiet, polled = r["alloc_quiet"], r["alloc_polled"]
    scale = f"{agents} agents / {tasks} tasks"
    return [
        Figure(
            "8a",
            f"GET /master/state, {scale}",
            r["state"],
            "s",
            1.0,
            note=f"{r['state_bytes'] / 1e6:.0f} MB",
        ),
        Figure(
            "8b",
            f"operator GET_STATE, {scale}",
            r["get_state"],
            "s",
            1.0,
            note=f"{r['get_state_bytes'] / 1e6:.0f} MB",
        ),
        Figure(
            "8c",
            "allocation latency p99 while /master/state is polled",
            [percentile(polled, 0.99)] if polled else [],
            "s",
            0.5,
            note=(
                f"quiet p99 {percentile(quiet, 0.99) * 1000:.0f} ms, polled p50 "
                f"{percentile(polled, 0.5) * 1000:.0f} ms, {len(r['polls'])} polls "
                f"of median {percentile(r['polls'], 0.5):.2f} s"
            ),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--tasks_per_agent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_state_bench(args.agents, args.tasks_per_agent, args.rounds, args.seconds)
    tasks = args.agents * args.tasks_per_agent
    print_table(figures(result, args.agents, tasks), "benchmark 8: state endpoints")
    print(f"master RSS {result['master_rss'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
