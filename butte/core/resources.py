"""Resources: the quantities a master pools and hands out, with Mesos semantics.

A `Resources` value is an immutable bag keyed by (name, reservation stack):

* SCALAR values (cpus, mem, disk, gpus, custom) are stored as integers in thousandths, the
  3-decimal fixed point Mesos uses, so arithmetic never drifts (0.1 + 0.2 == 0.3).
* RANGES values (ports) are tuples of disjoint, sorted, inclusive ``(begin, end)`` pairs.
* SET values are frozensets of strings.

The reservation stack is a tuple of `Reservation` (empty = unreserved, the ``"*"`` role).
Three JSON shapes are understood (docs/protocol.md §1.6): the pre-refinement form with ``role`` (and
``reservation`` for dynamic reservations), the refinement form with ``reservations``, and the
endpoint form with both. The text form of ``--resources`` is parsed by `parse_resources`.

Everything here is pure and fast: the allocator calls these operations on its hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

SCALAR = "SCALAR"
RANGES = "RANGES"
SET = "SET"

Ranges = tuple[tuple[int, int], ...]
Value = int | Ranges | frozenset[str]


class ResourceError(ValueError):
    """Raised for resources that are malformed or do not make sense (negative, bad type...)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """One level of a reservation stack: who the resource is reserved for, and how."""

    role: str
    type: str = "STATIC"  # STATIC | DYNAMIC
    principal: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "role": self.role}
        if self.principal is not None:
            out["principal"] = self.principal
        if self.labels:
            out["labels"] = {"labels": [{"key": k, "value": v} for k, v in self.labels]}
        return out


@dataclass(frozen=True, slots=True)
class Disk:
    """The identity of a disk resource beyond its name and reservations (Mesos DiskInfo):
    a persistent volume (``persistence_id``, its creator ``principal``, where tasks see it and
    how) and the disk's source (ROOT, the agent's work_dir; PATH or MOUNT, under ``root``).
    ``None`` stands for a plain ROOT disk, so ordinary resources carry no object at all."""

    persistence_id: str | None = None
    principal: str | None = None
    container_path: str | None = None
    mode: str = "RW"
    source: str = "ROOT"  # ROOT | PATH | MOUNT
    root: str | None = None

    @property
    def whole(self) -> bool:
        """A persistent volume or a MOUNT disk is used whole: it cannot be split."""
        return self.persistence_id is not None or self.source == "MOUNT"

    def source_only(self) -> Disk | None:
        """The disk this volume was made of (``None`` for a plain ROOT disk)."""
        if self.source == "ROOT":
            return None
        return Disk(source=self.source, root=self.root)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.persistence_id is not None:
            persistence: dict[str, Any] = {"id": self.persistence_id}
            if self.principal is not None:
                persistence["principal"] = self.principal
            out["persistence"] = persistence
        if self.container_path is not None:
            out["volume"] = {"container_path": self.container_path, "mode": self.mode}
        if self.source != "ROOT":
            kind = self.source.lower()
            out["source"] = {"type": self.source, kind: {"root": self.root or ""}}
        return out


ResourceKey = tuple[str, tuple[Reservation, ...], Disk | None]


# The largest scalar taken from outside: far above any machine (a trillion CPUs, an exabyte
# of memory in MB) and small enough that its thousandths are exact in a float.
MAX_SCALAR = 1e12
# Range bounds are unsigned 64-bit integers in Mesos; ports are TCP/UDP ports.
MAX_RANGE_BOUND = 2**64 - 1
MAX_PORT = 65535
# The types of the resources every agent has; a resource of another type under one of these
# names is refused (arithmetic between a SCALAR and a RANGES of one name has no meaning).
KNOWN_TYPES = {"cpus": "SCALAR", "mem": "SCALAR", "disk": "SCALAR", "gpus": "SCALAR"}
KNOWN_TYPES["ports"] = "RANGES"


