"""A short run of the leader failover soak (`bench/soak_failover.py`): a real ZooKeeper,
3 masters, 3 agents and a pymesos framework keeping long and short tasks going, through one
round of each fault: the leader SIGKILLed, the leader and an agent SIGKILLed, the leader
SIGSTOPped past its ZooKeeper session, the leader SIGKILLed while the framework fails over to
a new driver, and the leader SIGKILLed and then its successor as soon as it serves. After
each round every invariant of the soak must hold (no task lost or run twice, leader, agents
and framework agree, reconciliation answers every task, no process died that was not
killed). The long soak is ``bench/soak_failover.py --minutes N``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from butte.testing.require import require, require_module
from butte.testing.zookeeper import zookeeper_missing

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.timeout(300)
def test_every_failover_kind_loses_no_task(tmp_path: Path) -> None:
    require(zookeeper_missing(), "ZooKeeper")
    require_module("pymesos")
    sys.path.insert(0, str(BENCH))
    try:
        import soak_failover
    finally:
        sys.path.remove(str(BENCH))
    lines: list[str] = []
    result = soak_failover.run_soak(
        tmp_path,
        minutes=5,
        long=12,
        seed=3,
        max_rounds=len(soak_failover.FAULTS),
        log=lines.append,
        pause=(0.3, 0.8),  # the suite runs this alone: its waits are everyone's
    )
    report = "\n".join(lines) + "\n" + soak_failover.summary(result)
    assert result.problems == [], report
    assert result.unexpected_exits == [], report
    assert [t.fault for t in result.timings] == list(soak_failover.FAULTS), report
    for timing in result.timings:
        # The ZooKeeper session (2 s) bounds the election; agents and the framework follow.
        assert timing.leader is not None and timing.leader < 15, report
        assert timing.agents is not None and timing.agents < 30, report
        assert timing.framework is not None and timing.framework < 30, report
    # Short tasks kept coming and going through the faults.
    assert result.finished_short > 20, report
