"""The master shell's side of the election: its role, who leads, and what a request gets.

`Leadership` is the `ElectionListener` a master hands its `Contender`. It keeps the role::

    STANDBY --elected--> RECOVERING --registry loaded--> LEADING
       |                     |                              |
       +---------------------+---- leadership_lost ---------+--> ABDICATED (final: exit)

and answers, for any request that needs the leader (docs/protocol.md §1.1): None (serve it) while
LEADING; 503 "Master has not finished recovery" while RECOVERING; 307 to
``//<leader host>:<port><same path>`` when another master leads; 503 "No leader elected"
otherwise. ABDICATED is final: a master that lost its ZooKeeper session must never act as
leader again, so the shell stops and the process exits non-zero.

A frozen process (SIGSTOP, a long GC or a stalled loop) cannot notice that its session
expired meanwhile before it handles what queued up on its sockets. So `acting` also checks
how long ago the event loop last ran `beat`: after a gap longer than ``stall_limit`` it asks
the contender to confirm leadership synchronously (one ZooKeeper round trip) and abdicates
if it cannot.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from butte.coord.interface import Contender
from butte.core.domains import region

log = logging.getLogger(__name__)


class _Unset:
    """Marker: no fresher leader view given."""


_UNSET = _Unset()


class Role(enum.Enum):
    """Where a master stands in the election."""

    STANDBY = "standby"
    RECOVERING = "recovering"
    LEADING = "leading"
    ABDICATED = "abdicated"


class Leadership:
    """See the module docstring. ``on_elected`` starts registry recovery (which calls
    `recovered` when done); ``on_lost`` stops the master."""

    def __init__(
        self,
        contender: Contender,
        own_info: Mapping[str, Any],
        *,
        on_elected: Callable[[], None],
        on_lost: Callable[[str], None],
        on_leader: Callable[[Mapping[str, Any] | None], None] | None = None,
        stall_limit: float | None = None,
    ) -> None:
        self.contender = contender
        self.own_info = own_info
        self.role = Role.STANDBY
        self.leader_info: Mapping[str, Any] | None = None
        self.lost_reason: str | None = None
        self.stall_limit = stall_limit
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._on_leader = on_leader
        self._last_beat = time.monotonic()
        self.stalls_confirmed = 0

    # -- ElectionListener ---------------------------------------------------------------------

    def leader_changed(self, leader: Mapping[str, Any] | None) -> None:
        if self.role is Role.ABDICATED:
            return
        self.leader_info = leader
        if self._on_leader is not None:
            self._on_leader(leader)
        if leader is not None and leader.get("id") != self.own_info.get("id"):
            theirs, ours = region(leader.get("domain")), region(self.own_info.get("domain"))
            if theirs is not None and ours is not None and theirs != ours:
                # As Mesos: every master of a cluster is in one region (agents are remote or
                # local by the leader's), so one configured for another region cannot serve.
                self.leadership_lost(
                    f"the leading master is in region {theirs!r}, this master is configured "
                    f"for region {ours!r}"
                )
                return
            if self.role is not Role.STANDBY:
                # Someone else leads while we think we do: only possible if our session is
                # gone; never go on as a second leader.
                self.leadership_lost(f"another master leads: {leader.get('pid')}")

    def elected(self) -> None:
        if self.role is not Role.STANDBY:
            return
        self.role = Role.RECOVERING
        self.leader_info = self.own_info
        log.info("Elected leader; recovering the registry")
        self._on_elected()

    def leadership_lost(self, reason: str) -> None:
        if self.role is Role.ABDICATED:
            return
        self.role = Role.ABDICATED
        self.lost_reason = reason
        self.leader_info = None
        log.error("%s: this master stops acting as leader and exits", reason)
        self._on_lost(reason)

    # -- shell side ---------------------------------------------------------------------------

    def recovered(self) -> None:
        """The registry is loaded into the core: serve as leader from now on."""
        if self.role is Role.RECOVERING:
            self.role = Role.LEADING
            self._last_beat = time.monotonic()

    @property
    def leading(self) -> bool:
        """Leading (ignoring a possible stall; see `acting`)."""
        return self.role is Role.LEADING

    def beat(self) -> None:
        """Called often (every 100 ms) by the shell's loop; notices stalls."""
        self.acting()
        self._last_beat = time.monotonic()

    def acting(self) -> bool:
        """Whether this master may act as leader right now (see the module docstring)."""
        if self.role is not Role.LEADING:
            return False
        if self.stall_limit is None:
            return True
        now = time.monotonic()
        gap = now - self._last_beat
        if gap <= self.stall_limit:
            return True
        if self.contender.confirm_leadership():
            self.stalls_confirmed += 1
            log.warning("Event loop stalled for %.2fs; leadership confirmed", gap)
            self._last_beat = time.monotonic()
            return True
        self.leadership_lost(f"event loop stalled for {gap:.2f}s and leadership is not confirmed")
        return False

    def refusal(
        self, path_qs: str, leader: Mapping[str, Any] | None | _Unset = _UNSET
    ) -> tuple[int, str, dict[str, str]] | None:
        """None if a leader-only request may be served here, else (status, text, headers).
        ``leader``: a fresher view of who leads than the last notification (see
        `Contender.current_leader`)."""
        if self.acting():
            return None
        if self.role is Role.RECOVERING:
            return 503, "Master has not finished recovery", {}
        if not isinstance(leader, _Unset) and leader is not None:
            if leader.get("id") == self.own_info.get("id"):
                return 503, "Master has not finished recovery", {}  # elected a moment ago
        base = self.redirect_base(leader)
        if base is not None:
            return 307, "", {"Location": base + path_qs}
        return 503, "No leader elected", {}

    def redirect_base(self, leader: Mapping[str, Any] | None | _Unset = _UNSET) -> str | None:
        """``//host:port`` of another master that leads (per ``leader`` if given, else
        per the last notification), or None."""
        if isinstance(leader, _Unset):
            leader = self.leader_info
        if self.role is not Role.STANDBY or leader is None:
            return None
        if leader.get("id") == self.own_info.get("id"):
            return None
        address = leader.get("address")
        host = port = None
        if isinstance(address, Mapping):
            host = address.get("hostname") or address.get("ip")
            port = address.get("port")
        host = host or leader.get("hostname")
        port = port or leader.get("port")
        if not host or not port or _same_address(leader, self.own_info):
            # A leader at our own address is a dead earlier run of this master whose node
            # has not expired yet: redirecting there would loop back here.
            return None
        return f"//{host}:{port}"


def _same_address(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two MasterInfos name the same ip:port."""
    first, second = a.get("address"), b.get("address")
    if not isinstance(first, Mapping) or not isinstance(second, Mapping):
        return a.get("pid") == b.get("pid")
    return (first.get("ip"), first.get("port")) == (second.get("ip"), second.get("port"))
