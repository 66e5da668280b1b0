"""Whether a restarted agent may recover under its old id: Mesos' ``--reconfiguration_policy``.
The AgentInfo the agent checkpointed when it registered (``previous``) is compared with the
one its flags make now (``current``); resources are compared as declared, without the
reservations and volumes offer operations made of them.

``equal`` (Mesos' default): hostname, port, fault domain, resources and attributes (in any
order) must all be as they were.

``additive`` (Mesos 1.5+): hostname and port must be as they were, and a fault domain that
was set too; every resource the agent had must still be there with the same reservations and
disk identity and at least as much of it (a scalar no smaller, ranges and sets containing the
old ones); every attribute it had must still be there with the same type, a TEXT or SCALAR
value unchanged and a RANGES (or SET) value containing the old one. New resources, new
attributes and a fault domain where there was none are the changes it allows.

Otherwise the agent refuses to start, and the operator either restores the flags or removes
``meta/slaves/latest`` to start as a new agent, as with Mesos (docs/reliability.md).

Pure: JSON in, a sentence or None out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from butte.core import resource_ops
from butte.core.resources import (
    RANGES,
    SCALAR,
    SET,
    Attribute,
    ResourceError,
    Resources,
    format_ranges,
    ranges_contains,
)

POLICIES = ("equal", "additive")


def agent_info_change(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    check_port: bool = True,
    policy: str = "equal",
) -> str | None:
    """What differs between the checkpointed AgentInfo ``previous`` and ``current`` (both as
    JSON) that ``policy`` (``equal`` or ``additive``) does not allow, or None when the agent
    may recover. ``check_port`` False: the agent asked for any free port, which changes with
    every start."""
    if policy not in POLICIES:
        raise ValueError(f"unknown reconfiguration policy {policy!r}")
    for field in ("hostname", "port") if check_port else ("hostname",):
        if previous.get(field) != current.get(field):
            return f"{field} changed from {previous.get(field)!r} to {current.get(field)!r}"
    domain = previous.get("domain")
    if (domain is not None or policy == "equal") and domain != current.get("domain"):
        return f"domain changed from {domain!r} to {current.get('domain')!r}"
    try:
        before = resource_ops.declared(Resources.from_json(previous.get("resources") or []))
    except (ResourceError, ValueError, TypeError) as e:
        return f"the checkpointed resources cannot be read: {e}"
    now = resource_ops.declared(Resources.from_json(current.get("resources") or []))
    try:
        old = _attributes(previous.get("attributes") or [])
    except (ResourceError, ValueError, TypeError, KeyError) as e:
        return f"the checkpointed attributes cannot be read: {e}"
    new = _attributes(current.get("attributes") or [])
    if policy == "additive":
        return _resources_shrunk(before, now) or _attributes_changed(old, new)
    if before != now:
        return f"resources changed from {before.to_text()} to {now.to_text()}"
    if old != new:
        return f"attributes changed from {_text(old)} to {_text(new)}"
    return None


def _resources_shrunk(before: Resources, now: Resources) -> str | None:
    """The first resource of ``before`` that ``now`` lacks or holds less of (Mesos matches
    each resource by name, type, reservations and disk, then compares the values)."""
    current = dict(now.items())
    for key, value in before.items():
        name = key[0]
        text = Resources({key: value}).to_text()
        match = current.get(key)
        if match is None or type(match) is not type(value):
            return f"resource {text} was removed (now: {now.to_text() or '(none)'})"
        if isinstance(value, int):
            if match < value:  # type: ignore[operator]  # both scalars (thousandths)
                return f"scalar resource {text} decreased to {Resources({key: match}).to_text()}"
        elif isinstance(value, tuple):
            if not ranges_contains(match, value):  # type: ignore[arg-type]  # both ranges
                return (
                    f"ranges of resource '{name}' {format_ranges(value)} are not all in "
                    f"{format_ranges(match)}"  # type: ignore[arg-type]  # both ranges
                )
        elif not value <= match:  # type: ignore[operator]  # both sets
            return f"set resource {text} lost items (now: {Resources({key: match}).to_text()})"
    return None


def _attributes_changed(old: dict[str, Attribute], new: dict[str, Attribute]) -> str | None:
    """The first attribute of ``old`` that ``new`` removed or changed in a way ``additive``
    does not allow (ranges and sets may only grow)."""
    for name, attribute in sorted(old.items()):
        match = new.get(name)
        if match is None:
            return f"attribute {name}:{attribute.legacy_value()} was removed"
        if match.type != attribute.type:
            return f"type of attribute '{name}' changed from {attribute.type} to {match.type}"
        if attribute.type == RANGES:
            grew = ranges_contains(match.value, attribute.value)
        elif attribute.type == SET:
            grew = attribute.value <= match.value
        else:  # TEXT and SCALAR values cannot change
            grew = attribute.value == match.value
        if not grew:
            kind = {RANGES: "ranges", SET: "set", SCALAR: "scalar"}.get(attribute.type, "text")
            return (
                f"value of {kind} attribute '{name}' changed from {attribute.legacy_value()} "
                f"to {match.legacy_value()}"
            )
    return None


def _attributes(raw: list[Any]) -> dict[str, Attribute]:
    return {a.name: a for a in (Attribute.from_json(item) for item in raw)}


def _text(attributes: dict[str, Attribute]) -> str:
    parts = [f"{name}:{a.legacy_value()}" for name, a in attributes.items()]
    return ";".join(sorted(parts)) or "(none)"
