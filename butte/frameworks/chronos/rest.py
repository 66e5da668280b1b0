"""Chronos' REST API (``/v1/scheduler/...``, ``/metrics``) over the scheduling core.

Handlers validate, call one core method with the current time, let the shell flush the
effects (saved before any answer goes out), and answer as Chronos does: ``204`` for
changes, JSON for reads, ``400`` with ``{"status": "Bad Request", "message": ...}`` (the
fields of Chronos' ApiResult) for invalid input and for a job name that names no job. The
routes are a written-out table (`ROUTES`), all under ``/v1/scheduler`` as in Chronos 3.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from butte.frameworks.chronos.core import ChronosCore, percentile
from butte.frameworks.chronos.jobs import JobError, parse_job

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
PERCENTILES = {
    "99thPercentile": 0.99,
    "98thPercentile": 0.98,
    "95thPercentile": 0.95,
    "75thPercentile": 0.75,
    "median": 0.5,
}
SEARCH_PARAMS = frozenset({"name", "command", "any", "limit", "offset"})
# What Chronos' TaskUtils.isValidVersion looks for in a task id (its taskIdPattern).
TASK_ID = re.compile(r"ct:(\d+):(\d+):[\w.-]+:?(.*)")
UI_PAGE = Path(__file__).with_name("ui.html")


class ChronosShell(Protocol):
    """What the handlers need from the shell (`server.ChronosServer` has all of it): a
    narrow interface, so that this module does not import the shell that serves it."""

    @property
    def core(self) -> ChronosCore: ...

    @property
    def leading(self) -> bool: ...

    @property
    def framework_id(self) -> str | None: ...

    def flush(self) -> None:
        """Saves the core's changes, then sends their effects (before any answer)."""

    def wake(self) -> None:
        """Lets the timer recompute its next wakeup (a job was added, changed or deleted)."""

    def master_url(self) -> str: ...

    def leader_address(self) -> str:
        """``host:port`` of the leading instance's API; "" while none is known."""


