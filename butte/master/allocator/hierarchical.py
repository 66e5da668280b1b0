"""The hierarchical DRF allocator (after Mesos ``HierarchicalAllocatorProcess``, stage 2 of
``__generateOffers``; no quota).

Vocabulary: an *agent* offers ``total`` resources, of which ``available`` are neither offered
nor used; an *allocation* is what one (framework, role) holds on one agent, from the moment
`allocate` hands it out until the master gives it back with `recover_resources`. A role is
*wanting* while at least one active framework is subscribed to it and has not suppressed it.

One cycle (`allocate`)::

    expire refusal filters (now)
    for agent in shuffled(active agents with something available):
        for role in role sorter order (wanting roles only):
            candidate = available resources allocatable to the role
            skip if below min_allocatable
            for framework in the role's framework sorter order (wanting frameworks only):
                skip if GPU-gated or a refusal filter covers the candidate
                grant the candidate; stop looking in this role
        update the role sorter with this agent's grants

Everything is kept incrementally: per-agent ``available`` changes with every grant and
recovery, shares move in the sorters as allocations change, and the set of agents with free
resources is maintained, so a cycle costs O(free agents x roles/frameworks looked at).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping

from butte.core.domains import REGION_AWARE
from butte.core.resources import Resources
from butte.master.allocator.filters import RefusalFilters, blocked
from butte.master.allocator.interface import Allocation, AllocatorOptions
from butte.master.allocator.quota import (
    Quantities,
    Quota,
    add_at,
    add_into,
    ancestors_and_self,
    cap_unreserved,
    min_into,
    only_satisfied,
    reserved_quantities,
    shortfall,
    unreserved_quantities,
    within,
)
from butte.master.allocator.sorter import DRFSorter, Totals
from butte.master.allocator.split import Split

MAX_REFUSE_SECONDS = 365 * 24 * 3600.0
GPU_RESOURCES = "GPU_RESOURCES"
EMPTY = Resources()


class _Framework:
    __slots__ = ("id", "roles", "suppressed", "capabilities", "gpu", "region_aware", "active")

    def __init__(self, framework_id: str) -> None:
        self.id = framework_id
        self.roles: dict[str, None] = {}  # ordered set
        self.suppressed: set[str] = set()
        self.capabilities: frozenset[str] = frozenset()
        self.gpu = False
        self.region_aware = False
        self.active = True


class _Agent:
    __slots__ = (
        "id",
        "total",
        "available",
        "allocated",
        "active",
        "gpus",
        "remote",
        "reserved",
        "overcommitted",
        "whole",
        "split",
    )

    def __init__(self, agent_id: str, total: Resources) -> None:
        self.id = agent_id
        self.total = total
        self.available = total
        self.allocated: dict[tuple[str, str], Resources] = {}  # (framework, role) -> held
        self.active = True
        self.gpus = total.has("gpus")
        self.remote = False
        self.reserved = _has_reservations(total)
        # True while the total no longer covers what is held (it shrank under running tasks):
        # then ``available`` is recomputed as total - held instead of added to.
        self.overcommitted = False
        # With reservations (butte.master.allocator.split): the split of the total, made once
        # per total, and the split of ``available`` last used (each valid only while its
        # ``of`` is the bag it split, so neither can go stale).
        self.whole = Split(total, rest=True) if self.reserved else None
        self.split = self.whole

    def set_total(self, total: Resources) -> None:
        """A new total: the reserved flag and the split of the total follow."""
        self.total = total
        self.reserved = _has_reservations(total)
        self.whole = Split(total, rest=True) if self.reserved else None


def _has_reservations(total: Resources) -> bool:
    return any(key[1] for key, _ in total.items())


class _Headroom:
    """Headroom books of one allocation cycle: what unsatisfied guarantees still need
    (``required``) and the unreserved resources nobody holds (``available``: summed over the
    free agents when first needed, None until then), both kept up to date as the cycle
    grants."""

    __slots__ = ("required", "available")

    def __init__(self, required: Quantities) -> None:
        self.required = required
        self.available: Quantities | None = None


class _Role:
    __slots__ = ("name", "sorter", "wanting")

    def __init__(self, name: str, sorter: DRFSorter) -> None:
        self.name = name
        self.sorter = sorter  # frameworks tracked under the role
        self.wanting: set[str] = set()  # the active ones in `sorter`


class HierarchicalDRFAllocator:
    """Implements `butte.master.allocator.interface.Allocator` (see the module docstring).

    ``seed`` seeds the agent shuffle so that a run is reproducible (None = unseeded)."""

    def __init__(self, options: AllocatorOptions | None = None, *, seed: int | None = 0) -> None:
        self._options = options if options is not None else AllocatorOptions()
        self._excluded = frozenset(self._options.fair_sharing_excluded_resource_names)
        self._rng = random.Random(seed)
        self._totals = Totals()
        self._role_sorter = DRFSorter(self._totals, hierarchical=True, excluded=self._excluded)
        self._weights: dict[str, float] = {}
        self._roles: dict[str, _Role] = {}
        self._frameworks: dict[str, _Framework] = {}
        self._agents: dict[str, _Agent] = {}
        self._free: dict[str, _Agent] = {}  # active agents with something available
        self._holdings: dict[str, dict[str, dict[str, None]]] = {}  # fw -> role -> agents
        self._filters = RefusalFilters()
        self._runs = 0
        self._last_count = 0
        self._total_count = 0
        self._last_seconds = 0.0
        # Quota (butte.master.allocator.quota): configs by role, consumption of the roles with
        # a quota (their subtrees included), and caches rebuilt when a quota changes.
        self._quotas: dict[str, Quota] = {}
        self._consumed: dict[str, Quantities] = {}
        # Consumption is kept incrementally only for roles with a quota, only while some
        # quota is set (``_tracking``; the plain DRF path pays nothing for it, and a role
        # without quota costs one cached lookup); for any other role `consumed_quota`
        # computes it from the books, cached until they change (``_books`` counts changes).
        self._tracking = False
        self._quota_paths: dict[str, tuple[str, ...]] = {}  # role -> its paths with quota
        self._books = 0
        self._consumed_cache: tuple[int, dict[str, Quantities]] = (-1, {})
        self._limit_chains: dict[str, tuple[tuple[str, Mapping[str, int]], ...]] = {}
        self._guarantee_tops: dict[str, str | None] = {}
        # reservation role -> tracked roles that may use its reservations (itself, its
        # descendants); cleared whenever a role starts or stops being tracked.
        self._within: dict[str, list[str]] = {}

    # frameworks -----------------------------------------------------------------------------

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
        fw = self._frameworks.get(framework_id)
        if fw is None:
            fw = self._frameworks[framework_id] = _Framework(framework_id)
        fw.active = active
        self._set_framework(fw, roles, capabilities, suppressed_roles)
        if not active:
            self._filters.clear_framework(framework_id)

    def update_framework(
        self,
        framework_id: str,
        roles: Iterable[str],
        *,
        capabilities: Iterable[str] = (),
        suppressed_roles: Iterable[str] = (),
    ) -> None:
        """Roles, capabilities or suppression changed (re-subscribe, UPDATE_FRAMEWORK)."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            self.add_framework(
                framework_id, roles, capabilities=capabilities, suppressed_roles=suppressed_roles
            )
            return
        self._set_framework(fw, roles, capabilities, suppressed_roles)

    def _set_framework(
        self,
        fw: _Framework,
        roles: Iterable[str],
        capabilities: Iterable[str],
        suppressed_roles: Iterable[str],
    ) -> None:
        old_roles = fw.roles
        fw.roles = dict.fromkeys(roles)
        fw.suppressed = {r for r in suppressed_roles if r in fw.roles}
        fw.capabilities = frozenset(capabilities)
        fw.gpu = GPU_RESOURCES in fw.capabilities
        fw.region_aware = REGION_AWARE in fw.capabilities
        for role in old_roles:
            if role not in fw.roles:
                self._filters.clear_role(fw.id, role)
                self._refresh_wanting(fw, role)
                self._untrack_if_unused(fw.id, role)
        for role in fw.roles:
            self._track(fw.id, role)
            self._refresh_wanting(fw, role)

    def remove_framework(self, framework_id: str) -> None:
        """Framework gone: its allocations are dropped (the master recovers tasks first)."""
        fw = self._frameworks.pop(framework_id, None)
        if fw is not None:
            fw.active = False
            for role in fw.roles:
                self._refresh_wanting(fw, role)
        for role, agents in list(self._holdings.get(framework_id, {}).items()):
            for agent_id in list(agents):
                agent = self._agents[agent_id]
                held = agent.allocated[(framework_id, role)]
                self._release(agent, framework_id, role, held, held)
        for role in list(fw.roles if fw is not None else ()):
            self._untrack_if_unused(framework_id, role)
        self._filters.clear_framework(framework_id)

    def activate_framework(self, framework_id: str) -> None:
        """The framework (re)connected: offers resume."""
        fw = self._frameworks.get(framework_id)
        if fw is not None and not fw.active:
            fw.active = True
            for role in fw.roles:
                self._refresh_wanting(fw, role)

    def deactivate_framework(self, framework_id: str) -> None:
        """No offers while disconnected; its filters are cleared as in Mesos."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return
        fw.active = False
        for role in fw.roles:
            self._refresh_wanting(fw, role)
        self._filters.clear_framework(framework_id)

    def suppress(self, framework_id: str, roles: Iterable[str] | None = None) -> None:
        """Stop offering to these roles of the framework (None = all of its roles)."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return
        for role in self._roles_of(fw, roles):
            fw.suppressed.add(role)
            self._refresh_wanting(fw, role)

    def revive(self, framework_id: str, roles: Iterable[str] | None = None) -> None:
        """Un-suppress these roles and clear their filters (None = all of its roles)."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return
        if roles is None:
            self._filters.clear_framework(framework_id)
        for role in self._roles_of(fw, roles):
            fw.suppressed.discard(role)
            self._filters.clear_role(framework_id, role)
            self._refresh_wanting(fw, role)

    @staticmethod
    def _roles_of(fw: _Framework, roles: Iterable[str] | None) -> list[str]:
        if roles is None:
            return list(fw.roles)
        return [r for r in roles if r in fw.roles]

    # role and framework tracking ------------------------------------------------------------

    def _track(self, framework_id: str, role: str) -> None:
        """Makes sure the role is in the role sorter and the framework in its sorter."""
        rs = self._roles.get(role)
        if rs is None:
            rs = _Role(role, DRFSorter(self._totals, excluded=self._excluded))
            self._roles[role] = rs
            self._role_sorter.add(role)
            self._within.clear()
        if framework_id not in rs.sorter:
            rs.sorter.add(framework_id)

    def _untrack_if_unused(self, framework_id: str, role: str) -> None:
        """Stops tracking (framework, role) once it is neither subscribed nor holding."""
        fw = self._frameworks.get(framework_id)
        if fw is not None and role in fw.roles:
            return
        if role in self._holdings.get(framework_id, {}):
            return
        rs = self._roles.get(role)
        if rs is None or framework_id not in rs.sorter:
            return
        rs.sorter.remove(framework_id)
        if len(rs.sorter) == 0:
            self._role_sorter.remove(role)
            del self._roles[role]
            self._within.clear()

    def _refresh_wanting(self, fw: _Framework, role: str) -> None:
        """Keeps the sorters' active flags equal to "this framework wants offers here"."""
        rs = self._roles.get(role)
        if rs is None:
            return
        want = fw.active and role in fw.roles and role not in fw.suppressed
        if want and fw.id not in rs.wanting:
            rs.wanting.add(fw.id)
            rs.sorter.activate(fw.id)
            if len(rs.wanting) == 1:
                self._role_sorter.activate(role)
        elif not want and fw.id in rs.wanting:
            rs.wanting.discard(fw.id)
            rs.sorter.deactivate(fw.id)
            if not rs.wanting:
                self._role_sorter.deactivate(role)

    # agents ---------------------------------------------------------------------------------

    def add_agent(
        self,
        agent_id: str,
        total: Resources,
        *,
        used: Mapping[tuple[str, str], Resources] | None = None,
        remote: bool = False,
    ) -> None:
        """An agent (re)registered. ``used`` maps (framework_id, role) to resources its
        running tasks and executors already hold (re-registration). ``remote``: in another
        region than the master's (offered only to REGION_AWARE frameworks)."""
        if agent_id in self._agents:
            self.remove_agent(agent_id)
        agent = _Agent(agent_id, total)
        agent.remote = remote
        self._agents[agent_id] = agent
        self._totals.add(total.quantities())
        if agent.reserved:
            self._count_reservations(total, 1)
        held = EMPTY
        if used and not agent.reserved:
            agent.reserved = any(_has_reservations(r) for r in used.values())
        for (framework_id, role), resources in (used or {}).items():
            if resources:
                self._track(framework_id, role)
                quantities = resources.quantities()
                self._hold(agent, framework_id, role, resources, quantities)
                self._role_sorter.allocated(role, quantities)
                held = held + resources
        agent.available = total - held
        agent.overcommitted = not total.contains(held)
        agent.reserved = _has_reservations(total)
        self._update_free(agent)

    def remove_agent(self, agent_id: str) -> None:
        """The agent is gone: its allocations vanish with it."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        for (framework_id, role), held in list(agent.allocated.items()):
            self._release(agent, framework_id, role, held, held)
        self._totals.subtract(agent.total.quantities())
        if agent.reserved:
            self._count_reservations(agent.total, -1)
        self._filters.clear_agent(agent_id)
        self._free.pop(agent_id, None)
        del self._agents[agent_id]

    def activate_agent(self, agent_id: str) -> None:
        """The agent may be offered again."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.active = True
            self._update_free(agent)

    def deactivate_agent(self, agent_id: str) -> None:
        """No new offers from this agent (disconnected, draining)."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.active = False
            self._update_free(agent)

    def update_agent_total(self, agent_id: str, total: Resources) -> None:
        """The agent's total changed (oversubscription, operator update)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        self._totals.subtract(agent.total.quantities())
        self._totals.add(total.quantities())
        if agent.reserved:
            self._count_reservations(agent.total, -1)
        if _has_reservations(total):
            self._count_reservations(total, 1)
        agent.set_total(total)
        agent.gpus = total.has("gpus")
        held = self._held_on(agent)
        agent.available = total - held
        agent.overcommitted = not total.contains(held)
        self._update_free(agent)

    def _count_reservations(self, total: Resources, sign: int) -> None:
        """Reserved resources count in their role's consumed quota, allocated or not."""
        self._books += 1
        if not self._tracking:
            return
        for role, quantities in reserved_quantities(total).items():
            self._consume(role, quantities, sign)

    def _consume(self, role: str, quantities: Mapping[str, int], sign: int) -> None:
        """Adds (sign=1) or takes (-1) ``quantities`` to or from the consumed quota of the
        role and of its ancestors, as far as they have a quota (while ``_tracking``)."""
        paths = self._quota_paths.get(role)
        if paths is None:
            quotas = self._quotas
            paths = tuple(path for path in ancestors_and_self(role) if path in quotas)
            self._quota_paths[role] = paths
        for path in paths:
            add_at(self._consumed, path, quantities, sign)

    def convert_allocation(
        self,
        framework_id: str,
        agent_id: str,
        role: str,
        consumed: Resources,
        converted: Resources,
    ) -> None:
        """An offer operation (RESERVE, CREATE, ...) turned ``consumed``, held by (framework,
        role), into ``converted`` (same quantities): both what is held and the agent's total
        change; shares do not."""
        agent = self._agents.get(agent_id)
        key = (framework_id, role)
        held = agent.allocated.get(key) if agent is not None else None
        if agent is None or held is None or not held.contains(consumed):
            raise ValueError(f"{framework_id} does not hold {consumed} on {agent_id} as {role}")
        agent.allocated[key] = held - consumed + converted
        agent.set_total(agent.total - consumed + converted)
        self._books += 1
        if self._tracking:
            self._convert_consumption(role, consumed, converted)
        agent.available = agent.total - self._held_on(agent)
        agent.overcommitted = not agent.total.contains(self._held_on(agent))
        self._update_free(agent)

    def _convert_consumption(self, role: str, consumed: Resources, converted: Resources) -> None:
        """Consumed quota after an offer operation: the unreserved part of what the role
        holds and the agent's reservations both change form (added first, so that nothing
        is clipped at zero on the way)."""
        self._consume(role, unreserved_quantities(converted), 1)
        for owner, quantities in reserved_quantities(converted).items():
            self._consume(owner, quantities, 1)
        self._consume(role, unreserved_quantities(consumed), -1)
        for owner, quantities in reserved_quantities(consumed).items():
            self._consume(owner, quantities, -1)

    @staticmethod
    def _held_on(agent: _Agent) -> Resources:
        held = EMPTY
        for resources in agent.allocated.values():
            held = held + resources
        return held

    def _update_free(self, agent: _Agent) -> None:
        if agent.active and agent.available:
            self._free[agent.id] = agent
        else:
            self._free.pop(agent.id, None)

    # holdings -------------------------------------------------------------------------------

    def _hold(
        self,
        agent: _Agent,
        framework_id: str,
        role: str,
        resources: Resources,
        quantities: Mapping[str, int],
        unreserved: Mapping[str, int] | None = None,
    ) -> None:
        """Counts ``resources`` as held by (framework, role) on the agent and in the role's
        framework sorter. The role sorter and ``available`` are the caller's business
        (`allocate` updates the role sorter only after its walk of that sorter is closed).
        ``unreserved``: the unreserved quantities of ``resources`` where the caller knows
        them (None: worked out here)."""
        key = (framework_id, role)
        prev = agent.allocated.get(key)
        agent.allocated[key] = resources if prev is None else prev + resources
        if prev is None:
            by_role = self._holdings.get(framework_id)
            if by_role is None:
                by_role = self._holdings[framework_id] = {}
            agents = by_role.get(role)
            if agents is None:
                agents = by_role[role] = {}
            agents[agent.id] = None
        self._roles[role].sorter.allocated(framework_id, quantities)
        # Consumed quota: only the unreserved part (reservations are counted already).
        # (An agent without reservations cannot hand out reserved resources, except what
        # a re-registering agent reports as used: add_agent marks the agent reserved then.)
        self._books += 1
        if self._tracking:
            if unreserved is None:
                unreserved = unreserved_quantities(resources) if agent.reserved else quantities
            if unreserved:
                self._consume(role, unreserved, 1)

    def _release(
        self, agent: _Agent, framework_id: str, role: str, held: Resources, back: Resources
    ) -> None:
        """(framework, role) gives ``back`` (part of ``held``) on the agent."""
        left = EMPTY if back is held else held - back
        key = (framework_id, role)
        if left:
            agent.allocated[key] = left
        else:
            del agent.allocated[key]
            by_role = self._holdings[framework_id]
            agents = by_role[role]
            del agents[agent.id]
            if not agents:
                del by_role[role]
                if not by_role:
                    del self._holdings[framework_id]
        quantities = back.quantities()
        self._roles[role].sorter.unallocated(framework_id, quantities)
        self._role_sorter.unallocated(role, quantities)
        # Exact even if the agent's total changed meanwhile (what is held may be reserved
        # on an agent whose total no longer has reservations).
        self._books += 1
        if self._tracking:
            self._consume(role, unreserved_quantities(back), -1)
        if agent.overcommitted:
            held_now = self._held_on(agent)
            agent.available = agent.total - held_now
            agent.overcommitted = not agent.total.contains(held_now)
        else:
            agent.available = agent.available + back
        self._update_free(agent)
        if not left:
            self._untrack_if_unused(framework_id, role)

    # resources ------------------------------------------------------------------------------

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
        """Allocated resources come back; ``refuse_seconds > 0`` also installs a refusal
        filter for ``max(refuse_seconds, allocation_interval)`` (capped at 365 days)."""
        agent = self._agents.get(agent_id)
        if agent is None or not resources:
            return
        held = agent.allocated.get((framework_id, role))
        if held is not None:
            # Only what is actually held comes back (a stale or doubled recovery is harmless).
            if resources is held or resources == held:  # the common case: a whole decline
                back = held
            elif held.contains(resources):
                back = resources
            else:
                back = held - (held - resources)
            if back:
                self._release(agent, framework_id, role, held, back)
        if refuse_seconds is None or not refuse_seconds > 0:
            return
        if framework_id not in self._frameworks:
            return
        seconds = max(min(refuse_seconds, MAX_REFUSE_SECONDS), self._options.allocation_interval)
        self._filters.add(framework_id, role, agent_id, resources, now + seconds)

    def update_weights(self, weights: Mapping[str, float]) -> None:
        """Sets role weights (others keep theirs; the default is 1.0). Raises ValueError for a
        weight that is not a finite number > 0, changing nothing."""
        for role, weight in weights.items():
            if not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"weight of role {role!r} must be a number > 0, got {weight!r}")
        self._weights.update({role: float(w) for role, w in weights.items()})
        self._role_sorter.set_weights(self._weights)

    # allocation -----------------------------------------------------------------------------

    def allocate(self, now: float) -> list[Allocation]:
        """Runs one allocation cycle over every active agent with free resources and every
        active framework that wants offers, hierarchical DRF order."""
        self._runs += 1
        self._filters.expire(now)
        out: list[Allocation] = []
        if self._free and self._role_sorter.has_active():
            agents = list(self._free.values())
            self._rng.shuffle(agents)
            if self._quotas:
                self._allocate_with_quota(agents, out)
            else:
                no_headroom = _Headroom({})
                for agent in agents:
                    if agent.reserved:
                        self._allocate_reserved_agent(agent, out, no_headroom)
                    else:
                        self._allocate_agent(agent, out)
        self._last_count = len(out)
        self._total_count += len(out)
        return out

    def _allocate_agent(self, agent: _Agent, out: list[Allocation]) -> None:
        """Offers one agent without reservations to roles in DRF order (stage 2 of Mesos'
        cycle): every role is offered the same candidate, everything available."""
        granted: list[tuple[str, dict[str, int]]] = []
        checked: Resources | None = None  # the last candidate found allocatable
        quantities: dict[str, int] = {}  # ... and its quantities
        walk = self._role_sorter.walk()
        try:
            for role in walk:
                candidate = agent.available
                if candidate is not checked:
                    quantities = candidate.quantities()
                    if not self._allocatable(quantities):
                        break  # every role would be offered this same candidate
                    checked = candidate
                framework_id = self._pick(role, agent, candidate)
                if framework_id is None:
                    continue
                agent.available = EMPTY
                self._hold(agent, framework_id, role, candidate, quantities)
                granted.append((role, quantities))
                out.append(Allocation(framework_id, agent.id, role, candidate))
                break
        finally:
            walk.close()
        role_sorter = self._role_sorter
        for role, quantities in granted:
            role_sorter.allocated(role, quantities)
        if not agent.available:
            del self._free[agent.id]

    def _allocate_reserved_agent(
        self, agent: _Agent, out: list[Allocation], headroom: _Headroom
    ) -> None:
        """Stage 2 on an agent with reservations, with quota or without: roles in DRF order
        are offered what they may use (the unreserved part, plus the reservations of the
        role and its ancestors), cut to their limits and to what the headroom can spare
        while some quota is set, until only reservations are left; then only the roles that
        may use those are looked at (`_offer_reservations`). The agent's `Split` gives each
        candidate, its quantities and the rest without rebuilding them per role."""
        granted: list[tuple[str, dict[str, int]]] = []
        split = agent.split
        if split is None or split.of is not agent.available:
            split = self._split(agent)
        only_reserved = not split.unreserved
        quota = bool(self._quotas)
        chains = self._limit_chains
        required = headroom.required  # (kept up to date in place by `_grant`)
        rejected: Resources | None = None  # the last candidate found below min_allocatable
        if not only_reserved:
            walk = self._role_sorter.walk()
            try:
                unreserved_part = split.unreserved
                roles, prefixes = split.roles, split.prefixes
                for role in walk:
                    if role in roles or role.startswith(prefixes):
                        candidate = split.candidate(role)
                    else:  # (`Split.candidate`, written out for the frequent case)
                        candidate = unreserved_part
                    if not candidate:
                        continue
                    if quota and (required or role not in chains or chains[role]):
                        caps = self._stage2_caps(role, headroom)
                        if caps:
                            candidate = cap_unreserved(candidate, caps)
                            if not candidate:
                                continue
                    if candidate is rejected:
                        continue
                    if candidate is unreserved_part:
                        quantities = split.unreserved_q
                    else:
                        quantities = split.quantities(candidate)
                    if not self._allocatable(quantities):
                        rejected = candidate
                        continue
                    framework_id = self._pick(role, agent, candidate)
                    if framework_id is None:
                        continue
                    if required:
                        self._grant(agent, framework_id, role, candidate, quantities, out, headroom)
                    else:  # `_grant` without headroom books, written out
                        unreserved = split.unreserved_quantities(candidate)
                        agent.available, agent.split = split.after(candidate)
                        self._hold(agent, framework_id, role, candidate, quantities, unreserved)
                        out.append(Allocation(framework_id, agent.id, role, candidate))
                    granted.append((role, quantities))
                    if not agent.available:
                        break
                    rest = agent.split
                    if rest is None or rest.of is not agent.available:
                        rest = self._split(agent)
                    split = rest
                    if not split.unreserved:
                        only_reserved = True
                        break
                    unreserved_part = split.unreserved
                    roles, prefixes = split.roles, split.prefixes
            finally:
                walk.close()
        if only_reserved and agent.available:
            if (
                required
                or len(split.roles) != 1
                or not self._offer_reservation(agent, split, out, granted)
            ):
                self._offer_reservations(agent, out, headroom, granted)
        role_sorter = self._role_sorter
        for role, quantities in granted:
            role_sorter.allocated(role, quantities)
        self._update_free(agent)

    def _offer_reservation(
        self,
        agent: _Agent,
        split: Split,
        out: list[Allocation],
        granted: list[tuple[str, dict[str, int]]],
    ) -> bool:
        """`_offer_reservations` where it is simple (and most frequent): what is left
        (``split``, of the agent's available) belongs to one reservation role, one tracked
        role may use it, and no guarantee is owed headroom. False (nothing done) where it
        is not that simple."""
        roles = self._within.get(split.roles[0]) or self._roles_within(split.roles[0])
        if len(roles) != 1:
            return False
        role = roles[0]
        if not self._roles[role].wanting:
            return True
        candidate = split.of  # the role may use all of it
        quantities = split.of_q
        if not self._allocatable(quantities):
            return True
        framework_id = self._pick(role, agent, candidate)
        if framework_id is None:
            return True
        agent.available = EMPTY
        agent.split = None
        self._hold(agent, framework_id, role, candidate, quantities, split.unreserved_q)
        out.append(Allocation(framework_id, agent.id, role, candidate))
        granted.append((role, quantities))
        return True

    def _split(self, agent: _Agent) -> Split:
        """The split of the agent's ``available`` (an agent with reservations): the one
        last used while it still splits that bag, the total's while nothing is held, else a
        fresh one."""
        split = agent.split
        available = agent.available
        if split is not None and split.of is available:
            return split
        whole = agent.whole
        if whole is not None and whole.of is agent.total and available == agent.total:
            # An equal bag: keep the total's object, so that its parts are told by identity.
            split = whole
            agent.available = whole.of
        else:
            split = Split(available)
        agent.split = split
        return split

    # quota ----------------------------------------------------------------------------------

    def update_quota(self, role: str, quota: Quota | None) -> None:
        """Sets a role's guarantees and limits (None or an empty Quota: back to none). The
        master validates first (butte.master.quota)."""
        had = role in self._quotas
        if quota:
            self._quotas[role] = quota
        else:
            self._quotas.pop(role, None)
        self._limit_chains.clear()
        self._guarantee_tops.clear()
        self._quota_paths.clear()
        self._tracking = bool(self._quotas)
        if role in self._quotas and not had:
            consumed = self._consumption_of(role)
            if consumed:
                self._consumed[role] = consumed
        elif had and role not in self._quotas:
            self._consumed.pop(role, None)

    @property
    def quotas(self) -> dict[str, Quota]:
        """The quotas set with `update_quota`, by role."""
        return dict(self._quotas)

    def consumed_quota(self, role: str) -> dict[str, int]:
        """A role's consumed quota (thousandths): unreserved resources allocated to its
        subtree plus everything reserved to its subtree."""
        if role in self._quotas:
            return dict(self._consumed.get(role, {}))
        version, consumed = self._consumed_cache
        if version != self._books:
            consumed = self._consumption_from_books()
            self._consumed_cache = (self._books, consumed)
        return dict(consumed.get(role, {}))

    def _consumption_from_books(self) -> dict[str, Quantities]:
        """Consumed quota of every role path, computed from the agents' books."""
        out: dict[str, Quantities] = {}
        for agent in self._agents.values():
            if agent.reserved:
                for role, quantities in reserved_quantities(agent.total).items():
                    add_into(out, role, quantities, 1)
            for (_, role), held in agent.allocated.items():
                add_into(out, role, unreserved_quantities(held), 1)
        return out

    def _consumption_of(self, path: str) -> Quantities:
        """Consumed quota of one role path, computed from the agents' books."""
        out: Quantities = {}
        for agent in self._agents.values():
            if agent.reserved:
                for role, quantities in reserved_quantities(agent.total).items():
                    if within(role, path):
                        _accumulate(out, quantities)
            for (_, role), held in agent.allocated.items():
                if within(role, path):
                    _accumulate(out, unreserved_quantities(held))
        return {name: value for name, value in out.items() if value > 0}

    def _limit_chain(self, role: str) -> tuple[tuple[str, Mapping[str, int]], ...]:
        """(path, limits) of the role and each ancestor that has limits."""
        chain = self._limit_chains.get(role)
        if chain is None:
            quotas = self._quotas
            chain = tuple(
                (path, quotas[path].limits)
                for path in ancestors_and_self(role)
                if path in quotas and quotas[path].limits
            )
            self._limit_chains[role] = chain
        return chain

    def _guarantee_top(self, role: str) -> str | None:
        """The top-most role with guarantees among the role and its ancestors (None: none):
        the role whose unsatisfied guarantee counts in the required headroom."""
        if role in self._guarantee_tops:
            return self._guarantee_tops[role]
        top = None
        for path in ancestors_and_self(role):
            quota = self._quotas.get(path)
            if quota is not None and quota.guarantees:
                top = path
        self._guarantee_tops[role] = top
        return top

    def _required_headroom(self) -> Quantities:
        """Sum of the unsatisfied guarantees of the top-most roles with guarantees."""
        required: Quantities = {}
        for role, quota in self._quotas.items():
            if quota.guarantees and self._guarantee_top(role) == role:
                missing = shortfall(quota.guarantees, self._consumed.get(role, {}))
                for name, value in missing.items():
                    required[name] = required.get(name, 0) + value
        return required

    def _headroom_available(self, headroom: _Headroom) -> Quantities:
        """``headroom.available``, summed now if this cycle has not needed it yet (what the
        free agents have now is what the cycle has not granted)."""
        if headroom.available is None:
            headroom.available = self._available_headroom()
        return headroom.available

    def _available_headroom(self) -> Quantities:
        """Unreserved resources on active agents that nobody holds."""
        out: Quantities = {}
        for agent in self._free.values():
            available = agent.available
            q = unreserved_quantities(available) if agent.reserved else available.quantities()
            for name, value in q.items():
                out[name] = out.get(name, 0) + value
        return out

    def _allocate_with_quota(self, agents: list[_Agent], out: list[Allocation]) -> None:
        """Mesos' two stages: guarantees first (stage 1), then DRF for everyone (stage 2),
        neither offering a role beyond its limits nor eating into the headroom that
        unsatisfied guarantees need."""
        headroom = _Headroom(self._required_headroom())
        pending = [
            role
            for role, quota in self._quotas.items()
            if quota.guarantees
            and role in self._roles
            and self._roles[role].wanting
            and shortfall(quota.guarantees, self._consumed.get(role, {}))
        ]
        if pending:
            shares = {role: self._role_sorter.share(role) for role in pending}
            for agent in agents:
                if agent.active and agent.available:
                    self._quota_stage_agent(agent, pending, shares, out, headroom)
                    if not pending:
                        break
        for agent in agents:
            if agent.active and agent.available:
                if agent.reserved:
                    self._allocate_reserved_agent(agent, out, headroom)
                else:
                    self._allocate_agent_quota(agent, out, headroom)

    def _quota_stage_agent(
        self,
        agent: _Agent,
        pending: list[str],
        shares: dict[str, float],
        out: list[Allocation],
        headroom: _Headroom,
    ) -> None:
        """Stage 1 on one agent: roles short of their guarantees, least served first, get
        what they miss (and resources nobody is guaranteed, as headroom allows).
        ``shares`` holds the pending roles' shares, refreshed as they are granted."""
        pending.sort(key=shares.__getitem__)
        reserved_for: Split | None = None  # set once only reservations are left
        for role in list(pending):
            if reserved_for is not None and (
                role not in reserved_for.roles and not role.startswith(reserved_for.prefixes)
            ):
                continue  # (`may_use_reservations`, written out: most pending roles end here)
            quota = self._quotas[role]
            missing = shortfall(quota.guarantees, self._consumed.get(role, {}))
            if not missing:
                pending.remove(role)
                continue
            split = self._split(agent) if agent.reserved else None
            candidate = agent.available if split is None else split.candidate(role)
            if not candidate or only_satisfied(candidate, quota.guarantees, missing):
                continue  # (the second: what the cut below would leave empty, found cheaply)
            caps: Quantities = dict(missing)
            for name in quota.guarantees:
                caps.setdefault(name, 0)  # satisfied names: nothing more in this stage
            for name, need in headroom.required.items():
                if name not in quota.guarantees:
                    spare = self._headroom_available(headroom).get(name, 0) - need
                    min_into(caps, name, spare)
            self._limit_caps(role, caps)
            candidate = cap_unreserved(candidate, caps)
            if not candidate:
                continue
            quantities = candidate.quantities() if split is None else split.quantities(candidate)
            if not self._allocatable(quantities):
                continue
            framework_id = self._pick(role, agent, candidate)
            if framework_id is None:
                continue
            self._grant(agent, framework_id, role, candidate, quantities, out, headroom)
            self._role_sorter.allocated(role, quantities)
            shares[role] = self._role_sorter.share(role)
            if not shortfall(quota.guarantees, self._consumed.get(role, {})):
                pending.remove(role)
            if not agent.available:
                break
            if agent.reserved:
                rest = self._split(agent)
                if not rest.unreserved:
                    reserved_for = rest
        self._update_free(agent)

    def _allocate_agent_quota(
        self, agent: _Agent, out: list[Allocation], headroom: _Headroom
    ) -> None:
        """Stage 2 on one agent without reservations: `_allocate_agent` with each role's
        candidate cut to its limits and to what the headroom can spare (so a cut candidate
        may leave something for the next role)."""
        granted: list[tuple[str, dict[str, int]]] = []
        chains = self._limit_chains
        required = headroom.required  # (kept up to date in place by `_grant`)
        walk = self._role_sorter.walk()
        try:
            for role in walk:
                candidate = agent.available
                caps: Quantities = {}  # (what `_stage2_caps` gives a role without limits
                if required or role not in chains or chains[role]:  # while nothing is required)
                    caps = self._stage2_caps(role, headroom)
                if caps:
                    candidate = cap_unreserved(candidate, caps)
                    if not candidate:
                        continue
                quantities = candidate.quantities()
                if not self._allocatable(quantities):
                    if not caps:
                        break  # every other role would get this candidate or less
                    continue
                framework_id = self._pick(role, agent, candidate)
                if framework_id is None:
                    continue
                self._grant(agent, framework_id, role, candidate, quantities, out, headroom)
                granted.append((role, quantities))
                if not agent.available:
                    break
        finally:
            walk.close()
        role_sorter = self._role_sorter
        for role, quantities in granted:
            role_sorter.allocated(role, quantities)
        self._update_free(agent)

    def _offer_reservations(
        self,
        agent: _Agent,
        out: list[Allocation],
        headroom: _Headroom,
        granted: list[tuple[str, dict[str, int]]],
    ) -> None:
        """The rest of the stage-2 walk once only reservations are left on the agent: only
        the roles that may use them (the reservation's role and its descendants) are looked
        at, least served first, instead of walking every role."""
        for reservation_role in self._split(agent).roles:
            roles = self._roles_within(reservation_role)
            if len(roles) > 1:
                roles = sorted(roles, key=self._share_key)
            for role in roles:
                if not self._roles[role].wanting:
                    continue
                split = self._split(agent)
                candidate = split.candidate(role)
                if not candidate:
                    break
                quantities = split.quantities(candidate)
                if not self._allocatable(quantities):
                    continue
                framework_id = self._pick(role, agent, candidate)
                if framework_id is None:
                    continue
                self._grant(agent, framework_id, role, candidate, quantities, out, headroom)
                granted.append((role, quantities))
                break

    def _share_key(self, role: str) -> tuple[float, str]:
        return (self._role_sorter.share(role), role)

    def _roles_within(self, reservation_role: str) -> list[str]:
        """Tracked roles that may use ``reservation_role``'s reservations."""
        roles = self._within.get(reservation_role)
        if roles is None:
            prefix = reservation_role + "/"
            roles = [r for r in self._roles if r == reservation_role or r.startswith(prefix)]
            self._within[reservation_role] = roles
        return roles

    def _limit_caps(self, role: str, caps: Quantities) -> None:
        """Cuts ``caps`` to the room left under the limits of the role and its ancestors."""
        for path, limits in self._limit_chain(role):
            consumed = self._consumed.get(path, {})
            for name, limit in limits.items():
                min_into(caps, name, limit - consumed.get(name, 0))

    def _stage2_caps(self, role: str, headroom: _Headroom) -> Quantities:
        caps: Quantities = {}
        if self._limit_chains.get(role, True):
            self._limit_caps(role, caps)
        if headroom.required:
            # What this role takes under its own top guarantee shrinks the requirement too.
            top = self._guarantee_top(role)
            own = (
                shortfall(self._quotas[top].guarantees, self._consumed.get(top, {}))
                if top is not None
                else {}
            )
            for name, need in headroom.required.items():
                spare = self._headroom_available(headroom).get(name, 0) - need + own.get(name, 0)
                min_into(caps, name, spare)
        return caps

    def _grant(
        self,
        agent: _Agent,
        framework_id: str,
        role: str,
        candidate: Resources,
        quantities: dict[str, int],
        out: list[Allocation],
        headroom: _Headroom,
    ) -> None:
        """Hands ``candidate`` to (framework, role) and keeps the headroom books (the role
        sorter is the caller's business, as in `_allocate_agent`)."""
        available = agent.available
        split = agent.split
        if split is not None and split.of is available:
            unreserved = split.unreserved_quantities(candidate)
            agent.available, agent.split = split.after(candidate)
        else:
            unreserved = unreserved_quantities(candidate) if agent.reserved else quantities
            agent.available = EMPTY if candidate is available else available - candidate
        top = self._guarantee_top(role) if headroom.required else None
        before = (
            shortfall(self._quotas[top].guarantees, self._consumed.get(top, {}))
            if top is not None
            else None
        )
        self._hold(agent, framework_id, role, candidate, quantities, unreserved)
        out.append(Allocation(framework_id, agent.id, role, candidate))
        if not headroom.required:
            return
        hr_available = headroom.available
        if hr_available is not None:
            for name, value in unreserved.items():
                hr_available[name] = hr_available.get(name, 0) - value
        if top is not None and before:
            after = shortfall(self._quotas[top].guarantees, self._consumed.get(top, {}))
            required = headroom.required
            for name, value in before.items():
                left = required.get(name, 0) - (value - after.get(name, 0))
                if left > 0:
                    required[name] = left
                else:
                    required.pop(name, None)

    def _allocatable(self, have: Mapping[str, int]) -> bool:
        """``--min_allocatable_resources``: the candidate's scalar quantities meet at least
        one alternative (no alternatives = anything goes)."""
        alternatives = self._options.min_allocatable
        if not alternatives:
            return True
        for alternative in alternatives:
            for name, need in alternative.items():
                if have.get(name, 0) < need:
                    break
            else:
                return True
        return False

    def _pick(self, role: str, agent: _Agent, candidate: Resources) -> str | None:
        """The first framework of the role, in DRF order, that may take the candidate."""
        gpu_gated = agent.gpus and self._options.filter_gpu_resources
        remote = agent.remote
        frameworks = self._frameworks
        filters = self._filters.by_framework
        walk = self._roles[role].sorter.walk()
        try:
            for framework_id in walk:
                if gpu_gated and not frameworks[framework_id].gpu:
                    continue
                if remote and not frameworks[framework_id].region_aware:
                    continue
                if filters:
                    mine = filters.get(framework_id)
                    if mine is not None and blocked(mine, role, agent.id, candidate):
                        continue
                return framework_id
            return None
        finally:
            walk.close()

    # views ----------------------------------------------------------------------------------

    def record_allocation_seconds(self, seconds: float) -> None:
        """The shell reports how long its last `allocate` took (the core reads no clock), so
        that `statistics` can include it."""
        self._last_seconds = float(seconds)

    def statistics(self) -> dict[str, float]:
        """Counters for /metrics: cycles run, allocations made, sizes of the books, and the
        duration last given to `record_allocation_seconds`."""
        return {
            "allocation_runs": float(self._runs),
            "last_allocation_seconds": self._last_seconds,
            "last_allocation_count": float(self._last_count),
            "allocations_total": float(self._total_count),
            "frameworks": float(len(self._frameworks)),
            "frameworks_active": float(sum(1 for f in self._frameworks.values() if f.active)),
            "agents": float(len(self._agents)),
            "agents_with_free_resources": float(len(self._free)),
            "roles": float(len(self._roles)),
            "offer_filters": float(len(self._filters)),
        }

    def allocated(self, framework_id: str) -> dict[tuple[str, str], Resources]:
        """What a framework holds: (agent_id, role) -> resources."""
        out: dict[tuple[str, str], Resources] = {}
        for role, agents in self._holdings.get(framework_id, {}).items():
            for agent_id in agents:
                out[(agent_id, role)] = self._agents[agent_id].allocated[(framework_id, role)]
        return out

    def available(self, agent_id: str) -> Resources:
        """What an agent has neither offered nor used (empty for an unknown agent)."""
        agent = self._agents.get(agent_id)
        return agent.available if agent is not None else EMPTY

    def role_shares(self) -> dict[str, float]:
        """Weighted dominant share of every tracked role (its subtree included)."""
        return {role: self._role_sorter.share(role) for role in self._roles}

    def framework_shares(self, role: str) -> dict[str, float]:
        """Dominant share of each framework tracked under ``role`` (empty if none)."""
        rs = self._roles.get(role)
        if rs is None:
            return {}
        return {fw: rs.sorter.share(fw) for fw in rs.sorter.clients()}

    @property
    def weights(self) -> dict[str, float]:
        """The role weights set with `update_weights` (others are 1.0)."""
        return dict(self._weights)

    def offer_filters(self, framework_id: str) -> list[tuple[str, str, Resources, float]]:
        """(role, agent, refused resources, expiry) of a framework's live refusal filters."""
        return self._filters.of_framework(framework_id)

    # checking -------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raises AssertionError unless the books balance: per agent available + held ==
        total (available == total - held when a shrunk total no longer covers what is held),
        nothing empty or negative is stored, indexes agree, and every sorter holds exactly
        the allocations and shares that the agents' books imply."""
        totals: dict[str, int] = {}
        by_role: dict[str, dict[str, int]] = {}
        by_framework: dict[tuple[str, str], dict[str, int]] = {}
        for agent in self._agents.values():
            self._check_agent(agent)
            _accumulate(totals, agent.total.quantities())
            for (framework_id, role), held in agent.allocated.items():
                assert agent.id in self._holdings[framework_id][role], "holdings index"
                quantities = self._fair(held.quantities())
                _accumulate(by_role.setdefault(role, {}), quantities)
                _accumulate(by_framework.setdefault((role, framework_id), {}), quantities)
        assert totals == self._totals.quantities, f"totals {self._totals.quantities} != {totals}"
        for framework_id, roles in self._holdings.items():
            for role, agents in roles.items():
                assert agents, "empty holdings entry"
                for agent_id in agents:
                    assert (framework_id, role) in self._agents[agent_id].allocated, "holdings"
        self._check_roles(by_role, by_framework)
        self._role_sorter.check_invariants()
        for rs in self._roles.values():
            rs.sorter.check_invariants()
        for framework_id in self._filters.by_framework:
            assert framework_id in self._frameworks, f"filters of unknown {framework_id}"
        self._check_consumed()

    def _check_consumed(self) -> None:
        """Consumed quota equals unreserved allocations plus reservations, per subtree (kept
        incrementally for the roles with a quota)."""
        assert self._tracking == bool(self._quotas), "consumption tracking out of step"
        books = self._consumption_from_books()
        expect = {role: books[role] for role in self._quotas if role in books}
        assert expect == self._consumed, f"consumed quota {self._consumed} != {expect}"
        for role in self._quotas:
            assert self._consumption_of(role) == books.get(role, {}), f"consumption of {role}"

    def _check_agent(self, agent: _Agent) -> None:
        held = self._held_on(agent)
        assert agent.available == agent.total - held, f"{agent.id}: available is off"
        assert agent.overcommitted == (not agent.total.contains(held)), f"{agent.id}: overcommit"
        if not agent.overcommitted:
            assert agent.available + held == agent.total, f"{agent.id}: books do not balance"
        for resources in (agent.available, *agent.allocated.values()):
            for _, value in resources.items():
                assert not isinstance(value, int) or value > 0, f"{agent.id}: {resources}"
        assert all(agent.allocated.values()), f"{agent.id}: empty allocation stored"
        free = agent.active and bool(agent.available)
        assert (agent.id in self._free) == free, f"{agent.id}: free index"
        assert agent.gpus == agent.total.has("gpus"), f"{agent.id}: gpu flag"
        assert agent.reserved == _has_reservations(agent.total), f"{agent.id}: reserved flag"
        if agent.reserved:
            assert agent.whole is not None and agent.whole.of is agent.total, f"{agent.id}: whole"
        else:
            assert agent.whole is None, f"{agent.id}: split of a total without reservations"
        for split in (agent.whole, agent.split):
            if split is not None:
                split.check()

    def _check_roles(
        self,
        by_role: dict[str, dict[str, int]],
        by_framework: dict[tuple[str, str], dict[str, int]],
    ) -> None:
        assert set(self._role_sorter.clients()) == set(self._roles), "role sorter clients"
        for role, framework_id in by_framework:
            assert framework_id in self._roles[role].sorter, f"{framework_id} untracked"
        for fw in self._frameworks.values():
            assert fw.suppressed <= set(fw.roles), f"{fw.id}: suppressed unknown role"
            for role in fw.roles:
                assert fw.id in self._roles[role].sorter, f"{fw.id} not tracked in {role}"
        totals = self._totals.quantities
        for role, rs in self._roles.items():
            got = self._role_sorter.allocation(role)
            assert got == by_role.get(role, {}), f"role {role}: {got} != {by_role.get(role)}"
            subtree: dict[str, int] = {}
            for other, quantities in by_role.items():
                if other == role or other.startswith(role + "/"):
                    _accumulate(subtree, quantities)
            share = max((v / totals[r] for r, v in subtree.items() if totals.get(r)), default=0)
            expect = share / self._weights.get(role, 1.0)
            assert math.isclose(self._role_sorter.share(role), expect), f"share of {role}"
            assert len(rs.sorter) > 0, f"role {role} tracked without frameworks"
            for framework_id in rs.sorter.clients():
                known = self._frameworks.get(framework_id)
                subscribed = known is not None and role in known.roles
                holding = role in self._holdings.get(framework_id, {})
                assert subscribed or holding, f"{framework_id} tracked in {role} for nothing"
                got = rs.sorter.allocation(framework_id)
                assert got == by_framework.get((role, framework_id), {}), f"{framework_id}"
                want = (
                    known is not None
                    and known.active
                    and subscribed
                    and role not in known.suppressed
                )
                assert (framework_id in rs.wanting) == want, f"{framework_id} wanting {role}"
                assert rs.sorter.is_active(framework_id) == want, f"{framework_id} active"
            assert self._role_sorter.is_active(role) == bool(rs.wanting), f"{role} active"

    def _fair(self, quantities: dict[str, int]) -> dict[str, int]:
        if not self._excluded:
            return quantities
        return {r: v for r, v in quantities.items() if r not in self._excluded}


def _accumulate(into: dict[str, int], quantities: Mapping[str, int]) -> None:
    for name, value in quantities.items():
        into[name] = into.get(name, 0) + value
