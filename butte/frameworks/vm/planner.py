"""The VM scheduler's decisions, as a pure state machine (docs/vm.md).

It keeps the VM records (what the user asked for, and where each guest stands), answers the
REST API's requests, places pending guests on offers, and turns task updates into VM states.
Each method returns effects for the shell (`butte.frameworks.vm.server`) to carry out; the
planner does no I/O and reads no clock.

VM states: ``pending`` (wants to run, waiting for an offer) -> ``starting`` -> ``running``
-> ``shut off`` (the guest powered itself off), ``crashed`` (QEMU or the guest kernel died),
``stopped`` (stopped through the API), ``failed`` (could not be started). ``stopping`` and
``deleting`` while a kill is under way. An agent lost under a running guest puts it back to
``pending``: it is booted again elsewhere.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from butte.core import task_states as ts
from butte.core.resources import ResourceError, Resources
from butte.frameworks.offers import plain_resources

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
EXECUTOR_CPUS = 0.1
EXECUTOR_MEM = 64.0
MAX_CPUS = 64
MAX_MEM = 1 << 20
# Offers are refused this long when no VM waits for one.
IDLE_REFUSE_SECONDS = 30.0
_LIVE_STATES = ("starting", "running", "stopping", "deleting")
# Task ends that mean "the guest never got a fair try here": boot it again.
_RELAUNCH = frozenset({ts.LOST, ts.DROPPED, ts.GONE, ts.GONE_BY_OPERATOR, ts.UNREACHABLE})


class VmError(Exception):
    """A request the planner refuses: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class VmSpec:
    """What a VM is: its size and what it boots."""

    cpus: int
    mem: int
    kernel: str
    initrd: str | None = None
    disk: str | None = None
    cmdline: str = ""
    accel: str = "auto"


@dataclass
class Vm:
    """One VM: its spec, desired state, and where its guest (task) stands."""

    name: str
    spec: VmSpec
    desired: str = "running"  # running | stopped | deleted
    state: str = "pending"
    message: str = ""
    generation: int = 0
    task_id: str | None = None
    agent_id: str | None = None
    agent_address: str | None = None
    hostname: str | None = None
    executor_id: str | None = None
    accel: str | None = None

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = asdict(self.spec)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Vm:
        spec = VmSpec(**raw["spec"])
        return cls(**{**raw, "spec": spec})


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    """The records changed: write them down before answering."""


@dataclass(frozen=True)
class Launch:
    offer_ids: tuple[str, ...]
    task: dict[str, Any]


@dataclass(frozen=True)
class Decline:
    offer_ids: tuple[str, ...]
    refuse_seconds: float


@dataclass(frozen=True)
class Kill:
    task_id: str
    agent_id: str | None
    grace_seconds: float


@dataclass(frozen=True)
class Message:
    """A framework message to a guest's executor."""

    agent_id: str
    executor_id: str
    data: bytes


@dataclass(frozen=True)
class Revive:
    pass


@dataclass(frozen=True)
class Suppress:
    pass


@dataclass(frozen=True)
class Reconcile:
    tasks: tuple[tuple[str, str | None], ...]


Effect = Persist | Launch | Decline | Kill | Message | Revive | Suppress | Reconcile


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise VmError(400, f"'{key}' must be a number from {low:g} to {high:g}")
    return float(value)


