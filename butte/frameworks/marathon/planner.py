"""The Marathon planner: a pure, synchronous state machine (docs/design.md).

It holds the apps (definitions and their versions), explicit groups, deployments and
instances, and is fed three kinds of input, always with the current wall-clock time:

* API changes (`Planner.deploy`, `kill_tasks`, `cancel_deployment` ...), which validate,
  update the definitions at once (as Marathon does) and create a `Deployment`: a plan of
  steps in dependency order that the planner then carries out;
* scheduler events (`subscribed`, `offers`, `status`);
* `tick`, which advances deployments, applies the upgrade strategy, backoff and the
  unreachable strategy, and decides launches and kills.

Every decision comes out as an effect in `outbox` (launch on an offer, decline, kill,
reconcile, revive/suppress, publish an event) and every record it changed is named in
`dirty` (for the store). The shell must persist the dirty records before it carries out the
effects: an instance is stored before its launch leaves, so after a crash it is reconciled,
never launched twice.
"""

from __future__ import annotations

import copy
import datetime
import functools
import math
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from butte.frameworks.marathon import resident
from butte.frameworks.marathon.appdef import (
    Invalid,
    app_ports,
    config_of,
    is_bridged,
    is_resident,
    persistent_volumes,
    render_app,
    resident_update_problems,
    unreachable_after,
)
from butte.frameworks.marathon.constraints import balanced_kills, first_violation
from butte.frameworks.marathon.launch import Pool, task_info
from butte.frameworks.marathon.model import (
    ACTIVE_STATES,
    FAILURE_STATES,
    REASON_FUNNEL,
    TERMINAL_STATES,
    AppRuntime,
    Decline,
    Deployment,
    Effect,
    Instance,
    Kill,
    Launch,
    Probe,
    Publish,
    Reconcile,
    Reservation,
    Revive,
    Suppress,
    condition_of,
    funnel,
    instance_changed_event,
    instance_id,
    iso,
    iso_ms,
    offer_json,
    safe_id,
    status_update_event,
)
from butte.frameworks.offers import attributes_of

