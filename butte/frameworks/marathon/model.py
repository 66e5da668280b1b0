"""The planner's records: instances, deployments, per-app runtime, effects; and Marathon's
JSON renderings of them (only the fields Marathon's clients know)."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIVE_STATES = frozenset({"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"})
TERMINAL_STATES = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
        "TASK_UNKNOWN",
    }
)
# Terminal states that count as the app failing (they back off its next launches).
FAILURE_STATES = frozenset({"TASK_FAILED", "TASK_ERROR", "TASK_FINISHED", "TASK_DROPPED"})


# The forms of Marathon's task ids (core/task/Task.scala, Task.Id.parse): the instance-era
# ``<app>.instance-<uuid>._app[.<attempt>]`` (whose instance id is ``<app>.instance-<uuid>``)
# and the legacy ``<app>.<uuid>[.<attempt>]``.
_INSTANCE_TASK_ID = re.compile(r"(.+\.(?:instance-|marathon-)[^_.]+)[._][^.]+(?:\.\d+)?")
_LEGACY_TASK_ID = re.compile(r".+[._][^_.]+(?:\.\d+)?")


def safe_id(path_id: str) -> str:
    """Marathon's ``PathId.safePath`` of an app or pod id: ``/team/db`` is ``team_db``."""
    return path_id.strip("/").replace("/", "_")


def instance_id(task_id: str) -> str:
    """The id of the instance a task belongs to, as Marathon reports it in events, health
    check results and task failures (``web.instance-<uuid>`` of ``web.instance-<uuid>._app.1``);
    an id of another form is its own instance's."""
    m = _INSTANCE_TASK_ID.fullmatch(task_id)
    return m.group(1) if m else task_id


def is_task_id(text: str) -> bool:
    """Whether ``text`` has the form of a Marathon task id (else its task APIs answer 400)."""
    return bool(_INSTANCE_TASK_ID.fullmatch(text) or _LEGACY_TASK_ID.fullmatch(text))


# Marathon's instance conditions (core/condition/Condition.scala) of the Mesos task states;
# TASK_LOST counts as Gone, since butte replaces a lost task at once.
_CONDITIONS = {
    "TASK_STAGING": "Staging",
    "TASK_STARTING": "Starting",
    "TASK_RUNNING": "Running",
    "TASK_KILLING": "Killing",
    "TASK_FINISHED": "Finished",
    "TASK_FAILED": "Failed",
    "TASK_KILLED": "Killed",
    "TASK_ERROR": "Error",
    "TASK_LOST": "Gone",
    "TASK_GONE": "Gone",
    "TASK_GONE_BY_OPERATOR": "Gone",
    "TASK_DROPPED": "Dropped",
    "TASK_UNREACHABLE": "Unreachable",
    "TASK_UNKNOWN": "Unknown",
}


def condition_of(state: str) -> str:
    """The condition ``instance_changed_event`` reports for a Mesos task state."""
    return _CONDITIONS.get(state, "Unknown")


def iso(t: float | None) -> str | None:
    """Marathon's timestamp form: ``2026-12-03T16:39:47.123Z``."""
    if t is None:
        return None
    return iso_ms(round(t * 1000))


@functools.lru_cache(maxsize=65536)
def iso_ms(ms: int) -> str:
    """`iso` of a time in whole milliseconds (exact: no float rounding; cached, as task
    listings format the same instants over and over)."""
    seconds, rest = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{rest:03d}Z"
    )


@dataclass
class Instance:
    """One task of an app (Marathon's instance with its single task)."""

    task_id: str
    app_id: str
    version: str
    config_version: str
    agent_id: str
    host: str
    ip: str
    attributes: dict[str, str]
    ports: list[int]
    staged_at: float
    state: str = "TASK_STAGING"
    started_at: float | None = None
    healthy: bool | None = None
    consecutive_failures: int = 0
    first_success: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_failure_cause: str | None = None
    killing: bool = False
    kill_sent_at: float | None = None
    unreachable_since: float | None = None
    # its app's readiness check passed (None: not yet, or the app has none)
    ready: bool | None = None
    # the id of the `Reservation` it runs on (a resident app's instance), else None
    reservation: str | None = None

    def record(self) -> dict[str, Any]:
        return dict(vars(self))  # serialized at once by the store: a shallow copy will do

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Instance:
        return cls(**data)


