"""Maintenance primitives as plain data: the schedule, machine modes and inverse offers.

Operators plan maintenance in a *schedule*: a list of *windows*, each a set of machines and
an *unavailability* (start and optional duration, in nanoseconds since the epoch). A machine
is named by a MachineID (``hostname`` and/or ``ip``) and is in one of three modes:

    UP        not in the schedule
    DRAINING  in the schedule: its agents' offers carry the window's unavailability, and
              frameworks using them get inverse offers asking for the resources back
    DOWN      taken down by START_MAINTENANCE (``/machine/down``): its agents are removed
              and refused until STOP_MAINTENANCE (``/machine/up``) brings it UP again

An agent runs on a machine when every field the MachineID sets matches it: the hostname
(compared lowercased, as Mesos lowercases it) and the IP. Everything here is pure: parsing
and validation answer an error message (the HTTP shell turns it into a 400) and change
nothing; the master core (`butte.master.maintenance_events`) applies what validated.
docs/maintenance.md describes the whole feature.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

UP = "UP"
DRAINING = "DRAINING"
DOWN = "DOWN"

# Inverse offer answers, as Mesos' InverseOfferStatus spells them.
UNKNOWN = "UNKNOWN"
ACCEPT = "ACCEPT"
DECLINE = "DECLINE"

INT64_MAX = 2**63 - 1
MAX_WINDOWS = 10_000
MAX_MACHINES = 100_000

# (hostname lowercased or "", ip or ""): at least one is set.
MachineKey = tuple[str, str]


class MaintenanceError(ValueError):
    """Bad input; the message is fit for a 400 answer."""


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window: machines and when they become unavailable."""

    machines: tuple[MachineKey, ...]
    start_ns: int
    duration_ns: int | None = None

    def unavailability_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": {"nanoseconds": self.start_ns}}
        if self.duration_ns is not None:
            out["duration"] = {"nanoseconds": self.duration_ns}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "machine_ids": [machine_json(m) for m in self.machines],
            "unavailability": self.unavailability_json(),
        }


@dataclass(slots=True)
class InverseOffer:
    """An outstanding request to a framework to give back an agent's resources."""

    inverse_offer_id: str
    framework_id: str
    agent_id: str
    machine: MachineKey
    window: Window


def machine_json(key: MachineKey) -> dict[str, str]:
    hostname, ip = key
    out: dict[str, str] = {}
    if hostname:
        out["hostname"] = hostname
    if ip:
        out["ip"] = ip
    return out


def machine_text(key: MachineKey) -> str:
    hostname, ip = key
    if hostname and ip:
        return f"{hostname} ({ip})"
    return hostname or ip


# -- parsing -------------------------------------------------------------------------------------


def parse_machine(raw: object) -> MachineKey:
    """A MachineID JSON object; raises MaintenanceError."""
    if not isinstance(raw, Mapping):
        raise MaintenanceError("A MachineID must be a JSON object with 'hostname' and/or 'ip'")
    unknown = set(raw) - {"hostname", "ip"}
    if unknown:
        raise MaintenanceError(f"Unknown MachineID field(s): {', '.join(sorted(unknown))[:200]}")
    hostname, ip = raw.get("hostname", ""), raw.get("ip", "")
    if not isinstance(hostname, str) or not isinstance(ip, str):
        raise MaintenanceError("MachineID 'hostname' and 'ip' must be strings")
    if not hostname and not ip:
        raise MaintenanceError("Both 'hostname' and 'ip' for a machine are empty")
    if len(hostname) > 255:
        raise MaintenanceError("MachineID 'hostname' is longer than 255 characters")
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise MaintenanceError(f"Invalid IP address '{ip[:64]}' in a MachineID") from None
    return hostname.lower(), ip


