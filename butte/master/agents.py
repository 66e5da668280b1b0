"""Agent events of the master core: registration, re-registration, disconnection, pings,
removal. A mixin of `MasterMachine` (same records; effects collected for the event being
handled), kept apart for size. The public entry points are `MasterMachine`'s."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, get_args

import msgspec

from butte.coord.interface import (
    AdmitAgent,
    MarkGone,
    MarkUnreachable,
    RegistryState,
    RemoveAgent,
    UpdateAgentDrain,
)
from butte.core import domains, internal, resource_ops, task_states
from butte.core.messages import ID, DurationInfo, FrameworkInfo, KillPolicy
from butte.core.resources import Attribute, ResourceError, Resources
from butte.master import operation_feedback, operator_views, views
from butte.master.core import MasterCore
from butte.master.effects import CloseAgentConnection, OperatorEvent, SendToAgent
from butte.master.launch import resources_from_json
from butte.master.state import Agent, Drain, Framework, Task

log = logging.getLogger(__name__)
# How the tasks of a removed agent end. Marked gone (Mesos' __removeSlave without an
# unreachable time): TASK_GONE_BY_OPERATOR for partition-aware frameworks, TASK_LOST with
# REASON_AGENT_REMOVED for the others. Unregistered, replaced at its address or its machine
# DOWN (Mesos' removeSlave, then _removeSlave): TASK_LOST, REASON_AGENT_REMOVED, for every
# framework, "Agent <hostname> removed: <cause>".
REMOVED = (task_states.GONE_BY_OPERATOR, "REASON_AGENT_REMOVED_BY_OPERATOR")
REMOVED_LOST = (task_states.LOST, "REASON_AGENT_REMOVED")


class AgentEvents(MasterCore):
    """Handlers for what agents send and for agents going away."""

    __slots__ = ()

    def _agent_message(
        self, connection_id: str, message: internal.AgentMessage, peer_ip: str, now: float
    ) -> None:
        """One message from an agent connection."""
        if isinstance(message, internal.RegisterAgent):
            self._register_agent(connection_id, message, peer_ip, now)
            return
        agent_id = self.connections.get(connection_id)
        agent = self.agents.get(agent_id) if agent_id else None
        if agent is None:
            log.warning("Message %s from unregistered connection", type(message).__name__)
            return
        AGENT_MESSAGES[type(message)](self, agent, message, now)

    def _status_update(self, agent: Agent, msg: internal.StatusUpdate, now: float) -> None:
        fid = msg.framework_id.value
        status = msg.status
        if status.agent_id is None:
            status = msgspec.structs.replace(status, agent_id=ID(agent.agent_id))
        fw = self.frameworks.get(fid)
        self._count("status_updates")
        if fw is None:
            log.info("Status update for unknown framework %s from %s", fid, agent.agent_id)
            self._count("invalid_status_updates")
            return
        self._count("valid_status_updates")
        task = fw.tasks.get(status.task_id.value)
        if task is not None:
            self._apply_status(fw, task, status, now, msg.latest_state)
        self._send_status(fw, status)

    def _pong(self, agent: Agent, msg: internal.Pong, now: float) -> None:
        agent.awaiting_pong = False
        agent.missed_pings = 0

    def _executor_message(
        self, agent: Agent, msg: internal.ExecutorToFramework, now: float
    ) -> None:
        fw = self.frameworks.get(msg.framework_id.value)
        if fw is not None:
            self._send_framework(
                fw,
                {
                    "type": "MESSAGE",
                    "message": {
                        "agent_id": views.value(agent.agent_id),
                        "executor_id": msgspec.to_builtins(msg.executor_id),
                        "data": msg.data,
                    },
                },
            )

    def _operation_status_update(
        self, agent: Agent, msg: internal.OperationStatusUpdate, now: float
    ) -> None:
        """An agent resends an unacknowledged operation status: to the framework."""
        operation_feedback.resent(self, agent, msg.operation, self._recover_framework, now)

    def _unregister_agent(self, agent: Agent, msg: internal.UnregisterAgent, now: float) -> None:
        self._registry_write(RemoveAgent(agent.agent_id))
        message = f"Agent {agent.hostname} removed: the agent unregistered"
        self._remove_agent(agent, now, message, *REMOVED_LOST, counted_as="unregistered")

    def _executor_exited(self, agent: Agent, msg: internal.ExecutorExited, now: float) -> None:
        fid, eid = msg.framework_id.value, msg.executor_id.value
        self._remove_executor(agent, fid, eid, now)
        fw = self.frameworks.get(fid)
        if fw is None:
            return
        failure: dict[str, Any] = {
            "agent_id": views.value(agent.agent_id),
            "executor_id": views.value(eid),
            # Mesos' agent always says a status: -1 when the executor's end is unknown (a
            # recovered executor); pymesos reads it unconditionally.
            "status": -1 if msg.status is None else msg.status,
        }
        self._send_framework(fw, {"type": "FAILURE", "failure": failure})

    def _remove_executor(self, agent: Agent, fid: str, eid: str, now: float) -> None:
        """Forgets an executor on an agent, its resources going back to the allocator."""
        ex = agent.executors.pop((fid, eid), None)
        if ex is not None:
            self._recover(fid, agent.agent_id, ex.role, ex.resources, None, now)
        fw = self.frameworks.get(fid)
        if fw is not None:
            fw.executors.get(agent.agent_id, set()).discard(eid)

    def _register_agent(
        self, connection_id: str, msg: internal.RegisterAgent, peer_ip: str, now: float
    ) -> None:
        info = msg.agent_info
        try:
            total = Resources.from_json(info.resources)
            attributes = tuple(Attribute.from_json(a) for a in info.attributes)
        except ResourceError as e:
            self._refuse_agent(connection_id, f"Invalid agent resources or attributes: {e}")
            return
        refusal = self.maintenance.refusal(info.hostname, _ip_of(info.hostname) or peer_ip)
        if refusal is not None:  # its machine is DOWN for maintenance
            self._refuse_agent(connection_id, refusal)
            return
        if info.id is None:
            self._replace_agent_at(info, now)
            agent_id = self.ids.agent()
            info = msgspec.structs.replace(info, id=ID(agent_id))
            self._registry_write(AdmitAgent(agent_id, msgspec.to_builtins(info)))
            self._count("slave_registrations")
            admitted = self._admit_agent(
                connection_id, agent_id, info, total, attributes, msg, peer_ip, now
            )
            self._send_agent(
                admitted,
                internal.AgentRegistered(
                    agent_id=ID(agent_id), master_id=self.master_id, batches=True
                ),
            )
            return
        agent_id = info.id.value
        if agent_id in self.gone_agents:
            self._refuse_agent(connection_id, f"Agent {agent_id} has been marked gone")
            return
        agent = self.agents.get(agent_id)
        reported = total
        total = self._authoritative_total(agent_id, agent, total)
        if total != reported:
            info = msgspec.structs.replace(info, resources=total.to_json("post"))
        known = agent is not None
        if agent is None:
            announce = None
            if agent_id in self.recovering_agents:
                recorded = self.recovered_infos.pop(agent_id)  # the registry lists it already
                if _info_changed(recorded, total, attributes):
                    # Restarted with more under --reconfiguration_policy=additive while this
                    # master was away: the registry takes the new AgentInfo (Mesos'
                    # UpdateSlave), so the next failed-over master knows it too.
                    self._registry_write(AdmitAgent(agent_id, msgspec.to_builtins(info)))
            else:
                self._registry_write(AdmitAgent(agent_id, msgspec.to_builtins(info)))
                announce = (
                    "Unreachable agent re-reregistered"
                    if agent_id in self.unreachable_agents
                    else "Unknown agent reregistered"
                )
            agent = self._admit_agent(
                connection_id,
                agent_id,
                info,
                total,
                attributes,
                msg,
                peer_ip,
                now,
                announce,
                reregistered=True,
            )
            self.unreachable_agents.pop(agent_id, None)
        else:
            self._reconnect_agent(agent, connection_id, info, msg, peer_ip, now)
            self._update_agent_info(agent, total, attributes)
        self._count("slave_reregistrations")
        agent.reregistered_time = now
        self._send_agent(
            agent,
            internal.AgentReregistered(
                agent_id=ID(agent_id), master_id=self.master_id, batches=True
            ),
        )
        for (fid, tid), policy in agent.pending_kills.items():
            task = self.frameworks[fid].tasks.get(tid) if fid in self.frameworks else None
            if task is not None and not task_states.is_terminal(task.state):
                kill = internal.KillTask(framework_id=ID(fid), task_id=ID(tid), kill_policy=policy)
                self._send_agent(agent, kill)
        agent.pending_kills.clear()
        if total != reported:
            # The agent missed operations (or lost its checkpoint of them): the master's
            # view wins, as Mesos' does for checkpointed resources.
            self._send_agent(agent, internal.CheckpointResources(resources=total.to_json("post")))
        # Operations the agent kept: records rebuilt, unacknowledged statuses sent again.
        kept = operation_feedback.adopt(self, agent, msg.operations, self._recover_framework, now)
        if known:
            operation_feedback.resend_missing(self, agent, kept)
        self._shut_down_removed_frameworks(agent, msg)

    def _authoritative_total(
        self, agent_id: str, agent: Agent | None, reported: Resources
    ) -> Resources:
        """The total a re-registering agent has: the master's when it knows the agent, or
        after a failover the registry's when that holds dynamic reservations or volumes;
        else what the agent reports. Resources the agent declares on top of that total (it
        restarted with more under ``--reconfiguration_policy=additive``) are added to it."""
        if agent is not None:
            return _with_added(agent.total, reported)
        recorded = self.recovered_infos.get(agent_id, {}).get("resources")
        if not isinstance(recorded, list):
            return reported
        try:
            total = Resources.from_json(recorded)
        except ResourceError:
            log.warning("Registry holds unusable resources for agent %s", agent_id)
            return reported
        return _with_added(total, reported) if resource_ops.declared(total) != total else reported

    def _update_agent_info(
        self, agent: Agent, total: Resources, attributes: tuple[Attribute, ...]
    ) -> None:
        """A known agent re-registered with another total or other attributes (restarted
        under ``--reconfiguration_policy=additive``): the records, the allocator and the
        registry take them, as Mesos' master takes a changed AgentInfo (UpdateSlave)."""
        if total == agent.total and set(attributes) == set(agent.attributes):
            return
        log.info(
            "Agent %s re-registered with a new total %s (was %s) and attributes %s",
            agent.agent_id,
            total.to_text(),
            agent.total.to_text(),
            ";".join(f"{a.name}:{a.legacy_value()}" for a in attributes) or "(none)",
        )
        agent.total, agent.attributes = total, attributes
        self.allocator.update_agent_total(agent.agent_id, total)
        self.allocation_wanted = True
        self._registry_write(AdmitAgent(agent.agent_id, msgspec.to_builtins(agent.info)))

    def _shut_down_removed_frameworks(self, agent: Agent, msg: internal.RegisterAgent) -> None:
        """Frameworks removed while the agent was away (it missed SHUTDOWN_FRAMEWORK): their
        tasks must not live on there."""
        frameworks = self.frameworks
        reported = {
            t.framework_id.value for t in msg.tasks if t.framework_id.value not in frameworks
        }
        for fid in sorted(reported):
            if any(f.framework_id == fid for f in self.completed_frameworks):
                self._send_agent(agent, internal.ShutdownFramework(framework_id=ID(fid)))

    def _replace_agent_at(self, info: internal.AgentInfo, now: float) -> None:
        """A new agent registers where a disconnected one lived (it restarted without its
        checkpoint): the old one is gone for good, and its tasks are lost (Mesos
        ``registerSlave``: TASK_LOST, REASON_AGENT_REMOVED, for every framework)."""
        for old in list(self.agents.values()):
            if not old.connected and (old.hostname, old.port) == (info.hostname, info.port):
                self._registry_write(RemoveAgent(old.agent_id))
                self._remove_agent(
                    old,
                    now,
                    f"Agent {old.hostname} removed: a new agent registered at the same address",
                    *REMOVED_LOST,
                    counted_as="registered",
                )

    def _refuse_agent(self, connection_id: str, message: str) -> None:
        log.warning("Refusing agent on %s: %s", connection_id, message)
        self._effects.append(SendToAgent(connection_id, internal.ShutdownAgent(message=message)))
        self._effects.append(CloseAgentConnection(connection_id))

    def _admit_agent(
        self,
        connection_id: str,
        agent_id: str,
        info: internal.AgentInfo,
        total: Resources,
        attributes: tuple[Attribute, ...],
        msg: internal.RegisterAgent,
        peer_ip: str,
        now: float,
        announce: str | None = None,
        reregistered: bool = False,
    ) -> Agent:
        """Takes an agent into the records with what it reports. ``announce``: the message of
        the status update each reported task's framework gets (the agent was unreachable or
        unknown: frameworks heard otherwise of its tasks). Operator subscribers get each
        reported task's TASK_ADDED, then AGENT_ADDED, as Mesos' addSlave sends them."""
        agent = Agent(
            agent_id=agent_id,
            info=info,
            total=total,
            attributes=attributes,
            registered_time=now,
            reregistered_time=now if reregistered else None,
            connection_id=connection_id,
            ip=_ip_of(info.hostname) or peer_ip,
            version=msg.version,
        )
        self.agents[agent_id] = agent
        self.connections[connection_id] = agent_id
        was_unreachable = agent_id in self.unreachable_agents
        used = self._adopt_reported(agent, msg, was_unreachable, announce, now)
        remote = domains.is_remote(self.options.domain, info.domain)
        self.allocator.add_agent(agent_id, total, used=used, remote=remote)
        self.allocation_wanted = True
        if agent_id in self.away_deactivations:
            # Deactivated or drained while away: it stays so (Mesos keeps it in the registry).
            agent.drain = self.away_deactivations.pop(agent_id)
            self._deactivate(agent, now)
            if agent.drain is not None and agent.drain.state == "DRAINING":
                self._kill_for_drain(agent)  # `_check_drains` sees when they are done
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.agent_added(self, agent)))
        if log.isEnabledFor(logging.INFO):  # to_text is not free, and 10k agents may arrive
            log.info(
                "Agent %s at %s:%d registered (%s)",
                agent_id,
                agent.hostname,
                agent.port,
                total.to_text(),
            )
        return agent

    def _adopt_reported(
        self,
        agent: Agent,
        msg: internal.RegisterAgent,
        was_unreachable: bool,
        announce: str | None,
        now: float,
    ) -> dict[tuple[str, str], Resources]:
        """Rebuilds frameworks, executors and tasks an agent reports (master restarted or
        agent came back). Returns what they use, per (framework, role), for the allocator."""
        infos = {f.id.value: f for f in msg.frameworks if f.id is not None}
        used: dict[tuple[str, str], Resources] = {}
        # Per framework, worked out once per report (an agent reports many tasks of few).
        default_role: dict[str, str] = {}
        for rt in msg.tasks:
            fid = rt.framework_id.value
            fw = self.frameworks.get(fid) or self._recover_framework(fid, infos.get(fid), now)
            if fw is None:
                continue
            if fid not in default_role:
                roles = fw.roles
                default_role[fid] = roles[0] if roles else "*"
            if was_unreachable and not fw.partition_aware:
                self._send_agent(
                    agent, internal.KillTask(framework_id=rt.framework_id, task_id=rt.task_id)
                )
            try:
                res = resources_from_json(rt.resources)
            except ResourceError:
                res = Resources()
            role = _allocation_role(rt.resources) or default_role[fid]
            task = Task(
                task_id=rt.task_id.value,
                framework_id=fid,
                agent_id=agent.agent_id,
                name=rt.name,
                role=role,
                resources=res,
                state=rt.state,
                executor_id=rt.executor_id.value if rt.executor_id else None,
                statuses=list(rt.statuses),
                status_update_state=rt.status_update_state,
                status_update_uuid=rt.status_update_uuid,
            )
            fw.tasks[task.task_id] = task
            agent.tasks.add((fid, task.task_id))
            if self.operator_subscribers:
                self._effects.append(OperatorEvent(operator_views.task_added(task)))
            if announce is not None:
                self._announce_back(fw, task, announce, now)
            if not task_states.is_terminal(task.state):
                used[(fid, role)] = used.get((fid, role), Resources()) + res
        for ex in msg.executors:
            fid = ex.framework_id.value if ex.framework_id else ""
            fw = self.frameworks.get(fid) if fid else None
            if fw is None or ex.command is None:
                continue
            try:
                res = Resources.from_json(ex.resources)
            except ResourceError:
                res = Resources()
            role = _allocation_role(ex.resources) or (fw.roles[0] if fw.roles else "*")
            self._add_executor(fw, agent, ex, role, res)
            used[(fid, role)] = used.get((fid, role), Resources()) + res
        return used

    def _announce_back(self, fw: Framework, task: Task, message: str, now: float) -> None:
        """A task back from an agent that was unreachable or unknown: it leaves the
        framework's completed tasks (where it was TASK_UNREACHABLE), and the framework is
        told its state (Mesos: REASON_SLAVE_REREGISTERED, no acknowledgement wanted)."""
        if any(t.task_id == task.task_id for t in fw.completed_tasks):
            kept = [t for t in fw.completed_tasks if t.task_id != task.task_id]
            fw.completed_tasks.clear()
            fw.completed_tasks.extend(kept)
        status = self.master_status(
            fw,
            task.task_id,
            task.state,
            "REASON_SLAVE_REREGISTERED",
            message,
            now,
            agent_id=task.agent_id,
            executor_id=task.executor_id,
        )
        self._send_status(fw, status)

    def _recover_framework(
        self, fid: str, info: FrameworkInfo | None, now: float
    ) -> Framework | None:
        """A framework known only from an agent's report: inactive until it re-subscribes."""
        if info is None or any(f.framework_id == fid for f in self.completed_frameworks):
            return None
        fw = Framework(
            framework_id=fid,
            info=info,
            registered_time=now,
            recovered=True,
            completed_tasks=deque(maxlen=self.options.max_completed_tasks_per_framework),
        )
        self.frameworks[fid] = fw
        self.allocator.add_framework(fid, fw.roles, capabilities=fw.capabilities, active=False)
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.framework_added(self, fw)))
        return fw

    def _reconnect_agent(
        self,
        agent: Agent,
        connection_id: str,
        info: internal.AgentInfo,
        msg: internal.RegisterAgent,
        peer_ip: str,
        now: float,
    ) -> None:
        if agent.connection_id is not None and agent.connection_id != connection_id:
            self._effects.append(CloseAgentConnection(agent.connection_id))
            self.connections.pop(agent.connection_id, None)
        agent.connection_id = connection_id
        self.connections[connection_id] = agent.agent_id
        agent.connected = True
        agent.active = not agent.deactivated
        agent.disconnected_at = None
        agent.missed_pings = 0
        agent.awaiting_pong = False
        agent.info = msgspec.structs.replace(info, id=ID(agent.agent_id))
        reported = {(t.framework_id.value, t.task_id.value): t for t in msg.tasks}
        for key in list(agent.tasks):
            fid, tid = key
            fw = self.frameworks.get(fid)
            task = fw.tasks.get(tid) if fw else None
            if fw is None or task is None:
                agent.tasks.discard(key)
                continue
            if key not in reported and not task_states.is_terminal(task.state):
                # Never reached the agent (a RUN_TASK lost with its connection), or the agent
                # restarted without it: it does not run (Mesos reconciles it to this state).
                state = task_states.DROPPED if fw.partition_aware else task_states.LOST
                if task.state == task_states.STAGING:
                    reason, message = (
                        "REASON_AGENT_REREGISTERED",
                        "Task was not delivered to the agent",
                    )
                else:
                    reason, message = (
                        "REASON_RECONCILIATION",
                        "Task unknown to the re-registered agent",
                    )
                self._terminate_task(fw, task, state, reason, message, now)
        if agent.active:
            self.allocator.activate_agent(agent.agent_id)
            self.allocation_wanted = True
        log.info("Agent %s re-registered", agent.agent_id)

    def _agent_disconnected(self, connection_id: str, now: float) -> None:
        """An agent's connection closed: stop offering its resources and wait for it to come
        back within ``agent_reregister_timeout``."""
        agent_id = self.connections.pop(connection_id, None)
        agent = self.agents.get(agent_id) if agent_id else None
        if agent is None or agent.connection_id != connection_id:
            return
        agent.connected = False
        agent.active = False
        agent.connection_id = None
        agent.disconnected_at = now
        self.allocator.deactivate_agent(agent.agent_id)
        self._rescind_offers_of(agent, now)
        # Mesos semantics: tasks and executors of frameworks that do not checkpoint cannot
        # survive an agent failure, so they are lost as soon as the agent disconnects.
        for fw, task in self._tasks_on(agent):
            if not fw.info.checkpoint:
                self._terminate_task(
                    fw,
                    task,
                    task_states.LOST,
                    "REASON_AGENT_DISCONNECTED",
                    f"Agent {agent.hostname} disconnected",
                    now,
                )
        for fid, eid in list(agent.executors):
            owner = self.frameworks.get(fid)
            if owner is not None and not owner.info.checkpoint:
                self._remove_executor(agent, fid, eid, now)
        log.info("Agent %s disconnected", agent.agent_id)

    def _ping_agents(self, now: float) -> None:
        """Called every ``agent_ping_timeout``: counts missed PONGs, pings again. An agent
        that missed ``max_agent_ping_timeouts`` in a row is marked unreachable, at most as
        fast as ``agent_removal_rate_limit`` allows (the rest wait in line, still pinged;
        one that answers meanwhile is spared, as in Mesos)."""
        self._remove_due_agents(now)
        for agent in list(self.agents.values()):
            # A disconnected agent cannot answer: its pings count as missed, so it is
            # unreachable after the same ~75 s unless it re-registers (Mesos' agent observer
            # keeps pinging an agent whose socket broke).
            if agent.awaiting_pong:
                agent.missed_pings += 1
                if agent.missed_pings >= self.options.max_agent_ping_timeouts:
                    if self.options.agent_removal_rate_limit is None:
                        # Mesos' observer schedules the transition and, with no rate
                        # limit, completes it at once.
                        self._count("slave_unreachable_scheduled")
                        self._count("slave_unreachable_completed")
                        self._mark_unreachable(agent, now, "Agent failed health checks")
                        continue
                    if agent.agent_id not in self.pending_agent_removals:
                        self._count("slave_unreachable_scheduled")
                        self.pending_agent_removals.append(agent.agent_id)
            agent.awaiting_pong = True
            if agent.connected:
                self._send_agent(agent, internal.Ping())
        self._remove_due_agents(now)

    def _remove_due_agents(self, now: float) -> None:
        """Marks queued agents unreachable while the removal rate limit has permits."""
        limit = self.options.agent_removal_rate_limit
        if limit is None:
            return
        permits, period = limit
        while self.pending_agent_removals:
            last = self.last_agent_removal
            if last is not None and now < last + period / permits:
                return
            agent = self.agents.get(self.pending_agent_removals.popleft())
            limit_reached = self.options.max_agent_ping_timeouts
            if agent is None or agent.missed_pings < limit_reached:
                # Answered a ping (or re-registered) meanwhile, or gone another way.
                self._count("slave_unreachable_canceled")
                continue
            self.last_agent_removal = now
            self._count("slave_unreachable_completed")
            self._mark_unreachable(agent, now, "Agent failed health checks")

    def _mark_unreachable(self, agent: Agent, now: float, message: str) -> None:
        self._registry_write(MarkUnreachable(agent.agent_id, now))
        self.unreachable_agents[agent.agent_id] = now
        self._remove_agent(
            agent,
            now,
            message,
            task_states.UNREACHABLE,
            "REASON_AGENT_REMOVED",
            counted_as="unhealthy",
        )

    def _rescind_offers_of(self, agent: Agent, now: float) -> None:
        for offer_id in list(agent.offers):
            offer = self.offers.get(offer_id)
            if offer is not None:
                self._rescind(offer, now)

    def _tasks_on(self, agent: Agent) -> list[tuple[Framework, Task]]:
        """The agent's tasks with their frameworks (a list: callers remove tasks)."""
        out = []
        for fid, tid in agent.tasks:
            fw = self.frameworks.get(fid)
            task = fw.tasks.get(tid) if fw is not None else None
            if fw is not None and task is not None:
                out.append((fw, task))
        return out

    def _remove_agent(
        self,
        agent: Agent,
        now: float,
        message: str,
        state: str,
        reason: str,
        counted_as: str | None = None,
    ) -> None:
        """Removes an agent, ending its tasks with ``state``/``reason``; counted in
        ``slave_removals`` and, with ``counted_as``, ``slave_removals/reason_<counted_as>``
        (Mesos' unhealthy, unregistered, registered)."""
        log.info("Removing agent %s: %s", agent.agent_id, message)
        self._count("slave_removals")
        if counted_as is not None:
            self._count(f"slave_removals/reason_{counted_as}")
        self._rescind_offers_of(agent, now)
        for fw, task in self._tasks_on(agent):
            tid = task.task_id
            why = reason
            if state == task_states.GONE_BY_OPERATOR and not fw.partition_aware:
                why = "REASON_AGENT_REMOVED"  # with TASK_LOST, as Mesos tells these
            ended = task_states.is_terminal(task.state)
            self._terminate_task(fw, task, state, why, message, now)
            if state == task_states.UNREACHABLE and not ended:
                task.unreachable_time = now
                # Unreachable tasks leave the agent; they come back if it re-registers.
                fw.tasks.pop(tid, None)
                fw.completed_tasks.append(task)
        for fw in self.frameworks.values():
            fw.executors.pop(agent.agent_id, None)
            self._send_framework(
                fw, {"type": "FAILURE", "failure": {"agent_id": views.value(agent.agent_id)}}
            )
        if agent.connection_id is not None:
            self._effects.append(CloseAgentConnection(agent.connection_id))
            self.connections.pop(agent.connection_id, None)
        self.allocator.remove_agent(agent.agent_id)
        del self.agents[agent.agent_id]
        if state == task_states.UNREACHABLE and agent.deactivated:
            self.away_deactivations[agent.agent_id] = agent.drain
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.agent_removed(agent.agent_id)))

    def _mark_agent_gone(self, agent_id: str, now: float) -> bool:
        """Operator MARK_AGENT_GONE: the agent is told to shut down, its tasks become
        TASK_GONE_BY_OPERATOR (TASK_LOST for frameworks that are not partition-aware), and it
        is refused if it ever comes back. Idempotent; False for an agent never known."""
        if agent_id in self.gone_agents:
            return True
        agent = self.agents.get(agent_id)
        known = agent_id in self.unreachable_agents or agent_id in self.recovering_agents
        if agent is None and not known:
            return False
        self._registry_write(MarkGone(agent_id, now))
        self.recovered_infos.pop(agent_id, None)
        self.away_deactivations.pop(agent_id, None)
        self.gone_agents[agent_id] = now
        self.unreachable_agents.pop(agent_id, None)
        if agent is not None:
            self._send_agent(agent, internal.ShutdownAgent(message="Agent marked gone"))
            self._remove_agent(
                agent,
                now,
                "Agent marked gone by the operator",
                *REMOVED,
            )
        return True

    # -- operator: deactivate, reactivate, drain ---------------------------------------------

    def _known_away(self, agent_id: str) -> bool:
        """Whether an agent that is not registered may still come back (recovering after a
        failover, or unreachable): operator deactivation and drains apply to it then."""
        return agent_id in self.recovering_agents or agent_id in self.unreachable_agents

    def _deactivate_agent(self, agent_id: str, now: float) -> bool:
        """Operator DEACTIVATE_AGENT: no more offers from the agent (outstanding ones are
        rescinded); what runs there keeps running. False for an unknown agent."""
        agent = self.agents.get(agent_id)
        if agent is None:
            if not self._known_away(agent_id):
                return False
            drain = self.away_deactivations.get(agent_id)
            self._registry_write(UpdateAgentDrain(agent_id, _drain_record(drain)))
            self.away_deactivations[agent_id] = drain
            return True
        self._registry_write(UpdateAgentDrain(agent_id, _drain_record(agent.drain)))
        self._deactivate(agent, now)
        return True

    def _deactivate(self, agent: Agent, now: float) -> None:
        agent.deactivated = True
        if agent.active:
            agent.active = False
            self.allocator.deactivate_agent(agent.agent_id)
        self._rescind_offers_of(agent, now)

    def _reactivate_agent(self, agent_id: str, now: float) -> str | None:
        """Operator REACTIVATE_AGENT: offers resume once a drain is over. Why it is refused
        (Mesos' words), or None."""
        agent = self.agents.get(agent_id)
        if agent is not None and agent.deactivated:
            drain = agent.drain
        elif agent is None and agent_id in self.away_deactivations:
            drain = self.away_deactivations[agent_id]
        else:
            return "Agent is not deactivated"
        if drain is not None and drain.state == "DRAINING":
            return "Agent is still in the DRAINING state"
        self._registry_write(UpdateAgentDrain(agent_id, None))
        self.away_deactivations.pop(agent_id, None)
        if agent is None:
            return None  # it comes back active
        agent.deactivated = False
        agent.drain = None
        if agent.connected and not agent.active:
            agent.active = True
            self.allocator.activate_agent(agent_id)
            self.allocation_wanted = True
        return None

    def _drain_agent(
        self, agent_id: str, max_grace_period: float | None, mark_gone: bool, now: float
    ) -> bool:
        """Operator DRAIN_AGENT: deactivate the agent and kill every task on it (each with at
        most ``max_grace_period`` to stop); once none is left it is DRAINED, and marked gone
        if asked. An agent that is away is drained when it comes back. False for an unknown
        agent."""
        agent = self.agents.get(agent_id)
        if agent is None and not self._known_away(agent_id):
            return False
        drain = Drain(max_grace_period, mark_gone)
        self._registry_write(UpdateAgentDrain(agent_id, _drain_record(drain)))
        if agent is None:
            self.away_deactivations[agent_id] = drain
            return True
        agent.drain = drain
        self._deactivate(agent, now)
        self._kill_for_drain(agent)
        self._finish_drain(agent, now)
        return True

    def _kill_for_drain(self, agent: Agent) -> None:
        """Kills every live task on a draining agent, with at most its grace period."""
        assert agent.drain is not None
        policy = None
        if agent.drain.max_grace_period is not None:
            nanos = int(agent.drain.max_grace_period * 1e9)
            policy = KillPolicy(grace_period=DurationInfo(nanos))
        for fid, tid in sorted(agent.tasks):
            task = self.frameworks[fid].tasks.get(tid)
            if task is not None and not task_states.is_terminal(task.state):
                self._send_agent(
                    agent,
                    internal.KillTask(
                        framework_id=ID(fid), task_id=ID(tid), kill_policy=policy, draining=True
                    ),
                )

    def _check_drains(self, now: float) -> None:
        """Completes drains whose agents have no live task left (from `tick`)."""
        for agent in list(self.agents.values()):
            if agent.drain is not None and agent.drain.state == "DRAINING":
                self._finish_drain(agent, now)

    def _finish_drain(self, agent: Agent, now: float) -> None:
        assert agent.drain is not None
        for fid, tid in agent.tasks:
            task = self.frameworks[fid].tasks.get(tid)
            if task is not None and not task_states.is_terminal(task.state):
                return
        agent.drain.state = "DRAINED"
        self._registry_write(UpdateAgentDrain(agent.agent_id, _drain_record(agent.drain)))
        log.info("Agent %s drained", agent.agent_id)
        if agent.drain.mark_gone:
            self._mark_agent_gone(agent.agent_id, now)

    # -- registry -----------------------------------------------------------------------------

    def _recover_registry(self, registry: RegistryState, now: float) -> None:
        """Takes over what the registry remembers once this master is elected: admitted
        agents are expected to re-register within ``agent_reregister_timeout`` (explicit
        reconciliation of their tasks gets no answer meanwhile), unreachable and gone agents
        stay so, and the role weights apply again."""
        self.recovered_infos = {
            agent_id: dict(info)
            for agent_id, info in registry.agents.items()
            if agent_id not in self.agents
        }
        self.unreachable_agents.update(registry.unreachable)
        self.gone_agents.update(registry.gone)
        for agent_id, record in registry.deactivated.items():
            drain = record.get("drain")
            self.away_deactivations[agent_id] = None if drain is None else Drain.from_json(drain)
        if registry.weights:
            self.allocator.update_weights(registry.weights)
        self.recovery_deadline = None
        if self.recovering_agents:
            self.recovery_deadline = now + self.options.agent_reregister_timeout
        log.info(
            "Recovered registry: %d agents expected back, %d unreachable, %d gone",
            len(self.recovering_agents),
            len(registry.unreachable),
            len(registry.gone),
        )

    def _expire_recovering_agents(self, now: float) -> None:
        """Marks unreachable the recovered agents that did not re-register in time."""
        if self.recovery_deadline is None or now < self.recovery_deadline:
            return
        self.recovery_deadline = None
        for agent_id in sorted(self.recovering_agents):
            self._registry_write(MarkUnreachable(agent_id, now))
            self.unreachable_agents[agent_id] = now
            # As Mesos' recoveredSlavesTimeout and _markUnreachable during a failover count
            # it (butte marks them all at once: scheduled and completed together).
            self._count("slave_unreachable_scheduled")
            self._count("slave_unreachable_completed")
            self._count("recovery_slave_removals")
            self._count("slave_removals")
            self._count("slave_removals/reason_unhealthy")
        if self.recovering_agents:
            log.warning(
                "%d recovered agent(s) did not re-register within %.0fs: marked unreachable",
                len(self.recovering_agents),
                self.options.agent_reregister_timeout,
            )
        self.recovered_infos.clear()


