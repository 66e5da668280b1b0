"""The Chronos scheduling core: a pure state machine over jobs, runs and time.

Fed with the current time and events (job added/changed/deleted, run now, kill, offers,
status updates, (re)subscription, ticks), it answers with effects in ``out`` that the
asyncio shell carries out in order: `SaveJob`/`SaveRun` first (the shell makes them durable
before anything else leaves), then calls to the master. No clock, socket or file is touched
here, so tests drive it with plain numbers.

How a slot becomes exactly one run or one counted skip:

* each scheduled job keeps ``next_index`` (the next slot of its `Schedule` not yet
  consumed) and ``last_slot`` (the instant of the last consumed one); `tick` consumes every
  slot at or before now: a slot whose lateness is within ``epsilon`` becomes a queued run, a
  later one is skipped and counted. Indexes only move forward, so a clock stepping back
  never repeats a slot, and one jumping ahead skips (and counts) the slots it jumped over
  in a few steps whatever their number;
* a run's task id (Chronos' ``ct:<due ms>:<attempt>:<job>:<arguments>``) is saved before its
  launch leaves; a run saved as launching that the master, on reconciliation after a
  restart, does not know never reached it and is launched again (same task id); one it
  knows is followed, never launched twice;
* a queued run of a slot that cannot start before ``due + epsilon`` (no offers) is skipped
  and counted instead;
* a slot that comes due while its job has a run waiting in the queue, or while a run of the
  job goes on and the job is not concurrent, is dropped (not run, counted apart from the
  skips), as Chronos' TaskManager and MesosJobFramework drop it.

Retries, manual runs and runs of dependent jobs never expire: they wait for resources. A
retry waits ``failure_retry_delay`` first (Chronos' ``--failure_retry``, 60 s), and, as in
Chronos, a job that failed before and has not succeeded since is not retried. A manual or a
dependent run of a job that already has a run waiting, or of a job that is not concurrent
while a run of it goes on, is dropped, as Chronos' TaskManager drops it (a manual run of a
disabled job too); so is a queued run of a job disabled since, when it is taken from the
queue for an offer. A child counts its parents' successes as Chronos counts invocations of
its graph's edges, all of them forgotten when its list of parents changes.

A run whose task is lost (``TASK_LOST``: its agent became unreachable) counts as a failure and
is retried as Chronos does, and is remembered (state `LOST`) with its *chain*, the attempts of
one run: a lost task that comes back running is killed (its chain went on without it), and
one that comes back ``TASK_FINISHED`` counts as the chain's one success, the failure its loss
counted undone and its chain's queued or running retry dropped, so a run is never counted
twice and a success is never lost.
"""

from __future__ import annotations

import base64
import math
import re
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

from butte.core import task_states
from butte.core.resources import ResourceError, Resources
from butte.frameworks.chronos.jobs import JobError, JobSpec, spec_from_record
from butte.frameworks.chronos.schedule import Schedule, format_instant, parse_schedule
from butte.frameworks.offers import attributes_of, offer_role, plain_resources

QUEUED = "QUEUED"
LAUNCHING = "LAUNCHING"
# A run whose task was lost (agent unreachable) while it may still be running there; kept in
# `ChronosCore.lost`, not among the runs.
LOST = "LOST"
SLOT, MANUAL, DEPENDENCY = "slot", "manual", "dependency"
# Offers are held (not declined) while a slot is due within this many seconds, so the
# launch does not wait for an allocation cycle; none is held longer than HOLD_MAX.
HOLD_AHEAD = 3.0
HOLD_MAX = 10.0
# The offers left over when a slot's runs were placed are released this long after the last
# launch: declining (and suppressing) at once made the master take back 2,000 offers while
# it was launching those runs, which is when their lateness is decided.
RELEASE_AFTER = 2.0
DECLINE_UNFIT_SECONDS = 1.0
DURATIONS_KEPT = 100
HISTORY_KEPT = 20
# How long a lost run is remembered: Mesos' --registry_max_agent_age (two weeks), after which
# its agent is forgotten by the master and cannot bring the task back.
LOST_KEPT_SECONDS = 14 * 86400.0
# Mesos refuses a task id longer than this or with '/', '\' or control characters (an id
# names a sandbox directory); Chronos puts a run's arguments into its id unfiltered but for
# ';' (TaskUtils' commandInjectionFilter), so such a run of Chronos' never launches.
MAX_TASK_ID = 255
_ID_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
# Statuses that mean "this launch never reached the master" for a run still marked
# launching: it is launched again under the same task id instead of counting as a failure.
_NEVER_LAUNCHED_REASONS = frozenset({"REASON_RECONCILIATION", "REASON_INVALID_OFFERS"})
_ACTIVE_STATES = frozenset(
    {
        LAUNCHING,
        task_states.STAGING,
        task_states.STARTING,
        task_states.RUNNING,
        task_states.KILLING,
        task_states.UNREACHABLE,
    }
)


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveJob:
    """Persist (or, with None, delete) a job's record."""

    name: str
    record: dict[str, Any] | None


@dataclass(frozen=True)
class SaveRun:
    """Persist (or, with None, delete) an unfinished run's record."""

    task_id: str
    record: dict[str, Any] | None


@dataclass(frozen=True)
class Launch:
    """ACCEPT one offer with LAUNCH of these TaskInfos."""

    offer_id: str
    tasks: list[dict[str, Any]]


@dataclass(frozen=True)
class Decline:
    offer_ids: list[str]
    refuse_seconds: float


@dataclass(frozen=True)
class Kill:
    task_id: str
    agent_id: str


@dataclass(frozen=True)
class Revive:
    pass


@dataclass(frozen=True)
class Suppress:
    pass


@dataclass(frozen=True)
class Reconcile:
    """Explicit reconciliation of (task id, agent id) pairs."""

    tasks: list[tuple[str, str]]


Effect = SaveJob | SaveRun | Launch | Decline | Kill | Revive | Suppress | Reconcile


# -- state -----------------------------------------------------------------------------------


@dataclass
class Offer:
    """The parts of a master offer the core matches runs against."""

    id: str
    agent_id: str
    hostname: str
    role: str
    cpus: float
    mem: float
    disk: float
    attributes: dict[str, str]
    received: float


