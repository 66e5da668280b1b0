"""What each principal may see: the ``view_frameworks``, ``view_tasks`` and
``view_executors`` ACLs applied to the master's state documents, as Mesos does (objects a
principal may not view are left out; nothing answers 403).

The object of each action is a user: a framework's ``user``; a task's own ``user`` (when
its JSON has one) else its framework's; an executor's ``command.user`` else its
framework's. `viewer` returns None when the ACLs cannot hide anything from anyone (the
default, permissive setup): callers then serve the unfiltered document exactly as before,
with no per-object cost. Otherwise a `Viewer` filters copies of the documents (shared
snapshots are never changed): the legacy ``/state``, ``/frameworks``, ``/tasks``, the v1
GET_STATE / GET_FRAMEWORKS / GET_TASKS / GET_EXECUTORS answers and the operator events,
and an agent's ``/state`` and GET_* answers (`butte.agent.http_auth.state_viewer`).
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
    ) -> None:
        self.acls = acls
        self.principal = principal
        # Looked up live: a stream's viewer outlives the frameworks it was created with.
        self._framework_user = framework_user

    def _may(self, action: str, user: str | None) -> bool:
        return self.acls.allowed(action, self.principal, user)

    def framework_user(self, framework_id: str | None) -> str | None:
        return self._framework_user(framework_id) if framework_id is not None else None

    def framework(self, framework_id: str | None, user: str | None = None) -> bool:
        if user is None:
            user = self.framework_user(framework_id)
        return self._may("view_frameworks", user)

    def task(self, task: dict[str, Any]) -> bool:
        """A task JSON object (legacy or v1)."""
        user = task.get("user") if isinstance(task.get("user"), str) else None
        user = user or self.framework_user(_fid(task.get("framework_id")))
        return self._may("view_tasks", user)

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
        out = dict(doc)
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

    def get_state(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key, narrow in (
            ("get_frameworks", self.get_frameworks),
            ("get_tasks", self.get_tasks),
            ("get_executors", self.get_executors),
        ):
            if isinstance(out.get(key), dict):
                out[key] = narrow(out[key])
        return out

    def answer(self, call_type: str, answer: dict[str, Any]) -> dict[str, Any]:
        """A synchronous v1 answer's payload, narrowed (other calls unchanged)."""
        narrow = {
            "GET_STATE": self.get_state,
            "GET_FRAMEWORKS": self.get_frameworks,
            "GET_TASKS": self.get_tasks,
            "GET_EXECUTORS": self.get_executors,
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
            return event if self._v1_framework(body["framework"]) else None
        if kind == "FRAMEWORK_REMOVED" and isinstance(body.get("framework_info"), dict):
            return event if self._v1_framework(body["framework_info"]) else None
        return event


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its pre-encoded parts (``msgspec.Raw``, as state snapshots reuse
    them) decoded, so that they can be looked into."""
    decoded: dict[str, Any] = msgspec.json.decode(encode_json(doc))
    return decoded


def restricted(acls: Acls) -> bool:
    """Whether any view ACL can hide anything from anyone."""
    return not all(acls.unrestricted(action) for action in ACTIONS)


def viewer(acls: Acls, principal: str | None, machine: MasterMachine) -> Viewer | None:
    """A `Viewer` of the master's state for ``principal``, or None when no view ACL can
    hide anything."""
    if not restricted(acls):
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

    return Viewer(acls, principal, framework_user)
