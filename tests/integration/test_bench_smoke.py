"""The benchmark harness works: a tiny run of benchmark 5 (end to end through real HTTP,
simulated agents, asyncio frameworks) and of `bench/agent_floor.py`. The full benchmarks are
`bench/run_all.py`, not tests."""

from __future__ import annotations

import re
import subprocess
import sys
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
