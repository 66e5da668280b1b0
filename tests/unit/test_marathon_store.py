"""`ZooKeeperStore`'s standby copy (`follow` .. `catch_up`) against a fake kazoo client:
what a connection loss does to it (the real-ZooKeeper tests are in tests/ha)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoNodeError, SessionExpiredError
from kazoo.protocol.states import Callback, EventType, KeeperState, WatchedEvent

from butte.frameworks.marathon.store import ZooKeeperStore


class _Result:
    """An answered kazoo async result."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def rawlink(self, callback: Callable[[_Result], None]) -> None:
        callback(self)


class _Handler:
    def dispatch_callback(self, callback: Callback) -> None:
        callback.func(*callback.args)


class FakeClient:
    """Znodes in a dict; answers at once; remembers the watches set, as kazoo does."""

    def __init__(self) -> None:
        self.nodes: dict[str, bytes] = {}
        self.handler = _Handler()
        self.watches: list[Callable[[WatchedEvent], None]] = []
        self.refuse: set[str] = set()  # paths whose reads raise when sent (a closed session)

    def ensure_path(self, path: str) -> None:
        self.nodes.setdefault(path, b"")

    def sync(self, path: str) -> None:
        pass

    def get_children(self, path: str) -> list[str]:
        prefix = path + "/"
        return [
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]

    def get_children_async(self, path: str, watch: Callable[[WatchedEvent], None]) -> _Result:
        self.watches.append(watch)
        return _Result(self.get_children(path))

    def get_async(self, path: str, watch: Callable[[WatchedEvent], None] | None = None) -> _Result:
        if not isinstance(path, str):
            raise TypeError("Invalid type for 'path' (string expected)")
        if path in self.refuse:
            raise SessionExpiredError()
        if watch is not None:
            self.watches.append(watch)
        if path not in self.nodes:
            return _Result(error=NoNodeError())
        return _Result((self.nodes[path], None))

    def lose_connection(self) -> None:
        """As kazoo on a connection loss: forgets every watch, firing each without a path."""
        watches, self.watches = self.watches, []
        for watch in watches:
            try:
                watch(WatchedEvent(EventType.NONE, KeeperState.CONNECTING, None))
            except Exception:  # kazoo's handler logs what a watch raises, and goes on
                pass


def _store(client: FakeClient) -> ZooKeeperStore:
    store = ZooKeeperStore(client, "/m", lambda: None)
    for kind in store.KINDS:
        client.ensure_path(f"/m/state/{kind}")
    client.nodes["/m/state/app/%2Fweb"] = json.dumps({"id": "/web"}).encode()
    return store


def test_a_connection_loss_while_following_makes_catch_up_read_everything():
    client = FakeClient()
    store = _store(client)
    store.follow(timeout=1)
    client.lose_connection()
    # written meanwhile: no watch reports it any more
    client.nodes["/m/state/app/%2Fdb"] = json.dumps({"id": "/db"}).encode()
    records = store.catch_up(timeout=1)  # raised TimeoutError before
    assert sorted(records) == [("app", "/db", {"id": "/db"}), ("app", "/web", {"id": "/web"})]


def test_a_read_that_cannot_be_sent_leaves_no_read_pending():
    client = FakeClient()
    store = _store(client)
    client.refuse.add("/m/state/app/%2Fweb")
    store.follow(timeout=1)  # raised TimeoutError before
    client.refuse.clear()
    assert store.catch_up(timeout=1) == [("app", "/web", {"id": "/web"})]
