"""The stores of the planner's records: `SqliteStore`, one SQLite file under ``--work_dir``
(the default), and `ZooKeeperStore` (``--zk``).

One table of (kind, key) -> JSON value; `write` applies a batch of changes in one
transaction (WAL journal: a write survives a crash of the process once `write` returned).
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgspec

# msgspec: several times faster than json.dumps for the thousands of records of a burst
_encode = msgspec.json.Encoder().encode


class SqliteStore:
    """See the module docstring."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: durable against a crash of this process (not of the machine).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records ("
            "kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
            "PRIMARY KEY (kind, key))"
        )

    def load(self) -> Iterator[tuple[str, str, Any]]:
        """Every record; apps before the instances and deployments that refer to them."""
        order = {"meta": 0, "app": 1, "appver": 2, "group": 3, "groupver": 4}
        rows = self._db.execute("SELECT kind, key, value FROM records").fetchall()
        rows.sort(key=lambda r: order.get(r[0], 9))
        for kind, key, value in rows:
            yield kind, key, json.loads(value)

    def write(self, changes: Iterable[tuple[str, str, Any]]) -> None:
        """Applies (kind, key, value) changes atomically; a value of None deletes."""
        changes = list(changes)
        if not changes:
            return
        deletes = [(kind, key) for kind, key, value in changes if value is None]
        upserts = [(kind, key, _encode(value)) for kind, key, value in changes if value is not None]
        cur = self._db.cursor()
        cur.execute("BEGIN")
        try:
            if deletes:
                cur.executemany("DELETE FROM records WHERE kind=? AND key=?", deletes)
            if upserts:
                cur.executemany(
                    "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)", upserts
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


class ZooKeeperStore:
    """The same records in ZooKeeper (``--zk``)::

        <path>/state/<kind>/<url-quoted key>    JSON value (apps, groups, deployments ...)
        <path>/state/<kind>/b<hex>              {key: value, ...} for the numerous kinds

    Instances and app versions (tens of thousands at scale) are spread over bucket znodes by
    a hash of their key, so a new leader reads about a thousand znodes instead of one per
    record (12,000 records: 2.3 s one by one), and a burst rewrites only the buckets it
    touched. Only the leader writes, so the store keeps a mirror of every bucket. Each write
    is one transaction per 500 znodes or 512 KB that also checks the leader's own election
    node (the fence, version 0): once that node is gone no write succeeds, whatever the
    client library believes about its session.
    """

    KINDS = ("meta", "app", "appver", "group", "groupver", "instance", "deployment")
    BUCKETS = {"instance": 1024, "appver": 256}
    _MAX_OPS = 500
    _MAX_BYTES = 512 * 1024

    def __init__(self, client: Any, path: str, fence: Callable[[], str | None]) -> None:
        self.client = client
        self.root = f"{path.rstrip('/')}/state"
        self._fence = fence
        self._exists: set[str] = set()
        self._buckets: dict[str, dict[str, Any]] = {}  # znode path -> {key: value}

    def _path(self, kind: str, key: str) -> str:
        count = self.BUCKETS.get(kind)
        if count is not None:
            return f"{self.root}/{kind}/b{zlib.crc32(key.encode()) % count:04x}"
        return f"{self.root}/{kind}/{quote(key, safe='')}"

    def load(self) -> Iterator[tuple[str, str, Any]]:
        """Every record (reads pipelined)."""
        for kind in self.KINDS:
            self.client.ensure_path(f"{self.root}/{kind}")
        out = []
        for kind in self.KINDS:
            names = self.client.get_children(f"{self.root}/{kind}")
            paths = [f"{self.root}/{kind}/{name}" for name in names]
            pending = [(path, self.client.get_async(path)) for path in paths]
            for (path, result), name in zip(pending, names, strict=True):
                data, _ = result.get()
                self._exists.add(path)
                value = json.loads(data)
                if kind in self.BUCKETS:
                    self._buckets[path] = value
                    out.extend((kind, key, v) for key, v in value.items())
                else:
                    out.append((kind, unquote(name), value))
        return iter(out)

    def write(self, changes: Iterable[tuple[str, str, Any]]) -> None:
        fence = self._fence()
        if fence is None:
            raise RuntimeError("not leading: no election node to fence the write with")
        writes: dict[str, bytes | None] = {}
        for kind, key, value in changes:
            path = self._path(kind, key)
            if kind in self.BUCKETS:
                bucket = self._buckets.setdefault(path, {})
                if value is None:
                    bucket.pop(key, None)
                else:
                    bucket[key] = value
                writes[path] = b""  # encoded below, once per bucket
            else:
                writes[path] = None if value is None else _encode(value)
        for path in writes:
            if path in self._buckets:
                writes[path] = _encode(self._buckets[path])
        items = [(p, d) for p, d in writes.items() if d is not None or p in self._exists]
        batch: list[tuple[str, bytes | None]] = []
        size = 0
        for item in items:
            n = len(item[1] or b"")
            if batch and (len(batch) >= self._MAX_OPS or size + n > self._MAX_BYTES):
                self._commit(fence, batch)
                batch, size = [], 0
            batch.append(item)
            size += n
        if batch:
            self._commit(fence, batch)

    def _commit(self, fence: str, batch: list[tuple[str, bytes | None]]) -> None:
        txn = self.client.transaction()
        txn.check(fence, 0)
        for path, data in batch:
            if data is None:
                txn.delete(path)
            elif path in self._exists:
                txn.set_data(path, data)
            else:
                txn.create(path, data)
        results = txn.commit()
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"ZooKeeper write failed (fenced or lost?): {failed[0]!r}")
        for path, data in batch:
            if data is None:
                self._exists.discard(path)
            else:
                self._exists.add(path)

    def close(self) -> None:
        pass
