"""Benchmark 7: the NSDI'11 probe -- a new framework's single 10 s task on a busy cluster.

A real master, ``--agents`` simulated agents (one 1-cpu slot each) and ``--frameworks``
busy frameworks in this process that keep the cluster full of tasks lasting 20-40 s
(``--task_duration``); they decline what they cannot use at once with a 1 s filter, as a
polite framework does. The master offers only resources with at least 0.1 cpus and 32 MB
(``--min_allocatable_resources``, see the note in `run_probe`). Once the cluster is at least
``--fill`` busy and the first wave of tasks has begun to end, a new framework subscribes,
launches one ``sleep 10`` task on its first offer and waits for TASK_FINISHED; the figure is
subscribe -> FINISHED (target < 10.5 s: under 0.5 s of scheduling overhead), measured
``--rounds`` times.

    .venv/bin/python bench/bench_probe.py [--agents 10000] [--frameworks 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import (
    Figure,
    Master,
    exit_on_sigterm,
    http_json,
    print_table,
    processes,
    sim_process,
    work_dir,
)
from frameworks import LaunchingFramework, TaskShape, offer_scalars

from butte.client.scheduler import SchedulerClient

PROBE_TASK = TaskShape(cpus=0.1, mem=32)


def _fits(offer: dict) -> bool:
    have = offer_scalars(offer)
    return have.get("cpus", 0) >= PROBE_TASK.cpus and have.get("mem", 0) >= PROBE_TASK.mem


async def probe_once(master: str, name: str, timeout: float = 60.0) -> float:
    """Subscribe -> one ``sleep 10`` task -> TASK_FINISHED; returns the seconds it took."""
    started = time.monotonic()
    client = SchedulerClient(master, {"name": name, "failover_timeout": 0.0})
    await client.subscribe()
    launched = False
    try:
        async with asyncio.timeout(timeout):
            async for event in client:
                if event["type"] == "OFFERS":
                    offers = event["offers"]["offers"]
                    fit = [o for o in offers if _fits(o)]
                    if launched or not fit:
                        # Filters hold only while an agent offers no more than this, so a
                        # long one on crumbs (mem without cpus) still lets freed slots in.
                        await client.decline(offers, refuse_seconds=3600)
                        continue
                    launched = True
                    task = {
                        "name": name,
                        "task_id": {"value": name},
                        "resources": PROBE_TASK.resources(),
                        "command": {"value": "sleep 10"},
                    }
                    await client.launch(fit[0], [task], refuse_seconds=3600)
                    rest = [o for o in offers if o is not fit[0]]
                    if rest:
                        await client.decline(rest, refuse_seconds=3600)
                elif event["type"] == "UPDATE":
                    status = event["update"]["status"]
                    await client.acknowledge_status(status)
                    if status["state"] == "TASK_FINISHED":
                        return time.monotonic() - started
                    if status["state"] not in ("TASK_STARTING", "TASK_RUNNING"):
                        raise RuntimeError(
                            f"probe task ended {status['state']}: {status.get('message')}"
                        )
    finally:
        await client.teardown()
        await client.close()
    raise RuntimeError("probe subscription ended")


def _metrics(master: Master) -> dict[str, float]:
    """/metrics/snapshot, or {} while the master is too busy to answer within a minute."""
    try:
        return http_json(f"{master.url}/metrics/snapshot", timeout=60)
    except OSError:
        return {}


async def drive(
    master: Master, agents: int, frameworks: int, rounds: int, fill: float, fill_timeout: float
) -> tuple[list[float], float]:
    busy = [
        LaunchingFramework(
            master.address,
            f"busy-{i}",
            TaskShape(cpus=1.0, mem=256.0, command="work"),
            tasks_per_offer=1,
            # A modest pipeline each: the fill then goes at the master's pace instead of
            # queueing thousands of calls in front of the probe.
            max_inflight=max(2, agents // frameworks // 5),
            refuse_seconds=1.0,
            hold_offers=False,
        )
        for i in range(frameworks)
    ]
    runners = [asyncio.create_task(fw.run()) for fw in busy]
    try:
        deadline = time.monotonic() + fill_timeout
        busy_fraction = 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            metrics = await asyncio.to_thread(_metrics, master)
            busy_fraction = metrics.get("master/cpus_percent", 0.0)
            if busy_fraction >= fill:
                break
        # Steady state: the first wave of tasks has started to end (the fill launched them
        # all at once, so before that nothing is ever free).
        while time.monotonic() < deadline + fill_timeout:
            metrics = await asyncio.to_thread(_metrics, master)
            if metrics.get("master/tasks_finished", 0) >= agents / 10:
                break
            await asyncio.sleep(1.0)
        samples = []
        for r in range(rounds):
            samples.append(await probe_once(master.address, f"probe-{r}"))
        return samples, busy_fraction
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)


def run_probe(
    agents: int = 10_000,
    frameworks: int = 200,
    rounds: int = 3,
    fill: float = 0.9,
    fill_timeout: float = 90.0,
    task_duration: str = "uniform:20-40secs",
) -> tuple[list[float], float]:
    """Starts the cluster and busy frameworks, runs the probes; (seconds, cluster use)."""
    with work_dir("probe") as tmp:
        # Offers must hold a whole task's worth of cpus AND mem: otherwise mem-only crumbs
        # of busy agents go to the lowest-share framework (the probe) first, raise its DRF
        # share, and the freed slots of that cycle go to the busy frameworks instead.
        master = Master(
            tmp, ["--allocation_interval=1secs", "--min_allocatable_resources=cpus:0.1;mem:32"]
        )
        sim = sim_process(
            tmp,
            master.address,
            agents,
            ["--resources=cpus:1;mem:1024;disk:1024", f"--task_duration={task_duration}"],
        )
        with processes(master, sim):
            master.start()
            master.wait_healthy()
            sim.start()
            master.wait_agents(agents, timeout=60 + agents / 100)
            return asyncio.run(drive(master, agents, frameworks, rounds, fill, fill_timeout))


def figures(samples: list[float], used: float, agents: int, frameworks: int) -> list[Figure]:
    return [
        Figure(
            "7",
            f"NSDI'11 probe: new fw's 10 s task, {agents} agents, {frameworks} busy fw",
            samples,
            "s",
            10.5,
            note=f"cluster {used:.0%} busy when probed",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--frameworks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fill", type=float, default=0.9)
    parser.add_argument("--task_duration", default="uniform:20-40secs")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    samples, used = run_probe(
        args.agents, args.frameworks, args.rounds, args.fill, task_duration=args.task_duration
    )
    print_table(figures(samples, used, args.agents, args.frameworks), "benchmark 7: probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
