"""The web UI's task list, searched and filtered by the master: ``/master/ui/tasks``.

Every task the master remembers, newest first (by its first status, as ``/master/tasks``
sorts, except that a task with no status yet comes first here, the newest, where Mesos'
order puts it last), is kept in a `TaskListing` with each task's lower-case ``id name`` for
searching; sorting 100k tasks costs about 0.1 s, so the listing is rebuilt at the bounded rate of
`butte.master.browse.Rebuilt`. The rows are the master's own records, so a page always shows
current states; only which tasks exist may be as old as the listing. A filtered page is
found by scanning from the newest until it is full.

Pure (no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from butte.core import task_states
from butte.master.browse import CHEAP_BUILD, PageQuery, QueryError, Rebuilt
from butte.master.machine import MasterMachine
from butte.master.operator_views import all_tasks
from butte.master.snapshot import no_gc
from butte.master.state import Task


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A page of the task list: newest first, optionally filtered."""

    offset: int = 0
    limit: int = 50
    q: str = ""
    state: str = ""  # a task state, "active", or "" for all
    agent_id: str = ""
    framework_id: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> TaskQuery:
        page = PageQuery.parse(query)
        state = query.get("state", "")
        if state and state != "active" and state not in task_states.ALL_STATES:
            raise QueryError(
                f"'state' must be 'active' or one of {', '.join(sorted(task_states.ALL_STATES))}"
            )
        return cls(
            offset=page.offset,
            limit=page.limit,
            q=page.q,
            state=state,
            agent_id=query.get("agent_id", ""),
            framework_id=query.get("framework_id", ""),
        )

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.state or self.agent_id or self.framework_id)

    def keep(self, task: Task, search: str) -> bool:
        """Whether ``task`` (with its lower-case ``id name``) matches."""
        if self.framework_id and task.framework_id != self.framework_id:
            return False
        if self.agent_id and task.agent_id != self.agent_id:
            return False
        if self.state == "active":
            if task_states.is_terminal(task.state):
                return False
        elif self.state and task.state != self.state:
            return False
        return not self.q or self.q in search


def _started(task: Task) -> float:
    """When the task started: its first status; a task without one yet is the newest."""
    if not task.statuses:
        return math.inf
    return task.statuses[0].timestamp or 0.0


@dataclass(slots=True)
class TaskListing:
    """Every task the master remembers, newest first, with its search text. The records
    are the master's own, so states are current; only which tasks exist may be as old as
    the listing."""

    tasks: list[Task]
    search: list[str]

    def page(
        self,
        query: TaskQuery,
        render: Callable[[Task], Any],
        allow: Callable[[Task], bool] | None = None,
    ) -> dict[str, Any]:
        """``{tasks, has_more, scanned, total}``: one page of matching tasks, rendered. A
        filtered page is found by scanning from the newest until it is full (and one more,
        for ``has_more``); ``scanned`` says how far that went. ``allow`` (``--acls``
        view_tasks) hides tasks the caller may not view: ``total`` then counts only
        those it may."""
        end = query.offset + query.limit
        if allow is not None:
            visible = [(t, s) for t, s in zip(self.tasks, self.search, strict=True) if allow(t)]
            matching = [t for t, s in visible if query.keep(t, s)]
            return {
                "tasks": [render(t) for t in matching[query.offset : end]],
                "has_more": len(matching) > end,
                "scanned": len(self.tasks),
                "total": len(visible),
            }
        if not query.filtered:
            chosen = self.tasks[query.offset : end]
            more = len(self.tasks) > end
            scanned = min(len(self.tasks), end + 1)
        else:
            found: list[Task] = []
            scanned = 0
            for task, search in zip(self.tasks, self.search, strict=True):
                scanned += 1
                if query.keep(task, search):
                    found.append(task)
                    if len(found) > end:
                        break
            chosen = found[query.offset : end]
            more = len(found) > end
        return {
            "tasks": [render(t) for t in chosen],
            "has_more": more,
            "scanned": scanned,
            "total": len(self.tasks),
        }


def build_task_listing(machine: MasterMachine) -> TaskListing:
    with no_gc():
        tasks = [task for _, task in all_tasks(machine)]
        tasks.sort(key=_started, reverse=True)
        search = [f"{t.task_id} {t.name}".lower() for t in tasks]
    return TaskListing(tasks, search)


class TaskListings(Rebuilt[TaskListing]):
    """The task listing of one master, rebuilt when stale."""

    def __init__(self, machine: MasterMachine, cheap_build: float = CHEAP_BUILD) -> None:
        super().__init__(lambda: build_task_listing(machine), cheap_build)
