"""Offer operations on resources: RESERVE, UNRESERVE, CREATE, DESTROY, GROW_VOLUME and
SHRINK_VOLUME as pure conversions (Mesos' ``Resources::apply``).

Each operation is parsed and checked on its own (`parse_operation`) into a `Conversion`:
what it *consumes* and what it *converts* that into. Applying it to a pool (an offer's
resources, or an agent's total) is ``pool - consumed + converted`` once the pool is known to
contain ``consumed`` (`apply`). Conversions never change scalar quantities, so DRF shares and
totals by name stay as they were; only reservations and disk identity move.

Nothing here knows about frameworks, agents or ACLs: the master checks those (who may
reserve for which role, whether a volume is in use) around these functions.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from butte.core.resources import (
    Disk,
    Reservation,
    ResourceError,
    ResourceKey,
    Resources,
    Value,
    from_millis,
    to_millis,
)

# The offer operations this module converts; CREATE_DISK and DESTROY_DISK need resource
# providers (CSI), which butte does not have.
KINDS = ("RESERVE", "UNRESERVE", "CREATE", "DESTROY", "GROW_VOLUME", "SHRINK_VOLUME")
NEEDS_RESOURCE_PROVIDER = ("CREATE_DISK", "DESTROY_DISK")


class OperationError(ValueError):
    """An operation that is malformed or cannot apply; the message says why."""


@dataclass(frozen=True, slots=True)
class Conversion:
    """One operation: ``consumed`` becomes ``converted`` (same quantities)."""

    kind: str
    consumed: Resources
    converted: Resources


def apply(pool: Resources, conversion: Conversion, what: str = "offered") -> Resources:
    """``pool`` after ``conversion``; OperationError when the pool lacks what it consumes."""
    if not pool.contains(conversion.consumed):
        raise OperationError(
            f"{conversion.kind}: insufficient resources: {conversion.consumed.to_text()} "
            f"is not part of the {what} {pool.to_text() or '(nothing)'}"
        )
    return pool - conversion.consumed + conversion.converted


def parse_operation(
    kind: str, payload: Mapping[str, Any] | None, principal: str | None
) -> Conversion:
    """The conversion an operation asks for; ``principal`` is the framework's (or the
    operator's) principal, which reservations and volumes must name when it is set."""
    if kind in NEEDS_RESOURCE_PROVIDER:
        raise OperationError(
            f"{kind} needs a resource provider (CSI storage), which this master does not have"
        )
    parser = _PARSERS.get(kind)
    if parser is None:
        raise OperationError(f"operation {kind} is not supported by this master")
    if not isinstance(payload, Mapping):
        raise OperationError(f"operation {kind} is missing its '{kind.lower()}' payload")
    try:
        return parser(payload, principal)
    except ResourceError as e:
        raise OperationError(f"{kind}: {e}") from None


# -- helpers on keys --------------------------------------------------------------------------


def _resources(payload: Mapping[str, Any], field: str, kind: str) -> Resources:
    raw = payload.get(field)
    if not isinstance(raw, list) or not raw:
        raise OperationError(f"{kind} needs a non-empty '{field}' list")
    res = Resources.from_json(raw)
    if not res:
        raise OperationError(f"{kind}: '{field}' holds nothing (all zero)")
    return res


def _map(res: Resources, fn: Callable[[ResourceKey, Value], ResourceKey]) -> Resources:
    out = Resources()
    for key, value in res.items():
        out = out + Resources({fn(key, value): value})
    return out


def _check_principal(reservation: Reservation, principal: str | None) -> None:
    """Mesos' words: a caller with a principal reserves in its own name."""
    if principal is None or reservation.principal == principal:
        return
    if reservation.principal is None:
        raise OperationError(
            f"A reserve operation was attempted by principal '{principal}', but there is a "
            "reserved resource in the request with no principal set"
        )
    raise OperationError(
        f"A reserve operation was attempted by authenticated principal '{principal}', which "
        f"does not match a reserved resource in the request with principal "
        f"'{reservation.principal}'"
    )