def parse_offer(offer: dict[str, Any], now: float) -> Offer:
    """An `Offer` from the master's JSON (only unreserved, plain scalars count)."""
    plain = [
        r
        for r in plain_resources(offer)
        if r.get("role", "*") == "*" and "reservation" not in r and not r.get("reservations")
    ]
    try:
        res = Resources.from_json(plain)
    except ResourceError:
        res = Resources()
    attributes = attributes_of(offer)
    attributes.setdefault("hostname", offer.get("hostname", ""))
    return Offer(
        id=offer["id"]["value"],
        agent_id=offer["agent_id"]["value"],
        hostname=offer.get("hostname", ""),
        role=offer_role(offer),
        cpus=res.scalar("cpus"),
        mem=res.scalar("mem"),
        disk=res.scalar("disk"),
        attributes=attributes,
        received=now,
    )


@dataclass
class Run:
    """One run of a job (one attempt of it), from queued until its task is terminal."""

    task_id: str
    job: str
    due: float
    kind: str
    attempt: int
    created: float
    state: str = QUEUED
    agent_id: str = ""
    # A manual run's ``?arguments=`` as given (None: the job's own), as Chronos keeps them in
    # the task id and appends them to the command.
    arguments: str | None = None
    launched_at: float | None = None
    started_at: float | None = None
    kill_requested: bool = False
    not_before: float = 0.0  # a retry is not launched before this
    # The task id of the first attempt of this run's chain (its retries share it); "" for
    # that first attempt itself (and for records of an older butte).
    chain: str = ""
    # Killed because its chain's lost attempt turned out to have succeeded: its end counts
    # for nothing.
    superseded: bool = False
    # A lost run (state LOST): when its loss arrived; what became of its chain since
    # ("success", "failure" once counted, else ""); for a counted failure, the job's
    # last_error that counting set and the one before it (to undo it).
    lost_at: float | None = None
    chain_outcome: str = ""
    error_at: float | None = None
    error_before: float | None = None

    def to_record(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def chain_id(self) -> str:
        """The id shared by the attempts of one run (a slot, a manual or dependent run)."""
        return self.chain or self.task_id


@dataclass
class JobState:
    """A job: its definition, where its schedule stands, and its statistics."""

    spec: JobSpec
    next_index: int = 0
    remaining: int | None = None
    last_slot: float | None = None
    schedule_text: str | None = None  # the schedule `next_index` counts in
    # Successes of each parent not yet used up by a run of this job (Chronos' edge
    # invocation counts, less what all parents have in common): a parent that succeeds twice
    # before another once counts twice, so the job runs twice once the other catches up.
    parents_done: dict[str, int] = field(default_factory=dict)
    success_count: int = 0
    error_count: int = 0
    skipped_count: int = 0
    # Slots that came due while the job had a run queued, or ran and is not concurrent: not
    # run, as Chronos drops them (`ChronosCore._advance`); neither skipped nor failed.
    dropped_count: int = 0
    errors_since_success: int = 0
    last_success: float | None = None
    last_error: float | None = None
    durations: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    schedule: Schedule | None = field(default=None, repr=False)

    def to_record(self) -> dict[str, Any]:
        # Shallow copies: a spec is replaced, never changed, and history entries are never
        # changed once appended (asdict's deep copy cost most of a run's CPU).
        record = {k: v for k, v in self.__dict__.items() if k != "schedule"}
        record["spec"] = dict(self.spec.__dict__)
        for key in ("durations", "history"):
            record[key] = list(record[key])
        record["parents_done"] = dict(self.parents_done)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], now: float) -> JobState:
        fields = dict(record)
        fields["spec"] = spec_from_record(fields["spec"])
        if isinstance(fields.get("parents_done"), list):
            # Written by an older butte, which kept the parents done since the last run.
            fields["parents_done"] = dict.fromkeys(fields["parents_done"], 1)
        job = cls(**fields)
        if job.schedule_text is not None:
            job.schedule = parse_schedule(job.schedule_text, job.spec.schedule_time_zone, now)
        return job


def chronos_arguments(arguments: str) -> str:
    """Arguments as Chronos hands them to a run: ';' removed (TaskUtils'
    commandInjectionFilter, applied where it puts them into the task id they are read from)."""
    return arguments.replace(";", "")


