"""Marathon pods: the pure state machine that runs them beside the app `Planner`
(docs/marathon.md "Pods").

A pod instance is one task group launched with LAUNCH_GROUP under the DEFAULT executor on
one agent. `PodManager` holds the pods (definitions and their versions), their instances
and their deployments, and is fed as the planner is: API changes (`create`, `update`,
`delete`, `kill_instances`), scheduler events (`subscribed`, `offers`, `status`) and `tick`.
Its decisions come out as effects in ``outbox`` and the records it changed in ``dirty``; the
shell (main.py) stores those before it carries the effects out, as it does the planner's.

Strategy: a pod keeps ``scaling.instances`` instances of its current definition. An
instance whose task ends (any member) is killed whole and replaced, after the pod's
backoff. A definition change (anything but the instance count and the upgrade strategy)
replaces the instances rolling, within the pod's ``scheduling.upgrade`` as an app's
``upgradeStrategy`` (`planner.upgrade_bounds`). An instance reported unreachable is
replaced and forgotten as ``scheduling.unreachableStrategy`` says (as an app's instance is).
A deployment ends once the pod runs exactly its
target (every member of every instance TASK_RUNNING, healthy where it has a check), or,
for a deletion, once no instance is left.

A pod with persistent volumes is resident, as an app with them is (docs/marathon.md
"Stateful apps"): an instance reserves its resources and creates its volumes on one agent
(the reservations are the planner's `resident.Reservations`, shared), its executor holds the
volumes, and each of its launches is on exactly that reservation.
"""

from __future__ import annotations

import copy
import functools
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from butte.frameworks.marathon import resident
from butte.frameworks.marathon.appdef import (
    DEFAULT_UNREACHABLE,
    DEFAULT_UPGRADE,
    Invalid,
    unreachable_after,
)
from butte.frameworks.marathon.constraints import balanced_kills, first_violation
from butte.frameworks.marathon.launch import Pool
from butte.frameworks.marathon.model import (
    FAILURE_STATES,
    TERMINAL_STATES,
    Effect,
    Kill,
    LaunchGroup,
    Publish,
    Reconcile,
    Reservation,
    condition_of,
    instance_changed_event,
    iso,
    iso_ms,
    safe_id,
    status_update_event,
)
from butte.frameworks.marathon.planner import (
    KILL_RETRY_SECONDS,
    ApiError,
    rolling_kills,
    upgrade_bounds,
)
from butte.frameworks.marathon.pods_def import (
    build_task_group,
    config_of,
    constraint_list,
    endpoints_of,
    persistent_volumes,
    resident_update_problems,
)
from butte.frameworks.offers import attributes_of

POD_KINDS = ("pod", "podver", "podinstance", "poddeployment")
_LAUNCHING = frozenset({"TASK_STAGING", "TASK_STARTING"})
# Marathon's order of an instance's conditions: the first its tasks have is the instance's
# (one failed member makes it Failed; one member still starting makes it Starting).
_CONDITION_ORDER = (
    "Error", "Failed", "Gone", "Dropped", "Unreachable", "Killing", "Starting", "Staging",
    "Unknown", "Created", "Running", "Finished", "Killed",
)  # fmt: skip
# Host ports of dynamic endpoints are picked at random from the offer, as for apps.
_RNG = random.Random()


@dataclass
class PodInstance:
    """One instance of a pod: its task group on one agent. ``tasks``: container name ->
    {task_id, state, since, message, healthy}."""

    instance_id: str
    pod_id: str
    version: str
    agent_id: str
    host: str
    staged_at: float
    tasks: dict[str, dict[str, Any]]
    ports: dict[str, int] = field(default_factory=dict)
    killing: bool = False
    kill_sent_at: float | None = None
    failed: bool = False  # a member ended: the whole instance is killed and replaced
    unreachable_since: float | None = None  # a member TASK_UNREACHABLE since (agent away)
    ip: str | None = None  # the agent's, as its TASK_RUNNING updates say
    attributes: dict[str, str] = field(default_factory=dict)  # its agent's (constraints)
    reservation: str | None = None  # a resident pod's: the instance's reservation (its id)

    def record(self) -> dict[str, Any]:
        return copy.deepcopy(vars(self))

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> PodInstance:
        return cls(**data)

    @property
    def active(self) -> bool:
        return not self.killing and not self.failed

    def condition(self) -> str:
        """Marathon's condition of the whole instance, as ``instance_changed_event`` says."""
        conditions = (condition_of(t["state"]) for t in self.tasks.values())
        return min(conditions, key=_CONDITION_ORDER.index)

    def status(self, pod: Mapping[str, Any] | None) -> str:
        """Marathon's ``PodInstanceState``: PENDING, STAGING, STABLE, DEGRADED, TERMINAL."""
        states = [t["state"] for t in self.tasks.values()]
        if all(s in TERMINAL_STATES for s in states):
            return "TERMINAL"
        if self.killing or self.failed:
            return "DEGRADED"
        if all(s == "TASK_RUNNING" for s in states):
            checked = {c["name"] for c in (pod or {}).get("containers", ()) if "healthCheck" in c}
            if all(self.tasks[n].get("healthy") is True for n in checked if n in self.tasks):
                return "STABLE"
            return "DEGRADED"
        if any(s == "TASK_RUNNING" for s in states):
            return "DEGRADED"
        return "STAGING"