# -- the operations --------------------------------------------------------------------------


def _reserve(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    if payload.get("source"):
        raise OperationError(
            "RESERVE: 'source' (changing one reservation into another) is not supported: "
            "UNRESERVE, then RESERVE"
        )
    res = _resources(payload, "resources", "RESERVE")
    for (name, stack, disk), _ in res.items():
        if not stack:
            raise OperationError(f"RESERVE: resource '{name}' names no reservation")
        top = stack[-1]
        if top.type != "DYNAMIC":
            raise OperationError(f"RESERVE: resource '{name}' must be reserved DYNAMIC")
        if len(stack) > 1 and not top.role.startswith(stack[-2].role + "/"):
            # Mesos' Resources::validate: a refinement is a strict sub-role.
            raise OperationError(
                f"Invalid refined reservation: role '{top.role}' is not a refinement of "
                f"'{stack[-2].role}'"
            )
        if disk is not None and disk.persistence_id is not None:
            raise OperationError("RESERVE: a persistent volume cannot be reserved again")
        _check_principal(top, principal)
    consumed = _map(res, lambda k, v: (k[0], k[1][:-1], k[2]))
    return Conversion("RESERVE", consumed, res)


def _unreserve(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    res = _resources(payload, "resources", "UNRESERVE")
    for (name, stack, disk), _ in res.items():
        if not stack or stack[-1].type != "DYNAMIC":
            raise OperationError(
                f"UNRESERVE: resource '{name}' is not dynamically reserved "
                "(static reservations cannot be undone)"
            )
        if disk is not None and disk.persistence_id is not None:
            raise OperationError("UNRESERVE: resource holds a persistent volume: DESTROY it first")
    converted = _map(res, lambda k, v: (k[0], k[1][:-1], k[2]))
    return Conversion("UNRESERVE", res, converted)


def _check_volume(key: ResourceKey, principal: str | None, kind: str) -> Disk:
    name, stack, disk = key
    if name != "disk" or disk is None or disk.persistence_id is None:
        raise OperationError(f"{kind}: '{name}' is not a persistent volume (disk.persistence)")
    if not stack:
        raise OperationError(
            f"{kind}: Persistent volumes cannot be created from unreserved resources "
            f"(volume '{disk.persistence_id}')"
        )
    if disk.container_path is None:
        raise OperationError(
            f"{kind}: volume '{disk.persistence_id}' needs 'volume.container_path'"
        )
    path = disk.container_path
    if path.startswith("/") or ".." in path.split("/") or posixpath.normpath(path) == ".":
        raise OperationError(
            f"{kind}: container_path {path!r} must be relative to the sandbox, without '..'"
        )
    pid = disk.persistence_id
    if pid in (".", "..") or "/" in pid:
        raise OperationError(f"{kind}: persistence id {pid!r} must not contain '/'")
    return disk


def _create(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    volumes = _resources(payload, "volumes", "CREATE")
    seen: set[tuple[str, str]] = set()
    for key, _ in volumes.items():
        disk = _check_volume(key, principal, "CREATE")
        ident = (key[1][-1].role, disk.persistence_id or "")
        if ident in seen:
            raise OperationError(f"CREATE: persistence id '{ident[1]}' is given twice")
        seen.add(ident)
        if principal is not None and disk.principal != principal:
            raise OperationError(
                f"CREATE: volume principal {disk.principal!r} does not match the caller's "
                f"principal {principal!r}"
            )
    consumed = _map(volumes, lambda k, v: (k[0], k[1], k[2].source_only() if k[2] else None))
    return Conversion("CREATE", consumed, volumes)


def _destroy(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    volumes = _resources(payload, "volumes", "DESTROY")
    for key, _ in volumes.items():
        _check_volume(key, None, "DESTROY")
    converted = _map(volumes, lambda k, v: (k[0], k[1], k[2].source_only() if k[2] else None))
    return Conversion("DESTROY", volumes, converted)


def _one_volume(payload: Mapping[str, Any], kind: str) -> tuple[ResourceKey, int]:
    raw = payload.get("volume")
    if not isinstance(raw, Mapping):
        raise OperationError(f"{kind} needs a 'volume'")
    items = list(Resources.from_json([raw]).items())
    if len(items) != 1:
        raise OperationError(f"{kind}: 'volume' must be one scalar disk resource")
    key, value = items[0]
    if not isinstance(value, int):
        raise OperationError(f"{kind}: 'volume' must be one scalar disk resource")
    disk = _check_volume(key, None, kind)
    if disk.source == "MOUNT":
        raise OperationError(f"{kind}: a volume on a MOUNT disk cannot change size")
    return key, value


def _grow(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    key, size = _one_volume(payload, "GROW_VOLUME")
    raw = payload.get("addition")
    if not isinstance(raw, Mapping):
        raise OperationError("GROW_VOLUME needs an 'addition'")
    items = list(Resources.from_json([raw]).items())
    if len(items) != 1:
        raise OperationError("GROW_VOLUME: 'addition' must be one non-zero scalar disk resource")
    (aname, astack, adisk), amount = items[0]
    if not isinstance(amount, int):
        raise OperationError("GROW_VOLUME: 'addition' must be one non-zero scalar disk resource")
    disk = key[2]
    assert disk is not None
    if aname != "disk" or astack != key[1] or adisk != disk.source_only():
        raise OperationError(
            "GROW_VOLUME: 'addition' must be plain disk of the volume's reservation and source"
        )
    consumed = Resources({key: size}) + Resources({items[0][0]: amount})
    return Conversion("GROW_VOLUME", consumed, Resources({key: size + amount}))


def _shrink(payload: Mapping[str, Any], principal: str | None) -> Conversion:
    key, size = _one_volume(payload, "SHRINK_VOLUME")
    sub = payload.get("subtract")
    value = sub.get("value") if isinstance(sub, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OperationError("SHRINK_VOLUME needs 'subtract.value', a number")
    try:
        millis = to_millis(float(value))
    except ResourceError as e:
        raise OperationError(f"SHRINK_VOLUME: {e}") from None
    if not 0 < millis < size:
        raise OperationError(
            f"SHRINK_VOLUME: subtract {value} must be above 0 and below the volume's size "
            f"{from_millis(size):g}"
        )
    disk = key[2]
    assert disk is not None
    freed = Resources({(key[0], key[1], disk.source_only()): millis})
    converted = Resources({key: size - millis}) + freed
    return Conversion("SHRINK_VOLUME", Resources({key: size}), converted)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str | None], Conversion]] = {
    "RESERVE": _reserve,
    "UNRESERVE": _unreserve,
    "CREATE": _create,
    "DESTROY": _destroy,
    "GROW_VOLUME": _grow,
    "SHRINK_VOLUME": _shrink,
}


# -- what an agent's total holds --------------------------------------------------------------


def persistence_ids(total: Resources) -> set[tuple[str, str]]:
    """(role, persistence id) of every volume in ``total``."""
    return {
        (k[1][-1].role if k[1] else "*", k[2].persistence_id)
        for k, _ in total.items()
        if k[2] is not None and k[2].persistence_id is not None
    }


def check_new_volumes(total: Resources, conversion: Conversion) -> None:
    """A CREATE must not reuse a persistence id the agent already has for the role."""
    if conversion.kind != "CREATE":
        return
    taken = persistence_ids(total)
    for role, pid in persistence_ids(conversion.converted):
        if (role, pid) in taken:
            raise OperationError(
                f"CREATE: persistence id '{pid}' is already in use by role '{role}' on the agent"
            )


def declared(total: Resources) -> Resources:
    """What an agent's ``--resources`` declared, given its total now: dynamic reservations
    undone and volumes turned back into the disk they were made of (an agent restarted with
    other resources than its checkpoint's does not match this)."""

    def undo(key: ResourceKey, value: Value) -> ResourceKey:
        name, stack, disk = key
        while stack and stack[-1].type == "DYNAMIC":
            stack = stack[:-1]
        return name, stack, disk.source_only() if disk is not None else None

    return _map(total, undo)
