"""The embedded store: the planner's records in one SQLite file under ``--work_dir``.

One table of (kind, key) -> JSON value; `write` applies a batch of changes in one
transaction (WAL journal: a write survives a crash of the process once `write` returned).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


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
        cur = self._db.cursor()
        cur.execute("BEGIN")
        try:
            for kind, key, value in changes:
                if value is None:
                    cur.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))
                else:
                    cur.execute(
                        "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                        (kind, key, json.dumps(value, separators=(",", ":"))),
                    )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
