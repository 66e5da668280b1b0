"""Leader election and the registry on a real ZooKeeper ensemble (kazoo).

Election, exactly in Mesos' layout (docs/protocol.md §4.2) so Mesos clients detect the leader::

    <path>/json.info_0000000007   EPHEMERAL|SEQUENCE, data = MasterInfo JSON (one per master)
    <path>/json.info_0000000008   the lowest sequence leads; nothing else lives under <path>

The registry lives away from the election path (pymesos takes ``min()`` of every child
name there), under ``/butte/registry/``: see `butte.coord.zk_registry`.

kazoo is thread based: its watch callbacks and connection-state listeners run on kazoo's
threads and hand everything to the asyncio loop with ``call_soon_threadsafe``. A leader
that sees SUSPENDED or LOST is told `leadership_lost` at once (docs/design.md
"Coordination behind an interface": in SUSPENDED a leader must stop acting as leader). A
standby that loses its candidacy (its session expired, or its node is gone) contends again
with a new node once connected, as Mesos' master does ("Lost candidacy as a follower").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch
from kazoo.security import CREATOR_ALL_ACL, READ_ACL_UNSAFE

from butte.coord.interface import (
    CoordinationError,
    ElectionListener,
    RegistryStore,
)
from butte.coord.url import ZkUrl
from butte.coord.zk_registry import ZooKeeperRegistry
from butte.core.codec import encode_json

log = logging.getLogger(__name__)

MEMBER_PREFIX = "json.info_"
MEMBER = re.compile(r"^json\.info_\d{10}$")


def make_client(url: ZkUrl, session_timeout: float) -> KazooClient:
    """A kazoo client for the URL's ensemble (digest auth and creator-only ACLs when the URL
    carries credentials, as Mesos does)."""
    kwargs: dict[str, Any] = {}
    if url.credentials is not None:
        user, password = url.credentials
        kwargs["auth_data"] = [("digest", f"{user}:{password}")]
        kwargs["default_acl"] = CREATOR_ALL_ACL + READ_ACL_UNSAFE
    return KazooClient(hosts=url.hosts_string, timeout=session_timeout, **kwargs)


def start_client(client: KazooClient, url: ZkUrl, connect_timeout: float) -> None:
    """Connects (blocking); raises CoordinationError naming the ensemble on failure. kazoo's
    own per-attempt warnings are muted meanwhile: the caller prints one clear line."""
    kazoo_log = logging.getLogger("kazoo")
    level = kazoo_log.level
    kazoo_log.setLevel(logging.CRITICAL)
    try:
        client.start(timeout=connect_timeout)
    except Exception as e:  # kazoo raises its handler's timeout type, or socket errors
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
        raise CoordinationError(
            f"cannot connect to ZooKeeper at {url.hosts_string} within {connect_timeout:g}s"
            f" ({type(e).__name__}{': ' + str(e) if str(e) else ''})"
        ) from None
    finally:
        kazoo_log.setLevel(level)
    if kazoo_log.level == logging.NOTSET:
        kazoo_log.setLevel(logging.WARNING)


def leader_child(children: Sequence[str]) -> str | None:
    """The leading member among an election path's children: lowest sequence."""
    members = [c for c in children if MEMBER.match(c)]
    return min(members) if members else None


