"""What running tasks really use, for the web UI: ``GET /master/ui/task-usage?task_id=...``.

The master does not hold usage; each agent measures its containers and serves them at
``/containers`` (Mesos' shape: ``framework_id``, ``executor_id``, ``container_id`` and
``statistics``, a ``ResourceStatistics`` with ``timestamp``, ``cpus_user_time_secs``,
``cpus_system_time_secs``, ``mem_rss_bytes``, ``cpus_limit``, ``mem_limit_bytes``). For the
tasks asked about (at most `MAX_TASKS`, live ones only), the master asks each of their agents
once, concurrently and with a short timeout, and answers one entry per task:

    {"tasks": [{"task_id", "agent_id", "executor_id", "container_id", "statistics",
                "tasks_in_executor"} | {"task_id", "error"}]}

A task shares its container with the other tasks of its executor (a task group, a custom
executor): ``tasks_in_executor`` says how many there are, since the figures are the
container's. CPU use is a rate: the page divides the growth of the CPU times by the growth of
``timestamp`` between two answers. An agent that does not answer gives its tasks an
``error``, never fails the request.

A task the caller may not view (``view_tasks``, the ``allow`` predicate the endpoint passes)
is answered as an unknown one. The caller's ``Authorization`` goes with the requests to the
agents, as with ``/files`` (an agent run with ``--authenticate_http_readonly`` needs it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp

from butte.core import task_states
from butte.master.files import agent_ssl, agent_url
from butte.master.machine import MasterMachine
from butte.master.state import Agent, Task

MAX_TASKS = 200
MAX_AGENTS = 50
TIMEOUT = aiohttp.ClientTimeout(total=3)


def find_tasks(
    machine: MasterMachine,
    task_ids: Iterable[str],
    allow: Callable[[Task], bool] | None = None,
) -> dict[str, Task | None]:
    """Each id -> the live task of that id (None: unknown, terminal, or one ``allow`` says
    the caller may not view)."""
    out: dict[str, Task | None] = {}
    for task_id in task_ids:
        found = None
        for fw in machine.frameworks.values():
            task = fw.tasks.get(task_id)
            if (
                task is not None
                and not task_states.is_terminal(task.state)
                and (allow is None or allow(task))
            ):
                found = task
                break
        out[task_id] = found
    return out


def executor_of(task: Task) -> str:
    """The executor id of a task on its agent (a command task's executor has its id)."""
    return task.executor_id or task.task_id


def match(containers: Sequence[Any], task: Task) -> dict[str, Any] | None:
    """The container (an entry of an agent's ``/containers``) that runs ``task``."""
    executor = executor_of(task)
    for entry in containers:
        if (
            isinstance(entry, dict)
            and entry.get("framework_id") == task.framework_id
            and entry.get("executor_id") == executor
        ):
            return entry
    return None


def usage_entry(
    task: Task, containers: Sequence[Any] | None, error: str | None, tasks_in_executor: int
) -> dict[str, Any]:
    """The answer's entry for one task, from its agent's containers (or why there is none)."""
    base = {"task_id": task.task_id, "agent_id": task.agent_id, "executor_id": executor_of(task)}
    if error is not None or containers is None:
        return {**base, "error": error or "no answer from the agent"}
    entry = match(containers, task)
    if entry is None or not isinstance(entry.get("statistics"), dict):
        return {**base, "error": "the agent reports no container for this task"}
    return {
        **base,
        "container_id": entry.get("container_id", ""),
        "statistics": entry["statistics"],
        "tasks_in_executor": tasks_in_executor,
    }


def _tasks_in_executor(machine: MasterMachine, task: Task) -> int:
    if task.executor_id is None:
        return 1
    fw = machine.frameworks.get(task.framework_id)
    if fw is None:
        return 1
    return sum(
        1
        for other in fw.tasks.values()
        if other.executor_id == task.executor_id
        and other.agent_id == task.agent_id
        and not task_states.is_terminal(other.state)
    )


async def _containers(
    session: aiohttp.ClientSession, agent: Agent, headers: Mapping[str, str]
) -> tuple[list[Any] | None, str | None]:
    url = agent_url(agent) + "/containers"
    try:
        async with session.get(url, headers=headers, ssl=agent_ssl()) as response:
            if response.status != 200:
                return None, f"the agent answered {response.status}"
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return None, f"the agent did not answer: {e or type(e).__name__}"
    if not isinstance(body, list):
        return None, "the agent's /containers is not a list"
    return body, None


async def task_usage(
    machine: MasterMachine,
    task_ids: Sequence[str],
    allow: Callable[[Task], bool] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The answer of ``/master/ui/task-usage`` (see the module docstring): ``allow`` says
    which tasks the caller may view (None: all), ``headers`` go to the agents."""
    found = find_tasks(machine, task_ids[:MAX_TASKS], allow)
    agents: dict[str, Agent] = {}
    for task in found.values():
        if task is not None and task.agent_id in machine.agents:
            agents.setdefault(task.agent_id, machine.agents[task.agent_id])
    asked = dict(list(agents.items())[:MAX_AGENTS])
    answers: dict[str, tuple[list[Any] | None, str | None]] = {}
    if asked:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            results = await asyncio.gather(
                *(_containers(session, a, headers or {}) for a in asked.values())
            )
        answers = dict(zip(asked, results, strict=True))
    out = []
    for task_id, task in found.items():
        if task is None:
            out.append({"task_id": task_id, "error": "no running task of this id"})
            continue
        agent = machine.agents.get(task.agent_id)
        if agent is None or not agent.connected:
            out.append(usage_entry(task, None, "the agent is not connected", 0))
            continue
        containers, error = answers.get(task.agent_id, (None, "too many agents in one request"))
        out.append(usage_entry(task, containers, error, _tasks_in_executor(machine, task)))
    return {"tasks": out}
