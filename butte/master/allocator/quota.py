"""Quota in the allocator (after Mesos 1.9+ ``QuotaConfig``): a role's *guarantees* (what
the allocator makes sure it can get, holding back "headroom" from other roles) and *limits*
(what it is never offered beyond). Pure helpers used by `butte.master.allocator.hierarchical`.

Vocabulary (quantities are scalar thousandths by resource name, as in `Resources.quantities`):

* **consumed** quota of a role: the unreserved resources allocated to it (offered or used)
  plus every resource reserved to it (allocated or not), its whole subtree included
  (``eng`` counts ``eng/web``). Mesos counts the same.
* **unsatisfied guarantee**: ``max(0, guarantee - consumed)`` per name.
* **required headroom**: the unsatisfied guarantees of the top-most roles with guarantees
  summed (a child's guarantee lies within its parent's, so it is not counted twice).
* **available headroom**: the unreserved resources of active agents that nobody holds.

Non-scalar resources (ports) are outside quota: never capped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from butte.core.resources import Resources

Quantities = dict[str, int]


@dataclass(frozen=True, slots=True)
class Quota:
    """A role's guarantees and limits in thousandths (a name absent from ``limits`` has no
    limit; an empty Quota is the default: nothing guaranteed, nothing limited)."""

    guarantees: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.guarantees) or bool(self.limits)


def ancestors_and_self(role: str) -> list[str]:
    """``a/b/c`` -> ``["a/b/c", "a/b", "a"]``."""
    out = [role]
    while "/" in role:
        role = role.rsplit("/", 1)[0]
        out.append(role)
    return out


def add_into(into: dict[str, Quantities], role: str, q: Mapping[str, int], sign: int) -> None:
    """Adds (sign=1) or subtracts (-1) ``q`` to the consumption of ``role`` and its ancestors,
    dropping names that reach zero."""
    for path in ancestors_and_self(role):
        add_at(into, path, q, sign)


def add_at(into: dict[str, Quantities], path: str, q: Mapping[str, int], sign: int) -> None:
    """`add_into` for ``path`` alone."""
    mine = into.get(path)
    if mine is None:
        if sign < 0:
            return
        mine = into[path] = {}
    for name, value in q.items():
        left = mine.get(name, 0) + sign * value
        if left > 0:
            mine[name] = left
        else:
            mine.pop(name, None)
    if not mine:
        del into[path]


def within(role: str, path: str) -> bool:
    """True if ``role`` is ``path`` or below it."""
    return role == path or role.startswith(path + "/")


def shortfall(guarantees: Mapping[str, int], consumed: Mapping[str, int]) -> Quantities:
    """The unsatisfied part of a guarantee (names with nothing missing left out)."""
    out: Quantities = {}
    for name, value in guarantees.items():
        missing = value - consumed.get(name, 0)
        if missing > 0:
            out[name] = missing
    return out


def reserved_quantities(total: Resources) -> dict[str, Quantities]:
    """Scalar reserved quantities of an agent's total by reservation role (the last role of
    a refined reservation's stack)."""
    out: dict[str, Quantities] = {}
    for key, value in total.items():
        name, stack = key[0], key[1]
        if stack and isinstance(value, int):
            mine = out.setdefault(stack[-1].role, {})
            mine[name] = mine.get(name, 0) + value
    return out


def unreserved_quantities(resources: Resources) -> Quantities:
    """Scalar quantities of the unreserved part only."""
    out: Quantities = {}
    for key, value in resources.items():
        name, stack = key[0], key[1]
        if not stack and isinstance(value, int):
            out[name] = out.get(name, 0) + value
    return out


def cap_unreserved(resources: Resources, caps: Mapping[str, int]) -> Resources:
    """``resources`` with each unreserved scalar named in ``caps`` cut down to the cap (<= 0
    drops it). Returns ``resources`` itself when nothing is cut, so callers can tell."""
    out = None
    for key, value in resources.items():
        name, stack = key[0], key[1]
        if stack or not isinstance(value, int):
            continue
        cap = caps.get(name)
        if cap is None or value <= cap:
            continue
        if out is None:
            out = dict(resources.items())
        if cap > 0:
            out[key] = cap
        else:
            del out[key]
    return resources if out is None else Resources(out)


def only_satisfied(
    resources: Resources, guarantees: Mapping[str, int], missing: Quantities
) -> bool:
    """True if ``resources`` is nothing but unreserved scalars that ``guarantees`` names and
    that nothing is ``missing`` of: stage 1 would cut every one of them to zero."""
    for key, value in resources.items():
        name = key[0]
        if key[1] or not isinstance(value, int) or name not in guarantees or name in missing:
            return False
    return True


def min_into(caps: Quantities, name: str, value: int) -> None:
    """caps[name] = min(caps[name], value)."""
    cur = caps.get(name)
    if cur is None or value < cur:
        caps[name] = value
