"""The master core's maintenance events (`MaintenanceEvents`, part of `MasterMachine`).

Operator changes to the schedule and machine modes (validated here, refused with a reason
and no change), the inverse offers sent to frameworks that use agents on DRAINING machines,
their answers (ACCEPT_INVERSE_OFFERS / DECLINE_INVERSE_OFFERS) and rescinds, and the
maintenance status report. The data lives in `butte.master.maintenance`; docs/maintenance.md
describes the behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from butte.coord.interface import RegistryState, UpdateMaintenance
from butte.master import views
from butte.master.core import MasterCore
from butte.master.maintenance import (
    ACCEPT,
    DECLINE,
    DRAINING,
    UNKNOWN,
    InverseOffer,
    MachineKey,
    MaintenanceError,
    Window,
    machine_json,
    parse_machines,
    parse_schedule,
)
from butte.master.state import Agent, Framework

log = logging.getLogger(__name__)


class MaintenanceEvents(MasterCore):
    """Maintenance handlers; see the module docstring."""

    __slots__ = ()

    # -- operator ----------------------------------------------------------------------------

    def _update_maintenance_schedule(self, raw: object, now: float) -> str | None:
        """UPDATE_MAINTENANCE_SCHEDULE / ``POST /maintenance/schedule``: the new schedule
        replaces the old one (machines in it become DRAINING, machines left out UP), or the
        reason it is refused."""
        try:
            windows = parse_schedule(raw)
            self.maintenance.check_schedule(windows)
        except MaintenanceError as e:
            return str(e)
        m = self.maintenance
        before = {key: m.window_of(key) for w in m.windows for key in w.machines}
        offered_before = {a.agent_id: self._machine_of(a) for a in self.agents.values() if a.offers}
        m.set_windows(windows)
        changed = {
            key
            for key, window in before.items()
            if _unavailability(m.window_of(key)) != _unavailability(window)
        }
        self._persist_maintenance()
        for key in changed:
            m.responses.pop(key, None)
        self._rescind_inverse_offers(lambda io: io.machine in changed, now)
        # Offers outstanding on changed machines carry a stale unavailability: take them back
        # so that the next offers tell the truth.
        for agent in list(self.agents.values()):
            if not agent.offers:
                continue
            current = self._machine_of(agent)
            if _unavailability(m.window_of(current) if current else None) != _unavailability(
                before.get(offered_before.get(agent.agent_id) or ("", ""))
            ):
                self._rescind_agent_offers(agent, now)
        self.allocation_wanted = True
        log.info("Maintenance schedule updated: %d window(s)", len(windows))
        return None

    def _start_maintenance(self, raw: object, now: float) -> list[Agent] | str:
        """START_MAINTENANCE / ``POST /machine/down``: DRAINING machines become DOWN. Returns
        the registered agents on them (the machine removes them) or why it is refused."""
        try:
            machines = parse_machines(raw)
            self.maintenance.check_start(machines)
        except MaintenanceError as e:
            return str(e)
        m = self.maintenance
        m.down.update(machines)
        m.set_windows(m.windows)
        self._persist_maintenance()
        for key in machines:
            m.responses.pop(key, None)
        down = set(machines)
        self._rescind_inverse_offers(lambda io: io.machine in down, now)
        log.info("Machines down for maintenance: %d", len(machines))
        return [a for a in self.agents.values() if self._machine_of(a) in down]

    def _stop_maintenance(self, raw: object, now: float) -> str | None:
        """STOP_MAINTENANCE / ``POST /machine/up``: DOWN machines become UP and leave the
        schedule (windows left empty are dropped), or why it is refused."""
        try:
            machines = parse_machines(raw)
            self.maintenance.check_stop(machines)
        except MaintenanceError as e:
            return str(e)
        m = self.maintenance
        up = set(machines)
        m.down -= up
        windows = []
        for window in m.windows:
            kept = tuple(k for k in window.machines if k not in up)
            if kept:
                windows.append(window if len(kept) == len(window.machines) else _with(window, kept))
        m.set_windows(windows)
        self._persist_maintenance()
        for key in machines:
            m.responses.pop(key, None)
        log.info("Machines up after maintenance: %d", len(machines))
        return None

    def _persist_maintenance(self) -> None:
        self._registry_write(UpdateMaintenance(self.maintenance.to_registry()))

    def _recover_maintenance(self, registry: RegistryState) -> None:
        """A new leader takes over the schedule and machine modes the registry holds."""
        try:
            self.maintenance.load_registry(registry.maintenance)
        except MaintenanceError as e:  # written by us, so this is corruption
            log.error("Ignoring the registry's unreadable maintenance state: %s", e)

    def maintenance_status(self, now: float) -> dict[str, Any]:
        """Mesos' maintenance ClusterStatus: DRAINING machines with each framework's answer
        to its inverse offers, and the DOWN machines."""
        m = self.maintenance
        draining = []
        for window in m.windows:
            for key in window.machines:
                if key in m.down:
                    continue
                statuses = [
                    {
                        "status": status,
                        "framework_id": views.value(fid),
                        "timestamp": {"nanoseconds": int(when * 1e9)},
                    }
                    for fid, (status, when) in sorted(m.responses.get(key, {}).items())
                ]
                entry: dict[str, Any] = {"id": machine_json(key)}
                if statuses:
                    entry["statuses"] = statuses
                draining.append(entry)
        return {
            "draining_machines": draining,
            "down_machines": [machine_json(k) for k in sorted(m.down)],
        }

    # -- agents and offers -------------------------------------------------------------------

    def _machine_of(self, agent: Agent) -> MachineKey | None:
        return self.maintenance.machine_of(agent.hostname, agent.ip)

    def _unavailability_of(self, agent: Agent) -> dict[str, Any] | None:
        """The ``unavailability`` an offer of this agent carries (its machine is DRAINING)."""
        if self.maintenance.empty:
            return None
        key = self._machine_of(agent)
        window = self.maintenance.window_of(key) if key is not None else None
        return window.unavailability_json() if window is not None else None

    def _rescind_agent_offers(self, agent: Agent, now: float) -> None:
        for offer_id in list(agent.offers):
            offer = self.offers.get(offer_id)
            if offer is not None:
                self._rescind(offer, now)

    # -- inverse offers ----------------------------------------------------------------------

    def _send_inverse_offers(self, now: float) -> None:
        """After each allocation: drop inverse offers that lost their point, and send one to
        every connected framework using an agent on a DRAINING machine that has none
        outstanding for it (and has not answered one within its filter's refuse time)."""
        m = self.maintenance
        if m.inverse_offers:
            self._rescind_inverse_offers(lambda io: not self._inverse_offer_valid(io), now)
        if not m.windows:
            return
        batches: dict[str, list[dict[str, Any]]] = {}
        for agent in self.agents.values():
            key = self._machine_of(agent)
            if key is None or m.mode(key) != DRAINING or not agent.connected:
                continue
            window = m.window_of(key)
            assert window is not None
            for fid in sorted(_users_of(agent)):
                fw = self.frameworks.get(fid)
                pair = (fid, agent.agent_id)
                if fw is None or not fw.connected or pair in m.outstanding:
                    continue
                if m.refused_until.get(pair, 0.0) > now:
                    continue
                io = InverseOffer(self.ids.offer(), fid, agent.agent_id, key, window)
                m.inverse_offers[io.inverse_offer_id] = io
                m.outstanding[pair] = io.inverse_offer_id
                m.responses.setdefault(key, {}).setdefault(fid, (UNKNOWN, now))
                batches.setdefault(fid, []).append(_inverse_offer_json(io, agent))
        for fid, inverse_offers in batches.items():
            self._send_framework(
                self.frameworks[fid],
                {"type": "INVERSE_OFFERS", "inverse_offers": {"inverse_offers": inverse_offers}},
            )
            self._count("inverse_offers_made", len(inverse_offers))

    def _inverse_offer_valid(self, io: InverseOffer) -> bool:
        fw = self.frameworks.get(io.framework_id)
        agent = self.agents.get(io.agent_id)
        return (
            fw is not None
            and fw.connected
            and agent is not None
            and self.maintenance.mode(io.machine) == DRAINING
            and self.maintenance.window_of(io.machine) == io.window
        )

    def _rescind_inverse_offers(self, which: Callable[[InverseOffer], bool], now: float) -> None:
        """Withdraws the inverse offers ``which(io)`` selects: RESCIND_INVERSE_OFFER to
        frameworks still connected, silently for the others."""
        m = self.maintenance
        for io in [io for io in m.inverse_offers.values() if which(io)]:
            self._drop_inverse_offer(io)
            fw = self.frameworks.get(io.framework_id)
            if fw is not None and fw.connected:
                self._send_framework(
                    fw,
                    {
                        "type": "RESCIND_INVERSE_OFFER",
                        "rescind_inverse_offer": {
                            "inverse_offer_id": views.value(io.inverse_offer_id)
                        },
                    },
                )

    def _drop_inverse_offer(self, io: InverseOffer) -> None:
        m = self.maintenance
        m.inverse_offers.pop(io.inverse_offer_id, None)
        pair = (io.framework_id, io.agent_id)
        if m.outstanding.get(pair) == io.inverse_offer_id:
            del m.outstanding[pair]

    def _answer_inverse_offers(
        self, fw: Framework, payload: Mapping[str, Any] | None, accept: bool, now: float
    ) -> str | None:
        """ACCEPT_INVERSE_OFFERS / DECLINE_INVERSE_OFFERS: records the framework's answer for
        each of its outstanding inverse offers named (ids no longer outstanding are skipped,
        as a rescind may have crossed the call) and holds back new inverse offers for the
        agent for the filter's ``refuse_seconds``. Returns why the payload is malformed."""
        key = "accept_inverse_offers" if accept else "decline_inverse_offers"
        if not isinstance(payload, Mapping):
            return f"Expecting '{key}' to be present"
        ids = payload.get("inverse_offer_ids")
        if not isinstance(ids, list) or not all(
            isinstance(i, Mapping) and isinstance(i.get("value"), str) for i in ids
        ):
            return f"'{key}.inverse_offer_ids' must be a list of {{\"value\": ...}} objects"
        filters = payload.get("filters", {})
        refuse = filters.get("refuse_seconds", 5.0) if isinstance(filters, Mapping) else None
        if isinstance(refuse, bool) or not isinstance(refuse, int | float):
            return f"'{key}.filters.refuse_seconds' must be a number"
        refuse_for = self._refuse_seconds(_Refuse(float(refuse)))
        m = self.maintenance
        for raw in ids:
            io = m.inverse_offers.get(raw["value"])
            if io is None or io.framework_id != fw.framework_id:
                continue
            self._drop_inverse_offer(io)
            m.responses.setdefault(io.machine, {})[fw.framework_id] = (
                ACCEPT if accept else DECLINE,
                now,
            )
            m.refused_until[(fw.framework_id, io.agent_id)] = now + refuse_for
        self._prune_refusals(now)
        return None

    def _prune_refusals(self, now: float) -> None:
        m = self.maintenance
        if len(m.refused_until) > 1024:
            m.refused_until = {p: t for p, t in m.refused_until.items() if t > now}

    def machine_modes(self) -> dict[str, str]:
        """Agent id -> mode of its machine, for agents on scheduled or DOWN machines."""
        out = {}
        for agent in self.agents.values():
            key = self._machine_of(agent)
            if key is not None:
                out[agent.agent_id] = self.maintenance.mode(key)
        return out


class _Refuse:
    """A filters value for `MasterCore._refuse_seconds`."""

    __slots__ = ("refuse_seconds",)

    def __init__(self, refuse_seconds: float) -> None:
        self.refuse_seconds = refuse_seconds


def _unavailability(window: Window | None) -> tuple[int, int | None] | None:
    return (window.start_ns, window.duration_ns) if window is not None else None


def _with(window: Window, machines: tuple[MachineKey, ...]) -> Window:
    return Window(machines, window.start_ns, window.duration_ns)


def _users_of(agent: Agent) -> set[str]:
    """Frameworks with tasks or executors on the agent (those an inverse offer asks)."""
    users = {fid for fid, _ in agent.tasks}
    users.update(fid for fid, _ in agent.executors)
    return users


def _inverse_offer_json(io: InverseOffer, agent: Agent) -> dict[str, Any]:
    return {
        "id": views.value(io.inverse_offer_id),
        "framework_id": views.value(io.framework_id),
        "agent_id": views.value(io.agent_id),
        "url": {
            "scheme": "http",
            "address": {
                "hostname": agent.hostname,
                "ip": agent.ip or agent.hostname,
                "port": agent.port,
            },
            "path": "/slave(1)",
        },
        "unavailability": io.window.unavailability_json(),
        "resources": [],
    }