def _uri(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise VmError(400, f"'{key}' must be a URI or absolute path")
    if not (value.startswith("/") or re.match(r"^(file|https?)://", value)):
        raise VmError(400, f"'{key}' must be an absolute path or a file://, http(s):// URI")
    return value


def spec_from_request(body: Any) -> tuple[str, VmSpec]:
    """Validates a create request; (name, spec) or VmError(400)."""
    if not isinstance(body, dict):
        raise VmError(400, "body must be a JSON object")
    allowed = {"name", "cpus", "mem", "kernel", "initrd", "disk", "cmdline", "accel"}
    unknown = set(body) - allowed
    if unknown:
        raise VmError(400, f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise VmError(400, "'name' must be 1-63 of a-z, 0-9 and '-', starting alphanumeric")
    cpus = _number(body, "cpus", 1, 1, MAX_CPUS)
    if cpus != int(cpus):
        raise VmError(400, "'cpus' must be a whole number (a guest has whole vCPUs)")
    mem = _number(body, "mem", 256, 32, MAX_MEM)
    cmdline = body.get("cmdline", "")
    if not isinstance(cmdline, str) or len(cmdline) > 4096 or "\n" in cmdline or "\0" in cmdline:
        raise VmError(400, "'cmdline' must be a one-line string")
    accel = body.get("accel", "auto")
    if accel not in ("auto", "kvm", "tcg"):
        raise VmError(400, "'accel' must be auto, kvm or tcg")
    spec = VmSpec(
        cpus=int(cpus),
        mem=int(mem),
        kernel=str(_uri(body, "kernel", required=True)),
        initrd=_uri(body, "initrd"),
        disk=_uri(body, "disk"),
        cmdline=cmdline,
        accel=accel,
    )
    return name, spec


@dataclass
class VmPlanner:
    """All VMs of one framework; see the module docstring."""

    vms: dict[str, Vm] = field(default_factory=dict)
    executor_argv: tuple[str, ...] = ("python3", "-m", "butte.frameworks.vm.executor")
    framework_id: str | None = None
    suppressed: bool = False

    # -- requests ---------------------------------------------------------------------------

    def get(self, name: str) -> Vm:
        vm = self.vms.get(name)
        if vm is None:
            raise VmError(404, f"no VM named {name!r}")
        return vm

    def create(self, body: Any) -> tuple[Vm, list[Effect]]:
        name, spec = spec_from_request(body)
        if name in self.vms:
            raise VmError(409, f"a VM named {name!r} exists already")
        vm = self.vms[name] = Vm(name, spec)
        return vm, [Persist(), *self._want_offers()]

    def start(self, name: str) -> tuple[Vm, list[Effect]]:
        vm = self.get(name)
        if vm.desired == "deleted":
            raise VmError(409, f"VM {name!r} is being deleted")
        if vm.state in _LIVE_STATES or vm.state == "pending":
            raise VmError(409, f"VM {name!r} is {vm.state} already")
        vm.desired = "running"
        vm.state = "pending"
        vm.message = ""
        return vm, [Persist(), *self._want_offers()]

    def stop(self, name: str, grace: float = 10.0) -> tuple[Vm, list[Effect]]:
        vm = self.get(name)
        if vm.desired == "deleted":
            raise VmError(409, f"VM {name!r} is being deleted")
        vm.desired = "stopped"
        effects: list[Effect] = [Persist()]
        if vm.task_id is not None and vm.state in ("starting", "running"):
            vm.state = "stopping"
            effects.append(Kill(vm.task_id, vm.agent_id, grace))
        elif vm.state == "pending":
            vm.state = "stopped"
        return vm, effects

    def restart(self, name: str) -> tuple[Vm, list[Effect]]:
        """Resets a running guest in place: the same task keeps running."""
        vm = self.get(name)
        if vm.state != "running" or vm.agent_id is None or vm.executor_id is None:
            raise VmError(409, f"VM {name!r} is {vm.state}: only a running VM can restart")
        data = json.dumps({"action": "restart"}).encode()
        return vm, [Message(vm.agent_id, vm.executor_id, data)]

    def delete(self, name: str) -> tuple[Vm, list[Effect]]:
        vm = self.get(name)
        vm.desired = "deleted"
        if vm.task_id is not None and vm.state in _LIVE_STATES:
            vm.state = "deleting"
            return vm, [Persist(), Kill(vm.task_id, vm.agent_id, 0.0)]
        del self.vms[name]
        return vm, [Persist()]

    # -- offers -----------------------------------------------------------------------------

    def _want_offers(self) -> list[Effect]:
        if self.suppressed:
            self.suppressed = False
            return [Revive()]
        return []

    def pending(self) -> list[Vm]:
        return [v for v in sorted(self.vms.values(), key=lambda v: v.name) if v.state == "pending"]

    def on_offers(self, offers: list[dict[str, Any]]) -> list[Effect]:
        """Places pending guests, one task per fitting offer; declines the rest."""
        effects: list[Effect] = []
        waiting = self.pending()
        unused = []
        for offer in offers:
            vm = next((v for v in waiting if self._fits(v, offer)), None)
            if vm is None:
                unused.append(offer["id"]["value"])
                continue
            waiting.remove(vm)
            effects.append(self._launch(vm, offer))
        if unused:
            effects.append(Decline(tuple(unused), 1.0 if waiting else IDLE_REFUSE_SECONDS))
        if not self.pending() and not self.suppressed:
            self.suppressed = True
            effects.append(Suppress())
        return effects

    @staticmethod
    def _need(vm: Vm) -> Resources:
        return Resources.scalars(cpus=vm.spec.cpus, mem=vm.spec.mem)

    def _fits(self, vm: Vm, offer: dict[str, Any]) -> bool:
        try:
            have = Resources.from_json(
                r for r in plain_resources(offer) if r.get("type", "SCALAR") == "SCALAR"
            )
        except ResourceError:
            return False
        extra = Resources.scalars(cpus=EXECUTOR_CPUS, mem=EXECUTOR_MEM)
        return have.unreserved().contains(self._need(vm) + extra)

    def _launch(self, vm: Vm, offer: dict[str, Any]) -> Launch:
        vm.generation += 1
        vm.task_id = f"vm-{vm.name}-{vm.generation}"
        vm.executor_id = f"vm-{vm.name}-{vm.generation}"
        vm.agent_id = offer["agent_id"]["value"]
        vm.hostname = offer.get("hostname")
        address = (offer.get("url") or {}).get("address") or {}
        host = address.get("ip") or address.get("hostname") or vm.hostname
        vm.agent_address = f"{host}:{address['port']}" if address.get("port") else None
        vm.state = "starting"
        vm.message = ""
        vm.accel = None
        uris = [self._uri(vm.spec.kernel, "kernel")]
        guest: dict[str, Any] = {
            "kernel": "kernel",
            "cmdline": vm.spec.cmdline,
            "accel": vm.spec.accel,
        }
        if vm.spec.initrd:
            uris.append(self._uri(vm.spec.initrd, "initrd"))
            guest["initrd"] = "initrd"
        if vm.spec.disk:
            disk_name = "disk.qcow2" if vm.spec.disk.endswith(".qcow2") else "disk.img"
            uris.append(self._uri(vm.spec.disk, disk_name))
            guest["disk"] = disk_name
        argv = list(self.executor_argv)
        task = {
            "name": vm.name,
            "task_id": {"value": vm.task_id},
            "agent_id": offer["agent_id"],
            "resources": self._need(vm).to_json("pre", allocation_role="*"),
            "data": base64.b64encode(json.dumps(guest).encode()).decode(),
            "executor": {
                "executor_id": {"value": vm.executor_id},
                "name": f"VM executor for {vm.name}",
                "command": {
                    "shell": False,
                    "value": argv[0],
                    "arguments": argv,
                    "uris": uris,
                },
                "resources": Resources.scalars(cpus=EXECUTOR_CPUS, mem=EXECUTOR_MEM).to_json(
                    "pre", allocation_role="*"
                ),
            },
        }
        return Launch((offer["id"]["value"],), task)

    @staticmethod
    def _uri(value: str, name: str) -> dict[str, Any]:
        return {"value": value, "extract": False, "output_file": name}

    # -- updates ----------------------------------------------------------------------------

    def _by_task(self, task_id: str) -> Vm | None:
        return next((v for v in self.vms.values() if v.task_id == task_id), None)

    def on_update(self, status: dict[str, Any]) -> list[Effect]:
        """A task update: the VM's new state (and a relaunch or removal where due)."""
        vm = self._by_task(status["task_id"]["value"])
        if vm is None:
            return []
        state = status["state"]
        message = status.get("message") or status.get("reason") or ""
        labels = (status.get("labels") or {}).get("labels") or []
        for label in labels:
            if label.get("key") == "accel":
                vm.accel = label.get("value")
        if not ts.is_terminal(state):
            if state == ts.RUNNING and vm.state == "starting":
                vm.state = "running"
            vm.message = message
            return [Persist()]
        return self._ended(vm, state, message, status.get("reason") or "")

    def _ended(self, vm: Vm, state: str, message: str, reason: str = "") -> list[Effect]:
        # A guest that never ran (its files could not be fetched, QEMU could not start) has
        # failed; one that ran and died has crashed.
        never_ran = reason == "REASON_CONTAINER_LAUNCH_FAILED" or vm.state != "running"
        vm.task_id = None
        vm.message = message
        if vm.desired == "deleted":
            del self.vms[vm.name]
            return [Persist()]
        if vm.desired == "stopped" or state == ts.KILLED:
            vm.state, vm.desired = "stopped", "stopped"
        elif state == ts.FINISHED:
            vm.state, vm.desired = "shut off", "stopped"
        elif state == ts.FAILED and not never_ran:
            vm.state, vm.desired = "crashed", "stopped"
        elif state in _RELAUNCH:
            vm.state = "pending"
            return [Persist(), *self._want_offers()]
        else:
            vm.state, vm.desired = "failed", "stopped"
        return [Persist()]

    def on_subscribed(self, framework_id: str) -> list[Effect]:
        """(Re)subscribed: ask where every guest we think is live stands."""
        self.framework_id = framework_id
        live = tuple((v.task_id, v.agent_id) for v in self.vms.values() if v.task_id is not None)
        effects: list[Effect] = [Persist()]
        if live:
            effects.append(Reconcile(live))
        if self.pending():
            self.suppressed = False
            effects.append(Revive())
        return effects

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "framework_id": self.framework_id,
            "vms": [v.view() for v in sorted(self.vms.values(), key=lambda v: v.name)],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.framework_id = snapshot.get("framework_id")
        self.vms = {raw["name"]: Vm.from_json(raw) for raw in snapshot.get("vms", [])}
