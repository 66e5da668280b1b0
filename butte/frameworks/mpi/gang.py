"""The gang-scheduling decision of an MPI job, as a pure state machine (docs/mpi.md).

An MPI job needs all of its ranks at once: a half-started job only holds resources while it
waits for peers that may never come. The planner therefore

* **holds** the offers it gets (it neither launches nor declines them) until together they
  have a slot for every rank, and then launches one node task per agent in one go;
* gives up holding after ``hold_seconds``: it declines every held offer with a refusal filter
  of a randomised, growing **backoff** and asks again after it, so that two gang jobs that
  together exceed the cluster cannot hold each other's halves forever: their releases
  interleave and one of them gets everything it needs on a later round;
* never half-launches: if any node task ends before all of them run (an offer went stale,
  an agent was lost), the others are killed and the whole gang is tried again;
* once running, a rank that fails (reported by its wrapper) or a node task that fails fails
  the job: every other task is killed and the launcher process is stopped.

A node task may also need ports from its offers (`GangSpec.node_ports` for itself and
`GangSpec.rank_ports` for each of its ranks: the MPI daemon and the ranks listen on them, see
`butte.frameworks.mpi.ports.PORTS`): they are one contiguous run of its agent's offered ports
(the MPI launchers take a port range as a first port and a count), so an agent holds only as
many ranks as its longest run of offered ports has room for. The shell has the run start at
random among the offered ports, as Marathon picks ports: a port a job just used may still be
held by its closed connections (TIME_WAIT), which Open MPI's TCP transport cannot bind over.

The planner does no I/O and reads no clock; the shell (`butte.frameworks.mpi.job`) feeds it
events with the time and carries out the effects it returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from butte.core import task_states
from butte.core.resources import Resources

# Offers not needed while a gang is running (or ending) are refused this long.
IDLE_REFUSE_SECONDS = 60.0
# After the launcher exits successfully, node tasks get this long to end on their own.
DRAIN_SECONDS = 15.0


class Phase(Enum):
    """Where the job is."""

    GATHERING = "gathering"  # holding offers until they fit every rank
    BACKOFF = "backoff"  # released everything; waiting before asking again
    LAUNCHING = "launching"  # node tasks launched, waiting until all run
    ABORTING = "aborting"  # a launch failed: killing the rest before retrying
    RUNNING = "running"  # every node task runs; the MPI launcher runs
    ENDING = "ending"  # the job's outcome is known; waiting for tasks to end
    DONE = "done"


@dataclass(frozen=True)
class GangSpec:
    """What the job needs and how patiently it waits."""

    ranks: int
    rank_resources: Resources
    per_agent: int | None = None  # most ranks on one agent (None: as many as fit)
    hold_seconds: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    max_launch_attempts: int = 3
    node_ports: int = 0  # ports each node task takes for itself (its MPI daemon)
    rank_ports: int = 0  # ports each node task takes per rank it hosts

    def __post_init__(self) -> None:
        if self.ranks < 1:
            raise ValueError("ranks must be at least 1")
        if self.per_agent is not None and self.per_agent < 1:
            raise ValueError("per_agent must be at least 1")
        if self.rank_resources.is_empty():
            raise ValueError("rank resources must not be empty")
        if self.node_ports < 0 or self.rank_ports < 0:
            raise ValueError("port counts must not be negative")

    def ports_needed(self, ranks: int) -> int:
        """The ports a node task hosting ``ranks`` ranks takes (one contiguous run)."""
        if not self.node_ports and not self.rank_ports:
            return 0
        return self.node_ports + self.rank_ports * ranks

    def ports_text(self) -> str:
        """The ports a node task needs, for people ("" when none)."""
        if not self.node_ports and not self.rank_ports:
            return ""
        return (
            f" (and {self.node_ports} + {self.rank_ports} per rank port(s) per agent, "
            "in one run of offered ports)"
        )

    def describe(self) -> str:
        """A rank's resources, and the ports its node task needs, for people."""
        return self.rank_resources.to_text() + self.ports_text()


@dataclass(frozen=True)
class Offer:
    """What the planner needs of an offer."""

    offer_id: str
    agent_id: str
    hostname: str
    resources: Resources