def parse_machines(raw: object) -> list[MachineKey]:
    """A list of MachineIDs (``/machine/down`` body, START/STOP_MAINTENANCE ``machines``):
    non-empty, no duplicates. Raises MaintenanceError."""
    if not isinstance(raw, list):
        raise MaintenanceError("Expecting a JSON array of MachineIDs")
    if not raw:
        raise MaintenanceError("List of machines is empty")
    if len(raw) > MAX_MACHINES:
        raise MaintenanceError(f"More than {MAX_MACHINES} machines")
    keys = [parse_machine(m) for m in raw]
    seen: set[MachineKey] = set()
    for key in keys:
        if key in seen:
            raise MaintenanceError(f"Machine '{machine_text(key)}' appears more than once")
        seen.add(key)
    return keys


def _nanoseconds(raw: object, what: str, required: bool) -> int | None:
    if raw is None:
        if required:
            raise MaintenanceError(f"Missing '{what}' in the unavailability")
        return None
    if not isinstance(raw, Mapping) or "nanoseconds" not in raw:
        raise MaintenanceError(f"'{what}' must be an object with 'nanoseconds'")
    ns = raw["nanoseconds"]
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise MaintenanceError(f"'{what}.nanoseconds' must be an integer")
    if not -INT64_MAX - 1 <= ns <= INT64_MAX:
        raise MaintenanceError(f"'{what}.nanoseconds' is out of range")
    return int(ns)


def parse_schedule(raw: object) -> list[Window]:
    """A Schedule JSON object (``{"windows": [...]}``; no windows clears the schedule).
    Validated as Mesos does: every window names at least one machine, a machine is in at
    most one window, start and (non-negative) duration are integer nanoseconds."""
    if not isinstance(raw, Mapping):
        raise MaintenanceError("A maintenance schedule must be a JSON object")
    unknown = set(raw) - {"windows"}
    if unknown:
        raise MaintenanceError(f"Unknown schedule field(s): {', '.join(sorted(unknown))[:200]}")
    windows_raw = raw.get("windows", [])
    if not isinstance(windows_raw, list):
        raise MaintenanceError("'windows' must be a JSON array")
    if len(windows_raw) > MAX_WINDOWS:
        raise MaintenanceError(f"More than {MAX_WINDOWS} maintenance windows")
    windows: list[Window] = []
    seen: set[MachineKey] = set()
    for window in windows_raw:
        if not isinstance(window, Mapping):
            raise MaintenanceError("A maintenance window must be a JSON object")
        machines_raw = window.get("machine_ids")
        if not isinstance(machines_raw, list) or not machines_raw:
            raise MaintenanceError("List of machines in the maintenance window is empty")
        machines = tuple(parse_machine(m) for m in machines_raw)
        for key in machines:
            if key in seen:
                raise MaintenanceError(
                    f"Machine '{machine_text(key)}' appears more than once in the schedule"
                )
            seen.add(key)
        unavailability = window.get("unavailability")
        if not isinstance(unavailability, Mapping):
            raise MaintenanceError("A maintenance window needs an 'unavailability'")
        start = _nanoseconds(unavailability.get("start"), "start", required=True)
        duration = _nanoseconds(unavailability.get("duration"), "duration", required=False)
        if duration is not None and duration < 0:
            raise MaintenanceError("Unavailability 'duration' is negative")
        assert start is not None
        windows.append(Window(machines, start, duration))
    return windows


