"""The master registry in ZooKeeper, away from the election path.

Layout (``<root>`` = ``/butte/registry/<sha1(election path)[:16]>``, its data names the
election path)::

    <root>/agents/<bb>        {"<agent id>": AgentInfo JSON, ...}   bb = 00..ff
    <root>/unreachable/<bb>   {"<agent id>": seconds, ...}
    <root>/gone/<bb>          {"<agent id>": seconds, ...}
    <root>/deactivated/<bb>   {"<agent id>": {"drain": null or DrainInfo JSON}, ...}
    <root>/weights            {"<role>": weight, ...}
    <root>/maintenance        {"schedule": {...}, "down_machines": [...]}
    <root>/quotas             {"<role>": {"guarantees": {...}, "limits": {...}}, ...}

Agents are spread over 256 bucket znodes by a hash of their id: with 10k agents a bucket
holds about 40 (some 16 KB), far below ZooKeeper's 1 MB znode limit (room for well over a
million agents), a registration rewrites one small bucket, and a new leader reads the whole
registry with under a thousand pipelined reads (one znode per agent took 2 s for 10k).

Only the leader writes, so the store keeps a mirror of every bucket and rewrites the
buckets an operation touches. Each write is a ZooKeeper transaction that also checks the
version of this master's own election node (the fence): once that node is gone no write can
succeed, whatever the client library believes about its session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from butte.coord.interface import (
    AdmitAgent,
    MarkGone,
    MarkUnreachable,
    Operation,
    PruneAgents,
    RegistryError,
    RegistryState,
    RemoveAgent,
    UpdateAgentDrain,
    UpdateMaintenance,
    UpdateQuotas,
    UpdateWeights,
)
from butte.core.codec import encode_json

REGISTRY_ROOT = "/butte/registry"
BUCKETS = 256
_KINDS = ("agents", "unreachable", "gone", "deactivated")
# Bounds of one ZooKeeper transaction (the whole request must stay under jute.maxbuffer).
_MAX_TXN_OPS = 500
_MAX_TXN_BYTES = 512 * 1024


def bucket_of(agent_id: str) -> str:
    """The bucket znode name of an agent (stable across processes: crc32, not hash())."""
    return f"{zlib.crc32(agent_id.encode()) % BUCKETS:02x}"


class ZooKeeperRegistry:
    """See the module docstring. ``fence`` gives this master's election node path."""

    def __init__(
        self, client: KazooClient, election_path: str, fence: Callable[[], str | None]
    ) -> None:
        self.client = client
        self.election_path = election_path
        digest = hashlib.sha1(election_path.encode()).hexdigest()[:16]
        self.root = f"{REGISTRY_ROOT}/{digest}"
        self._fence = fence
        # kind -> bucket -> {agent id: value}; a bucket present here exists in ZooKeeper.
        self._buckets: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in _KINDS}
        self._weights_exist = False
        self._maintenance_exists = False
        self._quotas_exist = False
        self.writes = 0
        self.operations = 0
        self.write_seconds = 0.0
        self.max_write_seconds = 0.0
        self.load_seconds = 0.0

    # -- reading ----------------------------------------------------------------------------------

    def load(self) -> RegistryState:
        started = time.perf_counter()
        try:
            self._ensure_layout()
            for kind in _KINDS:
                self._buckets[kind] = self._load_buckets(kind)
            state = RegistryState(
                agents=self._merged("agents"),
                unreachable={k: float(v) for k, v in self._merged("unreachable").items()},
                gone={k: float(v) for k, v in self._merged("gone").items()},
                deactivated=self._merged("deactivated"),
            )
            try:
                data, _ = self.client.get(f"{self.root}/weights")
                state.weights = {str(k): float(v) for k, v in json.loads(data).items()}
                self._weights_exist = True
            except NoNodeError:
                self._weights_exist = False
            try:
                data, _ = self.client.get(f"{self.root}/maintenance")
                state.maintenance = dict(json.loads(data))
                self._maintenance_exists = True
            except NoNodeError:
                self._maintenance_exists = False
            try:
                data, _ = self.client.get(f"{self.root}/quotas")
                quotas = json.loads(data)
                if not isinstance(quotas, dict):
                    raise ValueError(f"{self.root}/quotas does not hold a JSON object")
                state.quotas = quotas
                self._quotas_exist = True
            except NoNodeError:
                self._quotas_exist = False
        except (KazooException, ValueError, TypeError, AttributeError) as e:
            raise RegistryError(f"cannot read the registry at {self.root}: {e!r}") from None
        self.load_seconds = time.perf_counter() - started
        return state

    def _ensure_layout(self) -> None:
        if not self.client.exists(self.root):
            self.client.ensure_path(REGISTRY_ROOT)
            with contextlib.suppress(KazooException):  # another master was quicker
                marker = encode_json({"election_path": self.election_path})
                self.client.create(self.root, marker)
        for kind in _KINDS:
            self.client.ensure_path(f"{self.root}/{kind}")

    def _load_buckets(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every bucket of a kind, read with pipelined requests."""
        base = f"{self.root}/{kind}"
        names = self.client.get_children(base)
        pending = [(name, self.client.get_async(f"{base}/{name}")) for name in names]
        out: dict[str, dict[str, Any]] = {}
        for name, result in pending:
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            content = json.loads(data) if data else {}
            if not isinstance(content, dict):
                raise ValueError(f"{base}/{name} does not hold a JSON object")
            out[name] = content
        return out

    def _merged(self, kind: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for content in self._buckets[kind].values():
            merged.update(content)
        return merged

    # -- writing ----------------------------------------------------------------------------------

    def apply(self, operations: Sequence[Operation]) -> None:
        started = time.perf_counter()
        fence = self._fence()
        if fence is None:
            raise RegistryError("not a candidate: no election node to fence writes with")
        touched: dict[tuple[str, str], bool] = {}  # (kind, bucket) -> existed before
        weights: dict[str, float] | None = None
        maintenance: dict[str, Any] | None = None
        quotas: dict[str, Any] | None = None
        for op in operations:
            if isinstance(op, UpdateWeights):
                weights = dict(op.weights)
                continue
            if isinstance(op, UpdateMaintenance):
                maintenance = dict(op.state)
                continue
            if isinstance(op, UpdateQuotas):
                quotas = dict(op.quotas)
                continue
            for agent_id, kind, value in _changes(op):
                bucket = bucket_of(agent_id)
                buckets = self._buckets[kind]
                if value is None and agent_id not in buckets.get(bucket, {}):
                    continue  # nothing to remove
                touched.setdefault((kind, bucket), bucket in buckets)
                content = buckets.setdefault(bucket, {})
                if value is None:
                    content.pop(agent_id, None)
                else:
                    content[agent_id] = value
        writes: list[tuple[str, str, bytes]] = []
        for (kind, bucket), existed in sorted(touched.items()):
            data = encode_json(self._buckets[kind][bucket])
            writes.append(("set" if existed else "create", f"{self.root}/{kind}/{bucket}", data))
        if weights is not None:
            kind = "set" if self._weights_exist else "create"
            writes.append((kind, f"{self.root}/weights", encode_json(weights)))
            self._weights_exist = True
        if maintenance is not None:
            kind = "set" if self._maintenance_exists else "create"
            writes.append((kind, f"{self.root}/maintenance", encode_json(maintenance)))
            self._maintenance_exists = True
        if quotas is not None:
            kind = "set" if self._quotas_exist else "create"
            writes.append((kind, f"{self.root}/quotas", encode_json(quotas)))
            self._quotas_exist = True
        self._commit_all(writes, fence)
        seconds = time.perf_counter() - started
        self.writes += 1
        self.operations += len(operations)
        self.write_seconds += seconds
        self.max_write_seconds = max(self.max_write_seconds, seconds)

    def _commit_all(self, writes: list[tuple[str, str, bytes]], fence: str) -> None:
        chunk: list[tuple[str, str, bytes]] = []
        size = 0
        for item in writes:
            if chunk and (len(chunk) >= _MAX_TXN_OPS or size + len(item[2]) > _MAX_TXN_BYTES):
                self._commit(chunk, fence)
                chunk, size = [], 0
            chunk.append(item)
            size += len(item[1]) + len(item[2]) + 32
        if chunk:
            self._commit(chunk, fence)

    def _commit(self, chunk: list[tuple[str, str, bytes]], fence: str) -> None:
        try:
            txn = self.client.transaction()
            txn.check(fence, 0)
            for kind, path, data in chunk:
                if kind == "create":
                    txn.create(path, data)
                else:
                    txn.set_data(path, data)
            results = txn.commit()
        except KazooException as e:
            raise RegistryError(f"registry write failed: {type(e).__name__} {e}") from None
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise RegistryError(f"registry write rejected by ZooKeeper: {failures[0]!r}")

    def statistics(self) -> dict[str, float]:
        return {
            "registry_writes": float(self.writes),
            "registry_operations": float(self.operations),
            "registry_write_seconds_total": self.write_seconds,
            "registry_write_seconds_max": self.max_write_seconds,
            "registry_load_seconds": self.load_seconds,
        }


def _changes(op: Operation) -> list[tuple[str, str, Any]]:
    """(agent id, kind, new value or None to remove) for each bucket entry an agent
    operation changes."""
    if isinstance(op, PruneAgents):
        return (
            [(a, "unreachable", None) for a in op.unreachable]
            + [(a, "deactivated", None) for a in op.unreachable]
            + [(a, "gone", None) for a in op.gone]
        )
    assert not isinstance(op, UpdateWeights | UpdateMaintenance | UpdateQuotas)
    return [(op.agent_id, kind, value) for kind, value in _effects(op)]


def _effects(op: Operation) -> list[tuple[str, Any]]:
    """(kind, new value or None to remove) for each bucket kind an operation changes."""
    if isinstance(op, AdmitAgent):
        return [("agents", dict(op.info)), ("unreachable", None)]
    if isinstance(op, MarkUnreachable):
        return [("agents", None), ("unreachable", op.time)]
    if isinstance(op, MarkGone):
        return [("agents", None), ("unreachable", None), ("deactivated", None), ("gone", op.time)]
    if isinstance(op, RemoveAgent):
        return [("agents", None), ("deactivated", None)]
    if isinstance(op, UpdateAgentDrain):
        return [("deactivated", None if op.state is None else dict(op.state))]
    raise TypeError(f"unknown registry operation {op!r}")  # pragma: no cover
