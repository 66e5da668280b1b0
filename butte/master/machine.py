"""The master core: a synchronous state machine over frameworks, agents, tasks and offers.

It is fed events by the asyncio shell (`server.py`) — scheduler calls, agent messages,
disconnections, timer ticks, allocation runs — each with the current time, and every event
method returns the `effects` it caused (events for framework streams, messages for agents,
registry writes; see "events" in `MasterMachine`). It never touches a socket, a file or a
clock, so tests drive it directly with a fake clock.

Flow of a task::

    allocate() --OFFERS--> framework --ACCEPT(LAUNCH)--> accept() --RUN_TASK--> agent
    agent --STATUS_UPDATE--> status_update() --UPDATE--> framework --ACKNOWLEDGE--> ack()
    --STATUS_UPDATE_ACK--> agent  (the agent then sends the task's next update)
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from butte.coord.interface import RegistryState, RemoveAgent, UpdateQuotas, UpdateWeights
from butte.core import internal, task_states
from butte.core.codec import base64_problem
from butte.core.ids import validate_id
from butte.core.messages import (
    ID,
    SCHEDULER_CALL_TYPES,
    Decline,
    FrameworkInfo,
    Kill,
    SchedulerCall,
    Subscribe,
    TaskStatus,
    TimeInfo,
)
from butte.core.resources import Resources, validate_role
from butte.master import offer_constraints, operator_views, views
from butte.master.accept import AcceptEvents
from butte.master.agents import REMOVED_LOST, AgentEvents
from butte.master.allocator.quota import Quota, ancestors_and_self
from butte.master.core import MasterOptions
from butte.master.effects import (
    CloseFrameworkStream,
    Effect,
    OperatorEvent,
    RegistryWrite,
)
from butte.master.maintenance_events import MaintenanceEvents
from butte.master.offer_lifetime import CONSTRAINT_REFUSAL_SECONDS, OfferLifetime
from butte.master.quota import from_registry, to_registry
from butte.master.reconcile import reconcile_unknown_task
from butte.master.state import Agent, Framework, Offer, Task

# MasterOptions is defined with the records (`butte.master.core`); importers take it from here.
__all__ = ["ACCEPTED", "CallResult", "MasterMachine", "MasterOptions", "SCHEDULER_CALLS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallResult:
    """The HTTP answer to a call: status code and message (for 4xx) or a JSON body."""

    status: int
    message: str = ""
    body: dict[str, Any] | None = None
    # For SUBSCRIBE that is valid but refused: a 200 stream carrying only this ERROR.
    stream_error: str | None = None


ACCEPTED = CallResult(202)
# The longest duration Mesos can hold (int64 nanoseconds).
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def bad_request(message: str) -> CallResult:
    return CallResult(400, message)


class MasterMachine(AgentEvents, AcceptEvents, MaintenanceEvents, OfferLifetime):
    """The master core. See the module docstring for the flow; its records and shared
    bookkeeping are `MasterCore`'s, agent events `AgentEvents`', ACCEPT `AcceptEvents`',
    maintenance `MaintenanceEvents`', offer timeout, offer constraints and registry pruning
    `OfferLifetime`'s."""

    __slots__ = ()

    # -- scheduler API: SUBSCRIBE ---------------------------------------------------------

    def _subscribe(self, call: SchedulerCall, stream_id: str, now: float) -> CallResult:
        """SUBSCRIBE on a new stream ``stream_id`` (see `subscribe`)."""
        sub = call.subscribe
        if sub is None:
            return bad_request(
                "Failed to validate scheduler::Call: Expecting 'subscribe' to be present"
            )
        info = sub.framework_info
        err = self._validate_framework_info(info)
        if err:
            return bad_request(err)
        if call.framework_id != info.id:  # also one given without the other, as in Mesos
            return bad_request(
                "Failed to validate scheduler::Call: "
                "'framework_id' differs from 'subscribe.framework_info.id'"
            )
        for role in sub.suppressed_roles:
            if role not in info.role_list():
                return bad_request(f"Suppressed role '{role}' is not a role of the framework")
        constraints = offer_constraints.parse(sub.offer_constraints, info.role_list())
        if isinstance(constraints, str):
            return bad_request(constraints)
        if info.id is not None:
            fid = info.id.value
            if any(f.framework_id == fid for f in self.completed_frameworks):
                return CallResult(200, stream_error="Framework has been removed")
            fw = self.frameworks.get(fid)
            if fw is not None and fw.info.principal != info.principal:
                # The new subscriber is told, and the old one keeps its stream (Mesos'
                # `validateUpdate`: the old principal is only logged).
                log.warning(
                    "Framework %s of principal %r tried to subscribe as principal %r",
                    fid,
                    fw.info.principal,
                    info.principal,
                )
                return CallResult(
                    200, stream_error="Changing framework's principal is not allowed."
                )
            if fw is not None:
                fw.offer_constraints = constraints
                self._resubscribe(fw, info, sub, stream_id, now)
                return CallResult(200)
        else:
            fid = self.ids.framework()
            info = msgspec.structs.replace(info, id=ID(fid))
        self._add_framework(fid, info, sub, stream_id, now)
        self.frameworks[fid].offer_constraints = constraints
        return CallResult(200)

    def _validate_framework_info(self, info: FrameworkInfo) -> str | None:
        if info.id is not None:
            err = validate_id(info.id.value, "Framework ID")
            if err:
                return err
        multi = info.has_capability("MULTI_ROLE")
        if multi and info.role is not None:
            return "'FrameworkInfo.role' must not be set by a MULTI_ROLE framework"
        if not multi and info.roles:
            return "'FrameworkInfo.roles' needs the MULTI_ROLE capability"
        roles = info.role_list()
        if len(set(roles)) != len(roles):
            return "'FrameworkInfo.roles' contains duplicate entries"
        for role in roles:
            err = validate_role(role)
            if err:
                return f"Invalid role: {err}"
            whitelist = self.options.roles
            if whitelist is not None and role != "*" and role not in whitelist:
                return f"Role '{role}' is not present in the master's --roles"
        if info.failover_timeout < 0:
            return "'FrameworkInfo.failover_timeout' must not be negative"
        if not info.failover_timeout < MAX_DURATION_SECONDS:  # NaN included
            return f"The framework failover_timeout ({info.failover_timeout:g}) is invalid"
        return None

    def _add_framework(
        self, fid: str, info: FrameworkInfo, sub: Subscribe, stream_id: str, now: float
    ) -> None:
        fw = Framework(
            framework_id=fid,
            info=info,
            registered_time=now,
            completed_tasks=deque(maxlen=self.options.max_completed_tasks_per_framework),
        )
        fw.suppressed_roles = set(sub.suppressed_roles)
        fw.calls["SUBSCRIBE"] = 1
        self.frameworks[fid] = fw
        self.allocator.add_framework(
            fid,
            fw.roles,
            capabilities=fw.capabilities,
            suppressed_roles=fw.suppressed_roles,
            active=True,
        )
        self._connect_framework(fw, stream_id, now)
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.framework_added(self, fw)))
        log.info("Framework %s (%s) subscribed", fid, info.name)

    def _resubscribe(
        self, fw: Framework, info: FrameworkInfo, sub: Subscribe, stream_id: str, now: float
    ) -> None:
        if fw.connected and fw.stream_id is not None:
            self._send_framework(fw, views.error_event("Framework failed over"))
            self._effects.append(CloseFrameworkStream(fw.stream_id))
            self.streams.pop(fw.stream_id, None)
        fw.calls["SUBSCRIBE"] = fw.calls.get("SUBSCRIBE", 0) + 1
        self._remove_offers(fw, now)
        # `user` and `checkpoint` cannot change on re-subscription (Mesos ignores them).
        fw.info = msgspec.structs.replace(
            info, id=ID(fw.framework_id), user=fw.info.user, checkpoint=fw.info.checkpoint
        )
        fw.suppressed_roles = set(sub.suppressed_roles)
        if fw.recovered:
            # Known only from agents since a master failover: Mesos counts it as registered
            # now (the first registration's time did not survive the failover).
            fw.registered_time = now
        fw.reregistered_time = now
        fw.recovered = False
        self.allocator.update_framework(
            fw.framework_id,
            fw.roles,
            capabilities=fw.capabilities,
            suppressed_roles=fw.suppressed_roles,
        )
        self._connect_framework(fw, stream_id, now)
        for agent_id in self._agents_of(fw):
            agent = self.agents.get(agent_id)
            if agent is not None:
                self._send_agent(agent, internal.UpdateFramework(framework=fw.info))
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.framework_updated(self, fw)))
        self._resend_operation_statuses(fw)
        log.info("Framework %s re-subscribed", fw.framework_id)

    def _connect_framework(self, fw: Framework, stream_id: str, now: float) -> None:
        fw.stream_id = stream_id
        fw.connected = True
        fw.active = True
        fw.failover_deadline = None
        fw.unregistered_time = None
        self.streams[stream_id] = fw.framework_id
        self.allocator.activate_framework(fw.framework_id)
        self._send_framework(
            fw,
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "framework_id": views.value(fw.framework_id),
                    "heartbeat_interval_seconds": self.options.heartbeat_interval,
                    "master_info": self.master_info,
                },
            },
        )
        # Mesos sends a heartbeat right away; mesoshttp only handles an event once the next
        # record starts, so SUBSCRIBED would otherwise sit unprocessed for 15 s.
        self._send_framework(fw, {"type": "HEARTBEAT"})
        self.allocation_wanted = True

    def _agents_of(self, fw: Framework) -> set[str]:
        return {t.agent_id for t in fw.tasks.values()} | set(fw.executors)

    def _framework_disconnected(self, stream_id: str, now: float) -> None:
        """The framework's stream broke: deactivate it and start its failover timer."""
        fid = self.streams.pop(stream_id, None)
        fw = self.frameworks.get(fid) if fid else None
        if fw is None or fw.stream_id != stream_id:
            return
        fw.connected = False
        fw.active = False
        fw.stream_id = None
        # No `unregistered_time` and no FRAMEWORK_UPDATED: Mesos sets the one when it removes
        # a framework and sends the other when a framework (re-)subscribes or UPDATE_FRAMEWORK
        # changes its FrameworkInfo, not when its connection drops (`Master::_exited`).
        self.allocator.deactivate_framework(fw.framework_id)
        self._remove_offers(fw, now)
        fw.failover_deadline = now + fw.info.failover_timeout
        log.info(
            "Framework %s disconnected; failover timeout %.3gs",
            fw.framework_id,
            fw.info.failover_timeout,
        )
        if fw.info.failover_timeout <= 0:
            self._remove_framework(fw, now)

    # -- scheduler API: other calls ------------------------------------------------------

    def _scheduler_call(self, call: SchedulerCall, stream_id: str | None, now: float) -> CallResult:
        """Any call but SUBSCRIBE, with the ``Mesos-Stream-Id`` header the client sent."""
        if call.framework_id is None:
            return bad_request(
                "Failed to validate scheduler::Call: Expecting 'framework_id' to be present"
            )
        fw = self.frameworks.get(call.framework_id.value)
        if fw is None:
            return bad_request("Framework cannot be found")
        # Counted for the framework once it is found, before the stream checks, as Mesos'
        # scheduler endpoint counts it (``calls/<type>``).
        calls = fw.calls
        calls[call.type] = calls.get(call.type, 0) + 1
        if not fw.connected:
            return CallResult(403, "Framework is not subscribed")
        if stream_id is None:
            return bad_request(
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
            )
        if stream_id != fw.stream_id:
            return bad_request(
                f"The stream ID '{stream_id}' included in this request didn't match the "
                f"stream ID currently associated with framework ID {fw.framework_id}"
            )
        self._count("scheduler_calls_" + call.type.lower())
        handler = SCHEDULER_CALLS.get(call.type)
        if handler is None:
            return bad_request(f"Unsupported call type {call.type}")
        return handler(self, fw, call, now)

    def _call_teardown(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        self._remove_framework(fw, now)
        return ACCEPTED

    def _call_accept(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        assert call.accept is not None
        self._accept(fw, call.accept, now)
        return ACCEPTED

    def _call_decline(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        assert call.decline is not None
        self._decline(fw, call.decline, now)
        return ACCEPTED

    def _call_revive(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        roles = call.revive.roles if call.revive and call.revive.roles else None
        err = self._check_roles(fw, "revive", roles)
        if err:
            return bad_request(err)
        fw.suppressed_roles -= set(roles or fw.roles)
        self.allocator.revive(fw.framework_id, roles)
        self.allocation_wanted = True
        return ACCEPTED

    def _call_suppress(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        roles = call.suppress.roles if call.suppress and call.suppress.roles else None
        err = self._check_roles(fw, "suppression", roles)
        if err:
            return bad_request(err)
        fw.suppressed_roles |= set(roles or fw.roles)
        self.allocator.suppress(fw.framework_id, roles)
        return ACCEPTED

    def _check_roles(self, fw: Framework, what: str, roles: list[str] | None) -> str | None:
        """Why a REVIVE or SUPPRESS naming ``roles`` is refused: a role that is invalid or
        not one of the framework's. Mesos' master answers such a call 202 and drops it
        (`Master::revive`), so the framework never learns its roles were not revived; butte
        refuses it with the reason Mesos logs."""
        for role in roles or ():
            problem = validate_role(role)
            if problem is not None:
                return f"{what} role '{role}' is invalid: {problem}"
            if role not in fw.roles:
                return f"{what} role '{role}' is not one of the framework's subscribed roles"
        return None

    def _call_kill(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        assert call.kill is not None
        self._kill(fw, call.kill, now)
        return ACCEPTED

    def _call_shutdown(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        assert call.shutdown is not None
        agent = self.agents.get(call.shutdown.agent_id.value)
        if agent is not None:
            self._send_agent(
                agent,
                internal.ShutdownExecutor(
                    framework_id=ID(fw.framework_id), executor_id=call.shutdown.executor_id
                ),
            )
        return ACCEPTED

    def _call_acknowledge(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        ack = call.acknowledge
        assert ack is not None
        try:
            raw = base64.b64decode(ack.uuid, validate=True)
        except (binascii.Error, ValueError):
            return bad_request("'acknowledge.uuid' is not valid base64")
        if len(raw) != 16:
            return bad_request("'acknowledge.uuid' must be a 16-byte UUID")
        self._acknowledge(fw, ack.agent_id.value, ack.task_id.value, ack.uuid, now)
        return ACCEPTED

    def _call_reconcile(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        assert call.reconcile is not None
        self._reconcile(fw, call.reconcile.tasks, now)
        return ACCEPTED

    def _call_message(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        msg = call.message
        assert msg is not None
        problem = base64_problem("data", msg.data)
        if problem is not None:
            return bad_request(problem)
        agent = self.agents.get(msg.agent_id.value)
        if agent is not None:
            self._send_agent(
                agent,
                internal.FrameworkToExecutor(
                    framework_id=ID(fw.framework_id), executor_id=msg.executor_id, data=msg.data
                ),
            )
        return ACCEPTED

    def _call_request(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        return ACCEPTED  # The built-in allocator ignores requests, as Mesos' does.

    def _call_update_framework(self, fw: Framework, call: SchedulerCall, now: float) -> CallResult:
        upd = call.update_framework
        assert upd is not None
        info = upd.framework_info
        if info.id is None or info.id.value != fw.framework_id:
            return bad_request("'framework_info.id' must be the framework's id")
        err = self._validate_framework_info(info)
        if err:
            return bad_request(err)
        if info.principal != fw.info.principal:
            return bad_request("'FrameworkInfo.principal' cannot be changed")
        if info.user != fw.info.user or info.checkpoint != fw.info.checkpoint:
            return bad_request("'FrameworkInfo.user' and 'checkpoint' cannot be changed")
        constraints = offer_constraints.parse(upd.offer_constraints, info.role_list())
        if isinstance(constraints, str):
            return bad_request(constraints)
        removed_roles = set(fw.roles) - set(info.role_list())
        # Mesos tells operators (FRAMEWORK_UPDATED) only when the FrameworkInfo changed:
        # suppressed roles and offer constraints are not part of it.
        info_changed = info != fw.info
        fw.info = info
        fw.suppressed_roles = set(upd.suppressed_roles)
        for offer_id in list(fw.offers):
            offer = self.offers.get(offer_id)
            if offer is not None and offer.role in removed_roles:
                self._rescind(offer, now)
        if offer_constraints.raw_of(constraints) != offer_constraints.raw_of(fw.offer_constraints):
            fw.offer_constraints = constraints
            self._rescind_unconstrained(fw, now)
            # Allocations refused under the old constraints may be welcome now.
            self.allocator.revive(fw.framework_id, None)
        self.allocator.update_framework(
            fw.framework_id,
            fw.roles,
            capabilities=fw.capabilities,
            suppressed_roles=fw.suppressed_roles,
        )
        self.allocation_wanted = True
        if info_changed and self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.framework_updated(self, fw)))
        return CallResult(200)

    def _call_accept_inverse_offers(
        self, fw: Framework, call: SchedulerCall, now: float
    ) -> CallResult:
        err = self._answer_inverse_offers(fw, call.accept_inverse_offers, True, now)
        return bad_request(err) if err else ACCEPTED

    def _call_decline_inverse_offers(
        self, fw: Framework, call: SchedulerCall, now: float
    ) -> CallResult:
        err = self._answer_inverse_offers(fw, call.decline_inverse_offers, False, now)
        return bad_request(err) if err else ACCEPTED

    def _call_acknowledge_operation_status(
        self, fw: Framework, call: SchedulerCall, now: float
    ) -> CallResult:
        assert call.acknowledge_operation_status is not None
        error = self._acknowledge_operation(fw, call.acknowledge_operation_status)
        return bad_request(error) if error else ACCEPTED

    def _call_reconcile_operations(
        self, fw: Framework, call: SchedulerCall, now: float
    ) -> CallResult:
        assert call.reconcile_operations is not None
        error = self._reconcile_operations(fw, call.reconcile_operations, now)
        return bad_request(error) if error else ACCEPTED

    # -- offers ---------------------------------------------------------------------------

    def _allocate(self, now: float) -> int:
        """Runs one allocation cycle and sends one OFFERS event per framework."""
        self.allocation_wanted = False
        by_framework: dict[str, list[dict[str, Any]]] = {}
        count = 0
        for alloc in self.allocator.allocate(now):
            fw = self.frameworks.get(alloc.framework_id)
            agent = self.agents.get(alloc.agent_id)
            if fw is None or agent is None or not fw.connected:
                # The allocator raced a removal we already told it about; give it back.
                self.allocator.recover_resources(
                    alloc.framework_id,
                    alloc.agent_id,
                    alloc.role,
                    alloc.resources,
                    refuse_seconds=None,
                    now=now,
                )
                continue
            if not self._constraints_allow(fw, agent, alloc.role):
                self.allocator.recover_resources(
                    alloc.framework_id,
                    alloc.agent_id,
                    alloc.role,
                    alloc.resources,
                    refuse_seconds=CONSTRAINT_REFUSAL_SECONDS,
                    now=now,
                )
                self.allocation_wanted = True  # someone else may take it next run
                continue
            offer = Offer(
                self.ids.offer(), alloc.framework_id, alloc.agent_id, alloc.role, alloc.resources
            )
            self._offer_made(offer, now)
            self.offers[offer.offer_id] = offer
            fw.offers.add(offer.offer_id)
            agent.offers.add(offer.offer_id)
            offer_view = views.offer_json(offer, agent, fw, agent.ip or agent.hostname)
            unavailability = self._unavailability_of(agent)
            if unavailability is not None:
                offer_view["unavailability"] = unavailability
            by_framework.setdefault(fw.framework_id, []).append(offer_view)
            count += 1
        for fid, offers in by_framework.items():
            fw = self.frameworks[fid]
            self._count_for(fw, "offers/sent", len(offers))
            self._send_framework(fw, {"type": "OFFERS", "offers": {"offers": offers}})
        self._count("outstanding_offers_made", count)
        self._send_inverse_offers(now)
        return count

    def _remove_offers(self, fw: Framework, now: float) -> None:
        """Drops a framework's offers silently (it is disconnecting or failing over)."""
        for offer_id in list(fw.offers):
            offer = self._take_offer(offer_id)
            if offer is not None:
                self._recover(
                    fw.framework_id, offer.agent_id, offer.role, offer.resources, None, now
                )

    def _decline(self, fw: Framework, decline: Decline, now: float) -> None:
        refuse = self._refuse_seconds(decline.filters)
        for oid in decline.offer_ids:
            offer = self.offers.get(oid.value)
            if offer is None or offer.framework_id != fw.framework_id:
                continue
            self._take_offer(oid.value)
            self._count_for(fw, "offers/declined")
            self._recover(fw.framework_id, offer.agent_id, offer.role, offer.resources, refuse, now)

    # -- KILL and reconciliation ----------------------------------------------------------

    def _kill(self, fw: Framework, kill: Kill, now: float) -> None:
        tid = kill.task_id.value
        task = fw.tasks.get(tid)
        if task is None:
            # Unknown task: answer as explicit reconciliation would (docs/protocol.md §1.2 KILL).
            self._reconcile_one(fw, tid, kill.agent_id.value if kill.agent_id else None, now)
            return
        agent = self.agents.get(task.agent_id)
        if agent is None:
            return
        if not agent.connected:
            # Sent when it re-registers (Mesos: "Kill will be retried if the agent
            # reregisters").
            log.info(
                "Agent %s is disconnected: killing task %s when it is back", agent.agent_id, tid
            )
            agent.pending_kills[(fw.framework_id, tid)] = kill.kill_policy
            return
        self._send_agent(
            agent,
            internal.KillTask(
                framework_id=ID(fw.framework_id), task_id=kill.task_id, kill_policy=kill.kill_policy
            ),
        )

    def _reconcile(self, fw: Framework, tasks: list[Any], now: float) -> None:
        if not tasks:
            for task in fw.tasks.values():
                if not task_states.is_terminal(task.state):
                    self._send_status(fw, self._reconcile_status(fw, task, now))
            return
        for item in tasks:
            agent_id = item.agent_id.value if item.agent_id else None
            self._reconcile_one(fw, item.task_id.value, agent_id, now)

    def _reconcile_status(self, fw: Framework, task: Task, now: float) -> TaskStatus:
        latest = task.latest_status()
        return TaskStatus(
            task_id=ID(task.task_id),
            state=task_states.for_framework(task.state, fw.partition_aware),
            source="SOURCE_MASTER",
            reason="REASON_RECONCILIATION",
            message="Reconciliation: Latest task state",
            agent_id=ID(task.agent_id),
            executor_id=ID(task.executor_id) if task.executor_id else None,
            timestamp=now,
            healthy=latest.healthy if latest is not None else None,
            unreachable_time=(
                TimeInfo(int(task.unreachable_time * 1e9))
                if task.unreachable_time is not None
                else None
            ),
        )

    def _reconcile_one(self, fw: Framework, tid: str, agent_id: str | None, now: float) -> None:
        task = fw.tasks.get(tid)
        if task is not None:
            self._send_status(fw, self._reconcile_status(fw, task, now))
            return
        status = reconcile_unknown_task(self, fw, tid, agent_id, now)
        if status is not None:
            self._send_status(fw, status)

    # -- status updates -------------------------------------------------------------------

    def _acknowledge(self, fw: Framework, agent_id: str, tid: str, uuid: str, now: float) -> None:
        agent = self.agents.get(agent_id)
        # As Mesos counts them: valid when the agent is there to take it.
        valid = agent is not None and agent.connected
        self._count(f"{'valid' if valid else 'invalid'}_status_update_acknowledgements")
        if agent is not None:
            self._send_agent(
                agent,
                internal.StatusUpdateAck(
                    framework_id=ID(fw.framework_id), task_id=ID(tid), uuid=uuid
                ),
            )
        task = fw.tasks.get(tid)
        if (
            task is not None
            and task.status_update_uuid == uuid
            and task.status_update_state is not None
            and task_states.is_terminal(task.status_update_state)
        ):
            self._remove_task(fw, task)

    # -- framework removal and timers -----------------------------------------------------

    def _remove_framework(self, fw: Framework, now: float) -> None:
        """Teardown or failover timeout: kill everything of the framework and forget it."""
        log.info("Removing framework %s (%s)", fw.framework_id, fw.info.name)
        self._remove_offers(fw, now)
        agents = self._agents_of(fw)
        for task in list(fw.tasks.values()):
            self._terminate_task(
                fw,
                task,
                task_states.KILLED,
                "REASON_FRAMEWORK_REMOVED",
                "Framework removed",
                now,
                notify=False,
            )
        for agent_id in agents:
            agent = self.agents.get(agent_id)
            if agent is None:
                continue
            self._send_agent(agent, internal.ShutdownFramework(framework_id=ID(fw.framework_id)))
            for key in [k for k in agent.executors if k[0] == fw.framework_id]:
                ex = agent.executors.pop(key)
                self._recover(fw.framework_id, agent_id, ex.role, ex.resources, None, now)
        fw.executors.clear()
        if fw.connected and fw.stream_id is not None:
            self._effects.append(CloseFrameworkStream(fw.stream_id))
            self.streams.pop(fw.stream_id, None)
        fw.connected = False
        fw.active = False
        fw.unregistered_time = now
        self.allocator.remove_framework(fw.framework_id)
        del self.frameworks[fw.framework_id]
        self.completed_frameworks.append(fw)
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.framework_removed(fw)))

    def _teardown_framework(self, framework_id: str, now: float) -> bool:
        """Operator TEARDOWN: removes a framework as its own TEARDOWN call would (its tasks
        are killed, its stream closed); False if no such framework is registered."""
        fw = self.frameworks.get(framework_id)
        if fw is None:
            return False
        self._remove_framework(fw, now)
        return True

    def _tick(self, now: float) -> None:
        """Fires whatever timers are due: framework failover, agent re-registration."""
        for fw in list(self.frameworks.values()):
            if (
                fw.failover_deadline is not None
                and not fw.connected
                and now >= fw.failover_deadline
            ):
                log.info("Framework %s failover timeout", fw.framework_id)
                self._remove_framework(fw, now)
        deadline = self.options.agent_reregister_timeout
        for agent in list(self.agents.values()):
            if not agent.connected and agent.disconnected_at is not None:
                if now - agent.disconnected_at >= deadline:
                    self._mark_unreachable(agent, now, "Agent did not re-register in time")
        self._expire_recovering_agents(now)
        self._check_drains(now)
        self._expire_offers(now)
        self._maybe_registry_gc(now)

    def _update_weights(self, weights: dict[str, float]) -> None:
        """Operator UPDATE_WEIGHTS / ``PUT /weights`` (already validated): the new weight map
        is made durable in the registry, then the allocator uses it."""
        merged = {**self.allocator.weights, **weights}
        self._effects.append(RegistryWrite(UpdateWeights(merged)))
        self.allocator.update_weights(weights)
        self.allocation_wanted = True

    # -- events: the core's public interface -----------------------------------------------
    #
    # One method per event the shell feeds in. Each returns the effects the event caused, in
    # the order the shell must carry them out (registry writes before what depends on them).

    def subscribe(
        self, call: SchedulerCall, stream_id: str, now: float
    ) -> tuple[CallResult, list[Effect]]:
        """SUBSCRIBE on a new stream ``stream_id``: the HTTP answer and, on success, the
        framework's first events (SUBSCRIBED, HEARTBEAT) addressed to ``stream_id``."""
        result = self._subscribe(call, stream_id, now)
        return result, self._take()

    def scheduler_call(
        self, call: SchedulerCall, stream_id: str | None, now: float
    ) -> tuple[CallResult, list[Effect]]:
        """Any call but SUBSCRIBE, with the ``Mesos-Stream-Id`` header the client sent."""
        result = self._scheduler_call(call, stream_id, now)
        return result, self._take()

    def framework_disconnected(self, stream_id: str, now: float) -> list[Effect]:
        """The framework's stream broke: deactivate it and start its failover timer."""
        self._framework_disconnected(stream_id, now)
        return self._take()

    def agent_message(
        self, connection_id: str, message: internal.AgentMessage, peer_ip: str, now: float
    ) -> list[Effect]:
        """One message from an agent connection."""
        self._agent_message(connection_id, message, peer_ip, now)
        return self._take()

    def agent_disconnected(self, connection_id: str, now: float) -> list[Effect]:
        """An agent's connection closed (see `AgentEvents._agent_disconnected`)."""
        self._agent_disconnected(connection_id, now)
        return self._take()

    def allocate(self, now: float) -> list[Effect]:
        """Runs one allocation cycle: one OFFERS event per framework offered something."""
        self._allocate(now)
        return self._take()

    def tick(self, now: float) -> list[Effect]:
        """Fires whatever timers are due: framework failover, agent re-registration,
        registry recovery deadline, finished drains."""
        self._tick(now)
        return self._take()

    def heartbeats_sent(self) -> None:
        """The shell wrote the periodic HEARTBEAT on every framework stream: counted for
        each subscribed framework (``events/heartbeat``), as Mesos' heartbeater counts it."""
        for fid in self.streams.values():
            fw = self.frameworks.get(fid)
            if fw is not None:
                events = fw.events
                events["HEARTBEAT"] = events.get("HEARTBEAT", 0) + 1

    def ping_agents(self, now: float) -> list[Effect]:
        """Every ``agent_ping_timeout`` (see `AgentEvents._ping_agents`)."""
        self._ping_agents(now)
        return self._take()

    def recover_registry(self, registry: RegistryState, now: float) -> list[Effect]:
        """This master was elected: take over what the registry remembers."""
        self._recover_registry(registry, now)
        self._recover_maintenance(registry)
        if not registry.weights and self.options.weights:
            self.allocator.update_weights(self.options.weights)
        for role, quota in from_registry(registry.quotas).items():
            self.allocator.update_quota(role, quota)
        return self._take()

    def update_quotas(self, quotas: dict[str, Quota], now: float) -> list[Effect]:
        """Operator UPDATE_QUOTA / SET_QUOTA / REMOVE_QUOTA / ``/quota`` (already validated by
        `butte.master.quota.apply_updates`): the whole new map is made durable in the
        registry, the allocator uses it, and offers that keep a role over a new limit are
        rescinded (as Mesos does)."""
        self._update_quotas(quotas, now)
        return self._take()

    def _update_quotas(self, quotas: dict[str, Quota], now: float) -> None:
        old = self.allocator.quotas
        self._effects.append(RegistryWrite(UpdateQuotas(to_registry(quotas))))
        limited = []
        for role in sorted(old.keys() | quotas.keys()):
            if old.get(role) != quotas.get(role):
                self.allocator.update_quota(role, quotas.get(role))
                if role in quotas and quotas[role].limits:
                    limited.append(role)
        for role in limited:
            self._rescind_over_limit(role, quotas[role].limits, now)
        self.allocation_wanted = True

    def _rescind_over_limit(self, role: str, limits: Mapping[str, int], now: float) -> None:
        """Rescinds outstanding offers of the role's subtree while it consumes more than its
        limits allow (what tasks use stays: a limit only stops new offers)."""
        for offer in sorted(self.offers.values(), key=lambda o: o.offer_id):
            consumed = self.allocator.consumed_quota(role)
            if all(consumed.get(n, 0) <= v for n, v in limits.items()):
                return
            if role in ancestors_and_self(offer.role):
                self._rescind(offer, now)

    def update_weights(self, weights: dict[str, float]) -> list[Effect]:
        """Operator UPDATE_WEIGHTS / ``PUT /weights`` (already validated)."""
        self._update_weights(weights)
        return self._take()

    def teardown_framework(self, framework_id: str, now: float) -> list[Effect] | None:
        """Operator TEARDOWN; None if no such framework is registered."""
        return self._found(self._teardown_framework(framework_id, now))

    def mark_agent_gone(self, agent_id: str, now: float) -> list[Effect] | None:
        """Operator MARK_AGENT_GONE; None for an agent never known."""
        return self._found(self._mark_agent_gone(agent_id, now))

    def deactivate_agent(self, agent_id: str, now: float) -> list[Effect] | None:
        """Operator DEACTIVATE_AGENT; None for an agent neither registered, recovering nor
        unreachable."""
        return self._found(self._deactivate_agent(agent_id, now))

    def reactivate_agent(self, agent_id: str, now: float) -> tuple[str | None, list[Effect]]:
        """Operator REACTIVATE_AGENT: why it is refused (nothing changed) or None, and the
        effects."""
        error = self._reactivate_agent(agent_id, now)
        effects = self._take()
        assert error is None or not effects, effects
        return error, effects

    def drain_agent(
        self, agent_id: str, max_grace_period: float | None, mark_gone: bool, now: float
    ) -> list[Effect] | None:
        """Operator DRAIN_AGENT; None for an agent neither registered, recovering nor
        unreachable."""
        return self._found(self._drain_agent(agent_id, max_grace_period, mark_gone, now))

    def maintenance_call(
        self, action: str, payload: object, now: float
    ) -> tuple[str | None, list[Effect]]:
        """An operator maintenance change: ``action`` is "schedule" (a Schedule JSON object),
        "down" or "up" (a list of MachineIDs). Returns why it is refused (nothing changed)
        or None, and the effects."""
        if action == "schedule":
            error = self._update_maintenance_schedule(payload, now)
        elif action == "down":
            result = self._start_maintenance(payload, now)
            error = result if isinstance(result, str) else None
            for agent in [] if isinstance(result, str) else result:
                self._take_machine_down(agent, now)
        elif action == "up":
            error = self._stop_maintenance(payload, now)
        else:
            raise ValueError(f"unknown maintenance action {action!r}")
        effects = self._take()
        assert error is None or not effects, effects
        return error, effects

    def _take_machine_down(self, agent: Agent, now: float) -> None:
        """An agent on a machine going DOWN: told to shut down and removed (Mesos'
        removeSlave); its tasks are TASK_LOST, REASON_AGENT_REMOVED."""
        self._send_agent(agent, internal.ShutdownAgent(message="Operator initiated 'Machine DOWN'"))
        self._registry_write(RemoveAgent(agent.agent_id))
        self._remove_agent(
            agent,
            now,
            f"Agent {agent.hostname} removed: Operator initiated 'Machine DOWN'",
            *REMOVED_LOST,
        )

    def operator_operation(
        self, agent_id: str, kind: str, payload: dict[str, Any], principal: str | None, now: float
    ) -> list[Effect]:
        """Operator RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES, DESTROY_VOLUMES,
        GROW_VOLUME, SHRINK_VOLUME (``kind`` is the offer operation: RESERVE, ...); raises
        `offer_ops.OperatorRefusal`, changing nothing, when it cannot be done."""
        try:
            self._operator_operation(agent_id, kind, payload, principal, now)
        except Exception:
            assert not self._effects, self._effects  # refused before anything happened
            raise
        return self._take()

    def _found(self, found: bool) -> list[Effect] | None:
        effects = self._take()
        assert found or not effects, effects  # a refused operator call changes nothing
        return effects if found else None

    # -- invariants -----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raises AssertionError if the records contradict each other (tests call this)."""
        assert not self._effects, f"effects outlived their event: {self._effects}"
        for oid, offer in self.offers.items():
            assert oid in self.frameworks[offer.framework_id].offers, oid
            assert oid in self.agents[offer.agent_id].offers, oid
        for fid, fw in self.frameworks.items():
            for oid in fw.offers:
                assert self.offers[oid].framework_id == fid
            for tid, task in fw.tasks.items():
                assert task.framework_id == fid and task.task_id == tid
                if task.agent_id in self.agents:
                    assert (fid, tid) in self.agents[task.agent_id].tasks, (fid, tid)
            if fw.connected:
                assert fw.stream_id is not None and self.streams.get(fw.stream_id) == fid
            assert not (fw.active and not fw.connected)
        for aid, agent in self.agents.items():
            for fid, tid in agent.tasks:
                assert tid in self.frameworks[fid].tasks, (fid, tid)
                assert self.frameworks[fid].tasks[tid].agent_id == aid
            for oid in agent.offers:
                assert self.offers[oid].agent_id == aid
            if agent.connected:
                assert self.connections.get(agent.connection_id or "") == aid
        for sid, fid in self.streams.items():
            assert self.frameworks[fid].stream_id == sid
        maintenance = self.maintenance
        assert len(maintenance.outstanding) == len(maintenance.inverse_offers)
        for (fid, agent_id), ioid in maintenance.outstanding.items():
            io = maintenance.inverse_offers[ioid]
            assert (io.framework_id, io.agent_id) == (fid, agent_id), ioid
        self.allocator.check_invariants()
        for fid in self.frameworks:
            assert self.allocator.allocated(fid) == self._held_by(fid), fid

    def _held_by(self, fid: str) -> dict[tuple[str, str], Resources]:
        """What the framework holds per (agent, role) by the master's records: outstanding
        offers, live tasks and executors. The allocator must agree exactly."""
        held: dict[tuple[str, str], Resources] = {}

        def add(agent_id: str, role: str, res: Resources) -> None:
            if res and agent_id in self.agents:
                held[(agent_id, role)] = held.get((agent_id, role), Resources()) + res

        fw = self.frameworks[fid]
        for oid in fw.offers:
            offer = self.offers[oid]
            add(offer.agent_id, offer.role, offer.resources)
        for task in fw.tasks.values():
            if not task_states.is_terminal(task.state):
                add(task.agent_id, task.role, task.resources)
        for agent in self.agents.values():
            for (efid, _), ex in agent.executors.items():
                if efid == fid:
                    add(agent.agent_id, ex.role, ex.resources)
        return held


SchedulerCallHandler = Callable[[MasterMachine, Framework, SchedulerCall, float], CallResult]

# Every scheduler call but SUBSCRIBE (which opens a stream: `MasterMachine.subscribe`), by
# type. Grep a call type to find its handler.
SCHEDULER_CALLS: dict[str, SchedulerCallHandler] = {
    "TEARDOWN": MasterMachine._call_teardown,
    "ACCEPT": MasterMachine._call_accept,
    "DECLINE": MasterMachine._call_decline,
    "ACCEPT_INVERSE_OFFERS": MasterMachine._call_accept_inverse_offers,
    "DECLINE_INVERSE_OFFERS": MasterMachine._call_decline_inverse_offers,
    "REVIVE": MasterMachine._call_revive,
    "SUPPRESS": MasterMachine._call_suppress,
    "KILL": MasterMachine._call_kill,
    "SHUTDOWN": MasterMachine._call_shutdown,
    "ACKNOWLEDGE": MasterMachine._call_acknowledge,
    "ACKNOWLEDGE_OPERATION_STATUS": MasterMachine._call_acknowledge_operation_status,
    "RECONCILE": MasterMachine._call_reconcile,
    "RECONCILE_OPERATIONS": MasterMachine._call_reconcile_operations,
    "MESSAGE": MasterMachine._call_message,
    "REQUEST": MasterMachine._call_request,
    "UPDATE_FRAMEWORK": MasterMachine._call_update_framework,
}

# A call type the protocol lists without a handler (or a handler for none) fails here, at
# import, not when a framework first sends it.
if SCHEDULER_CALLS.keys() != SCHEDULER_CALL_TYPES - {"SUBSCRIBE"}:
    raise ImportError(
        "scheduler call table out of step with SCHEDULER_CALL_TYPES: "
        f"{sorted(SCHEDULER_CALLS.keys() ^ (SCHEDULER_CALL_TYPES - {'SUBSCRIBE'}))}"
    )
