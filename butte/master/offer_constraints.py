"""Offer constraints (Mesos 1.11 ``offer_constraints`` in SUBSCRIBE and UPDATE_FRAMEWORK).

A framework may tell the master which agents it wants offers from, per role::

    {"role_constraints": {"<role>": {"groups": [
        {"attribute_constraints": [
            {"selector": {"attribute_name": "rack"} | {"pseudoattribute_type": "HOSTNAME"},
             "predicate": {"exists": {}} | {"not_exists": {}}
                        | {"text_equals": {"value": "r1"}} | {"text_not_equals": {"value": "r1"}}
                        | {"text_matches": {"regex": "r[0-9]+"}}}, ...]}, ...]}}}

An agent is offered to the role when it satisfies at least one group; a group is satisfied
when every constraint in it is. Pseudo-attributes are the agent's HOSTNAME and its fault
domain's REGION and ZONE. The text predicates look at TEXT attributes; as in Mesos, an
attribute of another type (SCALAR, RANGES, SET) satisfies any text predicate, and
``text_not_equals`` is satisfied by a missing attribute. ``text_matches`` must match the whole
value. Regular expressions are RE2's, as in Mesos (the ``google-re2`` package): its syntax is
what is accepted, and matching takes linear time, so a framework's pattern cannot stall the
allocation loop (Python's backtracking ``re`` could be made to). Patterns longer than
`MAX_REGEX_LENGTH` or compiling to more than `MAX_PROGRAM_SIZE` instructions are refused.
Pure: `parse` answers the constraints or an error message for a 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from butte.core.resources import Attribute

try:
    import re2
except ImportError:  # pragma: no cover - a runtime dependency; refused clearly without it
    re2 = None

PSEUDOATTRIBUTES = frozenset({"HOSTNAME", "REGION", "ZONE"})
PREDICATES = frozenset({"exists", "not_exists", "text_equals", "text_not_equals", "text_matches"})
MAX_REGEX_LENGTH = 4096
MAX_PROGRAM_SIZE = 2000
RE2_MAX_MEM = 1 << 20
MAX_CONSTRAINTS = 10_000


@dataclass(frozen=True, slots=True)
class Constraint:
    """One attribute constraint: a selector (attribute name or pseudo-attribute) and a
    predicate with its argument (value, or compiled regex)."""

    attribute: str | None
    pseudo: str | None
    predicate: str
    value: str = ""
    regex: Any = None  # a compiled RE2 pattern

    def allows(self, hostname: str, attributes: Sequence[Attribute], domain: Any) -> bool:
        found, text = self._lookup(hostname, attributes, domain)
        if self.predicate == "exists":
            return found
        if self.predicate == "not_exists":
            return not found
        if self.predicate == "text_not_equals":
            return not found or text is None or text != self.value
        if not found:
            return False
        if text is None:  # a non-TEXT attribute satisfies every text predicate
            return True
        if self.predicate == "text_equals":
            return text == self.value
        assert self.regex is not None
        return self.regex.fullmatch(text) is not None

    def _lookup(
        self, hostname: str, attributes: Sequence[Attribute], domain: Any
    ) -> tuple[bool, str | None]:
        """(exists, its text or None when it is not TEXT)."""
        if self.pseudo == "HOSTNAME":
            return True, hostname
        if self.pseudo is not None:
            name = _domain_name(domain, self.pseudo.lower())
            return name is not None, name
        for attr in attributes:
            if attr.name == self.attribute:
                return True, attr.value if attr.type == "TEXT" else None
        return False, None


def _domain_name(domain: Any, level: str) -> str | None:
    fault = domain.get("fault_domain") if isinstance(domain, Mapping) else None
    entry = fault.get(level) if isinstance(fault, Mapping) else None
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return name if isinstance(name, str) else None


@dataclass(frozen=True, slots=True)
class OfferConstraints:
    """Parsed constraints: role -> groups (OR) of constraints (AND)."""

    roles: Mapping[str, tuple[tuple[Constraint, ...], ...]]
    raw: Mapping[str, Any]

    def allows(
        self, role: str, hostname: str, attributes: Sequence[Attribute], domain: Any
    ) -> bool:
        groups = self.roles.get(role)
        if groups is None:
            return True
        return any(all(c.allows(hostname, attributes, domain) for c in g) for g in groups)


def raw_of(constraints: OfferConstraints | None) -> Mapping[str, Any] | None:
    """What the framework sent (compiled patterns do not compare by value)."""
    return constraints.raw if constraints is not None else None


def parse(raw: Mapping[str, Any] | None, roles: Sequence[str]) -> OfferConstraints | None | str:
    """The constraints of a SUBSCRIBE / UPDATE_FRAMEWORK (None if none were given), or why
    they are invalid. Constraints may name only roles of the framework."""
    if raw is None:
        return None
    try:
        return OfferConstraints(_parse_roles(raw, set(roles)), raw)
    except ValueError as e:
        return f"Invalid 'offer_constraints': {e}"


def _parse_roles(
    raw: Mapping[str, Any], roles: set[str]
) -> dict[str, tuple[tuple[Constraint, ...], ...]]:
    unknown = set(raw) - {"role_constraints"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))[:200]}")
    by_role = raw.get("role_constraints", {})
    if not isinstance(by_role, Mapping):
        raise ValueError("'role_constraints' must be an object keyed by role")
    out: dict[str, tuple[tuple[Constraint, ...], ...]] = {}
    count = 0
    for role, role_constraints in by_role.items():
        if role not in roles:
            raise ValueError(f"role '{str(role)[:100]}' is not a role of the framework")
        if not isinstance(role_constraints, Mapping):
            raise ValueError(f"constraints of role '{role}' must be an object with 'groups'")
        groups = role_constraints.get("groups")
        if not isinstance(groups, list) or not groups:
            raise ValueError(f"constraints of role '{role}' have no 'groups'")
        parsed = []
        for group in groups:
            items = group.get("attribute_constraints") if isinstance(group, Mapping) else None
            if not isinstance(items, list) or not items:
                raise ValueError(f"a group of role '{role}' has no 'attribute_constraints'")
            count += len(items)
            if count > MAX_CONSTRAINTS:
                raise ValueError(f"more than {MAX_CONSTRAINTS} constraints")
            parsed.append(tuple(_parse_constraint(c) for c in items))
        out[role] = tuple(parsed)
    return out


def _parse_constraint(raw: object) -> Constraint:
    if not isinstance(raw, Mapping):
        raise ValueError("an attribute constraint must be an object")
    selector, predicate = raw.get("selector"), raw.get("predicate")
    if not isinstance(selector, Mapping) or len(selector) != 1:
        raise ValueError(
            "a constraint's 'selector' must set exactly one of 'attribute_name' and "
            "'pseudoattribute_type'"
        )
    attribute = pseudo = None
    if "attribute_name" in selector:
        attribute = selector["attribute_name"]
        if not isinstance(attribute, str) or not attribute:
            raise ValueError("'attribute_name' must be a non-empty string")
    elif "pseudoattribute_type" in selector:
        pseudo = selector["pseudoattribute_type"]
        if pseudo not in PSEUDOATTRIBUTES:
            raise ValueError(
                f"unknown 'pseudoattribute_type' {str(pseudo)[:50]!r} "
                f"(one of {', '.join(sorted(PSEUDOATTRIBUTES))})"
            )
    else:
        raise ValueError(f"unknown selector {', '.join(map(str, selector))[:100]}")
    if not isinstance(predicate, Mapping) or len(predicate) != 1:
        raise ValueError(
            f"a constraint's 'predicate' must set exactly one of {', '.join(sorted(PREDICATES))}"
        )
    ((kind, arg),) = predicate.items()
    if kind not in PREDICATES:
        raise ValueError(f"unknown predicate {str(kind)[:50]!r}")
    if not isinstance(arg, Mapping):
        raise ValueError(f"predicate '{kind}' must be an object")
    if kind in ("exists", "not_exists"):
        return Constraint(attribute, pseudo, kind)
    if kind == "text_matches":
        return Constraint(attribute, pseudo, kind, regex=_compile(arg.get("regex")))
    value = arg.get("value")
    if not isinstance(value, str):
        raise ValueError(f"predicate '{kind}' needs a string 'value'")
    return Constraint(attribute, pseudo, kind, value=value)


def _compile(regex: object) -> Any:
    if not isinstance(regex, str):
        raise ValueError("predicate 'text_matches' needs a string 'regex'")
    if len(regex) > MAX_REGEX_LENGTH:
        raise ValueError(f"regex longer than {MAX_REGEX_LENGTH} characters")
    if re2 is None:
        raise ValueError("'text_matches' needs the google-re2 package on the master")
    options = re2.Options()
    options.log_errors = False  # the 400 says what is wrong; no log line per bad request
    options.max_mem = RE2_MAX_MEM
    try:
        pattern = re2.compile(regex, options)
    except re2.error as e:
        reason = e.args[0] if e.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"invalid RE2 regex {regex[:100]!r}: {reason}") from None
    if pattern.programsize > MAX_PROGRAM_SIZE:
        raise ValueError(f"regex {regex[:100]!r} is too complex for RE2's limits")
    return pattern
