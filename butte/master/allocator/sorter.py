"""Sorters: the ordering policy of the allocator (after Mesos ``src/master/allocator/sorter``).

A sorter holds *clients* (role names at the role level, framework ids at the framework
level), how much each has been allocated, and answers one question: in which order should
clients be offered resources? `DRFSorter` answers with Dominant Resource Fairness:

* a node's **share** is ``max(allocated[r] / total[r] for scalar r) / weight`` over the
  cluster totals (names in ``excluded`` are ignored);
* clients sort by ascending share, ties by fewer allocations, then by name;
* with ``hierarchical=True`` names are role paths (``eng/backend``): siblings are ordered by
  the share of their whole subtree, and the order is a depth-first walk of the tree. A role
  that is both a client and a parent (``eng`` beside ``eng/backend``) competes with its
  children through a "self leaf" holding only its own allocation, as Mesos' virtual ``.``
  node does.

Incremental: every change touches one client and its ancestors (O(depth log n) heap pushes);
each tree node keeps a heap of its active children with lazy invalidation (a heap entry is
live only while its node still points at it). A change of cluster totals or weights marks the
sorter dirty, and the next `walk` rebuilds shares and heaps once (O(n)).

Only *active* clients are yielded by `walk`; inactive ones keep their allocation (and so keep
counting in their ancestors' shares) but cost nothing while walking.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Mapping
from heapq import heapify, heappop, heappush
from typing import Any

Quantities = dict[str, int]


class Totals:
    """Scalar cluster totals (thousandths) shared by every sorter of one allocator, with a
    version so each sorter notices a change lazily instead of being told one by one."""

    __slots__ = ("quantities", "version")

    def __init__(self) -> None:
        self.quantities: Quantities = {}
        self.version = 0

    def add(self, quantities: Mapping[str, int]) -> None:
        """An agent joined or grew."""
        q = self.quantities
        for name, value in quantities.items():
            q[name] = q.get(name, 0) + value
        self.version += 1

    def subtract(self, quantities: Mapping[str, int]) -> None:
        """An agent left or shrank (never below zero)."""
        q = self.quantities
        for name, value in quantities.items():
            left = q.get(name, 0) - value
            if left > 0:
                q[name] = left
            else:
                q.pop(name, None)
        self.version += 1


class _Node:
    """A tree node: a client, an internal role, or both. ``alloc``/``count`` cover the
    subtree; ``own_alloc``/``own_count`` the client itself."""

    __slots__ = (
        "path",
        "parent",
        "children",
        "client",
        "active",
        "active_count",
        "alloc",
        "count",
        "own_alloc",
        "own_count",
        "entry",
        "heap",
        "live",
        "self_leaf",
    )

    def __init__(self, path: str, parent: _Node | None) -> None:
        self.path = path
        self.parent = parent
        self.children: dict[str, _Node] = {}
        self.client = False
        self.active = False
        self.active_count = 0  # active clients in the subtree, self included
        self.alloc: Quantities = {}
        self.count = 0
        self.own_alloc: Quantities = {}
        self.own_count = 0
        self.entry: tuple[Any, ...] | None = None  # the live entry in parent.heap
        self.heap: list[tuple[Any, ...]] = []  # entries of active children (and the self leaf)
        self.live = 0  # live entries in self.heap
        self.self_leaf: _SelfLeaf | None = None


class _SelfLeaf:
    """Stands for a client's own allocation among its children (Mesos' virtual ``.`` leaf)."""

    __slots__ = ("path", "node", "entry")
    children: dict[str, _Node] = {}  # never has children: `walk` yields it

    def __init__(self, node: _Node) -> None:
        self.path = node.path
        self.node = node
        self.entry: tuple[Any, ...] | None = None


class DRFSorter:
    """Weighted, optionally hierarchical DRF ordering of clients (see the module docstring).

    ``totals`` is shared with the other sorters of the same allocator; ``excluded`` lists
    resource names left out of fair sharing (``--fair_sharing_excluded_resource_names``)."""

    def __init__(
        self,
        totals: Totals | None = None,
        *,
        hierarchical: bool = False,
        excluded: frozenset[str] = frozenset(),
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self._totals = totals if totals is not None else Totals()
        self._hierarchical = hierarchical
        self._excluded = excluded
        self._weights: dict[str, float] = dict(weights or {})
        self._root = _Node("", None)
        self._nodes: dict[str, _Node] = {}
        self._clients: dict[str, _Node] = {}
        self._seen_version = -1  # forces a rebuild before the first walk
        self._dirty = True
        self._walking = 0
        # Heap entries are (share, count, path, seq, node): seq keeps a stale entry of a
        # removed and re-added client from ever comparing nodes.
        self._seq = itertools.count()

    # membership -----------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    def clients(self) -> list[str]:
        """Every tracked client, active or not."""
        return list(self._clients)

    def add(self, name: str) -> None:
        """Starts tracking a client (inactive, nothing allocated); creates its ancestors."""
        self._check_idle()
        if name in self._clients:
            raise ValueError(f"sorter already tracks {name!r}")
        parent = self._root
        for path in self._paths(name):
            node = self._nodes.get(path)
            if node is None:
                node = _Node(path, parent)
                parent.children[path] = node
                self._nodes[path] = node
                if parent.client and len(parent.children) == 1:
                    self._attach_self_leaf(parent)
            parent = node
        node = parent
        node.client = True
        self._clients[name] = node
        if node.children:
            self._attach_self_leaf(node)

    def remove(self, name: str) -> None:
        """Stops tracking a client; its allocation leaves its ancestors' shares."""
        self._check_idle()
        node = self._clients.pop(name, None)
        if node is None:
            raise KeyError(name)
        if node.active:
            node.active = False
            self._activity_changed(node, -1)
        if node.own_alloc or node.own_count:
            self._propagate(node, node.own_alloc, -1, -node.own_count)
            node.own_alloc = {}
            node.own_count = 0
        node.client = False
        self._detach_self_leaf(node)
        self._prune(node)

    def _paths(self, name: str) -> list[str]:
        if not self._hierarchical or "/" not in name:
            return [name]
        parts = name.split("/")
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def _prune(self, node: _Node) -> None:
        """Drops childless non-client nodes upwards; a client left without children becomes a
        plain leaf again."""
        root = self._root
        while node is not root and not node.children and not node.client:
            parent = node.parent
            assert parent is not None
            del parent.children[node.path]
            del self._nodes[node.path]
            if node.entry is not None:
                node.entry = None
                parent.live -= 1
            if not parent.children:
                self._detach_self_leaf(parent)
                parent.heap = []  # only stale entries can be left
            node = parent

    def _attach_self_leaf(self, node: _Node) -> None:
        leaf = _SelfLeaf(node)
        node.self_leaf = leaf
        self._place_self_leaf(node)

    def _detach_self_leaf(self, node: _Node) -> None:
        leaf = node.self_leaf
        if leaf is not None:
            if leaf.entry is not None:
                leaf.entry = None
                node.live -= 1
            node.self_leaf = None

    # activity -------------------------------------------------------------------------------

    def activate(self, name: str) -> None:
        """The client wants offers: `walk` yields it."""
        self._check_idle()
        node = self._clients[name]
        if not node.active:
            node.active = True
            self._activity_changed(node, 1)

    def deactivate(self, name: str) -> None:
        """The client wants no offers; its allocation still counts."""
        self._check_idle()
        node = self._clients[name]
        if node.active:
            node.active = False
            self._activity_changed(node, -1)

    def is_active(self, name: str) -> bool:
        """True if `walk` yields the client."""
        return self._clients[name].active

    def has_active(self) -> bool:
        return self._root.active_count > 0

    def _activity_changed(self, node: _Node, delta: int) -> None:
        if node.self_leaf is not None:
            self._place_self_leaf(node)
        root = self._root
        cur = node
        while cur is not root:
            cur.active_count += delta
            self._place(cur)
            cur = cur.parent  # type: ignore[assignment]  # only the root has no parent
        root.active_count += delta

    # allocations ----------------------------------------------------------------------------

    def allocated(self, name: str, quantities: Mapping[str, int]) -> None:
        """The client was allocated these scalar quantities (thousandths)."""
        if self._walking:
            self._check_idle()
        node = self._clients[name]
        q = self._filtered(quantities) if self._excluded else quantities
        own = node.own_alloc
        for r, v in q.items():
            own[r] = own.get(r, 0) + v
        node.own_count += 1
        self._propagate(node, q, 1, 1)

    def unallocated(self, name: str, quantities: Mapping[str, int]) -> None:
        """The client gave these quantities back; ValueError (and no change) if it holds less."""
        self._check_idle()
        node = self._clients[name]
        q = self._filtered(quantities)
        own = node.own_alloc
        for r, v in q.items():
            if own.get(r, 0) < v:  # checked first so a refusal leaves nothing half-done
                raise ValueError(f"{name!r} would hold a negative amount of {r!r}")
        _subtract(own, q)
        self._propagate(node, q, -1, 0)

    def allocation(self, name: str) -> Quantities:
        return dict(self._clients[name].own_alloc)

    def allocation_count(self, name: str) -> int:
        """How many times the client was allocated something (the first tie-breaker)."""
        return self._clients[name].own_count

    def _filtered(self, quantities: Mapping[str, int]) -> Mapping[str, int]:
        if not self._excluded:
            return quantities
        return {r: v for r, v in quantities.items() if r not in self._excluded}

    def _propagate(self, node: _Node, q: Mapping[str, int], sign: int, count: int) -> None:
        """Applies an allocation change to the subtree sums of ``node`` and its ancestors and
        re-places each in its parent's heap (`_place`, written out here: this is the
        allocator's hottest loop)."""
        if node.self_leaf is not None:
            self._place_self_leaf(node)
        root = self._root
        totals = self._totals.quantities
        weights = self._weights
        cur = node
        while cur is not root:
            alloc = cur.alloc
            if sign > 0:
                for r, v in q.items():
                    alloc[r] = alloc.get(r, 0) + v
            else:
                _subtract(alloc, q)
            cur.count += count
            parent: _Node = cur.parent  # type: ignore[assignment]  # only the root has none
            old = cur.entry
            if cur.active_count > 0:
                share = 0.0
                for r, v in alloc.items():
                    t = totals.get(r)
                    if t:
                        ratio = v / t
                        if ratio > share:
                            share = ratio
                weight = weights.get(cur.path)
                if weight is not None:
                    share = share / weight
                if old is None or old[0] != share or old[1] != cur.count:
                    entry = (share, cur.count, cur.path, next(self._seq), cur)
                    cur.entry = entry
                    if old is None:
                        parent.live += 1
                    self._push(parent, entry)
            elif old is not None:
                cur.entry = None
                parent.live -= 1
            cur = parent

    # weights and shares ---------------------------------------------------------------------

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replaces the weights (path -> weight > 0; missing = 1.0); reorders lazily."""
        self._check_idle()
        self._weights = dict(weights)
        self._dirty = True

    def weight(self, name: str) -> float:
        """The weight of a path (1.0 unless set)."""
        return self._weights.get(name, 1.0)

    def share(self, name: str) -> float:
        node = self._clients[name]
        return self._share(node.alloc, node.path)

    def _share(self, alloc: Mapping[str, int], path: str) -> float:
        totals = self._totals.quantities
        best = 0.0
        for r, v in alloc.items():
            t = totals.get(r)
            if t:
                ratio = v / t
                if ratio > best:
                    best = ratio
        weight = self._weights.get(path)
        return best if weight is None else best / weight

    # heap placement -------------------------------------------------------------------------

    def _place(self, node: _Node) -> None:
        parent = node.parent
        assert parent is not None
        self._set_entry(node, parent, node.active_count > 0, node.alloc, node.count, node.path)

    def _place_self_leaf(self, node: _Node) -> None:
        leaf = node.self_leaf
        assert leaf is not None
        self._set_entry(leaf, node, node.active, node.own_alloc, node.own_count, node.path)

    def _set_entry(
        self,
        holder: _Node | _SelfLeaf,
        heap_owner: _Node,
        active: bool,
        alloc: Quantities,
        count: int,
        path: str,
    ) -> None:
        """Puts a fresh entry for ``holder`` in ``heap_owner``'s heap if its key changed (or
        drops it when nothing below is active). The old entry turns stale."""
        old = holder.entry
        if active:
            share = self._share(alloc, path)
            if old is not None and old[0] == share and old[1] == count:
                return
            entry = (share, count, path, next(self._seq), holder)
            holder.entry = entry
            if old is None:
                heap_owner.live += 1
            self._push(heap_owner, entry)
        elif old is not None:
            holder.entry = None
            heap_owner.live -= 1

    @staticmethod
    def _push(node: _Node, entry: tuple[Any, ...]) -> None:
        heap = node.heap
        heappush(heap, entry)
        if len(heap) > 2 * node.live + 16:  # too many stale entries: compact
            heap[:] = [e for e in heap if e[4].entry is e]
            heapify(heap)

    def _rebuild(self) -> None:
        """Recomputes every share and heap after totals or weights changed."""
        for node in self._nodes.values():
            node.heap = []
            node.live = 0
        root = self._root
        root.heap = []
        root.live = 0
        for node in self._nodes.values():
            parent = node.parent
            assert parent is not None
            if node.active_count:
                share = self._share(node.alloc, node.path)
                entry = (share, node.count, node.path, next(self._seq), node)
                node.entry = entry
                parent.heap.append(entry)
                parent.live += 1
            else:
                node.entry = None
            leaf = node.self_leaf
            if leaf is not None:
                leaf.entry = None
                if node.active:
                    share = self._share(node.own_alloc, node.path)
                    leaf.entry = (share, node.own_count, node.path, next(self._seq), leaf)
                    node.heap.append(leaf.entry)
                    node.live += 1
        for node in self._nodes.values():
            heapify(node.heap)
        heapify(root.heap)
        self._dirty = False
        self._seen_version = self._totals.version

    # ordering -------------------------------------------------------------------------------

    def walk(self) -> Generator[str, None, None]:
        if self._walking:
            raise RuntimeError("a walk of this sorter is already open")
        if self._dirty or self._seen_version != self._totals.version:
            self._rebuild()
        return self._walk(self._root)

    def _walk(self, node: _Node) -> Generator[str, None, None]:
        # Pops entries in order (dropping stale ones for good) and pushes the live ones back
        # when the walk ends, so the heap is unchanged for the next walk.
        heap = node.heap
        popped: list[tuple[Any, ...]] = []
        self._walking += 1
        try:
            while heap:
                entry = heappop(heap)
                obj = entry[4]
                if obj.entry is not entry:
                    continue
                popped.append(entry)
                if obj.children:
                    yield from self._walk(obj)
                else:
                    yield obj.path
        finally:
            for entry in popped:
                heappush(heap, entry)
            self._walking -= 1

    def sort(self) -> list[str]:
        return list(self.walk())

    def _check_idle(self) -> None:
        if self._walking:
            raise RuntimeError("sorter changed during a walk; close the walk first")

    # checking -------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raises AssertionError if subtree sums, activity counts or heaps are inconsistent."""
        for node in [*self._nodes.values(), self._root]:
            expect: Quantities = dict(node.own_alloc)
            count = node.own_count
            active = int(node.client and node.active)
            for child in node.children.values():
                assert child.parent is node, f"{child.path}: wrong parent"
                for r, v in child.alloc.items():
                    expect[r] = expect.get(r, 0) + v
                count += child.count
                active += child.active_count
            assert node.active_count == active, f"{node.path!r}: active count {active}"
            assert all(v > 0 for v in node.own_alloc.values()), f"{node.path!r}: own <= 0"
            if node is not self._root:
                assert node.alloc == expect, f"{node.path!r}: {node.alloc} != {expect}"
                assert node.count == count, f"{node.path!r}: count {node.count} != {count}"
                assert (node.entry is not None) == (active > 0), f"{node.path!r}: entry"
                assert (node.self_leaf is not None) == (node.client and bool(node.children))
            live = sum(1 for e in node.heap if e[4].entry is e)
            assert live == node.live, f"{node.path!r}: live {node.live} != {live}"
            if not self._dirty and self._seen_version == self._totals.version:
                for e in node.heap:
                    if e[4].entry is e:
                        obj = e[4]
                        own = isinstance(obj, _SelfLeaf)
                        alloc = obj.node.own_alloc if own else obj.alloc
                        count = obj.node.own_count if own else obj.count
                        assert e[0] == self._share(alloc, obj.path), f"{obj.path!r}: share"
                        assert e[1] == count, f"{obj.path!r}: count in heap"
        for name, node in self._clients.items():
            assert node.client and self._nodes[node.path] is node, f"{name!r}: not a client"


def _subtract(alloc: Quantities, q: Mapping[str, int]) -> None:
    """Subtracts quantities known to be held (callers check first)."""
    for r, v in q.items():
        left = alloc.get(r, 0) - v
        if left > 0:
            alloc[r] = left
        else:
            alloc.pop(r, None)
