"""Offers as the bundled frameworks' planners see them, and TaskInfos built from their choices.

The planners (`butte.frameworks.spark.plan`, `butte.dask.plan`) are pure: they get an
`OfferView` (what one offer holds, in plain numbers) and answer with the cpus, memory and
ports each new task takes from it. `task_resources` turns such a choice back into the
resources of a TaskInfo.

The other frameworks read offers with the same pieces: `plain_resources` (what a task can
take as plain amounts), `offer_role` and `attributes_of` (for placement constraints).

A framework that waits for offers says what it waits for and gives up on what can never come
with `agent_capacities` (what each registered agent could ever offer, from the master's
GET_AGENTS), `LargestOffer` (the most any offer held so far) and `FitWatch` (when to say so,
when to give up).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from butte.client.operator import OperatorClient
from butte.coord.url import is_zk_url, parse_zk_url
from butte.core.resources import ResourceError, Resources, parse_resources


@dataclass(frozen=True)
class OfferView:
    """The plain (unreserved, non-volume, non-revocable) resources of one
    offer: cpus, memory in MiB and the offered port ranges."""

    offer_id: str
    agent_id: str
    hostname: str
    role: str
    cpus: float
    mem: float
    ports: tuple[tuple[int, int], ...]

    def port_count(self) -> int:
        return sum(end - begin + 1 for begin, end in self.ports)


# What makes a resource more than a plain amount: a persistent volume or disk source, a
# revocable or shared resource, one from a resource provider. The bundled frameworks' tasks
# take none of these.
_NOT_PLAIN = ("disk", "revocable", "shared", "provider_id")


def plain_resources(offer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The offer's resources (JSON) that a task can take as plain amounts (see `_NOT_PLAIN`);
    reserved ones included: callers that take only unreserved ones filter further."""
    return [r for r in offer.get("resources", []) if not any(k in r for k in _NOT_PLAIN)]


def offer_role(offer: Mapping[str, Any], default: str = "*") -> str:
    """The role the master allocated the offer to (``allocation_info.role``)."""
    role: str = offer.get("allocation_info", {}).get("role", default)
    return role


def attributes_of(offer: Mapping[str, Any]) -> dict[str, str]:
    """An offer's attributes as strings (text, scalar, ranges or set values)."""
    out: dict[str, str] = {}
    for a in offer.get("attributes") or ():
        kind = a.get("type")
        if kind == "TEXT":
            out[a["name"]] = str(a.get("text", {}).get("value", ""))
        elif kind == "SCALAR":
            v = a.get("scalar", {}).get("value", 0)
            out[a["name"]] = str(int(v)) if float(v).is_integer() else str(v)
        elif kind == "RANGES":
            ranges = a.get("ranges", {}).get("range", [])
            out[a["name"]] = ",".join(f"[{r['begin']}-{r['end']}]" for r in ranges)
        elif kind == "SET":
            out[a["name"]] = ",".join(a.get("set", {}).get("item", []))
    return out


def offer_view(offer: Mapping[str, Any], default_role: str = "*") -> OfferView:
    """The `OfferView` of an offer as the master sent it. Raises ResourceError for resources
    that cannot be parsed."""
    # Only unreserved resources: the TaskInfos built by task_resources carry no reservation.
    resources = Resources.from_json(plain_resources(offer)).unreserved()
    return OfferView(
        offer_id=offer["id"]["value"],
        agent_id=offer["agent_id"]["value"],
        hostname=offer.get("hostname") or "",
        role=offer_role(offer, default_role),
        cpus=resources.scalar("cpus"),
        mem=resources.scalar("mem"),
        ports=tuple(resources.ranges("ports")),
    )