def to_millis(value: float) -> int:
    """Converts a scalar to fixed-point thousandths, rejecting NaN, infinity and values over
    `MAX_SCALAR`."""
    if not math.isfinite(value):
        raise ResourceError(f"scalar value {value!r} is not finite")
    if abs(value) > MAX_SCALAR:
        raise ResourceError(f"scalar value {value!r} is over the maximum {MAX_SCALAR:g}")
    return round(value * 1000)


def _check_scalar(name: str, value: float) -> int:
    """``value`` of scalar resource ``name`` in thousandths, or ResourceError."""
    if value < 0:
        raise ResourceError(f"resource '{name}' has negative value {value}")
    if value > MAX_SCALAR:
        raise ResourceError(f"resource '{name}' value {value:g} is over {MAX_SCALAR:g}")
    millis = to_millis(value)
    if millis == 0 and value != 0:
        # As Mesos: a non-zero amount that its fixed point (thousandths) would make zero.
        raise ResourceError(
            f"resource '{name}' value {value:g} is below the smallest amount, 0.001 "
            "(Invalid scalar resource: value <= 0)"
        )
    return millis


def _check_range(name: str, begin: int, end: int) -> tuple[int, int]:
    limit = MAX_PORT if name == "ports" else MAX_RANGE_BOUND
    if begin < 0 or end < begin or end > limit:
        raise ResourceError(f"resource '{name}' has invalid range [{begin}-{end}]")
    return begin, end


def _check_type(name: str, rtype: str) -> None:
    known = KNOWN_TYPES.get(name)
    if known is not None and rtype != known:
        raise ResourceError(f"resource '{name}' must be of type {known}, not {rtype}")


def from_millis(millis: int) -> float:
    """Converts thousandths back to a float for the wire."""
    return millis / 1000


# -- range arithmetic ------------------------------------------------------------------------


def normalize_ranges(pairs: Iterable[tuple[int, int]]) -> Ranges:
    """Sorts and coalesces inclusive ranges (adjacent ones merge: [1-2],[3-4] -> [1-4])."""
    items = sorted(pairs)
    out: list[tuple[int, int]] = []
    for begin, end in items:
        if begin > end:
            raise ResourceError(f"range [{begin}-{end}] has begin > end")
        if out and begin <= out[-1][1] + 1:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((begin, end))
    return tuple(out)


def ranges_add(a: Ranges, b: Ranges) -> Ranges:
    return normalize_ranges(a + b)


def ranges_subtract(a: Ranges, b: Ranges) -> Ranges:
    """Removes every number of ``b`` from ``a`` (both normalized)."""
    out: list[tuple[int, int]] = []
    j = 0
    for begin, end in a:
        cur = begin
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= end:
            rb, re_ = b[k]
            if rb > cur:
                out.append((cur, rb - 1))
            cur = max(cur, re_ + 1)
            if cur > end:
                break
            k += 1
        if cur <= end:
            out.append((cur, end))
    return tuple(out)


def ranges_contains(a: Ranges, b: Ranges) -> bool:
    """True if every number of ``b`` lies within ``a`` (both normalized)."""
    i = 0
    for begin, end in b:
        while i < len(a) and a[i][1] < begin:
            i += 1
        if i == len(a) or a[i][0] > begin or a[i][1] < end:
            return False
    return True


def format_ranges(a: Ranges) -> str:
    return "[" + ", ".join(f"{b}-{e}" for b, e in a) + "]"


# -- the Resources value ---------------------------------------------------------------------


