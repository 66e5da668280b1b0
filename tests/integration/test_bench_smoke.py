"""The benchmark harness works: a tiny run of benchmark 5 (end to end through real HTTP,
simulated agents, asyncio frameworks). The full benchmarks are `bench/run_all.py`, not tests."""

from __future__ import annotations

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
