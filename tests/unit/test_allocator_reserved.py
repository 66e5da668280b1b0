"""Agents with reservations in the hierarchical allocator: the books that follow them (consumed
quota across offer operations, the per-agent split of free resources into unreserved and
reserved parts) stay right after every kind of change, and a cycle hands out what a plain
`Resources.allocatable_to` walk would. Every test ends with the allocator's invariant check,
which recomputes consumed quota and each cached split from scratch."""

from __future__ import annotations

from butte.core.resources import Reservation, Resources, parse_resources
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import Allocation, AllocatorOptions
from butte.master.allocator.quota import Quota


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
