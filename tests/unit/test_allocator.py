"""Contract tests of the hierarchical DRF allocator through its public interface. Every test
ends with the allocator's invariant check."""

from __future__ import annotations

from collections import Counter

import pytest

from butte.core.resources import Resources, parse_resources
from butte.master.allocator.hierarchical import MAX_REFUSE_SECONDS, HierarchicalDRFAllocator
from butte.master.allocator.interface import (
    Allocation,
    Allocator,
    AllocatorOptions,
    parse_min_allocatable,
)

AGENT = "cpus:4;mem:1024;disk:1024;ports:[31000-31999]"


def R(text: str) -> Resources:
    return parse_resources(text)


def make(**options) -> HierarchicalDRFAllocator:
    return HierarchicalDRFAllocator(AllocatorOptions(**options), seed=7)


def with_agents(alloc: HierarchicalDRFAllocator, n: int, total: str = AGENT) -> list[str]:
    ids = [f"agent-{i}" for i in range(n)]
    for agent_id in ids:
        alloc.add_agent(agent_id, R(total))
    return ids


def per_framework(allocations: list[Allocation]) -> Counter:
    return Counter(a.framework_id for a in allocations)


def decline_all(alloc, allocations, now, refuse_seconds: float | None = 5.0) -> None:
    for a in allocations:
        alloc.recover_resources(
            a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=refuse_seconds, now=now
        )


def test_satisfies_the_allocator_protocol():
    alloc: Allocator = make()
    assert isinstance(alloc, HierarchicalDRFAllocator)


# -- fairness -------------------------------------------------------------------------------


def test_frameworks_of_one_role_share_equally():
    alloc = make()
    for fw in ("f1", "f2", "f3"):
        alloc.add_framework(fw, ["*"])
    with_agents(alloc, 9)
    out = alloc.allocate(0.0)
    assert per_framework(out) == {"f1": 3, "f2": 3, "f3": 3}
    assert all(a.resources == R(AGENT) and a.role == "*" for a in out)
    assert alloc.framework_shares("*") == pytest.approx({"f1": 1 / 3, "f2": 1 / 3, "f3": 1 / 3})
    assert alloc.allocate(1.0) == []  # nothing left
    alloc.check_invariants()


def test_role_weights_skew_the_split():
    alloc = make()
    alloc.update_weights({"a": 3.0})
    alloc.add_framework("fa", ["a"])
    alloc.add_framework("fb", ["b"])
    with_agents(alloc, 8)
    out = alloc.allocate(0.0)
    assert per_framework(out) == {"fa": 6, "fb": 2}
    assert alloc.role_shares() == pytest.approx({"a": 6 / 8 / 3, "b": 2 / 8})
    assert alloc.weights == {"a": 3.0}
    alloc.check_invariants()


def test_bad_weights_are_refused_without_change():
    alloc = make()
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            alloc.update_weights({"ok": 2.0, "bad": bad})
    assert alloc.weights == {}
    alloc.check_invariants()


def test_fairness_counts_resources_already_in_use():
    alloc = make()
    alloc.add_framework("old", ["*"])
    alloc.add_framework("new", ["*"])
    alloc.add_agent("busy", R("cpus:2;mem:512"), used={("old", "*"): R("cpus:2;mem:512")})
    with_agents(alloc, 3)
    assert alloc.available("busy") == Resources()
    # old starts at 1/7 of the cpus; new at 0 gets the first agent, then they alternate.
    assert per_framework(alloc.allocate(0.0)) == {"new": 2, "old": 1}
    alloc.check_invariants()


def test_hierarchical_roles_share_by_subtree():
    alloc = make()
    alloc.add_framework("ea", ["eng/a"])
    alloc.add_framework("eb", ["eng/b"])
    alloc.add_framework("ops", ["ops"])
    with_agents(alloc, 4)
    out = alloc.allocate(0.0)
    assert per_framework(out) == {"ops": 2, "ea": 1, "eb": 1}
    shares = alloc.role_shares()
    assert shares["eng/a"] == pytest.approx(0.25) and shares["ops"] == pytest.approx(0.5)
    alloc.check_invariants()


