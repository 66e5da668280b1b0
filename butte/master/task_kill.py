"""``POST /master/kill-task``: kill one task for an operator (the web UI's kill button).

Mesos' operator path to one task is KILL_CONTAINER on the agent's v1 operator API. A browser
on the master's page cannot call the agent (another origin, and often an unreachable
address), so the master does it for it: it finds the task in its records, the agent holding
it, and the container from the task's latest status (``container_status.container_id``),
and sends KILL_CONTAINER to that agent. The agent's answer (200, or its 4xx) is passed back;
the task then ends as the agent reports it (TASK_KILLED or TASK_FAILED, with the reason).

Body: JSON ``{"task_id": "...", "framework_id": "...", "signal": 15}``; ``framework_id`` is
needed only where two frameworks use the same task id, ``signal`` defaults to SIGKILL as in
Mesos. The container is the task's executor: killing it ends every task of a custom executor
with it. A task that has ended answers 409; an unknown one 404; a member of a task group
(a nested container) 400, as the agent does not kill nested containers.

Under ``--acls`` the caller must be allowed to view the task (``view_tasks``, object: its
framework's user, as the task listings filter) and to tear its framework down
(``teardown_frameworks``, object: the framework's principal: the action that governs ending
a framework's work from the operator side); otherwise 403. The request is in the
``readwrite`` realm (a POST), so with ``--authenticate_http_readwrite`` it needs credentials
(401). The caller's ``Authorization`` goes on to the agent, whose ``/api/v1`` asks for it
when the agent runs with ``--authenticate_http_readwrite`` (as the master's ``/files`` do).
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from butte.core import task_states
from butte.core.codec import encode_json
from butte.master import view_acls
from butte.master.files import agent_credentials, agent_ssl, agent_url
from butte.master.http import PrefixRouter, text_reply
from butte.master.state import Task

if TYPE_CHECKING:
    from butte.master.shell_api import MasterShell

PATH = "/kill-task"
_TIMEOUT = aiohttp.ClientTimeout(total=15)
_MAX_BODY = 64 * 1024


class KillError(Exception):
    """Why the kill cannot be sent: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TaskKill:
    """The endpoint, bound to one `MasterShell`."""

    def __init__(self, server: MasterShell) -> None:
        self.server = server

    def add_routes(self, router: PrefixRouter) -> None:
        router.add(PATH, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return text_reply(405, "Expecting 'POST'", {"Allow": "POST"})
        try:
            body = await _read_body(request)
            task = self.find_task(body["task_id"], body.get("framework_id"))
            self.authorize(task, request.get("principal"))
            self.refuse_group_member(task)
            container = container_of(task)
        except KillError as e:
            return text_reply(e.status, e.message)
        agent = self.server.machine.agents.get(task.agent_id)
        if agent is None or not agent.connected:
            return text_reply(503, f"Agent {task.agent_id} of task {task.task_id} is not connected")
        call = {
            "type": "KILL_CONTAINER",
            "kill_container": {"container_id": {"value": container}, "signal": body["signal"]},
        }
        url = agent_url(agent) + "/api/v1"
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                async with session.post(
                    url,
                    data=encode_json(call),
                    headers={"Content-Type": "application/json", **agent_credentials(request)},
                    ssl=agent_ssl(),
                ) as upstream:
                    text = (await upstream.text(errors="replace")).strip()
                    if upstream.status >= 400:
                        return text_reply(upstream.status, f"Agent refused the kill: {text}")
        except (aiohttp.ClientError, TimeoutError) as e:
            return text_reply(503, f"Agent {agent.agent_id} did not answer: {e or type(e)}")
        return text_reply(200)

    def refuse_group_member(self, task: Task) -> None:
        """KillError 400 for a task of a default executor (a task-group member): its status
        names the executor's container, and killing that would end every member."""
        agent = self.server.machine.agents.get(task.agent_id)
        executor = (
            agent.executors.get((task.framework_id, task.executor_id))
            if agent is not None and task.executor_id
            else None
        )
        if executor is not None and executor.info.type == "DEFAULT":
            raise KillError(
                400, f"Task {task.task_id} runs in a nested container (a task group member)"
            )

    def authorize(self, task: Task, principal: str | None) -> None:
        """KillError 403 unless ``principal`` may view ``task`` and tear its framework
        down (see the module docstring)."""
        server = self.server
        who = principal or "an unauthenticated principal"
        view = view_acls.viewer(server.acls, principal, server.machine)
        if view is not None and not view.task({"framework_id": task.framework_id}):
            raise KillError(403, f"Forbidden: {who} may not view task {task.task_id} (view_tasks)")
        fw = server.machine.frameworks.get(task.framework_id)
        owner = fw.info.principal if fw is not None else None
        if not server.acls.allowed("teardown_frameworks", principal, owner):
            raise KillError(
                403,
                f"Forbidden: {who} may not kill tasks of framework {task.framework_id}"
                " (teardown_frameworks)",
            )

    def find_task(self, task_id: str, framework_id: str | None) -> Task:
        """The master's record of a live task; KillError if unknown, ambiguous or ended."""
        machine = self.server.machine
        found: list[Task] = []
        ended: list[Task] = []
        for fw in [*machine.frameworks.values(), *machine.completed_frameworks]:
            if framework_id is not None and fw.framework_id != framework_id:
                continue
            if (task := fw.tasks.get(task_id)) is not None:
                found.append(task)
            ended += [t for t in fw.completed_tasks if t.task_id == task_id]
        if len(found) > 1:
            raise KillError(400, f"Several frameworks have a task {task_id}: give framework_id")
        if found and not task_states.is_terminal(found[0].state):
            return found[0]
        if found or ended:
            raise KillError(409, f"Task {task_id} has already ended")
        raise KillError(404, f"No live task {task_id}")


def container_of(task: Task) -> str:
    """The task's container id, from its latest status that names one."""
    for status in reversed(task.statuses):
        container = (status.container_status or {}).get("container_id") or {}
        if container.get("parent"):
            raise KillError(
                400, f"Task {task.task_id} runs in a nested container (a task group member)"
            )
        if container.get("value"):
            return str(container["value"])
    raise KillError(409, f"Task {task.task_id} has no container yet (it is still starting)")


async def _read_body(request: web.Request) -> dict[str, Any]:
    """The validated JSON body: task_id (str), framework_id (str or None), signal (int)."""
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise KillError(413, "Request body too large")
    try:
        body = json.loads(raw or b"null")
    except ValueError as e:
        raise KillError(400, f"Failed to parse the body as JSON: {e}") from None
    if not isinstance(body, dict):
        raise KillError(400, "Expecting a JSON object {task_id, framework_id?, signal?}")
    unknown = set(body) - {"task_id", "framework_id", "signal"}
    if unknown:
        raise KillError(400, f"Unknown field(s): {', '.join(sorted(unknown))[:200]}")
    task_id, framework_id = body.get("task_id"), body.get("framework_id")
    if not isinstance(task_id, str) or not task_id:
        raise KillError(400, "Expecting 'task_id' (a string)")
    if framework_id is not None and not isinstance(framework_id, str):
        raise KillError(400, "'framework_id' must be a string")
    number = body.get("signal", int(signal.SIGKILL))
    if isinstance(number, bool) or not isinstance(number, int):
        raise KillError(400, "'signal' must be a signal number")
    if number not in {int(s) for s in signal.valid_signals()} or number == 0:
        raise KillError(400, f"Invalid signal {number}")
    return {"task_id": task_id, "framework_id": framework_id, "signal": number}
