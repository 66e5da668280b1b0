"""Whether a restarted agent may recover under its old id: Mesos' ``--reconfiguration_policy``
``equal`` (its default, the one butte has). The AgentInfo the agent checkpointed when it
registered and the one its flags make now must agree in hostname, port, resources (as
declared: without the reservations and volumes operations made of them) and attributes (in
any order). Otherwise the agent refuses to start, and the operator either restores the
flags or removes ``meta/slaves/latest`` to start as a new agent, as with Mesos.

Pure: JSON in, a sentence or None out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from butte.core import resource_ops
from butte.core.resources import Attribute, ResourceError, Resources


def agent_info_change(
    previous: Mapping[str, Any], current: Mapping[str, Any], check_port: bool = True
) -> str | None:
    """What differs between the checkpointed AgentInfo ``previous`` and ``current`` (both as
    JSON), or None when they agree. ``check_port`` False: the agent asked for any free port,
    which changes with every start."""
    for field in ("hostname", "port") if check_port else ("hostname",):
        if previous.get(field) != current.get(field):
            return f"{field} changed from {previous.get(field)!r} to {current.get(field)!r}"
    try:
        before = resource_ops.declared(Resources.from_json(previous.get("resources") or []))
    except (ResourceError, ValueError, TypeError) as e:
        return f"the checkpointed resources cannot be read: {e}"
    now = resource_ops.declared(Resources.from_json(current.get("resources") or []))
    if before != now:
        return f"resources changed from {before.to_text()} to {now.to_text()}"
    try:
        old = _attributes(previous.get("attributes") or [])
    except (ResourceError, ValueError, TypeError, KeyError) as e:
        return f"the checkpointed attributes cannot be read: {e}"
    new = _attributes(current.get("attributes") or [])
    if old != new:
        return f"attributes changed from {_text(old)} to {_text(new)}"
    return None


def _attributes(raw: list[Any]) -> dict[str, Attribute]:
    return {a.name: a for a in (Attribute.from_json(item) for item in raw)}


def _text(attributes: dict[str, Attribute]) -> str:
    parts = [f"{name}:{a.legacy_value()}" for name, a in attributes.items()]
    return ";".join(sorted(parts)) or "(none)"