def test_a_framework_in_several_roles_is_offered_per_role():
    alloc = make()
    alloc.add_framework("multi", ["a", "b"])
    alloc.add_agent("x", R("cpus:2;mem:256;cpus(b):3;mem(b):64"))
    out = alloc.allocate(0.0)
    got = {a.role: a.resources for a in out}
    assert got == {"a": R("cpus:2;mem:256"), "b": R("cpus(b):3;mem(b):64")}
    assert alloc.allocated("multi") == {("x", "a"): got["a"], ("x", "b"): got["b"]}
    alloc.check_invariants()


# -- refusal filters ------------------------------------------------------------------------


def test_decline_filter_blocks_until_it_expires():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 1)
    first = alloc.allocate(0.0)
    decline_all(alloc, first, now=0.0, refuse_seconds=5.0)
    assert alloc.statistics()["offer_filters"] == 1
    assert alloc.allocate(1.0) == []
    assert alloc.allocate(4.999) == []
    again = alloc.allocate(5.0)
    assert [a.resources for a in again] == [R(AGENT)]
    assert alloc.statistics()["offer_filters"] == 0
    alloc.check_invariants()


def test_filter_blocks_only_the_declining_framework():
    alloc = make()
    alloc.add_framework("f1", ["*"])
    alloc.add_framework("f2", ["*"])
    with_agents(alloc, 2)
    out = alloc.allocate(0.0)
    mine = [a for a in out if a.framework_id == "f1"]
    decline_all(alloc, mine, now=0.0)
    again = alloc.allocate(1.0)
    assert [(a.framework_id, a.agent_id) for a in again] == [("f2", mine[0].agent_id)]
    alloc.check_invariants()


def test_more_resources_break_through_a_filter():
    alloc = make()
    alloc.add_framework("f", ["*"])
    alloc.add_framework("g", ["*"])
    alloc.add_agent("x", R("cpus:4;mem:1024"))
    (offer,) = alloc.allocate(0.0)
    assert offer.framework_id == "f"
    alloc.suppress("g")
    half = R("cpus:2;mem:512")
    # f uses half, declines the other half with a filter.
    decline_all(alloc, [Allocation("f", "x", "*", half)], now=0.0, refuse_seconds=10.0)
    assert alloc.allocate(1.0) == []  # the same half is filtered
    # The used half comes back (task ended): the candidate is no longer a subset.
    alloc.recover_resources("f", "x", "*", half, refuse_seconds=None, now=2.0)
    (again,) = alloc.allocate(2.0)
    assert again.framework_id == "f" and again.resources == R("cpus:4;mem:1024")
    alloc.check_invariants()


def test_a_bigger_agent_total_breaks_through_a_filter():
    alloc = make()
    alloc.add_framework("f", ["*"])
    alloc.add_agent("x", R("cpus:4;mem:1024"))
    decline_all(alloc, alloc.allocate(0.0), now=0.0, refuse_seconds=60.0)
    assert alloc.allocate(1.0) == []
    alloc.update_agent_total("x", R("cpus:8;mem:1024"))
    (again,) = alloc.allocate(2.0)
    assert again.resources == R("cpus:8;mem:1024")
    alloc.check_invariants()


@pytest.mark.parametrize("refuse", [None, 0, 0.0, -3.0])
def test_no_filter_without_positive_refuse_seconds(refuse):
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 1)
    decline_all(alloc, alloc.allocate(0.0), now=0.0, refuse_seconds=refuse)
    assert alloc.statistics()["offer_filters"] == 0
    assert len(alloc.allocate(0.0)) == 1
    alloc.check_invariants()