def take_ports(ranges: Sequence[tuple[int, int]], count: int) -> tuple[list[int], list]:
    """The ``count`` lowest ports of ``ranges`` and the ranges left; ValueError when the
    ranges hold fewer ports."""
    taken: list[int] = []
    left: list[tuple[int, int]] = []
    for begin, end in ranges:
        while len(taken) < count and begin <= end:
            taken.append(begin)
            begin += 1
        if begin <= end:
            left.append((begin, end))
    if len(taken) < count:
        raise ValueError(f"offer has {len(taken)} port(s), {count} needed")
    return taken, left


def task_resources(cpus: float, mem: float, ports: Sequence[int], role: str) -> list[dict]:
    """The ``resources`` of a TaskInfo taking ``cpus``, ``mem`` MiB and ``ports`` from an
    offer allocated to ``role``."""
    text = f"cpus:{cpus:g};mem:{mem:g}"
    if ports:
        text += ";ports:[" + ",".join(f"{p}-{p}" for p in ports) + "]"
    try:
        return parse_resources(text).to_json("pre", allocation_role=role)
    except ResourceError as e:  # a planner bug, not bad input: say so loudly
        raise ValueError(f"cannot express {text!r} as resources: {e}") from None


def local_address_for(master: str) -> str:
    """The local address that agents can reach this process at: the one this host uses to
    reach the master (``HOST:PORT``, ``h1:p1,h2:p2`` or ``zk://...``)."""
    if is_zk_url(master):
        host = parse_zk_url(master).hosts[0][0]
    else:
        first = master.split(",")[0].strip().split("//")[-1].split("/")[0]
        host = first.rsplit(":", 1)[0] if ":" in first else first
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # a UDP connect sends nothing; it only picks a route
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


# -- what the cluster could ever offer -----------------------------------------------------
#
# Offers alone cannot tell a framework whether what it asks for will ever come: an agent busy
# with other tasks offers little now and more later. The master's GET_AGENTS lists every
# registered agent with its total resources, which bound what any offer of that agent can
# hold: a request that no agent's total holds cannot be met until a bigger agent registers.


@dataclass(frozen=True)
class AgentCapacity:
    """The most a framework of one role can ever be offered of one agent: its total plain
    resources (see `plain_resources`), unreserved ones and, where the framework takes them,
    those reserved for its role."""

    agent_id: str
    hostname: str
    resources: Resources

    def view(self) -> OfferView:
        """What an offer of the whole idle agent would hold, as the planners read offers."""
        return OfferView(
            offer_id="",
            agent_id=self.agent_id,
            hostname=self.hostname,
            role="*",
            cpus=self.resources.scalar("cpus"),
            mem=self.resources.scalar("mem"),
            ports=tuple(self.resources.ranges("ports")),
        )


def agent_capacities(
    get_agents: Mapping[str, Any], role: str, *, reserved: bool
) -> list[AgentCapacity]:
    """The capacities of the agents in an operator GET_AGENTS answer: registered ones
    (deactivated and draining ones too: they may be reactivated) and those the registry
    expects back after a master failover. ``reserved``: count what is reserved for ``role``
    (or a role above it), as offers to the role hold it; else unreserved resources only."""
    out: list[AgentCapacity] = []
    listed = [
        (a.get("agent_info") or {}, a.get("total_resources")) for a in get_agents.get("agents", [])
    ]
    listed += [(info, None) for info in get_agents.get("recovered_agents", [])]
    for info, total in listed:
        raw = total if isinstance(total, list) else info.get("resources") or []
        try:
            resources = Resources.from_json(plain_resources({"resources": raw}))
        except ResourceError:
            continue  # an agent whose resources this client cannot read: no verdict on it
        usable = resources.allocatable_to(role) if reserved else resources.unreserved()
        agent_id = str((info.get("id") or {}).get("value", ""))
        out.append(AgentCapacity(agent_id, str(info.get("hostname") or agent_id), usable))
    return out


