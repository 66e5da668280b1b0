"""Benchmark 9 (standalone stand-in): 10k simulated agents with 100k tasks re-register with a
restarted master.

Failover to a new leader is `bench_failover.py` (ZooKeeper; run by `run_all.py` when it
exists). Without ZooKeeper the stand-in is a master restart on the same port: simulated
agents in this process (``--preload_tasks``: each reports its tasks) register, the master is
SIGKILLed and started again, and the agents reconnect with Mesos' registration backoff
(random delay in [0, b], b doubling from 1 s while attempts fail) and re-register with their
tasks. Figures: from the new master answering /health to every agent re-registered (the
target, <= 5 s), and from the kill.

    .venv/bin/python bench/bench_reregister.py [--agents 10000] [--tasks_per_agent 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import (
    Figure,
    Master,
    cpu_seconds,
    exit_on_sigterm,
    print_table,
    processes,
    work_dir,
)

from butte.sim.agents import SimOptions, SimulatedCluster


async def _restart_once(master: Master, cluster: SimulatedCluster, timeout: float) -> dict:
    killed = time.monotonic()
    master.kill()
    master.start()
    await asyncio.to_thread(master.wait_healthy)
    ready = time.monotonic()
    cpu_ready = cpu_seconds(master.pid)
    await cluster.wait_registered(timeout=timeout, since=killed)
    done = time.monotonic()
    cpu = cpu_seconds(master.pid)
    metrics = await asyncio.to_thread(master.metrics)
    agents = len(cluster.agents)
    return {
        "from_ready": done - ready,
        "from_kill": done - killed,
        "tasks": metrics.get("master/tasks_running", 0.0),
        # Master CPU per agent once it answers /health, and in all (start-up included).
        "cpu_ms_per_agent": (cpu - cpu_ready) * 1000 / agents,
        "cpu_ms_per_agent_all": cpu * 1000 / agents,
    }


async def _drive(master: Master, agents: int, tasks_per_agent: int, rounds: int) -> list[dict]:
    options = SimOptions.from_text(
        f"cpus:{max(1, tasks_per_agent) * 0.1:g};mem:{max(1, tasks_per_agent) * 32}",
        preload_tasks=tasks_per_agent,
    )
    cluster = SimulatedCluster(master.address, agents, options)
    await cluster.start()
    try:
        await cluster.wait_registered(timeout=60 + agents / 50)
        return [await _restart_once(master, cluster, 60 + agents / 100) for _ in range(rounds)]
    finally:
        await cluster.stop()


def run_reregister(agents: int = 10_000, tasks_per_agent: int = 10, rounds: int = 2) -> list[dict]:
    with work_dir("reregister") as tmp:
        master = Master(tmp)
        with processes(master):
            master.start()
            master.wait_healthy()
            return asyncio.run(_drive(master, agents, tasks_per_agent, rounds))


def figures(results: list[dict], agents: int, tasks: int) -> list[Figure]:
    from_kill = ", ".join(f"{r['from_kill']:.1f}" for r in results)
    recovered = min(r["tasks"] for r in results)
    cpu = max(r["cpu_ms_per_agent"] for r in results)
    return [
        Figure(
            "9s",
            f"master restart: {agents} agents / {tasks} tasks re-registered (standalone)",
            [r["from_ready"] for r in results],
            "s",
            5.0,
            note=f"from the kill {from_kill} s; {recovered:,.0f} tasks running after; "
            f"master CPU {cpu:.3f} ms per agent",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--tasks_per_agent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    results = run_reregister(args.agents, args.tasks_per_agent, args.rounds)
    tasks = args.agents * args.tasks_per_agent
    print_table(figures(results, args.agents, tasks), "benchmark 9 (stand-in): restart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
