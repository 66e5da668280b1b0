"""The allocator seam (after Mesos ``include/mesos/allocator/allocator.hpp``).

The master core tells the allocator facts and asks it for allocations; the allocator never
sees offers, sockets or tasks. Everything is synchronous and pure: time arrives as ``now``.

Accounting: resources returned by `allocate` count as allocated to (framework, role) on the
agent from then on, whether they are merely offered or used by tasks. The master gives them
back with `recover_resources` when an offer is declined, rescinded or partly unused, and when
a task or executor ends. DRF shares are computed over allocated resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from butte.core.resources import Resources, parse_resources
from butte.master.allocator.quota import Quota

DEFAULT_MIN_ALLOCATABLE = "cpus:0.01|mem:32"


def parse_min_allocatable(text: str) -> tuple[dict[str, int], ...]:
    """Parses ``--min_allocatable_resources`` (``cpus:0.01|mem:32``): alternatives separated
    by ``|``, each a set of scalar quantities that must all be met (thousandths)."""
    out = []
    for alternative in filter(None, (a.strip() for a in text.split("|"))):
        out.append(parse_resources(alternative).quantities())
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Resources on one agent given to one framework under one role (becomes one offer)."""

    framework_id: str
    agent_id: str
    role: str
    resources: Resources


@dataclass(slots=True)
class AllocatorOptions:
    """Tunables, with Mesos' defaults."""

    allocation_interval: float = 1.0
    # Alternatives of minimum quantities (thousandths); an allocation must meet one of them.
    min_allocatable: tuple[dict[str, int], ...] = field(
        default_factory=lambda: parse_min_allocatable(DEFAULT_MIN_ALLOCATABLE)
    )
    filter_gpu_resources: bool = True
    fair_sharing_excluded_resource_names: frozenset[str] = frozenset()


class Allocator(Protocol):
    """What the master core needs from an allocator."""

    # frameworks -------------------------------------------------------------------------

    def add_framework(
        self,
        framework_id: str,
        roles: Iterable[str],
        *,
        capabilities: Iterable[str] = (),
        suppressed_roles: Iterable[str] = (),
        active: bool = True,
    ) -> None:
        """A framework subscribed (or was learnt from a re-registering agent: inactive)."""

    def update_framework(
        self,
        framework_id: str,
        roles: Iterable[str],
        *,
        capabilities: Iterable[str] = (),
        suppressed_roles: Iterable[str] = (),
    ) -> None:
        """Roles, capabilities or suppression changed (re-subscribe, UPDATE_FRAMEWORK)."""

    def remove_framework(self, framework_id: str) -> None:
        """Framework gone: its allocations are dropped (the master recovers tasks first)."""

    def activate_framework(self, framework_id: str) -> None: ...

    def deactivate_framework(self, framework_id: str) -> None:
        """No offers while disconnected; its filters are cleared as in Mesos."""

    # agents ----------------------------------------------------------------------------

    def add_agent(
        self,
        agent_id: str,
        total: Resources,
        *,
        used: Mapping[tuple[str, str], Resources] | None = None,
        remote: bool = False,
    ) -> None:
        """An agent (re)registered. ``used`` maps (framework_id, role) to resources its
        running tasks and executors already hold (re-registration). ``remote``: it is in
        another region than the master's; only REGION_AWARE frameworks are offered it."""

    def remove_agent(self, agent_id: str) -> None: ...

    def activate_agent(self, agent_id: str) -> None: ...

    def deactivate_agent(self, agent_id: str) -> None:
        """No new offers from this agent (disconnected, draining)."""

    def update_agent_total(self, agent_id: str, total: Resources) -> None: ...

    def convert_allocation(
        self,
        framework_id: str,
        agent_id: str,
        role: str,
        consumed: Resources,
        converted: Resources,
    ) -> None:
        """An offer operation converted held resources (same quantities)."""

    def available(self, agent_id: str) -> Resources:
        """What an agent has neither offered nor used."""

    # resources -------------------------------------------------------------------------

    def recover_resources(
        self,
        framework_id: str,
        agent_id: str,
        role: str,
        resources: Resources,
        *,
        refuse_seconds: float | None,
        now: float,
    ) -> None:
        """Allocated resources come back. ``refuse_seconds`` (DECLINE, unused part of an
        ACCEPT) installs a filter on (framework, role, agent) for those resources for
        ``max(refuse_seconds, allocation_interval)``; None or 0 installs none; over 365 days
        is capped."""

    def suppress(self, framework_id: str, roles: Iterable[str] | None = None) -> None:
        """Stop offering to these roles of the framework (None = all of its roles)."""

    def revive(self, framework_id: str, roles: Iterable[str] | None = None) -> None:
        """Un-suppress these roles and clear their filters (None = all of its roles)."""

    def update_weights(self, weights: Mapping[str, float]) -> None: ...

    def update_quota(self, role: str, quota: Quota | None) -> None:
        """Sets a role's guarantees and limits (None or an empty Quota removes them)."""

    @property
    def quotas(self) -> dict[str, Quota]:
        """The quotas set so far, by role."""
        ...

    def consumed_quota(self, role: str) -> dict[str, int]:
        """Unreserved resources allocated to the role's subtree plus those reserved to it
        (thousandths by name)."""
        ...

    # allocation ------------------------------------------------------------------------

    def allocate(self, now: float) -> list[Allocation]:
        """Runs one allocation cycle over every active agent with free resources and every
        active framework that wants offers, hierarchical DRF order. Returns what was
        allocated; the allocator has already counted it as allocated."""
        ...

    # views -----------------------------------------------------------------------------

    @property
    def weights(self) -> dict[str, float]:
        """The role weights set with `update_weights` (a copy; roles not in it weigh 1.0)."""
        ...

    def allocated(self, framework_id: str) -> dict[tuple[str, str], Resources]:
        """What a framework holds, offered or used: (agent_id, role) -> resources."""
        ...

    def role_shares(self) -> dict[str, float]:
        """Weighted dominant share of every role the allocator tracks (for /metrics)."""
        ...

    def record_allocation_seconds(self, seconds: float) -> None:
        """The shell reports how long the last `allocate` took (the allocator reads no
        clock), for `statistics`."""

    def statistics(self) -> dict[str, float]:
        """Counters for /metrics (allocation runs, last cycle seconds, ...)."""
        ...

    def check_invariants(self) -> None:
        """Raises AssertionError if the allocator's books contradict each other (tests)."""
