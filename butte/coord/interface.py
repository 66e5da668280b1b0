"""Coordination behind an interface: leader election and the registry store.

Two implementations sit behind these protocols (docs/design.md "Coordination
behind an interface"): `butte.coord.zookeeper` (a real ensemble, via kazoo) and
`butte.coord.standalone` (one master, always leader, registry in a SQLite file). The master
shell talks only to these protocols; the master core only builds `Operation` values (plain
frozen data, no I/O), which the shell hands to `RegistryStore.apply` before it delivers
anything that acknowledges them.

Vocabulary::

    Contender       takes part in the election; tells its listener who leads and when this
                    master is elected, and that leadership is lost (ZooKeeper SUSPENDED or
                    LOST, or its candidacy node vanished): the master must stop at once.
    RegistryStore   what a new leader must remember (docs/protocol.md §4.3): admitted agents,
                    unreachable and gone agents, deactivated and draining agents, role
                    weights, maintenance, quotas. `load` once elected, `apply` each write
                    durably (raises RegistryError: the master then aborts).
    Operation       one registry change, emitted by the core as a `RegistryWrite` effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class CoordinationError(Exception):
    """Coordination could not start (ensemble unreachable, bad credentials, ...)."""


class RegistryError(Exception):
    """A registry read or write failed; a leader that sees this must abort."""


# -- registry operations (built by the master core) ----------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitAgent:
    """An agent is admitted (first registration, or re-admission after unreachable)."""

    agent_id: str
    info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MarkUnreachable:
    """An admitted agent failed health checks or did not re-register in time."""

    agent_id: str
    time: float


@dataclass(frozen=True, slots=True)
class MarkGone:
    """The operator marked the agent gone: it is refused for good."""

    agent_id: str
    time: float


@dataclass(frozen=True, slots=True)
class RemoveAgent:
    """The agent left on purpose (unregistered, or replaced by a new agent at its address)."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class UpdateAgentDrain:
    """The operator deactivated or drained an agent, or its drain finished: ``state`` is
    ``{"drain": None}`` for a plain deactivation, else ``{"drain": {"state", "config"}}``
    (Mesos' DrainInfo); None when the agent was reactivated. Kept while the agent is
    admitted or unreachable, forgotten with it, as Mesos' registry keeps ``deactivated``
    and ``drain_info``."""

    agent_id: str
    state: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class UpdateWeights:
    """Role weights changed; ``weights`` is the whole new map."""

    weights: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class UpdateMaintenance:
    """The maintenance schedule or machine modes changed; ``state`` is the whole new
    maintenance state (`butte.master.maintenance.Maintenance.to_registry`)."""

    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PruneAgents:
    """Registry garbage collection (``--registry_gc_interval``): these unreachable and gone
    agents are forgotten."""

    unreachable: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateQuotas:
    """Role quotas changed; ``quotas`` is the whole new map, role -> {"guarantees": {name:
    thousandths}, "limits": {...}} (`butte.master.quota.to_registry`)."""

    quotas: Mapping[str, Any]


Operation = (
    AdmitAgent
    | MarkUnreachable
    | MarkGone
    | RemoveAgent
    | UpdateAgentDrain
    | UpdateWeights
    | UpdateMaintenance
    | PruneAgents
    | UpdateQuotas
)


@dataclass(slots=True)
class RegistryState:
    """Everything the registry holds (agent infos as JSON-able dicts, times in seconds)."""

    agents: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    unreachable: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    maintenance: dict[str, Any] = field(default_factory=dict)
    quotas: dict[str, Any] = field(default_factory=dict)
    deactivated: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def copy(self) -> RegistryState:
        """A copy whose maps can change without changing this one's (their values are
        shared: operations replace them, never change them in place)."""
        return RegistryState(
            agents=dict(self.agents),
            unreachable=dict(self.unreachable),
            gone=dict(self.gone),
            weights=dict(self.weights),
            maintenance=dict(self.maintenance),
            quotas=dict(self.quotas),
            deactivated=dict(self.deactivated),
        )

    def apply(self, op: Operation) -> None:
        """Applies one operation in memory (every store keeps such a mirror)."""
        if isinstance(op, AdmitAgent):
            self.agents[op.agent_id] = op.info
            self.unreachable.pop(op.agent_id, None)
        elif isinstance(op, MarkUnreachable):
            self.agents.pop(op.agent_id, None)
            self.unreachable[op.agent_id] = op.time
        elif isinstance(op, MarkGone):
            self.agents.pop(op.agent_id, None)
            self.unreachable.pop(op.agent_id, None)
            self.deactivated.pop(op.agent_id, None)
            self.gone[op.agent_id] = op.time
        elif isinstance(op, RemoveAgent):
            self.agents.pop(op.agent_id, None)
            self.deactivated.pop(op.agent_id, None)
        elif isinstance(op, UpdateAgentDrain):
            if op.state is None:
                self.deactivated.pop(op.agent_id, None)
            else:
                self.deactivated[op.agent_id] = op.state
        elif isinstance(op, UpdateWeights):
            self.weights = dict(op.weights)
        elif isinstance(op, UpdateMaintenance):
            self.maintenance = dict(op.state)
        elif isinstance(op, PruneAgents):
            for agent_id in op.unreachable:
                self.unreachable.pop(agent_id, None)
                self.deactivated.pop(agent_id, None)
            for agent_id in op.gone:
                self.gone.pop(agent_id, None)
        elif isinstance(op, UpdateQuotas):
            self.quotas = dict(op.quotas)
        else:  # pragma: no cover - exhaustive over Operation
            raise TypeError(f"unknown registry operation {op!r}")


# -- protocols ------------------------------------------------------------------------------


class ElectionListener(Protocol):
    """What a Contender tells the master shell; always called on the shell's event loop."""

    def leader_changed(self, leader: Mapping[str, Any] | None) -> None:
        """The leading master's MasterInfo (possibly this master's own), None if none."""

    def elected(self) -> None:
        """This master now leads: recover the registry, then serve."""

    def leadership_lost(self, reason: str) -> None:
        """Leadership (or the right to contend) is gone: stop acting as leader now."""


class RegistryStore(Protocol):
    """Durable registry; see the module docstring."""

    def load(self) -> RegistryState:
        """Reads the whole registry (called once, after election). Raises RegistryError."""

    def apply(self, operations: Sequence[Operation]) -> None:
        """Makes the operations durable, in order, before returning. Raises RegistryError."""

    def statistics(self) -> dict[str, float]:
        """Write counts and timings for metrics and benchmarks."""


class Contender(Protocol):
    """One master's part in the election."""

    registry: RegistryStore

    async def start(self, master_info: Mapping[str, Any], listener: ElectionListener) -> None:
        """Connects and enters the election; raises CoordinationError if it cannot."""

    def confirm_leadership(self) -> bool:
        """Synchronously checks that this master still leads (after the event loop stalled:
        a frozen process may have lost its session meanwhile)."""

    def current_leader(self) -> Mapping[str, Any] | None:
        """Synchronously reads who leads right now (None: nobody), fresher than the last
        notification: a standby checks before it redirects a client, so that it never sends
        one to an ex-leader whose node has just gone (it may be frozen, and some clients
        wait for a frozen master forever)."""

    async def stop(self) -> None:
        """Leaves the election (the next candidate takes over) and disconnects."""
