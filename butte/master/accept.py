"""ACCEPT handling of the master core: offer validation, LAUNCH and LAUNCH_GROUP, and the
offer operations (RESERVE, CREATE, ...: `butte.master.offer_ops`), carried out in the order
given so that each sees what the ones before it did. A mixin of `MasterMachine` (same
records; effects collected for the event being handled), kept apart for size."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import msgspec

from butte.core import internal, resource_ops, task_states
from butte.core.container_info import image_of
from butte.core.messages import Accept, ExecutorInfo, Operation, TaskInfo
from butte.core.resources import Resources
from butte.core.task_validation import command_problem
from butte.master import operator_views
from butte.master.effects import OperatorEvent
from butte.master.launch import InvalidTask, check_task, task_role
from butte.master.offer_ops import DROPPED, OperationEvents
from butte.master.state import Agent, Framework, Offer, Task

log = logging.getLogger(__name__)


class AcceptEvents(OperationEvents):
    """Turns an ACCEPT into tasks on an agent, or into TASK_ERROR / TASK_LOST answers."""

    __slots__ = ()

    def _accept(self, fw: Framework, accept: Accept, now: float) -> None:
        offers, error = self._validate_offers(fw, [o.value for o in accept.offer_ids])
        refuse = self._refuse_seconds(accept.filters)
        unsupported = _unsupported_operation(accept.operations)
        if error is not None or unsupported is not None:
            # Refused whole, before anything happened: the offers' resources go back to the
            # allocator and every task and operation in the call hears why.
            self._count("invalid_accepts")
            for offer in offers:
                self._take_offer(offer.offer_id)
                self._recover(
                    fw.framework_id, offer.agent_id, offer.role, offer.resources, None, now
                )
            if error is not None:
                state = task_states.DROPPED if fw.partition_aware else task_states.LOST
                reason = "REASON_INVALID_OFFERS"
            else:
                error = f"ACCEPT refused: {unsupported}"
                state, reason = task_states.ERROR, "REASON_TASK_INVALID"
            for task in _tasks_of(accept.operations):
                self._send_status(
                    fw, self.master_status(fw, task.task_id.value, state, reason, error, now)
                )
            agent_id = offers[0].agent_id if offers else None
            op_state = DROPPED if unsupported is None else "OPERATION_ERROR"
            for op in accept.operations:
                if op.type not in ("LAUNCH", "LAUNCH_GROUP"):
                    self._operation_status(fw, op, agent_id, op_state, error, None, now)
            return
        agent = self.agents[offers[0].agent_id]
        pools: dict[str, Resources] = {}
        for offer in offers:
            self._take_offer(offer.offer_id)
            pools[offer.role] = pools.get(offer.role, Resources()) + offer.resources
        self._count_for(fw, "offers/accepted", len(offers))
        launched_ids: set[str] = set()
        for op in accept.operations:
            if op.type in ("LAUNCH", "LAUNCH_GROUP") and op.id is not None:
                # Mesos: operation feedback is not for launches; their tasks are refused.
                group = op.type == "LAUNCH_GROUP"
                reason = "REASON_TASK_GROUP_INVALID" if group else "REASON_TASK_INVALID"
                message = f"The `id` field cannot be set on {op.type} operations"
                for task in _tasks_of([op]):
                    self._task_error(fw, task, message, now, reason)
            elif op.type == "LAUNCH" and op.launch is not None:
                for task in op.launch.task_infos:
                    self._launch(fw, agent, task, pools, launched_ids, now)
            elif op.type == "LAUNCH_GROUP" and op.launch_group is not None:
                self._launch_group(fw, agent, op, pools, launched_ids, now)
            else:
                self._offer_operation(fw, agent, op, pools, now)
        for role, left in pools.items():
            self._recover(fw.framework_id, agent.agent_id, role, left, refuse, now)

    def _check_run_as(self, fw: Framework, task: TaskInfo) -> None:
        """The ``run_tasks`` ACL: may the framework's principal run a task as its user?"""
        command = task.command or (task.executor.command if task.executor else None)
        user = (command.user if command is not None else None) or fw.info.user
        if not self.options.acls.allowed("run_tasks", fw.info.principal, user):
            principal = fw.info.principal or "(none)"
            raise InvalidTask(
                f"Not authorized to launch as user '{user}' (principal {principal})",
                "REASON_TASK_UNAUTHORIZED",
            )

    def _validate_offers(
        self, fw: Framework, offer_ids: list[str]
    ) -> tuple[list[Offer], str | None]:
        offers: list[Offer] = []
        error = None
        if not offer_ids:
            error = "No offers specified"
        if len(set(offer_ids)) != len(offer_ids):
            error = "Duplicate offers in the call"
        for oid in dict.fromkeys(offer_ids):
            offer = self.offers.get(oid)
            if offer is None:
                error = f"Offer {oid} is no longer valid"
            elif offer.framework_id != fw.framework_id:
                error = f"Offer {oid} belongs to another framework"
            else:
                offers.append(offer)
        if error is None and len({o.agent_id for o in offers}) > 1:
            error = "Aggregated offers must belong to the same agent"
        if error is None and len({o.role for o in offers}) > 1:
            other = next(o for o in offers if o.role != offers[0].role)
            error = (
                f"Aggregated offers must be allocated to the same role. Offer "
                f"{other.offer_id} uses role '{other.role}' but another is using role "
                f"'{offers[0].role}'"
            )
        return offers, error

    def _task_error(
        self,
        fw: Framework,
        task: TaskInfo,
        message: str,
        now: float,
        reason: str = "REASON_TASK_INVALID",
    ) -> None:
        self._count("invalid_tasks")
        self._send_status(
            fw, self.master_status(fw, task.task_id.value, task_states.ERROR, reason, message, now)
        )

    def _launch(
        self,
        fw: Framework,
        agent: Agent,
        task: TaskInfo,
        pools: dict[str, Resources],
        launched_ids: set[str],
        now: float,
    ) -> None:
        try:
            role = task_role(task, fw.info, set(pools))
            self._check_run_as(fw, task)
            known = self._executor_infos(fw, agent)
            res, eid, exec_res = check_task(
                task, fw.info, agent.agent_id, _IdsInUse(fw.tasks, launched_ids), known
            )
            needed = res + exec_res
            if not pools[role].contains(needed):
                raise InvalidTask(
                    f"Task uses more resources {needed.to_text()} than available "
                    f"{pools[role].to_text()}"
                )
        except InvalidTask as e:
            self._task_error(fw, task, str(e), now, e.reason)
            return
        except Exception as e:  # a bug in validation must not leave the call half applied
            log.exception("Framework %s: validating task failed", fw.framework_id)
            self._task_error(fw, task, f"Task could not be validated: {e!r}", now)
            return
        pools[role] = pools[role] - needed
        launched_ids.add(task.task_id.value)
        if task.executor is not None and exec_res and eid is not None:
            self._add_executor(fw, agent, task.executor, role, exec_res)
        # A command task has no executor of its own in the master's views (Mesos leaves
        # its executor_id empty); a group's members name the group's executor.
        self._add_task(fw, agent, task, role, res, eid if task.executor else None, now)
        # Mesos counts its LAUNCH operation once per task it sends to the agent.
        self._count_for(fw, "operations/launch")
        self._send_agent(agent, internal.RunTask(framework=fw.info, task=task))

    def _launch_group(
        self,
        fw: Framework,
        agent: Agent,
        op: Operation,
        pools: dict[str, Resources],
        launched_ids: set[str],
        now: float,
    ) -> None:
        group = op.launch_group
        assert group is not None
        tasks = group.task_group.tasks
        executor = group.executor
        try:
            if not tasks:
                raise InvalidTask("Task group is empty")
            if executor.type not in (None, "DEFAULT"):
                raise InvalidTask("LAUNCH_GROUP needs an executor of type DEFAULT")
            if any(t.executor is not None for t in tasks):
                raise InvalidTask("Tasks of a task group must not set 'executor'")
            if image_of(executor.container) is not None:
                # Its members may run in images (each its own root filesystem), not itself.
                raise InvalidTask("A task group's executor cannot run in an image")
            # Each task is checked as if it named the group's executor.
            wrapped = [msgspec.structs.replace(t, executor=executor, command=None) for t in tasks]
            role = task_role(wrapped[0], fw.info, set(pools))
            for t in tasks:
                self._check_run_as(fw, msgspec.structs.replace(t, executor=executor))
            known = self._executor_infos(fw, agent)
            checked = []
            exec_total = Resources()
            for t in tasks:
                problem = command_problem(t.command, "Task's")
                if problem is not None:
                    raise InvalidTask(problem)
            for t in wrapped:
                res, _, exec_total = check_task(
                    t,
                    fw.info,
                    agent.agent_id,
                    _IdsInUse(fw.tasks, launched_ids),
                    known,
                    in_group=True,
                )
                launched_ids.add(t.task_id.value)
                checked.append((t, res))
            needed = exec_total
            for _, res in checked:
                needed = needed + res
            if not pools[role].contains(needed):
                raise InvalidTask("Task group uses more resources than available")
        except InvalidTask as e:
            for t in tasks:
                self._task_error(fw, t, str(e), now, "REASON_TASK_GROUP_INVALID")
            return
        except Exception as e:  # a bug in validation must not leave the call half applied
            log.exception("Framework %s: validating a task group failed", fw.framework_id)
            for t in tasks:
                message = f"Task group could not be validated: {e!r}"
                self._task_error(fw, t, message, now, "REASON_TASK_GROUP_INVALID")
            return
        pools[role] = pools[role] - needed
        eid = executor.executor_id.value
        if exec_total:
            self._add_executor(fw, agent, executor, role, exec_total)
        for (_, res), original in zip(checked, tasks, strict=True):
            self._add_task(fw, agent, original, role, res, eid, now)
        self._count_for(fw, "operations/launch_group")
        self._send_agent(
            agent,
            internal.RunTaskGroup(
                framework=fw.info, executor=executor, task_group=group.task_group
            ),
        )

    def _executor_infos(self, fw: Framework, agent: Agent) -> dict[str, ExecutorInfo]:
        return {
            e.executor_id: e.info
            for (fid, _), e in agent.executors.items()
            if fid == fw.framework_id
        }

    def _add_task(
        self,
        fw: Framework,
        agent: Agent,
        info: TaskInfo,
        role: str,
        res: Resources,
        eid: str | None,
        now: float,
    ) -> None:
        tid = info.task_id.value
        task = Task(
            task_id=tid,
            framework_id=fw.framework_id,
            agent_id=agent.agent_id,
            name=info.name,
            role=role,
            resources=res,
            state=task_states.STAGING,
            executor_id=eid,
            info=info,
        )
        fw.tasks[tid] = task
        agent.tasks.add((fw.framework_id, tid))
        self._count("tasks_launched")
        if self.operator_subscribers:
            self._effects.append(OperatorEvent(operator_views.task_added(task)))


