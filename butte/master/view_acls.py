"""What each principal may see: the ``view_frameworks``, ``view_tasks`` and
``view_executors`` ACLs applied to the master's state documents, as Mesos does (objects a
principal may not view are left out; nothing answers 403), and ``view_roles`` applied to the
resources in them.

The object of each of the first three is a user: a framework's ``user``; a task's own
``user`` (when its JSON has one) else its framework's; an executor's ``command.user`` else
its framework's. A task is shown only when its framework may be viewed too. The object of
``view_roles`` is a role: a resource is shown only when the principal may view every role it
names (its reservations' and the role it is allocated to), and an agent's reservations are
listed only for roles it may view (Mesos' ``ObjectApprovers::approved<VIEW_ROLE>``).

`viewer` returns None when the ACLs cannot hide anything from anyone (the default,
permissive setup): callers then serve the unfiltered document exactly as before, with no
per-object cost. Otherwise a `Viewer` filters copies of the documents (shared snapshots are
never changed): the legacy ``/state``, ``/state-summary``, ``/frameworks``, ``/slaves``,
``/tasks``, the v1 GET_STATE / GET_AGENTS / GET_FRAMEWORKS / GET_TASKS / GET_EXECUTORS
answers and the operator events, GET_OPERATIONS (an operation is shown when every resource
it consumes may be viewed, as Mesos' master shows it), and an agent's ``/state`` and GET_* answers
(`butte.agent.http_auth.state_viewer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from butte.core.codec import encode_json
from butte.master.acls import Acls

if TYPE_CHECKING:
    from butte.master.machine import MasterMachine

ACTIONS = ("view_frameworks", "view_tasks", "view_executors")
# Resources and reservations of roles a principal may not view are left out of the documents
# of callers that ask for it (``viewer(..., roles=True)``: the ones that show agents' or
# frameworks' resources).
ROLE_ACTION = "view_roles"
_AGENT_TASK_LISTS = ("tasks", "queued_tasks", "completed_tasks")


def _fid(value: Any) -> str | None:
    """A framework id from either JSON form (``"id"`` or ``{"value": "id"}``)."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) else None


def _command_user(obj: dict[str, Any]) -> str | None:
    command = obj.get("command")
    user = command.get("user") if isinstance(command, dict) else None
    return user if isinstance(user, str) else None