def _with_added(known: Resources, reported: Resources) -> Resources:
    """``known`` (the master's total of an agent, with its reservations and volumes) with
    what ``reported`` declares beyond what ``known`` was made of; ``known`` itself when the
    agent declares the same, less, or something its volumes cannot be reconciled with."""
    had, has = resource_ops.declared(known), resource_ops.declared(reported)
    if has == had or not has.contains(had):
        return known
    grown = known + (has - had)
    return grown if resource_ops.declared(grown) == has else known


def _info_changed(
    recorded: dict[str, Any], total: Resources, attributes: tuple[Attribute, ...]
) -> bool:
    """Whether the registry's AgentInfo ``recorded`` has another total or other attributes
    than an agent re-registers with (one it cannot read counts as changed; a record without
    a hostname is no AgentInfo a master wrote, and there is nothing to compare with)."""
    if "hostname" not in recorded:
        return False
    try:
        before = Resources.from_json(recorded.get("resources") or [])
        had = {Attribute.from_json(a) for a in recorded.get("attributes") or []}
    except (ResourceError, TypeError, AttributeError):
        return True
    return before != total or had != set(attributes)


def _allocation_role(resources: list[dict[str, Any]]) -> str | None:
    for r in resources:
        info = r.get("allocation_info")
        role = info.get("role") if isinstance(info, dict) else None
        if isinstance(role, str):
            return role
    return None


def _ip_of(hostname: str) -> str | None:
    parts = hostname.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
        return hostname
    return None


def _drain_record(drain: Drain | None) -> dict[str, Any]:
    """A deactivated agent's registry record (`UpdateAgentDrain`)."""
    return {"drain": None if drain is None else drain.to_json()}


AgentMessageHandler = Callable[[AgentEvents, Agent, Any, float], None]

# What a registered agent may send, by message type (REGISTER_AGENT comes before the agent is
# known: `AgentEvents.agent_message` handles it first). Grep a message type to find its
# handler.
AGENT_MESSAGES: dict[type, AgentMessageHandler] = {
    internal.StatusUpdate: AgentEvents._status_update,
    internal.Pong: AgentEvents._pong,
    internal.ExecutorExited: AgentEvents._executor_exited,
    internal.ExecutorToFramework: AgentEvents._executor_message,
    internal.UnregisterAgent: AgentEvents._unregister_agent,
    internal.OperationStatusUpdate: AgentEvents._operation_status_update,
}

# A message type of the protocol without a handler fails here, at import.
if AGENT_MESSAGES.keys() != set(get_args(internal.AgentMessage)) - {internal.RegisterAgent}:
    raise ImportError("agent message table out of step with internal.AgentMessage")