Handler = Callable[[ChronosShell, web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    """An error answer in the form of Chronos' ApiResult: the status's reason phrase
    (``Bad Request``) and the message."""
    return web.json_response(
        {"status": HTTPStatus(status).phrase, "message": message}, status=status
    )


def refused(requirement: str) -> web.Response:
    """What Chronos answers when a ``require`` of one of its resources fails: 400, the
    message the IllegalArgumentException's stack trace, of which this is the first line."""
    return error(400, f"java.lang.IllegalArgumentException: requirement failed: {requirement}")


def unknown_job(label: str, name: str) -> web.Response:
    """What Chronos answers for a job name that names no job (`refused`); ``label`` is the
    word the resource uses (``Job`` or ``JobSchedule``)."""
    return refused(f"{label} '{name}' not found")


@web.middleware
async def refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, a method the route lacks, a body past
    `MAX_BODY`) in the shape of every other error here (`error`), ``Allow`` kept."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise  # a redirect, or one of ours (`_bad_request`)
        answer = error(e.status, f"HTTP {e.status} {e.reason}")
        if "Allow" in e.headers:
            answer.headers["Allow"] = e.headers["Allow"]
        return answer


def _bad_request(message: str) -> web.HTTPBadRequest:
    """`error`'s 400 as an exception, for checks that end a handler from below it."""
    body = {"status": HTTPStatus.BAD_REQUEST.phrase, "message": message}
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


def _no_params(request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
    extra = sorted(set(request.query) - allowed)
    if extra:
        raise _bad_request(f"unsupported query parameters: {', '.join(extra)}")


# A ``\uD800``-``\uDFFF`` escape: JSON allows it, but alone (not half of a pair) it is no
# character, and a job holding one could be neither stored nor launched as UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
        value = json.loads(raw)
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode()
        return value
    except web.HTTPRequestEntityTooLarge:
        raise
    except UnicodeEncodeError:
        raise _bad_request("malformed JSON: a string holds a lone UTF-16 surrogate") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: too deep
        raise _bad_request(f"malformed JSON: {e}") from None


def _put_job(dependency: bool) -> Handler:
    async def handler(server: ChronosShell, request: web.Request) -> web.StreamResponse:
        _no_params(request)
        body = await _body(request)
        now = time.time()
        try:
            spec = parse_job(body, now, dependency=dependency)
            server.core.put_job(spec, now)
        except JobError as e:
            return error(400, str(e))
        server.flush()
        server.wake()
        return web.Response(status=204)

    return handler


async def list_jobs(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    now = time.time()
    return web.json_response([server.core.job_json(n, now) for n in sorted(server.core.jobs)])


async def job_summaries(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """Chronos 3's ``/v1/scheduler/jobs/summary``, which its web UI polls for its job table:
    per job ``status`` (``success``, ``failure``, ``fresh``), ``state`` (``idle``,
    ``queued``, ``<n> running``), ``schedule`` (as listed; "" for a dependent job),
    ``parents`` and ``disabled``."""
    _no_params(request)
    now = time.time()
    core = server.core
    out = []
    for name in sorted(core.jobs):
        listed = core.job_json(name, now)
        out.append(
            {
                "name": name,
                "status": core.last_status(name),
                "state": core.job_state(name),
                "schedule": listed.get("schedule", ""),
                "parents": list(listed.get("parents", [])),
                "disabled": bool(listed.get("disabled")),
            }
        )
    return web.json_response({"jobs": out})


async def get_job(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    name = request.match_info["name"]
    if name not in server.core.jobs:
        return unknown_job("Job", name)
    return web.json_response(server.core.job_json(name, time.time()))


async def search_jobs(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """Chronos' search: jobs whose name and command contain ``name`` and ``command``
    (case-insensitive); ``any`` admits a job whose name or command contains it even when
    those do not match (alone, it is the only filter); the first ``limit`` (10) after
    ``offset``."""
    _no_params(request, SEARCH_PARAMS)
    q = {k: v.lower() for k, v in request.query.items() if v}
    try:
        limit = int(q.get("limit", "10"))
        offset = int(q.get("offset", "0"))
    except ValueError:
        return error(400, "limit and offset must be integers")
    if limit < 0 or offset < 0:
        return error(400, "limit and offset must not be negative")
    now = time.time()
    out = []
    for name in sorted(server.core.jobs):
        command = server.core.jobs[name].spec.command.lower()
        filters = [q[k] in f for k, f in (("name", name.lower()), ("command", command)) if k in q]
        matched = all(filters) if filters or "any" not in q else False
        if not matched and "any" in q:
            matched = q["any"] in name.lower() or q["any"] in command
        if matched:
            out.append(name)
    return web.json_response([server.core.job_json(n, now) for n in out[offset : offset + limit]])


def _act(
    server: ChronosShell, name: str, act: Callable[[str, float], object], label: str = "Job"
) -> web.Response:
    """Runs ``act(name, now)`` on the core and saves what it changed; answers the refusal
    (an unknown job as Chronos answers it, `unknown_job` with ``label``; 400 a refused
    change), else an empty 204."""
    try:
        act(name, time.time())
    except KeyError:
        return unknown_job(label, name)
    except JobError as e:
        return error(400, str(e))
    server.flush()
    return web.Response(status=204)


async def run_job(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """A manual run (204 also when it is dropped, as Chronos answers: the job is disabled,
    has a run waiting already, or is not concurrent and running; see `ChronosCore.run_now`)."""
    _no_params(request, frozenset({"arguments"}))
    # Blank arguments are none: the job's own are used (Chronos filters them out too); others
    # are kept as given, as Chronos puts them into the task id and the command.
    arguments = request.query.get("arguments", "")

    def run(name: str, now: float) -> None:
        if server.core.run_now(name, now, arguments if arguments.strip() else None) is None:
            log.info(
                "Manual run of %s dropped: it is disabled, has a run queued, or is running", name
            )

    return _act(server, request.match_info["name"], run)


async def mark_success(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    name = request.match_info["name"]
    if name not in server.core.jobs:
        # Chronos' markJobSuccessAndFireOffDependencies answers false, with 200.
        return web.Response(text=f"marked job {name} as successful: false")
    answer = _act(server, name, server.core.mark_success)
    if answer.status != 204:
        return answer
    return web.Response(text=f"marked job {name} as successful: true")


async def leader(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    return web.json_response({"leader": server.leader_address()})


async def delete_job(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    answer = _act(server, request.match_info["name"], server.core.delete_job, "JobSchedule")
    if answer.status == 204:
        server.wake()
    return answer


async def kill_tasks(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    return _act(server, request.match_info["name"], server.core.kill_tasks, "JobSchedule")


async def task_progress(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """Chronos' ``POST job/NAME/task/ID/progress`` counts elements processed by a run of a
    job with ``dataProcessingJobType``; no job here has it (the field is refused), so the
    call is refused as Chronos refuses it for such a job, after the same checks in the same
    order: the job must exist, the task id must be one of Chronos' ids."""
    _no_params(request)
    await _body(request)
    name, task_id = request.match_info["name"], request.match_info["task_id"]
    if name not in server.core.jobs:
        return unknown_job("JobSchedule", name)
    if not TASK_ID.search(task_id):
        return refused(f"Invalid task id format {task_id}")
    return refused(f"JobSchedule '{name}' is not enabled to track data")


def _histogram(durations: list[float]) -> dict[str, float]:
    """Run times in milliseconds, as Chronos' job histograms keep them."""
    millis = [d * 1000 for d in durations]
    out = {key: percentile(millis, q) for key, q in PERCENTILES.items()}
    out["mean"] = sum(millis) / len(millis) if millis else 0.0
    out["count"] = len(millis)
    return out


def _task_stat(job: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry with Chronos' ``taskStatHistory`` fields first (``taskId``,
    ``jobName``, ``slaveId``, ``startTime`` and ``endTime`` as ``MM/dd/yy HH:mm:ss`` UTC,
    ``duration``, ``status``: ``Success`` or ``Fail``), then ours (``state``, ``kind``,
    ``attempt``, ``message``; a skipped stretch has ``slots`` instead of a task)."""
    if "task_id" not in entry:  # a counted skip
        return {"jobName": job, "status": "Skipped", **entry}
    started, ended = entry.get("started"), entry.get("ended")
    out = {
        "taskId": entry["task_id"],
        "jobName": job,
        "slaveId": entry.get("agent_id", ""),
        "startTime": _stat_time(started),
        "endTime": _stat_time(ended),
    }
    if started is not None and ended is not None:
        out["duration"] = _stat_duration(ended - started)
    out["status"] = "Success" if entry["state"] == "TASK_FINISHED" else "Fail"
    out.update((k, entry[k]) for k in ("state", "kind", "attempt", "message", "due") if k in entry)
    return out


def _stat_time(t: float | None) -> str:
    return "N/A" if t is None else time.strftime("%m/%d/%y %H:%M:%S", time.gmtime(t))


def _stat_duration(seconds: float) -> str:
    days, rest = divmod(int(max(0.0, seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}d{hours}h{minutes}m{secs}s"


async def job_stat(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    name = request.match_info["name"]
    job = server.core.jobs.get(name)
    if job is None:
        return unknown_job("Job", name)
    return web.json_response(
        {
            "histogram": _histogram(job.durations),
            "taskStatHistory": [_task_stat(name, e) for e in reversed(job.history)],
            "successCount": job.success_count,
            "errorCount": job.error_count,
            "skippedCount": job.skipped_count,
            "droppedCount": job.dropped_count,
        }
    )


async def graph_csv(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    lines = []
    for name in sorted(server.core.jobs):
        core = server.core
        lines.append(f"node,{name},{core.last_status(name)},{core.job_state(name)}")
    for name in sorted(server.core.jobs):
        for parent in server.core.jobs[name].spec.parents:
            lines.append(f"link,{parent},{name}")
    return web.Response(text="".join(line + "\n" for line in lines), content_type="text/plain")


async def graph_dot(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """The dependency graph in Graphviz' DOT, as Chronos renders it (JGraphT's DOTExporter
    over its job graph): each job a node numbered from 1 and labelled with its name, then an
    edge from each parent to each of its children."""
    _no_params(request)
    core = server.core
    names = sorted(core.jobs)
    number = {name: i for i, name in enumerate(names, 1)}
    lines = ["digraph G {"]
    lines += [f'  {number[name]} [ label="{name}" ];' for name in names]
    for name in names:
        lines += [f"  {number[p]} -> {number[name]};" for p in core.jobs[name].spec.parents]
    lines.append("}")
    return web.Response(text="".join(line + "\n" for line in lines), content_type="text/plain")


async def scheduler_stat(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    kind = request.match_info["kind"]
    times = []
    for name in sorted(server.core.jobs):
        d = server.core.jobs[name].durations
        if not d:
            continue
        value = sum(d) / len(d) if kind == "mean" else percentile(d, PERCENTILES[kind])
        times.append((value, name))
    times.sort(key=lambda item: -item[0])  # longest first, as Chronos lists them
    return web.json_response([{"jobNameLabel": n, "time": t} for t, n in times])


async def metrics(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    _no_params(request)
    core = server.core
    gauges = {
        "jobs.count": len(core.jobs),
        "runs.queued": sum(1 for r in core.runs.values() if r.state == "QUEUED"),
        "runs.active": sum(1 for r in core.runs.values() if r.state != "QUEUED"),
        "runs.lost": len(core.lost),
        "offers.held": len(core.held),
        "leader": 1 if server.leading else 0,
    }
    return web.json_response(
        {
            "version": "3.0.0",
            "gauges": {k: {"value": v} for k, v in gauges.items()},
            "counters": {k: {"count": v} for k, v in core.counters.items()},
            "histograms": {
                "start_lag_seconds": _lags(core.start_lags),
                "placed_lag_seconds": _lags(core.placed_lags),
                "starting_lag_seconds": _lags(core.starting_lags),
            },
            "meters": {},
            "timers": {},
        }
    )


def _lags(values: Iterable[float]) -> dict[str, float]:
    lags = list(values)
    return {
        "count": len(lags),
        "p50": percentile(lags, 0.5),
        "p99": percentile(lags, 0.99),
        "max": max(lags, default=0.0),
    }


async def ping(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    return web.Response(text="pong")


async def ui_page(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    return web.Response(text=UI_PAGE.read_text(), content_type="text/html")


async def ui_info(server: ChronosShell, request: web.Request) -> web.StreamResponse:
    """What the page needs beyond the Chronos API: the master's address (sandbox links)."""
    return web.json_response(
        {"master": server.master_url(), "framework_id": server.framework_id, "now": time.time()}
    )


# (method, path, handler, served by the leader only)
ROUTES: list[tuple[str, str, Handler, bool]] = [
    ("POST", "/v1/scheduler/iso8601", _put_job(False), True),
    ("PUT", "/v1/scheduler/iso8601", _put_job(False), True),
    ("POST", "/v1/scheduler/dependency", _put_job(True), True),
    ("PUT", "/v1/scheduler/dependency", _put_job(True), True),
    ("GET", "/v1/scheduler/jobs", list_jobs, True),
    ("GET", "/v1/scheduler/jobs/search", search_jobs, True),
    ("GET", "/v1/scheduler/jobs/summary", job_summaries, True),
    ("GET", "/v1/scheduler/job/{name}", get_job, True),
    ("PUT", "/v1/scheduler/job/{name}", run_job, True),
    ("PUT", "/v1/scheduler/job/success/{name}", mark_success, True),
    ("GET", "/v1/scheduler/leader", leader, False),
    ("DELETE", "/v1/scheduler/job/{name}", delete_job, True),
    ("DELETE", "/v1/scheduler/task/kill/{name}", kill_tasks, True),
    ("GET", "/v1/scheduler/job/stat/{name}", job_stat, True),
    ("GET", "/v1/scheduler/graph/csv", graph_csv, True),
    ("GET", "/v1/scheduler/graph/dot", graph_dot, True),
    ("POST", "/v1/scheduler/job/{name}/task/{task_id}/progress", task_progress, True),
    (
        "GET",
        "/v1/scheduler/stats/{kind:99thPercentile|98thPercentile|95thPercentile|75thPercentile|median|mean}",
        scheduler_stat,
        True,
    ),
    ("GET", "/metrics", metrics, True),
    ("GET", "/ping", ping, False),
    ("GET", "/", ui_page, True),
    ("GET", "/ui/info", ui_info, True),
]