class Resources:
    """An immutable bag of resources with Mesos add / subtract / contains semantics."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[ResourceKey, Value] | None = None) -> None:
        # Invariant: no empty values (0 scalar, empty ranges, empty set) are stored.
        self._items: dict[ResourceKey, Value] = dict(items) if items else {}
        self._hash: int | None = None

    # construction ---------------------------------------------------------------------------

    @classmethod
    def _trusted(cls, items: dict[ResourceKey, Value]) -> Resources:
        obj = cls.__new__(cls)
        obj._items = items
        obj._hash = None
        return obj

    @classmethod
    def scalars(cls, role: str = "*", **values: float) -> Resources:
        """Builds unreserved (or statically reserved) scalars: ``Resources.scalars(cpus=1)``."""
        res = _role_stack(role)
        return cls._trusted(
            {(name, res, None): to_millis(v) for name, v in values.items() if to_millis(v) != 0}
        )

    # queries --------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self._items)

    def is_empty(self) -> bool:
        return not self._items

    def items(self) -> Iterator[tuple[ResourceKey, Value]]:
        return iter(self._items.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resources) and self._items == other._items

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Resources({self.to_text()!r})"

    def scalar(self, name: str) -> float:
        """Total of a scalar over all reservations, as a float."""
        return from_millis(self.scalar_millis(name))

    def scalar_millis(self, name: str) -> int:
        total = 0
        for (n, _, _), v in self._items.items():
            if n == name and isinstance(v, int):
                total += v
        return total

    def quantities(self) -> dict[str, int]:
        """Scalar totals by name (thousandths), ignoring reservations: the input of DRF."""
        out: dict[str, int] = {}
        for (name, _, _), v in self._items.items():
            if isinstance(v, int):
                out[name] = out.get(name, 0) + v
        return out

    def ranges(self, name: str) -> Ranges:
        acc: Ranges = ()
        for (n, _, _), v in self._items.items():
            if n == name and isinstance(v, tuple):
                acc = ranges_add(acc, v)
        return acc

    def names(self) -> set[str]:
        return {k[0] for k in self._items}

    def has(self, name: str) -> bool:
        return any(k[0] == name for k in self._items)

    def roles(self) -> set[str]:
        """Roles holding reservations here (``"*"`` for unreserved parts)."""
        return {(k[1][-1].role if k[1] else "*") for k in self._items}

    def unreserved(self) -> Resources:
        return Resources._trusted({k: v for k, v in self._items.items() if not k[1]})

    def reserved(self, role: str | None = None) -> Resources:
        """Reserved parts; for one role when given (that role exactly, as Mesos does)."""
        return Resources._trusted(
            {
                k: v
                for k, v in self._items.items()
                if k[1] and (role is None or k[1][-1].role == role)
            }
        )

    def allocatable_to(self, role: str) -> Resources:
        """What a framework in ``role`` may be offered: unreserved plus reserved for the role
        or one of its ancestors (hierarchical roles)."""
        out: dict[ResourceKey, Value] = {}
        for k, v in self._items.items():
            stack = k[1]
            if not stack or _role_within(role, stack[-1].role):
                out[k] = v
        return Resources._trusted(out)

    # arithmetic -----------------------------------------------------------------------------

    def __add__(self, other: Resources) -> Resources:
        if not other._items:
            return self
        if not self._items:
            return other
        out = dict(self._items)
        for k, v in other._items.items():
            cur = out.get(k)
            if cur is None:
                out[k] = v
            elif isinstance(v, int):
                out[k] = cur + v  # type: ignore[operator]  # same key, same kind as v
            elif isinstance(v, tuple):
                out[k] = ranges_add(cur, v)  # type: ignore[arg-type]  # same key, same kind as v
            else:
                out[k] = cur | v  # type: ignore[operator]  # same key, same kind as v
        return Resources._trusted(out)

    def __sub__(self, other: Resources) -> Resources:
        """Subtraction that never goes negative: what is not there is ignored (Mesos does the
        same; callers check `contains` first where a shortfall is an error)."""
        if not other._items:
            return self
        out = dict(self._items)
        for k, v in other._items.items():
            cur = out.get(k)
            if cur is None:
                continue
            if isinstance(v, int):
                left = cur - v  # type: ignore[operator]  # same key, same kind as v
                if left > 0:
                    out[k] = left
                else:
                    del out[k]
            elif isinstance(v, tuple):
                rest = ranges_subtract(cur, v)  # type: ignore[arg-type]  # same key, same kind as v
                if rest:
                    out[k] = rest
                else:
                    del out[k]
            else:
                rest_set = cur - v  # type: ignore[operator]  # same key, same kind as v
                if rest_set:
                    out[k] = rest_set
                else:
                    del out[k]
        return Resources._trusted(out)

    def contains(self, other: Resources) -> bool:
        """True if ``other`` fits entirely inside this bag, reservation by reservation."""
        items = self._items
        for k, v in other._items.items():
            cur = items.get(k)
            if cur is None or type(cur) is not type(v):
                return False  # (a name given with two types holds nothing of the other)
            if isinstance(v, int):
                if cur < v:  # type: ignore[operator]  # same key, same kind as v
                    return False
                if cur != v and k[2] is not None and k[2].whole:
                    return False  # a volume or MOUNT disk is never split
            elif isinstance(v, tuple):
                if not ranges_contains(cur, v):  # type: ignore[arg-type]  # same key, same kind as v
                    return False
            elif not v <= cur:  # type: ignore[operator]  # same key, same kind as v
                return False
        return True

    def __ge__(self, other: Resources) -> bool:
        return self.contains(other)

    def __le__(self, other: Resources) -> bool:
        return other.contains(self)

    # wire forms -----------------------------------------------------------------------------

    def to_json(self, fmt: str = "pre", allocation_role: str | None = None) -> list[dict[str, Any]]:
        """Mesos JSON Resource list.

        ``fmt`` is ``"pre"`` (``role`` field; frameworks without RESERVATION_REFINEMENT),
        ``"post"`` (``reservations`` stack) or ``"endpoint"`` (both, for state endpoints).
        ``allocation_role`` adds ``allocation_info`` to every resource (offers, tasks).
        """
        out: list[dict[str, Any]] = []
        for (name, stack, disk), v in sorted(self._items.items(), key=_sort_key):
            r: dict[str, Any] = {"name": name}
            if isinstance(v, int):
                r["type"] = SCALAR
                r["scalar"] = {"value": from_millis(v)}
            elif isinstance(v, tuple):
                r["type"] = RANGES
                r["ranges"] = {"range": [{"begin": b, "end": e} for b, e in v]}
            else:
                r["type"] = SET
                r["set"] = {"item": sorted(v)}
            if fmt in ("pre", "endpoint"):
                r["role"] = stack[-1].role if stack else "*"
                if stack and stack[-1].type == "DYNAMIC":
                    resv: dict[str, Any] = {}
                    if stack[-1].principal is not None:
                        resv["principal"] = stack[-1].principal
                    if stack[-1].labels:
                        resv["labels"] = stack[-1].to_json()["labels"]
                    r["reservation"] = resv
            if fmt in ("post", "endpoint") and stack:
                r["reservations"] = [s.to_json() for s in stack]
            if disk is not None:
                r["disk"] = disk.to_json()
            if allocation_role is not None:
                r["allocation_info"] = {"role": allocation_role}
            out.append(r)
        return out

    def to_legacy_map(self) -> dict[str, Any]:
        """The name -> value map of the legacy ``/state`` endpoints."""
        out: dict[str, Any] = {"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0}
        for name, v in self.quantities().items():
            out[name] = from_millis(v)
        for name in sorted({k[0] for k, v in self._items.items() if not isinstance(v, int)}):
            rng = self.ranges(name)
            if rng:
                out[name] = format_ranges(rng)
            else:
                items: set[str] = set()
                for (n, _, _), value in self._items.items():
                    if n == name and isinstance(value, frozenset):
                        items |= value
                out[name] = "{" + ",".join(sorted(items)) + "}"
        return out

    def to_text(self) -> str:
        """The ``--resources`` text form (``cpus(role):1;ports:[1-2]``)."""
        parts = []
        for (name, stack, disk), v in sorted(self._items.items(), key=_sort_key):
            label = name if not stack else f"{name}({stack[-1].role})"
            if disk is not None and disk.persistence_id is not None:
                label += f"[{disk.persistence_id}:{disk.container_path or ''}]"
            if isinstance(v, int):
                parts.append(f"{label}:{_fmt_scalar(v)}")
            elif isinstance(v, tuple):
                parts.append(f"{label}:{format_ranges(v)}")
            else:
                parts.append(f"{label}:{{{','.join(sorted(v))}}}")
        return ";".join(parts)

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, Any]]) -> Resources:
        """Parses a Mesos JSON Resource list in any of the three formats; raises ResourceError
        with a message naming the bad resource."""
        out: dict[ResourceKey, Value] = {}
        acc = Resources._trusted(out)
        for raw in items:
            one = _parse_json_resource(raw)
            acc = acc + one
        return acc


def _sort_key(item: tuple[ResourceKey, Value]) -> tuple[str, tuple[str, ...], str]:
    (name, stack, disk), _ = item
    return name, tuple(s.role for s in stack), repr(disk) if disk is not None else ""


def _fmt_scalar(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis / 1000:g}"


def _role_stack(role: str) -> tuple[Reservation, ...]:
    return () if role == "*" else (Reservation(role=role),)


def _role_within(role: str, reserved_role: str) -> bool:
    """True if ``role`` is ``reserved_role`` or below it in the role tree."""
    return role == reserved_role or role.startswith(reserved_role + "/")


# -- role names ------------------------------------------------------------------------------


def validate_role(role: str, *, allow_star: bool = True) -> str | None:
    """Returns an error message if ``role`` is not a valid Mesos role name, else None."""
    if role == "*":
        return None if allow_star else "role '*' cannot be reserved for"
    if not role:
        return "role name must not be empty"
    if role in (".", ".."):
        return f"role name {role!r} is not allowed"
    if role.startswith("-"):
        return f"role name {role!r} must not start with '-'"
    if any(c.isspace() or c == "\b" or ord(c) < 32 for c in role):
        return f"role name {role!r} must not contain whitespace or control characters"
    if role.startswith("/") or role.endswith("/") or "//" in role:
        return f"role name {role!r} has an empty path component"
    for part in role.split("/"):
        if part in (".", "..", "*") or part.startswith("-"):
            return f"role name {role!r} has an invalid path component {part!r}"
    return None


# -- parsing ---------------------------------------------------------------------------------


# Fields of Mesos' Resource that butte does not implement: refused, never read as plain
# resources (a shared volume would otherwise be made unshared, a revocable cpu a firm one).
_UNSUPPORTED_FIELDS = (
    ("revocable", "revocable resources are not supported (butte offers none)"),
    ("shared", "shared resources are not supported"),
    ("provider_id", "resources of resource providers are not supported"),
)


def _parse_json_resource(raw: Mapping[str, Any]) -> Resources:
    if not isinstance(raw, Mapping):
        raise ResourceError(f"resource must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ResourceError("resource is missing its 'name'")
    for field, why in _UNSUPPORTED_FIELDS:
        if raw.get(field) is not None:
            raise ResourceError(f"resource '{name}': {why}")
    rtype = raw.get("type")
    stack = _parse_reservations(raw, name)
    disk = _parse_disk(raw.get("disk"), name) if raw.get("disk") is not None else None
    if disk is not None and rtype != SCALAR:
        raise ResourceError(f"resource '{name}' has disk info but is not a SCALAR")
    if rtype in (SCALAR, RANGES, SET):
        _check_type(name, rtype)
    if rtype == SCALAR:
        scalar = raw.get("scalar")
        value = scalar.get("value") if isinstance(scalar, Mapping) else None
        millis = _check_scalar(name, _number(value, name))
        return Resources._trusted({(name, stack, disk): millis} if millis else {})
    if rtype == RANGES:
        rng = raw.get("ranges")
        pairs = rng.get("range", []) if isinstance(rng, Mapping) else None
        if not isinstance(pairs, list):
            raise ResourceError(f"resource '{name}' of type RANGES needs 'ranges.range'")
        parsed = []
        for p in pairs:
            if not isinstance(p, Mapping):
                raise ResourceError(f"resource '{name}' has a malformed range {p!r}")
            b, e = _integer(p.get("begin"), name), _integer(p.get("end"), name)
            parsed.append(_check_range(name, b, e))
        ranges = normalize_ranges(parsed)
        return Resources._trusted({(name, stack, None): ranges} if ranges else {})
    if rtype == SET:
        st = raw.get("set")
        items = st.get("item", []) if isinstance(st, Mapping) else None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ResourceError(f"resource '{name}' of type SET needs 'set.item' strings")
        return Resources._trusted({(name, stack, None): frozenset(items)} if items else {})
    raise ResourceError(f"resource '{name}' has unknown or missing type {rtype!r}")


# The longest persistence id or path a disk may carry (ids become directory names).
MAX_DISK_STRING = 1024


def _disk_string(value: Any, what: str, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_DISK_STRING:
        raise ResourceError(f"resource '{name}' needs a non-empty string '{what}'")
    if "\x00" in value:
        raise ResourceError(f"resource '{name}' has a NUL byte in '{what}'")
    return value


def _parse_disk(raw: Any, name: str) -> Disk | None:
    """Mesos DiskInfo; None for a plain ROOT disk (the common case keeps no object)."""
    if name != "disk":
        raise ResourceError(f"resource '{name}' cannot carry disk info (only 'disk' can)")
    if not isinstance(raw, Mapping):
        raise ResourceError(f"resource '{name}' has a malformed 'disk'")
    if all(raw.get(part) is None for part in ("persistence", "volume", "source")):
        raise ResourceError(f"resource '{name}' has a DiskInfo that is set but empty")
    persistence_id = principal = container_path = root = None
    mode, source = "RW", "ROOT"
    persistence = raw.get("persistence")
    if persistence is not None:
        if not isinstance(persistence, Mapping):
            raise ResourceError(f"resource '{name}' has a malformed 'disk.persistence'")
        persistence_id = _disk_string(persistence.get("id"), "disk.persistence.id", name)
        if persistence.get("principal") is not None:
            principal = _disk_string(persistence["principal"], "persistence.principal", name)
    volume = raw.get("volume")
    if volume is not None:
        if not isinstance(volume, Mapping):
            raise ResourceError(f"resource '{name}' has a malformed 'disk.volume'")
        container_path = _disk_string(
            volume.get("container_path"), "disk.volume.container_path", name
        )
        mode = volume.get("mode", "RW")
        if mode not in ("RW", "RO"):
            raise ResourceError(f"resource '{name}' has volume mode {mode!r} (RW or RO)")
    src = raw.get("source")
    if src is not None:
        if not isinstance(src, Mapping) or src.get("type") not in ("PATH", "MOUNT"):
            raise ResourceError(f"resource '{name}' needs a disk source of type PATH or MOUNT")
        source = src["type"]
        inner = src.get(source.lower())
        if not isinstance(inner, Mapping):
            raise ResourceError(f"resource '{name}' needs 'disk.source.{source.lower()}.root'")
        root = _disk_string(inner.get("root"), f"disk.source.{source.lower()}.root", name)
        if not root.startswith("/"):
            raise ResourceError(f"resource '{name}': disk source root must be absolute")
    if persistence_id is None and container_path is None and source == "ROOT":
        return None
    return Disk(persistence_id, principal, container_path, mode, source, root)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ResourceError(f"resource '{name}' has a non-numeric value")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ResourceError(f"resource '{name}' has a non-numeric value {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ResourceError(f"resource '{name}' needs a finite numeric 'scalar.value'")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact, however large (the range check bounds it)
    number = _number(value, name)
    if number != int(number):
        raise ResourceError(f"resource '{name}' range bounds must be integers")
    return int(number)


def _parse_reservations(raw: Mapping[str, Any], name: str) -> tuple[Reservation, ...]:
    reservations = raw.get("reservations")
    if reservations:
        if not isinstance(reservations, list):
            raise ResourceError(f"resource '{name}' has malformed 'reservations'")
        stack = []
        for r in reservations:
            if not isinstance(r, Mapping) or not isinstance(r.get("role"), str):
                raise ResourceError(f"resource '{name}' has a reservation without a role")
            err = validate_role(r["role"], allow_star=False)
            if err:
                raise ResourceError(f"resource '{name}': {err}")
            rtype = r.get("type", "DYNAMIC" if r.get("principal") else "STATIC")
            if rtype not in ("STATIC", "DYNAMIC"):
                raise ResourceError(f"resource '{name}' has reservation type {rtype!r}")
            stack.append(Reservation(r["role"], rtype, _principal(r, name), _labels(r)))
        return tuple(stack)
    role = raw.get("role", "*")
    if role is None or role == "*":
        return ()
    if not isinstance(role, str):
        raise ResourceError(f"resource '{name}' has a non-string role")
    err = validate_role(role)
    if err:
        raise ResourceError(f"resource '{name}': {err}")
    resv = raw.get("reservation")
    if isinstance(resv, Mapping):
        return (Reservation(role, "DYNAMIC", _principal(resv, name), _labels(resv)),)
    return (Reservation(role),)


def _labels(obj: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    labels = obj.get("labels")
    if not isinstance(labels, Mapping) or not isinstance(labels.get("labels", []), list):
        return ()
    return tuple(
        (str(lb.get("key", "")), str(lb.get("value", "")))
        for lb in labels.get("labels", [])
        if isinstance(lb, Mapping)
    )


def _principal(obj: Mapping[str, Any], name: str) -> str | None:
    principal = obj.get("principal")
    if principal is not None and not isinstance(principal, str):
        raise ResourceError(f"resource '{name}' has a non-string reservation principal")
    return principal


def parse_resources(text: str, default_role: str = "*") -> Resources:
    """Parses the Mesos ``--resources`` flag: ``name(role):value;...`` where value is a scalar,
    ``[a-b,c-d]`` ranges or ``{x,y}`` set; also accepts a JSON array of Resource objects."""
    text = text.strip()
    if text.startswith("["):
        import json

        try:
            return Resources.from_json(json.loads(text))
        except ValueError as e:  # JSONDecodeError is a ValueError, as is ResourceError
            raise ResourceError(f"invalid JSON resources: {e}") from None
    acc = Resources()
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if ":" not in part:
            raise ResourceError(f"bad resource {part!r}: expected name:value")
        label, value = (s.strip() for s in part.split(":", 1))
        role = default_role
        if "(" in label:
            if not label.endswith(")"):
                raise ResourceError(f"bad resource name {label!r}")
            label, role = label[:-1].split("(", 1)
        if not label:
            raise ResourceError(f"bad resource {part!r}: empty name")
        err = validate_role(role)
        if err:
            raise ResourceError(f"bad resource {part!r}: {err}")
        stack = _role_stack(role)
        _check_type(label, RANGES if value.startswith("[") else SET if value[:1] == "{" else SCALAR)
        if value.startswith("["):
            if not value.endswith("]"):
                raise ResourceError(f"bad ranges {value!r} for {label}")
            pairs = []
            for rng in filter(None, (r.strip() for r in value[1:-1].split(","))):
                bounds = rng.split("-")
                try:
                    b, end = (int(bounds[0]), int(bounds[-1])) if len(bounds) <= 2 else (-1, -1)
                except ValueError:
                    raise ResourceError(f"bad range {rng!r} for {label}") from None
                pairs.append(_check_range(label, b, end))
            one = Resources._trusted(
                {(label, stack, None): normalize_ranges(pairs)} if pairs else {}
            )
        elif value.startswith("{"):
            if not value.endswith("}"):
                raise ResourceError(f"bad set {value!r} for {label}")
            items = frozenset(filter(None, (i.strip() for i in value[1:-1].split(","))))
            one = Resources._trusted({(label, stack, None): items} if items else {})
        else:
            try:
                number = float(value)
            except ValueError:
                raise ResourceError(f"bad scalar {value!r} for {label}") from None
            if number < 0 or not math.isfinite(number):
                raise ResourceError(f"bad scalar {value!r} for {label}: must be >= 0")
            millis = _check_scalar(label, number)
            one = Resources._trusted({(label, stack, None): millis} if millis else {})
        acc = acc + one
    return acc


@dataclass(frozen=True, slots=True)
class Attribute:
    """An agent attribute (``rack:r1``): TEXT, SCALAR, RANGES or SET."""

    name: str
    type: str
    value: Any  # str | float | Ranges | frozenset[str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "TEXT":
            out["text"] = {"value": self.value}
        elif self.type == SCALAR:
            out["scalar"] = {"value": self.value}
        elif self.type == RANGES:
            out["ranges"] = {"range": [{"begin": b, "end": e} for b, e in self.value]}
        else:
            out["set"] = {"item": sorted(self.value)}
        return out

    def legacy_value(self) -> Any:
        if self.type == RANGES:
            return format_ranges(self.value)
        if self.type == SET:
            return "{" + ",".join(sorted(self.value)) + "}"
        return self.value

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Attribute:
        name, atype = raw.get("name"), raw.get("type")
        if not isinstance(name, str) or not name:
            raise ResourceError("attribute is missing its 'name'")
        if atype == "TEXT":
            text = raw.get("text") or {}
            return cls(name, "TEXT", str(text.get("value", "")))
        if atype in (SCALAR, RANGES, SET):
            res = _parse_json_resource({**raw, "role": "*", "reservations": None})
            if atype == SCALAR:
                return cls(name, SCALAR, from_millis(res.scalar_millis(name)))
            if atype == RANGES:
                return cls(name, RANGES, res.ranges(name))
            items: frozenset[str] = frozenset()
            for _, v in res.items():
                items = items | v  # type: ignore[operator]  # a SET attribute's values are sets
            return cls(name, SET, items)
        raise ResourceError(f"attribute '{name}' has unknown type {atype!r}")


def parse_attributes(text: str) -> tuple[Attribute, ...]:
    """Parses ``--attributes "rack:r1;zone:a;cores:8;ports:[1-2]"`` (Mesos typing rules:
    a number is SCALAR, ``[..]`` RANGES, ``{..}`` SET, anything else TEXT)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if ":" not in part:
            raise ResourceError(f"bad attribute {part!r}: expected name:value")
        name, value = (s.strip() for s in part.split(":", 1))
        if not name:
            raise ResourceError(f"bad attribute {part!r}: empty name")
        if value.startswith("[") or value.startswith("{"):
            res = parse_resources(f"{name}:{value}")
            if value.startswith("["):
                out.append(Attribute(name, RANGES, res.ranges(name)))
            else:
                items: frozenset[str] = frozenset()
                for _, v in res.items():
                    items = items | v  # type: ignore[operator]  # a SET attribute's values are sets
                out.append(Attribute(name, SET, items))
            continue
        try:
            number = float(value)
        except ValueError:
            out.append(Attribute(name, "TEXT", value))
        else:
            if not math.isfinite(number):
                out.append(Attribute(name, "TEXT", value))
            else:
                out.append(Attribute(name, SCALAR, number))
    return tuple(out)
