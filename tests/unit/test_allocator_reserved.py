"""Agents with reservations in the hierarchical allocator: the books that follow them (consumed
quota across offer operations, the per-agent split of free resources into unreserved and
reserved parts) stay right after every kind of change, and a cycle hands out what a plain
`Resources.allocatable_to` walk would. Every test ends with the allocator's invariant check,
which recomputes consumed quota and each cached split from scratch."""

from __future__ import annotations

from butte.core.resources import Reservation, Resources, parse_resources
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import Allocation, AllocatorOptions
from butte.master.allocator.quota import Quota, cap_unreserved, only_satisfied
from butte.master.allocator.split import Split


def R(text: str) -> Resources:
    return parse_resources(text)


def q(**values: float) -> dict[str, int]:
    return {name: round(v * 1000) for name, v in values.items()}


def make() -> HierarchicalDRFAllocator:
    return HierarchicalDRFAllocator(AllocatorOptions(allocation_interval=1.0), seed=5)


def by_role(out: list[Allocation]) -> dict[str, Resources]:
    got: dict[str, Resources] = {}
    for a in out:
        got[a.role] = got.get(a.role, Resources()) + a.resources
    return got


def reserve(resources: Resources, role: str) -> Resources:
    """The same resources reserved (dynamically, one level) for ``role``."""
    return Resources({(k[0], (Reservation(role=role),), k[2]): v for k, v in resources.items()})


def test_reserve_and_unreserve_keep_consumed_quota_with_quota_set():
    alloc = make()
    alloc.add_agent("a1", R("cpus:4;mem:1024"))
    alloc.add_framework("fa", ["a"])
    alloc.update_quota("a", Quota(limits=q(cpus=100)))
    alloc.allocate(0.0)
    assert alloc.consumed_quota("a") == q(cpus=4, mem=1024)
    part = R("cpus:1;mem:256")
    alloc.convert_allocation("fa", "a1", "a", part, reserve(part, "a"))
    alloc.check_invariants()
    assert alloc.consumed_quota("a") == q(cpus=4, mem=1024)  # same amounts, other form
    held = alloc.allocated("fa")[("a1", "a")]
    assert held == R("cpus:3;mem:768") + reserve(part, "a")
    alloc.recover_resources("fa", "a1", "a", held, refuse_seconds=None, now=1.0)
    alloc.check_invariants()
    assert alloc.consumed_quota("a") == q(cpus=1, mem=256)  # the reservation stays counted
    (again,) = alloc.allocate(1.0)
    assert again.resources == R("cpus:3;mem:768") + reserve(part, "a")
    alloc.convert_allocation("fa", "a1", "a", reserve(part, "a"), part)
    alloc.check_invariants()
    held = alloc.allocated("fa")[("a1", "a")]
    assert held == R("cpus:4;mem:1024")
    alloc.recover_resources("fa", "a1", "a", held, refuse_seconds=None, now=2.0)
    alloc.check_invariants()
    assert alloc.consumed_quota("a") == {}


def test_unreserving_a_parents_reservation_moves_consumption_to_the_child():
    alloc = make()
    alloc.add_agent("a1", R("cpus(eng):2;cpus:1"))
    alloc.add_framework("web", ["eng/web"])
    alloc.update_quota("eng/web", Quota(limits=q(cpus=10)))
    (offer,) = alloc.allocate(0.0)
    assert offer.resources == R("cpus(eng):2;cpus:1")
    assert alloc.consumed_quota("eng/web") == q(cpus=1)
    reserved = R("cpus(eng):2")
    alloc.convert_allocation("web", "a1", "eng/web", reserved, R("cpus:2"))
    alloc.check_invariants()
    assert alloc.consumed_quota("eng/web") == q(cpus=3)
    assert alloc.consumed_quota("eng") == q(cpus=3)