KILL_RETRY_SECONDS = 30.0
# Where service ports given as 0 are taken from (Marathon's --local_port_min/max).
SERVICE_PORTS = range(10000, 20001)
REFUSE_WHEN_IDLE = 120.0
REFUSE_WHEN_UNFIT = 5.0
REVIVE_AFTER = 5.0  # seconds of launches wanted without any offer before reviving again
# The parts of ``embed`` that change an app's rendering, as bits of its cache key.
_EMBED_BITS = {"tasks": 1, "lastTaskFailure": 2, "failures": 2, "taskStats": 4, "readiness": 8}
_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    """A refused API change: HTTP ``status`` and Marathon's JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


# Marathon's --gpu_scheduling_behavior values (and the app label that overrides it).
GPU_BEHAVIORS = ("restricted", "unrestricted")
GPU_BEHAVIOR_LABEL = "GPU_SCHEDULING_BEHAVIOR"


@dataclass
class PlannerConfig:
    role: str = "*"
    task_launch_timeout: float = 300.0
    # Marathon's --[disable_]maintenance_mode and --draining_seconds: offers of an agent in
    # (or within draining_seconds of) its maintenance window are not used.
    maintenance_mode: bool = True
    draining_seconds: float = 0.0
    # Marathon's --gpu_scheduling_behavior: "restricted" keeps apps without gpus off
    # offers that have some (DeclinedScarceResources).
    gpu_scheduling_behavior: str = "restricted"
    # Marathon's --task_reservation_timeout (in seconds here): a resident instance's new
    # reservation that no offer brings back in time is given up (and freed when seen).
    reservation_timeout: float = 20.0


T = TypeVar("T")
Bounds = tuple[int, int]  # (the fewest healthy instances, the most instances)


def upgrade_bounds(target: int, strategy: Mapping[str, float], resident: bool = False) -> Bounds:
    """(the fewest healthy instances, the most instances) a rolling replacement of
    ``target`` instances keeps to, from an upgrade strategy (``minimumHealthCapacity``,
    ``maximumOverCapacity``)."""
    min_healthy = math.ceil(target * strategy["minimumHealthCapacity"])
    max_capacity = max(target, math.floor(target * (1 + strategy["maximumOverCapacity"])))
    if target > 0 and min_healthy == max_capacity:
        # Neither a kill nor a launch would be allowed: as Marathon's
        # TaskReplaceActor.computeRestartStrategy, one instance over capacity at a time, or
        # for a resident app (whose instances are replaced on their own reservations) one
        # instance below the minimum.
        if resident:
            min_healthy -= 1
        else:
            max_capacity += 1
    return min_healthy, max_capacity


def rolling_kills(
    outdated: list[T], fresh: int, healthy: int, is_healthy: Callable[[T], bool], bounds: Bounds
) -> list[T]:
    """The ``outdated`` instances (in kill order) a rolling replacement kills now, beside
    ``fresh`` up-to-date ones and ``healthy`` healthy ones in all: every one not healthy,
    and a healthy one while the minimum stays healthy or while there are more than the most
    (``bounds``: `upgrade_bounds`)."""
    min_healthy, max_capacity = bounds
    kills, left = [], len(outdated)
    for inst in outdated:
        if not is_healthy(inst):
            kills.append(inst)
            left -= 1
        elif healthy - 1 >= min_healthy or fresh + left > max_capacity:
            kills.append(inst)
            left -= 1
            healthy -= 1
    return kills


class Planner:
    """See the module docstring."""

    def __init__(self, config: PlannerConfig | None = None, seed: int | None = None) -> None:
        self.config = config or PlannerConfig()
        # Host ports are picked at random from offers; seeded so tests can replay a run.
        self.rng = random.Random(seed)
        self.framework_id: str | None = None
        self.apps: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, dict[str, Any]]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.group_versions: dict[str, dict[str, dict[str, Any]]] = {}
        self.instances: dict[str, Instance] = {}
        self.by_app: dict[str, set[str]] = {}
        # resident apps' (and pods') instances (docs/marathon.md "Stateful apps")
        self.reservations = resident.Reservations()
        self.deployments: dict[str, Deployment] = {}
        self.runtime: dict[str, AppRuntime] = {}
        self.wanted: dict[str, int] = {}
        self.outbox: list[Effect] = []
        self.dirty: set[tuple[str, str]] = set()
        self.suppressed = False
        # Launches others wait for (pods.py, set by the shell before each tick and offers):
        # offers are then revived and not declined with the idle filter.
        self.extra_demand = False
        self._filtered = False  # offers were declined with the long idle filter
        self._locks: dict[str, set[str]] = {}  # app id -> ids of deployments acting on it
        self._held_cache: set[str] | None = None
        # task id -> (app version it was rendered with, /v2/tasks JSON): listings of 10,000
        # tasks mostly re-render what did not change
        self._task_json: dict[str, tuple[str, dict[str, Any]]] = {}
        # app id -> {embed bits: encoded `app_json`}: a listing of 1,000 apps re-encodes
        # only the apps that changed since the last one (dropped by `_stale`)
        self._app_bytes: dict[str, dict[int, bytes]] = {}
        self._last_offer_at = 0.0
        self._last_revive_at = 0.0
        self._last_ms = 0
        self._touched: set[str] = set()
        self._stopping: set[str] = set()
        # Readiness checks (not persisted: a new leader checks again what is not ready yet):
        # task id -> when to check next, the checks in flight, the last result of each.
        self._probe_at: dict[str, float] = {}
        self._probing: set[str] = set()
        self.readiness_results: dict[str, dict[str, Any]] = {}

    # -- restore ---------------------------------------------------------------------------

    def restore(self, records: Iterable[tuple[str, str, Any]]) -> None:
        """Loads stored records (kind, key, value) after a restart."""
        for kind, key, value in records:
            if kind == "meta" and key == "framework_id":
                self.framework_id = value
            elif kind == "app":
                self.apps[key] = value
            elif kind == "appver":
                app_id, version = key.rsplit(" ", 1)
                self.versions.setdefault(app_id, {})[version] = value
            elif kind == "group":
                self.groups[key] = value
            elif kind == "groupver":
                group_id, version = key.rsplit(" ", 1)
                self.group_versions.setdefault(group_id, {})[version] = value
            elif kind == "instance":
                inst = Instance.from_record(value)
                self.instances[key] = inst
                self.by_app.setdefault(inst.app_id, set()).add(key)
            elif kind == "deployment":
                self._add_deployment(Deployment.from_record(value))
            elif kind == "reservation":
                self.reservations.restore(value)
        for d in self.deployments.values():
            for app_id, spec in d.target.items():
                if spec is None:
                    self._stopping.add(app_id)
        versions = [v for vs in self.versions.values() for v in vs]
        versions += [d.version for d in self.deployments.values()]
        if versions:
            last = datetime.datetime.strptime(max(versions), "%Y-%m-%dT%H:%M:%S.%fZ")
            self._last_ms = round(last.replace(tzinfo=datetime.UTC).timestamp() * 1000)
        self._touched.update(self.apps)
        self._touched.update(self.by_app)
        self._app_bytes.clear()

    # -- helpers ---------------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[str, str, Any]]:
        """The changed records (value None: deleted), clearing the set."""
        out: list[tuple[str, str, Any]] = []
        for kind, key in sorted(self.dirty):
            out.append((kind, key, self._value(kind, key)))
        self.dirty.clear()
        return out + self.reservations.take_dirty()

    def _value(self, kind: str, key: str) -> Any:
        if kind == "meta":
            return self.framework_id
        if kind == "app":
            return self.apps.get(key)
        if kind == "appver":
            app_id, version = key.rsplit(" ", 1)
            return self.versions.get(app_id, {}).get(version)
        if kind == "group":
            return self.groups.get(key)
        if kind == "groupver":
            group_id, version = key.rsplit(" ", 1)
            return self.group_versions.get(group_id, {}).get(version)
        if kind == "instance":
            inst = self.instances.get(key)
            return inst.record() if inst else None
        if kind == "deployment":
            d = self.deployments.get(key)
            return d.record() if d else None
        raise KeyError(kind)

    def _changed(self, inst: Instance) -> None:
        """An instance changed: to be stored, and its rendering (and its app's) is stale."""
        self.dirty.add(("instance", inst.task_id))
        self._task_json.pop(inst.task_id, None)
        self._app_bytes.pop(inst.app_id, None)

    def _stale(self, app_id: str) -> None:
        """Something `app_json` shows about the app changed (its definition, deployments,
        last failure): its cached encodings go."""
        self._app_bytes.pop(app_id, None)

    def take_effects(self) -> list[Effect]:
        out, self.outbox = self.outbox, []
        return out

    def new_version(self, now: float) -> str:
        """A version timestamp (millisecond resolution), strictly after every earlier one."""
        ms = max(int(now * 1000), self._last_ms + 1)
        self._last_ms = ms
        return iso_ms(ms)

    def _rt(self, app_id: str) -> AppRuntime:
        rt = self.runtime.get(app_id)
        if rt is None:
            rt = self.runtime[app_id] = AppRuntime()
        return rt

    def _publish(self, event_type: str, now: float, **fields: Any) -> None:
        self.outbox.append(Publish.of(event_type, now, **fields))

    def app_instances(self, app_id: str) -> list[Instance]:
        return [self.instances[t] for t in self.by_app.get(app_id, ())]

    def locking_deployments(self, app_ids: Iterable[str]) -> list[Deployment]:
        """The deployments that act on any of the apps (via an index: no scan)."""
        found: dict[str, Deployment] = {}
        for app_id in app_ids:
            for dep_id in self._locks.get(app_id, ()):
                found[dep_id] = self.deployments[dep_id]
        return list(found.values())

    def _add_deployment(self, d: Deployment) -> None:
        self.deployments[d.id] = d
        for app_id in d.target:
            self._locks.setdefault(app_id, set()).add(d.id)
            self._stale(app_id)
        self._held_cache = None

    def _drop_deployment(self, d: Deployment) -> None:
        self.deployments.pop(d.id, None)
        for app_id in d.target:
            self._stale(app_id)
            ids = self._locks.get(app_id)
            if ids is not None:
                ids.discard(d.id)
                if not ids:
                    del self._locks[app_id]
        self._held_cache = None
        self.dirty.add(("deployment", d.id))

    # -- API changes -----------------------------------------------------------------------

    def deploy(
        self,
        changes: Mapping[str, dict[str, Any] | None],
        now: float,
        *,
        force: bool = False,
        restart: Iterable[str] = (),
        kill_tasks: Iterable[str] = (),
        groups: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> Deployment:
        """Applies new definitions (None: delete the app) as one deployment. Raises
        ApiError 409 if an affected app is in another deployment (unless ``force``, which
        cancels those), 422 for a dependency cycle or a resident app's resources changed."""
        changes = dict(changes)
        restart = set(restart)
        # Validated before any lock, as Marathon validates an update before planning it.
        problems = [
            p
            for app_id, spec in changes.items()
            if spec is not None and app_id in self.apps
            for p in resident_update_problems(self.apps[app_id], spec)
        ]
        if problems:
            raise Invalid(problems)
        locking = self.locking_deployments(changes)
        if locking and not force:
            raise ApiError(
                409,
                {
                    "message": "App is locked by one or more deployments. Override with the "
                    "option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                    "deployments": [{"id": d.id} for d in locking],
                },
            )
        graph = self._dependency_graph(changes, groups or {})
        version = self.new_version(now)
        for d in locking:
            self._cancel(d, now)
        original: dict[str, dict[str, Any] | None] = {}
        target: dict[str, dict[str, Any] | None] = {}
        stops, starts, levels = [], [], []
        taken = {
            p["servicePort"]
            for app_id, spec in self.apps.items()
            if app_id not in changes
            for p in app_ports(spec)
        }
        for app_id, spec in changes.items():
            old = self.apps.get(app_id)
            original[app_id] = old  # definitions are never changed in place
            if spec is None:
                if old is None:
                    continue
                target[app_id] = None
                stops.append({"action": "StopApplication", "app": app_id})
                continue
            spec = _with_service_ports(spec, old, taken)
            new = self._versioned(spec, old, version, restart=app_id in restart)
            target[app_id] = new
            if old is None:
                starts.append({"action": "StartApplication", "app": app_id})
        kept = {a: s for a, s in target.items() if s is not None}
        for level in _levels(kept, graph):
            actions = []
            for app_id in level:
                old, new = original[app_id], kept[app_id]
                restarting = old is not None and (
                    new["versionInfo"]["lastConfigChangeAt"]
                    != old["versionInfo"]["lastConfigChangeAt"]
                )
                kind = "RestartApplication" if restarting else "ScaleApplication"
                actions.append({"action": kind, "app": app_id})
            levels.append(actions)
        steps = [s for s in ([stops] if stops else []) + ([starts] if starts else []) + levels]
        deployment = Deployment(
            id=str(uuid.uuid4()),
            version=version,
            steps=steps,
            original=original,
            target=dict(target),
            kill_tasks=list(kill_tasks),
        )
        for app_id, spec in target.items():
            if spec is None:
                self.apps.pop(app_id, None)
                self._stopping.add(app_id)
            else:
                self.apps[app_id] = spec
                self._stopping.discard(app_id)
                self.versions.setdefault(app_id, {})[spec["version"]] = spec
                self.dirty.add(("appver", f"{app_id} {spec['version']}"))
                if config_of(spec) != config_of(original[app_id] or {}):
                    rt = self._rt(app_id)
                    rt.delay, rt.delay_until = 0.0, 0.0  # a new config starts without backoff
            self.dirty.add(("app", app_id))
            self._touched.add(app_id)
            self._stale(app_id)
        for group_id, group in (groups or {}).items():
            self._set_group(group_id, group, version)
        for task_id in deployment.kill_tasks:
            self._kill(self.instances.get(task_id), now)
        self._add_deployment(deployment)
        self.dirty.add(("deployment", deployment.id))
        self._publish(
            "deployment_info",
            now,
            plan=deployment.plan_json(),
            currentStep=deployment.step_json(deployment.current),
        )
        return deployment

    def api_post(self, client_ip: str | None, uri: str, spec: dict[str, Any], now: float) -> None:
        """Publishes Marathon's ``api_post_event`` for a request that created or updated
        one app (``POST /v2/apps``, ``PUT``/``PATCH /v2/apps/{id}``; Marathon's
        ``AppsResource`` posts it for those alone): who asked, the request's path and the
        definition deployed."""
        self._publish("api_post_event", now, clientIp=client_ip, uri=uri, appDefinition=spec)

    def _set_group(self, group_id: str, group: dict[str, Any] | None, version: str) -> None:
        if group is None:
            for gid in [g for g in self.groups if g == group_id or g.startswith(group_id + "/")]:
                del self.groups[gid]
                self.dirty.add(("group", gid))
            return
        self.groups[group_id] = {**group, "version": version}
        self.dirty.add(("group", group_id))
        snapshot = {
            "dependencies": group.get("dependencies", []),
            "apps": [copy.deepcopy(a) for k, a in self.apps.items() if _under(k, group_id)],
        }
        self.group_versions.setdefault(group_id, {})[version] = snapshot
        self.dirty.add(("groupver", f"{group_id} {version}"))

    def _versioned(
        self, spec: dict[str, Any], old: dict[str, Any] | None, version: str, restart: bool
    ) -> dict[str, Any]:
        new = dict(spec)  # only top-level keys change
        new.pop("version", None)
        new.pop("versionInfo", None)
        if old is None or restart or config_of(new) != config_of(old):
            info = {"lastScalingAt": version, "lastConfigChangeAt": version}
        else:
            info = {
                "lastScalingAt": version,
                "lastConfigChangeAt": old["versionInfo"]["lastConfigChangeAt"],
            }
        new["version"] = version
        new["versionInfo"] = info
        return new

    def _dependency_graph(
        self,
        changes: Mapping[str, dict[str, Any] | None],
        groups: Mapping[str, dict[str, Any] | None],
    ) -> dict[str, set[str]]:
        """Each app (as the change leaves them) -> the apps it depends on: those its own
        ``dependencies`` name (an app, or every app of a group) and those its groups'
        ``dependencies`` name, combined only here, for the deployment order (Marathon's
        RootGroup.applicationDependencies). Ids that resolve to nothing are ignored, as
        Marathon does; a cycle is refused with 422 (RootGroup's noCyclicDependencies)."""
        apps = {a: spec for a, spec in self.apps.items() if a not in changes}
        apps.update((a, spec) for a, spec in changes.items() if spec is not None)
        group_deps = {g: group.get("dependencies", []) for g, group in self.groups.items()}
        for group_id, group in groups.items():
            if group is None:  # as `_set_group`: the group and those under it go
                for g in [g for g in group_deps if g == group_id or _under(g, group_id)]:
                    del group_deps[g]
            else:
                group_deps[group_id] = group.get("dependencies", [])
        graph: dict[str, set[str]] = {}
        for app_id, spec in apps.items():
            wanted = list(spec.get("dependencies", ()))
            ancestor = _parent(app_id)
            while ancestor != "/":
                wanted += group_deps.get(ancestor, ())
                ancestor = _parent(ancestor)
            deps: set[str] = set()
            for dep in wanted:
                if dep in apps:
                    deps.add(dep)
                else:
                    deps.update(a for a in apps if _under(a, dep))
            deps.discard(app_id)
            graph[app_id] = deps
        # Kahn's algorithm over every app: whatever cannot be ordered is on a cycle.
        dependents: dict[str, list[str]] = {}
        waiting = {a: len(deps) for a, deps in graph.items()}
        for app_id, deps in graph.items():
            for dep in deps:
                dependents.setdefault(dep, []).append(app_id)
        ready = [a for a, n in waiting.items() if n == 0]
        ordered = 0
        while ready:
            ordered += 1
            for dependent in dependents.get(ready.pop(), ()):
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready.append(dependent)
        if ordered < len(graph):
            raise ApiError(
                422,
                {
                    "message": "Object is not valid",
                    "details": [
                        {"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}
                    ],
                },
            )
        return graph

    def cancel_deployment(self, deployment_id: str, now: float, force: bool) -> Deployment | None:
        """``DELETE /v2/deployments/ID``: with ``force`` the deployment just stops (apps
        stay where they are); otherwise a new deployment rolls its apps back. Raises
        ApiError 404 for an unknown id."""
        d = self.deployments.get(deployment_id)
        if d is None:
            raise ApiError(404, {"message": f"DeploymentPlan {deployment_id} does not exist"})
        if force:
            self._cancel(d, now)
            return None
        changes = {a: dict(spec) if spec is not None else None for a, spec in d.original.items()}
        return self.deploy(changes, now, force=True)

    def _cancel(self, d: Deployment, now: float) -> None:
        self._drop_deployment(d)
        self._touched.update(d.target)
        self._publish("deployment_failed", now, id=d.id, plan=d.plan_json())

    def kill_tasks(self, task_ids: Iterable[str], now: float, wipe: bool = False) -> list[Instance]:
        """Kills tasks without scaling (the planner replaces them); unknown ids are skipped.
        ``wipe``: a resident instance's reservation and volumes go too (Marathon's
        ``wipe=true``), so its replacement reserves anew."""
        out = []
        for task_id in task_ids:
            inst = self.instances.get(task_id)
            if inst is not None:
                self._kill(inst, now)
                res = self.reservations.get(inst.reservation)
                if wipe and res is not None:
                    self.reservations.decommission(res)
                out.append(inst)
        return out

    def reset_delay(self, app_id: str) -> None:
        rt = self._rt(app_id)
        rt.delay, rt.delay_until = 0.0, 0.0
        self._touched.add(app_id)

    # -- scheduler events ------------------------------------------------------------------

    def subscribed(self, framework_id: str, now: float) -> None:
        """After every (re)subscription: remember the id and reconcile every known task,
        then ask for all the master knows (tasks we do not know are killed)."""
        if framework_id != self.framework_id:
            self.framework_id = framework_id
            self.dirty.add(("meta", "framework_id"))
        self.suppressed = False
        known = [(i.task_id, i.agent_id) for i in self.instances.values()]
        if known:
            self.outbox.append(Reconcile(known))
        self.outbox.append(Reconcile([]))
        self._touched.update(self.apps)
        self._touched.update(self.by_app)

    def status(self, status: Mapping[str, Any], now: float) -> None:
        """A TaskStatus from an UPDATE event."""
        task_id = status["task_id"]["value"]
        state = status.get("state", "")
        agent_id = (status.get("agent_id") or {}).get("value")
        inst = self.instances.get(task_id)
        if inst is None:
            if state not in TERMINAL_STATES:
                # Ours (same framework) but in no record: nobody would ever manage it.
                self.outbox.append(Kill(task_id, agent_id, None))
            return
        self._touched.add(inst.app_id)
        self.outbox.append(
            status_update_event(
                now,
                agent_id=inst.agent_id,
                task_id=task_id,
                state=state,
                message=status.get("message", ""),
                run_spec_id=inst.app_id,
                host=inst.host,
                ports=inst.ports,
                ip=inst.ip,
                version=inst.version,
            )
        )
        if condition_of(state) != condition_of(inst.state):
            self.outbox.append(
                instance_changed_event(
                    now,
                    instance=instance_id(task_id),
                    condition=condition_of(state),
                    run_spec_id=inst.app_id,
                    agent_id=inst.agent_id,
                    host=inst.host,
                    version=inst.version,
                )
            )
        if state in TERMINAL_STATES:
            self._terminal(inst, state, status, now)
            return
        before = _mutable(inst)
        if state == "TASK_UNREACHABLE":
            if inst.unreachable_since is None:
                inst.unreachable_since = now
            inst.state = state
        elif state in ACTIVE_STATES:
            inst.unreachable_since = None
            if state != "TASK_KILLING" or not inst.killing:
                inst.state = state
            if state == "TASK_RUNNING" and inst.started_at is None:
                inst.started_at = now
            if status.get("healthy") is not None:
                self._health(inst, bool(status["healthy"]), status.get("message"), now)
        if _mutable(inst) != before:
            # Only then: a reconciliation after a failover answers for every task, and
            # rewriting 10,000 unchanged records would hold the new leader up for seconds.
            self._changed(inst)

    def _health(self, inst: Instance, healthy: bool, message: str | None, now: float) -> None:
        before = inst.healthy
        inst.healthy = healthy
        spec = self.apps.get(inst.app_id) or {}
        check = (spec.get("healthChecks") or [None])[0]
        if healthy:
            inst.consecutive_failures = 0
            inst.last_success = now
            if inst.first_success is None:
                inst.first_success = now
        else:
            inst.consecutive_failures += 1
            inst.last_failure = now
            inst.last_failure_cause = message or "health check failed"
            self._publish(
                "failed_health_check_event",
                now,
                appId=inst.app_id,
                taskId=inst.task_id,
                instanceId=instance_id(inst.task_id),
                healthCheck=check,
            )
        if before != healthy:
            self._publish(
                "health_status_changed_event",
                now,
                appId=inst.app_id,
                taskId=inst.task_id,
                instanceId=instance_id(inst.task_id),
                version=inst.version,
                alive=healthy,
                healthCheck=check,
            )
            self._publish(
                "instance_health_changed_event",
                now,
                instanceId=instance_id(inst.task_id),
                runSpecId=inst.app_id,
                healthy=healthy,
                runSpecVersion=inst.version,
            )

    def _terminal(self, inst: Instance, state: str, status: Mapping[str, Any], now: float) -> None:
        self._remove(inst)
        self.reservations.gone_with_agent(self.reservations.get(inst.reservation), state)
        if inst.killing:
            return
        if state == "TASK_KILLED" and status.get("healthy") is False:
            self._publish(
                "unhealthy_task_kill_event",
                now,
                appId=inst.app_id,
                taskId=inst.task_id,
                instanceId=instance_id(inst.task_id),
                version=inst.version,
                reason=status.get("message") or "health checks failed",
                host=inst.host,
                slaveId=inst.agent_id,
            )
        rt = self._rt(inst.app_id)
        self._stale(inst.app_id)
        rt.last_failure = {
            "appId": inst.app_id,
            "host": inst.host,
            "message": status.get("message", ""),
            "state": state,
            "taskId": inst.task_id,
            "instanceId": instance_id(inst.task_id),
            "slaveId": inst.agent_id,
            "timestamp": iso(now),
            "version": inst.version,
        }
        spec = self.apps.get(inst.app_id)
        if state in FAILURE_STATES and spec is not None:
            base = spec["backoffSeconds"]
            rt.delay = base if rt.delay <= 0 else rt.delay * spec["backoffFactor"]
            rt.delay = min(rt.delay, spec["maxLaunchDelaySeconds"])
            rt.delay_until = now + rt.delay

    def _remove(self, inst: Instance) -> None:
        # its reservation is free for the instance's next task
        self.reservations.ended(self.reservations.get(inst.reservation), inst.task_id)
        self.instances.pop(inst.task_id, None)
        self._probe_at.pop(inst.task_id, None)
        self.readiness_results.pop(inst.task_id, None)
        ids = self.by_app.get(inst.app_id)
        if ids is not None:
            ids.discard(inst.task_id)
            if not ids:
                del self.by_app[inst.app_id]
        self._changed(inst)
        self._touched.add(inst.app_id)

    def _kill(self, inst: Instance | None, now: float) -> None:
        if inst is None:
            return
        spec = self.apps.get(inst.app_id) or {}
        if not inst.killing:
            inst.killing = True
            self._changed(inst)
        inst.kill_sent_at = now
        self._touched.add(inst.app_id)
        self.outbox.append(
            Kill(inst.task_id, inst.agent_id, spec.get("taskKillGracePeriodSeconds"))
        )

    # -- the periodic pass -----------------------------------------------------------------

    def tick(self, now: float, full: bool = False) -> None:
        """Advances deployments and decides kills and wanted launches for the apps touched
        since the last tick (every app with ``full``, which also runs the timers)."""
        apps = set(self.apps) | set(self.by_app) if full else self._touched
        self._touched = set()
        held = self._held()
        for app_id in sorted(apps):
            if app_id in held:
                self.wanted.pop(app_id, None)
                continue
            self._scale(app_id, now, full)
        moved = self._advance_deployments(now, None if full else apps)
        held = self._held()
        for app_id in sorted(moved - held):  # deployments moved on: act on their next steps
            self._scale(app_id, now, False)
        self._probes(now)
        if full:
            timeout = self.config.reservation_timeout
            self._touched.update(self.reservations.timeouts(now, timeout))
        demand = any(n > 0 for n in self.wanted.values()) or self.extra_demand
        demand = demand or bool(self.reservations.to_free)
        starved = full and now - max(self._last_offer_at, self._last_revive_at) > REVIVE_AFTER
        if demand and (self.suppressed or self._filtered or starved):
            # Also after idle declines (their long filters would hold the offers back), and
            # again while launches wait without any offer coming (a lost REVIVE).
            self.suppressed = self._filtered = False
            self._last_revive_at = now
            self.outbox.append(Revive())
        elif not demand and not self.suppressed and self.framework_id is not None:
            self.suppressed = True
            self.outbox.append(Suppress())

    def _held(self) -> set[str]:
        """Apps whose deployment step has not come yet: left exactly as they are (cached
        until a deployment is added, removed or moves on)."""
        if self._held_cache is None:
            held: set[str] = set()
            for d in self.deployments.values():
                for i, step in enumerate(d.steps):
                    if i > d.current:
                        held.update(a["app"] for a in step)
            self._held_cache = held
        return self._held_cache

    def _is_healthy(self, inst: Instance, spec: Mapping[str, Any]) -> bool:
        """Running, reachable, healthy if its own configuration checks health, and ready if
        it has the configuration that brought the readiness check (instances of an older
        one count as ready, as in Marathon, where readiness gates only the deployment that
        starts a task)."""
        config = spec["versionInfo"]["lastConfigChangeAt"]
        own = spec
        if inst.config_version != config:
            # Judged by the configuration it was launched with, as Marathon's
            # Instance.consideredHealthy: an instance launched without health checks that
            # runs is healthy, even once the app has gained a health check.
            versions = self.versions.get(inst.app_id, {})
            own = versions.get(inst.version) or versions.get(inst.config_version) or spec
        return (
            inst.state == "TASK_RUNNING"
            and inst.unreachable_since is None
            and (not own.get("healthChecks") or inst.healthy is True)
            and (
                inst.ready is True
                or not spec.get("readinessChecks")
                or inst.config_version != config
            )
        )

    # -- readiness checks ------------------------------------------------------------------

    def _probes(self, now: float) -> None:
        """Asks the shell to check the running, not yet ready instances of the current
        configuration of apps with a readiness check, each at its interval."""
        for app_id, spec in self.apps.items():
            checks = spec.get("readinessChecks")
            if not checks:
                continue
            check = checks[0]
            config = spec["versionInfo"]["lastConfigChangeAt"]
            for inst in self.app_instances(app_id):
                if (
                    inst.ready is True
                    or inst.state != "TASK_RUNNING"
                    or inst.killing
                    or inst.config_version != config
                    or inst.task_id in self._probing
                    or self._probe_at.get(inst.task_id, 0.0) > now
                ):
                    continue
                url = self._readiness_url(inst, spec, check)
                if url is None:
                    self.readiness(inst.task_id, None, "the task has no such port", now)
                    continue
                self._probing.add(inst.task_id)
                self.outbox.append(
                    Probe(
                        inst.task_id,
                        url,
                        float(check["timeoutSeconds"]),
                        list(check["httpStatusCodesForReady"]),
                        check,
                    )
                )

    def _readiness_url(
        self, inst: Instance, spec: Mapping[str, Any], check: Mapping[str, Any]
    ) -> str | None:
        names = [p.get("name") for p in app_ports(spec)]
        index = names.index(check["portName"]) if check["portName"] in names else -1
        if not 0 <= index < len(inst.ports):
            return None
        scheme = "https" if check.get("protocol") == "HTTPS" else "http"
        return f"{scheme}://{inst.host}:{inst.ports[index]}{check['path']}"

    def readiness(
        self,
        task_id: str,
        status: int | None,
        message: str,
        now: float,
        content_type: str | None = None,
        body: str | None = None,
    ) -> None:
        """The answer to a `Probe`: the HTTP status (None: no answer, ``message`` says
        why). Ready once the status is one of the check's ``httpStatusCodesForReady``;
        otherwise checked again after ``intervalSeconds``."""
        self._probing.discard(task_id)
        inst = self.instances.get(task_id)
        spec = self.apps.get(inst.app_id) if inst is not None else None
        checks = (spec or {}).get("readinessChecks")
        if inst is None or spec is None or not checks:
            return
        check = checks[0]
        ready = status is not None and status in check["httpStatusCodesForReady"]
        result: dict[str, Any] = {
            "name": check["name"],
            "taskId": task_id,
            "ready": ready,
            "lastResponse": None,
        }
        if check["preserveLastResponse"] or status is None:
            result["lastResponse"] = {
                "status": status,
                "contentType": content_type,
                "body": body if status is not None else message,
            }
        self.readiness_results[task_id] = result
        self._stale(inst.app_id)
        if ready:
            inst.ready = True
            self._changed(inst)
            self._touched.add(inst.app_id)  # the deployment may move on
        else:
            self._probe_at[task_id] = now + check["intervalSeconds"]

    def _inactive(self, inst: Instance, spec: Mapping[str, Any] | None, now: float) -> bool:
        if inst.unreachable_since is None:
            return False
        after, _ = unreachable_after((spec or {}).get("unreachableStrategy", "disabled"))
        return now - inst.unreachable_since >= after

    def _scale(self, app_id: str, now: float, timers: bool) -> None:
        spec = self.apps.get(app_id)
        instances = self.app_instances(app_id)
        if spec is None:  # deleted: every instance goes, and every reservation
            self.wanted.pop(app_id, None)
            for res in self.reservations.of(app_id):
                self.reservations.decommission(res)
            for inst in instances:
                if not inst.killing or now - (inst.kill_sent_at or 0) > KILL_RETRY_SECONDS:
                    self._kill(inst, now)
            return
        for inst in instances:
            if timers:
                self._timers(inst, spec, now)
        instances = self.app_instances(app_id)
        target = spec["instances"]
        config = spec["versionInfo"]["lastConfigChangeAt"]
        active = [i for i in instances if not i.killing and not self._inactive(i, spec, now)]
        new = [i for i in active if i.config_version == config]
        old = [i for i in active if i.config_version != config]
        healthy = sum(1 for i in active if self._is_healthy(i, spec))
        bounds = upgrade_bounds(target, spec["upgradeStrategy"], is_resident(spec))
        ordered = self._kill_order(old, spec)
        is_healthy = functools.partial(self._is_healthy, spec=spec)
        for inst in rolling_kills(ordered, len(new), healthy, is_healthy, bounds):
            self._kill(inst, now)
            old.remove(inst)
        _, max_capacity = bounds
        if len(new) > target:
            for inst in self._scale_down_kills(new, spec, len(new) - target):
                self._kill(inst, now)
            new = new[:target]
        want = target - len(new)
        if old:
            want = min(want, max_capacity - len(new) - len(old))
        want = max(0, want)
        rt = self._rt(app_id)
        if want > 0:
            self.wanted[app_id] = want
            if rt.queued_since is None:
                rt.queued_since = now
        else:
            self.wanted.pop(app_id, None)
            rt.launch_finished()

    def _timers(self, inst: Instance, spec: Mapping[str, Any], now: float) -> None:
        if inst.killing and now - (inst.kill_sent_at or 0) > KILL_RETRY_SECONDS:
            self._kill(inst, now)
        if inst.unreachable_since is not None:
            _, expunge = unreachable_after(spec.get("unreachableStrategy", "disabled"))
            if now - inst.unreachable_since >= expunge:
                self._remove(inst)  # expunged; if it ever comes back it is killed as unknown
        elif (
            inst.state == "TASK_STAGING" and now - inst.staged_at > self.config.task_launch_timeout
        ):
            self._kill(inst, now)
            self._remove(inst)

    def _scale_down_kills(
        self, instances: list[Instance], spec: Mapping[str, Any], count: int
    ) -> list[Instance]:
        """The ``count`` instances a scale-down kills: first those that keep the app's
        GROUP_BY groups even, then the rest in `_kill_order` (Marathon's
        ScalingProposition.propose with Constraints.selectInstancesToKill)."""
        ordered = self._kill_order(instances, spec)
        first = balanced_kills(spec["constraints"], ordered, count, _placement)
        chosen = {i.task_id for i in first}
        return first + [i for i in ordered if i.task_id not in chosen][: count - len(first)]

    def _kill_order(self, instances: list[Instance], spec: Mapping[str, Any]) -> list[Instance]:
        """Which to kill first: unreachable, then not yet running, then unhealthy, then by
        the app's killSelection (YOUNGEST_FIRST: latest staged first)."""
        youngest = spec.get("killSelection", "YOUNGEST_FIRST") == "YOUNGEST_FIRST"

        def key(i: Instance) -> tuple[int, int, int, float]:
            return (
                0 if i.unreachable_since is not None else 1,
                0 if i.state != "TASK_RUNNING" else 1,
                0 if i.healthy is False else 1,
                -i.staged_at if youngest else i.staged_at,
            )

        return sorted(instances, key=key)

    def _advance_deployments(self, now: float, apps: set[str] | None) -> set[str]:
        """Moves deployments past finished steps (only those acting on ``apps`` unless
        None); returns the apps of the steps now current."""
        moved: set[str] = set()
        candidates = self.deployments.values() if apps is None else self.locking_deployments(apps)
        for d in list(candidates):
            while d.current < len(d.steps) and all(
                self._done(a, d, now) for a in d.steps[d.current]
            ):
                d.current += 1
                self._held_cache = None
                self.dirty.add(("deployment", d.id))
                # As Marathon's events: the step that succeeded, then the one now current.
                plan = d.plan_json()
                done = d.step_json(d.current - 1)
                self._publish("deployment_step_success", now, plan=plan, currentStep=done)
                if d.current < len(d.steps):
                    moved.update(a["app"] for a in d.steps[d.current])
                    current = d.step_json(d.current)
                    self._publish("deployment_info", now, plan=plan, currentStep=current)
            if d.current >= len(d.steps):
                self._drop_deployment(d)
                self._publish("deployment_success", now, id=d.id, plan=d.plan_json())
                for app_id, spec in d.target.items():
                    if spec is not None:
                        self._publish(
                            "group_change_success", now, groupId=_parent(app_id), version=d.version
                        )
        return moved

    def _done(self, action: Mapping[str, str], d: Deployment, now: float) -> bool:
        app_id, kind = action["app"], action["action"]
        if kind == "StartApplication":
            return True
        if kind == "StopApplication":
            if app_id in self.apps:
                return True  # re-created since: nothing left to stop
            if self.by_app.get(app_id):
                return False
            if app_id in self._stopping:
                self._stopping.discard(app_id)
                for version in self.versions.pop(app_id, {}):
                    self.dirty.add(("appver", f"{app_id} {version}"))
                self.runtime.pop(app_id, None)
                self._stale(app_id)
                self.wanted.pop(app_id, None)
                self._publish("app_terminated_event", now, appId=app_id)
            return True
        return self.converged(app_id, now)

    def converged(self, app_id: str, now: float) -> bool:
        """Whether an app runs exactly its target: the wanted number of instances, all of
        the current configuration, all healthy, none being killed."""
        spec = self.apps.get(app_id)
        if spec is None:
            return not self.by_app.get(app_id)
        config = spec["versionInfo"]["lastConfigChangeAt"]
        count = 0
        for inst in self.app_instances(app_id):
            if self._inactive(inst, spec, now):
                continue
            if inst.killing or inst.config_version != config or not self._is_healthy(inst, spec):
                return False
            count += 1
        return count == spec["instances"]

    # -- offers ----------------------------------------------------------------------------

    def offers(self, offers: list[dict[str, Any]], now: float) -> None:
        """Places wanted instances on offers; what is not used is declined."""
        self._last_offer_at = now
        any_wanted = any(n > 0 for n in self.wanted.values()) or self.extra_demand
        declined: dict[float, list[str]] = {}
        held = self._held()
        order = [
            a
            for a, n in self.wanted.items()
            if n > 0 and a in self.apps and a not in held and self._rt(a).delay_until <= now
        ]
        for offer in offers:
            launched: list[dict[str, Any]] = []
            labelled = resident.offered(offer, self.framework_id)
            operations = self.reservations.freeing(labelled) if labelled else []
            if order:
                launched = self._fill(offer, order, labelled, operations, now)
                order = [a for a in order if self.wanted.get(a, 0) > 0]
            if launched or operations:
                self.outbox.append(
                    Launch(offer["id"]["value"], offer["agent_id"]["value"], launched, operations)
                )
            else:
                demand = bool(order) or any_wanted
                refuse = REFUSE_WHEN_UNFIT if demand else REFUSE_WHEN_IDLE
                self._filtered = self._filtered or not demand
                declined.setdefault(refuse, []).append(offer["id"]["value"])
        for refuse, ids in declined.items():  # one DECLINE call per filter, not per offer
            self.outbox.append(Decline(ids, refuse))

    def _fill(
        self,
        offer: dict[str, Any],
        order: list[str],
        labelled: Mapping[str, list[dict[str, Any]]],
        operations: list[dict[str, Any]],
        now: float,
    ) -> list[dict[str, Any]]:
        """The tasks the waiting apps (``order``) launch on an offer; a resident app's new
        reservations are appended to ``operations``."""
        pool = Pool(offer, self.rng)
        hostname = offer.get("hostname", "")
        attributes = attributes_of(offer)
        ip = _offer_ip(offer)
        tasks: list[dict[str, Any]] = []
        # The least any waiting app needs: once the offer has less, nobody fits any more.
        least = {n: min(float(self.apps[a][n]) for a in order) for n in ("cpus", "mem")}
        for app_id in order:
            spec = self.apps[app_id]
            # Only an offer already used in part stops here: one that fits nobody from the
            # start is still looked at by every app, so that each queue entry says why. A
            # resident app may still launch on the reservations the offer carries.
            if tasks and any(pool.total(n) + 1e-9 < least[n] for n in least):
                if not labelled:
                    break
                if not is_resident(spec):
                    continue
            rt = self._rt(app_id)
            if is_resident(spec):
                used = self._fill_resident(spec, offer, pool, labelled, tasks, operations, now)
                self._offer_counted(rt, app_id, used, now)
                continue
            used = False
            while self.wanted.get(app_id, 0) > 0:
                refused = self._refusals(spec, offer, hostname, attributes, now)
                taken = None if refused else pool.take(spec)
                if taken is None:
                    # As Marathon's ResourceMatcher: the resources short and every other
                    # reason together; ports only once everything else fits.
                    reasons = pool.missing(spec) if refused else list(pool.reasons)
                    reasons += [r for r in refused if r not in reasons]
                    if not used:
                        self._no_match(rt, offer, reasons, now)
                    break
                resources, ports = taken
                inst = self._instance(spec, offer, hostname, ip, attributes, ports, now)
                tasks.append(task_info(spec, inst, resources))
                self.wanted[app_id] -= 1
                used = True
            self._offer_counted(rt, app_id, used, now)
        return tasks

    def _offer_counted(self, rt: AppRuntime, app_id: str, used: bool, now: float) -> None:
        """Counts an offer an app looked at (Marathon's OfferMatchStatistics)."""
        rt.processed_offers += 1
        if used:
            rt.last_used_at = now
        else:
            rt.unused_offers += 1
            rt.last_unused_at = now
        if not self.wanted.get(app_id, 0):
            rt.launch_finished()  # the next launch (a failure's replacement) counts anew

    def _fill_resident(
        self,
        spec: Mapping[str, Any],
        offer: dict[str, Any],
        pool: Pool,
        labelled: Mapping[str, list[dict[str, Any]]],
        tasks: list[dict[str, Any]],
        operations: list[dict[str, Any]],
        now: float,
    ) -> bool:
        """A resident app's share of an offer, as Marathon's ``inferForResidents``: first
        its idle instances whose reservations the offer carries are launched on exactly
        those; then, while fewer instances are idle than launches are wanted, new ones
        reserve resources and create volumes (launched when an offer brings them back).
        Returns whether the offer was used."""
        app_id = spec["id"]
        used = False
        for res, resources in self.reservations.idle_offered(labelled, app_id):
            if self.wanted.get(app_id, 0) <= 0:
                break
            inst = self._instance_on(spec, res, now)
            tasks.append(task_info(spec, inst, resources))
            self.wanted[app_id] -= 1
            used = True
        hostname = offer.get("hostname", "")
        attributes = attributes_of(offer)
        while self.framework_id is not None:
            idle = self.reservations.spare(app_id, self._not_killing)
            if idle >= self.wanted.get(app_id, 0):
                if not used and idle:  # the rest wait for offers of their reservations
                    self._no_match(
                        self._rt(app_id), offer, ["NoCorrespondingReservationFound"], now
                    )
                break
            refused = self._refusals(spec, offer, hostname, attributes, now)
            volumes = [(v["containerPath"], v["persistent"]) for v in persistent_volumes(spec)]
            on_root, elsewhere = resident.split_volumes(info for _, info in volumes)
            picks = None if refused else pool.take_sources(elsewhere)
            taken = None
            if picks is not None:
                taken = pool.take({**spec, "disk": spec["disk"] + on_root})
                if taken is None:
                    pool.put_back(picks)
            if taken is None or picks is None:
                if not used:
                    reasons = pool.missing(spec) if refused or picks is None else pool.reasons
                    reasons = list(reasons) + (["InsufficientDisk"] if picks is None else [])
                    reasons += [r for r in refused if r not in reasons]
                    self._no_match(self._rt(app_id), offer, list(dict.fromkeys(reasons)), now)
                break
            resources, ports = taken
            unique = str(uuid.uuid4())
            rid = f"{safe_id(app_id)}.instance-{unique}"
            made = resident.volumes_made(app_id, volumes, picks, unique)
            operations += resident.reserve_and_create(
                spec["role"],
                resident.labels(self.framework_id, rid),
                [*resources, *(disk for _, _, disk in picks)],
                made,
            )
            res = Reservation(
                id=rid,
                app_id=app_id,
                agent_id=offer["agent_id"]["value"],
                host=hostname,
                ip=_offer_ip(offer),
                attributes=attributes,
                volumes=[{"containerPath": c, "persistenceId": p} for c, _, p, _ in made],
                ports=ports,
                created_at=now,
            )
            self.reservations.add(res)
            self._touched.add(app_id)
            used = True
        return used

    @staticmethod
    def _no_match(rt: AppRuntime, offer: dict[str, Any], reasons: list[str], now: float) -> None:
        """Records an offer an app could not use (Marathon's ``OfferMatchStatistics``):
        the launch attempt's summary counts it under its first reason of the funnel, and
        it becomes the agent's last unused offer."""
        if reasons:
            first = min(reasons, key=REASON_FUNNEL.index)
            rt.rejects[first] = rt.rejects.get(first, 0) + 1
        rt.last_no_match[offer["agent_id"]["value"]] = (offer, reasons, now)

    def _refusals(
        self,
        spec: Mapping[str, Any],
        offer: Mapping[str, Any],
        hostname: str,
        attributes: Mapping[str, str],
        now: float,
    ) -> list[str]:
        """Why an app may not use an offer at all, whatever its resources, in the order of
        Marathon's ``ResourceMatcher``: a constraint not met; an agent in maintenance (which
        Marathon reports as ``UnfulfilledConstraint`` and ``AgentMaintenance``, so that the
        funnel counts it under the former); GPUs an app without gpus must leave alone."""
        out = []
        violated = self._violation(spec, hostname, attributes, now)
        if violated:
            out.append(violated)
        if self.config.maintenance_mode and self._in_maintenance(offer, now):
            out += ["UnfulfilledConstraint", "AgentMaintenance"]
        if self._scarce_gpus(spec, offer):
            out.append("DeclinedScarceResources")
        return out

    def _in_maintenance(self, offer: Mapping[str, Any], now: float) -> bool:
        """Marathon's ``Availability.offerAvailable``, negated: the offer's agent is within
        ``draining_seconds`` of its unavailability's start, or past it and either without an
        end or not yet at it (docs/maintenance.md: the master puts the window on offers)."""
        window = offer.get("unavailability")
        if not isinstance(window, Mapping):
            return False
        start = (window.get("start") or {}).get("nanoseconds")
        if not isinstance(start, int | float) or isinstance(start, bool):
            return False
        start_s = start / 1e9
        if now <= start_s - self.config.draining_seconds:
            return False
        duration = (window.get("duration") or {}).get("nanoseconds")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            return now <= start_s + duration / 1e9
        return True

    def _scarce_gpus(self, spec: Mapping[str, Any], offer: Mapping[str, Any]) -> bool:
        """Marathon's ``checkGpuSchedulingBehaviour``: under the ``restricted`` behaviour (the
        flag's, or the app's ``GPU_SCHEDULING_BEHAVIOR`` label when that names one) an app
        without gpus does not take an offer with GPUs, of any role, leaving them to apps
        that need them."""
        if spec["gpus"]:
            return False
        behavior = spec["labels"].get(GPU_BEHAVIOR_LABEL)
        if behavior not in GPU_BEHAVIORS:
            behavior = self.config.gpu_scheduling_behavior
        if behavior != "restricted":
            return False
        gpus = 0.0
        for r in offer.get("resources", ()):
            if r.get("name") == "gpus" and r.get("type") == "SCALAR":
                gpus += float((r.get("scalar") or {}).get("value", 0))
        return gpus > 0

    def _violation(
        self, spec: Mapping[str, Any], hostname: str, attributes: Mapping[str, str], now: float
    ) -> str | None:
        if not spec["constraints"]:
            return None
        placed = [
            (i.host, i.attributes)
            for i in self.app_instances(spec["id"])
            if not i.killing and not self._inactive(i, spec, now)
        ]
        # a resident instance between tasks stays where its reservation is
        placed += [
            (r.host, r.attributes)
            for r in self.reservations.of(spec["id"])
            if not r.task_id and not r.decommissioned
        ]
        if first_violation(spec["constraints"], hostname, attributes, placed):
            return "UnfulfilledConstraint"
        return None

    def _not_killing(self, task_id: str) -> bool:
        inst = self.instances.get(task_id)
        return inst is not None and not inst.killing

    def _instance_on(self, spec: Mapping[str, Any], res: Reservation, now: float) -> Instance:
        """The next task of a resident instance, on its reservation (Marathon's
        ``Task.Id.nextIncarnationFor``: the attempt counter of its task id goes up)."""
        res.attempt += 1
        inst = Instance(
            task_id=f"{res.id}._app.{res.attempt}",
            app_id=res.app_id,
            version=spec["version"],
            config_version=spec["versionInfo"]["lastConfigChangeAt"],
            agent_id=res.agent_id,
            host=res.host,
            ip=res.ip,
            attributes=res.attributes,
            ports=list(res.ports),
            staged_at=now,
            reservation=res.id,
        )
        self.reservations.launched_on(res, inst.task_id)
        self.instances[inst.task_id] = inst
        self.by_app.setdefault(res.app_id, set()).add(inst.task_id)
        self._changed(inst)
        return inst

    def _instance(
        self,
        spec: Mapping[str, Any],
        offer: Mapping[str, Any],
        hostname: str,
        ip: str,
        attributes: dict[str, str],
        ports: list[int],
        now: float,
    ) -> Instance:
        app_id = spec["id"]
        task_id = f"{safe_id(app_id)}.instance-{uuid.uuid4()}._app.1"
        inst = Instance(
            task_id=task_id,
            app_id=app_id,
            version=spec["version"],
            config_version=spec["versionInfo"]["lastConfigChangeAt"],
            agent_id=offer["agent_id"]["value"],
            host=hostname,
            ip=ip,
            attributes=attributes,
            ports=ports,
            staged_at=now,
        )
        self.instances[task_id] = inst
        self.by_app.setdefault(app_id, set()).add(task_id)
        self._changed(inst)
        return inst

    # -- views -----------------------------------------------------------------------------

    def in_queue(self, app_id: str) -> bool:
        """Whether an app waits for launches (`queue` lists it)."""
        return app_id in self.apps and self.wanted.get(app_id, 0) > 0

    def queue(self, now: float, embed_offers: bool = False) -> list[dict[str, Any]]:
        """``/v2/queue``: apps waiting for launches, with their backoff delay and the offers
        processed for them, as Marathon's ``QueueInfoConversion`` writes them (with
        ``lastUnusedOffers`` only where ``embed_offers``: ``embed=lastUnusedOffers``).
        Without the ``role`` Marathon 1.9 added: the ``marathon`` client 0.13.0 builds
        each entry from its fields and fails on one it does not know."""
        out = []
        for app_id, count in sorted(self.wanted.items()):
            if not self.in_queue(app_id):
                continue
            spec = self.apps[app_id]
            rt = self._rt(app_id)
            left = rt.delay_until - now
            last = sorted(rt.last_no_match.values(), key=lambda m: m[2])
            last_firsts: dict[str, int] = {}
            for _, reasons, _ in last:
                if reasons:
                    first = min(reasons, key=REASON_FUNNEL.index)
                    last_firsts[first] = last_firsts.get(first, 0) + 1
            summary: dict[str, Any] = {
                "processedOffersCount": rt.processed_offers,
                "unusedOffersCount": rt.unused_offers,
            }
            # absent until there is such an offer, as in Marathon's answers
            if rt.last_unused_at is not None:
                summary["lastUnusedOfferAt"] = iso(rt.last_unused_at)
            if rt.last_used_at is not None:
                summary["lastUsedOfferAt"] = iso(rt.last_used_at)
            summary["rejectSummaryLastOffers"] = funnel(len(last), last_firsts)
            summary["rejectSummaryLaunchAttempt"] = funnel(rt.processed_offers, rt.rejects)
            item: dict[str, Any] = {
                "count": count,
                # whole seconds, as Marathon's QueueDelay (an int64); overdue: not backed off
                "delay": {"timeLeftSeconds": max(0, int(left)), "overdue": left <= 0},
                "since": iso(rt.queued_since or now),
                "processedOffersSummary": summary,
            }
            if embed_offers:
                item["lastUnusedOffers"] = [
                    {"offer": offer_json(o), "reason": list(reasons), "timestamp": iso(t)}
                    for o, reasons, t in last
                ]
            item["app"] = spec  # last, as Marathon's QueueApp writes it (its role left out)
            out.append(item)
        return out

    def task_json(self, inst: Instance) -> dict[str, Any]:
        """A task as ``/v2/tasks`` shows it (cached until the instance or its app changes;
        callers must not modify it)."""
        spec = self.apps.get(inst.app_id) or {}
        cached = self._task_json.get(inst.task_id)
        if cached is not None and cached[0] == spec.get("version"):
            return cached[1]
        out = self._render_task(inst, spec)
        self._task_json[inst.task_id] = (spec.get("version", ""), out)
        return out

    def _render_task(self, inst: Instance, spec: Mapping[str, Any]) -> dict[str, Any]:
        results = []
        if spec.get("healthChecks") and inst.healthy is not None:
            results.append(
                {
                    "alive": inst.healthy,
                    "consecutiveFailures": inst.consecutive_failures,
                    "firstSuccess": iso(inst.first_success),
                    "lastFailure": iso(inst.last_failure),
                    "lastSuccess": iso(inst.last_success),
                    "lastFailureCause": inst.last_failure_cause,
                    "taskId": inst.task_id,
                    "instanceId": instance_id(inst.task_id),
                }
            )
        state = "TASK_KILLING" if inst.killing else inst.state
        return {
            "id": inst.task_id,
            "appId": inst.app_id,
            "host": inst.host,
            "ports": inst.ports,
            "servicePorts": [p["servicePort"] for p in app_ports(spec)],
            "slaveId": inst.agent_id,
            "stagedAt": iso(inst.staged_at),
            "startedAt": iso(inst.started_at),
            "version": inst.version,
            "state": state,
            "ipAddresses": [{"ipAddress": inst.ip, "protocol": "IPv4"}],
            "healthCheckResults": results,
            "localVolumes": self._local_volumes(inst),
            "role": spec.get("role", self.config.role),
        }

    def _local_volumes(self, inst: Instance) -> list[dict[str, str]]:
        res = self.reservations.get(inst.reservation)
        return res.local_volumes() if res is not None else []

    def counts(self, app_id: str) -> dict[str, int]:
        spec = self.apps.get(app_id) or {}
        out = {"tasksStaged": 0, "tasksRunning": 0, "tasksHealthy": 0, "tasksUnhealthy": 0}
        for inst in self.app_instances(app_id):
            if inst.state == "TASK_RUNNING":
                out["tasksRunning"] += 1
            elif inst.state in ("TASK_STAGING", "TASK_STARTING"):
                out["tasksStaged"] += 1
            if spec.get("healthChecks"):
                if inst.healthy is True:
                    out["tasksHealthy"] += 1
                elif inst.healthy is False:
                    out["tasksUnhealthy"] += 1
        return out

    def readiness_of(self, app_id: str) -> list[dict[str, Any]]:
        """The last readiness check result of each of the app's instances checked so far."""
        results = self.readiness_results
        return [results[t] for t in sorted(self.by_app.get(app_id, ())) if t in results]

    def app_bytes(self, app_id: str, embed: set[str]) -> bytes:
        """`app_json` encoded as JSON, cached until something it shows changes."""
        key = 0
        for item in embed:
            key |= _EMBED_BITS.get(item, 0)
        cached = self._app_bytes.setdefault(app_id, {})
        out = cached.get(key)
        if out is None:
            out = cached[key] = _encode(self.app_json(app_id, embed))
        return out

    def app_json(self, app_id: str, embed: set[str]) -> dict[str, Any]:
        """An app as ``GET /v2/apps`` shows it; ``embed`` holds ``tasks``, ``counts``,
        ``deployments``, ``lastTaskFailure``, ``taskStats`` (without the ``apps.`` prefix)."""
        out = render_app(self.apps[app_id])
        out.update(self.counts(app_id))
        out["deployments"] = [{"id": d.id} for d in self.locking_deployments([app_id])]
        if "tasks" in embed:
            out["tasks"] = [self.task_json(i) for i in self.app_instances(app_id)]
        if "lastTaskFailure" in embed or "failures" in embed:
            failure = self._rt(app_id).last_failure
            if failure is not None:
                out["lastTaskFailure"] = failure
        if "taskStats" in embed:
            c = self.counts(app_id)
            counts = {
                "staged": c["tasksStaged"],
                "running": c["tasksRunning"],
                "healthy": c["tasksHealthy"],
                "unhealthy": c["tasksUnhealthy"],
            }
            out["taskStats"] = {"totalSummary": {"stats": {"counts": counts}}}
        if "readiness" in embed:
            out["readinessCheckResults"] = self.readiness_of(app_id)
        return out


def _offer_ip(offer: Mapping[str, Any]) -> str:
    """The agent's address an offer names (its hostname where it names none)."""
    return ((offer.get("url") or {}).get("address") or {}).get("ip") or offer.get("hostname", "")


def _placement(inst: Instance) -> tuple[str, Mapping[str, str]]:
    return inst.host, inst.attributes


def _levels(specs: Mapping[str, dict[str, Any]], graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The changed apps (``specs``) in dependency order: an app comes after every changed
    app it depends on, directly or through unchanged ones (``graph``, acyclic); apps in one
    level do not depend on each other."""
    ids = set(specs)

    def changed_deps(app_id: str) -> set[str]:
        out: set[str] = set()
        seen = {app_id}
        todo = list(graph.get(app_id, ()))
        while todo:
            dep = todo.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in ids:
                out.add(dep)
            todo.extend(graph.get(dep, ()))
        return out

    remaining = {a: changed_deps(a) for a in sorted(ids)}
    levels = []
    while remaining:
        ready = sorted(a for a, deps in remaining.items() if not deps & remaining.keys())
        levels.append(ready)
        for a in ready:
            del remaining[a]
    return levels


def _mutable(inst: Instance) -> tuple[Any, ...]:
    """What a non-terminal status update may change about an instance."""
    return (
        inst.state,
        inst.unreachable_since,
        inst.started_at,
        inst.healthy,
        inst.consecutive_failures,
        inst.first_success,
        inst.last_success,
        inst.last_failure,
        inst.last_failure_cause,
    )


def _with_service_ports(
    spec: dict[str, Any], old: dict[str, Any] | None, taken: set[int]
) -> dict[str, Any]:
    """The definition with each service port given as 0 replaced by one of its own, as
    Marathon assigns them (load balancers such as marathon-lb listen on them): the app's
    current port at the same index where it had one, else the lowest free port of
    `SERVICE_PORTS`. ``taken`` (the ports of other apps) gains the app's ports. A bridged
    app's service ports are its port mappings' ``servicePort``s."""
    bridged = is_bridged(spec)
    key = "servicePort" if bridged else "port"
    if bridged:
        ports = (spec.get("container") or {}).get("portMappings") or []
    else:
        ports = spec.get("portDefinitions") or []
    before = [p["servicePort"] for p in app_ports(old or {})]
    mine = {p[key] for p in ports if p[key] != 0}
    assigned = []
    for i, definition in enumerate(ports):
        port = definition[key]
        if port == 0:
            if i < len(before) and before[i] and before[i] not in taken | mine:
                port = before[i]
            else:
                port = next((p for p in SERVICE_PORTS if p not in taken and p not in mine), 0)
            mine.add(port)
        assigned.append({**definition, key: port})
    taken |= mine
    if not ports:
        return spec
    if bridged:
        return {**spec, "container": {**spec["container"], "portMappings": assigned}}
    return {**spec, "portDefinitions": assigned}


def _under(app_id: str, group_id: str) -> bool:
    group_id = group_id.rstrip("/")
    return group_id == "" or app_id.startswith(group_id + "/")


def _parent(app_id: str) -> str:
    return app_id.rsplit("/", 1)[0] or "/"


def invalid_body(e: Invalid) -> dict[str, Any]:
    return {"message": e.message, "details": e.details}
