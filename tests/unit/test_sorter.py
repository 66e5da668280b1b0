"""Contract tests for the DRF sorter (after Mesos ``src/tests/sorter_tests.cpp``), plus a
property test comparing the incremental sorter with a from-scratch reference order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.master.allocator.sorter import DRFSorter, Totals


def make(total: dict[str, int] | None = None, **kwargs) -> DRFSorter:
    totals = Totals()
    totals.add(total or {"cpus": 100_000, "mem": 100_000})
    return DRFSorter(totals, **kwargs)


def add_active(sorter: DRFSorter, *names: str) -> None:
    for name in names:
        sorter.add(name)
        sorter.activate(name)


def test_orders_by_dominant_share():
    s = make()
    add_active(s, "a", "b")
    s.allocated("a", {"cpus": 10_000})  # 0.10
    s.allocated("b", {"mem": 5_000})  # 0.05
    assert s.sort() == ["b", "a"]
    s.allocated("b", {"mem": 10_000})  # 0.15
    assert s.sort() == ["a", "b"]
    s.unallocated("b", {"mem": 15_000})
    assert s.sort() == ["b", "a"]
    assert s.share("a") == pytest.approx(0.1)
    s.check_invariants()


def test_dominant_resource_is_the_max_over_names():
    s = make({"cpus": 10_000, "mem": 10_000})
    add_active(s, "a", "b")
    s.allocated("a", {"cpus": 1_000, "mem": 6_000})  # dominant mem 0.6
    s.allocated("b", {"cpus": 5_000, "mem": 1_000})  # dominant cpus 0.5
    assert s.share("a") == pytest.approx(0.6)
    assert s.sort() == ["b", "a"]
    s.check_invariants()


def test_weights_divide_the_share():
    s = make(hierarchical=True)
    add_active(s, "heavy", "light")
    s.set_weights({"heavy": 4.0})
    s.allocated("heavy", {"cpus": 30_000})  # 0.30 / 4
    s.allocated("light", {"cpus": 10_000})  # 0.10
    assert s.share("heavy") == pytest.approx(0.075)
    assert s.sort() == ["heavy", "light"]
    s.set_weights({})
    assert s.sort() == ["light", "heavy"]
    s.check_invariants()


def test_ties_break_by_fewer_allocations_then_name():
    s = make()
    add_active(s, "c", "b", "a")
    assert s.sort() == ["a", "b", "c"]
    s.allocated("a", {"cpus": 1_000})
    s.unallocated("a", {"cpus": 1_000})  # share back to 0, but one allocation more
    assert s.sort() == ["b", "c", "a"]
    assert s.allocation_count("a") == 1
    s.check_invariants()


def test_a_non_dominant_allocation_still_counts_for_ties():
    s = make()
    add_active(s, "a", "b")
    s.allocated("a", {"cpus": 10_000})
    s.allocated("b", {"cpus": 10_000})
    assert s.sort() == ["a", "b"]
    s.allocated("a", {"mem": 1_000})  # share unchanged (cpus dominates), one more allocation
    assert s.sort() == ["b", "a"]
    s.check_invariants()


def test_inactive_clients_are_not_walked_but_keep_their_allocation():
    s = make(hierarchical=True)
    add_active(s, "eng/a", "eng/b", "ops")
    s.allocated("eng/a", {"cpus": 50_000})
    s.deactivate("eng/a")
    assert s.sort() == ["ops", "eng/b"]  # eng still carries eng/a's 0.5
    assert s.share("eng/a") == pytest.approx(0.5)
    assert not s.is_active("eng/a")
    s.activate("eng/a")
    assert s.sort() == ["ops", "eng/b", "eng/a"]
    s.check_invariants()


def test_subtree_allocation_counts_for_the_parent():
    s = make(hierarchical=True)
    add_active(s, "eng/backend", "eng/frontend", "ops")
    s.allocated("eng/backend", {"cpus": 20_000})
    s.allocated("ops", {"cpus": 15_000})
    # eng's subtree holds 0.20 > ops 0.15, so ops comes first even though frontend has 0.
    assert s.sort() == ["ops", "eng/frontend", "eng/backend"]
    s.allocated("ops", {"cpus": 10_000})
    assert s.sort() == ["eng/frontend", "eng/backend", "ops"]
    s.check_invariants()


def test_parent_role_that_is_also_a_client_competes_with_its_children():
    s = make(hierarchical=True)
    add_active(s, "eng", "eng/backend")
    assert s.sort() == ["eng", "eng/backend"]
    s.allocated("eng", {"cpus": 10_000})
    assert s.sort() == ["eng/backend", "eng"]
    assert s.share("eng") == pytest.approx(0.1)  # subtree: its own + children's
    s.allocated("eng/backend", {"cpus": 30_000})
    assert s.share("eng") == pytest.approx(0.4)
    assert s.sort() == ["eng", "eng/backend"]
    s.check_invariants()
    s.remove("eng/backend")  # eng becomes a plain leaf again
    assert s.sort() == ["eng"]
    assert s.share("eng") == pytest.approx(0.1)
    s.check_invariants()


def test_flat_sorter_does_not_split_names():
    s = make(hierarchical=False)
    add_active(s, "x/b", "x/a")
    s.allocated("x/a", {"cpus": 1_000})
    assert s.sort() == ["x/b", "x/a"]
    s.check_invariants()


def test_excluded_resource_names_do_not_count():
    s = make({"cpus": 10_000, "gpus": 1_000}, excluded=frozenset({"gpus"}))
    add_active(s, "a", "b")
    s.allocated("a", {"cpus": 1_000, "gpus": 1_000})
    s.allocated("b", {"cpus": 2_000})
    assert s.share("a") == pytest.approx(0.1)
    assert s.allocation("a") == {"cpus": 1_000}
    assert s.sort() == ["a", "b"]
    s.check_invariants()


def test_totals_change_reorders_lazily():
    totals = Totals()
    totals.add({"cpus": 10_000, "mem": 10_000})
    s = DRFSorter(totals)
    add_active(s, "a", "b")
    s.allocated("a", {"cpus": 4_000})
    s.allocated("b", {"mem": 5_000})
    assert s.sort() == ["a", "b"]
    totals.add({"mem": 10_000})  # b's mem share halves to 0.25
    assert s.sort() == ["b", "a"]
    totals.subtract({"cpus": 5_000})  # a's cpus share doubles to 0.8
    assert s.sort() == ["b", "a"]
    assert s.share("a") == pytest.approx(0.8)
    s.check_invariants()


def test_remove_prunes_and_allows_re_adding():
    s = make(hierarchical=True)
    add_active(s, "a/b/c")
    s.allocated("a/b/c", {"cpus": 1_000})
    s.remove("a/b/c")
    assert s.sort() == [] and not s.has_active() and len(s) == 0
    add_active(s, "a/b")
    assert s.share("a/b") == 0.0
    s.check_invariants()
    with pytest.raises(KeyError):
        s.remove("nope")
    with pytest.raises(ValueError):
        s.add("a/b")


def test_a_partial_walk_leaves_the_order_intact():
    s = make()
    add_active(s, *"edcba")
    walk = s.walk()
    assert next(walk) == "a"
    with pytest.raises(RuntimeError):
        s.allocated("a", {"cpus": 1})
    with pytest.raises(RuntimeError):
        s.walk()
    walk.close()
    assert s.sort() == list("abcde")
    s.allocated("a", {"cpus": 1})
    assert s.sort() == list("bcdea")
    s.check_invariants()


def test_unallocating_more_than_held_is_refused_without_change():
    s = make()
    add_active(s, "a")
    s.allocated("a", {"cpus": 1_000, "mem": 1_000})
    with pytest.raises(ValueError):
        s.unallocated("a", {"mem": 500, "cpus": 2_000})
    assert s.allocation("a") == {"cpus": 1_000, "mem": 1_000}
    s.check_invariants()


def test_stale_entries_are_compacted():
    s = make()
    add_active(s, "a", "b")
    for _ in range(1000):
        s.allocated("a", {"cpus": 1})
    s.check_invariants()
    assert len(s._root.heap) < 100  # noqa: SLF001 - the compaction is the point
    assert s.sort() == ["b", "a"]


# -- property test against a from-scratch reference ---------------------------------------

NAMES = ["a", "b", "a/x", "a/y", "a/x/p", "b/z", "c"]
RESOURCES = ["cpus", "mem", "gpus"]
TOTAL = {"cpus": 50_000, "mem": 80_000, "gpus": 4_000}


def reference_order(
    clients: dict[str, dict], weights: dict[str, float], excluded: frozenset[str]
) -> list[str]:
    """Mesos' hierarchical DRF order computed from nothing but the clients' books."""
    paths = {"/".join(n.split("/")[: i + 1]) for n in clients for i in range(n.count("/") + 1)}

    def subtree(path: str) -> list[str]:
        return [n for n in clients if n == path or n.startswith(path + "/")]

    def share(alloc: dict[str, int], path: str) -> float:
        best = max((v / TOTAL[r] for r, v in alloc.items() if r not in excluded), default=0.0)
        return best / weights.get(path, 1.0)

    def key_of(path: str) -> tuple:
        alloc: dict[str, int] = {}
        count = 0
        for n in subtree(path):
            for r, v in clients[n]["alloc"].items():
                alloc[r] = alloc.get(r, 0) + v
            count += clients[n]["count"]
        return (share(alloc, path), count, path)

    def order(parent: str) -> list[str]:
        prefix = parent + "/" if parent else ""
        kids = [p for p in paths if p.startswith(prefix) and "/" not in p[len(prefix) :]]
        entries = []
        for kid in kids:
            if any(clients[n]["active"] for n in subtree(kid)):
                entries.append((key_of(kid), kid, False))
        if parent in clients and clients[parent]["active"]:
            own = clients[parent]
            entries.append(((share(own["alloc"], parent), own["count"], parent), parent, True))
        out = []
        for _, path, is_self in sorted(entries):
            has_kids = any(p.startswith(path + "/") for p in paths)
            out.extend([path] if is_self or not has_kids else order(path))
        return out

    return order("")


operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NAMES)),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("toggle"), st.sampled_from(NAMES)),
    st.tuples(
        st.just("alloc"),
        st.sampled_from(NAMES),
        st.dictionaries(st.sampled_from(RESOURCES), st.integers(1, 5_000), min_size=1),
    ),
    st.tuples(st.just("free"), st.sampled_from(NAMES), st.floats(0, 1)),
    st.tuples(st.just("weight"), st.sampled_from(NAMES), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
    st.tuples(st.just("walk"), st.integers(0, 4)),
)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(operation, max_size=40), st.booleans())
def test_incremental_order_matches_reference(ops, exclude_gpus):
    excluded = frozenset({"gpus"}) if exclude_gpus else frozenset()
    totals = Totals()
    totals.add(TOTAL)
    s = DRFSorter(totals, hierarchical=True, excluded=excluded)
    clients: dict[str, dict] = {}
    weights: dict[str, float] = {}
    for op in ops:
        kind, name = op[0], op[1]
        if kind == "add" and name not in clients:
            s.add(name)
            s.activate(name)
            clients[name] = {"alloc": {}, "count": 0, "active": True}
        elif kind == "remove" and name in clients:
            s.remove(name)
            del clients[name]
        elif kind == "toggle" and name in clients:
            c = clients[name]
            c["active"] = not c["active"]
            (s.activate if c["active"] else s.deactivate)(name)
        elif kind == "alloc" and name in clients:
            s.allocated(name, op[2])
            c = clients[name]
            for r, v in op[2].items():
                if r not in excluded:
                    c["alloc"][r] = c["alloc"].get(r, 0) + v
            c["count"] += 1
        elif kind == "free" and name in clients:
            c = clients[name]
            back = {r: int(v * op[2]) for r, v in c["alloc"].items() if int(v * op[2])}
            s.unallocated(name, back)
            for r, v in back.items():
                c["alloc"][r] -= v
                if not c["alloc"][r]:
                    del c["alloc"][r]
        elif kind == "weight":
            weights[name] = op[2]
            s.set_weights(weights)
        elif kind == "walk":
            walk = s.walk()
            for _ in zip(range(op[1]), walk, strict=False):
                pass
            walk.close()
        assert s.sort() == reference_order(clients, weights, excluded)
        s.check_invariants()
        for name, c in clients.items():
            assert s.allocation(name) == c["alloc"]
