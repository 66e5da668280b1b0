"""The master core's records and shared bookkeeping (`MasterCore`).

`MasterMachine` (`butte.master.machine`) is this class plus its event handlers, which are
split by the events they handle: agents (`butte.master.agents.AgentEvents`), ACCEPT
(`butte.master.accept.AcceptEvents`), and scheduler calls, allocation and timers
(`butte.master.machine`). Every handler group inherits from `MasterCore` and uses only what
is defined here, so they import this module and never each other or the machine.

Effects: handlers append to ``_effects``; the machine's public event methods hand the list
back to the shell before they return (`MasterCore._take`), so none outlives its event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import KeysView
from dataclasses import dataclass, field
from typing import Any

import msgspec

from butte.coord.interface import Operation
from butte.core import task_states
from butte.core.ids import IdGenerator
from butte.core.messages import ID, ExecutorInfo, TaskStatus, TimeInfo
from butte.core.resources import Resources
from butte.master import operator_views, views
from butte.master.acls import Acls
from butte.master.allocator.interface import Allocator
from butte.master.effects import (
    Effect,
    OperatorEvent,
    RegistryWrite,
    SendToAgent,
    SendToFramework,
)
from butte.master.maintenance import Maintenance
from butte.master.state import Agent, Drain, Executor, Framework, Offer, Task

MAX_REFUSE_SECONDS = 365 * 24 * 3600.0
# The statuses a task keeps (its last ones; repeats of one state are collapsed, as in Mesos).
MAX_STATUSES_PER_TASK = 32


@dataclass(slots=True)
class MasterOptions:
    """Master behaviour knobs, Mesos defaults."""

    agent_ping_timeout: float = 15.0
    max_agent_ping_timeouts: int = 5
    agent_reregister_timeout: float = 600.0
    max_completed_frameworks: int = 50
    max_completed_tasks_per_framework: int = 1000
    heartbeat_interval: float = 15.0
    # --agent_removal_rate_limit as (permits, per seconds), e.g. 1/10mins -> (1, 600.0);
    # None: agents failing health checks are marked unreachable at once.
    agent_removal_rate_limit: tuple[int, float] | None = None
    # --acls: who may do what (run_tasks is checked here, at launch).
    acls: Acls = field(default_factory=Acls)
    # --offer_timeout: offers held longer are rescinded (None: never).
    offer_timeout: float | None = None
    # --registry_gc_interval, --registry_max_agent_age, --registry_max_agent_count: how
    # often and how far unreachable and gone agents are pruned from the registry.
    registry_gc_interval: float = 900.0
    registry_max_agent_age: float = 14 * 24 * 3600.0
    registry_max_agent_count: int = 100 * 1024
    # --roles: the only roles frameworks may subscribe with ("*" always); None: any role.
    roles: frozenset[str] | None = None
    # --weights: role weights used until the registry holds some (UPDATE_WEIGHTS wins).
    weights: dict[str, float] = field(default_factory=dict)
    # --domain: this master's fault domain (butte.core.domains); agents in other regions are
    # offered only to REGION_AWARE frameworks. --require_agent_domain: agents need one.
    domain: dict[str, Any] | None = None
    require_agent_domain: bool = False


@dataclass(slots=True)
class MasterCore:
    """The master core's records, and the bookkeeping every group of event handlers
    shares: sending, offers taken and given back, task statuses applied. `MasterMachine`
    is this plus its event handlers (see `butte.master.machine`)."""

    allocator: Allocator
    master_info: dict[str, Any]
    options: MasterOptions = field(default_factory=MasterOptions)
    ids: IdGenerator = field(default_factory=IdGenerator)
    frameworks: dict[str, Framework] = field(default_factory=dict)
    completed_frameworks: deque[Framework] = field(default_factory=lambda: deque(maxlen=50))
    agents: dict[str, Agent] = field(default_factory=dict)
    # agent id -> time it was marked unreachable / gone
    unreachable_agents: dict[str, float] = field(default_factory=dict)
    gone_agents: dict[str, float] = field(default_factory=dict)
    # Agents known from the registry after a master failover that have not re-registered
    # yet (`recovering_agents`: explicit reconciliation of their tasks gets no answer until
    # they do), with the registry's AgentInfo (GET_AGENTS' `recovered_agents`), whose total
    # (with dynamic reservations and volumes) wins over what the agent reports.
    recovered_infos: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Deactivations and drains (None: deactivated only) of agents not registered now
    # (recovering after a failover, or unreachable), applied when they come back.
    away_deactivations: dict[str, Drain | None] = field(default_factory=dict)
    # When recovering agents that have not re-registered by then are marked unreachable.
    recovery_deadline: float | None = None
    # MasterInfo of the leading master as the shell last learnt it (this master's own while
    # it leads; None while no leader is known). Shown by /state as `leader`/`leader_info`.
    leader_info: dict[str, Any] | None = None
    offers: dict[str, Offer] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)  # stream id -> framework id
    connections: dict[str, str] = field(default_factory=dict)  # connection id -> agent id
    # Effects of the event being handled; every public event method hands them back (see
    # "events" below), so none outlives the call that caused it.
    _effects: list[Effect] = field(default_factory=list, init=False, repr=False)
    # Set when something happened that should trigger a prompt allocation run.
    allocation_wanted: bool = False
    start_time: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    # Open operator SUBSCRIBE streams (kept by the shell): OperatorEvents are built only
    # while there is one, so the event stream costs nothing otherwise.
    operator_subscribers: int = 0
    # Agents that failed health checks, waiting for a permit of agent_removal_rate_limit.
    pending_agent_removals: deque[str] = field(default_factory=deque)
    last_agent_removal: float | None = None
    # Maintenance schedule, machine modes and inverse offers (butte.master.maintenance).
    maintenance: Maintenance = field(default_factory=Maintenance)
    # Offer lifetime (butte.master.offer_lifetime): (created, offer id) in creation order
    # while --offer_timeout is set, and when the registry is garbage-collected next.
    offer_expiry: deque[tuple[float, str]] = field(default_factory=deque)
    next_registry_gc: float | None = None

    def __post_init__(self) -> None:
        self.completed_frameworks = deque(maxlen=self.options.max_completed_frameworks)
        if self.leader_info is None:
            self.leader_info = self.master_info

    @property
    def master_id(self) -> str:
        return self.ids.master_id

    def _take(self) -> list[Effect]:
        """The effects collected since the last call, in order (and a fresh list)."""
        out, self._effects = self._effects, []
        return out

    @property
    def recovering_agents(self) -> KeysView[str]:
        """Ids of the agents the registry lists that have not re-registered yet."""
        return self.recovered_infos.keys()

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @staticmethod
    def _count_for(fw: Framework, name: str, n: int = 1) -> None:
        """Counts ``name`` (``offers/sent``, ``tasks/terminal/task_failed`` ...) among
        ``fw``'s own counters (``master/frameworks/<name>/<id>/...``)."""
        counters = fw.counters
        counters[name] = counters.get(name, 0) + n

    # -- sending ------------------------------------------------------------------------

    def _send_framework(self, fw: Framework, event: dict[str, Any]) -> None:
        if fw.connected and fw.stream_id is not None:
            self._effects.append(SendToFramework(fw.stream_id, event))
            self._count("messages_sent_to_frameworks")
            # Mesos' Framework::send counts the event by type (``events/<type>``).
            events = fw.events
            kind = event["type"]
            events[kind] = events.get(kind, 0) + 1

    def _send_agent(self, agent: Agent, message: msgspec.Struct) -> None:
        if agent.connected and agent.connection_id is not None:
            self._effects.append(SendToAgent(agent.connection_id, message))

    def _send_status(self, fw: Framework, status: TaskStatus) -> None:
        self._send_framework(fw, views.update_event(status))

    def master_status(
        self,
        fw: Framework,
        task_id: str,
        state: str,
        reason: str,
        message: str,
        now: float,
        agent_id: str | None = None,
        unreachable_time: float | None = None,
        executor_id: str | None = None,
    ) -> TaskStatus:
        """A master-generated status: no uuid, so schedulers must not acknowledge it."""
        return TaskStatus(
            task_id=ID(task_id),
            executor_id=ID(executor_id) if executor_id else None,
            state=task_states.for_framework(state, fw.partition_aware),
            message=message,
            source="SOURCE_MASTER",
            reason=reason,
            agent_id=ID(agent_id) if agent_id else None,
            timestamp=now,
            unreachable_time=(
                TimeInfo(int(unreachable_time * 1e9)) if unreachable_time is not None else None
            ),
        )

    # -- offers ------------------------------------------------------------------------

    def _take_offer(self, offer_id: str) -> Offer | None:
        offer = self.offers.pop(offer_id, None)
        if offer is None:
            return None
        fw = self.frameworks.get(offer.framework_id)
        if fw is not None:
            fw.offers.discard(offer_id)
        agent = self.agents.get(offer.agent_id)
        if agent is not None:
            agent.offers.discard(offer_id)
        return offer

    def _recover(
        self, fid: str, agent_id: str, role: str, res: Resources, refuse: float | None, now: float
    ) -> None:
        if res and agent_id in self.agents:
            self.allocator.recover_resources(
                fid, agent_id, role, res, refuse_seconds=refuse, now=now
            )

    def _rescind(self, offer: Offer, now: float) -> None:
        """Withdraws an outstanding offer, telling the framework (RESCIND)."""
        if self._take_offer(offer.offer_id) is None:
            return
        fw = self.frameworks.get(offer.framework_id)
        if fw is not None:
            self._count_for(fw, "offers/rescinded")
            self._send_framework(
                fw, {"type": "RESCIND", "rescind": {"offer_id": views.value(offer.offer_id)}}
            )
        self._recover(offer.framework_id, offer.agent_id, offer.role, offer.resources, None, now)

    @staticmethod
    def _refuse_seconds(filters: object) -> float:
        refuse = getattr(filters, "refuse_seconds", 5.0) if filters is not None else 5.0
        if refuse < 0:
            return 5.0
        return min(refuse, MAX_REFUSE_SECONDS)

    # -- tasks -------------------------------------------------------------------------

    def _apply_status(
        self,
        fw: Framework,
        task: Task,
        status: TaskStatus,
        now: float,
        latest_state: str | None = None,
    ) -> None:
        """Records a task's status update. ``latest_state`` (the agent's newest state of the
        task, when this update waits for its acknowledgement behind later ones) is the
        state the task takes, as in Mesos' updateTask: a task that ended is terminal, and its
        resources free, although its framework has not acknowledged the updates before."""
        was_terminal = task_states.is_terminal(task.state)
        retry = status.uuid is not None and status.uuid == task.status_update_uuid
        if retry and (latest_state is None or was_terminal):
            return  # a retry of what we already recorded, with nothing new
        if not was_terminal:
            task.state = latest_state or status.state
        if not retry:
            if status.data is not None:
                # Mesos keeps no status data (a framework's payload, maybe large) here.
                status = msgspec.structs.replace(status, data=None)
            task_states.record_status(task.statuses, status, MAX_STATUSES_PER_TASK)
            if self.operator_subscribers:
                self._effects.append(OperatorEvent(operator_views.task_updated(task, status)))
            if status.uuid is not None:
                task.status_update_state = status.state
                task.status_update_uuid = status.uuid
        if not was_terminal and task_states.is_terminal(task.state):
            self._count_end(fw, task.state, status)
            self._release_task_resources(task, now)

    def _count_end(self, fw: Framework, state: str, status: TaskStatus) -> None:
        """Counts a task's end in ``state`` as Mesos' master does: ``tasks_<state>``, with
        the status' reason ``<state>/<source>/<reason>``
        (``task_killed/source_master/reason_framework_removed``), and for its framework
        ``tasks/terminal/<state>``."""
        self._count("tasks_" + state[5:].lower())
        self._count_for(fw, "tasks/terminal/" + state.lower())
        if status.reason:
            self._count(f"{state.lower()}/{(status.source or '').lower()}/{status.reason.lower()}")

    def _release_task_resources(self, task: Task, now: float) -> None:
        self._recover(task.framework_id, task.agent_id, task.role, task.resources, None, now)

    def _remove_task(self, fw: Framework, task: Task) -> None:
        """Moves a terminal task to the framework's completed tasks."""
        fw.tasks.pop(task.task_id, None)
        agent = self.agents.get(task.agent_id)
        if agent is not None:
            agent.tasks.discard((fw.framework_id, task.task_id))
        fw.completed_tasks.append(task)

    def _terminate_task(
        self,
        fw: Framework,
        task: Task,
        state: str,
        reason: str,
        message: str,
        now: float,
        notify: bool = True,
    ) -> None:
        """Ends a task from the master's side (agent lost, framework removed). A task that
        had ended already (its terminal update not yet acknowledged) keeps that end, as
        Mesos' master ignores a later update of a terminal task: it only leaves."""
        if task_states.is_terminal(task.state):
            self._remove_task(fw, task)
            return
        self._release_task_resources(task, now)
        status = self.master_status(
            fw,
            task.task_id,
            state,
            reason,
            message,
            now,
            agent_id=task.agent_id,
            unreachable_time=now if state == task_states.UNREACHABLE else None,
            executor_id=task.executor_id,  # as Mesos' removals name it
        )
        task.state = state
        task_states.record_status(task.statuses, status, MAX_STATUSES_PER_TASK)
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.task_updated(task, status)))
        if notify:
            self._send_status(fw, status)
        if task_states.is_terminal(state):
            self._count_end(fw, state, status)
            self._remove_task(fw, task)

    def _add_executor(
        self, fw: Framework, agent: Agent, info: ExecutorInfo, role: str, res: Resources
    ) -> None:
        eid = info.executor_id.value
        agent.executors[(fw.framework_id, eid)] = Executor(
            eid, fw.framework_id, agent.agent_id, info, role, res
        )
        fw.executors.setdefault(agent.agent_id, set()).add(eid)

    def _registry_write(self, operation: Operation) -> None:
        """Asks the shell to make ``operation`` durable before anything emitted after it."""
        self._effects.append(RegistryWrite(operation))
