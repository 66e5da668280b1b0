"""The master core's offer lifetime and registry pruning (`OfferLifetime`, part of
`MasterMachine`).

* ``--offer_timeout``: an offer held longer is rescinded (RESCIND to the framework, its
  resources back to the allocator with no filter), as Mesos does.
* ``offer_constraints`` (SUBSCRIBE / UPDATE_FRAMEWORK, `butte.master.offer_constraints`): an
  allocation for an agent the framework's role constraints exclude is not offered; it goes
  back to the allocator with a refusal filter for that (framework, role, agent), so that the
  next allocation run gives it to someone else.
* ``--registry_gc_interval``, ``--registry_max_agent_age``, ``--registry_max_agent_count``:
  every interval, unreachable and gone agents older than the age are forgotten, then the
  oldest beyond the count (each list on its own), with one `PruneAgents` registry write.
"""

from __future__ import annotations

import logging

from butte.coord.interface import PruneAgents
from butte.master.core import MasterCore
from butte.master.state import Agent, Framework, Offer

log = logging.getLogger(__name__)

# How long an allocation the offer constraints excluded stays filtered (it is re-checked
# when the agent's free resources grow or the constraints change: UPDATE_FRAMEWORK revives).
CONSTRAINT_REFUSAL_SECONDS = 3600.0


class OfferLifetime(MasterCore):
    """See the module docstring."""

    __slots__ = ()

    def _offer_made(self, offer: Offer, now: float) -> None:
        offer.created = now
        if self.options.offer_timeout is not None:
            self.offer_expiry.append((now, offer.offer_id))

    def _expire_offers(self, now: float) -> None:
        """Rescinds offers older than ``offer_timeout`` (from `tick`). Offers are queued in
        creation order, so only the expired head of the queue is looked at."""
        timeout = self.options.offer_timeout
        queue = self.offer_expiry
        if timeout is None:
            queue.clear()
            return
        while queue and queue[0][0] + timeout <= now:
            _, offer_id = queue.popleft()
            offer = self.offers.get(offer_id)
            if offer is not None:
                log.info("Offer %s timed out after %.3gs: rescinding", offer_id, timeout)
                self._rescind(offer, now)
                self._count("offers_timed_out")

    def _constraints_allow(self, fw: Framework, agent: Agent, role: str) -> bool:
        constraints = fw.offer_constraints
        if constraints is None:
            return True
        return constraints.allows(role, agent.hostname, agent.attributes, agent.info.domain)

    def _rescind_unconstrained(self, fw: Framework, now: float) -> None:
        """After UPDATE_FRAMEWORK changed the constraints: offers they now exclude go back."""
        for offer_id in list(fw.offers):
            offer = self.offers.get(offer_id)
            agent = self.agents.get(offer.agent_id) if offer is not None else None
            if offer is not None and agent is not None:
                if not self._constraints_allow(fw, agent, offer.role):
                    self._rescind(offer, now)

    # -- registry garbage collection ----------------------------------------------------------

    def _maybe_registry_gc(self, now: float) -> None:
        interval = self.options.registry_gc_interval
        if self.next_registry_gc is None:
            self.next_registry_gc = now + interval
            return
        if now < self.next_registry_gc:
            return
        self.next_registry_gc = now + interval
        self._registry_gc(now)

    def _registry_gc(self, now: float) -> None:
        """Prunes the unreachable and gone lists by age, then by count."""
        age, count = self.options.registry_max_agent_age, self.options.registry_max_agent_count
        unreachable = _pruned(self.unreachable_agents, now, age, count)
        gone = _pruned(self.gone_agents, now, age, count)
        if not unreachable and not gone:
            return
        self._registry_write(PruneAgents(tuple(unreachable), tuple(gone)))
        for agent_id in unreachable:
            del self.unreachable_agents[agent_id]
            self.away_deactivations.pop(agent_id, None)
        for agent_id in gone:
            del self.gone_agents[agent_id]
        self._count("registry_agents_pruned", len(unreachable) + len(gone))
        log.info(
            "Registry GC: pruned %d unreachable and %d gone agent(s)", len(unreachable), len(gone)
        )


def _pruned(entries: dict[str, float], now: float, max_age: float, max_count: int) -> list[str]:
    """The agents to forget: older than ``max_age``, then the oldest beyond ``max_count``."""
    ordered = sorted(entries.items(), key=lambda item: (item[1], item[0]))
    out = [agent_id for agent_id, when in ordered if now - when >= max_age]
    excess = len(ordered) - len(out) - max_count
    if excess > 0:
        out.extend(agent_id for agent_id, _ in ordered[len(out) : len(out) + excess])
    return out