def test_filter_lasts_at_least_one_allocation_interval_and_at_most_a_year():
    alloc = make(allocation_interval=2.0)
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 2)
    short, long_ = sorted(alloc.allocate(0.0), key=lambda a: a.agent_id)
    decline_all(alloc, [short], now=10.0, refuse_seconds=0.1)
    decline_all(alloc, [long_], now=10.0, refuse_seconds=1e12)
    expiries = {agent: exp for _, agent, _, exp in alloc.offer_filters("f")}
    assert expiries == {short.agent_id: 12.0, long_.agent_id: 10.0 + MAX_REFUSE_SECONDS}
    assert alloc.allocate(11.0) == []
    assert [a.agent_id for a in alloc.allocate(12.0)] == [short.agent_id]
    alloc.check_invariants()


def test_revive_clears_filters_of_the_named_roles_only():
    alloc = make()
    alloc.add_framework("f", ["a", "b"])
    alloc.add_agent("x", R("cpus(a):1;mem(a):64;cpus(b):1;mem(b):64"))
    out = alloc.allocate(0.0)
    assert {a.role for a in out} == {"a", "b"}
    decline_all(alloc, out, now=0.0, refuse_seconds=100.0)
    assert alloc.allocate(1.0) == []
    alloc.revive("f", ["a"])
    assert [a.role for a in alloc.allocate(2.0)] == ["a"]
    alloc.revive("f")
    assert [a.role for a in alloc.allocate(3.0)] == ["b"]
    assert alloc.offer_filters("f") == []
    alloc.check_invariants()


# -- suppression, activation ----------------------------------------------------------------


def test_suppressed_framework_gets_nothing_until_revived():
    alloc = make()
    alloc.add_framework("quiet", ["*"], suppressed_roles=["*"])
    alloc.add_framework("loud", ["*"])
    with_agents(alloc, 2)
    assert per_framework(alloc.allocate(0.0)) == {"loud": 2}
    alloc.suppress("loud")
    alloc.revive("quiet")
    for a in alloc.allocated("loud"):
        alloc.recover_resources("loud", a[0], "*", R(AGENT), refuse_seconds=None, now=1.0)
    assert per_framework(alloc.allocate(1.0)) == {"quiet": 2}
    alloc.check_invariants()


def test_suppress_one_role_of_a_multi_role_framework():
    alloc = make()
    alloc.add_framework("f", ["a", "b"])
    alloc.suppress("f", ["a", "not-mine"])
    with_agents(alloc, 2)
    assert {a.role for a in alloc.allocate(0.0)} == {"b"}
    alloc.check_invariants()


def test_all_suppressed_cycle_offers_nothing():
    alloc = make()
    for i in range(5):
        alloc.add_framework(f"f{i}", ["*"])
        alloc.suppress(f"f{i}")
    with_agents(alloc, 10)
    assert alloc.allocate(0.0) == []
    assert alloc.statistics()["allocation_runs"] == 1
    alloc.check_invariants()


def test_deactivated_framework_gets_nothing_and_loses_its_filters():
    alloc = make()
    alloc.add_framework("f", ["*"])
    ids = with_agents(alloc, 2)
    out = alloc.allocate(0.0)
    decline_all(alloc, out[:1], now=0.0, refuse_seconds=100.0)
    decline_all(alloc, out[1:], now=0.0, refuse_seconds=None)
    alloc.deactivate_framework("f")
    assert alloc.offer_filters("f") == []
    assert alloc.allocate(1.0) == []
    alloc.activate_framework("f")
    assert sorted(a.agent_id for a in alloc.allocate(2.0)) == ids
    alloc.check_invariants()


def test_inactive_framework_from_agent_reregistration():
    alloc = make()
    alloc.add_framework("f", ["*"], active=False)
    alloc.add_agent("x", R(AGENT), used={("f", "*"): R("cpus:1;mem:128")})
    assert alloc.allocate(0.0) == []
    assert alloc.allocated("f") == {("x", "*"): R("cpus:1;mem:128")}
    alloc.activate_framework("f")
    (offer,) = alloc.allocate(1.0)
    assert offer.resources == R(AGENT) - R("cpus:1;mem:128")
    alloc.check_invariants()


