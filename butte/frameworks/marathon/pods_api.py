"""The ``/v2/pods`` routes of Marathon's REST API over `pods.PodManager` (docs/marathon.md
"Pods"). Answers as Marathon's PodsResource gives them: 201 with ``Location`` and
``Marathon-Deployment-Id`` on create, 200 (201 when it created the pod) with the deployment
header on PUT, 202 on DELETE, 404 for unknown pods, instances and versions, 409 for a taken
id or a pod in a deployment (unless ``force=true``), 422 with ``details`` for an invalid
definition.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from aiohttp import web

from butte.frameworks.marathon.planner import ApiError, Planner
from butte.frameworks.marathon.pods import PodManager
from butte.frameworks.marathon.pods_def import normalize_pod

DEPLOYMENT_HEADER = "Marathon-Deployment-Id"
_encode = msgspec.json.Encoder().encode


class PodShell(Protocol):
    """What the pod routes need from the service (`main.Service`)."""

    @property
    def pods(self) -> PodManager: ...

    @property
    def planner(self) -> Planner: ...

    def now(self) -> float: ...

    async def flush(self) -> None: ...


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, headers=headers, content_type="application/json"
    )


def _force(request: web.Request, name: str = "force") -> bool:
    """A boolean query parameter (``force``, ``wipe``); 400 for another value."""
    value = request.query.get(name, "false").strip().lower()
    if value not in ("true", "false", "1", "0", ""):
        raise ApiError(400, {"message": f"query parameter {name}={value!r} is not a boolean"})
    return value in ("true", "1")


def _not_found(pod_id: str) -> ApiError:
    return ApiError(404, {"message": f"Pod '{pod_id}' does not exist"})


class PodRoutes:
    """``/v2/pods`` and ``/v2/pods/{id}[::status|::versions[/v]|::instances[/{id}]]``."""

    def __init__(self, service: PodShell, body: Any) -> None:
        self.service = service
        self._body = body  # api._body: Marathon's 400 for malformed JSON

    @property
    def pods(self) -> PodManager:
        return self.service.pods

    def add(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/v2/pods", self.root)
        router.add_route("*", "/v2/pods/{tail:.+}", self.path)

    def _canonical(self, raw: str) -> str:
        return "/" + raw.strip("/")

    async def _spec(self, request: web.Request, path_id: str | None) -> dict[str, Any]:
        return normalize_pod(await self._body(request), self.service.planner.config.role, path_id)

    async def root(self, request: web.Request) -> web.StreamResponse:
        now = self.service.now()
        if request.method == "GET":
            return _json([self.pods.pod_json(p) for p in sorted(self.pods.pods)])
        if request.method == "POST":
            spec = await self._spec(request, None)
            if spec["id"] in self.service.planner.apps:
                raise ApiError(409, {"message": f"An app with id {spec['id']} already exists."})
            d = self.pods.create(spec, now, self.pods.new_version(now))
            self._event(request, "created", now)
            await self.service.flush()
            headers = {"Location": f"/v2/pods{spec['id']}", DEPLOYMENT_HEADER: d.id}
            return _json(self.pods.pod_json(spec["id"]), 201, headers)
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])

    async def path(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        now = self.service.now()
        raw_id, sep, action = tail.partition("::")
        pod_id = self._canonical(raw_id)
        if sep and not raw_id.strip("/"):  # /v2/pods/::status
            if action != "status" or request.method != "GET":
                raise ApiError(404, {"message": f"no such resource: /v2/pods/{tail}"})
            return _json([self.pods.status_json(p, now) for p in sorted(self.pods.pods)])
        if not sep:
            return await self._pod(request, pod_id, now)
        if pod_id not in self.pods.pods:
            raise _not_found(pod_id)
        if action == "status":
            self._only(request, "GET")
            return _json(self.pods.status_json(pod_id, now))
        if action == "versions":
            self._only(request, "GET")
            return _json(sorted(self.pods.versions.get(pod_id, {})))
        if action.startswith("versions/"):
            self._only(request, "GET")
            version = self.pods.versions.get(pod_id, {}).get(action[len("versions/") :])
            if version is None:
                raise ApiError(404, {"message": f"Pod '{pod_id}' has no version {action[9:]}"})
            return _json(version)
        if action.startswith("instances/"):
            self._only(request, "DELETE")
            instance = action[len("instances/") :]
            wipe = _force(request, "wipe")
            (inst,) = self.pods.kill_instances(pod_id, [instance], now, wipe)
            rendered = self.pods.instance_json(inst, self.pods.pods[pod_id])
            await self.service.flush()
            return _json(rendered)
        if action == "instances":  # a JSON list of instance ids in the body
            self._only(request, "DELETE")
            ids = await self._body(request)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ApiError(422, {"message": "expected a JSON list of instance ids"})
            killed = self.pods.kill_instances(pod_id, ids, now, _force(request, "wipe"))
            pod = self.pods.pods[pod_id]
            await self.service.flush()
            return _json([self.pods.instance_json(inst, pod) for inst in killed])
        raise ApiError(404, {"message": f"no such resource: /v2/pods/{tail}"})

    def _event(self, request: web.Request, kind: str, now: float) -> None:
        # As api_post_event: the peer's address and the path as sent, without the query.
        self.pods.api_event(kind, request.remote or "", request.rel_url.raw_path, now)

    @staticmethod
    def _only(request: web.Request, method: str) -> None:
        if request.method != method:
            raise web.HTTPMethodNotAllowed(request.method, [method])

    async def _pod(self, request: web.Request, pod_id: str, now: float) -> web.StreamResponse:
        if request.method == "GET":
            if pod_id not in self.pods.pods:
                raise _not_found(pod_id)
            return _json(self.pods.pod_json(pod_id))
        if request.method == "PUT":
            spec = await self._spec(request, pod_id)
            if spec["id"] in self.service.planner.apps:
                raise ApiError(409, {"message": f"An app with id {spec['id']} already exists."})
            d, created = self.pods.update(spec, now, self.pods.new_version(now), _force(request))
            self._event(request, "created" if created else "updated", now)
            await self.service.flush()
            headers = {DEPLOYMENT_HEADER: d.id}
            if created:
                headers["Location"] = f"/v2/pods{pod_id}"
            return _json(self.pods.pod_json(pod_id), 201 if created else 200, headers)
        if request.method == "DELETE":
            d = self.pods.delete(pod_id, now, self.pods.new_version(now), _force(request))
            self._event(request, "deleted", now)
            await self.service.flush()
            return web.Response(status=202, headers={DEPLOYMENT_HEADER: d.id})
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "DELETE"])
