"""Marathon's REST API v2 over the planner (aiohttp handlers).

Every handler validates its input, calls the planner synchronously and then lets the
service flush (store first, then the effects), so an answered change is durable. Errors are
Marathon's: 400 for malformed JSON, 404 for unknown ids, 409 for a change to an app in a
deployment (unless ``force=true``), 422 with ``details`` (the offending fields) for invalid
definitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec
from aiohttp import web

from butte.coord.url import ZkUrl
from butte.frameworks.marathon.appdef import (
    Invalid,
    app_ports,
    canonical_id,
    id_errors,
    merge_update,
    normalize_app,
    render_app,
)
from butte.frameworks.marathon.callbacks import HttpCallbacks, callback_url_problem
from butte.frameworks.marathon.model import Deployment, is_task_id, iso
from butte.frameworks.marathon.planner import ApiError, Planner, _under
from butte.frameworks.marathon.pods import PodManager
from butte.frameworks.marathon.pods_api import PodRoutes
from butte.frameworks.marathon.ui import PAGE

log = logging.getLogger(__name__)
APP_ACTIONS = ("restart", "tasks", "versions")
# Served by every instance itself; a standby proxies the rest to the leader.
LOCAL_PATHS = frozenset({"/", "/ui", "/ping", "/metrics", "/v2/leader"})
PROXY_HEADER = "X-Marathon-Via"
# The ``status`` values GET /v2/tasks filters by (the states they keep).
TASK_STATUS_FILTERS = {"running": "TASK_RUNNING", "staging": "TASK_STAGING"}
EMBED_ALL = {"tasks", "counts", "deployments", "lastTaskFailure", "taskStats", "readiness"}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # msgspec: a 10,000-task listing encodes in a third of json.dumps' time
    return web.Response(
        body=_encode(body), status=status, headers=headers, content_type="application/json"
    )


_encode = msgspec.json.Encoder().encode


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``true``/``True``/``1``; requests sends ``True``)."""
    value = request.query.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ApiError(400, {"message": f"query parameter {name}={value!r} is not a boolean"})


def _embed(request: web.Request) -> set[str]:
    """What ``embed`` asks for, without its ``apps.``/``app.`` prefix (Marathon takes both
    on both endpoints, and the Python client sends ``app.tasks`` to ``/v2/apps``)."""
    out = set()
    for value in request.query.getall("embed", []):
        for item in value.split(","):
            for prefix in ("apps.", "app."):
                if item.startswith(prefix):
                    out.add(item[len(prefix) :])
    return out


def _wants_text(request: web.Request) -> bool:
    """Whether the client prefers Marathon's text/plain task list to JSON. Marathon offers
    text/plain at a server quality of 0.1 (``RestResource.TEXT_PLAIN_LOW``), and JAX-RS
    ranks the client's ``q`` before that: text only where its ``q`` is higher than JSON's
    (``*/*``, no Accept, or both at the same ``q`` mean JSON)."""
    best = {"json": 0.0, "text": 0.0}
    for item in request.headers.get("Accept", "*/*").split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind, _, sub = media.lower().partition("/")
        for key, want_kind, want_sub in (
            ("json", "application", "json"),
            ("text", "text", "plain"),
        ):
            if kind == "*" or (kind == want_kind and sub in ("*", want_sub)):
                best[key] = max(best[key], q)
    return best["text"] > best["json"]


