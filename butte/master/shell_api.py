"""What the operator-facing endpoint modules (`operator`, `legacy`, `files`) need from the
master shell: a narrow interface, so that they take the shell without importing
`butte.master.server`, which creates them (no import cycle). `MasterServer` has all of it."""

from __future__ import annotations

from typing import Protocol

from butte.coord.leadership import Leadership
from butte.core.clock import Clock
from butte.core.conn_limit import ConnectionLimit
from butte.master.acls import Acls
from butte.master.effects import Effect
from butte.master.http import PrefixRouter
from butte.master.machine import MasterMachine
from butte.master.registrar import RegistrarMetrics
from butte.master.snapshot import StateSnapshots


class HasFlags(Protocol):
    """The shell's configuration, as far as the endpoints show it."""

    @property
    def flags(self) -> dict[str, str]: ...

    @property
    def max_operator_event_stream_subscribers(self) -> int: ...


class MasterShell(Protocol):
    """The master shell as its endpoints see it."""

    @property
    def machine(self) -> MasterMachine: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> HasFlags: ...

    @property
    def router(self) -> PrefixRouter: ...

    @property
    def leadership(self) -> Leadership: ...

    @property
    def state_snapshots(self) -> StateSnapshots: ...

    @property
    def elected_time(self) -> float | None: ...

    @property
    def registrar(self) -> RegistrarMetrics:
        """The ``registrar/*`` metrics (`butte.master.registrar`)."""

    @property
    def acls(self) -> Acls:
        """``--acls``: who may do what (`butte.master.acls`)."""

    @property
    def slow_streams_closed(self) -> int:
        """Scheduler streams dropped because their reader fell too far behind."""

    @property
    def connection_limit(self) -> ConnectionLimit:
        """--max_connections: how many connections it refused (butte.core.conn_limit)."""

    def apply(self, effects: list[Effect]) -> None:
        """Carries out effects the core returned (see `MasterServer.apply`)."""