class Viewer:
    """One principal's view under restrictive ACLs (see the module docstring)."""

    def __init__(
        self,
        acls: Acls,
        principal: str | None,
        framework_user: Callable[[str], str | None],
        roles: bool = False,
    ) -> None:
        self.acls = acls
        self.principal = principal
        # Looked up live: a stream's viewer outlives the frameworks it was created with.
        self._framework_user = framework_user
        # Whether resources of roles this principal may not view are left out (`resource`).
        self.hides_roles = roles and not acls.unrestricted(ROLE_ACTION)

    def _may(self, action: str, user: str | None) -> bool:
        return self.acls.allowed(action, self.principal, user)

    def framework_user(self, framework_id: str | None) -> str | None:
        return self._framework_user(framework_id) if framework_id is not None else None

    def framework(self, framework_id: str | None, user: str | None = None) -> bool:
        if user is None:
            user = self.framework_user(framework_id)
        return self._may("view_frameworks", user)

    def task(self, task: dict[str, Any]) -> bool:
        """A task JSON object (legacy or v1): its framework and the task itself may be viewed
        (Mesos shows a task only with both VIEW_FRAMEWORK and VIEW_TASK)."""
        fid = _fid(task.get("framework_id"))
        framework_user = self.framework_user(fid)
        if not self._may("view_frameworks", framework_user):
            return False
        user = task.get("user") if isinstance(task.get("user"), str) else None
        return self._may("view_tasks", user or framework_user)

    # -- roles ---------------------------------------------------------------------------------

    def role(self, role: Any) -> bool:
        """Whether the principal may view ``role`` (always, unless ``view_roles`` can hide it
        from this viewer)."""
        if not self.hides_roles:
            return True
        return isinstance(role, str) and self._may(ROLE_ACTION, role)

    def resource(self, resource: Any) -> bool:
        """A Resource JSON object: shown when every role it names may be viewed, its
        (pre-refinement) ``role``, each of its ``reservations`` and its ``allocation_info``
        role, as Mesos' ``approved<VIEW_ROLE>(Resource)``."""
        if not self.hides_roles or not isinstance(resource, dict):
            return True
        role = resource.get("role")
        if role is not None and role != "*" and not self.role(role):
            return False
        for reservation in resource.get("reservations") or ():
            if isinstance(reservation, dict) and not self.role(reservation.get("role")):
                return False
        allocation = resource.get("allocation_info")
        return not (isinstance(allocation, dict) and not self.role(allocation.get("role")))

    def resources(self, items: Any) -> Any:
        """A Resource list without the resources the principal may not view."""
        if not self.hides_roles or not isinstance(items, list):
            return items
        return [r for r in items if self.resource(r)]

    def _narrow_resources(self, obj: Any, keys: Iterable[str]) -> Any:
        """``obj`` (an object, copied) with the Resource lists under ``keys`` narrowed."""
        if not self.hides_roles or not isinstance(obj, dict):
            return obj
        out = dict(obj)
        for key in keys:
            if isinstance(out.get(key), list):
                out[key] = self.resources(out[key])
        return out

    def legacy_agent(self, agent: Any) -> Any:
        """An agent of ``/state``, ``/slaves`` or ``/state-summary``: its reservations
        (``reserved_resources``, and ``/slaves``' ``reserved_resources_full``) only for roles
        the principal may view, and the resources of ``/slaves``' ``*_full`` lists it may
        view. Its other resources are name -> amount maps, which name no role."""
        if not self.hides_roles or not isinstance(agent, dict):
            return agent
        out = self._narrow_resources(
            agent,
            ("unreserved_resources_full", "used_resources_full", "offered_resources_full"),
        )
        reserved = out.get("reserved_resources")
        if isinstance(reserved, dict):
            out["reserved_resources"] = {r: v for r, v in reserved.items() if self.role(r)}
        full = out.get("reserved_resources_full")
        if isinstance(full, dict):
            out["reserved_resources_full"] = {
                r: self.resources(v) for r, v in full.items() if self.role(r)
            }
        return out

    def legacy_agents(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A document with ``slaves`` (``/slaves``, ``/state``, ``/state-summary``)."""
        if not self.hides_roles or not isinstance(doc.get("slaves"), list):
            return doc
        return {**doc, "slaves": [self.legacy_agent(a) for a in doc["slaves"]]}

    def v1_agent(self, agent: Any) -> Any:
        """A ``GetAgents.Agent``: its AgentInfo's resources and its total, allocated and
        offered resources, without those the principal may not view."""
        if not self.hides_roles or not isinstance(agent, dict):
            return agent
        out = self._narrow_resources(
            agent, ("total_resources", "allocated_resources", "offered_resources")
        )
        out["agent_info"] = self._narrow_resources(out.get("agent_info"), ("resources",))
        if out["agent_info"] is None:
            del out["agent_info"]
        return out

    def get_agents(self, doc: dict[str, Any]) -> dict[str, Any]:
        if not self.hides_roles:
            return doc
        out = dict(doc)
        if isinstance(out.get("agents"), list):
            out["agents"] = [self.v1_agent(a) for a in out["agents"]]
        if isinstance(out.get("recovered_agents"), list):
            out["recovered_agents"] = [
                self._narrow_resources(a, ("resources",)) for a in out["recovered_agents"]
            ]
        return out

    def executor(self, executor: dict[str, Any], framework_id: str | None) -> bool:
        """An ExecutorInfo JSON object."""
        user = _command_user(executor) or self.framework_user(framework_id)
        return self._may("view_executors", user)

    def tasks(self, tasks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [t for t in tasks if self.task(t)]

    # -- legacy documents ---------------------------------------------------------------------

    def legacy_framework(self, fw: dict[str, Any]) -> dict[str, Any]:
        """A legacy framework object with the tasks and executors the principal may see."""
        out = dict(fw)
        for key in ("tasks", "completed_tasks", "unreachable_tasks"):
            if isinstance(out.get(key), list):
                out[key] = self.tasks(out[key])
        if isinstance(out.get("executors"), list):
            fid = _fid(fw.get("id"))
            out["executors"] = [e for e in out["executors"] if self.executor(e, fid)]
        return out

    def legacy_frameworks(self, frameworks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            self.legacy_framework(fw)
            for fw in frameworks
            if self.framework(_fid(fw.get("id")), fw.get("user"))
        ]

    def legacy_state(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``/state`` (and ``/frameworks``, ``/state-summary``: the same keys)."""
        out = self.legacy_agents(dict(doc))
        for key in ("frameworks", "completed_frameworks", "unregistered_frameworks"):
            if isinstance(out.get(key), list):
                out[key] = self.legacy_frameworks(out[key])
        if isinstance(out.get("orphan_tasks"), list):
            out["orphan_tasks"] = self.tasks(out["orphan_tasks"])
        return out

    # -- v1 documents --------------------------------------------------------------------------

    def get_frameworks(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key in ("frameworks", "completed_frameworks", "recovered_frameworks"):
            if isinstance(out.get(key), list):
                out[key] = [f for f in out[key] if self._v1_framework(f)]
        return out

    def _v1_framework(self, fw: dict[str, Any]) -> bool:
        nested = fw.get("framework_info")
        info: dict[str, Any] = nested if isinstance(nested, dict) else fw
        user = info.get("user") if isinstance(info.get("user"), str) else None
        return self.framework(_fid(info.get("id")), user)

    def get_tasks(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key in (
            "tasks",
            "pending_tasks",
            "completed_tasks",
            "unreachable_tasks",
            "orphan_tasks",
            "queued_tasks",  # the agent's GET_TASKS
            "launched_tasks",
            "terminated_tasks",
        ):
            if isinstance(out.get(key), list):
                out[key] = self.tasks(out[key])
        return out

    def get_executors(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key in ("executors", "orphan_executors", "completed_executors"):
            if isinstance(out.get(key), list):
                out[key] = [e for e in out[key] if self._v1_executor(e)]
        return out

    def _v1_executor(self, entry: dict[str, Any]) -> bool:
        info = entry.get("executor_info")
        if not isinstance(info, dict):
            return True
        return self.executor(info, _fid(info.get("framework_id")))

    def operation(self, operation: Any) -> bool:
        """A ``GetOperations`` entry: shown when the principal may view every resource the
        operation consumes, as Mesos' master decides (one whose consumed resources cannot be
        told is not shown)."""
        if not self.hides_roles:
            return True
        info = operation.get("info") if isinstance(operation, dict) else None
        consumed = consumed_resources(info)
        return consumed is not None and all(self.resource(r) for r in consumed)

    def get_operations(self, doc: dict[str, Any]) -> dict[str, Any]:
        """GET_OPERATIONS: the operations on resources of roles the principal may view."""
        if not self.hides_roles or not isinstance(doc.get("operations"), list):
            return doc
        return {**doc, "operations": [o for o in doc["operations"] if self.operation(o)]}

    def get_state(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key, narrow in (
            ("get_frameworks", self.get_frameworks),
            ("get_tasks", self.get_tasks),
            ("get_executors", self.get_executors),
            ("get_agents", self.get_agents),
        ):
            if isinstance(out.get(key), dict):
                out[key] = narrow(out[key])
        return out

    def answer(self, call_type: str, answer: dict[str, Any]) -> dict[str, Any]:
        """A synchronous v1 answer's payload, narrowed (other calls unchanged)."""
        narrow = {
            "GET_STATE": self.get_state,
            "GET_AGENTS": self.get_agents,
            "GET_FRAMEWORKS": self.get_frameworks,
            "GET_TASKS": self.get_tasks,
            "GET_EXECUTORS": self.get_executors,
            "GET_OPERATIONS": self.get_operations,
        }.get(call_type)
        return narrow(plain(answer)) if narrow is not None else answer

    def agent_state(self, doc: dict[str, Any]) -> dict[str, Any]:
        """An agent's ``/state``: frameworks, their executors and the executors' tasks."""
        out = dict(doc)
        for key in ("frameworks", "completed_frameworks"):
            if isinstance(out.get(key), list):
                out[key] = [
                    self._agent_framework(fw)
                    for fw in out[key]
                    if self.framework(_fid(fw.get("id")), fw.get("user"))
                ]
        return out

    def _agent_framework(self, fw: dict[str, Any]) -> dict[str, Any]:
        out, fid = dict(fw), _fid(fw.get("id"))
        for key in ("executors", "completed_executors"):
            if isinstance(out.get(key), list):
                out[key] = [
                    {**ex, **{k: self.tasks(ex.get(k) or []) for k in _AGENT_TASK_LISTS}}
                    for ex in out[key]
                    if self.executor(ex, fid)
                ]
        return out

    def event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """An operator event this principal may see (narrowed), or None."""
        kind = event.get("type")
        if kind in ("SUBSCRIBED", "TASK_ADDED"):
            event = plain(event)
        body = event.get(str(kind).lower())
        if not isinstance(body, dict):
            return event
        if kind == "SUBSCRIBED" and isinstance(body.get("get_state"), dict):
            return {**event, "subscribed": {**body, "get_state": self.get_state(body["get_state"])}}
        if kind == "TASK_ADDED" and isinstance(body.get("task"), dict):
            return event if self.task(body["task"]) else None
        if kind == "TASK_UPDATED":
            probe = {"framework_id": body.get("framework_id")}
            status = body.get("status")
            if isinstance(status, dict) and not probe["framework_id"]:
                probe["framework_id"] = status.get("framework_id")
            return event if self.task(probe) else None
        if kind in ("FRAMEWORK_ADDED", "FRAMEWORK_UPDATED") and isinstance(
            body.get("framework"), dict
        ):
            if not self._v1_framework(body["framework"]):
                return None
            if not self.hides_roles:
                return event
            # As Mesos: its allocated and offered resources of roles it may view only.
            framework = self._narrow_resources(
                body["framework"], ("allocated_resources", "offered_resources")
            )
            return {**event, str(kind).lower(): {**body, "framework": framework}}
        if kind == "FRAMEWORK_REMOVED" and isinstance(body.get("framework_info"), dict):
            return event if self._v1_framework(body["framework_info"]) else None
        if kind == "AGENT_ADDED" and self.hides_roles and isinstance(body.get("agent"), dict):
            # As Mesos: the total resources of roles it may view only.
            agent = self._narrow_resources(plain(body["agent"]), ("total_resources",))
            return {**event, "agent_added": {**body, "agent": agent}}
        return event


# Where each offer operation names the resources it consumes (``Offer.Operation`` JSON).
_CONSUMED = {
    "RESERVE": ("reserve", ("resources",)),
    "UNRESERVE": ("unreserve", ("resources",)),
    "CREATE": ("create", ("volumes",)),
    "DESTROY": ("destroy", ("volumes",)),
    "GROW_VOLUME": ("grow_volume", ("volume", "addition")),
    "SHRINK_VOLUME": ("shrink_volume", ("volume",)),
}


def _unreserved_once(resource: dict[str, Any]) -> dict[str, Any]:
    """What a RESERVE of ``resource`` consumes: the resource without its last reservation
    (its ``role`` too, in the form that names one)."""
    out = dict(resource)
    stack = out.get("reservations")
    if isinstance(stack, list) and stack:
        out["reservations"] = stack[:-1]
        below = stack[-2] if len(stack) > 1 else None
        if "role" in out:
            role = below.get("role") if isinstance(below, dict) else None
            out["role"] = role if isinstance(role, str) else "*"
    elif "role" in out:  # the pre-refinement form: one reservation, named by ``role``
        out["role"] = "*"
        out.pop("reservation", None)
    return out


def consumed_resources(info: Any) -> list[dict[str, Any]] | None:
    """The resources an offer operation (its ``Offer.Operation`` JSON) consumes, as Mesos'
    ``getConsumedResources`` tells them: RESERVE the resources without the reservation it
    adds, UNRESERVE, CREATE, DESTROY and SHRINK_VOLUME the resources or volumes they name,
    GROW_VOLUME the volume and the addition. None when they cannot be told (other kinds,
    malformed payloads)."""
    if not isinstance(info, dict):
        return None
    where = _CONSUMED.get(str(info.get("type")))
    payload = info.get(where[0]) if where is not None else None
    if where is None or not isinstance(payload, dict):
        return None
    out: list[dict[str, Any]] = []
    for key in where[1]:
        value = payload.get(key)
        items: list[Any] = value if isinstance(value, list) else [value]
        if not all(isinstance(r, dict) for r in items):
            return None
        out.extend(items)
    if info.get("type") == "RESERVE":
        out = [_unreserved_once(r) for r in out]
    return out


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its pre-encoded parts (``msgspec.Raw``, as state snapshots reuse
    them) decoded, so that they can be looked into."""
    decoded: dict[str, Any] = msgspec.json.decode(encode_json(doc))
    return decoded


def restricted(acls: Acls, roles: bool = False) -> bool:
    """Whether any view ACL can hide anything from anyone (``roles``: ``view_roles``
    counts too)."""
    actions = (*ACTIONS, ROLE_ACTION) if roles else ACTIONS
    return not all(acls.unrestricted(action) for action in actions)


def viewer(
    acls: Acls, principal: str | None, machine: MasterMachine, roles: bool = False
) -> Viewer | None:
    """A `Viewer` of the master's state for ``principal``, or None when no view ACL can
    hide anything. ``roles``: the caller shows resources, which ``view_roles`` narrows."""
    if not restricted(acls, roles):
        return None

    done: dict[str, str | None] = {}  # completed frameworks' users (they never change)

    def framework_user(framework_id: str) -> str | None:
        fw = machine.frameworks.get(framework_id)
        if fw is not None:
            return fw.info.user
        if framework_id not in done:  # one rebuild per unknown id, not a scan per object
            done.update((f.framework_id, f.info.user) for f in machine.completed_frameworks)
            done.setdefault(framework_id, None)  # neither live nor completed: no user
        return done[framework_id]

    return Viewer(acls, principal, framework_user, roles)