def read_agent_capacities(
    master: str, leader: str, role: str, *, reserved: bool, timeout: float = 5.0
) -> list[AgentCapacity]:
    """`agent_capacities` of the leading master ``leader`` (``HOST:PORT``, as the scheduler
    client follows it; ``master`` is the address the user gave, for its scheme). Blocking:
    call it in a thread. Raises `butte.client.operator.MasterUnreachable` or `OperatorError`
    (e.g. a master that authenticates its read-only endpoints)."""
    scheme = "https://" if master.strip().lower().startswith("https://") else ""
    answer = OperatorClient(scheme + leader, timeout=timeout).call("GET_AGENTS")
    return agent_capacities(answer, role, reserved=reserved)


def describe_view(view: OfferView) -> str:
    """``4 cpus, 2048 MiB mem, 101 ports``: what an offer (or an agent) holds, for people."""
    return f"{view.cpus:g} cpus, {view.mem:g} MiB mem, {view.port_count()} ports"


@dataclass
class LargestOffer:
    """The most cpus, memory and ports any one offer held so far (each on its own: they may
    come from different offers), for a framework's "waiting for ..." notes."""

    offers: int = 0
    cpus: float = 0.0
    mem: float = 0.0
    ports: int = 0

    def saw(self, view: OfferView) -> None:
        self.offers += 1
        self.cpus = max(self.cpus, view.cpus)
        self.mem = max(self.mem, view.mem)
        self.ports = max(self.ports, view.port_count())

    def describe(self) -> str:
        if not self.offers:
            return "no offer received yet"
        return (
            f"largest offer so far {self.cpus:g} cpus, {self.mem:g} MiB mem, {self.ports} ports "
            f"({self.offers} offer(s) seen)"
        )


# How often a waiting framework says what it waits for, and re-reads the agents' capacities.
WAITING_NOTE_SECONDS = 10.0
CAPACITY_CHECK_SECONDS = 3.0


@dataclass
class FitWatch:
    """When a framework waiting for offers that fit says so, and when it gives up.

    It notes every `WAITING_NOTE_SECONDS` (the first note after that long: a request that
    fits soon says nothing), and reads the agents' capacities every
    `CAPACITY_CHECK_SECONDS`. A request that no registered agent could ever hold is given up
    only when two reads in a row say so, so that an agent registering at the same moment (a
    cluster that is just starting) is waited for; with no agent registered at all, or when
    the capacities cannot be read, it keeps waiting. Pure: the caller passes the time."""

    started: float
    note_every: float = WAITING_NOTE_SECONDS
    check_every: float = CAPACITY_CHECK_SECONDS
    largest: LargestOffer = field(default_factory=LargestOffer)
    last_note: float | None = None
    last_check: float | None = None
    never: str | None = None  # the previous read's verdict: why it can never fit
    agents: int | None = None  # registered agents at the last read (None: not read yet)
    unreadable: str | None = None  # why the capacities could not be read, once said

    def note_due(self, now: float) -> bool:
        """Whether a "waiting for ..." note is due now (it is then counted as said)."""
        if now - (self.last_note if self.last_note is not None else self.started) < (
            self.note_every
        ):
            return False
        self.last_note = now
        return True

    def check_due(self, now: float) -> bool:
        """Whether the capacities should be read now (the read is then counted as made)."""
        if self.last_check is not None and now - self.last_check < self.check_every:
            return False
        self.last_check = now
        return True

    def judged(self, never: str | None, agents: int) -> str | None:
        """Takes one read's verdict (why the request can never fit, or None: the ``agents``
        registered agents could hold it, or there are none yet); returns the reason to give
        up with once two reads in a row said so."""
        give_up = never if never is not None and self.never is not None else None
        self.never = never
        self.agents = agents
        return give_up

    def capacity_note(self) -> str:
        """What the last read of the capacities says of the wait, for the waiting note."""
        if self.agents is None:
            return ""
        if self.agents == 0:
            return "; no agent is registered yet"
        if self.never is None:
            return "; the registered agents could hold it once their other tasks free enough"
        return ""