class _IdsInUse:
    """Task ids a new task must not reuse: the framework's tasks and those launched earlier
    in the same ACCEPT. A view, not a copy: copying them per task made a launch O(tasks)."""

    __slots__ = ("tasks", "launched")

    def __init__(self, tasks: dict[str, Task], launched: set[str]) -> None:
        self.tasks = tasks
        self.launched = launched

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks or task_id in self.launched


def _unsupported_operation(operations: list[Operation]) -> str | None:
    """Why an ACCEPT cannot be carried out as a whole (an operation this master does not
    perform, or one without its payload), or None."""
    for op in operations:
        if op.type == "LAUNCH" and op.launch is not None:
            continue
        if op.type == "LAUNCH_GROUP" and op.launch_group is not None:
            continue
        if op.type in ("LAUNCH", "LAUNCH_GROUP"):
            return f"operation {op.type} is missing its '{op.type.lower()}' payload"
        if op.type in resource_ops.KINDS or op.type in resource_ops.NEEDS_RESOURCE_PROVIDER:
            continue  # each is checked on its own when its turn comes
        return f"operation type {op.type[:60]!r} is unknown"
    return None


def launched_containers(operations: list[Operation]) -> Iterator[Any]:
    """Every ContainerInfo of the tasks and executors an ACCEPT launches."""
    for op in operations:
        if op.launch_group is not None:
            yield op.launch_group.executor.container
        for task in _tasks_of([op]):
            yield task.container
            if task.executor is not None:
                yield task.executor.container


def unreported_refusal(operations: list[Operation]) -> str | None:
    """Why an ACCEPT would be refused with nothing to tell the framework through: no task to
    fail and no operation id for an OPERATION_ERROR (Mesos then only logs it; butte answers
    the call with 400 instead of a 202 that does nothing). None otherwise."""
    for op in operations:  # the usual ACCEPT stops here, at its first LAUNCH
        if op.id is not None or (op.launch is not None and op.launch.task_infos):
            return None
    if _tasks_of(operations):
        return None
    problem = _unsupported_operation(operations)
    if problem is None:
        needs = [op.type for op in operations if op.type in resource_ops.NEEDS_RESOURCE_PROVIDER]
        if needs:
            problem = f"{needs[0]} needs a resource provider, which butte does not have"
    return problem


def _tasks_of(operations: list[Operation]) -> list[TaskInfo]:
    out: list[TaskInfo] = []
    for op in operations:
        if op.launch is not None:
            out.extend(op.launch.task_infos)
        if op.launch_group is not None:
            out.extend(op.launch_group.task_group.tasks)
    return out