def test_inactive_agent_is_skipped():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 1)
    alloc.deactivate_agent("agent-0")
    assert alloc.allocate(0.0) == []
    alloc.activate_agent("agent-0")
    assert len(alloc.allocate(1.0)) == 1
    alloc.check_invariants()


# -- capability gating, reservations, minimums ----------------------------------------------


def test_gpu_agents_only_go_to_gpu_capable_frameworks():
    alloc = make()
    alloc.add_framework("plain", ["*"])
    alloc.add_agent("gpu", R("cpus:4;mem:1024;gpus:1"))
    alloc.add_agent("cpu", R("cpus:4;mem:1024"))
    assert [(a.framework_id, a.agent_id) for a in alloc.allocate(0.0)] == [("plain", "cpu")]
    alloc.add_framework("ml", ["*"], capabilities=["GPU_RESOURCES"])
    assert [(a.framework_id, a.agent_id) for a in alloc.allocate(1.0)] == [("ml", "gpu")]
    alloc.check_invariants()


def test_gpu_gating_can_be_turned_off():
    alloc = make(filter_gpu_resources=False)
    alloc.add_framework("plain", ["*"])
    alloc.add_agent("gpu", R("cpus:4;mem:1024;gpus:1"))
    (offer,) = alloc.allocate(0.0)
    assert offer.resources.scalar("gpus") == 1.0
    alloc.check_invariants()


def test_reserved_resources_go_only_to_their_role_and_its_children():
    alloc = make()
    alloc.add_framework("ops", ["ops"])
    alloc.add_framework("backend", ["zeta/backend"])
    alloc.add_agent("x", R("cpus:4;mem:1024;cpus(zeta):2;mem(zeta):128;cpus(other):1"))
    out = {a.framework_id: a.resources for a in alloc.allocate(0.0)}
    # "ops" sorts first (name tie-break) and gets the unreserved part only.
    assert out == {"ops": R("cpus:4;mem:1024"), "backend": R("cpus(zeta):2;mem(zeta):128")}
    assert alloc.available("x") == R("cpus(other):1")
    alloc.check_invariants()


def test_min_allocatable_needs_one_alternative():
    alloc = make(min_allocatable=parse_min_allocatable("cpus:1|mem:512"))
    alloc.add_framework("f", ["*"])
    alloc.add_agent("tiny", R("cpus:0.5;mem:256"))
    alloc.add_agent("memory", R("cpus:0.1;mem:600"))
    alloc.add_agent("compute", R("cpus:2;mem:10"))
    assert sorted(a.agent_id for a in alloc.allocate(0.0)) == ["compute", "memory"]
    alloc.check_invariants()


def test_default_min_allocatable_and_no_minimum():
    strict = make()
    loose = make(min_allocatable=())
    for alloc in (strict, loose):
        alloc.add_framework("f", ["*"])
        alloc.add_agent("ports-only", R("ports:[1-10]"))
        alloc.add_agent("crumbs", R("cpus:0.001;mem:16"))
    assert strict.allocate(0.0) == []
    assert sorted(a.agent_id for a in loose.allocate(0.0)) == ["crumbs", "ports-only"]
    strict.check_invariants()
    loose.check_invariants()


def test_excluded_resource_names_do_not_count_for_fairness():
    alloc = make(fair_sharing_excluded_resource_names=frozenset({"gpus"}), min_allocatable=())
    alloc.add_framework("f", ["*"], capabilities=["GPU_RESOURCES"])
    alloc.add_agent("x", R("gpus:8;cpus:1"))
    alloc.allocate(0.0)
    assert alloc.framework_shares("*") == {"f": 1.0}  # cpus 1/1: gpus ignored
    alloc.add_agent("y", R("cpus:1"))
    assert alloc.role_shares() == {"*": 0.5}
    alloc.check_invariants()


