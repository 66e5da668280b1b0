"""Where ``butte chronos`` keeps its state: jobs, unfinished runs and the framework id.

`SqliteStore` is the embedded default (``<work_dir>/chronos.sqlite3``); `ZooKeeperStore`
(with ``--zk``) keeps the same records as znodes so any instance that wins the election can
take over. Both write one batch of `SaveJob`/`SaveRun` effects (plus meta values) in one
transaction, synchronously: the shell sends nothing to the master before the batch that
precedes it is durable, so a launch is always on record before it leaves.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import msgspec

from butte.frameworks.chronos.core import SaveJob, SaveRun

# msgspec: the records of a slot's 1,000 runs and jobs encode several times faster than with
# json.dumps (they hold only JSON types; json.loads reads them back)
_encode = msgspec.json.Encoder().encode


class StoreError(Exception):
    """The store could not be read or written; the scheduler must not go on."""


class Store(Protocol):
    def load(self) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
        """(meta, job records, run records)."""
        ...

    def apply(self, saves: Sequence[SaveJob | SaveRun], meta: dict[str, str]) -> None: ...

    def close(self) -> None: ...


class SqliteStore:
    """State in one SQLite file (WAL: a committed batch survives a SIGKILL)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for table, key in (("meta", "key"), ("jobs", "name"), ("runs", "task_id")):
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ({key} TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    def load(self) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        jobs = [json.loads(v) for (v,) in self._db.execute("SELECT value FROM jobs")]
        runs = [json.loads(v) for (v,) in self._db.execute("SELECT value FROM runs")]
        return meta, jobs, runs

    def apply(self, saves: Sequence[SaveJob | SaveRun], meta: dict[str, str]) -> None:
        if not saves and not meta:
            return
        # Only the last save of a key in a batch matters.
        last: dict[tuple[str, str], dict[str, Any] | None] = {}
        for s in saves:
            if isinstance(s, SaveJob):
                last[("jobs", s.name)] = s.record
            else:
                last[("runs", s.task_id)] = s.record
        rows: dict[str, list[tuple[str, str]]] = {"jobs": [], "runs": []}
        gone: dict[str, list[tuple[str]]] = {"jobs": [], "runs": []}
        for (table, key), record in last.items():
            if record is None:
                gone[table].append((key,))
            else:
                rows[table].append((key, _encode(record).decode()))
        try:
            self._db.execute("BEGIN")
            for table, column in (("jobs", "name"), ("runs", "task_id")):
                if gone[table]:
                    self._db.executemany(f"DELETE FROM {table} WHERE {column} = ?", gone[table])
                if rows[table]:
                    upsert = f"INSERT OR REPLACE INTO {table} VALUES (?, ?)"
                    self._db.executemany(upsert, rows[table])
            for key, value in meta.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()


class ZooKeeperStore:
    """State as znodes under ``<path>/state/{meta,jobs,runs}/<quoted key>`` (JSON data),
    each batch one ZooKeeper transaction. Uses a connected kazoo client it does not own."""

    def __init__(self, client: Any, path: str) -> None:
        self._zk = client
        self.root = path.rstrip("/") + "/state"
        # The znodes that exist: only the leader writes here, and it read them all in
        # load(), so a batch needs no round trip to ask which to create and which to set.
        self._known: set[str] = set()
        for sub in ("meta", "jobs", "runs"):
            self._zk.ensure_path(f"{self.root}/{sub}")

    def _read(self, sub: str) -> dict[str, bytes]:
        out = {}
        for child in self._zk.get_children(f"{self.root}/{sub}"):
            data, _ = self._zk.get(f"{self.root}/{sub}/{child}")
            out[unquote(child)] = data
            self._known.add(f"{self.root}/{sub}/{child}")
        return out

    def load(self) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
        meta = {k: v.decode() for k, v in self._read("meta").items()}
        jobs = [json.loads(v) for v in self._read("jobs").values()]
        runs = [json.loads(v) for v in self._read("runs").values()]
        return meta, jobs, runs

    def apply(self, saves: Sequence[SaveJob | SaveRun], meta: dict[str, str]) -> None:
        if not saves and not meta:
            return
        last: dict[str, bytes | None] = {}
        for s in saves:
            sub, key, record = (
                ("jobs", s.name, s.record)
                if isinstance(s, SaveJob)
                else ("runs", s.task_id, s.record)
            )
            node = f"{self.root}/{sub}/{quote(key, safe='')}"
            last[node] = None if record is None else _encode(record)
        for key, value in meta.items():
            last[f"{self.root}/meta/{quote(key, safe='')}"] = value.encode()
        try:
            tx = self._zk.transaction()
            for node, data in last.items():
                exists = node in self._known
                if data is None:
                    if exists:
                        tx.delete(node)
                elif exists:
                    tx.set_data(node, data)
                else:
                    tx.create(node, data)
            results = tx.commit()
        except Exception as e:  # kazoo raises many types; all mean "not written"
            raise StoreError(f"ZooKeeper write failed: {e}") from e
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise StoreError(f"ZooKeeper transaction failed: {failed[0]!r}")
        for node, data in last.items():
            if data is None:
                self._known.discard(node)
            else:
                self._known.add(node)

    def close(self) -> None:
        pass