def _placement(inst: PodInstance) -> tuple[str, Mapping[str, str]]:
    return inst.host, inst.attributes


def _stable(pod: Mapping[str, Any], inst: PodInstance) -> bool:
    return inst.status(pod) == "STABLE"


def _kill_order(pod: Mapping[str, Any], chosen: list[PodInstance]) -> list[PodInstance]:
    """Which instances go first: those not yet stable, then by the pod's killSelection."""
    youngest = pod["scheduling"]["killSelection"] == "YOUNGEST_FIRST"
    return sorted(
        chosen, key=lambda i: (_stable(pod, i), -i.staged_at if youngest else i.staged_at)
    )


@dataclass
class PodDeployment:
    """A change to one pod: ``action`` StartPod, ScalePod, RestartPod or StopPod."""

    id: str
    version: str
    pod_id: str
    action: str

    def record(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> PodDeployment:
        return cls(**data)

    def json(self) -> dict[str, Any]:
        action = {"action": self.action, "pod": self.pod_id}
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": [],
            "affectedPods": [self.pod_id],
            "steps": [{"actions": [action]}],
            "currentActions": [{**action, "readinessCheckResults": []}],
            "currentStep": 1,
            "totalSteps": 1,
        }


class PodManager:
    """See the module docstring."""

    def __init__(
        self,
        role: str = "*",
        task_launch_timeout: float = 300.0,
        reservations: resident.Reservations | None = None,
    ) -> None:
        self.role = role
        # resident pods' instances: the planner's registry (shared with resident apps; the
        # planner's take_dirty hands its changed records to the store)
        self.reservations = reservations if reservations is not None else resident.Reservations()
        # Seconds an instance may take to run every member (--task_launch_timeout).
        self.task_launch_timeout = task_launch_timeout
        self.framework_id: str | None = None
        self.pods: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, dict[str, Any]]] = {}
        self.instances: dict[str, PodInstance] = {}
        self.by_task: dict[str, str] = {}  # task id -> instance id
        self.deployments: dict[str, PodDeployment] = {}
        self.wanted: dict[str, int] = {}
        self.stopping: set[str] = set()  # deleted pods whose instances still run
        self.delay: dict[str, tuple[float, float]] = {}  # pod -> (delay, until): backoff
        self.outbox: list[Effect] = []
        self.dirty: set[tuple[str, str]] = set()
        self._last_ms = 0

    # -- records ---------------------------------------------------------------------------

    def restore(self, records: Iterable[tuple[str, str, Any]]) -> None:
        """Loads the pod records among the stored ones (the planner takes the rest)."""
        for kind, key, value in records:
            if kind == "meta" and key == "framework_id":
                self.framework_id = value
            elif kind == "pod":
                self.pods[key] = value
            elif kind == "podver":
                pod_id, version = key.rsplit(" ", 1)
                self.versions.setdefault(pod_id, {})[version] = value
            elif kind == "podinstance":
                self._add_instance(PodInstance.from_record(value))
            elif kind == "poddeployment":
                d = PodDeployment.from_record(value)
                self.deployments[d.id] = d
                if d.action == "StopPod":
                    self.stopping.add(d.pod_id)
        for inst in self.instances.values():
            if inst.pod_id not in self.pods:
                self.stopping.add(inst.pod_id)

    def take_dirty(self) -> list[tuple[str, str, Any]]:
        """The changed records (value None: deleted), clearing the set."""
        out: list[tuple[str, str, Any]] = []
        for kind, key in sorted(self.dirty):
            value: Any
            if kind == "pod":
                value = self.pods.get(key)
            elif kind == "podver":
                pod_id, version = key.rsplit(" ", 1)
                value = self.versions.get(pod_id, {}).get(version)
            elif kind == "podinstance":
                inst = self.instances.get(key)
                value = inst.record() if inst else None
            else:
                d = self.deployments.get(key)
                value = d.record() if d else None
            out.append((kind, key, value))
        self.dirty.clear()
        return out

    def take_effects(self) -> list[Effect]:
        out, self.outbox = self.outbox, []
        return out

    def api_event(self, kind: str, client_ip: str, uri: str, now: float) -> None:
        """Marathon's PodEvent for a request that changed a pod: ``kind`` is ``created``,
        ``updated`` or ``deleted``; ``uri`` the request's path as sent."""
        self.outbox.append(Publish.of(f"pod_{kind}_event", now, clientIp=client_ip, uri=uri))

    def _add_instance(self, inst: PodInstance) -> None:
        self.instances[inst.instance_id] = inst
        for t in inst.tasks.values():
            self.by_task[t["task_id"]] = inst.instance_id

    def _remove_instance(self, inst: PodInstance) -> None:
        # its reservation is free for the instance's next launch
        self.reservations.ended(self.reservations.get(inst.reservation), inst.instance_id)
        self.instances.pop(inst.instance_id, None)
        for t in inst.tasks.values():
            self.by_task.pop(t["task_id"], None)
        self.dirty.add(("podinstance", inst.instance_id))

    def pod_instances(self, pod_id: str) -> list[PodInstance]:
        return [i for i in self.instances.values() if i.pod_id == pod_id]

    def deployment_of(self, pod_id: str) -> PodDeployment | None:
        return next((d for d in self.deployments.values() if d.pod_id == pod_id), None)

    def new_version(self, now: float, floor_ms: int = 0) -> str:
        """A version timestamp after every earlier one (and after ``floor_ms``)."""
        ms = max(int(now * 1000), self._last_ms + 1, floor_ms + 1)
        self._last_ms = ms
        return iso_ms(ms)

    # -- API changes -----------------------------------------------------------------------

    def _deploy(self, pod_id: str, action: str, version: str, force: bool) -> PodDeployment:
        running = self.deployment_of(pod_id)
        if running is not None:
            if not force:
                raise ApiError(
                    409,
                    {
                        "message": "Pod is locked by one or more deployments. Override with "
                        "the option '?force=true'.",
                        "deployments": [{"id": running.id}],
                    },
                )
            self.deployments.pop(running.id)
            self.dirty.add(("poddeployment", running.id))
        d = PodDeployment(str(uuid.uuid4()), version, pod_id, action)
        self.deployments[d.id] = d
        self.dirty.add(("poddeployment", d.id))
        return d

    def _store(self, pod: dict[str, Any]) -> None:
        self.pods[pod["id"]] = pod
        self.versions.setdefault(pod["id"], {})[pod["version"]] = pod
        self.dirty.add(("pod", pod["id"]))
        self.dirty.add(("podver", f"{pod['id']} {pod['version']}"))
        self.stopping.discard(pod["id"])
        self.delay.pop(pod["id"], None)

    def create(self, spec: dict[str, Any], now: float, version: str) -> PodDeployment:
        """POST /v2/pods: 409 when the id is taken."""
        pod_id = spec["id"]
        if pod_id in self.pods:
            raise ApiError(409, {"message": f"Pod {pod_id} already exists."})
        d = self._deploy(pod_id, "StartPod", version, force=True)
        self._store({**spec, "version": version})
        return d

    def update(
        self, spec: dict[str, Any], now: float, version: str, force: bool
    ) -> tuple[PodDeployment, bool]:
        """PUT /v2/pods/{id}: replaces the definition (creates the pod when unknown; the
        second value says so). A changed configuration restarts every instance."""
        old = self.pods.get(spec["id"])
        if old is None:
            return self.create(spec, now, version), True
        problems = resident_update_problems(old, spec)
        if problems:
            raise Invalid(problems)
        restart = config_of(old) != config_of(spec)
        d = self._deploy(spec["id"], "RestartPod" if restart else "ScalePod", version, force)
        self._store({**spec, "version": version})
        return d, False

    def delete(self, pod_id: str, now: float, version: str, force: bool) -> PodDeployment:
        """DELETE /v2/pods/{id}: 404 when unknown; every instance is killed."""
        if pod_id not in self.pods:
            raise ApiError(404, {"message": f"Pod '{pod_id}' does not exist"})
        d = self._deploy(pod_id, "StopPod", version, force)
        del self.pods[pod_id]
        self.dirty.add(("pod", pod_id))
        self.stopping.add(pod_id)
        self.wanted.pop(pod_id, None)
        return d

    def kill_instances(
        self, pod_id: str, instance_ids: Iterable[str], now: float, wipe: bool = False
    ) -> list[PodInstance]:
        """DELETE /v2/pods/{id}::instances[/{instance}]: kills them; the pod replaces them.
        All or none: one id that is not an instance of the pod is a 404 and kills nothing.
        ``wipe``: a resident instance's reservation and volumes go too (it reserves anew)."""
        ids = list(dict.fromkeys(instance_ids))  # a Set in Marathon: once each
        missing = [i for i in ids if i not in self.instances or self.instances[i].pod_id != pod_id]
        if missing:
            names = ", ".join(f"'{i}'" for i in missing)
            raise ApiError(404, {"message": f"Instance {names} of pod '{pod_id}' not found"})
        killed = [self.instances[i] for i in ids]
        for inst in killed:
            self._kill(inst, now)
            res = self.reservations.get(inst.reservation)
            if wipe and res is not None:
                self.reservations.decommission(res)
        return killed

    # -- scheduler events ------------------------------------------------------------------

    def subscribed(self, framework_id: str) -> None:
        """Asks the master about every known pod task (the planner's implicit
        reconciliation brings those it does not know of)."""
        self.framework_id = framework_id
        known = [
            (t["task_id"], i.agent_id) for i in self.instances.values() for t in i.tasks.values()
        ]
        if known:
            self.outbox.append(Reconcile(known))

    def status(self, status: Mapping[str, Any], now: float) -> bool:
        """A TaskStatus: False when the task is none of the pods' (the planner's then)."""
        task_id = status["task_id"]["value"]
        instance_id = self.by_task.get(task_id)
        inst = self.instances.get(instance_id) if instance_id else None
        if inst is None:
            return False
        state = status.get("state", "")
        name, task = next((n, t) for n, t in inst.tasks.items() if t["task_id"] == task_id)
        if state == "TASK_KILLING" and task["state"] == "TASK_KILLING":
            return True
        before = inst.condition()
        if state != task["state"]:
            task["state"], task["since"] = state, now
        if state == "TASK_UNREACHABLE":
            if inst.unreachable_since is None:
                inst.unreachable_since = now
        elif all(t["state"] != "TASK_UNREACHABLE" for t in inst.tasks.values()):
            inst.unreachable_since = None  # back (or ended)
        for network in (status.get("container_status") or {}).get("network_infos") or ():
            for address in network.get("ip_addresses") or ():
                inst.ip = address.get("ip_address") or inst.ip
        # As Marathon's InstanceChangedEventsGenerator: every task update of any instance,
        # then the instance's change of condition.
        self.outbox.append(
            status_update_event(
                now,
                agent_id=inst.agent_id,
                task_id=task_id,
                state=state,
                message=status.get("message", ""),
                run_spec_id=inst.pod_id,
                host=inst.host,
                ports=self._host_ports(inst, name),
                ip=inst.ip,
                version=inst.version,
            )
        )
        after = inst.condition()
        if after != before:
            self.outbox.append(
                instance_changed_event(
                    now,
                    instance=inst.instance_id,
                    condition=after,
                    run_spec_id=inst.pod_id,
                    agent_id=inst.agent_id,
                    host=inst.host,
                    version=inst.version,
                )
            )
        task["message"] = status.get("message", "")
        if status.get("healthy") is not None:
            task["healthy"] = bool(status["healthy"])
        self.dirty.add(("podinstance", inst.instance_id))
        if state in TERMINAL_STATES:
            self.reservations.gone_with_agent(self.reservations.get(inst.reservation), state)
            if not inst.killing and not inst.failed:
                inst.failed = True  # the default executor ends the others: make sure
                if state in FAILURE_STATES and inst.pod_id in self.pods:
                    backoff = self.pods[inst.pod_id]["scheduling"]["backoff"]
                    delay, _ = self.delay.get(inst.pod_id, (0.0, 0.0))
                    delay = backoff["backoff"] if delay <= 0 else delay * backoff["backoffFactor"]
                    delay = min(delay, backoff["maxLaunchDelay"])
                    self.delay[inst.pod_id] = (delay, now + delay)
                self._kill(inst, now)
            if all(t["state"] in TERMINAL_STATES for t in inst.tasks.values()):
                self._remove_instance(inst)
        return True

    def _spec_of(self, inst: PodInstance) -> dict[str, Any] | None:
        """The pod's definition, or the instance's own version once the pod is deleted."""
        return self.pods.get(inst.pod_id) or self.versions.get(inst.pod_id, {}).get(inst.version)

    def _host_ports(self, inst: PodInstance, container: str) -> list[int]:
        """The host ports of one member's endpoints."""
        pod = self._spec_of(inst)
        containers = (pod or {}).get("containers", ())
        spec: dict[str, Any] = next((c for c in containers if c["name"] == container), {})
        return [inst.ports[e["name"]] for e in spec.get("endpoints", ()) if e["name"] in inst.ports]

    def _kill(self, inst: PodInstance, now: float) -> None:
        if not inst.failed:
            inst.killing = True
        inst.kill_sent_at = now
        self.dirty.add(("podinstance", inst.instance_id))
        pod = self._spec_of(inst)
        graces = {
            c["name"]: c.get("lifecycle", {}).get("killGracePeriodSeconds")
            for c in (pod or {}).get("containers", ())
        }
        for name, t in inst.tasks.items():
            if t["state"] not in TERMINAL_STATES:
                self.outbox.append(Kill(t["task_id"], inst.agent_id, graces.get(name)))

    # -- the periodic pass -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Kills what is too much or outdated, decides the launches wanted, ends the
        deployments that reached their target."""
        for inst in list(self.instances.values()):
            if inst.unreachable_since is not None:
                _, expunge = unreachable_after(self._unreachable_strategy(inst))
                if now - inst.unreachable_since >= expunge:
                    # Forgotten: if it ever comes back, its tasks are unknown and killed.
                    self._remove_instance(inst)
                    continue
            ending = inst.killing or inst.failed
            if ending and now - (inst.kill_sent_at or 0) > KILL_RETRY_SECONDS:
                self._kill(inst, now)
            elif not ending and now - inst.staged_at > self.task_launch_timeout:
                if any(t["state"] in _LAUNCHING for t in inst.tasks.values()):
                    self._kill(inst, now)  # never came up: replaced (as an app's task is)
        for pod_id in self.stopping | set(self.pods):
            self._scale(pod_id, now)
        for d in list(self.deployments.values()):
            if self._done(d, now):
                del self.deployments[d.id]
                self.dirty.add(("poddeployment", d.id))
                if d.action == "StopPod" and d.pod_id not in self.pods:
                    for version in self.versions.pop(d.pod_id, {}):
                        self.dirty.add(("podver", f"{d.pod_id} {version}"))
                    self.stopping.discard(d.pod_id)

    def _unreachable_strategy(self, inst: PodInstance) -> dict[str, Any] | str:
        pod = self._spec_of(inst)
        return (pod or {}).get("scheduling", {}).get("unreachableStrategy", DEFAULT_UNREACHABLE)

    def _inactive(self, inst: PodInstance, now: float) -> bool:
        """Unreachable for the strategy's ``inactiveAfterSeconds``: replaced, no longer
        counted (it still counts before, and again if it comes back)."""
        if inst.unreachable_since is None:
            return False
        after, _ = unreachable_after(self._unreachable_strategy(inst))
        return now - inst.unreachable_since >= after

    def _scale(self, pod_id: str, now: float) -> None:
        pod = self.pods.get(pod_id)
        instances = self.pod_instances(pod_id)
        if pod is None:
            self.wanted.pop(pod_id, None)
            for res in self.reservations.of(pod_id):
                self.reservations.decommission(res)
            for inst in instances:
                if not inst.killing and not inst.failed:
                    self._kill(inst, now)
            if not instances:
                self.stopping.discard(pod_id)
            return
        config = config_of(pod)
        current: list[PodInstance] = []
        outdated: list[PodInstance] = []
        for inst in instances:
            if inst.active and not self._inactive(inst, now):
                own = self.versions.get(pod_id, {}).get(inst.version)
                fresh = own is not None and config_of(own) == config
                (current if fresh else outdated).append(inst)
        target = pod["scaling"]["instances"]
        # A rolling replacement within the pod's upgrade strategy (as an app's): an outdated
        # instance goes while enough stay stable, or while there are too many.
        strategy = pod["scheduling"].get("upgrade", DEFAULT_UPGRADE)  # older records: none
        bounds = upgrade_bounds(target, strategy, bool(persistent_volumes(pod)))
        is_stable = functools.partial(_stable, pod)
        stable = len([i for i in current + outdated if is_stable(i)])
        ordered = _kill_order(pod, outdated)
        for inst in rolling_kills(ordered, len(current), stable, is_stable, bounds):
            self._kill(inst, now)
            outdated.remove(inst)
        _, max_capacity = bounds
        if len(current) > target:
            # Those that keep GROUP_BY groups even go first, then the pod's kill order.
            ordered, extra = _kill_order(pod, current), len(current) - target
            first = balanced_kills(constraint_list(pod), ordered, extra, _placement)
            chosen = {i.instance_id for i in first}
            rest = [i for i in ordered if i.instance_id not in chosen]
            for inst in first + rest[: extra - len(first)]:
                self._kill(inst, now)
            current = rest[extra - len(first) :]
        want = target - len(current)
        if outdated:
            want = min(want, max_capacity - len(current) - len(outdated))
        want = max(0, want)
        if want:
            self.wanted[pod_id] = want
        else:
            self.wanted.pop(pod_id, None)

    def _done(self, d: PodDeployment, now: float) -> bool:
        pod = self.pods.get(d.pod_id)
        instances = self.pod_instances(d.pod_id)
        if pod is None:
            return not instances
        if pod["version"] != d.version:
            return True  # superseded
        config = config_of(pod)
        instances = [i for i in instances if not self._inactive(i, now)]  # replaced
        for inst in instances:
            own = self.versions.get(d.pod_id, {}).get(inst.version)
            if not inst.active or own is None or config_of(own) != config:
                return False
            if inst.status(pod) != "STABLE":
                return False
        return len(instances) == pod["scaling"]["instances"]

    def demand(self, now: float) -> bool:
        """Whether any pod waits for offers (so the planner revives rather than suppresses)."""
        return any(n > 0 and self.delay.get(p, (0, 0))[1] <= now for p, n in self.wanted.items())

    # -- offers ----------------------------------------------------------------------------

    def offers(self, offers: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Places wanted instances on offers; returns the offers it did not use (for the
        planner, which declines what nobody uses)."""
        order = [
            p
            for p, n in sorted(self.wanted.items())
            if n > 0 and p in self.pods and self.delay.get(p, (0, 0))[1] <= now
        ]
        if not order or self.framework_id is None:
            return offers
        rest = []
        for offer in offers:
            groups: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
            operations: list[dict[str, Any]] = []
            pool = Pool(offer, _RNG)
            labelled = resident.offered(offer, self.framework_id)
            for pod_id in order:
                pod = self.pods[pod_id]
                if persistent_volumes(pod):
                    pool = self._fill_resident(pod, offer, pool, labelled, groups, operations, now)
                    continue
                while self.wanted.get(pod_id, 0) > 0:
                    built = self._place(pod, offer, pool, now)
                    if built is None:
                        break
                    pool, group = built
                    groups.append(group)
                    self.wanted[pod_id] -= 1
            order = [p for p in order if self.wanted.get(p, 0) > 0]
            if groups or operations:
                self.outbox.append(
                    LaunchGroup(
                        offer["id"]["value"], offer["agent_id"]["value"], groups, operations
                    )
                )
            else:
                rest.append(offer)
        return rest

    def _violates(self, pod: Mapping[str, Any], offer: Mapping[str, Any], now: float) -> bool:
        """Whether a new instance on the offer's agent breaks a placement constraint, beside
        the pod's active instances and a resident pod's instances between launches (they
        stay on their reservations)."""
        constraints = constraint_list(pod)
        if not constraints:
            return False
        placed: list[tuple[str, Mapping[str, str]]] = [
            (i.host, i.attributes)
            for i in self.pod_instances(pod["id"])
            if i.active and not self._inactive(i, now)
        ]
        placed += [
            (r.host, r.attributes)
            for r in self.reservations.of(pod["id"])
            if not r.task_id and not r.decommissioned
        ]
        hostname = offer.get("hostname", "")
        return first_violation(constraints, hostname, attributes_of(offer), placed) is not None

    def _place(
        self, pod: Mapping[str, Any], offer: Mapping[str, Any], pool: Pool, now: float
    ) -> tuple[Pool, tuple[dict[str, Any], list[dict[str, Any]]]] | None:
        """One instance on what is left of the offer: (the pool after it, (executor,
        tasks)), or None when it does not fit."""
        if self._violates(pod, offer, now):
            return None
        roles = pod["scheduling"]["placement"]["acceptedResourceRoles"]
        carved = _carve(pod, pool, roles)
        if carved is None:
            return None
        trial, executor_resources, container_resources, host_ports = carved
        instance_id = f"{safe_id(pod['id'])}.instance-{uuid.uuid4()}"
        group = self._launch(
            pod, instance_id, offer, executor_resources, container_resources, host_ports, now
        )
        return trial, group

    def _launch(
        self,
        pod: Mapping[str, Any],
        instance_id: str,
        offer: Mapping[str, Any],
        executor_resources: list[dict[str, Any]],
        container_resources: dict[str, list[dict[str, Any]]],
        host_ports: dict[str, int],
        now: float,
        res: Reservation | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The task group of a new instance (a resident one's next launch on ``res``), and
        its record."""
        assert self.framework_id is not None
        attempt = res.attempt if res is not None else 1
        hostname = offer.get("hostname", "")
        executor, tasks = build_task_group(
            pod,
            instance_id,
            self.framework_id,
            offer["agent_id"]["value"],
            hostname,
            executor_resources,
            container_resources,
            host_ports,
            attempt,
        )
        inst = PodInstance(
            instance_id=instance_id,
            pod_id=pod["id"],
            version=pod["version"],
            agent_id=offer["agent_id"]["value"],
            host=hostname,
            staged_at=now,
            tasks={
                c["name"]: {
                    "task_id": t["task_id"]["value"],
                    "state": "TASK_STAGING",
                    "since": now,
                    "message": "",
                    "healthy": None,
                }
                for c, t in zip(pod["containers"], tasks, strict=True)
            },
            ports=host_ports,
            attributes=attributes_of(offer),
            reservation=res.id if res is not None else None,
        )
        self._add_instance(inst)
        self.dirty.add(("podinstance", instance_id))
        return executor, tasks

    # -- resident pods ---------------------------------------------------------------------

    def _fill_resident(
        self,
        pod: Mapping[str, Any],
        offer: Mapping[str, Any],
        pool: Pool,
        labelled: Mapping[str, list[dict[str, Any]]],
        groups: list[tuple[dict[str, Any], list[dict[str, Any]]]],
        operations: list[dict[str, Any]],
        now: float,
    ) -> Pool:
        """A resident pod's share of an offer (as a resident app's in the planner): its
        idle instances whose reservations the offer carries are launched on exactly those;
        then, while fewer instances are idle than launches are wanted, new ones reserve
        and create their volumes. Returns the pool left."""
        pod_id = pod["id"]
        for res, resources in self.reservations.idle_offered(labelled, pod_id):
            if self.wanted.get(pod_id, 0) <= 0:
                break
            group = self._launch_on(pod, res, resources, offer, now)
            if group is not None:
                groups.append(group)
                self.wanted[pod_id] -= 1
        while self.reservations.spare(pod_id, self._not_killing) < self.wanted.get(pod_id, 0):
            left = self._reserve(pod, offer, pool, operations, now)
            if left is None:
                break
            pool = left
        return pool

    def _not_killing(self, instance_id: str) -> bool:
        inst = self.instances.get(instance_id)
        return inst is not None and inst.active

    def _launch_on(
        self,
        pod: Mapping[str, Any],
        res: Reservation,
        resources: list[dict[str, Any]],
        offer: Mapping[str, Any],
        now: float,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The instance's next launch on the reservation's offered ``resources``: its
        executor takes the volumes and its share, each member its own, each endpoint the
        host port the instance reserved."""
        volumes = [r for r in resources if (r.get("disk") or {}).get("persistence")]
        rest = [r for r in resources if not (r.get("disk") or {}).get("persistence")]
        fixed = {ep["name"]: port for ep, port in zip(endpoints_of(pod), res.ports, strict=True)}
        carved = _carve(pod, Pool({"resources": rest}, _RNG, reserved=True), [self.role], fixed)
        if carved is None:
            return None  # not what it reserved (cannot happen: its resources may not change)
        _, executor_resources, container_resources, host_ports = carved
        res.attempt += 1
        group = self._launch(
            pod,
            res.id,
            offer,
            executor_resources + volumes,
            container_resources,
            host_ports,
            now,
            res,
        )
        self.reservations.launched_on(res, res.id)
        return group

    def _reserve(
        self,
        pod: Mapping[str, Any],
        offer: Mapping[str, Any],
        pool: Pool,
        operations: list[dict[str, Any]],
        now: float,
    ) -> Pool | None:
        """A new instance's RESERVE and CREATE on the offer's unreserved resources (the
        pool left after it), or None when it does not fit."""
        assert self.framework_id is not None
        if self._violates(pod, offer, now):
            return None
        volumes = [(v["name"], v["persistent"]) for v in persistent_volumes(pod)]
        on_root, elsewhere = resident.split_volumes(info for _, info in volumes)
        picks = pool.take_sources(elsewhere)
        if picks is None:
            return None
        roles = pod["scheduling"]["placement"]["acceptedResourceRoles"]
        carved = _carve(pod, pool, roles, extra_disk=on_root)
        if carved is None:
            pool.put_back(picks)
            return None
        trial, executor_resources, container_resources, host_ports = carved
        unique = str(uuid.uuid4())
        rid = f"{safe_id(pod['id'])}.instance-{unique}"
        made = resident.volumes_made(pod["id"], volumes, picks, unique)
        taken = [*executor_resources, *(r for rs in container_resources.values() for r in rs)]
        operations += resident.reserve_and_create(
            self.role,
            resident.labels(self.framework_id, rid),
            [*taken, *(disk for _, _, disk in picks)],
            made,
        )
        self.reservations.add(
            Reservation(
                id=rid,
                app_id=pod["id"],
                agent_id=offer["agent_id"]["value"],
                host=offer.get("hostname", ""),
                ip=offer.get("hostname", ""),
                attributes=attributes_of(offer),
                volumes=[{"containerPath": c, "persistenceId": p} for c, _, p, _ in made],
                ports=[host_ports[ep["name"]] for ep in endpoints_of(pod)],
                created_at=now,
            )
        )
        return trial

    # -- views -----------------------------------------------------------------------------

    def pod_json(self, pod_id: str) -> dict[str, Any]:
        return dict(self.pods[pod_id])

    def instance_json(self, inst: PodInstance, pod: Mapping[str, Any] | None) -> dict[str, Any]:
        """Marathon's ``PodInstanceStatus``."""
        containers_by_name = {c["name"]: c for c in (pod or {}).get("containers", ())}
        containers = []
        since = inst.staged_at
        for name, t in inst.tasks.items():
            since = max(since, t["since"])
            spec = containers_by_name.get(name, {})
            containers.append(
                {
                    "name": name,
                    "status": t["state"],
                    "statusSince": iso(t["since"]),
                    "message": t["message"] or None,
                    # Marathon's "healthy" condition, once the executor reported a check
                    "conditions": []
                    if t.get("healthy") is None
                    else [
                        {
                            "name": "healthy",
                            "value": "true" if t["healthy"] else "false",
                            "lastChanged": iso(t["since"]),
                        }
                    ],
                    "containerId": t["task_id"],
                    "endpoints": [
                        {"name": ep["name"], "allocatedHostPort": inst.ports.get(ep["name"])}
                        for ep in spec.get("endpoints", ())
                    ],
                    "resources": spec.get("resources"),
                    "lastUpdated": iso(t["since"]),
                    "lastChanged": iso(t["since"]),
                }
            )
        res = self.reservations.get(inst.reservation)
        return {
            "id": inst.instance_id,
            "status": inst.status(pod),
            "statusSince": iso(since),
            "conditions": [],
            "agentHostname": inst.host,
            "agentId": inst.agent_id,
            "resources": _total(pod) if pod else None,
            "networks": [],
            "containers": containers,
            "specReference": f"/v2/pods{inst.pod_id}::versions/{inst.version}",
            "localVolumes": res.local_volumes() if res is not None else [],
            "lastUpdated": iso(since),
            "lastChanged": iso(since),
        }

    def status_json(self, pod_id: str, now: float) -> dict[str, Any]:
        """Marathon's ``PodStatus`` (``GET /v2/pods/{id}::status``)."""
        pod = self.pods[pod_id]
        instances = self.pod_instances(pod_id)
        rendered = [
            self.instance_json(i, self.versions.get(pod_id, {}).get(i.version) or pod)
            for i in instances
        ]
        if self.deployment_of(pod_id) is not None:
            status = "DEPLOYING"
        elif len(instances) == pod["scaling"]["instances"] and all(
            r["status"] == "STABLE" for r in rendered
        ):
            status = "STABLE"
        else:
            status = "DEGRADED"
        return {
            "id": pod_id,
            "spec": self.pod_json(pod_id),
            "status": status,
            "statusSince": pod["version"],
            "instances": rendered,
            "terminationHistory": [],
            "lastUpdated": iso(now),
            "lastChanged": pod["version"],
        }


def _carve(
    pod: Mapping[str, Any],
    pool: Pool,
    roles: list[str],
    fixed: Mapping[str, int] | None = None,
    extra_disk: float = 0.0,
) -> tuple[Pool, list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, int]] | None:
    """One instance's resources out of a copy of ``pool``, as Marathon's TaskGroupBuilder
    splits them: (the copy left, the executor's (its host ports too, and ``extra_disk``
    more disk), each member's, endpoint name -> host port, ``fixed`` where given), or None
    when they do not fit."""
    trial = copy.deepcopy(pool)

    def take(res: Mapping[str, float], ports: list[int]) -> tuple[list[Any], list[int]] | None:
        spec = {
            "acceptedResourceRoles": roles,
            "gpus": 0,
            **res,
            "portDefinitions": [{"port": p} for p in ports],
            "requirePorts": bool(ports) and all(ports),
        }
        return trial.take(spec)

    own = dict(pod["executorResources"])
    own["disk"] = own.get("disk", 0.0) + extra_disk
    taken = take(own, [])
    if taken is None:
        return None
    executor_resources = taken[0]
    container_resources: dict[str, list[dict[str, Any]]] = {}
    for c in pod["containers"]:
        got = take(c["resources"], [])
        if got is None:
            return None
        container_resources[c["name"]] = got[0]
    host_ports: dict[str, int] = {}
    for c in pod["containers"]:
        for ep in c["endpoints"]:
            nothing = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
            wanted = (fixed or {}).get(ep["name"], ep["hostPort"])
            got = take(nothing, [wanted])
            if got is None or not got[1]:
                return None
            host_ports[ep["name"]] = got[1][0]
            executor_resources += got[0]  # the port, held by the executor (Marathon's)
    return trial, executor_resources, container_resources, host_ports


def _total(pod: Mapping[str, Any]) -> dict[str, float]:
    out = dict(pod["executorResources"])
    for c in pod["containers"]:
        for k, v in c["resources"].items():
            out[k] = round(out.get(k, 0.0) + v, 6)
    return out