# -- removal and recovery -------------------------------------------------------------------


def test_remove_agent_drops_its_allocations():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 2)
    alloc.allocate(0.0)
    alloc.remove_agent("agent-0")
    assert list(alloc.allocated("f")) == [("agent-1", "*")]
    assert alloc.role_shares() == {"*": 1.0}
    # A late recovery for the removed agent is harmless.
    alloc.recover_resources("f", "agent-0", "*", R(AGENT), refuse_seconds=5.0, now=1.0)
    assert alloc.statistics()["agents"] == 1
    alloc.check_invariants()


def test_remove_framework_returns_its_resources():
    alloc = make()
    alloc.add_framework("gone", ["*"])
    with_agents(alloc, 2)
    alloc.allocate(0.0)
    alloc.add_framework("next", ["*"])
    alloc.remove_framework("gone")
    assert alloc.allocated("gone") == {}
    assert per_framework(alloc.allocate(1.0)) == {"next": 2}
    assert alloc.statistics()["frameworks"] == 1
    alloc.check_invariants()


def test_recover_part_then_reallocate_the_rest():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 1)
    (offer,) = alloc.allocate(0.0)
    used = R("cpus:1;mem:256;ports:[31000-31000]")
    alloc.recover_resources(
        "f", offer.agent_id, "*", offer.resources - used, refuse_seconds=None, now=0.0
    )
    assert alloc.allocated("f") == {(offer.agent_id, "*"): used}
    (rest,) = alloc.allocate(1.0)
    assert rest.resources == R(AGENT) - used
    # Recovering more than is held only gives back what is held.
    alloc.recover_resources(
        "f", offer.agent_id, "*", R(AGENT + ";gpus:1"), refuse_seconds=None, now=2.0
    )
    assert alloc.allocated("f") == {}
    assert alloc.available(offer.agent_id) == R(AGENT)
    alloc.check_invariants()


def test_update_framework_roles_keeps_holdings_until_recovered():
    alloc = make()
    alloc.add_framework("f", ["old"])
    with_agents(alloc, 1)
    (offer,) = alloc.allocate(0.0)
    alloc.update_framework("f", ["new"])
    assert set(alloc.role_shares()) == {"old", "new"}
    alloc.check_invariants()
    alloc.recover_resources(
        "f", offer.agent_id, "old", offer.resources, refuse_seconds=None, now=1.0
    )
    assert set(alloc.role_shares()) == {"new"}
    assert [a.role for a in alloc.allocate(1.0)] == ["new"]
    alloc.check_invariants()


def test_agent_shrinking_below_its_allocation_keeps_books_consistent():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 1)
    alloc.allocate(0.0)
    alloc.update_agent_total("agent-0", R("cpus:2;mem:512"))
    assert alloc.available("agent-0") == Resources()
    alloc.check_invariants()


def test_same_seed_same_allocations():
    def run() -> list[tuple[str, str]]:
        alloc = make()
        for i in range(3):
            alloc.add_framework(f"f{i}", ["*"])
        with_agents(alloc, 12)
        return [(a.framework_id, a.agent_id) for a in alloc.allocate(0.0)]

    assert run() == run()


def test_statistics_count_runs_and_allocations():
    alloc = make()
    alloc.add_framework("f", ["*"])
    with_agents(alloc, 3)
    alloc.allocate(0.0)
    alloc.allocate(1.0)
    stats = alloc.statistics()
    assert stats["allocation_runs"] == 2
    assert stats["allocations_total"] == 3 and stats["last_allocation_count"] == 0
    assert stats["agents"] == 3 and stats["frameworks"] == 1 and stats["roles"] == 1
    assert stats["last_allocation_seconds"] == 0.0
    alloc.record_allocation_seconds(0.25)  # the shell times cycles; the core reads no clock
    assert alloc.statistics()["last_allocation_seconds"] == 0.25
    alloc.check_invariants()
