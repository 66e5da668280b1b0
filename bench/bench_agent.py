"""Benchmark 6: one real agent runs 2,000 ``true`` tasks, against this machine's raw spawn rate.

A real master and one real ``butte agent`` (command executors, real processes); a
`LaunchingFramework` keeps ``--inflight`` tasks between ACCEPT and their terminal update and
launches ``--tasks`` ``true`` tasks. tasks/s = tasks / (first ACCEPT .. last TASK_FINISHED).
In the same run, the raw spawn rate: ``os.posix_spawn`` of ``/bin/true`` with 64 children in
flight, reaped with ``os.wait``, before and after the tasks (after: once the agent's trash
thread has deleted the checkpoint trees it was given, whose CPU counts as the agent's). The
figure is the ratio of the two (target >= 0.5).

256 tasks are in flight by default: with 64, the master's 100 ms offer cycle bounded the
launch rate (about 35 tasks per offer, some 350 tasks/s), below what the agent can do, so
the figure measured the allocation interval rather than the agent.

``--isolation`` runs the agent with those isolators (under a cgroups root of its own); the
target of ``cgroups/cpu,cgroups/mem,cgroups/pids,namespaces/pid`` is >= 0.25 (row 6b). The
CPU each process used per task is printed: the agent, its helper processes (the executor
zygote and the command launcher), and the executors and tasks they reaped (counted in their
children's time; plain command tasks run under the launcher without an executor process),
the master, and the framework (this process, while the tasks run).
`bench/agent_floor.py` says what of that CPU is the floor on this machine.
``--no-checkpoint`` runs a framework that does not checkpoint, so the agent writes no
checkpoint files for its tasks: the agent's cost without that file-system work.

    .venv/bin/python bench/bench_agent.py [--tasks 2000] [--inflight 256] [--isolation ...]
        [--no-checkpoint]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path

# First: common puts this checkout first on sys.path, so butte below is this checkout's.
from common import (
    Figure,
    cpu_seconds,
    exit_on_sigterm,
    master_with_agent,
    print_table,
    raw_spawn,
    work_dir,
)
from frameworks import LaunchingFramework, TaskShape, finish_rate

from butte.agent import paths

ISOLATED = "cgroups/cpu,cgroups/mem,cgroups/pids,namespaces/pid"


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_breakdown(agent_pid: int) -> dict[str, float]:
    """CPU seconds so far of the agent, its zygote and command launcher, and what they reaped
    (executors and, through them, their tasks)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"agent": cpu_seconds(agent_pid), "zygote+launcher": 0.0, "executors+tasks": 0.0}
    children: list[int] = []
    for task in Path(f"/proc/{agent_pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    for child in children:
        fields = _stat(child)
        if fields:
            out["zygote+launcher"] += (int(fields[11]) + int(fields[12])) / tick
            out["executors+tasks"] += (int(fields[13]) + int(fields[14])) / tick
    return out


def others(master_pid: int) -> dict[str, float]:
    """CPU seconds so far of the master and of this process, which runs the framework (the
    raw spawn runs are outside the window, so their children do not count)."""
    return {"master": cpu_seconds(master_pid), "framework": cpu_seconds(os.getpid())}


async def _drive(
    master: str, tasks: int, inflight: int, timeout: float, checkpoint: bool
) -> tuple[float, int]:
    fw = LaunchingFramework(
        master,
        "bench-agent",
        TaskShape(cpus=0.01, mem=4.0, command="true"),
        tasks_per_offer=inflight,
        max_inflight=inflight,
        max_tasks=tasks,
        until_terminal=True,
        checkpoint=checkpoint,
    )
    return await finish_rate(fw, timeout), fw.stats.errors


def trash_emptied(agent_work_dir: Path, timeout: float = 60.0) -> None:
    """Waits until the agent's trash thread has deleted the checkpoint trees it was given
    (ended frameworks'; default and custom executors' runs), so that its CPU is counted as
    the agent's and does not slow the raw spawns measured after the run."""
    trash = Path(paths.meta_trash_dir(str(agent_work_dir)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(trash.iterdir()):
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)


def run_agent_bench(
    tasks: int = 2000,
    inflight: int = 256,
    timeout: float = 300.0,
    isolation: str | None = None,
    checkpoint: bool = True,
) -> dict:
    """Returns tasks/s, raw spawn/s before and after, errors and CPU per task by process."""
    extra = []
    if isolation:
        extra = [f"--isolation={isolation}", f"--cgroups_root=butte-bench-{uuid.uuid4().hex[:8]}"]
    with work_dir("agent") as tmp, master_with_agent(tmp, extra) as (master, agent):
        raw_before = raw_spawn(tasks, 64).rate
        cpu_before = cpu_breakdown(agent.pid) | others(master.pid)
        rate, errors = asyncio.run(_drive(master.address, tasks, inflight, timeout, checkpoint))
        trash_emptied(tmp / "agent")
        cpu_after = cpu_breakdown(agent.pid) | others(master.pid)
        raw_after = raw_spawn(tasks, 64).rate
    cpu_per_task = {k: (cpu_after[k] - cpu_before[k]) / tasks for k in cpu_after}
    return {
        "tasks_per_second": rate,
        "raw": [raw_before, raw_after],
        "errors": errors,
        "cpu_per_task": cpu_per_task,
        "checkpoint": checkpoint,
    }


def figures(
    result: dict, number: str = "6", tasks: int = 2000, isolation: str | None = None
) -> list[Figure]:
    raw = sum(result["raw"]) / len(result["raw"])
    rate = result["tasks_per_second"]
    cpu = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in result.get("cpu_per_task", {}).items())
    note = (
        f"{rate:,.0f} tasks/s vs raw spawn {raw:,.0f}/s "
        f"({result['raw'][0]:,.0f}/{result['raw'][1]:,.0f}), {result['errors']} errors; "
        f"CPU per task: {cpu}"
    )
    where = f" with {isolation}" if isolation else ""
    if not result.get("checkpoint", True):
        where += " (framework not checkpointing)"
    return [
        Figure(
            number,
            f"real agent{where}, {tasks} `true` tasks: tasks/s / raw spawn rate",
            [rate / raw],
            "x",
            0.25 if isolation else 0.5,
            higher_is_better=True,
            note=note,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument(
        "--isolation",
        default=None,
        help=f"the agent's --isolation (e.g. {ISOLATED}; needs root and cgroups)",
    )
    parser.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        help="the framework does not checkpoint (the agent writes no checkpoint files for its "
        "tasks): what the agent costs without the file-system work",
    )
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_agent_bench(
        args.tasks, args.inflight, isolation=args.isolation, checkpoint=args.checkpoint
    )
    number = "6b" if args.isolation else "6"
    rows = figures(result, number, args.tasks, args.isolation)
    print_table(rows, "benchmark 6: one real agent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
