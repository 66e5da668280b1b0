"""Leader detection from a ``zk://`` URL, for agents, ``butte run`` and the scheduler client.

Like Mesos' detector (and pymesos'): watch the children of the election path, take the
lowest ``json.info_<seq>`` member, read its MasterInfo JSON and use ``address.ip:address.port``
(``pid`` as a fallback). kazoo runs the watch on its own threads; every change is handed to
the asyncio loop with ``call_soon_threadsafe``, where `LeaderDetector.leader` is updated and
the ``on_change`` callback (if any) runs::

    detector = LeaderDetector(parse_zk_url("zk://127.0.0.1:2181/mesos"))
    await detector.start()                       # CoordinationError if unreachable
    address = await detector.wait_leader(30.0)   # "10.0.0.1:5050"
    ...
    await detector.stop()

While the ZooKeeper connection is SUSPENDED the last known leader is kept (it may still
lead); an empty election path means no leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch

from butte.coord.url import ZkUrl
from butte.coord.zookeeper import leader_child, make_client, start_client

log = logging.getLogger(__name__)

DEFAULT_SESSION_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 20.0


def leader_address(info: Mapping[str, Any]) -> str | None:
    """``host:port`` of a MasterInfo: ``address.ip``/``address.port``, else its ``pid``."""
    address = info.get("address")
    if isinstance(address, Mapping):
        host = address.get("ip") or address.get("hostname")
        port = address.get("port")
        if isinstance(host, str) and host and isinstance(port, int):
            return f"{host}:{port}"
    pid = info.get("pid")
    if isinstance(pid, str) and "@" in pid:
        return pid.split("@", 1)[1] or None
    return None


class LeaderDetector:
    """Follows the leading master of one election path; see the module docstring."""

    def __init__(
        self,
        url: ZkUrl,
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.client = make_client(url, session_timeout)
        self.on_change = on_change
        self.leader: str | None = None
        self.leader_info: dict[str, Any] | None = None
        self.changes = 0
        self._member: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stopped = False

    async def start(self) -> None:
        """Connects and starts watching; raises CoordinationError if the ensemble cannot be
        reached within the connect timeout."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        await self._loop.run_in_executor(None, self._watch)

    def _watch(self) -> None:
        start_client(self.client, self.url, self.connect_timeout)
        # The path may not exist before the first master starts; creating the (persistent,
        # empty) node is what that master would do anyway, and lets the watch start now.
        with contextlib.suppress(KazooException):
            self.client.ensure_path(self.url.path)
        ChildrenWatch(self.client, self.url.path, self._children_changed)

    async def wait_leader(self, timeout: float | None = None) -> str:
        """The leader's ``host:port``, waiting up to ``timeout`` seconds for one to appear.
        Raises TimeoutError."""
        assert self._changed is not None, "start() first"
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.leader is None:
            self._changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no leading master under {self.url} after {timeout:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.leader

    async def wait_change(self, timeout: float | None = None) -> str | None:
        """Waits for the next leader change (or ``timeout``); returns the current leader."""
        assert self._changed is not None, "start() first"
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.leader

    async def stop(self) -> None:
        self._stopped = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close)

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()

    # -- kazoo threads ------------------------------------------------------------------------

    def _children_changed(self, children: list[str]) -> bool | None:
        if self._stopped:
            return False
        member = leader_child(children)
        if member == self._member:
            return None
        self._member = member
        info = self._read(member) if member is not None else None
        self._post(info)
        return None

    def _read(self, member: str) -> dict[str, Any] | None:
        try:
            data, _ = self.client.get(f"{self.url.path}/{member}")
            info = json.loads(data)
        except (KazooException, ValueError) as e:
            # Gone between listing and reading: the next children event brings its successor.
            log.debug("cannot read %s: %s", member, e)
            return None
        return info if isinstance(info, dict) else None

    def _post(self, info: dict[str, Any] | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set_leader, info)

    def _set_leader(self, info: dict[str, Any] | None) -> None:
        address = leader_address(info) if info is not None else None
        if address == self.leader:
            return
        log.info("Leading master: %s", address or "none")
        self.leader = address
        self.leader_info = info
        self.changes += 1
        if self._changed is not None:
            self._changed.set()
        if self.on_change is not None:
            self.on_change(address)
