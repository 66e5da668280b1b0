"""Embedded coordination for a single master: always leader, registry in a SQLite file.

A master started without ``--zk`` uses this: nothing to install, and the registry still
survives a restart (``<work_dir>/registry.sqlite3``, WAL journal, ``synchronous=FULL`` so
every committed transaction is fsync'd before `SqliteRegistry.apply` returns). A lock file
beside it keeps two masters from sharing one work dir. ``--registry=in_memory`` selects
`MemoryRegistry` instead (nothing survives the process, as in Mesos).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from butte.coord.interface import (
    AdmitAgent,
    CoordinationError,
    ElectionListener,
    MarkGone,
    MarkUnreachable,
    Operation,
    PruneAgents,
    RegistryError,
    RegistryState,
    RegistryStore,
    RemoveAgent,
    UpdateAgentDrain,
    UpdateMaintenance,
    UpdateQuotas,
    UpdateWeights,
)

REGISTRY_FILE = "registry.sqlite3"
LOCK_FILE = "registry.lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (id TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unreachable (id TEXT PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gone (id TEXT PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS weights (role TEXT PRIMARY KEY, weight REAL NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (id INTEGER PRIMARY KEY CHECK (id = 0), state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quotas (role TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deactivated (id TEXT PRIMARY KEY, state TEXT NOT NULL);
"""


class _Timings:
    """Write counters shared by the stores."""

    def __init__(self) -> None:
        self.writes = 0
        self.operations = 0
        self.write_seconds = 0.0
        self.max_write_seconds = 0.0

    def record(self, operations: int, seconds: float) -> None:
        self.writes += 1
        self.operations += operations
        self.write_seconds += seconds
        self.max_write_seconds = max(self.max_write_seconds, seconds)

    def statistics(self) -> dict[str, float]:
        return {
            "registry_writes": float(self.writes),
            "registry_operations": float(self.operations),
            "registry_write_seconds_total": self.write_seconds,
            "registry_write_seconds_max": self.max_write_seconds,
        }


class MemoryRegistry:
    """A registry that lives only as long as the process (``--registry=in_memory``)."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self._timings = _Timings()

    def load(self) -> RegistryState:
        return self.state.copy()

    def apply(self, operations: Sequence[Operation]) -> None:
        for op in operations:
            self.state.apply(op)
        self._timings.record(len(operations), 0.0)

    def statistics(self) -> dict[str, float]:
        return self._timings.statistics()


class SqliteRegistry:
    """The registry in one SQLite file under the master's work dir (see module docstring)."""

    def __init__(self, work_dir: str) -> None:
        self.path = os.path.join(work_dir, REGISTRY_FILE)
        self._lock_path = os.path.join(work_dir, LOCK_FILE)
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._timings = _Timings()

    def open(self) -> None:
        """Takes the work dir's lock and opens (creating) the database. Raises
        CoordinationError if another master holds the lock or the file is unusable."""
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CoordinationError(f"cannot open {self._lock_path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CoordinationError(
                f"another master is using the registry in {os.path.dirname(self.path)}"
            ) from None
        self._lock_fd = fd
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            self.close()
            raise CoordinationError(f"cannot open the registry {self.path}: {e}") from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> RegistryState:
        db = self._require_db()
        try:
            state = RegistryState()
            for agent_id, info in db.execute("SELECT id, info FROM agents"):
                state.agents[agent_id] = json.loads(info)
            state.unreachable = dict(db.execute("SELECT id, time FROM unreachable"))
            state.gone = dict(db.execute("SELECT id, time FROM gone"))
            state.weights = dict(db.execute("SELECT role, weight FROM weights"))
            for (maintenance,) in db.execute("SELECT state FROM maintenance"):
                state.maintenance = json.loads(maintenance)
            state.quotas = {
                role: json.loads(config)
                for role, config in db.execute("SELECT role, config FROM quotas")
            }
            state.deactivated = {
                agent_id: json.loads(drain)
                for agent_id, drain in db.execute("SELECT id, state FROM deactivated")
            }
        except (sqlite3.Error, ValueError) as e:
            raise RegistryError(f"cannot read the registry {self.path}: {e}") from None
        return state

    def apply(self, operations: Sequence[Operation]) -> None:
        db = self._require_db()
        started = time.perf_counter()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for op in operations:
                    _apply_sql(db, op)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise RegistryError(f"registry write to {self.path} failed: {e}") from None
        self._timings.record(len(operations), time.perf_counter() - started)

    def statistics(self) -> dict[str, float]:
        return self._timings.statistics()

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RegistryError("the registry is not open")
        return self._db