class ZooKeeperContender:
    """One master's candidacy under the URL's path; see the module docstring."""

    def __init__(self, url: ZkUrl, session_timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.client = make_client(url, session_timeout)
        self.registry: RegistryStore = ZooKeeperRegistry(self.client, url.path, self._own_path)
        self.own_path: str | None = None
        self._listener: ElectionListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._elected = False
        self._lost = False
        self._stopping = False
        self._leader_name: str | None = None
        self._master_info: dict[str, Any] = {}
        self._rejoining = False  # a standby's new candidacy node is being created

    def _own_path(self) -> str | None:
        return self.own_path

    async def start(self, master_info: Mapping[str, Any], listener: ElectionListener) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        await self._loop.run_in_executor(None, self._enter, dict(master_info))

    def _enter(self, master_info: dict[str, Any]) -> None:
        self._master_info = master_info
        start_client(self.client, self.url, self.connect_timeout)
        try:
            self.own_path = self._create_member()
        except KazooException as e:
            with contextlib.suppress(Exception):
                self.client.stop()
                self.client.close()
            raise CoordinationError(
                f"cannot join the election under {self.url.path} at {self.url.hosts_string}: "
                f"{type(e).__name__} {e}"
            ) from None
        log.info("Contending for leadership as %s", self.own_path)
        self.client.add_listener(self._state_changed)
        ChildrenWatch(self.client, self.url.path, self._children_changed)

    def _create_member(self) -> str:
        self.client.ensure_path(self.url.path)
        path: str = self.client.create(
            f"{self.url.path}/{MEMBER_PREFIX}",
            encode_json(self._master_info),
            ephemeral=True,
            sequence=True,
        )
        return path

    def confirm_leadership(self) -> bool:
        with self._lock:
            if not self._elected or self._lost:
                return False
        if self.client.state != KazooState.CONNECTED or self.own_path is None:
            return False
        try:
            stat = self.client.exists(self.own_path)
        except KazooException:
            return False
        return stat is not None and stat.owner_session_id == self.client.client_id[0]

    def current_leader(self) -> dict[str, Any] | None:
        try:
            self.client.sync(self.url.path)  # our server catches up with the ensemble
            member = leader_child(self.client.get_children(self.url.path))
        except KazooException:
            return None
        return self._read_member(member)

    async def stop(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._leave)

    def _leave(self) -> None:
        with contextlib.suppress(Exception):
            if self.own_path is not None and self.client.connected:
                self.client.delete(self.own_path)
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()

    # -- kazoo threads ------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._lost or self._stopping:
                return
            self._lost = True
        assert self._listener is not None
        self._post(self._listener.leadership_lost, reason)

    def _state_changed(self, state: str) -> None:
        with self._lock:
            leading = self._elected
        if state == KazooState.LOST:
            if leading:
                self._lose("ZooKeeper session expired (LOST)")
            else:
                log.warning("ZooKeeper session expired (LOST) while standing by: contending again")
                self._rejoin()
        elif state == KazooState.SUSPENDED and leading:
            self._lose("ZooKeeper connection SUSPENDED while leading")

    def _rejoin(self) -> None:
        """A standby's candidacy is gone: a new node, from a thread of its own (kazoo's
        callbacks must not block), once the client is connected again."""
        with self._lock:
            if self._rejoining or self._stopping or self._elected:
                return
            self._rejoining = True
        threading.Thread(target=self._create_again, name="zk-rejoin", daemon=True).start()

    def _create_again(self) -> None:
        try:
            while not self._stopping:
                try:
                    path = self._create_member()
                except KazooException as e:
                    log.debug("Contending again failed (%s); retrying", e)
                    time.sleep(0.5)
                    continue
                with self._lock:
                    self.own_path = path
                log.info("Contending for leadership again as %s", path)
                # The watch may have seen the new children before own_path was set.
                children = self.client.get_children(self.url.path)
                self._children_changed(children)
                return
        except KazooException as e:
            log.warning("Cannot read the election after contending again: %s", e)
        finally:
            with self._lock:
                self._rejoining = False

    def _children_changed(self, children: list[str]) -> bool | None:
        if self._stopping:
            return False
        own = self.own_path.rsplit("/", 1)[1] if self.own_path else None
        if own not in children:
            with self._lock:
                leading, rejoining = self._elected, self._rejoining
            if leading:
                self._lose(f"candidacy node {self.own_path} disappeared")
                return False
            if not rejoining:
                log.warning("Candidacy node %s disappeared: contending again", self.own_path)
                self._rejoin()
            return None
        leader = leader_child(children)
        if leader == self._leader_name:
            return None
        self._leader_name = leader
        assert self._listener is not None
        if leader == own:
            with self._lock:
                self._elected = True
            log.info("Elected leader (%s)", self.own_path)
            self._post(self._listener.leader_changed, self._read_member(own))
            self._post(self._listener.elected)
            return None
        self._post(self._listener.leader_changed, self._read_member(leader))
        return None

    def _read_member(self, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        try:
            data, _ = self.client.get(f"{self.url.path}/{name}")
            info = json.loads(data)
        except (KazooException, ValueError) as e:
            log.warning("Cannot read leader node %s: %s", name, e)
            return None
        return info if isinstance(info, dict) else None