def test_consumed_quota_follows_an_operation_without_any_quota_set():
    alloc = make()
    alloc.add_agent("a1", R("cpus(eng):2;cpus:1"))
    alloc.add_framework("web", ["eng/web"])
    alloc.allocate(0.0)
    assert alloc.consumed_quota("eng/web") == q(cpus=1)  # computed from the books, cached
    alloc.convert_allocation("web", "a1", "eng/web", R("cpus(eng):2"), R("cpus:2"))
    assert alloc.consumed_quota("eng/web") == q(cpus=3)
    alloc.check_invariants()


# the split of an agent's free resources --------------------------------------------------


def test_split_parts_match_allocatable_to_and_are_kept_by_identity():
    bag = R("cpus:22;mem:3840;ports:[31000-31009];cpus(a):2;mem(a):256")
    split = Split(bag)
    assert split.roles == ("a",)
    for role in ("b", "c/d", "ab", "*"):
        assert split.candidate(role) is split.unreserved  # no copy per role
        assert split.candidate(role) == bag.allocatable_to(role)
    for role in ("a", "a/x"):
        assert split.candidate(role) is bag  # may use the only reservation role: everything
    assert split.quantities(split.unreserved) == R("cpus:22;mem:3840").quantities()
    assert split.unreserved_quantities(bag) == R("cpus:22;mem:3840").quantities()
    rest, rest_split = split.after(split.unreserved)
    assert rest == R("cpus(a):2;mem(a):256") and rest_split is not None
    assert rest_split.of is rest and rest_split.candidate("a") is rest
    assert not rest_split.candidate("b")
    assert split.after(bag) == (Resources(), None)
    part = R("cpus:1")
    assert split.after(part) == (bag - part, None)
    split.check()


def test_split_with_nested_reservation_roles_builds_what_it_cannot_keep():
    bag = R("cpus:1;cpus(eng):2;cpus(eng/web):3")
    split = Split(bag)
    assert split.roles == ("eng", "eng/web")
    assert split.candidate("ops") is split.unreserved
    for role in ("eng", "eng/web", "eng/web/x", "eng/db"):
        assert split.candidate(role) == bag.allocatable_to(role)
    split.check()


def shape() -> Resources:
    return R("cpus:22;mem:3840;cpus(a):2;mem(a):256")


def two_roles() -> HierarchicalDRFAllocator:
    """Role ``b`` (less served, so first in the walk) and the reservation's owner ``a``."""
    alloc = make()
    alloc.add_agent("busy", R("cpus:8;mem:1024"))
    alloc.add_framework("fa", ["a"])
    alloc.allocate(0.0)  # ``a`` holds the busy agent: ``b`` is the least served from now on
    alloc.add_framework("fb", ["b"])
    alloc.add_agent("r1", shape())
    return alloc


def test_the_unreserved_part_goes_to_the_least_served_and_the_reservation_to_its_owner():
    alloc = two_roles()
    got = by_role(alloc.allocate(1.0))
    assert got == {"b": R("cpus:22;mem:3840"), "a": R("cpus(a):2;mem(a):256")}
    alloc.check_invariants()


def test_the_owner_chosen_first_gets_reservation_and_unreserved_together():
    alloc = make()
    alloc.add_framework("fa", ["a"])
    alloc.add_framework("fb", ["b"])
    alloc.add_agent("r1", shape())
    out = alloc.allocate(0.0)
    assert [(a.role, a.resources) for a in out] == [("a", shape())]  # one offer, everything
    alloc.check_invariants()


def test_after_a_whole_decline_the_same_parts_go_out_again():
    alloc = two_roles()
    first = alloc.allocate(1.0)
    for a in first:
        if a.agent_id == "r1":
            alloc.recover_resources(
                a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=None, now=1.0
            )
    alloc.check_invariants()
    again = by_role(alloc.allocate(2.0))
    assert again == {"b": R("cpus:22;mem:3840"), "a": R("cpus(a):2;mem(a):256")}
    alloc.check_invariants()


