"""Benchmark 5: end to end through real HTTP, ACCEPT -> TASK_RUNNING received.

A real ``butte master`` process, ``--agents`` simulated agents in a ``butte sim`` process
(tasks run until the end), and ``--frameworks`` `LaunchingFramework` schedulers in this
process, each keeping up to ``--inflight`` tasks between ACCEPT and TASK_RUNNING and
acknowledging every update (TASK_STARTING must be acknowledged before the agent sends
TASK_RUNNING, exactly as with a real agent). After ``--warmup`` seconds it counts the
TASK_RUNNING events that arrive during ``--seconds``: tasks/s per one-second bucket
(median/min/max) and the latency percentiles of those tasks.

    .venv/bin/python bench/bench_e2e.py                      # 2,000 agents, 10 frameworks
    .venv/bin/python bench/bench_e2e.py --agents 200 --frameworks 2 --seconds 5 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import time
from dataclasses import dataclass

from common import (
    Figure,
    Master,
    cpu_seconds,
    exit_on_sigterm,
    percentile,
    print_table,
    processes,
    sim_process,
    work_dir,
)
from frameworks import LaunchingFramework, TaskShape


@dataclass
class E2EResult:
    """Throughput buckets and latencies of one run."""

    per_second: list[float]
    latencies: list[float]
    launched: int
    errors: int
    # CPU seconds each process used during the measured window
    cpu: dict[str, float]
    seconds: float

    @property
    def tasks_per_second(self) -> float:
        return sum(self.per_second) / len(self.per_second) if self.per_second else 0.0


async def drive(
    master: str,
    frameworks: int,
    warmup: float,
    seconds: float,
    inflight: int,
    tasks_per_offer: int,
    pids: dict[str, int],
    credential: tuple[str, str] | None = None,
) -> E2EResult:
    """Runs the frameworks against an already running cluster and measures."""
    fws = [
        LaunchingFramework(
            master,
            f"bench-e2e-{i}",
            # Runs until the end (as the simulator's --task_duration=forever): "sleep N"
            # would give every task a timer in the simulator, 4-5 objects each that its full
            # garbage collections walk (0.6-1.8 s pauses at ~100k tasks).
            TaskShape(cpus=0.1, mem=32.0, command="sleep infinity"),
            tasks_per_offer=tasks_per_offer,
            max_inflight=inflight,
            # Every offer carries tasks_per_offer tasks, also once the in-flight budget is
            # full (see frameworks.py): the offers of one allocation interval do not bound it.
            full_batches=True,
            credential=credential,
        )
        for i in range(frameworks)
    ]
    runners = [asyncio.create_task(fw.run()) for fw in fws]
    try:
        await asyncio.sleep(warmup)
        start = time.monotonic()
        cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(seconds)
        end = time.monotonic()
        cpu = {name: cpu_seconds(pid) - cpu_start[name] for name, pid in pids.items()}
    finally:
        for fw in fws:
            fw.launching = False
        for runner in runners:
            runner.cancel()
        done, pending = await asyncio.wait(runners, timeout=10)
        if pending:
            for t in asyncio.all_tasks():
                t.print_stack(limit=6)
            raise RuntimeError("frameworks did not stop")
    buckets = [0.0] * max(1, int(seconds))
    latencies = []
    for fw in fws:
        for at, latency in fw.stats.latencies:
            if start <= at < end:
                latencies.append(latency)
                index = min(int(at - start), len(buckets) - 1)
                buckets[index] += 1
    for runner in runners:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            runner.result()
    return E2EResult(
        per_second=buckets,
        latencies=latencies,
        launched=sum(fw.stats.launched for fw in fws),
        errors=sum(fw.stats.errors for fw in fws),
        cpu=cpu,
        seconds=end - start,
    )


def run_e2e(
    agents: int = 2000,
    frameworks: int = 10,
    seconds: float = 15.0,
    warmup: float = 5.0,
    inflight: int = 200,
    tasks_per_offer: int = 4,
    allocation_interval: str = "1secs",
    master_flags: tuple[str, ...] = (),
    auth: bool = False,
) -> E2EResult:
    """Starts a master and the simulated agents, drives the frameworks, stops everything.
    ``auth``: the master authenticates frameworks and operators and checks ACLs
    (register_frameworks and run_tasks for the frameworks' principal), to measure their
    cost."""
    with work_dir("e2e") as tmp:
        credential = None
        if auth:
            credential = ("bench", "bench-secret")
            creds = os.path.join(tmp, "credentials")
            with open(creds, "w") as f:
                f.write("bench bench-secret\nops ops-secret\n")
            acls = {
                "permissive": False,
                "register_frameworks": [{"principals": {"values": ["bench"]}}],
                "run_tasks": [{"principals": {"values": ["bench"]}, "users": {"type": "ANY"}}],
            }
            master_flags = (
                *master_flags,
                "--authenticate_frameworks",
                "--authenticate_http_readwrite",
                f"--credentials={creds}",
                f"--acls={json.dumps(acls)}",
            )
        master = Master(tmp, [f"--allocation_interval={allocation_interval}", *master_flags])
        sim = sim_process(
            tmp,
            master.address,
            agents,
            ["--resources=cpus:8;mem:16384;disk:65536", "--task_duration=forever"],
        )
        with processes(master, sim):
            master.start()
            master.wait_healthy()
            sim.start()
            master.wait_agents(agents, timeout=60 + agents / 100)
            pids = {"master": master.pid, "sim": sim.pid, "frameworks": os.getpid()}
            # This process runs the frameworks: with the collector settings of `butte master`
            # and `butte sim` (by default a busy asyncio scheduler ran a full collection of
            # 10-70 ms four times a second).
            thresholds = gc.get_threshold()
            gc.set_threshold(10_000, 10, 10)
            try:
                return asyncio.run(
                    drive(
                        master.address,
                        frameworks,
                        warmup,
                        seconds,
                        inflight,
                        tasks_per_offer,
                        pids,
                        credential,
                    )
                )
            finally:
                gc.set_threshold(*thresholds)


def cpu_text(result: E2EResult) -> str:
    """CPU use of each process during the window, and each one's CPU per task."""
    busy = ", ".join(f"{k} {v / result.seconds:.0%}" for k, v in result.cpu.items())
    tasks = len(result.latencies)
    per_task = ", ".join(
        f"{k} {v / tasks * 1e6:.0f}" if tasks else f"{k} nan" for k, v in result.cpu.items()
    )
    return f"CPU during the window: {busy}; CPU per task (us): {per_task}"


def figures(result: E2EResult, number: str = "5", label: str = "") -> list[Figure]:
    """The two rows of benchmark 5."""
    lat = result.latencies
    note = (
        f"p50 {percentile(lat, 0.5) * 1000:.0f} ms, max {max(lat, default=0) * 1000:.0f} ms, "
        f"{len(lat)} tasks, {result.errors} errors"
    )
    return [
        Figure(
            f"{number}a",
            f"e2e ACCEPT->RUNNING tasks/s{label}",
            result.per_second,
            "tasks/s",
            2000.0,
            higher_is_better=True,
        ),
        Figure(
            f"{number}b",
            f"e2e ACCEPT->RUNNING p99 latency{label}",
            [percentile(lat, 0.99)] if lat else [],
            "s",
            1.0,
            note=note,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--frameworks", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=200, help="per framework")
    parser.add_argument("--tasks_per_offer", type=int, default=4)
    parser.add_argument("--allocation_interval", default="1secs")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="with authentication (frameworks, operators) and ACLs on, to compare",
    )
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_e2e(
        args.agents,
        args.frameworks,
        args.seconds,
        args.warmup,
        args.inflight,
        args.tasks_per_offer,
        args.allocation_interval,
        auth=args.auth,
    )
    label = f" ({args.agents} agents, {args.frameworks} fw{', auth+ACLs' if args.auth else ''})"
    print_table(figures(result, label=label), "benchmark 5: end to end")
    print(cpu_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
