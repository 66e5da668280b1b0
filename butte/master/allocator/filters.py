"""Refusal filters (Mesos ``RefusedOfferFilter``; docs/protocol.md §1.10).

When a framework declines resources of an agent under one of its roles with
``refuse_seconds > 0``, the allocator stops offering that agent to that (framework, role) for a
while, but only as long as what it would offer is a *subset* of what was refused: more
resources appearing on the agent break through. Filters live in a three-level map
framework -> role -> agent -> [filter] so that the allocator's hot path answers "is anything
filtered for this framework?" with one dict lookup, and an expiry heap removes them in time
order without scanning.
"""

from __future__ import annotations

from heapq import heappop, heappush

from butte.core.resources import Resources

FiltersByFramework = dict[str, dict[str, dict[str, list["RefusalFilter"]]]]


class RefusalFilter:
    """One refusal: these resources, from this agent, until ``expires``."""

    __slots__ = ("resources", "expires", "live")

    def __init__(self, resources: Resources, expires: float) -> None:
        self.resources = resources
        self.expires = expires
        self.live = True  # False once removed (the expiry heap may still hold it)


class RefusalFilters:
    """Every live refusal filter of an allocator."""

    def __init__(self) -> None:
        # framework -> role -> agent -> filters; empty levels are removed, so a framework
        # without filters is simply absent.
        self.by_framework: FiltersByFramework = {}
        self._expiry: list[tuple[float, int, str, str, str, RefusalFilter]] = []
        self._seq = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self, framework_id: str, role: str, agent_id: str, resources: Resources, expires: float
    ) -> None:
        """Installs a filter on (framework, role, agent) for ``resources`` until ``expires``."""
        filt = RefusalFilter(resources, expires)
        roles = self.by_framework.setdefault(framework_id, {})
        roles.setdefault(role, {}).setdefault(agent_id, []).append(filt)
        self._seq += 1
        heappush(self._expiry, (expires, self._seq, framework_id, role, agent_id, filt))
        self._count += 1

    def blocks(self, framework_id: str, role: str, agent_id: str, candidate: Resources) -> bool:
        """True if a live filter covers every resource of ``candidate``."""
        roles = self.by_framework.get(framework_id)
        if roles is None:
            return False
        return blocked(roles, role, agent_id, candidate)

    def expire(self, now: float) -> int:
        """Removes the filters whose time is up (``expires <= now``); returns how many."""
        heap = self._expiry
        removed = 0
        while heap and heap[0][0] <= now:
            _, _, framework_id, role, agent_id, filt = heappop(heap)
            if filt.live:
                self._remove_one(framework_id, role, agent_id, filt)
                removed += 1
        return removed

    def _remove_one(self, framework_id: str, role: str, agent_id: str, filt: RefusalFilter) -> None:
        roles = self.by_framework[framework_id]
        agents = roles[role]
        filters = agents[agent_id]
        filters.remove(filt)
        filt.live = False
        self._count -= 1
        if not filters:
            del agents[agent_id]
            if not agents:
                del roles[role]
                if not roles:
                    del self.by_framework[framework_id]

    def clear_framework(self, framework_id: str) -> None:
        """Drops every filter of a framework (deactivated, removed, REVIVE of all roles)."""
        roles = self.by_framework.pop(framework_id, None)
        if roles is not None:
            for agents in roles.values():
                self._kill(agents)

    def clear_role(self, framework_id: str, role: str) -> None:
        """Drops a framework's filters for one role (REVIVE of that role)."""
        roles = self.by_framework.get(framework_id)
        if roles is not None and role in roles:
            self._kill(roles.pop(role))
            if not roles:
                del self.by_framework[framework_id]

    def clear_agent(self, agent_id: str) -> None:
        """Drops every filter on an agent (agent removed)."""
        for framework_id in list(self.by_framework):
            roles = self.by_framework[framework_id]
            for role in list(roles):
                agents = roles[role]
                filters = agents.pop(agent_id, None)
                if filters is not None:
                    self._kill({agent_id: filters})
                    if not agents:
                        del roles[role]
            if not roles:
                del self.by_framework[framework_id]

    def _kill(self, agents: dict[str, list[RefusalFilter]]) -> None:
        # Heap entries stay until their time; `live` tells `expire` to skip them. Keep the
        # heap from growing without bound when filters are cleared far more often than they
        # expire (REVIVE storms).
        for filters in agents.values():
            for filt in filters:
                filt.live = False
                self._count -= 1
        if len(self._expiry) > 2 * self._count + 64:
            self._expiry = [e for e in self._expiry if e[5].live]
            self._expiry.sort()

    def of_framework(self, framework_id: str) -> list[tuple[str, str, Resources, float]]:
        """(role, agent, refused resources, expiry) of a framework's live filters."""
        out: list[tuple[str, str, Resources, float]] = []
        for role, agents in self.by_framework.get(framework_id, {}).items():
            for agent_id, filters in agents.items():
                out.extend((role, agent_id, f.resources, f.expires) for f in filters)
        return out


def blocked(
    roles: dict[str, dict[str, list[RefusalFilter]]],
    role: str,
    agent_id: str,
    candidate: Resources,
) -> bool:
    """The hot-path check on one framework's filters (see `RefusalFilters.blocks`)."""
    agents = roles.get(role)
    if agents is None:
        return False
    filters = agents.get(agent_id)
    if filters is None:
        return False
    for filt in filters:
        if filt.resources.contains(candidate):
            return True
    return False
