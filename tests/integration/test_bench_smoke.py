"""The benchmark harness works: a tiny run of benchmark 5 (end to end through real HTTP,
simulated agents, asyncio frameworks), of benchmark 6 (one real agent) and of
`bench/agent_floor.py`. The full benchmarks are
`bench/run_all.py`, not tests."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_tiny_end_to_end_benchmark() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_e2e
    finally:
        sys.path.remove(str(BENCH))
    result = bench_e2e.run_e2e(
        agents=50,
        frameworks=2,
        seconds=2.0,
        warmup=1.0,
        inflight=20,
        allocation_interval="100ms",
    )
    assert result.errors == 0
    assert result.latencies, "no task reached TASK_RUNNING in the window"
    assert result.tasks_per_second > 0
    assert all(0 < lat < 10 for lat in result.latencies)
    rows = bench_e2e.figures(result)
    assert [r.number for r in rows] == ["5a", "5b"]
    assert rows[0].verdict in ("ok", "MISS") and rows[1].samples


def test_agent_floor_prints_every_labelled_figure() -> None:
    """`bench/agent_floor.py` at a tiny size: each labelled line comes with a number."""
    run = subprocess.run(
        [sys.executable, str(BENCH / "agent_floor.py"), "--tasks", "40", "--batch", "8"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    number = r"-?[\d,]+(\.\d+)?"
    labels = [
        rf"raw spawn rate: {number} /s",
        rf"CPU per spawned child: {number} ms",
        rf"sandbox per task: {number} ms CPU, {number} ms wall",
        rf"checkpoint per task, writer thread: {number} ms CPU, {number} ms wall",
        rf"checkpoint per task, trash thread: {number} ms CPU",
        rf"file-system floor without checkpointing: {number} ms CPU",
        rf"file-system floor with checkpointing: {number} ms CPU",
        rf"budget per task at 0.5x raw: {number} ms CPU",
        rf"task's own process \(child \+ spawn and reap\): {number} ms CPU",
        rf"left for agent, master and framework without checkpointing: {number} ms",
        rf"left for agent, master and framework with checkpointing: {number} ms",
    ]
    for label in labels:
        assert re.search(rf"^{label}", run.stdout, re.MULTILINE), (label, run.stdout)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_agent_benchmark_runs_every_task_and_counts_each_process(
    tmp_path: Path, checkpoint: bool
) -> None:
    """`bench/bench_agent.py` at a tiny size, with and without a checkpointing framework:
    every task ends and each process's CPU is counted; its wait for the agent's checkpoint
    trash returns at once without a trash and waits out its timeout while a tree is left."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_agent
    finally:
        sys.path.remove(str(BENCH))
    result = bench_agent.run_agent_bench(tasks=30, inflight=8, timeout=60, checkpoint=checkpoint)
    assert result["errors"] == 0
    assert result["tasks_per_second"] > 0 and all(r > 0 for r in result["raw"])
    cpu = result["cpu_per_task"]
    assert set(cpu) == {"agent", "zygote+launcher", "executors+tasks", "master", "framework"}
    # /proc counts CPU in clock ticks (10 ms): at 30 tasks the master's share can be 0 ticks.
    assert all(seconds >= 0 for seconds in cpu.values()) and sum(cpu.values()) > 0
    [row] = bench_agent.figures(result, tasks=30)
    assert ("not checkpointing" in row.what) is not checkpoint
    # The wait before the second raw spawns: none without a trash, until the timeout with
    # a tree nobody deletes.
    started = time.monotonic()
    bench_agent.trash_emptied(tmp_path / "agent", timeout=5)
    assert time.monotonic() - started < 1
    (tmp_path / "agent" / "meta" / "trash" / "tree").mkdir(parents=True)
    started = time.monotonic()
    bench_agent.trash_emptied(tmp_path / "agent", timeout=0.3)
    assert time.monotonic() - started >= 0.3