@dataclass(frozen=True)
class Node:
    """One agent's part of the gang: a node task hosting ``ranks`` ranks."""

    index: int
    agent_id: str
    hostname: str
    ranks: int
    offer_ids: tuple[str, ...]
    ports: tuple[int, ...] = ()  # the node task's ports (GangSpec.ports_needed), in order

    @property
    def name(self) -> str:
        """The node's name in the MPI host list (the launcher maps it back to the task)."""
        return f"node{self.index}"


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """Launch the node tasks, each on its offers (one ACCEPT per node)."""

    nodes: tuple[Node, ...]
    attempt: int


@dataclass(frozen=True)
class Decline:
    offer_ids: tuple[str, ...]
    refuse_seconds: float


@dataclass(frozen=True)
class Kill:
    node_indexes: tuple[int, ...]


@dataclass(frozen=True)
class Revive:
    """Clear this job's offer filters: it wants offers again."""


@dataclass(frozen=True)
class Suppress:
    """No more offers wanted."""


@dataclass(frozen=True)
class StartLauncher:
    """Every node task runs: start the MPI launcher (mpirun) over these nodes."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class StopLauncher:
    reason: str


@dataclass(frozen=True)
class Progress:
    message: str


@dataclass(frozen=True)
class Done:
    exit_status: int
    message: str


Effect = (
    Launch | Decline | Kill | Revive | Suppress | StartLauncher | StopLauncher | Progress | Done
)


def agent_slots(
    resources: Resources, rank: Resources, cap: int | None, node_ports: int = 0, rank_ports: int = 0
) -> int:
    """How many ranks of ``rank`` fit in ``resources`` (at most ``cap``), their node task
    taking ``node_ports`` + ``rank_ports`` per rank ports in one run of ``resources``'
    ports."""
    slots = math.inf
    for name, need in rank.quantities().items():
        if need <= 0:
            continue
        slots = min(slots, resources.quantities().get(name, 0) // need)
    if node_ports or rank_ports:
        longest = max((end - begin + 1 for begin, end in resources.ranges("ports")), default=0)
        if longest < node_ports + rank_ports:
            return 0
        if rank_ports:
            slots = min(slots, (longest - node_ports) // rank_ports)
    if slots is math.inf:
        slots = cap or 1
    return int(min(slots, cap)) if cap is not None else int(slots)


def _slots(resources: Resources, spec: GangSpec) -> int:
    return agent_slots(
        resources, spec.rank_resources, spec.per_agent, spec.node_ports, spec.rank_ports
    )


def node_ports(resources: Resources, count: int, pick: float | None = None) -> tuple[int, ...]:
    """A run of ``count`` consecutive ports in ``resources`` (() for none wanted): the
    lowest, or with ``pick`` in [0, 1) the one at that fraction of every possible run's
    start; ValueError when no run is that long (`agent_slots` said it would be)."""
    if count <= 0:
        return ()
    starts = [
        (begin, end - begin + 2 - count)
        for begin, end in resources.ranges("ports")
        if end - begin + 1 >= count
    ]
    if not starts:
        raise ValueError(f"no run of {count} ports in {resources.ranges('ports')}")
    index = 0 if pick is None else int(pick * sum(n for _, n in starts))
    for begin, n in starts:
        if index < n:
            return tuple(range(begin + index, begin + index + count))
        index -= n
    begin, n = starts[-1]  # pick was 1.0 or more: the highest run
    return tuple(range(begin + n - 1, begin + n - 1 + count))


def _by_agent(offers: list[Offer]) -> dict[str, list[Offer]]:
    by_agent: dict[str, list[Offer]] = {}
    for offer in offers:
        by_agent.setdefault(offer.agent_id, []).append(offer)
    return by_agent


def place(
    offers: list[Offer], spec: GangSpec, pick: Callable[[], float] | None = None
) -> tuple[Node, ...] | None:
    """Nodes for every rank from ``offers`` (fewest agents first: agents with the most slots
    take ranks first), or None if they do not hold them all. Each node's run of ports is
    the lowest, or where ``pick`` (a random number source) is given, one at random
    (`node_ports`)."""
    candidates = []
    for agent_id, agent_offers in _by_agent(offers).items():
        total = Resources()
        for offer in agent_offers:
            total = total + offer.resources
        slots = _slots(total, spec)
        if slots > 0:
            candidates.append((slots, agent_id, agent_offers, total))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    if sum(c[0] for c in candidates) < spec.ranks:
        return None
    nodes: list[Node] = []
    left = spec.ranks
    for slots, agent_id, agent_offers, total in candidates:
        if left == 0:
            break
        take = min(slots, left)
        left -= take
        ids = tuple(sorted(o.offer_id for o in agent_offers))
        ports = node_ports(total, spec.ports_needed(take), pick() if pick else None)
        nodes.append(Node(len(nodes), agent_id, agent_offers[0].hostname, take, ids, ports))
    return tuple(nodes)


def free_slots(offers: list[Offer], spec: GangSpec) -> tuple[int, int]:
    """(rank slots, agents with a slot) of ``offers``."""
    by_agent: dict[str, Resources] = {}
    for offer in offers:
        by_agent[offer.agent_id] = by_agent.get(offer.agent_id, Resources()) + offer.resources
    counts = [_slots(r, spec) for r in by_agent.values()]
    return sum(counts), sum(1 for c in counts if c > 0)


def shortfall(spec: GangSpec, agents: list[Offer]) -> str | None:
    """Why the gang can never run on these agents, given as offers of whole idle agents
    (their total resources: `butte.frameworks.offers.agent_capacities`): a rank bigger than
    every agent, or more ranks than all of them hold together. None when they could hold
    it, and while no agent is registered (one may still come)."""
    if not agents:
        return None
    by_agent: dict[str, tuple[str, Resources]] = {}
    for agent in agents:
        _, total = by_agent.get(agent.agent_id, (agent.hostname, Resources()))
        by_agent[agent.agent_id] = (agent.hostname, total + agent.resources)
    slots = {agent_id: (host, _slots(total, spec)) for agent_id, (host, total) in by_agent.items()}
    held = sum(n for _, n in slots.values())
    if held >= spec.ranks:
        return None
    rank, ports = spec.rank_resources.to_text(), spec.ports_text()
    count = f"{len(by_agent)} registered agent(s)"
    if held == 0:
        host, biggest = max(
            by_agent.values(),
            key=lambda a: (a[1].scalar("cpus"), a[1].scalar("mem"), a[1].to_text()),
        )
        return (
            f"a rank needs {rank}{ports}, more than any of the {count} has "
            f"(the largest: {biggest.to_text()} on {host})"
        )
    cap = f" (at most {spec.per_agent} per agent: --per-agent)" if spec.per_agent else ""
    each = ", ".join(f"{host}: {n}" for host, n in sorted(slots.values()))
    return (
        f"{spec.ranks} ranks of {rank} need {spec.ranks} slots{ports}, but the {count} hold only "
        f"{held} together{cap}: {each}"
    )


@dataclass
class GangPlanner:
    """The gang decision for one job; see the module docstring."""

    spec: GangSpec
    phase: Phase = Phase.GATHERING
    held: dict[str, Offer] = field(default_factory=dict)
    hold_since: float | None = None
    backoff: float = 0.0
    backoff_until: float = 0.0
    attempt: int = 0
    nodes: tuple[Node, ...] = ()
    states: dict[int, str] = field(default_factory=dict)
    launcher_started: bool = False
    abort_status: int | None = None
    launcher_status: int | None = None
    failure: str | None = None
    drain_until: float | None = None
    # Where a node's run of ports starts (None: the lowest; the shell passes random.random).
    port_pick: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        self.backoff = self.spec.backoff_initial

    # -- offers ---------------------------------------------------------------------------

    def on_offers(self, offers: list[Offer], now: float) -> list[Effect]:
        """New offers: held while gathering, declined otherwise."""
        if self.phase is not Phase.GATHERING:
            refuse = (
                max(self.backoff_until - now, 0.1)
                if self.phase is Phase.BACKOFF
                else IDLE_REFUSE_SECONDS
            )
            return [Decline(tuple(o.offer_id for o in offers), refuse)] if offers else []
        useless: list[str] = []
        for offer in offers:
            self.held[offer.offer_id] = offer
        for agent_offers in _by_agent(list(self.held.values())).values():
            total = sum((o.resources for o in agent_offers), Resources())
            if _slots(total, self.spec) == 0:
                useless.extend(o.offer_id for o in agent_offers)
        for offer_id in useless:
            del self.held[offer_id]
        effects: list[Effect] = (
            [Decline(tuple(sorted(useless)), self.spec.hold_seconds)] if useless else []
        )
        if self.held and self.hold_since is None:
            self.hold_since = now
        nodes = place(list(self.held.values()), self.spec, self.port_pick)
        if nodes is None:
            slots, agents = free_slots(list(self.held.values()), self.spec)
            left = self.spec.hold_seconds - (now - (self.hold_since or now))
            return effects + [
                Progress(
                    f"holding {min(slots, self.spec.ranks)}/{self.spec.ranks} rank slots on "
                    f"{agents} agent(s); waiting up to {max(left, 0):.1f}s more"
                )
            ]
        return effects + self._launch(nodes)

    def _launch(self, nodes: tuple[Node, ...]) -> list[Effect]:
        used = {offer_id for node in nodes for offer_id in node.offer_ids}
        unused = tuple(sorted(o for o in self.held if o not in used))
        self.held.clear()
        self.hold_since = None
        self.attempt += 1
        self.nodes = nodes
        self.states = {node.index: task_states.STAGING for node in nodes}
        self.phase = Phase.LAUNCHING
        effects: list[Effect] = [
            Progress(
                f"launching {self.spec.ranks} rank(s) on {len(nodes)} agent(s) "
                f"(attempt {self.attempt})"
            ),
            Launch(nodes, self.attempt),
        ]
        if unused:
            effects.append(Decline(unused, IDLE_REFUSE_SECONDS))
        effects.append(Suppress())
        return effects

    def on_rescind(self, offer_id: str) -> list[Effect]:
        """An offer was taken back by the master."""
        self.held.pop(offer_id, None)
        if not self.held and self.phase is Phase.GATHERING:
            self.hold_since = None
        return []

    # -- time -----------------------------------------------------------------------------

    def on_tick(self, now: float, jitter: float) -> list[Effect]:
        """Time passed; ``jitter`` is a random number in [0, 1) for the next backoff."""
        if self.phase is Phase.GATHERING and self.hold_since is not None:
            if now - self.hold_since >= self.spec.hold_seconds:
                return self._release(now, jitter)
        if self.phase is Phase.BACKOFF and now >= self.backoff_until:
            self.phase = Phase.GATHERING
            return [Progress("asking for offers again"), Revive()]
        if self.phase is Phase.ENDING and self.drain_until is not None and now >= self.drain_until:
            self.drain_until = None
            live = self._live()
            if live:
                return [
                    Progress(f"killing {len(live)} node task(s) still running"),
                    Kill(live),
                ]
        return []

    def _release(self, now: float, jitter: float) -> list[Effect]:
        """Gives back every held offer and waits a randomised backoff."""
        slots, agents = free_slots(list(self.held.values()), self.spec)
        ids = tuple(sorted(self.held))
        wait = self.backoff * (0.5 + jitter)
        self.backoff = min(self.backoff * 2, self.spec.backoff_max)
        self.held.clear()
        self.hold_since = None
        self.phase = Phase.BACKOFF
        self.backoff_until = now + wait
        return [
            Progress(
                f"only {min(slots, self.spec.ranks)}/{self.spec.ranks} rank slots on "
                f"{agents} agent(s) after {self.spec.hold_seconds:.1f}s: releasing them all, "
                f"retrying in {wait:.1f}s"
            ),
            Decline(ids, wait),
        ]

    # -- tasks and the launcher -------------------------------------------------------------

    def _live(self) -> tuple[int, ...]:
        return tuple(i for i, s in sorted(self.states.items()) if not task_states.is_terminal(s))

    def on_update(self, index: int, state: str, message: str, now: float) -> list[Effect]:
        """A node task's new state."""
        if index not in self.states or task_states.is_terminal(self.states[index]):
            return []
        self.states[index] = state
        handler = _UPDATE_HANDLERS.get(self.phase)
        effects = handler(self, index, state, message, now) if handler else []
        return effects + self._maybe_done()

    def _update_launching(self, index: int, state: str, message: str, now: float) -> list[Effect]:
        if task_states.is_terminal(state):
            self.phase = Phase.ABORTING
            node = self.nodes[index]
            effects: list[Effect] = [
                Progress(
                    f"{node.name} on {node.hostname} ended {state} before the gang ran"
                    f" ({message or 'no message'}): killing the others"
                )
            ]
            live = self._live()
            if live:
                effects.append(Kill(live))
            return effects + self._after_abort(now)
        if all(s == task_states.RUNNING for s in self.states.values()):
            self.phase = Phase.RUNNING
            self.launcher_started = True
            return [
                Progress("all node tasks run: starting the MPI launcher"),
                StartLauncher(self.nodes),
            ]
        return []

    def _update_aborting(self, index: int, state: str, message: str, now: float) -> list[Effect]:
        return self._after_abort(now)

    def _after_abort(self, now: float) -> list[Effect]:
        """Once a failed launch's tasks are all gone: retry (or give up)."""
        if self._live():
            return []
        if self.attempt >= self.spec.max_launch_attempts:
            self.phase = Phase.ENDING
            self.failure = f"the gang failed to start {self.attempt} time(s)"
            return []
        self.phase = Phase.BACKOFF
        self.backoff_until = now + self.backoff
        return [Progress(f"retrying the whole gang in {self.backoff:.1f}s")]

    def _update_running(self, index: int, state: str, message: str, now: float) -> list[Effect]:
        if not task_states.is_terminal(state) or state == task_states.FINISHED:
            return []
        node = self.nodes[index]
        return self._fail_running(
            f"{node.name} on {node.hostname} ended {state}: {message or 'no message'}"
        )

    def on_rank_failed(self, node_name: str, rank: int, status: int) -> list[Effect]:
        """A rank's wrapper reported that it exited with ``status`` (non-zero): the job
        fails with that status; the other ranks are killed and the launcher is stopped."""
        if self.phase is not Phase.RUNNING:
            return []
        self.abort_status = status
        return self._fail_running(f"rank {rank} on {node_name} exited with status {status}")

    def _fail_running(self, failure: str) -> list[Effect]:
        """The running job fails for ``failure``: kill the node tasks left, stop the
        launcher if it still runs."""
        self.failure = failure
        self.phase = Phase.ENDING
        effects: list[Effect] = [Progress(f"{failure}; failing the job")]
        live = self._live()
        if live:
            effects.append(Kill(live))
        if self.launcher_status is None:
            effects.append(StopLauncher(failure))
        return effects

    def on_launcher_exit(self, status: int, now: float) -> list[Effect]:
        """The MPI launcher exited with ``status``."""
        self.launcher_status = status
        effects: list[Effect] = []
        if self.phase is Phase.RUNNING:
            self.phase = Phase.ENDING
            live = self._live()
            if status != 0:
                self.failure = f"mpirun exited with status {status}"
                if live:
                    effects.append(Kill(live))
            else:
                self.drain_until = now + DRAIN_SECONDS
        return effects + self._maybe_done()

    def abort(self, reason: str, exit_status: int = 1) -> list[Effect]:
        """The user gave up (Ctrl-C, a time limit): kill what runs and end with
        ``exit_status``."""
        if self.phase is Phase.DONE:
            return []
        self.failure = reason
        self.abort_status = exit_status
        effects: list[Effect] = [Progress(reason)]
        if self.held:
            effects.append(Decline(tuple(sorted(self.held)), IDLE_REFUSE_SECONDS))
            self.held.clear()
        live = self._live()
        if live:
            effects.append(Kill(live))
        if self.phase is Phase.RUNNING and self.launcher_status is None:
            effects.append(StopLauncher(reason))
        self.phase = Phase.ENDING
        self.drain_until = None
        return effects + self._maybe_done()

    def _maybe_done(self) -> list[Effect]:
        """Done once the outcome is known, no node task is left and a started launcher has
        exited."""
        if self.phase is not Phase.ENDING or self._live():
            return []
        if self.launcher_started and self.launcher_status is None:
            return []
        self.phase = Phase.DONE
        if self.failure is None and self.launcher_status == 0:
            bad = [self.nodes[i].name for i, s in self.states.items() if s != task_states.FINISHED]
            if not bad:
                return [Done(0, "all ranks finished")]
            self.failure = f"node task(s) {', '.join(bad)} did not finish cleanly"
        status = self.abort_status or self.launcher_status or 1
        return [Done(status, self.failure or "failed")]


_UPDATE_HANDLERS = {
    Phase.LAUNCHING: GangPlanner._update_launching,
    Phase.ABORTING: GangPlanner._update_aborting,
    Phase.RUNNING: GangPlanner._update_running,
}
