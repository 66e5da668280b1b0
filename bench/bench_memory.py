"""Benchmark 10: master memory with 50k agents and 500k tasks.

50k WebSockets are more than one 2-core box can hold next to a master, so this drives the
pure master core in a child process with the events a real cluster would send
(`synthetic.build_machine`: agent registrations, framework subscriptions, allocation runs,
ACCEPTs launching the tasks, TASK_STARTING and TASK_RUNNING updates from the agents and the
schedulers' acknowledgements) and reports the child's resident memory (VmRSS, which
includes the interpreter and every import) once everything is in place.

    .venv/bin/python bench/bench_memory.py [--agents 50000] [--tasks_per_agent 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from common import PYTHON, Figure, exit_on_sigterm, print_table


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def child(agents: int, tasks_per_agent: int) -> dict:
    """Runs in the child: builds the cluster and measures."""
    import synthetic

    base = _rss()
    started = time.perf_counter()
    machine = synthetic.build_machine(agents, tasks_per_agent)
    seconds = time.perf_counter() - started
    gc.collect()
    tasks = sum(len(fw.tasks) for fw in machine.frameworks.values())
    return {
        "rss": _rss(),
        "base_rss": base,
        "agents": len(machine.agents),
        "tasks": tasks,
        "build_seconds": seconds,
    }


def run_memory(agents: int = 50_000, tasks_per_agent: int = 10) -> dict:
    """Builds in a child process (a clean RSS) and returns its figures."""
    out = subprocess.run(
        [PYTHON, __file__, "--child", f"--agents={agents}", f"--tasks_per_agent={tasks_per_agent}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def figures(r: dict) -> list[Figure]:
    return [
        Figure(
            "10",
            f"master RSS, {r['agents']:,} agents / {r['tasks']:,} tasks (pure core, in-process)",
            [r["rss"] / 2**30],
            "GiB",
            4.0,
            note=(
                f"{(r['rss'] - r['base_rss']) / r['tasks']:.0f} B per task incl. agents; "
                f"built in {r['build_seconds']:.0f} s"
            ),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--tasks_per_agent", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.agents, args.tasks_per_agent)))
        return 0
    exit_on_sigterm()
    print_table(figures(run_memory(args.agents, args.tasks_per_agent)), "benchmark 10: memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
