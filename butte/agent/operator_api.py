"""The agent's operator API v1 (``POST /api/v1``, docs/protocol.md §3.3), its metrics endpoints and
its sandbox files.

Calls served: GET_HEALTH, GET_FLAGS, GET_VERSION, GET_METRICS, GET_LOGGING_LEVEL,
SET_LOGGING_LEVEL, GET_STATE, GET_CONTAINERS, GET_FRAMEWORKS, GET_EXECUTORS, GET_TASKS,
GET_AGENT, LIST_FILES, READ_FILE, KILL_CONTAINER, PRUNE_IMAGES (the image store's unused
layers, docs/containers.md "Pruning images"), and the nested and standalone container calls
of `butte.agent.nested_api` (launch, session, attach input/output, wait, kill, remove). Others
answer 400 ("not supported"), as
unknown ones do. Also ``GET /metrics/snapshot`` (``slave/*`` names, resources included),
``GET /metrics`` (Prometheus text), ``GET /containers`` and ``/files/*`` (`butte.agent.files`).

`routes` must be added to the application before the agent's other routes: aiohttp serves
the first route registered for a path, and these supersede older ``/files`` and
``/metrics/snapshot`` handlers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from butte.agent.containerizer.image_runtime import excluded_images
from butte.agent.containerizer.posix import session_members, signal_sessions
from butte.agent.files import FileError, SandboxFiles
from butte.agent.http import version_info
from butte.agent.http_auth import state_viewer
from butte.agent.launch_events import limits_of
from butte.agent.nested_api import (
    STREAMING_ANSWERS,
    NestedApi,
    Streaming,
    accept_problem,
    streaming_request,
)
from butte.agent.records import COMMAND, REGISTERING, RUNNING, TERMINATING, Executor
from butte.agent.state_json import container_resources, parsed_resources
from butte.core import task_limits, task_states
from butte.core.codec import encode_json
from butte.core.messages import to_builtins
from butte.core.operator import (
    AGENT_CALL_TYPES,
    OperatorCall,
    parse_call,
)
from butte.core.resources import Resources
from butte.master.acls import endpoint_forbidden, forbidden
from butte.master.http import metrics_query_problem
from butte.operator_common import (
    PROMETHEUS_CONTENT_TYPE,
    LoggingLevel,
    prometheus_text,
    system_metrics,
)

if TYPE_CHECKING:
    from butte.agent.machine import AgentMachine
    from butte.agent.shell_api import AgentShell

log = logging.getLogger("butte.agent")

_SCALARS = ("cpus", "mem", "disk", "gpus")
# Counters of the agent's core that Mesos' agent registers at start (src/slave/metrics.cpp):
# served at 0 until the first count.
_COUNTED_FROM_START = (
    "executors_terminated",
    "valid_status_updates",
    "invalid_status_updates",
    "valid_framework_messages",
    "invalid_framework_messages",
)
# Calls that Mesos' agent authorizes with an ACL action of no object (Forbidden without it).
_CALL_ACTIONS = {"GET_FLAGS": "view_flags", "PRUNE_IMAGES": "prune_images"}
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def routes(server: AgentShell) -> list[web.RouteDef]:
    """Every route of this module (see the module docstring)."""
    return AgentOperatorApi(server).routes()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode_json(body), status=status, content_type="application/json")


def _text(status: int, message: str = "") -> web.Response:
    return web.Response(status=status, text=message)


def _request_problem(request: web.Request) -> web.Response | None:
    """The v1 request rules (docs/protocol.md §0.2): POST, JSON content type, acceptable Accept."""
    if request.method != "POST":
        return web.Response(
            status=405,
            text=f"Expecting a 'POST' request, received '{request.method}'",
            headers={"Allow": "POST"},
        )
    ctype = request.headers.get("Content-Type")
    if not ctype:
        return _text(400, "Expecting 'Content-Type' to be present")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        return _text(415, f"Expecting 'Content-Type' of application/json, got '{ctype}'")
    accept = request.headers.get("Accept", "")
    if accept and not any(
        m.split(";", 1)[0].strip().lower()
        in ("application/json", "*/*", "application/*", "application/recordio")
        for m in accept.split(",")
    ):
        return _text(406, f"Expecting 'Accept' to allow application/json, got '{accept}'")
    return None


class AgentOperatorApi:
    """Handlers bound to one `AgentServer`."""

    def __init__(self, server: AgentShell) -> None:
        self.server = server
        self.files = SandboxFiles(server.options.work_dir, self._agent_id)
        self.logging = LoggingLevel()
        self.nested = NestedApi(server)

    def _agent_id(self) -> str | None:
        machine = self.server.machine
        return machine.agent_id if machine is not None else None

    @property
    def core(self) -> AgentMachine:
        assert self.server.machine is not None
        return self.server.machine

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for prefix in ("", "/slave(1)"):
            out += [
                web.route("*", prefix + "/api/v1", self.api),
                web.route("*", prefix + "/api/v1/operator", self.api),
                web.get(prefix + "/metrics/snapshot", self.metrics_snapshot),
                web.get(prefix + "/metrics", self.prometheus),
                web.get(prefix + "/containers", self.containers),
                web.get(prefix + "/monitor/statistics", self.monitor_statistics),
                web.get(prefix + "/monitor/statistics.json", self.monitor_statistics),
            ]
        return out + self.files.routes()

    # -- HTTP --------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and streaming_request(request):
            return await self.nested.attach_input(request)
        problem = _request_problem(request)
        if problem is not None:
            return problem
        call = parse_call(await request.read(), "agent")
        if isinstance(call, tuple):
            return _text(*call)
        handler = AGENT_CALLS.get(call.type)
        if handler is None:
            return _text(400, f"Unsupported agent::Call type '{call.type[:60]}'")
        if call.type in STREAMING_ANSWERS:
            problem = accept_problem(request)
            if problem is not None:
                return problem
        problem = self.nested.authorize(request, call)
        if problem is not None:
            return problem
        action = _CALL_ACTIONS.get(call.type)
        if action is not None:  # Mesos' `getFlags`, `pruneImages`: Forbidden without it
            refusal = forbidden(self.server.options.auth.acls, action, request.get("principal"))
            if refusal is not None:
                return _text(403, refusal)
        caller = _CALLER.set(request.get("principal"))
        try:
            result = await handler(self, call)
        except FileError as e:
            return _text(e.status, e.message)
        finally:
            _CALLER.reset(caller)
        if call.type == "GET_CONTAINERS" and not self.nested.may_view_standalone(request):
            # As Mesos: standalone containers only for view_standalone_containers.
            result["containers"] = [
                c
                for c in result["containers"]
                if self.nested.standalone(c["container_id"]["value"]) is None
            ]
        if isinstance(result, Streaming):
            return await result.run(request)
        if isinstance(result, web.Response):
            return result
        if result is None:
            return _text(200)
        server = self.server
        roles = call.type == "GET_OPERATIONS"  # filtered by view_roles too, as in Mesos
        view = state_viewer(server.options.auth.acls, request, server.framework_user, roles)
        if view is not None:  # --acls restrict views: only what this principal may see
            result = view.answer(call.type, result)
        key = call.type.lower()
        return _json({"type": call.type, key: result})

    def _endpoint_refusal(self, request: web.Request, path: str) -> web.Response | None:
        """403 for a GET of ``path`` (one of Mesos' AUTHORIZABLE_ENDPOINTS) that the
        ``get_endpoints`` ACL refuses the caller; None otherwise (always without ACLs)."""
        acls = self.server.options.auth.acls
        refusal = endpoint_forbidden(acls, request.get("principal"), path)
        return _text(403, refusal) if refusal is not None else None

    async def metrics_snapshot(self, request: web.Request) -> web.Response:
        refusal = self._endpoint_refusal(request, "/metrics/snapshot")
        return refusal or metrics_query_problem(request) or _json(self.metrics())

    async def prometheus(self, request: web.Request) -> web.Response:
        """``/metrics``: ``/metrics/snapshot`` as Prometheus text, guarded as that path."""
        refusal = self._endpoint_refusal(request, "/metrics/snapshot")
        if refusal is not None:
            return refusal
        return web.Response(
            body=prometheus_text(self.metrics(), "Mesos agent metric"),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )

    async def containers(self, request: web.Request) -> web.Response:
        """Legacy ``/containers``: the running containers with their statistics; as in
        Mesos, ``?container_id=``, ``?framework_id=`` or ``?framework_id=&executor_id=``
        select some (400 for another combination)."""
        refusal = self._endpoint_refusal(request, "/containers")
        if refusal is not None:
            return refusal
        query = request.query
        container_id = query.get("container_id")
        framework_id = query.get("framework_id")
        executor_id = query.get("executor_id")
        if (container_id is not None and (framework_id, executor_id) != (None, None)) or (
            executor_id is not None and framework_id is None
        ):
            return web.Response(
                status=400,
                text="Supported query parameters are container_id only, framework_id only, "
                "or executor_id and framework_id only",
            )
        selected = [
            c
            for c in await self._containers()
            if container_id in (None, c["container_id"])
            and framework_id in (None, c["framework_id"])
            and executor_id in (None, c["executor_id"])
        ]
        return _json(selected)

    async def monitor_statistics(self, request: web.Request) -> web.Response:
        """Legacy ``/monitor/statistics`` (Mesos 1.x; read by monitoring agents such as
        Prometheus' mesos exporter): each running executor's ResourceStatistics (from the
        cgroups with cgroup isolators, else from /proc)."""
        refusal = self._endpoint_refusal(request, "/monitor/statistics")
        if refusal is not None:
            return refusal
        keys = ("executor_id", "executor_name", "framework_id", "source", "statistics")
        return _json([{k: c[k] for k in keys} for c in await self._containers()])

    # -- calls -------------------------------------------------------------------------------

    async def call_get_health(self, call: OperatorCall) -> dict:
        return {"healthy": True}

    async def call_get_flags(self, call: OperatorCall) -> dict:
        return {"flags": [{"name": k, "value": v} for k, v in sorted(self.server.flags.items())]}

    async def call_get_version(self, call: OperatorCall) -> dict:
        return {"version_info": version_info()}

    async def call_get_metrics(self, call: OperatorCall) -> dict:
        return {"metrics": [{"name": k, "value": v} for k, v in sorted(self.metrics().items())]}

    async def call_get_logging_level(self, call: OperatorCall) -> dict:
        return {"level": self.logging.level}

    async def call_set_logging_level(self, call: OperatorCall) -> web.Response | None:
        payload = call.set_logging_level
        assert payload is not None
        error = self.logging.set(payload.level, payload.duration.nanoseconds / 1e9)
        return _text(400, error) if error else None

    async def call_list_files(self, call: OperatorCall) -> dict:
        assert call.list_files is not None
        return self.files.list_files(call.list_files.path, _CALLER.get())

    async def call_read_file(self, call: OperatorCall) -> dict:
        payload = call.read_file
        assert payload is not None
        return self.files.read_file(payload.path, payload.offset, payload.length, _CALLER.get())

    async def call_get_agent(self, call: OperatorCall) -> dict:
        return {"agent_info": to_builtins(self.core.agent_info())}

    async def call_get_operations(self, call: OperatorCall) -> dict:
        """The offer operations with an id applied on this agent whose latest status the
        framework has not acknowledged yet (Mesos' agent keeps these too)."""
        agent_id = {"value": self.core.agent_id or ""}
        operations = []
        for report in self.core.operation_book.reports():
            operation: dict[str, Any] = {
                "framework_id": {"value": report.framework_id},
                "agent_id": agent_id,
                "info": report.info,
                "latest_status": report.statuses[-1] if report.statuses else {},
                "statuses": report.statuses,
            }
            uuid = report.statuses[-1].get("uuid") if report.statuses else None
            if uuid is not None:
                operation["uuid"] = uuid
            operations.append(operation)
        return {"operations": operations}

    async def call_get_resource_providers(self, call: OperatorCall) -> dict:
        # butte has no resource providers (docs/operating.md): the list is truly empty.
        return {"resource_providers": []}

    async def call_get_frameworks(self, call: OperatorCall) -> dict:
        core = self.core
        return {
            "frameworks": [
                {"framework_info": to_builtins(f.info)} for f in core.frameworks.values()
            ],
            "completed_frameworks": [
                {"framework_info": to_builtins(f.info)} for f in core.completed_frameworks
            ],
        }

    async def call_get_executors(self, call: OperatorCall) -> dict:
        out: dict[str, list] = {"executors": [], "completed_executors": []}
        for fw in [*self.core.frameworks.values(), *self.core.completed_frameworks]:
            for ex in fw.executors.values():
                out["executors"].append({"executor_info": _executor_info(ex)})
            for ex in fw.completed_executors:
                out["completed_executors"].append({"executor_info": _executor_info(ex)})
        return out

    async def call_get_tasks(self, call: OperatorCall) -> dict:
        return self.get_tasks()

    async def call_get_state(self, call: OperatorCall) -> dict:
        return {
            "get_tasks": self.get_tasks(),
            "get_executors": await self.call_get_executors(call),
            "get_frameworks": await self.call_get_frameworks(call),
        }

    async def call_get_containers(self, call: OperatorCall) -> dict:
        out = []
        for c in await self._containers():
            entry: dict[str, Any] = {
                "framework_id": {"value": c["framework_id"]},
                "executor_id": {"value": c["executor_id"]},
                "executor_name": c["executor_name"],
                "container_id": {"value": c["container_id"]},
                "resource_statistics": c["statistics"],
                "container_type": c["container_type"],
            }
            if "container_info" in c:
                entry["container_info"] = c["container_info"]
            entry["container_status"] = c["status"]
            out.append(entry)
        if call.get_containers is not None and call.get_containers.show_nested:
            out += self.nested.containers_json(out)
        if call.get_containers is not None and call.get_containers.show_standalone:
            out += await self._standalone_containers()
        return {"containers": out}

    async def _standalone_containers(self) -> list[dict[str, Any]]:
        """GET_CONTAINERS entries of the running standalone containers (as Mesos lists
        them: no framework or executor), with their statistics (the cgroups' counters when
        isolated, else those of the processes of the launcher's session)."""
        running = [c for c in self.nested.nested.containers.values() if c.standalone and c.running]
        pids = {c.container_id: c.launcher_pid for c in running if c.launcher_pid is not None}
        usage = await asyncio.to_thread(_usage, pids)
        isolation = self.server.containerizer.isolation if self.server.containerizer else None
        out = []
        now = time.time()
        for c in running:
            resources = dict(c.resources)
            stats: dict[str, Any] = {"timestamp": now, **usage.get(c.container_id, {})}
            if "cpus" in resources:
                stats["cpus_limit"] = resources["cpus"]
            if "mem" in resources:
                stats["mem_limit_bytes"] = int(resources["mem"] * 1024 * 1024)
            if c.isolated and isolation is not None:
                stats.update(isolation.usage(c.container_id))
            cid = {"value": c.container_id}
            status: dict[str, Any] = {"container_id": cid}
            if c.pid is not None:
                status["executor_pid"] = c.pid
            out.append(
                {
                    "container_id": cid,
                    "container_type": "MESOS",
                    "container_status": status,
                    "resource_statistics": stats,
                }
            )
        return out

    async def call_kill_container(self, call: OperatorCall) -> web.Response | None:
        payload = call.kill_container
        assert payload is not None and self.server.containerizer is not None
        number = payload.signal if payload.signal is not None else int(signal.SIGKILL)
        if number not in {int(s) for s in signal.valid_signals()} or number == 0:
            return _text(400, f"Invalid signal {number}")
        if payload.container_id.parent is not None:
            return await self.nested.kill(payload)
        if self.nested.standalone(payload.container_id.value) is not None:
            return await self.nested.kill(payload)
        cid = payload.container_id.value
        container = self.server.containerizer.containers.get(cid)
        if container is None:
            return _text(404, f"Container {cid[:80]} not found")
        if container.pid is None:
            await self.server.containerizer.destroy(cid, 0.0)
        else:
            self.server.container_signalled(cid, number)
            await asyncio.to_thread(signal_sessions, [container.pid], number)
        return None

    async def call_prune_images(self, call: OperatorCall) -> web.Response | None:
        """Removes the image store's layers that no running container uses and no excluded
        image has; 200 once done. Without --image_providers there is no store and nothing
        to remove; images of Docker containers are dockerd's (Mesos' Docker containerizer
        prunes nothing either)."""
        try:
            names = excluded_images(call.prune_images)
        except ValueError as e:
            return _text(400, f"Failed to validate agent::Call: {e}")
        containerizer = self.server.containerizer
        images = containerizer.images if containerizer is not None else None
        if images is None:
            log.info("PRUNE_IMAGES: this agent has no image store (--image_providers)")
            return None
        if images.gc is not None:  # as Mesos: --image_gc_config's exclusions hold here too
            names += images.gc.excluded
        try:
            await asyncio.to_thread(images.prune, names)
        except OSError as e:  # the store's file system failed under it (as Mesos: 500)
            log.error("PRUNE_IMAGES failed: %s", e)
            return _text(500, f"Failed to prune images: {e}")
        return None

    async def call_launch_nested_container(self, call: OperatorCall) -> Any:
        return await self.nested.launch(call.launch_nested_container, session=False)

    async def call_launch_container(self, call: OperatorCall) -> Any:
        return await self.nested.launch(call.launch_container, session=False, standalone=True)

    async def call_launch_nested_container_session(self, call: OperatorCall) -> Any:
        return await self.nested.launch(call.launch_nested_container_session, session=True)

    async def call_wait_nested_container(self, call: OperatorCall) -> Any:
        payload = call.wait_nested_container
        assert payload is not None
        if payload.container_id.parent is None:
            return _text(400, "Expecting 'container_id.parent' to be present")
        return await self.nested.wait(payload)

    async def call_wait_container(self, call: OperatorCall) -> Any:
        return await self.nested.wait(call.wait_container)

    async def call_kill_nested_container(self, call: OperatorCall) -> Any:
        return await self.nested.kill(call.kill_nested_container)

    async def call_remove_nested_container(self, call: OperatorCall) -> Any:
        return await self.nested.remove(call.remove_nested_container)

    async def call_remove_container(self, call: OperatorCall) -> Any:
        return await self.nested.remove(call.remove_container)

    async def call_attach_container_output(self, call: OperatorCall) -> Any:
        return await self.nested.attach_output(call.attach_container_output)

    async def call_attach_container_input(self, call: OperatorCall) -> web.Response:
        return _text(
            415,
            "ATTACH_CONTAINER_INPUT is a streaming request: send it with Content-Type "
            "application/recordio and Message-Content-Type application/json",
        )

    # -- views -------------------------------------------------------------------------------

    def get_tasks(self) -> dict[str, list]:
        """GetTasks: queued (not yet given to the executor), launched, terminated (terminal,
        update not yet acknowledged) and completed."""
        core = self.core
        kinds = ("pending_tasks", "queued_tasks", "launched_tasks", "terminated_tasks")
        out: dict[str, list] = {kind: [] for kind in (*kinds, "completed_tasks")}
        for fw in [*core.frameworks.values(), *core.completed_frameworks]:
            for ex in [*fw.executors.values(), *fw.completed_executors]:
                for task in ex.tasks.values():
                    if task_states.is_terminal(task.state):
                        kind = "terminated_tasks"
                    else:
                        kind = "launched_tasks" if task.launched else "queued_tasks"
                    out[kind].append(self._task_json(ex, task))
                for task in ex.completed_tasks:
                    out["completed_tasks"].append(self._task_json(ex, task))
        return out

    def _task_json(self, ex: Executor, task: Any) -> dict[str, Any]:
        info = task.info
        out: dict[str, Any] = {
            "name": info.name,
            "task_id": to_builtins(info.task_id),
            "framework_id": {"value": task.framework_id},
            "agent_id": {"value": self.core.agent_id or ""},
            "state": task.state,
            "resources": info.resources,
            "statuses": [to_builtins(s) for s in task.statuses],
        }
        if ex.kind != COMMAND:
            out["executor_id"] = to_builtins(ex.info.executor_id)
        for key in ("labels", "discovery", "container", "health_check", "kill_policy"):
            value = getattr(info, key)
            if value is not None:
                out[key] = to_builtins(value) if not isinstance(value, dict) else value
        if info.limits:
            out["limits"] = task_limits.v1_json(info.limits)
        return out

    async def _containers(self) -> list[dict[str, Any]]:
        executors = [
            ex for ex in self.core.executors() if ex.state in (REGISTERING, RUNNING, TERMINATING)
        ]
        pids = {ex.container_id: ex.pid for ex in executors if ex.pid is not None}
        usage = await asyncio.to_thread(_usage, pids)
        containerizer = self.server.containerizer
        if containerizer is not None and containerizer.isolation is not None:
            # The cgroups' counters (whole container, throttling, OOMs) win over /proc's.
            for cid in pids:
                usage.setdefault(cid, {}).update(containerizer.usage(cid) or {})
        if self.server.docker is not None:
            # A Docker container's counters are the daemon's (its processes are not the
            # executor's session).
            for cid, counters in (await self.server.docker.usage(pids)).items():
                usage.setdefault(cid, {}).update(counters)
        out = []
        now = time.time()
        enable_cfs = self.core.config.cgroups_enable_cfs
        for ex in executors:
            requests = container_resources(ex)
            stats: dict[str, Any] = {
                "timestamp": now,
                "cpus_limit": requests.scalar("cpus"),
                "mem_limit_bytes": int(requests.scalar("mem") * 1024 * 1024),
                **usage.get(ex.container_id, {}),
            }
            ceilings = dict(limits_of(ex.info, [t.info for t in ex.live_tasks()], enable_cfs))
            if ceilings:
                # As Mesos' containerizer reports a container with limits: the requests as
                # soft limits, the limits as hard ones (the machine's size for none).
                stats["cpus_soft_limit"] = requests.scalar("cpus")
                stats["mem_soft_limit_bytes"] = int(requests.scalar("mem") * 1024 * 1024)
                if "cpus" in ceilings:
                    cpus = ceilings["cpus"]
                    stats["cpus_limit"] = os.cpu_count() if math.isinf(cpus) else cpus
                if "mem" in ceilings:
                    mem = ceilings["mem"]
                    stats["mem_limit_bytes"] = (
                        task_limits.machine_memory() if math.isinf(mem) else int(mem * 1024 * 1024)
                    )
            out.append(
                {
                    "framework_id": ex.framework_id,
                    "executor_id": ex.id,
                    "executor_name": ex.info.name or "",
                    "source": ex.info.source or "",
                    "container_id": ex.container_id,
                    # ContainerStatus, which always names its container in Mesos.
                    "status": {
                        "container_id": {"value": ex.container_id},
                        **({"executor_pid": ex.pid} if ex.pid else {}),
                    },
                    "statistics": stats,
                    **_container_kind(ex),
                }
            )
        return out

    # -- metrics -----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """``/metrics/snapshot``: the server's ``slave/*`` figures plus resources and
        executor states, under Mesos' names."""
        core = self.core
        out = self.server.metrics()
        total = core.config.resources
        used = Resources()
        states: dict[str, int] = {}
        for ex in core.executors():
            states[ex.state] = states.get(ex.state, 0) + 1
            if ex.kind != COMMAND:
                used = used + parsed_resources(ex.info.resources)
            for task in ex.live_tasks():
                used = used + parsed_resources(task.info.resources)
        for name in _SCALARS:
            t, u = total.scalar(name), used.scalar(name)
            out[f"slave/{name}_total"] = t
            out[f"slave/{name}_used"] = u
            out[f"slave/{name}_percent"] = u / t if t else 0.0
        out["slave/executors_registering"] = float(states.get(REGISTERING, 0))
        out["slave/executors_running"] = float(states.get(RUNNING, 0))
        out["slave/executors_terminating"] = float(states.get(TERMINATING, 0))
        # Counters there from the start as in Mesos' agent (the core counts from the first).
        for name in _COUNTED_FROM_START:
            out[f"slave/{name}"] = float(core.counters.get(name, 0))
        # Mesos preempts executors on its QoS controller's corrections; butte has none.
        out["slave/executors_preempted"] = 0.0
        out["slave/frameworks_active"] = float(len(core.frameworks))
        out["slave/registered"] = 1.0 if core.registered else 0.0
        out.update(system_metrics())
        return out


CallHandler = Callable[[AgentOperatorApi, OperatorCall], Awaitable[Any]]

# The principal of the call being handled (None: unauthenticated), for the handlers whose
# answer depends on who asks beyond the checks `api` makes (LIST_FILES / READ_FILE of the
# agent's log, guarded by access_mesos_logs).
_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)

# The calls served, by type; every other type of AGENT_CALL_TYPES answers 400. Grep a call
# type to find its handler.
AGENT_CALLS: dict[str, CallHandler] = {
    "GET_HEALTH": AgentOperatorApi.call_get_health,
    "GET_FLAGS": AgentOperatorApi.call_get_flags,
    "GET_VERSION": AgentOperatorApi.call_get_version,
    "GET_METRICS": AgentOperatorApi.call_get_metrics,
    "GET_LOGGING_LEVEL": AgentOperatorApi.call_get_logging_level,
    "SET_LOGGING_LEVEL": AgentOperatorApi.call_set_logging_level,
    "LIST_FILES": AgentOperatorApi.call_list_files,
    "READ_FILE": AgentOperatorApi.call_read_file,
    "GET_AGENT": AgentOperatorApi.call_get_agent,
    "GET_OPERATIONS": AgentOperatorApi.call_get_operations,
    "GET_RESOURCE_PROVIDERS": AgentOperatorApi.call_get_resource_providers,
    "GET_FRAMEWORKS": AgentOperatorApi.call_get_frameworks,
    "GET_EXECUTORS": AgentOperatorApi.call_get_executors,
    "GET_TASKS": AgentOperatorApi.call_get_tasks,
    "GET_STATE": AgentOperatorApi.call_get_state,
    "GET_CONTAINERS": AgentOperatorApi.call_get_containers,
    "KILL_CONTAINER": AgentOperatorApi.call_kill_container,
    "PRUNE_IMAGES": AgentOperatorApi.call_prune_images,
    "LAUNCH_NESTED_CONTAINER": AgentOperatorApi.call_launch_nested_container,
    "LAUNCH_CONTAINER": AgentOperatorApi.call_launch_container,
    "LAUNCH_NESTED_CONTAINER_SESSION": AgentOperatorApi.call_launch_nested_container_session,
    "WAIT_NESTED_CONTAINER": AgentOperatorApi.call_wait_nested_container,
    "WAIT_CONTAINER": AgentOperatorApi.call_wait_container,
    "KILL_NESTED_CONTAINER": AgentOperatorApi.call_kill_nested_container,
    "REMOVE_NESTED_CONTAINER": AgentOperatorApi.call_remove_nested_container,
    "REMOVE_CONTAINER": AgentOperatorApi.call_remove_container,
    "ATTACH_CONTAINER_OUTPUT": AgentOperatorApi.call_attach_container_output,
    "ATTACH_CONTAINER_INPUT": AgentOperatorApi.call_attach_container_input,
}

# A handler for a call type the protocol does not list (a typo) fails here, at import.
if not AGENT_CALLS.keys() <= AGENT_CALL_TYPES:
    raise ImportError(f"unknown agent call types: {sorted(AGENT_CALLS.keys() - AGENT_CALL_TYPES)}")


def _executor_info(ex: Executor) -> dict[str, Any]:
    info = to_builtins(ex.info)
    info.setdefault("framework_id", {"value": ex.framework_id})
    return info


def _usage(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """CPU times and resident memory of every process of each container's session."""
    members = session_members(pids.values())
    out: dict[str, dict[str, float]] = {}
    for cid, pid in pids.items():
        user = system = rss = 0.0
        procs = 0
        for member in {pid, *members.get(pid, [])}:
            try:
                with open(f"/proc/{member}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            procs += 1
            user += int(fields[11]) / _CLK_TCK
            system += int(fields[12]) / _CLK_TCK
            rss += int(fields[21]) * _PAGE
        out[cid] = {
            "cpus_user_time_secs": user,
            "cpus_system_time_secs": system,
            "mem_rss_bytes": int(rss),
            "processes": procs,
        }
    return out


def _container_kind(ex: Executor) -> dict[str, Any]:
    """``container_type`` (MESOS unless its ContainerInfo says otherwise) and, when it has
    one, ``container_info``: a command task's ContainerInfo (its image), else the
    executor's."""
    info = ex.info.container
    if ex.kind == COMMAND:
        tasks = list(ex.tasks.values())
        info = tasks[0].info.container if tasks else None
    if not info:
        return {"container_type": "MESOS"}
    return {"container_type": info.get("type", "MESOS"), "container_info": info}
