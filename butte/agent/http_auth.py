"""Who may call the agent: HTTP Basic per realm and executor tokens, as Mesos' agent flags
turn them on.

Realms, by path (also under ``/slave(1)/...``) and method:

* ``executor`` (``--authenticate_http_executors``): the executor API ``/api/v1/executor``.
  A call needs ``Authorization: Bearer <token>``, the token the agent signed for that
  executor with ``--executor_secret_key`` (`butte.core.jwt`, handed over in
  ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``), and is accepted only for the framework, executor
  and container the token names (`executor_call_problem`): 401 without a valid token, 403
  for another executor's calls.
* ``readwrite`` (``--authenticate_http_readwrite``): the operator API ``/api/v1`` and every
  request that is not a GET or HEAD.
* ``readonly`` (``--authenticate_http_readonly``): every other GET: ``/state``, ``/flags``,
  ``/metrics/snapshot``, ``/files/*``, ``/containers``, ``/monitor/statistics``.

``/health`` and ``/version`` are always open. Credentials come from ``--http_credentials``
(Mesos' JSON or text form, `butte.core.auth`). A request without valid credentials gets 401
with ``WWW-Authenticate: Basic realm="mesos-agent-readonly"`` (or ``-readwrite``); the
authenticated principal is left in ``request["principal"]`` for ``--acls``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from butte import daemon_log
from butte.core import jwt
from butte.core.auth import authenticated_principal
from butte.master import view_acls
from butte.master.acls import Acls
from butte.master.view_acls import Viewer

REALM_NAMES = {
    "executor": "mesos-agent-executor",
    "readwrite": "mesos-agent-readwrite",
    "readonly": "mesos-agent-readonly",
}
_OPEN = frozenset({"/health", "/version"})
_EXECUTOR_PATH = "/api/v1/executor"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class AgentAuth:
    """The agent's authentication and authorization settings (from its flags)."""

    credentials: Mapping[str, str] = field(default_factory=dict)
    readonly: bool = False
    readwrite: bool = False
    executors: bool = False
    # --executor_secret_key: signs executor tokens (None: executors get none).
    executor_key: bytes | None = None
    acls: Acls = field(default_factory=Acls)

    @property
    def any_basic(self) -> bool:
        return self.readonly or self.readwrite


def realm_of(path: str, method: str) -> str | None:
    """The realm of a request (module docstring); None for the open endpoints."""
    if path.startswith("/slave(1)/"):
        path = path[len("/slave(1)") :]
    path = path.rstrip("/") or "/"
    if path in _OPEN:
        return None
    if path == _EXECUTOR_PATH:
        return "executor"
    if path.startswith("/api/v1") or method not in ("GET", "HEAD"):
        return "readwrite"
    return "readonly"


def challenge(realm: str, message: str) -> web.Response:
    """A 401 with the realm's challenge (never echoing what was sent)."""
    scheme = "Bearer" if realm == "executor" else "Basic"
    return web.Response(
        status=401,
        text=message,
        headers={"WWW-Authenticate": f'{scheme} realm="{REALM_NAMES[realm]}"'},
    )


def basic_middleware(auth: AgentAuth) -> Middleware:
    """An aiohttp middleware enforcing the readonly and readwrite realms."""
    known: dict[str, str] = {}  # Authorization value -> principal (credentials are fixed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        realm = realm_of(request.path, request.method)
        if realm is None or realm == "executor" or not getattr(auth, realm):
            return await handler(request)
        header = request.headers.get("Authorization")
        principal = known.get(header) if header else None
        if principal is None:
            principal = authenticated_principal(header, auth.credentials)
            if principal is None:
                return challenge(realm, "Unauthorized: this endpoint needs valid credentials")
            if len(known) >= 1024:
                known.clear()
            known[header or ""] = principal
        request["principal"] = principal
        return await handler(request)

    return middleware


def state_viewer(
    acls: Acls,
    request: web.Request,
    framework_user: Callable[[str], str | None],
    roles: bool = False,
) -> Viewer | None:
    """The caller's view of this agent's state under ``--acls`` (None: it may see
    everything, the default: no per-object cost). ``roles``: ``view_roles`` narrows it too
    (GET_OPERATIONS, as Mesos' agent filters operations by their resources' roles)."""
    if not view_acls.restricted(acls, roles):
        return None
    return Viewer(acls, request.get("principal"), framework_user, roles)


def executor_token(key: bytes, framework_id: str, executor_id: str, container_id: str) -> str:
    """The token an executor is given (``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``)."""
    return jwt.encode(jwt.executor_claims(framework_id, executor_id, container_id), key)


def executor_call_problem(
    auth: AgentAuth,
    authorization: str | None,
    framework_id: str,
    executor_id: str,
    container_of: Callable[[str, str], str | None],
) -> web.Response | None:
    """None when an executor API call may go on; else its 401/403 answer.

    ``container_of(framework_id, executor_id)`` is the container the agent runs that
    executor in now (None: no such executor; the core then answers the call itself)."""
    if not auth.executors:
        return None
    token = jwt.bearer_token(authorization)
    if token is None or auth.executor_key is None:
        return challenge("executor", "Unauthorized: the executor API needs a Bearer token")
    try:
        claims = jwt.decode(token, auth.executor_key)
    except jwt.JwtError as e:
        return challenge("executor", f"Unauthorized: {e}")
    if claims.get("fid") != framework_id or claims.get("eid") != executor_id:
        return web.Response(status=403, text="Forbidden: the token was issued to another executor")
    container = container_of(framework_id, executor_id)
    if container is not None and claims.get("cid") != container:
        return web.Response(status=403, text="Forbidden: the token was issued to another container")
    return None


_SANDBOX_OWNER = re.compile(r"/frameworks/([^/]+)/executors/")


def sandbox_middleware(acls: Acls, framework_user: Callable[[str], str | None]) -> Middleware:
    """An aiohttp middleware checking ``access_sandboxes`` on ``/files/*``: a sandbox path
    (``.../frameworks/<id>/executors/...``) is served only to a principal the ACLs let read
    that framework's user's sandboxes (403 otherwise). Added only when the ACLs restrict it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/slave(1)/"):
            path = path[len("/slave(1)") :]
        # /files/debug: get_endpoints guards it; the agent's own log (/slave/log):
        # access_mesos_logs does (butte.agent.files), as in Mesos.
        raw = request.query.get("path", "")
        if path.startswith("/files/") and path != "/files/debug" and daemon_log.find(raw) is None:
            owner = _SANDBOX_OWNER.search(raw)
            user = framework_user(owner.group(1)) if owner is not None else None
            principal = request.get("principal")
            if not acls.allowed("access_sandboxes", principal, user):
                who = principal or "an unauthenticated principal"
                return web.Response(
                    status=403, text=f"Forbidden: {who} may not access this sandbox"
                )
        return await handler(request)

    return middleware
