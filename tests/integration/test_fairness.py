"""Fairness check (issue 5): a mixed workload through a real master with simulated agents;
no framework below its weighted fair share waits more than two allocation intervals for an
offer while resources it has not refused itself sit unallocated. `bench/fairness.py` runs the
same replay longer and prints the shares over time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
INTERVAL = 0.25
# The replay's own sampling (every half interval), offer delivery and the frameworks' replies
# on a loaded 2-core machine: the wide framework's worst wait was 0.0-0.68 s in 12 runs beside
# one CPU hog (the same before and after the changes of 2026-12-05), and 0.94 s in one CI run.
SLACK = 0.6
# Reaching a guarantee also takes the framework's SUBSCRIBE, its first offer and the replay's
# own polling: on a loaded 2-core CI machine that adds up to about half a second (0.88 s seen).
# The bench (`bench/fairness.py --quota`) reports the figure itself.
GUARANTEE_SLACK = 1.0


def test_no_offer_starvation_below_fair_share() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import fairness
    finally:
        sys.path.remove(str(BENCH))
    result = fairness.run_fairness(agents=12, seconds=8.0, interval=INTERVAL)
    workloads, samples = result["workloads"], result["samples"]
    assert len(samples) > 20
    for w in workloads:
        assert w.offers_at, f"{w.name} never got an offer"
        assert w.launched > 0, f"{w.name} launched nothing"
    late = next(w for w in workloads if w.name == "late")
    assert any(s.shares.get("late", 0.0) > 0 for s in samples), "late framework got no share"
    # Contention, whichever framework's subscription reaches the first allocation first: a
    # framework alone at that moment takes the whole cluster (peak 1.0), several split it
    # and their refusal filters hold the rest (peak about 0.7); the steady state after the
    # first tasks end is about 0.55 either way. Every framework still wants more at the end.
    assert all(w.pending > 0 for w in workloads), "a framework ran out of work"
    assert max(s.utilisation for s in samples) > 0.5, "the workload never loaded the cluster"
    worst = fairness.starvation(workloads, samples)
    limit = 2 * INTERVAL + SLACK
    starved = {name: round(wait, 2) for name, wait in worst.items() if wait > limit}
    assert not starved, f"waited longer than {limit} s below fair share: {starved}"
    assert late.subscribed_at is not None


def test_quota_guarantee_reached_and_limit_kept_under_contention() -> None:
    """The same replay with quota (`bench/fairness.py --quota`): the late guaranteed framework
    holds its guarantee within two allocation intervals of subscribing, greedy-big is never
    over its limit, and nobody below its fair share starves (headroom aside)."""
    sys.path.insert(0, str(BENCH))
    try:
        import fairness
    finally:
        sys.path.remove(str(BENCH))
    result = fairness.run_fairness(agents=12, seconds=8.0, interval=INTERVAL, quota=True)
    workloads, samples = result["workloads"], result["samples"]
    checks = fairness.quota_checks(workloads, samples)
    assert checks["greedy-big most cpus over its limit"] == 0.0, checks
    reached = checks["guaranteed reached its guarantee after (s)"]
    assert reached <= 2 * INTERVAL + GUARANTEE_SLACK, checks
    worst = fairness.starvation(workloads, samples)
    limit = 2 * INTERVAL + SLACK
    starved = {name: round(wait, 2) for name, wait in worst.items() if wait > limit}
    assert not starved, f"waited longer than {limit} s below fair share: {starved}"
    # Before the guaranteed framework came, its guarantee was held back: nobody got it.
    guaranteed = next(w for w in workloads if w.name == "guaranteed")
    before = [s for s in samples if s.at < (guaranteed.subscribed_at or 0)]
    assert before and max(s.utilisation for s in before) <= 0.76