# -- the state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Maintenance:
    """The schedule, the machines that are DOWN, and the inverse offers outstanding and
    answered. Owned by the master core; only the schedule and DOWN set are durable."""

    windows: list[Window] = field(default_factory=list)
    down: set[MachineKey] = field(default_factory=set)
    inverse_offers: dict[str, InverseOffer] = field(default_factory=dict)
    # (framework id, agent id) -> inverse offer id outstanding for it
    outstanding: dict[tuple[str, str], str] = field(default_factory=dict)
    # machine -> framework id -> (UNKNOWN / ACCEPT / DECLINE, time in seconds)
    responses: dict[MachineKey, dict[str, tuple[str, float]]] = field(default_factory=dict)
    # (framework id, agent id) -> no new inverse offer before this time (answer's filters)
    refused_until: dict[tuple[str, str], float] = field(default_factory=dict)
    # indexes of the scheduled machines
    _window_of: dict[MachineKey, Window] = field(default_factory=dict)
    _by_hostname: dict[str, list[MachineKey]] = field(default_factory=dict)
    _by_ip: dict[str, list[MachineKey]] = field(default_factory=dict)

    def set_windows(self, windows: list[Window]) -> None:
        self.windows = windows
        self._window_of = {m: w for w in windows for m in w.machines}
        self._by_hostname, self._by_ip = {}, {}
        for key in self._window_of.keys() | self.down:
            self._index(key)

    def _index(self, key: MachineKey) -> None:
        hostname, ip = key
        if hostname:
            self._by_hostname.setdefault(hostname, []).append(key)
        elif ip:
            self._by_ip.setdefault(ip, []).append(key)

    @property
    def empty(self) -> bool:
        return not self.windows and not self.down

    def window_of(self, key: MachineKey) -> Window | None:
        return self._window_of.get(key)

    def mode(self, key: MachineKey) -> str:
        if key in self.down:
            return DOWN
        return DRAINING if key in self._window_of else UP

    def machine_of(self, hostname: str, ip: str) -> MachineKey | None:
        """The scheduled or DOWN machine an agent at ``hostname``/``ip`` runs on, if any."""
        if self.empty:
            return None
        for key in self._by_hostname.get(hostname.lower(), ()):
            if not key[1] or key[1] == ip:
                return key
        for key in self._by_ip.get(ip, ()):
            return key
        return None

    def refusal(self, hostname: str, ip: str) -> str | None:
        """Why an agent at ``hostname``/``ip`` may not register now (its machine is DOWN)."""
        key = self.machine_of(hostname, ip)
        if key is not None and key in self.down:
            return (
                f"Refusing registration of agent at {hostname}: "
                f"its machine '{machine_text(key)}' is DOWN for maintenance"
            )
        return None

    # -- validation of changes (nothing changes here) -------------------------------------------

    def check_schedule(self, windows: list[Window]) -> None:
        """A machine that is DOWN must stay in the schedule (Mesos refuses to drop it)."""
        scheduled = {m for w in windows for m in w.machines}
        for key in sorted(self.down - scheduled):
            raise MaintenanceError(
                f"Machine '{machine_text(key)}' is DOWN and cannot be removed from the schedule"
            )

    def check_start(self, machines: Iterable[MachineKey]) -> None:
        for key in machines:
            if self.mode(key) != DRAINING:
                raise MaintenanceError(
                    f"Machine '{machine_text(key)}' is not in DRAINING mode and cannot be "
                    "brought down (it must be in the schedule first)"
                )

    def check_stop(self, machines: Iterable[MachineKey]) -> None:
        for key in machines:
            if key not in self.down:
                raise MaintenanceError(
                    f"Machine '{machine_text(key)}' is not in DOWN mode and cannot be brought up"
                )

    # -- durable form ----------------------------------------------------------------------------

    def schedule_json(self) -> dict[str, Any]:
        return {"windows": [w.to_json() for w in self.windows]}

    def to_registry(self) -> dict[str, Any]:
        """What the registry keeps: the schedule and the machines that are DOWN."""
        return {
            "schedule": self.schedule_json(),
            "down_machines": [machine_json(m) for m in sorted(self.down)],
        }

    def load_registry(self, raw: Mapping[str, Any]) -> None:
        """Restores `to_registry`'s output (a new leader's registry recovery)."""
        if not raw:
            return
        self.down = {parse_machine(m) for m in raw.get("down_machines", [])}
        self.set_windows(parse_schedule(raw.get("schedule", {})))