def task_id_for(job: str, due: float, attempt: int, arguments: str = "") -> str:
    """``ct:<due ms>:<attempt>:<job>:<arguments>`` as Chronos' TaskUtils.getTaskId names a
    run: the arguments (the job's own joined by spaces, or a manual run's) after the colon
    that follows the name, empty for none. Characters Mesos refuses in an id are left out of
    it and the arguments cut so that the id fits 255 bytes (the run still gets all of them)."""
    base = f"ct:{round(due * 1000)}:{attempt}:{job}:"
    args = _ID_UNSAFE.sub("", chronos_arguments(arguments))
    room = MAX_TASK_ID - len(base.encode())
    while len(args.encode()) > room:
        args = args[: max(0, min(len(args) - 1, room))]
    return base + args


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class ChronosCore:
    """Jobs, runs, held offers and the master link's state; see the module docstring."""

    def __init__(self, role: str = "*", user: str = "", failure_retry_delay: float = 60.0) -> None:
        self.role = role
        self.user = user
        self.failure_retry_delay = failure_retry_delay
        self.jobs: dict[str, JobState] = {}
        self.runs: dict[str, Run] = {}
        # Runs whose task was lost (state LOST), by task id: their task may come back.
        self.lost: dict[str, Run] = {}
        self.held: dict[str, Offer] = {}
        # Task ids of the runs waiting for offers, and the earliest next slot of any job
        # (None: to be computed): both kept so that a status update costs O(1), not O(jobs).
        self.queued: set[str] = set()
        # Queued retries that wait out failure_retry_delay: task id -> when they may go.
        self._retry_at: dict[str, float] = {}
        self._next_due: float | None = None
        self._children: dict[str, list[str]] | None = None  # parent -> children, cached
        # (cpus, mem, disk, role) -> the TaskInfo resources: all runs of a slot ask for the
        # same few shapes, and building the list anew cost a third of a launch's CPU.
        self._resources_json: dict[tuple[float, float, float, str], list[dict[str, Any]]] = {}
        self._dirty: set[str] = set()  # jobs whose record is saved at the next take_effects
        self.out: list[Effect] = []
        self.subscribed = False
        self.suppressed = False
        self.last_launch = -math.inf
        # Slot -> TASK_RUNNING received, per first attempt of a slot (Chronos' lateness),
        # and two stages on the way, to see where lateness comes from: slot -> the run is
        # placed on an offer, slot -> TASK_STARTING received.
        self.start_lags: deque[float] = deque(maxlen=10000)
        self.placed_lags: deque[float] = deque(maxlen=10000)
        self.starting_lags: deque[float] = deque(maxlen=10000)
        self.counters: dict[str, int] = {
            "runs_queued": 0,
            "runs_launched": 0,
            "runs_relaunched": 0,
            "runs_finished": 0,
            "runs_failed": 0,
            "runs_killed": 0,
            "runs_retried": 0,
            "slots_skipped": 0,
            "slot_runs_dropped": 0,
            "orphans_killed": 0,
            "manual_runs_dropped": 0,
            "dependent_runs_dropped": 0,
            "disabled_runs_dropped": 0,
            "retries_dropped": 0,
            "lost_runs_killed": 0,
            "lost_runs_succeeded": 0,
        }

    def take_effects(self) -> list[Effect]:
        """The effects so far, with one `SaveJob` per job changed since the last call."""
        for name in sorted(self._dirty):
            if name in self.jobs:
                self.out.append(SaveJob(name, self.jobs[name].to_record()))
        self._dirty.clear()
        out, self.out = self.out, []
        return out

    # -- restore ---------------------------------------------------------------------------

    def load(self, jobs: list[dict[str, Any]], runs: list[dict[str, Any]], now: float) -> None:
        """Restores stored state (after a restart or a failover); emits nothing."""
        for record in jobs:
            job = JobState.from_record(record, now)
            self.jobs[job.spec.name] = job
        for record in runs:
            fields = dict(record)
            if isinstance(fields.get("arguments"), list):
                # Written by an older butte, which kept a manual run's arguments split.
                fields["arguments"] = " ".join(fields["arguments"])
            run = Run(**fields)
            if run.state == LOST:
                self.lost[run.task_id] = run
                continue
            self.runs[run.task_id] = run
            if run.state == QUEUED:
                self._enqueue(run)
        self._next_due = None
        self._children = None

    # -- jobs ------------------------------------------------------------------------------

    def put_job(self, spec: JobSpec, now: float, keep_parent_counts: bool = False) -> bool:
        """Adds or replaces a job; True if it is new. Raises JobError (unknown parents, a
        cycle) leaving everything as it was.

        A job posted with a ``parents`` list other than its own (other names, or the same in
        another order) forgets every success its parents had counted towards its next run,
        as Chronos' DependentJobResource removes all the job's edges and adds the new ones
        with their invocation counts at zero; posted with the same list, it keeps them.
        ``keep_parent_counts`` (a parent deleted, `delete_job`) keeps those of the parents
        that remain, as Chronos' deregisterJob leaves the other edges alone."""
        for parent in spec.parents:
            if parent not in self.jobs:
                raise JobError(f"parent job {parent!r} does not exist")
        self._check_acyclic(spec)
        old = self.jobs.get(spec.name)
        job = old if old is not None else JobState(spec)
        old_parents = job.spec.parents
        job.spec = spec
        if spec.schedule is not None and spec.schedule != job.schedule_text:
            self._reschedule(job, now)
        if spec.schedule is None and job.schedule is not None:
            # A scheduled job posted again as a dependent one (Chronos allows both ways).
            job.schedule = job.schedule_text = job.last_slot = None
            job.next_index, job.remaining = 0, None
        if old is not None and old_parents != spec.parents and not keep_parent_counts:
            job.parents_done = {}
        else:
            job.parents_done = {p: n for p, n in job.parents_done.items() if p in spec.parents}
        self.jobs[spec.name] = job
        self._next_due = None
        self._children = None
        self._save_job(job)
        self.tick(now)
        return old is None

    def _reschedule(self, job: JobState, now: float) -> None:
        spec = job.spec
        assert spec.schedule is not None
        schedule = parse_schedule(spec.schedule, spec.schedule_time_zone, now)
        # A slot in the past runs if it is late by no more than epsilon (as Chronos' stream
        # does: `R1//PT1H`, whose start is now, runs at once), else the next one does; never
        # one already consumed.
        after = now - spec.epsilon
        if job.last_slot is not None:
            after = max(after, math.nextafter(job.last_slot, math.inf))
        index = schedule.first_index_at_or_after(after)
        job.schedule = schedule
        job.schedule_text = spec.schedule
        job.next_index = index if index is not None else 0
        job.remaining = 0 if index is None else schedule.repeats

    def _check_acyclic(self, spec: JobSpec) -> None:
        parents = {name: j.spec.parents for name, j in self.jobs.items()}
        parents[spec.name] = spec.parents
        seen: set[str] = set()
        stack = list(spec.parents)
        while stack:
            name = stack.pop()
            if name == spec.name:
                raise JobError(f"parents of {spec.name!r} would make a dependency cycle")
            if name not in seen:
                seen.add(name)
                stack.extend(parents.get(name, []))

    def children(self, name: str) -> list[str]:
        if self._children is None:
            index: dict[str, list[str]] = {}
            for n in sorted(self.jobs):
                for parent in self.jobs[n].spec.parents:
                    index.setdefault(parent, []).append(n)
            self._children = index
        return self._children.get(name, [])

    def delete_job(self, name: str, now: float) -> None:
        """Deletes a job, drops its queued runs and kills its running ones; raises KeyError
        for an unknown job. Its children are kept, as Chronos keeps them: a dependent job's
        parents take its place; a child whose only parent was a scheduled job takes over
        that job's schedule from its next slot on."""
        if name not in self.jobs:
            raise KeyError(name)
        deleted = self.jobs[name]
        for child_name in list(self.children(name)):
            child = self.jobs[child_name].spec
            parents = [p for p in child.parents if p != name]
            if deleted.spec.schedule is None:
                parents += [p for p in deleted.spec.parents if p not in parents]
            if parents:
                self.put_job(replace(child, parents=parents), now, keep_parent_counts=True)
                continue
            listed = self.job_json(name, now)
            self.put_job(
                replace(
                    child,
                    parents=[],
                    schedule=listed["schedule"],
                    schedule_time_zone=deleted.spec.schedule_time_zone,
                ),
                now,
            )
        self.kill_tasks(name, now)
        for run in [r for r in self.lost.values() if r.job == name]:
            self._forget_lost(run)  # should its task come back, it is killed as an orphan
        del self.jobs[name]
        self._next_due = None
        self._children = None
        self._dirty.discard(name)
        self.out.append(SaveJob(name, None))

    def run_now(self, name: str, now: float, arguments: str | None = None) -> Run | None:
        """Queues a manual run of a job (``PUT /v1/scheduler/job/NAME[?arguments=]``);
        ``arguments`` as given (None: the job's own). Raises KeyError for an unknown job.

        Returns None, queueing nothing, where Chronos drops the run: the job is disabled
        (JobManagementResource.trigger queues it all the same and TaskManager drops it when
        it takes it from the queue for an offer, JobExpired; decided here at once), the job
        has a run waiting in the queue already (TaskManager.enqueue keeps one queued task per
        job and ignores the next), or the job is not concurrent and a run of it is going
        (MesosJobFramework takes the run from the queue at the next offer and drops it
        because the job is running; done here at once, so the outcome does not depend on
        when that offer comes). A concurrent job's run starts beside the running one."""
        if name not in self.jobs:
            raise KeyError(name)
        job = self.jobs[name]
        if job.spec.disabled or self._drops_run(job, now):
            self.counters["manual_runs_dropped"] += 1
            return None
        queued = self._queue(name, now, MANUAL, 0, now, arguments)
        self._update_interest(now)
        self._match(now)
        return queued

    def _drops_run(self, job: JobState, now: float) -> bool:
        """Whether Chronos drops a run of the job entering its queue now (a manual or a
        dependent run): the job has a run waiting in the queue already (TaskManager.enqueue
        keeps one per job; a retry still waiting out --failure_retry is not in it yet), or
        it is not concurrent and a run of it is going (taken from the queue at the next
        offer, such a run is dropped; decided here at once, so that the outcome does not
        depend on when that offer comes)."""
        for run in self.runs.values():
            if run.job != job.spec.name:
                continue
            if run.state == QUEUED and run.not_before <= now:
                return True
            if run.state in _ACTIVE_STATES and not job.spec.concurrent:
                return True
        return False

    def kill_tasks(self, name: str, now: float) -> int:
        """Drops the job's queued runs and kills its running tasks; how many were affected."""
        if name not in self.jobs:
            raise KeyError(name)
        count = 0
        for run in [r for r in self.runs.values() if r.job == name]:
            count += 1
            if run.state == QUEUED:
                self._end_run(run, "KILLED", now, "killed before launch")
                continue
            run.kill_requested = True
            self.out.append(SaveRun(run.task_id, run.to_record()))
            self.out.append(Kill(run.task_id, run.agent_id))
        self._update_interest(now)
        return count

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Consumes due slots, expires queued runs past epsilon, launches on held offers,
        releases stale offers, and revives or suppresses offers as needed."""
        # Late runs go first: a slot past its epsilon is skipped before the next slot comes
        # due, which it would otherwise keep out of the queue (`_advance`).
        for run in [self.runs[t] for t in sorted(self.queued)]:
            self._expire_late(run, self.jobs[run.job], now)
        if self._next_due is None or self._next_due <= now:
            queued = {
                r.job for r in self.runs.values() if r.state == QUEUED and r.not_before <= now
            }
            active = {r.job for r in self.runs.values() if r.state in _ACTIVE_STATES}
            for job in self.jobs.values():
                self._advance(job, now, queued, active)
        self._match(now)
        stale = [o.id for o in self.held.values() if now - o.received > HOLD_MAX]
        if stale:
            for offer_id in stale:
                del self.held[offer_id]
            self.out.append(Decline(stale, DECLINE_UNFIT_SECONDS))
        if self.lost:
            forgotten = now - LOST_KEPT_SECONDS
            for run in [r for r in self.lost.values() if (r.lost_at or 0.0) < forgotten]:
                self._forget_lost(run)
        self._update_interest(now)

    def _expire_late(self, run: Run, job: JobState, now: float) -> bool:
        """Skips (and counts) a queued first attempt of a slot that can no longer start
        within epsilon; True if it did."""
        if run.kind != SLOT or run.attempt != 0 or now <= run.due + job.spec.epsilon:
            return False
        job.skipped_count += 1
        self.counters["slots_skipped"] += 1
        self._end_run(run, "SKIPPED", now, "no resources within epsilon")
        return True

    def _advance(self, job: JobState, now: float, queued: set[str], active: set[str]) -> None:
        """Consumes the job's slots at or before ``now``: each late by more than epsilon is
        skipped and counted; one on time is queued, unless Chronos would drop it: the job has
        a run waiting in the queue (``queued``: TaskManager.enqueue keeps one per job and
        ignores the next; a retry still waiting out --failure_retry is not in it), or it is
        not concurrent and a run of it is going (``active``: MesosJobFramework drops the
        run it takes from the queue for an offer while the job runs). Such a slot is dropped,
        counted in ``dropped_count`` (``droppedCount`` in ``job/stat``, ``DROPPED`` in its
        history) and not in ``skipped_count``: Chronos counts it as neither a skip nor a
        failure. ``queued`` gains the jobs whose slot is queued here."""
        schedule = job.schedule
        if schedule is None:
            return
        changed = False
        while job.remaining != 0:
            due = schedule.slot(job.next_index)
            if due is None:
                job.remaining = 0
                changed = True
                break
            if due > now:
                break
            changed = True
            if job.last_slot is not None and due <= job.last_slot:
                job.next_index += 1  # the same instant as the last slot (a skipped wall day)
                continue
            if job.spec.disabled:
                self._jump(job, schedule, now, count=False)
                continue
            if now - due > job.spec.epsilon:
                self._jump(job, schedule, now - job.spec.epsilon, count=True)
                continue
            job.next_index += 1
            job.last_slot = due
            if job.remaining is not None:
                job.remaining -= 1
            name = job.spec.name
            if name in queued or (name in active and not job.spec.concurrent):
                self._drop_slot(job, due, now, name in queued)
                continue
            self._queue(name, due, SLOT, 0, now, None)
            queued.add(name)
        if changed:
            self._next_due = None
            self._save_job(job)

    def _drop_slot(self, job: JobState, due: float, now: float, queued: bool) -> None:
        """A slot consumed without a run, where Chronos drops it (see `_advance`)."""
        job.dropped_count += 1
        self.counters["slot_runs_dropped"] += 1
        why = "a run of the job was queued" if queued else "a run of the job was going"
        entry = {
            "task_id": task_id_for(job.spec.name, due, 0, " ".join(job.spec.arguments)),
            "due": due,
            "kind": SLOT,
            "attempt": 0,
            "state": "DROPPED",
            "agent_id": "",
            "started": None,
            "ended": now,
            "message": f"dropped: {why} when this slot came due",
        }
        job.history = (job.history + [entry])[-HISTORY_KEPT:]

    def _jump(self, job: JobState, schedule: Schedule, until: float, count: bool) -> None:
        """Consumes every slot before ``until`` at once (a skipped stretch, or a disabled
        job's); counts the distinct instants as skipped when ``count``."""
        start = job.next_index
        end = schedule.first_index_at_or_after(until, start)
        if end is None:
            end = start + 1 if job.remaining is None else start + job.remaining
        if job.remaining is not None:
            end = min(end, start + job.remaining)
        end = max(end, start + 1)
        skipped, last = 0, job.last_slot
        if end - start <= 10000:
            for k in range(start, end):
                t = schedule.slot(k)
                if t is not None and (last is None or t > last):
                    skipped, last = skipped + 1, t
        else:
            skipped, last = end - start, schedule.slot(end - 1)
        job.next_index = end
        job.last_slot = last
        if job.remaining is not None:
            # Repeats count distinct instants (an index that repeats an instant is free).
            job.remaining = max(0, job.remaining - skipped)
        if count:
            job.skipped_count += skipped
            self.counters["slots_skipped"] += skipped
            job.history = (
                job.history + [{"state": "SKIPPED", "slots": skipped, "until": last, "at": until}]
            )[-HISTORY_KEPT:]

    def next_wakeup(self, now: float) -> float:
        """When `tick` next has something to do (at the latest ``now + 1``)."""
        if self._next_due is None:
            due = math.inf
            for job in self.jobs.values():
                if job.schedule is not None and job.remaining != 0 and not job.spec.disabled:
                    slot = job.schedule.slot(job.next_index)
                    if slot is not None:
                        due = min(due, slot)
            self._next_due = due
        retry = min((t for t in self._retry_at.values() if t > now), default=math.inf)
        return max(min(self._next_due, retry, now + 1.0), now)

    # -- the master link -------------------------------------------------------------------

    def on_subscribed(self, now: float) -> None:
        """A (re)subscription: reconcile every run we believe launched, then go on."""
        self.subscribed = True
        self.suppressed = False
        active = [(r.task_id, r.agent_id) for r in self.runs.values() if r.state != QUEUED]
        # Lost runs too: the master tells us if one came back (running, or ended).
        active += [(r.task_id, r.agent_id) for r in self.lost.values()]
        if active:
            self.out.append(Reconcile(sorted(active)))
        self.tick(now)

    def on_disconnected(self) -> None:
        """The subscription broke: held offers are gone with it."""
        self.subscribed = False
        self.held.clear()

    def on_offers(self, offers: list[Offer], now: float) -> None:
        for offer in offers:
            self.held[offer.id] = offer
        self.tick(now)
        if not self._wants_offers(now) and self.held:
            self.out.append(Decline(sorted(self.held), DECLINE_UNFIT_SECONDS))
            self.held.clear()

    def on_rescind(self, offer_id: str) -> None:
        self.held.pop(offer_id, None)

    def on_status(
        self,
        now: float,
        task_id: str,
        state: str,
        agent_id: str = "",
        reason: str = "",
        message: str = "",
    ) -> None:
        """A task status update (or a reconciliation answer) from the master."""
        run = self.runs.get(task_id)
        terminal = task_states.is_terminal(state)
        if run is None:
            lost = self.lost.get(task_id)
            if lost is not None:
                self._lost_update(lost, now, state, agent_id, message or reason)
                self._update_interest(now)
                self._match(now)
                return
            if not terminal and agent_id:
                self.counters["orphans_killed"] += 1  # its job was deleted, or a stray
                self.out.append(Kill(task_id, agent_id))
            return
        if agent_id:
            run.agent_id = agent_id
        if not terminal:
            self._progress(run, state, now)
            return
        if run.state == QUEUED:
            return  # a stale answer about a launch that never happened; it is queued again
        if run.superseded:
            # Killed because a lost attempt of its chain succeeded: its end counts nothing.
            self._end_run(run, state, now, message or "superseded: a lost attempt succeeded")
            self._update_interest(now)
            self._match(now)
            return
        if (
            run.state == LAUNCHING
            and state != task_states.FINISHED
            and reason in _NEVER_LAUNCHED_REASONS
        ):
            # The ACCEPT never reached a master that kept it: launch the same run again,
            # unless it is a slot now later than epsilon, which is skipped and counted as
            # any slot that could not start in time (a master failover can take that long).
            run.state, run.agent_id = QUEUED, ""
            self._enqueue(run)
            job = self.jobs.get(run.job)
            if job is not None and self._expire_late(run, job, now):
                self._update_interest(now)
                return
            self.counters["runs_relaunched"] += 1
            self.out.append(SaveRun(run.task_id, run.to_record()))
            self._update_interest(now)
            self._match(now)
            return
        if state == task_states.FINISHED:
            self._succeeded(run, now, message)
        elif state == task_states.KILLED:
            # Chronos' handleKilledTask: a killed run is neither a success nor a failure (no
            # count, no retry, no error time).
            self.counters["runs_killed"] += 1
            self._end_run(run, state, now, message or reason)
        else:
            job = self.jobs.get(run.job)
            error_before = job.last_error if job is not None else None
            retried = self._failed(run, state, now, message or reason)
            if state == task_states.LOST and job is not None:
                # Chronos' TASK_LOST is a failure (retried per `retries`), but the task may
                # still run behind a partition and come back: remember it with its chain.
                run.state, run.lost_at = LOST, now
                if not retried:
                    run.chain_outcome = "failure"
                    run.error_at, run.error_before = job.last_error, error_before
                self.lost[run.task_id] = run
                self.out.append(SaveRun(run.task_id, run.to_record()))
        self._update_interest(now)
        self._match(now)

    def _lost_update(self, lost: Run, now: float, state: str, agent_id: str, message: str) -> None:
        """A status of a lost run's task: it came back from a partition (or a reconciliation
        answers for it)."""
        if not task_states.is_terminal(state):
            # Alive again while its chain went on without it (a retry queued or run, or the
            # failure counted): a second copy of the run must not go on. Mesos kills such a
            # task of a framework that is not partition-aware when its agent re-registers,
            # but not after a master failover; it is killed here either way.
            if not lost.kill_requested:
                lost.kill_requested = True
                self.counters["lost_runs_killed"] += 1
                self.out.append(SaveRun(lost.task_id, lost.to_record()))
            self.out.append(Kill(lost.task_id, agent_id or lost.agent_id))
            return
        if state == task_states.LOST:
            return  # still lost (a reconciliation's answer): it may come back yet
        self._forget_lost(lost)
        job = self.jobs.get(lost.job)
        if job is None:
            return
        ended = {"task_id": lost.task_id, "due": lost.due, "kind": lost.kind}
        entry = {**ended, "attempt": lost.attempt, "state": state, "agent_id": lost.agent_id}
        entry.update(started=lost.started_at, ended=now, message=f"after its loss: {message}"[:200])
        job.history = (job.history + [entry])[-HISTORY_KEPT:]
        self._save_job(job)
        if state == task_states.FINISHED and lost.chain_outcome != "success":
            self._lost_succeeded(lost, job, now)

    def _lost_succeeded(self, lost: Run, job: JobState, now: float) -> None:
        """A lost run's task finished while its agent was away: that is its chain's one
        success. The chain's retry is dropped if queued, killed (and not counted) if it runs,
        and a failure its loss counted is undone."""
        chain = lost.chain_id
        for run in [r for r in self.runs.values() if r.chain_id == chain]:
            if run.state == QUEUED:
                del self.runs[run.task_id]
                self._dequeue(run.task_id)
                self.out.append(SaveRun(run.task_id, None))
            else:
                run.superseded = run.kill_requested = True
                self.out.append(SaveRun(run.task_id, run.to_record()))
                self.out.append(Kill(run.task_id, run.agent_id))
        if lost.chain_outcome == "failure":
            job.error_count = max(0, job.error_count - 1)
            if job.last_error == lost.error_at:
                job.last_error = lost.error_before
        self._settle(chain, "success")
        self.counters["runs_finished"] += 1
        self.counters["lost_runs_succeeded"] += 1
        self._job_succeeded(job, now)

    def _settle(
        self, chain: str, outcome: str, error_at: float | None = None, before: float | None = None
    ) -> None:
        """Notes on the lost runs of ``chain`` that it ended: a ``success`` (also over a
        failure counted before, which a lost attempt's success undid), or a ``failure``
        counted at ``error_at`` over the job's earlier ``before`` (counted once per chain)."""
        for run in self.lost.values():
            if run.chain_id != chain or run.chain_outcome == "success":
                continue
            if outcome == "success" or not run.chain_outcome:
                run.chain_outcome, run.error_at, run.error_before = outcome, error_at, before
                self.out.append(SaveRun(run.task_id, run.to_record()))

    def _forget_lost(self, run: Run) -> None:
        del self.lost[run.task_id]
        self.out.append(SaveRun(run.task_id, None))

    def _progress(self, run: Run, state: str, now: float) -> None:
        if run.state == QUEUED:
            return  # a stale update for a run we already relaunch
        if state == task_states.STARTING and run.state == LAUNCHING:
            if run.kind == SLOT and run.attempt == 0:
                self.starting_lags.append(now - run.due)
        run.state = state
        if state == task_states.RUNNING and run.started_at is None:
            run.started_at = now
            if run.kind == SLOT and run.attempt == 0:
                self.start_lags.append(now - run.due)
        self.out.append(SaveRun(run.task_id, run.to_record()))

    def _succeeded(self, run: Run, now: float, message: str) -> None:
        job = self.jobs.get(run.job)
        self.counters["runs_finished"] += 1
        self._end_run(run, task_states.FINISHED, now, message)
        if job is None:
            return
        if self.lost:
            self._settle(run.chain_id, "success")
        started = run.started_at if run.started_at is not None else run.launched_at
        if started is not None:
            job.durations = (job.durations + [max(0.0, now - started)])[-DURATIONS_KEPT:]
        self._job_succeeded(job, now)

    def mark_success(self, name: str, now: float) -> None:
        """Counts a success of the job without a run and starts its children as a run's
        success would (``PUT /v1/scheduler/job/success/NAME``). Raises KeyError. As Chronos'
        markJobSuccessAndFireOffDependencies, the successes its parents had counted towards
        its next run are forgotten."""
        job = self.jobs[name]
        job.parents_done = {}
        self._job_succeeded(job, now)
        self._update_interest(now)
        self._match(now)

    def _job_succeeded(self, job: JobState, now: float) -> None:
        job.success_count += 1
        job.errors_since_success = 0
        job.last_success = now
        self._save_job(job)
        for child_name in self.children(job.spec.name):
            self._parent_succeeded(self.jobs[child_name], job.spec.name, now)

    def _parent_succeeded(self, child: JobState, parent: str, now: float) -> None:
        """Counts a parent's success for a child; once every parent has one the child runs
        (Chronos' JobGraph.getExecutableChildren: the child runs when the count of the edge
        from this parent becomes the least of its parents' edges), unless it is disabled or
        Chronos' TaskManager would drop the run (`_drops_run`)."""
        done = child.parents_done
        done[parent] = done.get(parent, 0) + 1
        if all(done.get(p, 0) > 0 for p in child.spec.parents):
            child.parents_done = {p: n - 1 for p, n in done.items() if n > 1}
            if child.spec.disabled:
                pass  # Chronos' processDependencies skips a disabled child
            elif self._drops_run(child, now):
                self.counters["dependent_runs_dropped"] += 1
            else:
                self._queue(child.spec.name, now, DEPENDENCY, 0, now, None)
        self._save_job(child)

    def _failed(self, run: Run, state: str, now: float, message: str) -> bool:
        """Ends a failed run: retried as Chronos' handleFailedTask retries (True), else its
        failure counted."""
        job = self.jobs.get(run.job)
        self._end_run(run, state, now, message)
        if job is None:
            return False
        failed_since_success = job.last_error is not None and (
            job.last_success is None or job.last_success < job.last_error
        )
        if not run.kill_requested and run.attempt < job.spec.retries and not failed_since_success:
            self.counters["runs_retried"] += 1
            # Due when it may go, as Chronos names a retry (``ct:<now + delay>:<attempt+1>``).
            retry_at = now + self.failure_retry_delay
            self._queue(
                job.spec.name,
                retry_at,
                run.kind,
                run.attempt + 1,
                now,
                run.arguments,
                not_before=retry_at,
                chain=run.chain_id,
            )
            return True
        self.counters["runs_failed"] += 1
        if self.lost:
            self._settle(run.chain_id, "failure", now, job.last_error)
        job.error_count += 1
        job.errors_since_success += 1
        job.last_error = now
        self._save_job(job)
        return False

    # -- runs ------------------------------------------------------------------------------

    def _queue(
        self,
        name: str,
        due: float,
        kind: str,
        attempt: int,
        now: float,
        args: str | None,
        not_before: float = 0.0,
        chain: str = "",
    ) -> Run:
        text = args if args is not None else " ".join(self.jobs[name].spec.arguments)
        task_id = task_id_for(name, due, attempt, text)
        # Two runs of a job in one millisecond (a manual run at a slot's instant) would share
        # Chronos' id: the later one's moves on by a millisecond.
        while task_id in self.runs or task_id in self.lost:
            due += 0.001
            task_id = task_id_for(name, due, attempt, text)
        run = Run(task_id, name, due, kind, attempt, now)
        run.arguments = args
        run.not_before = not_before
        run.chain = chain
        self.runs[run.task_id] = run
        self._enqueue(run)
        self.counters["runs_queued"] += 1
        self.out.append(SaveRun(run.task_id, run.to_record()))
        return run

    def _enqueue(self, run: Run) -> None:
        self.queued.add(run.task_id)
        if run.not_before:
            self._retry_at[run.task_id] = run.not_before

    def _dequeue(self, task_id: str) -> None:
        self.queued.discard(task_id)
        self._retry_at.pop(task_id, None)

    def _end_run(self, run: Run, state: str, now: float, message: str) -> None:
        del self.runs[run.task_id]
        self._dequeue(run.task_id)
        self.out.append(SaveRun(run.task_id, None))
        job = self.jobs.get(run.job)
        if job is None:
            return
        entry = {
            "task_id": run.task_id,
            "due": run.due,
            "kind": run.kind,
            "attempt": run.attempt,
            "state": state,
            "agent_id": run.agent_id,
            "started": run.started_at,
            "ended": now,
            "message": message[:200],
        }
        job.history = (job.history + [entry])[-HISTORY_KEPT:]
        self._save_job(job)

    def active_run(self, name: str) -> bool:
        return any(r.job == name and r.state in _ACTIVE_STATES for r in self.runs.values())

    def _launchable(self, now: float) -> list[Run]:
        busy = {r.job for r in self.runs.values() if r.state in _ACTIVE_STATES}
        entered = [r for r in map(self.runs.__getitem__, self.queued) if r.not_before <= now]
        for run in [r for r in entered if self.jobs[r.job].spec.disabled]:
            # Chronos' TaskManager drops a run of a job disabled since it was queued when it
            # takes the run from the queue for an offer (JobExpired): a dependent run, a
            # retry that has waited out --failure_retry, a manual run. Not counted as a
            # failure or a skip; re-enabled before then, the job keeps the run.
            self.counters["disabled_runs_dropped"] += 1
            self._end_run(run, "DROPPED", now, "job disabled")
        entered = [r for r in entered if r.task_id in self.queued]
        retrying = {r.job for r in entered if r.not_before}
        # A run enters Chronos' queue when due (a retry after --failure_retry).
        ordered = sorted(
            (r for r in entered if r.job in retrying), key=lambda r: (r.due, r.created, r.task_id)
        )
        first: dict[str, Run] = {}
        for run in ordered:
            first.setdefault(run.job, run)
            if not run.not_before:
                continue
            # A retry that has waited out --failure_retry enters the queue now; Chronos drops
            # it as it drops a manual or dependent run (`_drops_run`): a run of the job
            # entered the queue before it (TaskManager.enqueue keeps one per job: a parent
            # ran again meanwhile), or the job is not concurrent and a run of it is going
            # when it is taken from the queue.
            if first[run.job] is not run:
                why = "dropped: a run of the job was queued before this retry"
            elif run.job in busy and not self.jobs[run.job].spec.concurrent:
                why = "dropped: a run of the job was going when this retry was due"
            else:
                continue
            self.counters["retries_dropped"] += 1
            self._end_run(run, "DROPPED", now, why)
        queued = sorted(
            (r for r in entered if r.task_id in self.queued),
            # Chronos' queue is first in, first out; on one instant, the run queued first
            # goes first.
            key=lambda r: (not self.jobs[r.job].spec.high_priority, r.due, r.created, r.task_id),
        )
        out = []
        for run in queued:
            if self.jobs[run.job].spec.concurrent:
                out.append(run)
            elif run.job not in busy:
                busy.add(run.job)
                out.append(run)
        return out

    def _wants_offers(self, now: float) -> bool:
        if len(self.queued) > len(self._retry_at) or any(
            t - now < HOLD_AHEAD for t in self._retry_at.values()
        ):
            return True
        self.next_wakeup(now)  # fills the cache
        assert self._next_due is not None
        return self._next_due - now < HOLD_AHEAD

    def _update_interest(self, now: float) -> None:
        if not self.subscribed:
            return
        wants = self._wants_offers(now) or now - self.last_launch < RELEASE_AFTER
        if wants and self.suppressed:
            self.suppressed = False
            self.out.append(Revive())
        elif not wants and not self.suppressed:
            self.suppressed = True
            if self.held:
                self.out.append(Decline(sorted(self.held), DECLINE_UNFIT_SECONDS))
                self.held.clear()
            self.out.append(Suppress())

    def _match(self, now: float) -> None:
        """Places launchable runs on held offers, one ACCEPT per offer used."""
        if not self.subscribed or not self.held or not self.queued:
            return
        runs = self._launchable(now)
        if not runs:
            return
        left = {o.id: [o.cpus, o.mem, o.disk] for o in self.held.values()}
        placed: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            spec = self.jobs[run.job].spec
            for offer in self.held.values():
                free = left[offer.id]
                if free[0] + 1e-9 < spec.cpus or free[1] + 1e-9 < spec.mem:
                    continue
                if free[2] + 1e-9 < spec.disk or not _meets(spec.constraints, offer):
                    continue
                free[0] -= spec.cpus
                free[1] -= spec.mem
                free[2] -= spec.disk
                run.state, run.agent_id, run.launched_at = LAUNCHING, offer.agent_id, now
                if run.kind == SLOT and run.attempt == 0:
                    self.placed_lags.append(now - run.due)
                self._dequeue(run.task_id)
                self.out.append(SaveRun(run.task_id, run.to_record()))
                placed.setdefault(offer.id, []).append(self._task_info(run, spec, offer))
                self.counters["runs_launched"] += 1
                break
        for offer_id, tasks in placed.items():
            del self.held[offer_id]
            self.out.append(Launch(offer_id, tasks))
            self.last_launch = now

    def _task_info(self, run: Run, spec: JobSpec, offer: Offer) -> dict[str, Any]:
        shape = (spec.cpus, spec.mem, spec.disk, offer.role)
        resources = self._resources_json.get(shape)
        if resources is None:
            need = Resources.scalars(cpus=spec.cpus, mem=spec.mem, disk=spec.disk)
            resources = need.to_json("pre", allocation_role=offer.role)
            self._resources_json[shape] = resources
        command: dict[str, Any] = {"shell": spec.shell, "value": spec.command}
        if not spec.shell:
            argv = spec.arguments if run.arguments is None else run.arguments.split()
            command["arguments"] = [spec.command, *argv]
        else:
            # As Chronos' MesosTaskBuilder: the arguments of the task id (the job's own joined
            # by spaces, or the manual run's as given, less ';') appended after a space,
            # for the shell to split.
            text = " ".join(spec.arguments) if run.arguments is None else run.arguments
            text = chronos_arguments(text)
            if text:
                command["value"] = f"{spec.command} {text}"
        uris = [{"value": u, "extract": True} for u in spec.uris]
        for f in spec.fetch:
            uris.append({"value": f["uri"], **{k: v for k, v in f.items() if k != "uri"}})
        if uris:
            command["uris"] = uris
        base = {
            "mesos_task_id": run.task_id,
            "MESOS_TASK_ID": run.task_id,
            "CHRONOS_JOB_OWNER": spec.owner,
            "CHRONOS_JOB_NAME": spec.name,
            "HOST": offer.hostname,
            # As Chronos writes them (Scala's Double.toString: 128.0).
            "CHRONOS_RESOURCE_MEM": repr(spec.mem),
            "CHRONOS_RESOURCE_CPU": repr(spec.cpus),
            "CHRONOS_RESOURCE_DISK": repr(spec.disk),
            "CHRONOS_JOB_RUN_TIME": str(round(run.due * 1000)),
            "CHRONOS_JOB_RUN_ATTEMPT": str(run.attempt),
        }
        env = [{"name": k, "value": v} for k, v in base.items()]
        # A job's own variables never replace these (Chronos' MesosTaskBuilder.envs).
        env += [e for e in spec.environment if e["name"] not in base]
        command["environment"] = {"variables": env}
        user = spec.run_as_user or self.user
        if user:
            command["user"] = user
        task: dict[str, Any] = {
            "name": f"ChronosTask:{spec.name}",
            "task_id": {"value": run.task_id},
            "agent_id": {"value": offer.agent_id},
            "resources": resources,  # shared between TaskInfos: never changed once built
            "command": command,
        }
        if spec.max_completion_ms > 0:
            nanoseconds = spec.max_completion_ms * 1_000_000
            task["max_completion_time"] = {"nanoseconds": nanoseconds}
        if spec.task_info_data:
            task["data"] = base64.b64encode(spec.task_info_data.encode()).decode()
        return task

    def _save_job(self, job: JobState) -> None:
        self._dirty.add(job.spec.name)

    def check_invariants(self) -> None:
        """Raises AssertionError if the kept indexes disagree with the runs (for tests)."""
        assert self.queued == {t for t, r in self.runs.items() if r.state == QUEUED}
        assert self._retry_at.keys() <= self.queued
        assert all(r.job in self.jobs or r.state != QUEUED for r in self.runs.values())
        assert all(r.state == LOST for r in self.lost.values())
        assert not self.lost.keys() & self.runs.keys()
        for job in self.jobs.values():
            assert job.remaining is None or job.remaining >= 0

    # -- views -----------------------------------------------------------------------------

    def job_json(self, name: str, now: float) -> dict[str, Any]:
        """A job as ``GET /v1/scheduler/jobs`` shows it (Chronos' fields)."""
        job = self.jobs[name]
        out = job.spec.to_json()
        zone = job.schedule.zone if job.schedule is not None else None
        out.update(
            successCount=job.success_count,
            errorCount=job.error_count,
            errorsSinceLastSuccess=job.errors_since_success,
            skippedCount=job.skipped_count,
            lastSuccess=_iso(job.last_success),
            lastError=_iso(job.last_error),
        )
        if job.schedule is not None and zone is not None:
            nxt = job.schedule.slot(job.next_index) if job.remaining != 0 else None
            anchor = nxt if nxt is not None else job.last_slot
            if anchor is not None:
                rep = "R" if job.remaining is None else f"R{job.remaining}"
                out["schedule"] = f"{rep}/{format_instant(anchor, zone)}/{job.schedule.period.text}"
            out["nextRun"] = "" if nxt is None or job.spec.disabled else format_instant(nxt, zone)
            if job.remaining == 0:
                out["disabled"] = True  # Chronos disables a job whose repetitions are used up
        return out

    def job_state(self, name: str) -> str:
        """``<n> running``, ``queued`` or ``idle``, as Chronos' JobStats.getJobState words it
        (the graph's state column, the summary's ``state``)."""
        runs = [r for r in self.runs.values() if r.job == name]
        running = sum(1 for r in runs if r.state != QUEUED)
        if running:
            return f"{running} running"
        return "queued" if runs else "idle"

    def last_status(self, name: str) -> str:
        """``success``, ``failure`` or ``fresh`` (never ran), as Chronos' Exporter.getLastState
        decides it from the job's ``lastSuccess`` and ``lastError`` as listed (milliseconds):
        a success only if it is later than the last error, so a tie is a failure."""
        job = self.jobs[name]
        if job.last_success is None and job.last_error is None:
            return "fresh"
        if job.last_error is None:
            return "success"
        if job.last_success is None:
            return "failure"
        # Both as the job JSON shows them (UTC, milliseconds): one fixed-width format, so
        # the later instant is the greater string.
        return "success" if _iso(job.last_success) > _iso(job.last_error) else "failure"


def _iso(t: float | None) -> str:
    return "" if t is None else format_instant(t, UTC)


def _meets(constraints: list[list[str]], offer: Offer) -> bool:
    for attribute, operator, value in constraints:
        actual = offer.attributes.get(attribute)
        if operator == "EQUALS":
            if actual != value:
                return False
        elif operator == "LIKE":
            if actual is None or not re.fullmatch(value, actual):
                return False
        elif operator == "UNLIKE":
            if actual is not None and re.fullmatch(value, actual):
                return False
    return True
