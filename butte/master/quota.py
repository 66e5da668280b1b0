"""Quota configuration on the master (Mesos 1.9+ ``QuotaConfig``; docs/quota.md): parsing and
validating UPDATE_QUOTA / SET_QUOTA / REMOVE_QUOTA and ``/quota``, and the JSON of GET_QUOTA,
``/roles`` and the registry. Pure functions: the operator API calls them, then hands the new
map of quotas to the core (`MasterMachine.update_quotas`), which persists it and tells the
allocator. Nothing here changes state, so a refused request leaves everything as it was.

Rules (Mesos'):

* a config names a valid role other than ``*``; guarantees and limits map scalar resource names
  (``ports`` and other range or set resources have no quota) to ``{"value": x}`` with x a finite
  number >= 0;
* a guarantee may not exceed the limit of the same resource;
* hierarchical roles: a child's guarantees summed may not exceed its parent's guarantees, and a
  child's limit may not exceed its parent's limit (checked over the whole resulting map);
* unless ``force``: a limit may not be below the role's current consumption, and the guarantees
  of top-level roles summed may not exceed the cluster's total;
* an update with neither guarantees nor limits removes the role's quota.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from butte.core.resources import MAX_SCALAR, from_millis, to_millis, validate_role
from butte.master.allocator.quota import Quota, ancestors_and_self

# Resources that are not scalars in Mesos' predefined set; a quota on them is refused.
NON_SCALAR = frozenset({"ports"})
QuotaMap = dict[str, Quota]


class QuotaError(ValueError):
    """A request the master refuses with 400 and this message."""


# -- parsing ---------------------------------------------------------------------------------


def _scalars(raw: Any, what: str, role: str) -> dict[str, int]:
    """``{"cpus": {"value": 1.5}, ...}`` as thousandths."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise QuotaError(f"'{what}' of role '{role}' must be an object of name -> {{value}}")
    out: dict[str, int] = {}
    for name, scalar in raw.items():
        if not isinstance(name, str) or not name or len(name) > 255:
            raise QuotaError(f"Invalid resource name in '{what}' of role '{role}'")
        if name in NON_SCALAR:
            raise QuotaError(f"Quota of role '{role}': '{name}' is not a scalar resource")
        value = scalar.get("value") if isinstance(scalar, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QuotaError(f"'{what}' of role '{role}': '{name}' needs a numeric 'value'")
        if not math.isfinite(value) or value < 0 or value > MAX_SCALAR:
            raise QuotaError(
                f"'{what}' of role '{role}': '{name}' must be a finite number >= 0, got {value}"
            )
        millis = to_millis(float(value))
        if millis:
            out[name] = millis
        elif what == "limits":
            out[name] = 0  # a zero limit means "none of it", unlike a zero guarantee
    return out


def _role(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise QuotaError("Every quota config needs a 'role'")
    error = validate_role(raw, allow_star=False)
    if error:
        raise QuotaError(f"Invalid role '{raw[:255]}': {error}")
    return raw


def parse_configs(raw: Any) -> list[tuple[str, Quota]]:
    """UPDATE_QUOTA's ``quota_configs`` (a list of QuotaConfig JSON objects)."""
    if not isinstance(raw, list):
        raise QuotaError("'quota_configs' must be a list")
    out: list[tuple[str, Quota]] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, Mapping):
            raise QuotaError("Every quota config must be an object")
        role = _role(item.get("role"))
        if role in seen:
            raise QuotaError(f"Role '{role}' appears more than once")
        seen.add(role)
        quota = Quota(
            guarantees=_scalars(item.get("guarantees"), "guarantees", role),
            limits=_scalars(item.get("limits"), "limits", role),
        )
        for name, value in quota.guarantees.items():
            limit = quota.limits.get(name)
            if limit is not None and value > limit:
                raise QuotaError(
                    f"Role '{role}': the guarantee of '{name}' ({from_millis(value)}) "
                    f"exceeds its limit ({from_millis(limit)})"
                )
        out.append((role, quota))
    return out


def parse_request(raw: Any) -> tuple[str, Quota, bool]:
    """A legacy QuotaRequest (SET_QUOTA, ``POST /quota``): ``{role, guarantee: [Resource],
    force}``. As in Mesos 1.9+, the guarantee becomes both the guarantees and the limits."""
    if not isinstance(raw, Mapping):
        raise QuotaError("The quota request must be a JSON object")
    role = _role(raw.get("role"))
    force = raw.get("force", False)
    if not isinstance(force, bool):
        raise QuotaError("'force' must be a boolean")
    items = raw.get("guarantee")
    if not isinstance(items, list) or not items:
        raise QuotaError("'guarantee' must be a non-empty list of resources")
    scalars: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise QuotaError("Every resource of 'guarantee' needs a 'name'")
        name = item["name"]
        if item.get("type", "SCALAR") != "SCALAR" or name in NON_SCALAR:
            raise QuotaError(f"Quota of role '{role}': '{name}' is not a scalar resource")
        if item.get("reservations") or item.get("role", "*") != "*" or item.get("disk"):
            raise QuotaError(f"Quota of role '{role}': '{name}' must be a plain resource")
        scalar = item.get("scalar")
        value = scalar.get("value") if isinstance(scalar, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QuotaError(f"Quota of role '{role}': '{name}' needs a numeric scalar value")
        if name in scalars:  # Mesos' quota validation
            raise QuotaError(f"QuotaInfo contains duplicate resource name '{name}'")
        scalars[name] = {"value": value}
    guarantees = _scalars(scalars, "guarantee", role)
    return role, Quota(guarantees=guarantees, limits=dict(guarantees)), force


# -- validation of the resulting map ---------------------------------------------------------


def apply_updates(
    current: Mapping[str, Quota],
    updates: Iterable[tuple[str, Quota]],
    *,
    force: bool,
    cluster_total: Mapping[str, int],
    consumed: Callable[[str], Mapping[str, int]],
) -> QuotaMap:
    """The whole map of quotas after ``updates`` (an empty Quota removes one), or QuotaError
    saying why it is refused (then nothing changes)."""
    result = dict(current)
    changed: list[str] = []
    for role, quota in updates:
        if quota:
            result[role] = quota
        else:
            result.pop(role, None)
        changed.append(role)
    check_tree(result)
    if not force:
        for role in changed:
            configured = result.get(role)
            if configured is None:
                continue
            usage = consumed(role)
            for name, limit in configured.limits.items():
                if usage.get(name, 0) > limit:
                    raise QuotaError(
                        f"Role '{role}' already consumes {from_millis(usage[name])} '{name}', "
                        f"above the limit {from_millis(limit)} (set 'force' to apply anyway)"
                    )
        check_capacity(result, cluster_total)
    return result


def _parent(role: str) -> str | None:
    return role.rsplit("/", 1)[0] if "/" in role else None


def _nearest_configured_ancestor(role: str, quotas: Mapping[str, Quota]) -> str | None:
    for path in ancestors_and_self(role)[1:]:
        if path in quotas:
            return path
    return None


def check_tree(quotas: Mapping[str, Quota]) -> None:
    """Hierarchical rules: children's guarantees fit in the parent's, a child's limit is
    no larger than its parent's (the nearest ancestor with a quota counts as the parent)."""
    children_sum: dict[str, dict[str, int]] = {}
    for role, quota in quotas.items():
        parent = _nearest_configured_ancestor(role, quotas)
        if parent is None:
            continue
        upper = quotas[parent]
        for name, limit in upper.limits.items():
            mine = quota.limits.get(name)
            if mine is not None and mine > limit:
                raise QuotaError(
                    f"Role '{role}': its limit of '{name}' ({from_millis(mine)}) exceeds the "
                    f"limit of its parent '{parent}' ({from_millis(limit)})"
                )
        sums = children_sum.setdefault(parent, {})
        for name, value in quota.guarantees.items():
            sums[name] = sums.get(name, 0) + value
    for parent, sums in children_sum.items():
        guarantees = quotas[parent].guarantees
        for name, value in sums.items():
            if value > guarantees.get(name, 0):
                raise QuotaError(
                    f"The guarantees of the children of role '{parent}' sum to "
                    f"{from_millis(value)} '{name}', more than its own guarantee "
                    f"({from_millis(guarantees.get(name, 0))})"
                )


def check_capacity(quotas: Mapping[str, Quota], cluster_total: Mapping[str, int]) -> None:
    """The guarantees of top-level configured roles may not exceed the cluster's total
    (children's are inside their parents', so they are not counted twice)."""
    sums: dict[str, int] = {}
    for role, quota in quotas.items():
        if _nearest_configured_ancestor(role, quotas) is None:
            for name, value in quota.guarantees.items():
                sums[name] = sums.get(name, 0) + value
    for name, value in sorted(sums.items()):
        have = cluster_total.get(name, 0)
        if value > have:
            raise QuotaError(
                f"Total quota guarantees of '{name}' ({from_millis(value)}) exceed the "
                f"cluster's capacity ({from_millis(have)}) (set 'force' to apply anyway)"
            )


# -- JSON ------------------------------------------------------------------------------------


def scalars_json(quantities: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Thousandths as QuotaConfig's ``name -> {value}``."""
    return {name: {"value": from_millis(v)} for name, v in sorted(quantities.items())}


def config_json(role: str, quota: Quota) -> dict[str, Any]:
    """One QuotaConfig."""
    out: dict[str, Any] = {"role": role}
    if quota.guarantees:
        out["guarantees"] = scalars_json(quota.guarantees)
    if quota.limits:
        out["limits"] = scalars_json(quota.limits)
    return out


def resources_json(quantities: Mapping[str, int]) -> list[dict[str, Any]]:
    """Thousandths as a list of unreserved scalar Resource objects."""
    return [
        {"name": name, "type": "SCALAR", "scalar": {"value": from_millis(v)}}
        for name, v in sorted(quantities.items())
    ]


def status_json(quotas: Mapping[str, Quota]) -> dict[str, Any]:
    """QuotaStatus: ``infos`` (guarantees only, the pre-1.9 shape) and ``configs``."""
    infos = []
    configs = []
    for role, quota in sorted(quotas.items()):
        configs.append(config_json(role, quota))
        if quota.guarantees:
            infos.append({"role": role, "guarantee": resources_json(quota.guarantees)})
    out: dict[str, Any] = {}
    if infos:
        out["infos"] = infos
    if configs:
        out["configs"] = configs
    return out


def role_quota_json(role: str, quota: Quota | None, consumed: Mapping[str, int]) -> dict[str, Any]:
    """The ``quota`` field of a role in GET_ROLES and ``/roles`` (Mesos 1.9+: guarantee,
    limit and consumed as name -> value maps)."""
    quota = quota or Quota()
    return {
        "role": role,
        "guarantee": {n: from_millis(v) for n, v in sorted(quota.guarantees.items())},
        "limit": {n: from_millis(v) for n, v in sorted(quota.limits.items())},
        "consumed": {n: from_millis(v) for n, v in sorted(consumed.items())},
    }


def to_registry(quotas: Mapping[str, Quota]) -> dict[str, Any]:
    """The map as the registry stores it: role -> {"guarantees": {...}, "limits": {...}}."""
    return {
        role: {"guarantees": dict(q.guarantees), "limits": dict(q.limits)}
        for role, q in sorted(quotas.items())
    }


def from_registry(raw: Mapping[str, Any]) -> QuotaMap:
    """Inverse of `to_registry` (values are thousandths)."""
    out: QuotaMap = {}
    for role, entry in raw.items():
        out[str(role)] = Quota(
            guarantees={str(k): int(v) for k, v in entry.get("guarantees", {}).items()},
            limits={str(k): int(v) for k, v in entry.get("limits", {}).items()},
        )
    return out
