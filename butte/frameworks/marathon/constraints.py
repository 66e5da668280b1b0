"""Marathon placement constraints (pure): validation and matching against an offer.

A constraint is ``[field, operator, value?]``; ``field`` is ``hostname`` (``@hostname``) or
the name of an agent attribute. Operators: UNIQUE (one instance per value), CLUSTER (all on
one value: the given one, else the first used), GROUP_BY (spread evenly over the values,
optionally over at least N of them), LIKE / UNLIKE (the value matches / does not match a
regular expression), MAX_PER (at most N instances per value), IS (the value equals).

Scaling down keeps GROUP_BY groups even (`balanced_kills`), as Marathon's
``Constraints.selectInstancesToKill`` does; the other operators cannot be broken by a kill.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

OPERATORS = frozenset({"UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"})
_NEEDS_VALUE = frozenset({"LIKE", "UNLIKE", "MAX_PER", "IS"})


def validate_constraints(raw: Any, add_error: Callable[[str, str], None]) -> list[list[str]]:
    """Canonical constraints (``[field, OP]`` or ``[field, OP, value]``, values as strings);
    problems go to ``add_error(path, message)``."""
    if not isinstance(raw, list):
        add_error("/constraints", "must be a list of [field, operator, value?]")
        return []
    out = []
    for i, c in enumerate(raw):
        path = f"/constraints({i})"
        if isinstance(c, Mapping):  # the newer object form
            c = [c.get("fieldName"), c.get("operator"), c.get("value")]
            c = c if c[2] is not None else c[:2]
        if not isinstance(c, list) or len(c) not in (2, 3):
            add_error(path, "must be [field, operator] or [field, operator, value]")
            continue
        field, op = c[0], c[1]
        value = c[2] if len(c) == 3 else None
        if not isinstance(field, str) or not field:
            add_error(path, "the field must be a non-empty string")
            continue
        if field.startswith("@") and field != "@hostname":
            add_error(path, f"field {field!r}: only @hostname and agent attributes are supported")
            continue
        if op not in OPERATORS:
            add_error(path, f"operator {op!r} must be one of {sorted(OPERATORS)}")
            continue
        if value is not None and (not isinstance(value, str | int) or isinstance(value, bool)):
            add_error(path, "the value must be a string")
            continue
        value = None if value is None else str(value)
        if op in _NEEDS_VALUE and value is None:
            add_error(path, f"{op} needs a value")
            continue
        if op == "UNIQUE" and value:
            add_error(path, "UNIQUE takes no value")
            continue
        if op in ("LIKE", "UNLIKE"):
            try:
                re.compile(value or "")
            except re.error as e:
                add_error(path, f"invalid regular expression: {e}")
                continue
        if op in ("MAX_PER", "GROUP_BY") and value is not None:
            if not value.isdigit() or int(value) < 1:
                add_error(path, f"{op} needs a positive integer value")
                continue
        out.append([field, op] if value is None else [field, op, value])
    return out


def offer_value(field: str, hostname: str, attributes: Mapping[str, str]) -> str | None:
    """The value of a constraint field on an agent (None: the agent lacks the attribute)."""
    if field in ("hostname", "@hostname"):
        return hostname
    return attributes.get(field)


def first_violation(
    constraints: Sequence[Sequence[str]],
    hostname: str,
    attributes: Mapping[str, str],
    placed: Iterable[tuple[str, Mapping[str, str]]],
) -> str | None:
    """The first constraint an instance on this agent would break, given where the app's
    other instances are (``placed``: their hostnames and attributes); None if it fits."""
    if not constraints:
        return None
    placed = list(placed)
    for c in constraints:
        field, op = c[0], c[1]
        value = c[2] if len(c) > 2 else None
        here = offer_value(field, hostname, attributes)
        others = [offer_value(field, h, a) for h, a in placed]
        if not _holds(op, value, here, [o for o in others if o is not None]):
            return ":".join(c)
    return None


def _holds(op: str, value: str | None, here: str | None, others: list[str]) -> bool:
    if op == "LIKE":
        return here is not None and re.fullmatch(value or "", here) is not None
    if op == "UNLIKE":
        return here is None or re.fullmatch(value or "", here) is None
    if here is None:
        return False
    if op == "IS":
        return here == value
    if op == "UNIQUE":
        return here not in others
    if op == "CLUSTER":
        return here == value if value else all(o == here for o in others)
    if op == "MAX_PER":
        return others.count(here) < int(value or 1)
    if op == "GROUP_BY":
        counts = Counter(others)
        wanted_groups = int(value) if value else 0
        if here not in counts:
            return True
        if wanted_groups and len(counts) < wanted_groups:
            return False  # spread onto a new value first
        return counts[here] <= min(counts.values())
    return False


def balanced_kills(
    constraints: Sequence[Sequence[str]],
    candidates: Sequence[T],
    count: int,
    place: Callable[[T], tuple[str, Mapping[str, str]]],
) -> list[T]:
    """Up to ``count`` of ``candidates`` to kill so that the app's GROUP_BY groups stay (or
    become) even: one at a time from the largest group of the most uneven GROUP_BY field,
    as Marathon's ``Constraints.selectInstancesToKill``. ``candidates`` come in the order the
    caller prefers to kill them (that order picks within the largest groups); ``place``
    gives a candidate's hostname and attributes. Empty when no GROUP_BY applies; the caller
    takes the rest of what it kills in its own order."""
    if count >= len(candidates):
        return list(candidates)
    fields = [c[0] for c in constraints if c[1] == "GROUP_BY"]
    if not fields or count <= 0:
        return []
    # Per GROUP_BY field: the group (index) of each candidate and the groups' sizes.
    member: list[list[int]] = []
    sizes: list[list[int]] = []
    for field in fields:
        index: dict[str | None, int] = {}
        of = []
        for c in candidates:
            host, attributes = place(c)
            of.append(index.setdefault(offer_value(field, host, attributes), len(index)))
        member.append(of)
        sizes.append(list(Counter(of)[g] for g in range(len(index))))
    initial = [max(s) - min(s) for s in sizes]

    def spread_without(d: int, i: int) -> int:
        """The d-th field's max - min group size once candidate i is gone too."""
        s = sizes[d]
        g = member[d][i]
        s[g] -= 1
        out = max(s) - min(s)
        s[g] += 1
        return out

    def acceptable(i: int) -> bool:
        # Marathon's isMoreEvenWithout: even enough, or more even than before any kill.
        return all(
            (after := spread_without(d, i)) <= 1 or initial[d] > after for d in range(len(fields))
        )

    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        spread = [max(s) - min(s) for s in sizes]
        tried: list[int] = []
        for d in sorted(range(len(fields)), key=lambda d: -spread[d]):
            if spread[d] == 0:
                continue  # even: this field proposes nobody
            largest = max(sizes[d])
            tried += [
                i
                for i in range(len(candidates))
                if i not in taken and sizes[d][member[d][i]] == largest
            ]
        tried += [i for i in range(len(candidates)) if i not in taken]
        pick = next((i for i in tried if acceptable(i)), None)
        if pick is None:
            break
        chosen.append(pick)
        taken.add(pick)
        for d in range(len(fields)):
            sizes[d][member[d][pick]] -= 1
    return [candidates[i] for i in chosen]
