"""Benchmark 6: one real agent runs 2,000 ``true`` tasks, against this machine's raw spawn rate.

A real master and one real ``butte agent`` (command executors, real processes); a
`LaunchingFramework` keeps ``--inflight`` tasks between ACCEPT and their terminal update and
launches ``--tasks`` ``true`` tasks. tasks/s = tasks / (first ACCEPT .. last TASK_FINISHED).
In the same run, the raw spawn rate: ``os.posix_spawn`` of ``/bin/true`` with 64 children in
flight, reaped with ``os.wait``. The figure is the ratio of the two (target >= 0.5).

    .venv/bin/python bench/bench_agent.py [--tasks 2000] [--inflight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from common import (
    BUTTE,
    Figure,
    Master,
    Process,
    exit_on_sigterm,
    free_port,
    print_table,
    processes,
    work_dir,
)
from frameworks import LaunchingFramework, TaskShape

AGENT_RESOURCES = "cpus:64;mem:262144;disk:100000;ports:[31000-32000]"


def raw_spawn_rate(count: int = 2000, inflight: int = 64) -> float:
    """``/bin/true`` processes per second with ``inflight`` children at a time."""
    env = {"PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    running = done = 0
    launched = 0
    while done < count:
        while running < inflight and launched < count:
            os.posix_spawn("/bin/true", ["true"], env)
            running += 1
            launched += 1
        os.wait()
        running -= 1
        done += 1
    return count / (time.perf_counter() - started)


async def _drive(master: str, tasks: int, inflight: int, timeout: float) -> tuple[float, int]:
    fw = LaunchingFramework(
        master,
        "bench-agent",
        TaskShape(cpus=0.01, mem=4.0, command="true"),
        tasks_per_offer=inflight,
        max_inflight=inflight,
        max_tasks=tasks,
        until_terminal=True,
    )
    runner = asyncio.create_task(fw.run())
    try:
        await asyncio.wait_for(fw.done.wait(), timeout)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    first = min((t - lat for t, lat in fw.stats.latencies), default=time.monotonic())
    elapsed = time.monotonic() - first
    return fw.stats.finished / elapsed, fw.stats.errors


def run_agent_bench(tasks: int = 2000, inflight: int = 64, timeout: float = 300.0) -> dict:
    """Returns tasks/s, raw spawn/s before and after, and errors."""
    with work_dir("agent") as tmp:
        master = Master(tmp, ["--allocation_interval=100ms"])
        port = free_port()
        agent = Process(
            "agent",
            [
                *BUTTE,
                "agent",
                f"--master={master.address}",
                f"--port={port}",
                f"--work_dir={tmp / 'agent'}",
                f"--resources={AGENT_RESOURCES}",
                "--logging_level=WARNING",
            ],
            Path(tmp) / "agent.log",
        )
        with processes(master, agent):
            master.start()
            master.wait_healthy()
            agent.start()
            master.wait_agents(1, timeout=30)
            raw_before = raw_spawn_rate(tasks, 64)
            rate, errors = asyncio.run(_drive(master.address, tasks, inflight, timeout))
            raw_after = raw_spawn_rate(tasks, 64)
    return {"tasks_per_second": rate, "raw": [raw_before, raw_after], "errors": errors}


def figures(result: dict, number: str = "6", tasks: int = 2000) -> list[Figure]:
    raw = sum(result["raw"]) / len(result["raw"])
    rate = result["tasks_per_second"]
    note = (
        f"{rate:,.0f} tasks/s vs raw spawn {raw:,.0f}/s "
        f"({result['raw'][0]:,.0f}/{result['raw'][1]:,.0f}), {result['errors']} errors"
    )
    return [
        Figure(
            number,
            f"real agent, {tasks} `true` tasks: tasks/s / raw spawn rate",
            [rate / raw],
            "x",
            0.5,
            higher_is_better=True,
            note=note,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=64)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_agent_bench(args.tasks, args.inflight)
    print_table(figures(result, tasks=args.tasks), "benchmark 6: one real agent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
