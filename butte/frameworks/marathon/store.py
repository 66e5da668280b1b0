"""The stores of the planner's records: `SqliteStore`, one SQLite file under ``--work_dir``
(the default), and `ZooKeeperStore` (``--zk``).

One table of (kind, key) -> JSON value; `write` applies a batch of changes in one
transaction (WAL journal: a write survives a crash of the process once `write` returned).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgspec
from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.protocol.states import Callback, WatchedEvent

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
    """The same records in ZooKeeper (``--zk``), one znode per record::

        <path>/state/<kind>/<url-quoted key>    JSON value

    Only the leader writes. Each write is one transaction per 500 znodes or 512 KB that also
    checks the leader's own election node (the fence, version 0): once that node is gone no
    write succeeds, whatever the client library believes about its session. (Hash buckets
    of records, as the master's registry uses, made a new leader read 2.5x faster but
    multiplied the bytes written per burst until a 256 MB ZooKeeper ran out of heap.)

    A standby `follow`s the records: it reads them all once and keeps its copy current
    through watches (a child watch per kind, a data watch per record, each re-armed by the
    read it triggers), so that on election `catch_up` only waits for the reads still in
    flight instead of reading every record (14,000 znodes took seconds). ZooKeeper delivers
    a session's notifications in order, so the notifications of the old leader's last
    writes arrive before the one that elects this instance. A connection loss, however
    short, makes kazoo forget every watch: following has failed then, and `catch_up` reads
    every record instead.
    """

    KINDS: tuple[str, ...] = ("meta", "app", "appver", "group", "groupver", "instance")
    KINDS += ("reservation",)  # resident apps' instances: planner.py
    KINDS += ("deployment", "pod", "podver", "podinstance", "poddeployment")  # pods: pods.py
    _MAX_OPS = 500
    _MAX_BYTES = 512 * 1024

    def __init__(self, client: Any, path: str, fence: Callable[[], str | None]) -> None:
        self.client = client
        self.root = f"{path.rstrip('/')}/state"
        self._fence = fence
        self._exists: set[str] = set()
        # The standby's copy (`follow`): path -> value (decoded as it arrives, so that
        # `catch_up` has nothing left to decode), and each kind's child names.
        self._cond = threading.Condition(threading.RLock())
        self._following = False
        self._records: dict[str, Any] = {}
        self._names: dict[str, set[str]] = {}
        self._pending = 0
        self._sent = 0  # sequence numbers of requests sent / answers applied
        self._applied = 0
        self._answers: dict[int, tuple[str, str, Any]] = {}
        self._failed: BaseException | None = None

    def _path(self, kind: str, key: str) -> str:
        return f"{self.root}/{kind}/{quote(key, safe='')}"

    def load(self) -> Iterator[tuple[str, str, Any]]:
        """Every record (reads pipelined: one request per record, not one round trip)."""
        for kind in self.KINDS:
            self.client.ensure_path(f"{self.root}/{kind}")
        out = []
        for kind in self.KINDS:
            names = self.client.get_children(f"{self.root}/{kind}")
            pending = [(n, self.client.get_async(f"{self.root}/{kind}/{n}")) for n in names]
            for name, result in pending:
                data, _ = result.get()
                self._exists.add(f"{self.root}/{kind}/{name}")
                out.append((kind, unquote(name), json.loads(data)))
        return iter(out)

    # -- a standby's copy ------------------------------------------------------------------

    def follow(self, timeout: float = 300.0) -> None:
        """Reads every record and keeps them current through watches until `catch_up`
        (blocking until the first reading is complete; a failure shows in `catch_up`)."""
        for kind in self.KINDS:
            self.client.ensure_path(f"{self.root}/{kind}")
        with self._cond:
            self._following = True
        for kind in self.KINDS:
            self._list(f"{self.root}/{kind}")
        self._settle(timeout)

    def catch_up(self, timeout: float = 60.0) -> list[tuple[str, str, Any]]:
        """Ends `follow`: waits until every notification received so far has been read,
        then returns the records as `load` would (falls back to `load` if following
        failed)."""
        self.client.sync(self.root)  # our server has seen every committed write
        queued = threading.Event()
        # Watch callbacks run one at a time in order: once this marker ran, every earlier
        # notification has issued its read.
        self.client.handler.dispatch_callback(Callback("watch", queued.set, ()))
        if not queued.wait(timeout):
            raise TimeoutError("ZooKeeper watch callbacks did not drain")
        self._settle(timeout)
        with self._cond:
            self._following = False
            failed, records = self._failed, dict(self._records)
            self._records.clear()
            self._names.clear()
        if failed is not None:
            return list(self.load())
        order = {kind: i for i, kind in enumerate(self.KINDS)}
        out = []
        for path, value in records.items():
            kind, name = path[len(self.root) + 1 :].split("/", 1)
            out.append((order[kind], kind, unquote(name), value))
        out.sort(key=lambda r: r[0])
        self._exists.update(records)
        return [(kind, key, value) for _, kind, key, value in out]

    def _settle(self, timeout: float) -> None:
        # Once following failed the copy is dropped anyway; and a request kazoo had queued
        # but not sent when the session expired is never answered.
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._pending == 0 or self._failed is not None, timeout
            ):
                raise TimeoutError("ZooKeeper reads did not complete")

    # Watch events only issue reads; every change to the copy is made from the replies, one
    # at a time in the order the requests were sent (= the order ZooKeeper answered them on
    # this session), whatever order kazoo's threads hand them over in. So the copy always
    # holds what the latest answer about each node said.

    def _issue(self, kind: str, path: str) -> None:
        with self._cond:
            if not self._following or self._failed is not None:
                return  # after a failure `catch_up` reads everything anew: nothing to keep
            # sent under the lock: sequence numbers follow the order on the wire
            try:
                if kind == "list":
                    result = self.client.get_children_async(path, watch=self._children_event)
                else:
                    result = self.client.get_async(path, watch=self._data_event)
            except Exception as e:  # e.g. a closed session: nothing was sent, nothing to await
                self._lost(e)
                return
            seq = self._sent
            self._sent += 1
            self._pending += 1
        result.rawlink(lambda r: self._answered(seq, kind, path, r))

    def _lost(self, cause: BaseException) -> None:
        """Following failed (a read could not be sent, a watch was lost): the copy may miss
        changes from now on, so `catch_up` falls back to reading every record."""
        with self._cond:
            if self._failed is None:
                self._failed = cause
            self._cond.notify_all()

    def _answered(self, seq: int, kind: str, path: str, result: Any) -> None:
        with self._cond:
            self._answers[seq] = (kind, path, result)
            while self._applied in self._answers:
                kind, path, result = self._answers.pop(self._applied)
                self._applied += 1
                if self._following and self._failed is None:
                    try:
                        self._apply(kind, path, result)
                    except Exception as e:  # a lost connection: `catch_up` falls back to `load`
                        self._failed = e
                self._pending -= 1
            self._cond.notify_all()

    def _apply(self, kind: str, path: str, result: Any) -> None:
        if kind == "list":
            try:
                names = set(result.get())
            except NoNodeError:
                names = set()
            known = self._names.setdefault(path, set())
            for name in known - names:
                self._records.pop(f"{path}/{name}", None)
            new = names - known
            known.intersection_update(names)
            known.update(new)
            for name in new:
                self._issue("read", f"{path}/{name}")
            return
        directory, name = path.rsplit("/", 1)
        try:
            data, _ = result.get()
        except NoNodeError:
            self._records.pop(path, None)
            self._names.get(directory, set()).discard(name)  # a later listing reads it anew
            return
        self._records[path] = json.loads(data)
        self._names.setdefault(directory, set()).add(name)

    def _list(self, directory: str) -> None:
        self._issue("list", directory)

    def _children_event(self, event: WatchedEvent) -> None:
        if event.path is None:
            self._watch_lost(event)
            return
        self._list(event.path)

    def _data_event(self, event: WatchedEvent) -> None:
        if event.path is None:
            self._watch_lost(event)
            return
        # changed or deleted: the answer to a fresh read says which (and re-arms the watch)
        self._issue("read", event.path)

    def _watch_lost(self, event: WatchedEvent) -> None:
        # On a connection loss (even a short one) or an expired session kazoo forgets every
        # watch and fires each with a pathless event; the server's notifications for them
        # are then dropped, so the copy would silently go stale: read everything on election.
        self._lost(ConnectionLoss(f"watches lost: ZooKeeper connection {event.state}"))

    # -- the leader's writes ---------------------------------------------------------------

    def write(self, changes: Iterable[tuple[str, str, Any]]) -> None:
        fence = self._fence()
        if fence is None:
            raise RuntimeError("not leading: no election node to fence the write with")
        items = []
        for kind, key, value in changes:
            path = self._path(kind, key)
            if value is not None or path in self._exists:
                items.append((path, None if value is None else _encode(value)))
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