def test_a_changed_total_is_split_afresh():
    alloc = two_roles()
    alloc.update_agent_total("r1", R("cpus:20;cpus(b):4"))  # the reservation moved to ``b``
    alloc.check_invariants()
    got = by_role(alloc.allocate(1.0))
    assert got == {"b": R("cpus:20;cpus(b):4")}  # ``b`` is first and may use all of it
    alloc.check_invariants()
    alloc.update_agent_total("r1", R("cpus:20;cpus(b):4;mem(c):64"))  # under what is held
    alloc.check_invariants()
    alloc.add_framework("fc", ["c"])
    assert by_role(alloc.allocate(2.0)) == {"c": R("mem(c):64")}
    alloc.check_invariants()


def test_unreserving_puts_the_resources_back_for_everyone():
    alloc = two_roles()
    out = alloc.allocate(1.0)
    reserved = next(a for a in out if a.role == "a")
    alloc.convert_allocation("fa", "r1", "a", reserved.resources, R("cpus:2;mem:256"))
    alloc.check_invariants()
    for a in out:
        held = alloc.allocated(a.framework_id)[(a.agent_id, a.role)]
        alloc.recover_resources(
            a.framework_id, a.agent_id, a.role, held, refuse_seconds=None, now=1.0
        )
    alloc.check_invariants()
    got = by_role(alloc.allocate(2.0))
    assert got == {"b": R("cpus:24;mem:4096")}  # nothing reserved is left on r1
    alloc.check_invariants()


def test_reservations_wait_for_their_role_when_its_framework_is_gone():
    alloc = two_roles()
    for a in alloc.allocate(1.0):
        alloc.recover_resources(
            a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=None, now=1.0
        )
    alloc.remove_framework("fa")
    alloc.check_invariants()
    got = by_role(alloc.allocate(2.0))
    assert got == {"b": R("cpus:22;mem:3840;cpus:8;mem:1024")}
    assert alloc.available("r1") == R("cpus(a):2;mem(a):256")
    alloc.add_framework("fa2", ["a/sub"])  # a sub-role may use its parent's reservation
    assert by_role(alloc.allocate(3.0)) == {"a/sub": R("cpus(a):2;mem(a):256")}
    alloc.check_invariants()


def test_a_declined_reservation_is_filtered_and_the_rest_still_goes_out():
    alloc = two_roles()
    out = alloc.allocate(1.0)
    for a in out:
        alloc.recover_resources(
            a.framework_id, a.agent_id, a.role, a.resources, refuse_seconds=10.0, now=1.0
        )
    alloc.check_invariants()
    alloc.add_framework("fc", ["c"])
    got = by_role(alloc.allocate(2.0))
    assert "a" not in got  # its only framework refused the reservation
    assert got.get("c") == R("cpus:22;mem:3840")  # ``b`` refused it; ``c`` is next
    alloc.check_invariants()


def test_only_satisfied_matches_what_the_stage_1_cut_leaves_empty():
    guarantees = q(cpus=10, mem=100)
    for text, missing, empty in (
        ("cpus:4", {}, True),
        ("cpus:4", q(cpus=1), False),
        ("cpus:4;mem:10", q(mem=5), False),
        ("cpus:4;disk:10", {}, False),  # disk is not guaranteed: not cut in stage 1
        ("cpus(a):4", {}, False),  # reservations are never cut
        ("ports:[1-2]", {}, False),
    ):
        res = R(text)
        caps = dict(missing)
        for name in guarantees:
            caps.setdefault(name, 0)
        assert only_satisfied(res, guarantees, missing) is empty, text
        assert (not cap_unreserved(res, caps)) is empty, text


def test_a_limit_that_cuts_the_unreserved_part_leaves_the_rest_to_the_next_roles():
    alloc = make()
    alloc.add_agent("r1", R("cpus:3;mem:200;cpus(x):1"))
    for role in ("a", "b", "x"):
        alloc.add_framework(f"f{role}", [role])
    alloc.update_quota("a", Quota(limits=q(cpus=1)))
    got = by_role(alloc.allocate(0.0))  # a, b, x: equal shares, so in name order
    assert got == {"a": R("cpus:1;mem:200"), "b": R("cpus:2"), "x": R("cpus(x):1")}
    alloc.check_invariants()