# A ``\uD800``-``\uDFFF`` escape: JSON allows it, but alone (not half of a pair) it is no
# character, and a string holding one can be neither stored nor sent on as UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        value = json.loads(raw or b"null")
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode()
        return value
    except UnicodeEncodeError:
        error = "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), no character"
        raise ApiError(
            400, {"message": "Invalid JSON", "details": [{"path": "/", "errors": [error]}]}
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(
            400, {"message": "Invalid JSON", "details": [{"path": "/", "errors": [str(e)]}]}
        ) from None


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return _json(e.body, e.status)
    except Invalid as e:
        return _json({"message": e.message, "details": e.details}, 422)
    except web.HTTPException as e:
        if e.status < 400:
            raise  # redirects
        # aiohttp's own refusals (no such route, a method the route lacks, a body past
        # the limit) in Marathon's error shape, as its exception mapper renders JAX-RS'
        return _json({"message": f"HTTP {e.status} {e.reason}"}, e.status, _kept_headers(e))
    except Exception as e:  # never let a request take the service down
        log.exception("error serving %s %s", request.method, request.path)
        return _json({"message": f"internal error: {type(e).__name__}: {e}"}, 500)


def _kept_headers(e: web.HTTPException) -> dict[str, str]:
    """The headers of aiohttp's refusal that say something to the client (``Allow``)."""
    return {k: v for k, v in e.headers.items() if k.lower() == "allow"}


EventQueue = asyncio.Queue[dict[str, Any] | None]


class Events(Protocol):
    """The ``/v2/events`` fan-out as a stream sees it (`main.EventHub`); ``None`` on a
    queue ends the stream."""

    def subscribe(self) -> EventQueue: ...

    def unsubscribe(self, queue: EventQueue) -> None: ...

    def publish(self, event: dict[str, Any]) -> None: ...


class MarathonShell(Protocol):
    """What the routes need from the service (`main.Service` has all of it): a narrow
    interface, so that this module does not import the shell that creates it."""

    @property
    def planner(self) -> Planner: ...

    @property
    def pods(self) -> PodManager: ...

    @property
    def hub(self) -> Events: ...

    @property
    def scheme(self) -> str:
        """ "https" when the REST API speaks TLS (LIBPROCESS_SSL_ENABLED), else "http"."""

    @property
    def zk(self) -> ZkUrl | None:
        """``--zk`` (None: a single instance, nothing to abdicate to)."""

    @property
    def leading(self) -> bool: ...

    def now(self) -> float: ...

    def own_address(self) -> str: ...

    def leader_address(self) -> str | None: ...

    def abdicate(self) -> None: ...

    async def proxy(self, request: web.Request, leader: str) -> web.Response:
        """Forwards a request a standby may not serve to the leader."""

    async def flush(self) -> None:
        """Makes the planner's changes durable, then sends their effects."""

    def info(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...

    @property
    def callbacks(self) -> HttpCallbacks | None:
        """``--event_subscriber http_callback``'s subscribers (None: not running)."""

    def event_subscription(self, url: str, subscribe: bool, client_ip: str | None) -> dict:
        """Adds or removes a callback subscriber durably; the event that says so."""


class Api:
    """The routes; ``service`` owns the planner, the flush and the event hub."""

    def __init__(self, service: MarathonShell) -> None:
        self.service = service

    @property
    def planner(self) -> Planner:
        return self.service.planner

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors, self._standby], client_max_size=8 * 1024 * 1024)
        app.router.add_get("/", self.root)
        app.router.add_get("/ui", self.ui)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v2/info", self.info)
        app.router.add_route("*", "/v2/leader", self.leader)
        app.router.add_route("*", "/v2/apps", self.apps)
        app.router.add_route("*", "/v2/apps/{tail:.+}", self.app_path)
        app.router.add_route("*", "/v2/groups", self.groups)
        app.router.add_route("*", "/v2/groups/{tail:.*}", self.group_path)
        app.router.add_get("/v2/tasks", self.tasks)
        app.router.add_post("/v2/tasks/delete", self.tasks_delete)
        app.router.add_get("/v2/deployments", self.deployments)
        app.router.add_delete("/v2/deployments/{id}", self.deployment_delete)
        app.router.add_get("/v2/queue", self.queue)
        app.router.add_delete("/v2/queue/{tail:.+}/delay", self.queue_delay)
        app.router.add_get("/v2/events", self.events)
        app.router.add_route("*", "/v2/eventSubscriptions", self.event_subscriptions)
        PodRoutes(self.service, _body).add(app.router)
        return app

    @web.middleware
    async def _standby(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """A standby (``--zk``) serves only its own liveness, metrics, ``/v2/leader`` and
        the page; everything else is proxied to the leader (the event stream redirected),
        or 503 while no leader is known."""
        if self.service.leading or request.path in LOCAL_PATHS:
            return await handler(request)
        leader = self.service.leader_address()
        if leader is None or leader == self.service.own_address():
            raise ApiError(503, {"message": "no leader elected yet; try again"})
        if request.headers.get(PROXY_HEADER):
            raise ApiError(503, {"message": "proxied to a standby: the leader just changed"})
        if request.path == "/v2/events":
            raise web.HTTPTemporaryRedirect(f"{self.service.scheme}://{leader}{request.path_qs}")
        return await self.service.proxy(request, leader)

    # -- misc ------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui")

    async def ui(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE, content_type="text/html")

    async def ping(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="pong", content_type="text/plain")

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return _json(self.service.metrics())

    async def info(self, request: web.Request) -> web.StreamResponse:
        return _json(self.service.info())

    async def leader(self, request: web.Request) -> web.StreamResponse:
        leader = self.service.leader_address()
        if request.method == "GET":
            if leader is None:
                raise ApiError(404, {"message": "There is no leader"})
            return _json({"leader": leader})
        if request.method == "DELETE":
            if self.service.zk is None:
                raise ApiError(
                    400,
                    {"message": "this Marathon runs without --zk (no other instance to take over)"},
                )
            if not self.service.leading:  # as Marathon's LeaderResource on a standby
                raise ApiError(404, {"message": "There is no leader"})
            self.service.abdicate()
            return _json({"message": "Leadership abdicated"})
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "DELETE"])

    async def event_subscriptions(self, request: web.Request) -> web.StreamResponse:
        """Marathon's HTTP callback subscriptions (``--event_subscriber http_callback``):
        GET lists them, POST and DELETE ``?callbackUrl=`` add and remove one."""
        callbacks = self.service.callbacks
        if callbacks is None:  # Marathon's answer without the subscriber
            raise ApiError(
                400,
                {
                    "message": "http event callback system is not running on this Marathon "
                    'instance. Please re-start this instance with "--event_subscriber '
                    'http_callback".'
                },
            )
        if request.method == "GET":
            return _json({"callbackUrls": list(callbacks.urls)})
        if request.method not in ("POST", "DELETE"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST", "DELETE"])
        url = request.query.get("callbackUrl")
        problem = callback_url_problem(url)
        if problem is not None:
            raise ApiError(400, {"message": problem})
        assert url is not None
        subscribe = request.method == "POST"
        return _json(self.service.event_subscription(url, subscribe, request.remote))

    # -- apps ------------------------------------------------------------------------------

    def _role(self) -> str:
        return self.planner.config.role

    async def apps(self, request: web.Request) -> web.StreamResponse:
        now = self.service.now()
        if request.method == "GET":
            embed = _embed(request)
            cmd = request.query.get("cmd")
            needle = request.query.get("id")
            label = request.query.get("label")
            # Each app's encoding is cached by the planner until it changes: the listing
            # is a join of those, not a rendering of every app and task.
            out: list[bytes] = []
            for app_id in sorted(self.planner.apps):
                spec = self.planner.apps[app_id]
                if cmd and cmd not in (spec.get("cmd") or ""):
                    continue
                if needle and needle not in app_id:
                    continue
                if label and not _label_match(spec["labels"], label):
                    continue
                out.append(self.planner.app_bytes(app_id, embed))
            body = b'{"apps":[' + b",".join(out) + b"]}"
            return web.Response(body=body, content_type="application/json")
        if request.method == "POST":
            body = await _body(request)
            spec = normalize_app(body, role=self._role())
            if spec["id"] in self.planner.apps:
                raise ApiError(409, {"message": f"An app with id [{spec['id']}] already exists."})
            if any(_under(a, spec["id"]) for a in self.planner.apps) or spec["id"] in (
                self.planner.groups
            ):
                raise ApiError(409, {"message": f"A group with id [{spec['id']}] exists."})
            self._deploy({spec["id"]: spec}, now, force=_flag(request, "force"))
            self._api_post(request, spec["id"], now)
            await self.service.flush()
            created = self.planner.app_json(spec["id"], set())
            return _json(created, 201, headers={"Location": f"/v2/apps{spec['id']}"})
        if request.method in ("PUT", "PATCH"):
            body = await _body(request)
            if not isinstance(body, list):
                raise ApiError(422, {"message": "expected a list of app definitions"})
            changes = {}
            for raw in body:
                spec = self._updated(raw, None, request)
                changes[spec["id"]] = spec
            d = self._deploy(changes, now, force=_flag(request, "force"))
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST", "PUT", "PATCH"])

    def _deploy(
        self, changes: Mapping[str, dict[str, Any] | None], now: float, **options: Any
    ) -> Deployment:
        """``planner.deploy``, after refusing an app that would take a pod's id (apps and
        pods share Marathon's one tree of ids; the pod side checks the other way)."""
        for app_id, spec in changes.items():
            if spec is not None and app_id not in self.planner.apps:
                if app_id in self.service.pods.pods:
                    raise ApiError(409, {"message": f"A pod with id [{app_id}] already exists."})
        return self.planner.deploy(changes, now, **options)

    def _api_post(self, request: web.Request, app_id: str, now: float) -> None:
        """``api_post_event`` for the app this request created or updated, with what
        Marathon takes from the servlet request: the peer's address (``getRemoteAddr``:
        a standby that proxied the request, not the client behind it) and the path
        without the query (``getRequestURI``, not decoded)."""
        spec = self.planner.apps[app_id]
        self.planner.api_post(request.remote, request.rel_url.raw_path, spec, now)

    def _updated(self, raw: Any, app_id: str | None, request: web.Request) -> dict[str, Any]:
        """The new definition from a PUT body (merged into the current one unless
        ``partialUpdate=false``) or a PATCH body (always merged, into an app that must
        exist: Marathon's PATCH creates nothing)."""
        if not isinstance(raw, dict):
            raise Invalid([{"path": "/", "errors": ["an app definition must be a JSON object"]}])
        if app_id is None:
            if not isinstance(raw.get("id"), str):
                raise Invalid([{"path": "/id", "errors": ["an app needs an id"]}])
            app_id = canonical_id(raw["id"])
        patch = request.method == "PATCH"
        current = self._existing(app_id) if patch else self.planner.apps.get(app_id)
        partial = patch or request.query.get("partialUpdate", "true").lower() != "false"
        if current is not None and partial:
            raw = merge_update(current, raw)
        return normalize_app(raw, role=self._role(), app_id=app_id)

    async def app_path(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.match_info["tail"].split("/") if s]
        rest: list[str] = []
        for i, seg in enumerate(segments):
            if seg in APP_ACTIONS and i > 0:
                segments, rest = segments[:i], segments[i:]
                break
        app_id = "/" + "/".join(segments)
        if id_errors(app_id):
            raise ApiError(404, {"message": f"App '{app_id}' does not exist"})
        if not rest:
            return await self._app(request, app_id)
        if rest[0] == "restart" and len(rest) == 1 and request.method == "POST":
            spec = self._existing(app_id)
            d = self._deploy(
                {app_id: spec}, self.service.now(), force=_flag(request, "force"), restart=[app_id]
            )
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        if rest[0] == "tasks":
            return await self._app_tasks(request, app_id, rest[1:])
        if rest[0] == "versions" and request.method == "GET":
            self._existing(app_id)
            versions = self.planner.versions.get(app_id, {})
            if len(rest) == 1:
                return _json({"versions": sorted(versions, reverse=True)})
            if len(rest) == 2 and rest[1] in versions:
                return _json(render_app(versions[rest[1]]))
            version = "/".join(rest[1:])
            raise ApiError(404, {"message": f"App '{app_id}' does not exist in version {version}"})
        raise ApiError(404, {"message": f"no such resource: {request.method} {request.path}"})

    def _existing(self, app_id: str) -> dict[str, Any]:
        spec = self.planner.apps.get(app_id)
        if spec is None:
            raise ApiError(404, {"message": f"App '{app_id}' does not exist"})
        return spec

    async def _app(self, request: web.Request, app_id: str) -> web.StreamResponse:
        now = self.service.now()
        force = _flag(request, "force")
        if request.method == "GET":
            self._existing(app_id)
            embed = _embed(request) or EMBED_ALL
            return _json({"app": self.planner.app_json(app_id, embed)})
        if request.method in ("PUT", "PATCH"):
            body = await _body(request)
            created = app_id not in self.planner.apps
            if isinstance(body, dict) and set(body) <= {"version", "id"} and "version" in body:
                version = body["version"]
                spec = self.planner.versions.get(app_id, {}).get(version)
                if spec is None:
                    raise ApiError(404, {"message": f"App '{app_id}' does not exist"})
            else:
                spec = self._updated(body, app_id, request)
            d = self._deploy({app_id: spec}, now, force=force)
            self._api_post(request, app_id, now)
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version}, 201 if created else 200)
        if request.method == "DELETE":
            self._existing(app_id)
            d = self._deploy({app_id: None}, now, force=force)
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "PATCH", "DELETE"])

    async def _app_tasks(
        self, request: web.Request, app_id: str, rest: list[str]
    ) -> web.StreamResponse:
        self._existing(app_id)
        instances = self.planner.app_instances(app_id)
        if request.method == "GET" and not rest:
            if _wants_text(request):  # AppTasksResource.indexTxt
                return web.Response(text=self._endpoints([app_id]))
            return _json({"tasks": [self.planner.task_json(i) for i in instances]})
        if request.method != "DELETE" or len(rest) > 1:
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "DELETE"])
        if _flag(request, "scale") and _flag(request, "wipe"):  # as AppTasksResource
            raise ApiError(400, {"message": "You cannot use scale and wipe at the same time."})
        if rest:
            chosen = [i for i in instances if i.task_id == rest[0]]
            if not chosen:
                raise ApiError(404, {"message": f"Task '{rest[0]}' does not exist"})
        else:
            host = request.query.get("host")
            chosen = [i for i in instances if host is None or i.host == host]
        ids = [i.task_id for i in chosen]
        if _flag(request, "scale"):
            d = self._scale_down({app_id: ids}, request)
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        rendered = [self.planner.task_json(i) for i in chosen]
        self.planner.kill_tasks(ids, self.service.now(), wipe=_flag(request, "wipe"))
        await self.service.flush()
        if rest:
            return _json({"task": rendered[0]})
        return _json({"tasks": rendered})

    def _scale_down(self, by_app: dict[str, list[str]], request: web.Request) -> Any:
        changes = {}
        for app_id, ids in by_app.items():
            spec = dict(self.planner.apps[app_id])
            spec["instances"] = max(0, spec["instances"] - len(ids))
            changes[app_id] = spec
        kill = [t for ids in by_app.values() for t in ids]
        return self._deploy(
            changes, self.service.now(), force=_flag(request, "force"), kill_tasks=kill
        )

    # -- tasks, deployments, queue ---------------------------------------------------------

    async def tasks(self, request: web.Request) -> web.StreamResponse:
        if _wants_text(request):  # TasksResource.indexTxt: every app, no status filter
            return web.Response(text=self._endpoints(sorted(self.planner.apps)))
        # Marathon's TasksResource knows two values of ``status`` (and ``status[]``) and
        # ignores any other: with none it knows, every task is listed.
        asked = request.query.getall("status", []) + request.query.getall("status[]", [])
        wanted = {TASK_STATUS_FILTERS[v.lower()] for v in asked if v.lower() in TASK_STATUS_FILTERS}
        out = []
        for inst in self.planner.instances.values():
            task = self.planner.task_json(inst)
            if wanted and task["state"] not in wanted:
                continue
            out.append(task)
        return _json({"tasks": out})

    def _endpoints(self, app_ids: list[str]) -> str:
        """Marathon's text/plain task list (``EndpointsHelper.appsToEndpointString``), which
        ``haproxy-marathon-bridge`` and the like read: per app and service port a line
        ``<id with / as _><TAB><service port><TAB>`` followed by ``<host>:<host port><TAB>``
        for each running task; an app without ports has one line with a blank for the port
        and only the hosts."""
        lines = []
        for app_id in app_ids:
            spec = self.planner.apps[app_id]
            name = "_".join(s for s in app_id.split("/") if s)
            running = [
                i
                for i in self.planner.app_instances(app_id)
                if i.state == "TASK_RUNNING" and not i.killing
            ]
            service_ports = [p["servicePort"] for p in app_ports(spec)]
            if not service_ports:
                lines.append(f"{name}\t \t" + "".join(f"{i.host}\t" for i in running))
            for index, port in enumerate(service_ports):
                tasks = "".join(
                    f"{i.host}:{i.ports[index]}\t" for i in running if index < len(i.ports)
                )
                lines.append(f"{name}\t{port}\t{tasks}")
        return "".join(line + "\n" for line in lines)

    async def tasks_delete(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Invalid([{"path": "/ids", "errors": ["must be a list of task ids"]}])
        # As Marathon's TasksResource.killTasks, before anything is killed.
        if _flag(request, "scale") and _flag(request, "wipe"):
            raise ApiError(400, {"message": "You cannot use scale and wipe at the same time."})
        for task_id in ids:
            if not is_task_id(task_id):
                why = f"taskId {task_id} no valid identifier"
                raise ApiError(400, {"message": f"Invalid task id '{task_id}'. [{why}]"})
        known = [self.planner.instances[t] for t in ids if t in self.planner.instances]
        if _flag(request, "scale"):
            by_app: dict[str, list[str]] = {}
            for inst in known:
                if inst.app_id in self.planner.apps:
                    by_app.setdefault(inst.app_id, []).append(inst.task_id)
            d = self._scale_down(by_app, request)
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        rendered = [self.planner.task_json(i) for i in known]
        wipe = _flag(request, "wipe")
        self.planner.kill_tasks([i.task_id for i in known], self.service.now(), wipe=wipe)
        await self.service.flush()
        return _json({"tasks": rendered})

    async def deployments(self, request: web.Request) -> web.StreamResponse:
        out = []
        for d in self.planner.deployments.values():
            rendered = d.json()
            for action in rendered["currentActions"]:  # the checks this step waits for
                action["readinessCheckResults"] = self.planner.readiness_of(action["app"])
            out.append(rendered)
        out.extend(d.json() for d in self.service.pods.deployments.values())
        return _json(out)

    async def deployment_delete(self, request: web.Request) -> web.StreamResponse:
        force = _flag(request, "force")
        if request.match_info["id"] in self.service.pods.deployments:
            if not force:  # a pod is rolled back by PUTting its earlier version
                raise ApiError(
                    409,
                    {"message": "rolling back a pod deployment is not supported; use force=true"},
                )
            self.service.pods.deployments.pop(request.match_info["id"])
            self.service.pods.dirty.add(("poddeployment", request.match_info["id"]))
            await self.service.flush()
            return web.Response(status=202)
        d = self.planner.cancel_deployment(request.match_info["id"], self.service.now(), force)
        await self.service.flush()
        if d is None:
            return web.Response(status=202)
        return _json({"deploymentId": d.id, "version": d.version})

    async def queue(self, request: web.Request) -> web.StreamResponse:
        embed = {item for value in request.query.getall("embed", []) for item in value.split(",")}
        queue = self.planner.queue(self.service.now(), "lastUnusedOffers" in embed)
        return _json({"queue": queue})

    async def queue_delay(self, request: web.Request) -> web.StreamResponse:
        app_id = canonical_id(request.match_info["tail"])
        if not self.planner.in_queue(app_id):  # Marathon's QueueResource, unknown apps too
            raise ApiError(404, {"message": f"Application {app_id} not found in tasks queue."})
        self.planner.reset_delay(app_id)
        await self.service.flush()
        return web.Response(status=204)

    # -- groups ----------------------------------------------------------------------------

    def group_json(self, group_id: str, embed_apps: bool = True) -> dict[str, Any] | None:
        """A group with its apps and subgroups (None: no such group)."""
        p = self.planner
        ids = set(p.groups)
        for app_id in p.apps:
            parts = app_id.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                ids.add("/" + "/".join(parts[:i]))
        if group_id != "/" and group_id not in ids:
            return None

        def build(gid: str) -> dict[str, Any]:
            apps = [p.app_json(a, set()) for a in sorted(p.apps) if _parent_of(a) == gid]
            # The root is its own parent (and is in ``ids`` once PUT /v2/groups/ stored it).
            children = sorted(g for g in ids if g != gid and _parent_of(g) == gid)
            group = p.groups.get(gid, {})
            versions = [a["version"] for a in p.apps.values() if _under(a["id"], gid)]
            versions.append(group.get("version", ""))
            return {
                "id": gid,
                "apps": apps if embed_apps else [],
                "groups": [build(c) for c in children],
                "dependencies": group.get("dependencies", []),
                "pods": [],
                "version": max(versions) or None,
            }

        return build(group_id)

    async def groups(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return _json(self.group_json("/"))
        if request.method == "POST":
            body = await _body(request)
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                raise Invalid([{"path": "/id", "errors": ["a group needs an id"]}])
            group_id = canonical_id(body["id"])
            taken = self.group_json(group_id) is not None or group_id in self.planner.apps
            if taken or group_id in self.service.pods.pods:
                raise ApiError(409, {"message": f"Group {group_id} is already created."})
            errors = id_errors(group_id)
            if errors:  # the same rules as an app's id (a group GET could not name it)
                raise Invalid([{"path": "/id", "errors": errors}])
            return await self._put_group(request, group_id, body, created=True)
        if request.method == "PUT":  # Marathon's GroupsResource.updateRoot
            return await self._update_group(request, "/")
        if request.method == "DELETE":
            return await self._delete_root(request)
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST", "PUT", "DELETE"])

    async def _update_group(self, request: web.Request, group_id: str) -> web.StreamResponse:
        """``PUT /v2/groups[/{id}]``: scale the group (``scaleBy``), roll it back to a
        version (a body of ``version`` alone), or create or change it."""
        body = await _body(request)
        if not isinstance(body, dict):
            raise Invalid([{"path": "/", "errors": ["a group must be a JSON object"]}])
        if "scaleBy" in body:
            return await self._scale_group(request, group_id, body["scaleBy"])
        if set(body) <= {"version", "id"} and "version" in body:
            return await self._rollback_group(request, group_id, body["version"])
        created = self.group_json(group_id) is None
        return await self._put_group(request, group_id, body, created=created)

    async def _delete_root(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /v2/groups``: every app and group goes, as one deployment (Marathon's
        GroupsResource.delete of the root)."""
        changes: dict[str, dict[str, Any] | None] = {a: None for a in self.planner.apps}
        groups: dict[str, dict[str, Any] | None] = {g: None for g in self.planner.groups}
        d = self._deploy(changes, self.service.now(), force=_flag(request, "force"), groups=groups)
        await self.service.flush()
        return _json({"deploymentId": d.id, "version": d.version})

    async def group_path(self, request: web.Request) -> web.StreamResponse:
        tail = [s for s in request.match_info["tail"].split("/") if s]
        rest: list[str] = []
        if "versions" in tail:
            i = tail.index("versions")
            tail, rest = tail[:i], tail[i:]
        if tail and tail[-1] == "apps" and request.method == "GET":
            return self._group_apps(request, "/" + "/".join(tail[:-1]))
        group_id = "/" + "/".join(tail)
        if group_id != "/" and id_errors(group_id):
            raise ApiError(404, {"message": f"Group '{group_id}' does not exist"})
        if rest:
            if request.method == "GET" and len(rest) == 1:
                return _json(sorted(self.planner.group_versions.get(group_id, {}), reverse=True))
            if request.method == "PUT" and len(rest) == 2:
                return await self._rollback_group(request, group_id, rest[1])
            raise ApiError(404, {"message": f"no such resource: {request.method} {request.path}"})
        if request.method == "GET":
            group = self.group_json(group_id)
            if group is None:
                raise ApiError(404, {"message": f"Group '{group_id}' does not exist"})
            return _json(group)
        if request.method == "PUT":
            return await self._update_group(request, group_id)
        if request.method == "DELETE":
            if group_id == "/":
                return await self._delete_root(request)
            if self.group_json(group_id) is None:
                raise ApiError(404, {"message": f"Group '{group_id}' does not exist"})
            changes = {a: None for a in self.planner.apps if _under(a, group_id)}
            d = self._deploy(
                changes, self.service.now(), force=_flag(request, "force"), groups={group_id: None}
            )
            await self.service.flush()
            return _json({"deploymentId": d.id, "version": d.version})
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "DELETE"])

    def _group_apps(self, request: web.Request, group_id: str) -> web.Response:
        """``GET /v2/groups/{id}/apps``: the apps in the group and its subgroups, a bare
        list (empty for an unknown group), as Marathon's GroupsResource ``ListApps``."""
        embed = set()
        for value in request.query.getall("embed", []):
            for item in value.split(","):
                for prefix in ("group.apps.", "apps.", "app."):
                    if item.startswith(prefix):
                        embed.add(item[len(prefix) :])
                        break
        apps = [
            self.planner.app_bytes(a, embed)
            for a in sorted(self.planner.apps)
            if _under(a, group_id)
        ]
        return web.Response(body=b"[" + b",".join(apps) + b"]", content_type="application/json")

    async def _put_group(
        self, request: web.Request, group_id: str, body: dict[str, Any], created: bool
    ) -> web.StreamResponse:
        specs: dict[str, dict[str, Any]] = {}
        groups: dict[str, dict[str, Any] | None] = {}
        _flatten(body, group_id, self._role(), specs, groups)
        changes: dict[str, dict[str, Any] | None] = dict(specs)
        if "apps" in body or "groups" in body:
            for app_id in self.planner.apps:
                if _under(app_id, group_id) and app_id not in specs:
                    changes[app_id] = None
        d = self._deploy(changes, self.service.now(), force=_flag(request, "force"), groups=groups)
        await self.service.flush()
        return _json({"deploymentId": d.id, "version": d.version}, 201 if created else 200)

    async def _scale_group(
        self, request: web.Request, group_id: str, factor: Any
    ) -> web.StreamResponse:
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not (0 <= factor <= 1000)
        ):
            raise Invalid([{"path": "/scaleBy", "errors": ["must be a number from 0 to 1000"]}])
        if self.group_json(group_id) is None:
            raise ApiError(404, {"message": f"Group '{group_id}' does not exist"})
        changes = {}
        for app_id, spec in self.planner.apps.items():
            if _under(app_id, group_id):
                new = dict(spec)
                new["instances"] = math.ceil(spec["instances"] * factor)
                if new["instances"] > 100_000:
                    raise Invalid([{"path": "/scaleBy", "errors": ["too many instances"]}])
                changes[app_id] = new
        d = self._deploy(changes, self.service.now(), force=_flag(request, "force"))
        await self.service.flush()
        return _json({"deploymentId": d.id, "version": d.version})

    async def _rollback_group(
        self, request: web.Request, group_id: str, version: Any
    ) -> web.StreamResponse:
        snapshot = self.planner.group_versions.get(group_id, {}).get(str(version))
        if snapshot is None:
            raise ApiError(404, {"message": f"Version {version} of group {group_id} not found"})
        changes: dict[str, dict[str, Any] | None] = {
            a: None for a in self.planner.apps if _under(a, group_id)
        }
        for spec in snapshot["apps"]:
            changes[spec["id"]] = spec
        group = {"id": group_id, "dependencies": snapshot.get("dependencies", [])}
        d = self._deploy(
            changes, self.service.now(), force=_flag(request, "force"), groups={group_id: group}
        )
        await self.service.flush()
        return _json({"deploymentId": d.id, "version": d.version})

    # -- events ----------------------------------------------------------------------------

    def _stream_event(self, event_type: str, request: web.Request) -> dict[str, Any]:
        """``event_stream_attached``/``_detached`` for a stream, naming its client as
        Marathon does (``remoteAddress``: the peer's address)."""
        return {
            "remoteAddress": request.remote,
            "eventType": event_type,
            "timestamp": iso(self.service.now()),
        }

    async def events(self, request: web.Request) -> web.StreamResponse:
        types: set[str] = set()
        for value in request.query.getall("event_type", []):
            types.update(t for t in value.split(",") if t)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = self.service.hub.subscribe()
        # As Marathon's HttpEventStreamHandleActor: attaching and detaching are events on
        # the bus, seen by every stream (this one included) whose event_type filter takes
        # them.
        self.service.hub.publish(self._stream_event("event_stream_attached", request))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    await response.write(b"\n")  # keeps proxies and clients from timing out
                    continue
                if event is None:
                    break  # overflowed or shutting down
                if types and event["eventType"] not in types:
                    continue
                await response.write(_sse(event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.service.hub.unsubscribe(queue)
            self.service.hub.publish(self._stream_event("event_stream_detached", request))
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['eventType']}\ndata: {_dumps(event)}\n\n".encode()


def _parent_of(path_id: str) -> str:
    return path_id.rsplit("/", 1)[0] or "/"


def _label_match(labels: dict[str, str], selector: str) -> bool:
    for term in selector.split(","):
        term = term.strip()
        if "==" in term:
            k, v = term.split("==", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif term and term not in labels:
            return False
    return True


def _flatten(
    body: dict[str, Any],
    group_id: str,
    role: str,
    specs: dict[str, dict[str, Any]],
    groups: dict[str, dict[str, Any] | None],
    path: str = "",
) -> None:
    """Collects the apps (normalized, ids resolved in their group) and groups of a group
    definition, nested groups included; errors carry their JSON path."""
    for key in body:
        if key not in ("id", "apps", "groups", "dependencies", "version", "pods", "enforceRole"):
            raise Invalid([{"path": f"{path}/{key}", "errors": ["unknown field"]}])
    if body.get("pods"):
        raise Invalid([{"path": f"{path}/pods", "errors": ["pods are not supported"]}])
    deps = body.get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(x, str) for x in deps):
        raise Invalid([{"path": f"{path}/dependencies", "errors": ["must be a list of ids"]}])
    group_deps = [canonical_id(x, _parent_of(group_id)) for x in deps]
    groups[group_id] = {"id": group_id, "dependencies": group_deps}
    apps = body.get("apps") or []
    if not isinstance(apps, list):
        raise Invalid([{"path": f"{path}/apps", "errors": ["must be a list"]}])
    for i, raw in enumerate(apps):
        try:
            spec = normalize_app(raw, base=group_id, role=role)
        except Invalid as e:
            raise Invalid(
                [{"path": f"{path}/apps({i}){d['path']}", "errors": d["errors"]} for d in e.details]
            ) from None
        if not _under(spec["id"], group_id):
            raise Invalid([{"path": f"{path}/apps({i})/id", "errors": ["not inside the group"]}])
        specs[spec["id"]] = spec
    subgroups = body.get("groups") or []
    if not isinstance(subgroups, list):
        raise Invalid([{"path": f"{path}/groups", "errors": ["must be a list"]}])
    for i, sub in enumerate(subgroups):
        if not isinstance(sub, dict) or not isinstance(sub.get("id"), str):
            raise Invalid([{"path": f"{path}/groups({i})/id", "errors": ["a group needs an id"]}])
        sub_id = canonical_id(sub["id"], group_id)
        errors = id_errors(sub_id)
        if errors or not _under(sub_id, group_id):
            raise Invalid(
                [{"path": f"{path}/groups({i})/id", "errors": errors or ["not inside the group"]}]
            )
        _flatten(sub, sub_id, role, specs, groups, f"{path}/groups({i})")
