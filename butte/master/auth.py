"""Who may call the master: HTTP Basic authentication per realm, as Mesos' flags turn it on.

Realms, by path (also under ``/master/...``) and method:

* ``frameworks`` (``--authenticate_frameworks``, also spelled
  ``--authenticate_http_frameworks``): the scheduler API ``/api/v1/scheduler``. A framework
  then acts only as its authenticated principal (`framework_principal_error`).
* ``agents`` (``--authenticate_agents``): the agents' WebSocket.
* ``readwrite`` (``--authenticate_http_readwrite``): the operator API ``/api/v1`` and every
  request that is not a GET or HEAD (``/teardown``, ``PUT /weights`` ...).
* ``readonly`` (``--authenticate_http_readonly``): every other GET: ``/state``, the metrics,
  ``/files``, the web UI.

``/health`` and ``/version`` are always open (load balancers and pymesos' version probe use
them). Credentials come from ``--http_credentials``, else ``--credentials``
(`butte.core.auth`). A request without valid credentials gets 401 with
``WWW-Authenticate: Basic realm="<Mesos' realm name>"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from butte.core import internal, resource_ops
from butte.core.auth import authenticated_principal
from butte.core.messages import SchedulerCall
from butte.core.resources import ResourceError, Resources
from butte.master.acls import Acls

# Mesos' realm names, shown in the WWW-Authenticate challenge.
REALM_NAMES = {
    "frameworks": "mesos-master-scheduler",
    "agents": "mesos-master-agent",
    "readwrite": "mesos-master-readwrite",
    "readonly": "mesos-master-readonly",
}
_OPEN = frozenset({"/health", "/version"})


@dataclass(frozen=True)
class AuthConfig:
    """Which realms require credentials, and the known principals' secrets."""

    credentials: Mapping[str, str] = field(default_factory=dict)
    frameworks: bool = False
    agents: bool = False
    readwrite: bool = False
    readonly: bool = False

    def enabled(self, realm: str) -> bool:
        return bool(getattr(self, realm))

    @property
    def any(self) -> bool:
        return self.frameworks or self.agents or self.readwrite or self.readonly


def realm_of(path: str, method: str) -> str | None:
    """The realm a request belongs to (module docstring); None for the open endpoints."""
    if path.startswith("/master/"):
        path = path[len("/master") :]
    path = path.rstrip("/") or "/"
    if path in _OPEN:
        return None
    if path == "/api/v1/scheduler" or path.startswith("/api/v1/scheduler/"):
        return "frameworks"
    if path == internal.AGENT_PATH:
        return "agents"
    if path.startswith("/api/v1") or method not in ("GET", "HEAD"):
        return "readwrite"
    return "readonly"


@dataclass(frozen=True)
class Refusal:
    """A 401 answer: the message and the challenge header."""

    message: str
    headers: dict[str, str]


class Authenticator:
    """Checks requests against an `AuthConfig` (see the module docstring)."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        # Valid Authorization values -> their principal: a framework sends the same header
        # with every call, so it is decoded and compared once (credentials never change).
        self._known: dict[str, str] = {}

    def _principal(self, authorization: str | None) -> str | None:
        if authorization is None:
            return None
        principal = self._known.get(authorization)
        if principal is None:
            principal = authenticated_principal(authorization, self.config.credentials)
            if principal is not None:
                if len(self._known) >= 1024:
                    self._known.clear()
                self._known[authorization] = principal
        return principal

    def check(
        self, path: str, method: str, authorization: str | None
    ) -> tuple[str | None, Refusal | None]:
        """(the authenticated principal or None, a refusal or None) for one request."""
        realm = realm_of(path, method)
        if realm is None or not self.config.enabled(realm):
            return None, None
        principal = self._principal(authorization)
        if principal is None:
            challenge = f'Basic realm="{REALM_NAMES[realm]}"'
            message = "Unauthorized: this endpoint needs valid HTTP Basic credentials"
            return None, Refusal(message, {"WWW-Authenticate": challenge})
        return principal, None

    def scheduler_principal(self, authorization: str | None) -> tuple[bool, str | None]:
        """For the scheduler API's lean path: (allowed, principal). Not allowed means the
        request must go the full way, where it gets its 401."""
        if not self.config.frameworks:
            return True, None
        principal = self._principal(authorization)
        return principal is not None, principal


def framework_principal_error(
    call: SchedulerCall, principal: str | None, known_principal: str | None | bool
) -> str | None:
    """Why an authenticated framework may not make ``call``, or None: the message of Mesos'
    400 answer.

    ``principal`` is the authenticated one (None: authentication is off); ``known_principal``
    is the principal the named framework registered with, or False when the master does
    not know that framework. A SUBSCRIBE is refused only for a ``FrameworkInfo.principal``
    other than the authenticated one (Mesos' ``validation::scheduler::call::validate``); one
    that names another principal's framework gets to the core, which refuses it on the
    stream ("Changing framework's principal is not allowed.").
    """
    if principal is None:
        return None
    if call.type == "SUBSCRIBE" and call.subscribe is not None:
        claimed = call.subscribe.framework_info.principal
        if claimed is not None and claimed != principal:
            return (
                f"Failed to validate scheduler::Call: Authenticated principal '{principal}' "
                f"does not match principal '{claimed}' set in `FrameworkInfo`"
            )
        return None
    if known_principal is not False and known_principal != principal:
        return (
            f"Authenticated principal '{principal}' does not match principal "
            f"'{known_principal or ''}' set in `FrameworkInfo`"
        )
    return None


def agent_registration_refusal(
    acls: Acls, principal: str | None, info: internal.AgentInfo
) -> str | None:
    """Why an agent (authenticated as ``principal``, None without --authenticate_agents) may
    not (re-)register, or None; Mesos' ``ActionObject::agentRegistration``: the
    ``register_agents`` ACL (object ANY), and ``reserve_resources`` for the role of every
    static reservation it declares (it reserves them as its principal). The message is
    Mesos' less the list of resources, short enough for a WebSocket close frame."""
    if acls.unrestricted("register_agents") and acls.unrestricted("reserve_resources"):
        return None  # nothing to parse or look up per registration
    verb = "reregister" if info.id is not None else "register"
    who = f"with principal '{principal}'" if principal is not None else "without a principal"
    if not acls.allowed("register_agents", principal, None):
        return f"Not authorized to {verb} agent {who}"
    try:
        total = Resources.from_json(info.resources)
    except ResourceError:
        return None  # the core refuses the agent for these resources
    for role in sorted(resource_ops.declared(total).roles() - {"*"}):
        if not acls.allowed("reserve_resources", principal, role):
            return f"Not authorized to {verb} agent reserving for role '{role}' {who}"
    return None