@dataclass
class Reservation:
    """A resident app's instance (Marathon's instance with a reservation): its resources
    and persistent volumes reserved on one agent, labelled with ``id`` (the instance id),
    on which each of its tasks is launched in turn (`butte.frameworks.marathon.resident`)."""

    id: str
    app_id: str
    agent_id: str
    host: str
    ip: str
    attributes: dict[str, str]
    # [{"containerPath", "persistenceId"}] of its volumes; the host ports it reserved
    volumes: list[dict[str, str]]
    ports: list[int]
    created_at: float
    # launches on it so far (its task ids end ``._app.<n>``); 0: never launched on, so it
    # may time out unused
    attempt: int = 0
    task_id: str | None = None  # the task running on it now
    decommissioned: bool = False  # to be destroyed and unreserved once offered

    def record(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Reservation:
        return cls(**data)

    def local_volumes(self) -> list[dict[str, str]]:
        """Its volumes as Marathon's task JSON lists them (``localVolumes``: LocalVolumeId)."""
        return [
            {
                "runSpecId": self.app_id,
                "containerPath": v["containerPath"],
                "uuid": v["persistenceId"].rsplit("#", 1)[-1],
                "persistenceId": v["persistenceId"],
            }
            for v in self.volumes
        ]


@dataclass
class Deployment:
    """A plan: steps of actions (``{"action": ..., "app": ...}``), run one step at a time.
    ``original`` holds each affected app's definition before the change (None: it did not
    exist), for a rollback."""

    id: str
    version: str
    steps: list[list[dict[str, str]]]
    original: dict[str, dict[str, Any] | None]
    target: dict[str, dict[str, Any] | None]
    current: int = 0
    # task ids the deployment kills itself (kill-and-scale), once
    kill_tasks: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Deployment:
        return cls(**data)

    @property
    def affected(self) -> list[str]:
        return sorted(self.target)

    def step_of(self, app_id: str) -> int:
        """Index of the last step that acts on ``app_id`` (-1: none)."""
        found = -1
        for i, step in enumerate(self.steps):
            if any(a["app"] == app_id for a in step):
                found = i
        return found

    def json(self) -> dict[str, Any]:
        current = self.steps[self.current] if self.current < len(self.steps) else []
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": self.affected,
            "affectedPods": [],
            "steps": [{"actions": [dict(a) for a in step]} for step in self.steps],
            "currentActions": [
                {"action": a["action"], "app": a["app"], "readinessCheckResults": []}
                for a in current
            ],
            "currentStep": min(self.current + 1, len(self.steps)),
            "totalSteps": len(self.steps),
        }

    def plan_json(self) -> dict[str, Any]:
        """The plan as deployment events carry it (original and target states)."""

        def state(apps: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
            return {
                "id": "/",
                "version": self.version,
                "apps": [a for a in apps.values() if a is not None],
                "groups": [],
                "dependencies": [],
            }

        return {
            "id": self.id,
            "version": self.version,
            "original": state(self.original),
            "target": state(self.target),
            "steps": [self.step_json(i) for i in range(len(self.steps))],
        }

    def step_json(self, index: int) -> dict[str, Any] | None:
        """Step ``index`` as events carry it (``currentStep``); None past the last."""
        if not 0 <= index < len(self.steps):
            return None
        return {"actions": [dict(a) for a in self.steps[index]]}


@dataclass
class AppRuntime:
    """What the planner knows about an app beyond its definition: launch backoff, the
    launch queue and why offers did not fit (not persisted: it restarts from zero)."""

    delay: float = 0.0
    delay_until: float = 0.0
    last_failure: dict[str, Any] | None = None
    queued_since: float | None = None
    processed_offers: int = 0
    unused_offers: int = 0
    last_unused_at: float | None = None
    last_used_at: float | None = None
    # The launch attempt's offers not used, counted by the first reason of REASON_FUNNEL
    # (Marathon's ``rejectSummaryLaunchAttempt``).
    rejects: dict[str, int] = field(default_factory=dict)
    # The last offer not used per agent: agent id -> (offer, reasons, when); what
    # ``rejectSummaryLastOffers`` and ``lastUnusedOffers`` show.
    last_no_match: dict[str, tuple[dict[str, Any], list[str], float]] = field(default_factory=dict)

    def launch_finished(self) -> None:
        """Forgets the offer statistics of a launch attempt once nothing is left to launch,
        as Marathon drops them when its task launcher stops."""
        self.queued_since = None
        self.processed_offers = self.unused_offers = 0
        self.last_unused_at = self.last_used_at = None
        self.rejects = {}
        self.last_no_match = {}


def _value_json(v: Mapping[str, Any], text: bool) -> dict[str, Any]:
    """A resource's or attribute's value in Marathon's ``OfferResource``/``AgentAttribute``
    shape: ``scalar``, ``ranges`` (``begin``/``end``), ``set`` or (attributes) ``text``."""
    kind = v.get("type")
    if kind == "SCALAR":
        return {"scalar": float(v.get("scalar", {}).get("value", 0))}
    if kind == "RANGES":
        spans = v.get("ranges", {}).get("range", [])
        return {"ranges": [{"begin": int(r["begin"]), "end": int(r["end"])} for r in spans]}
    if kind == "SET":
        return {"set": list(v.get("set", {}).get("item", []))}
    if kind == "TEXT" and text:
        return {"text": v.get("text", {}).get("value", "")}
    return {}


def offer_json(offer: Mapping[str, Any]) -> dict[str, Any]:
    """An offer as ``/v2/queue?embed=lastUnusedOffers`` shows it (Marathon's
    ``OfferConversion``): id, hostname, agentId, resources with their role, attributes."""
    resources = []
    for r in offer.get("resources", ()):
        reservations = r.get("reservations") or []
        role = reservations[-1].get("role", "*") if reservations else r.get("role") or "*"
        resources.append({"name": r.get("name", ""), "role": role, **_value_json(r, False)})
    attributes = [
        {"name": a.get("name", ""), **_value_json(a, True)} for a in offer.get("attributes", ())
    ]
    return {
        "id": offer["id"]["value"],
        "hostname": offer.get("hostname", ""),
        "agentId": offer["agent_id"]["value"],
        "resources": resources,
        "attributes": attributes,
    }


# Marathon's ``NoOfferMatchReason.reasonFunnel``: an offer not used counts once in the
# queue's summaries, under the first of its reasons in this order.
REASON_FUNNEL = (
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
)


def funnel(processed: int, declined: Mapping[str, int]) -> list[dict[str, Any]]:
    """Marathon's ``DeclinedOfferStep`` list: per reason of the funnel, the offers declined
    for it and those that reached it (``processed`` less those declined earlier)."""
    out = []
    for reason in REASON_FUNNEL:
        n = declined.get(reason, 0)
        out.append({"reason": reason, "declined": n, "processed": processed})
        processed -= n
    return out


# -- effects ---------------------------------------------------------------------------------


@dataclass
class Launch:
    """One ACCEPT of an offer: ``operations`` (a resident instance's RESERVE and CREATE, a
    freed one's DESTROY and UNRESERVE), then a LAUNCH of ``tasks`` if there are any."""

    offer_id: str
    agent_id: str
    tasks: list[dict[str, Any]]
    operations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LaunchGroup:
    """Pod instances to launch on one offer: per instance (ExecutorInfo, member TaskInfos),
    each one LAUNCH_GROUP operation of the same ACCEPT."""

    offer_id: str
    agent_id: str
    groups: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    # a resident pod instance's RESERVE and CREATE, before the LAUNCH_GROUPs
    operations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Decline:
    offer_ids: list[str]
    refuse_seconds: float


@dataclass
class Kill:
    task_id: str
    agent_id: str | None
    grace_seconds: float | None


@dataclass
class Reconcile:
    tasks: list[tuple[str, str]]  # empty: implicit reconciliation


@dataclass
class Revive:
    pass


@dataclass
class Suppress:
    pass


@dataclass
class Publish:
    event: dict[str, Any]

    @classmethod
    def of(cls, event_type: str, now: float, **fields: Any) -> Publish:
        """An event of the bus (``/v2/events``) of ``event_type`` at ``now``."""
        return cls({"eventType": event_type, "timestamp": iso(now), **fields})


def status_update_event(
    now: float,
    *,
    agent_id: str,
    task_id: str,
    state: str,
    message: str,
    run_spec_id: str,
    host: str,
    ports: list[int],
    ip: str | None,
    version: str,
) -> Publish:
    """Marathon's ``status_update_event`` of one task of an app's or a pod's instance."""
    return Publish.of(
        "status_update_event",
        now,
        slaveId=agent_id,
        taskId=task_id,
        taskStatus=state,
        message=message,
        appId=run_spec_id,
        host=host,
        ports=ports,
        ipAddresses=[] if ip is None else [{"ipAddress": ip, "protocol": "IPv4"}],
        version=version,
    )


def instance_changed_event(
    now: float,
    *,
    instance: str,
    condition: str,
    run_spec_id: str,
    agent_id: str,
    host: str,
    version: str,
) -> Publish:
    """Marathon's ``instance_changed_event``: an instance's condition changed."""
    return Publish.of(
        "instance_changed_event",
        now,
        instanceId=instance,
        condition=condition,
        runSpecId=run_spec_id,
        agentId=agent_id,
        host=host,
        runSpecVersion=version,
    )


@dataclass
class Probe:
    """A readiness check to send: GET ``url``; the answer goes to `Planner.readiness`."""

    task_id: str
    url: str
    timeout: float
    codes: list[int]
    check: dict[str, Any]  # the app's readiness check, as defined


Effect = Launch | LaunchGroup | Decline | Kill | Reconcile | Revive | Suppress | Publish | Probe
