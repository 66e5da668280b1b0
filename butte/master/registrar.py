"""The registrar's metrics, as Mesos' registrar publishes them (``src/master/registrar.cpp``):

* ``registrar/queued_operations``: registry operations waiting to be written. butte's writes
  are synchronous (the shell applies them before it delivers anything that depends on them),
  so nothing ever waits: always 0.
* ``registrar/registry_size_bytes``: the size of what the registry holds, once this master
  has read it. Mesos measures its ``Registry`` protobuf; butte's registry is JSON (the
  ZooKeeper store keeps these same entries as JSON, the SQLite store one JSON row per
  entry), so the figure is the registry's content (`RegistryState`) encoded as compact JSON.
  It grows and shrinks as Mesos' does: with admitted, unreachable, gone and deactivated
  agents, weights, quotas and the maintenance schedule.
* ``registrar/state_fetch_ms``: how long reading the registry took at election (a Mesos
  ``Timer`` without a window: its last value only).
* ``registrar/state_store_ms``: how long the last write took, and, as Mesos' ``Timer`` with a
  one-day window adds once it has two values, ``/count``, ``/min``, ``/max`` and the
  percentiles ``/p50``, ``/p90``, ``/p95``, ``/p99``, ``/p999``, ``/p9999`` of the writes of
  the last day (at most the last `MAX_SAMPLES`, as libprocess keeps a bounded time series).

A figure Mesos has no value for yet (before the registry was read, before the first write)
is left out of the snapshot, as libprocess leaves out a gauge or timer without a value.

Pure: fed the registry this master read and each batch of operations it wrote, with the
times they took; the shell calls `recovered` and `stored` and serves `metrics`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from butte.coord.interface import Operation, RegistryState
from butte.core.codec import encode_json

# The window and capacity of libprocess' time series behind a Timer's statistics.
WINDOW_SECONDS = 24 * 3600.0
MAX_SAMPLES = 1000
# The percentiles libprocess publishes for a metric with statistics, by suffix.
PERCENTILES = (
    ("p50", 0.5),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p999", 0.999),
    ("p9999", 0.9999),
)
# The registry's parts holding one entry per agent, and those that are one value each.
_PER_AGENT = ("agents", "unreachable", "gone", "deactivated")
_WHOLE = ("weights", "maintenance", "quotas")


def percentile(values: Sequence[float], fraction: float) -> float:
    """libprocess' ``Statistics`` percentile: linear interpolation between the two sorted
    values around ``fraction * (n - 1)``."""
    position = fraction * (len(values) - 1)
    index = math.floor(position)
    lower = values[index]
    upper = values[min(index + 1, len(values) - 1)]
    return lower + (upper - lower) * (position - index)


def timer_statistics(name: str, values: Iterable[float]) -> dict[str, float]:
    """The statistics libprocess adds to a windowed metric ``name`` (none below two
    values): ``name/count``, ``/min``, ``/max`` and the `PERCENTILES`."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return {}
    out = {f"{name}/count": float(len(ordered)), f"{name}/min": ordered[0]}
    out[f"{name}/max"] = ordered[-1]
    for suffix, fraction in PERCENTILES:
        out[f"{name}/{suffix}"] = percentile(ordered, fraction)
    return out


class RegistrySize:
    """The registry's content as compact JSON, in bytes, kept up to date as it is written.

    It holds a mirror of the registry (the operations applied with `RegistryState.apply`,
    the stores' own rule) and the encoded size of every agent entry, computed once per
    entry value: a snapshot then adds up cached sizes instead of encoding 10,000 agent
    infos again."""

    def __init__(self, state: RegistryState) -> None:
        # A copy of the parts the stores keep: the loaded state is also the core's input.
        self._state = state.copy()
        # part -> agent id -> (the value measured, the size of `"<id>":<value>`).
        self._sizes: dict[str, dict[str, tuple[Any, int]]] = {part: {} for part in _PER_AGENT}

    def apply(self, operations: Iterable[Operation]) -> None:
        for operation in operations:
            self._state.apply(operation)

    def _part_size(self, part: str, entries: Mapping[str, Any]) -> int:
        """The bytes of ``{"<id>":<value>,...}`` for one per-agent part."""
        cached = self._sizes[part]
        for gone in [k for k in cached if k not in entries]:
            del cached[gone]
        size = 2 + max(len(entries) - 1, 0)  # the braces and the commas between entries
        for key, value in entries.items():
            entry = cached.get(key)
            if entry is None or entry[0] is not value:
                entry = cached[key] = (value, len(encode_json({key: value})) - 2)
            size += entry[1]
        return size

    def bytes(self) -> int:
        """The size of ``{"agents":{...},"unreachable":{...},...,"quotas":{...}}``."""
        state = self._state
        parts: dict[str, Mapping[str, Any]] = {
            "agents": state.agents,
            "unreachable": state.unreachable,
            "gone": state.gone,
            "deactivated": state.deactivated,
        }
        size = 2 + len(_PER_AGENT) + len(_WHOLE) - 1  # braces, commas between the parts
        for part, entries in parts.items():
            size += len(encode_json(part)) + 1 + self._part_size(part, entries)
        for part, value in (
            ("weights", state.weights),
            ("maintenance", state.maintenance),
            ("quotas", state.quotas),
        ):
            size += len(encode_json(part)) + 1 + len(encode_json(value))
        return size


class RegistrarMetrics:
    """The ``registrar/*`` figures of one master (see the module docstring)."""

    def __init__(self) -> None:
        self.fetch_ms: float | None = None
        self.store_ms: float | None = None  # the last write's, however old
        self.size: RegistrySize | None = None
        # (when, milliseconds) of the writes of the last day, at most MAX_SAMPLES.
        self._stores: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)

    def recovered(self, state: RegistryState, fetch_ms: float) -> None:
        """This master read the registry (elected) in ``fetch_ms``."""
        self.fetch_ms = fetch_ms
        self.size = RegistrySize(state)

    def stored(self, operations: Sequence[Operation], store_ms: float, now: float) -> None:
        """A batch of operations was made durable in ``store_ms``, at ``now``."""
        if self.size is not None:
            self.size.apply(operations)
        self.store_ms = store_ms
        self._stores.append((now, store_ms))

    def metrics(self, now: float) -> dict[str, float]:
        """The ``registrar/*`` entries of ``/metrics/snapshot`` at ``now``."""
        while self._stores and self._stores[0][0] < now - WINDOW_SECONDS:
            self._stores.popleft()
        out: dict[str, float] = {"registrar/queued_operations": 0.0}
        if self.size is not None:
            out["registrar/registry_size_bytes"] = float(self.size.bytes())
        if self.fetch_ms is not None:
            out["registrar/state_fetch_ms"] = self.fetch_ms
        if self.store_ms is not None:
            out["registrar/state_store_ms"] = self.store_ms
        out.update(timer_statistics("registrar/state_store_ms", (ms for _, ms in self._stores)))
        return out
