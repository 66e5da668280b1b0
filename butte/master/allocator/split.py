"""The free resources of an agent with reservations, taken apart once (`Split`), so that an
allocation cycle hands out their parts without rebuilding them for every role it looks at.

On an agent with reservations, `Resources.allocatable_to(role)` is the unreserved part for
every role that may use none of the reservations (the common case: one role owns them, a
thousand others do not), and everything for a role that may use the only reservation role
there is. A `Split` keeps those parts, their scalar quantities and what is left once the
unreserved part is handed out, built once from one `Resources` value (``of``) and valid for
that value only: it is a pure function of an immutable bag, so it cannot go stale; the
allocator keeps one per agent and uses it while ``split.of is agent.available``.

Quantity dicts handed out here are shared (by the split, the allocations' books and the
sorters, across cycles): callers read them and never change them.
"""

from __future__ import annotations

from butte.core.resources import Resources
from butte.master.allocator.quota import Quantities, unreserved_quantities

EMPTY = Resources()
NO_QUANTITIES: Quantities = {}


class Split:
    """``of`` taken apart: ``unreserved`` (with ``unreserved_q``), ``reserved`` (everything
    reserved, with ``reserved_q``), the reservation ``roles`` (the last role of each stack,
    sorted) and the quantities of the whole (``of_q``)."""

    __slots__ = (
        "of",
        "of_q",
        "unreserved",
        "unreserved_q",
        "reserved",
        "reserved_q",
        "roles",
        "prefixes",
        "_rest",
    )

    def __init__(self, resources: Resources, *, rest: bool = False) -> None:
        self.of = resources
        self.of_q = resources.quantities()
        self.unreserved = resources.unreserved()
        self.reserved = resources.reserved()
        if self.unreserved:
            self.unreserved_q = self.unreserved.quantities()
            self.reserved_q = self.reserved.quantities()
        else:  # (no copies of what ``of`` is already: one split per agent is kept)
            self.unreserved, self.unreserved_q = EMPTY, NO_QUANTITIES
            self.reserved, self.reserved_q = resources, self.of_q
        self.roles: tuple[str, ...] = tuple(sorted(self.reserved.roles()))
        self.prefixes = tuple(role + "/" for role in self.roles)
        # The split of what is left once the unreserved part is handed out (made with the
        # split of a total, on demand otherwise).
        self._rest: Split | None = None
        if rest and self.unreserved and self.reserved:
            self._rest = self._split_rest()

    def _split_rest(self) -> Split:
        """The split of ``reserved``, sharing this one's parts (nothing is unreserved)."""
        rest = Split.__new__(Split)
        rest.of = rest.reserved = self.reserved
        rest.of_q = rest.reserved_q = self.reserved_q
        rest.unreserved, rest.unreserved_q = EMPTY, NO_QUANTITIES
        rest.roles, rest.prefixes = self.roles, self.prefixes
        rest._rest = None
        return rest

    def may_use_reservations(self, role: str) -> bool:
        """True if ``role`` is one of the reservation roles or below one of them."""
        return role in self.roles or role.startswith(self.prefixes)

    def candidate(self, role: str) -> Resources:
        """``of.allocatable_to(role)``: one of the kept parts where it is one (the same
        object every time, so that callers can tell by identity), built otherwise."""
        if not self.may_use_reservations(role):
            return self.unreserved
        if len(self.roles) == 1:
            return self.of  # the role may use the only reservation role: everything
        return self.of.allocatable_to(role)

    def quantities(self, candidate: Resources) -> Quantities:
        """``candidate.quantities()``, kept for the parts."""
        if candidate is self.unreserved:
            return self.unreserved_q
        if candidate is self.of:
            return self.of_q
        return candidate.quantities()

    def unreserved_quantities(self, candidate: Resources) -> Quantities:
        """Scalar quantities of ``candidate``'s unreserved part, kept for the parts."""
        if candidate is self.unreserved or candidate is self.of:
            return self.unreserved_q
        return unreserved_quantities(candidate)

    def after(self, candidate: Resources) -> tuple[Resources, Split | None]:
        """What is left of ``of`` once ``candidate`` (a part of it) is handed out, and that
        rest's split where it is known without work (None otherwise)."""
        if candidate is self.of:
            return EMPTY, None
        if candidate is self.unreserved:
            rest = self._rest
            if rest is None:
                rest = self._rest = self._split_rest()
            return self.reserved, rest
        return self.of - candidate, None

    def check(self) -> None:
        """Raises AssertionError unless every kept part matches ``of`` (for tests)."""
        fresh = Split(self.of)
        for name in ("of_q", "unreserved", "unreserved_q", "reserved", "reserved_q", "roles"):
            assert getattr(self, name) == getattr(fresh, name), f"split: {name} is off"
        assert self.unreserved + self.reserved == self.of, "split: parts do not add up"
        assert self.prefixes == tuple(role + "/" for role in self.roles), "split: prefixes"
        if self._rest is not None:
            assert self._rest.of is self.reserved, "split: rest of another bag"
            self._rest.check()