def _apply_sql(db: sqlite3.Connection, op: Operation) -> None:
    if isinstance(op, AdmitAgent):
        db.execute(
            "INSERT OR REPLACE INTO agents (id, info) VALUES (?, ?)",
            (op.agent_id, json.dumps(op.info, separators=(",", ":"))),
        )
        db.execute("DELETE FROM unreachable WHERE id = ?", (op.agent_id,))
    elif isinstance(op, MarkUnreachable):
        db.execute("DELETE FROM agents WHERE id = ?", (op.agent_id,))
        db.execute(
            "INSERT OR REPLACE INTO unreachable (id, time) VALUES (?, ?)", (op.agent_id, op.time)
        )
    elif isinstance(op, MarkGone):
        db.execute("DELETE FROM agents WHERE id = ?", (op.agent_id,))
        db.execute("DELETE FROM unreachable WHERE id = ?", (op.agent_id,))
        db.execute("DELETE FROM deactivated WHERE id = ?", (op.agent_id,))
        db.execute("INSERT OR REPLACE INTO gone (id, time) VALUES (?, ?)", (op.agent_id, op.time))
    elif isinstance(op, RemoveAgent):
        db.execute("DELETE FROM agents WHERE id = ?", (op.agent_id,))
        db.execute("DELETE FROM deactivated WHERE id = ?", (op.agent_id,))
    elif isinstance(op, UpdateAgentDrain):
        if op.state is None:
            db.execute("DELETE FROM deactivated WHERE id = ?", (op.agent_id,))
        else:
            db.execute(
                "INSERT OR REPLACE INTO deactivated (id, state) VALUES (?, ?)",
                (op.agent_id, json.dumps(op.state, separators=(",", ":"))),
            )
    elif isinstance(op, UpdateWeights):
        db.execute("DELETE FROM weights")
        db.executemany(
            "INSERT INTO weights (role, weight) VALUES (?, ?)", sorted(op.weights.items())
        )
    elif isinstance(op, UpdateMaintenance):
        db.execute(
            "INSERT OR REPLACE INTO maintenance (id, state) VALUES (0, ?)",
            (json.dumps(op.state, separators=(",", ":")),),
        )
    elif isinstance(op, PruneAgents):
        db.executemany("DELETE FROM unreachable WHERE id = ?", [(a,) for a in op.unreachable])
        db.executemany("DELETE FROM deactivated WHERE id = ?", [(a,) for a in op.unreachable])
        db.executemany("DELETE FROM gone WHERE id = ?", [(a,) for a in op.gone])
    elif isinstance(op, UpdateQuotas):
        db.execute("DELETE FROM quotas")
        db.executemany(
            "INSERT INTO quotas (role, config) VALUES (?, ?)",
            [(role, json.dumps(c, separators=(",", ":"))) for role, c in op.quotas.items()],
        )
    else:  # pragma: no cover - exhaustive over Operation
        raise TypeError(f"unknown registry operation {op!r}")


class StandaloneContender:
    """The only master there is: elected as soon as it starts, never loses leadership."""

    def __init__(self, registry: RegistryStore) -> None:
        self.registry = registry
        self._info: dict[str, Any] | None = None

    async def start(self, master_info: Mapping[str, Any], listener: ElectionListener) -> None:
        self._info = dict(master_info)
        opener = getattr(self.registry, "open", None)
        if opener is not None:
            opener()
        loop = asyncio.get_running_loop()
        # After start() returns, like a real election result would arrive.
        loop.call_soon(listener.leader_changed, master_info)
        loop.call_soon(listener.elected)

    def confirm_leadership(self) -> bool:
        return True

    def current_leader(self) -> Mapping[str, Any] | None:
        return self._info

    async def stop(self) -> None:
        closer = getattr(self.registry, "close", None)
        if closer is not None:
            closer()
