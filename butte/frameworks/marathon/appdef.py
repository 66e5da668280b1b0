"""Marathon app definitions: validation and normalization (pure, no I/O).

`normalize_app` turns a Marathon JSON app definition into the canonical form the planner
keeps (camelCase keys as Marathon renders them, every default filled in) or raises
`Invalid` with Marathon's list of offending fields (``[{"path": "/cpus", "errors": [...]}]``,
answered as 422). Fields butte cannot honour are refused, never silently dropped: secrets,
external volumes, IP-per-task (named container networks), port mappings of anything but a
DOCKER container on the ``container/bridge`` network. A ``container`` with an image runs
through the agent's container support (docs/docker.md, docs/containers.md); a MESOS
container without an image carries only volumes.

An app with a local persistent volume (``persistent: {size}``) is resident
(`is_resident`, docs/marathon.md "Stateful apps"): Marathon's rules for those apply here
(`_resident_rules`, `resident_update_problems`).

Networking (docs/marathon.md, "Docker BRIDGE networking"): both Marathon 1.4's
``container.docker.network: BRIDGE`` with ``container.docker.portMappings`` and 1.5's
``networks: [{"mode": "container/bridge"}]`` with ``container.portMappings`` give the same
canonical form, Marathon 1.5's: ``networks`` names the bridge, the mappings are
``container.portMappings``, ``container.docker`` has no ``network`` and ``portDefinitions`` is
empty (`render_app` leaves it out, as Marathon renders a bridged app). Host-networked apps keep
the form they always had (``docker.network`` HOST or NONE, no ``networks``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from butte.frameworks.marathon.constraints import validate_constraints

ID_SEGMENT = re.compile(
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$"
)
# Path segments the REST API uses after an app id, so no app id may contain them.
RESERVED_SEGMENTS = frozenset({"restart", "tasks", "versions", "delay"})
MAX_INSTANCES = 100_000
MAX_SCALAR = 1e9
HEALTH_PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"}
)
KILL_SELECTIONS = ("YOUNGEST_FIRST", "OLDEST_FIRST")
READINESS_FIELDS = frozenset(
    {
        "name",
        "protocol",
        "path",
        "portName",
        "intervalSeconds",
        "timeoutSeconds",
        "httpStatusCodesForReady",
        "preserveLastResponse",
    }
)
# Marathon's ``ResourceLimits``: the names that may have a limit, and the word for none.
RESOURCE_LIMIT_NAMES = ("cpus", "mem")
UNLIMITED = "unlimited"
DEFAULT_UPGRADE = {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}
DEFAULT_UNREACHABLE = {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
# Marathon's defaults for a resident app (UpgradeStrategy.forResidentTasks, AppResidency).
RESIDENT_UPGRADE = {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}
RESIDENCY = {"relaunchEscalationTimeoutSeconds": 3600, "taskLostBehavior": "WAIT_FOREVER"}
_TASK_LOST_BEHAVIORS = ("WAIT_FOREVER", "RELAUNCH_AFTER_TIMEOUT")

# Fields the server computes; accepted in a request (a GET's output sent back) and ignored.
READ_ONLY = frozenset(
    {
        "tasks",
        "tasksRunning",
        "tasksStaged",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "lastTaskFailure",
        "taskStats",
        "versionInfo",
        "readinessCheckResults",
        "version",
    }
)
# Marathon fields butte does not implement: refused unless empty.
UNSUPPORTED = {
    "secrets": "secrets are not supported",
    "ipAddress": "IP-per-task is not supported",
    "storeUrls": "storeUrls is not supported",
    "taskRateLimit": "taskRateLimit was removed in Marathon 0.7",
}
KNOWN = frozenset(
    {
        "id",
        "cmd",
        "args",
        "user",
        "cpus",
        "mem",
        "disk",
        "gpus",
        "instances",
        "env",
        "labels",
        "uris",
        "fetch",
        "ports",
        "portDefinitions",
        "requirePorts",
        "constraints",
        "acceptedResourceRoles",
        "role",
        "healthChecks",
        "readinessChecks",
        "upgradeStrategy",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "killSelection",
        "taskKillGracePeriodSeconds",
        "unreachableStrategy",
        "dependencies",
        "container",
        "executor",
        "networks",
        "resourceLimits",
        "residency",
    }
)


class Invalid(Exception):
    """A definition with errors: ``details`` is Marathon's list of ``{path, errors}``."""

    def __init__(self, details: list[dict[str, Any]], message: str = "Object is not valid") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class _Errors:
    """Collects errors by JSON path, in the order found."""

    def __init__(self) -> None:
        self.by_path: dict[str, list[str]] = {}

    def add(self, path: str, error: str) -> None:
        self.by_path.setdefault(path, []).append(error)

    def raise_if_any(self) -> None:
        if self.by_path:
            raise Invalid([{"path": p, "errors": e} for p, e in self.by_path.items()])


def canonical_id(raw: Any, base: str = "/") -> str:
    """An absolute path id (``web`` under ``/team`` -> ``/team/web``), without checks;
    ``.`` and ``..`` segments are resolved."""
    text = str(raw).strip()
    parts = [] if text.startswith("/") else [p for p in base.split("/") if p]
    for seg in text.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    return "/" + "/".join(parts)


def id_errors(path_id: str) -> list[str]:
    """What is wrong with an absolute path id (empty when valid)."""
    segments = [s for s in path_id.split("/") if s]
    if not segments:
        return ["the root group cannot be an app"]
    out = []
    for seg in segments:
        if not ID_SEGMENT.match(seg):
            out.append(
                f"'{seg}' must contain only lowercase letters, digits, hyphens and dots, "
                "and start and end with a letter or digit"
            )
        elif seg in RESERVED_SEGMENTS:
            out.append(f"'{seg}' is reserved by the REST API and cannot be part of an id")
    return out


def _number(errors: _Errors, path: str, value: Any, minimum: float, maximum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        errors.add(path, f"must be a number, got {value!r:.100}")
        return minimum
    # Compared before any float(): a JSON integer of 400 digits is no float at all.
    if value < minimum or value > maximum:
        errors.add(path, f"got {value!r:.30}, expected between {minimum:g} and {maximum:g}")
        if isinstance(value, int) and abs(value) > maximum:
            return maximum if value > 0 else minimum  # what later checks look at
    return float(value)


def _integer(errors: _Errors, path: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"must be an integer, got {value!r}")
        return minimum
    if value < minimum or value > maximum:
        errors.add(path, f"got {value}, expected between {minimum} and {maximum}")
    return value


def _str_map(errors: _Errors, path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        errors.add(path, "must be an object of strings")
        return {}
    out = {}
    for k, v in value.items():
        if not isinstance(v, str):
            errors.add(f"{path}/{k}", f"must be a string, got {v!r}")
        else:
            out[str(k)] = v
    return out


def _str_list(errors: _Errors, path: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(path, "must be a list of strings")
        return []
    return list(value)


def _bool(errors: _Errors, path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        errors.add(path, f"must be a boolean, got {value!r}")
        return False
    return value


def _resource_limits(
    errors: _Errors, raw: Any, cpus: float, mem: float
) -> dict[str, float | str] | None:
    """Marathon 1.10's ``resourceLimits`` (``AppValidation.validResourceLimits``): ``cpus``
    and ``mem`` each ``"unlimited"`` or a number at least the app's request, kept as given
    (cpus before mem); None when there are none (absent, null or ``{}``). The tasks get
    them as ``TaskInfo.limits`` (`launch.task_info`)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.add("/resourceLimits", "must be an object with cpus and/or mem")
        return None
    for key in raw:
        if key not in RESOURCE_LIMIT_NAMES:
            # Marathon's type has only these two; butte refuses what it would not enforce.
            errors.add(f"/resourceLimits/{key}", "unknown field: only cpus and mem have limits")
    out: dict[str, float | str] = {}
    for name, request in (("cpus", cpus), ("mem", mem)):
        value = raw.get(name)
        path = f"/resourceLimits/{name}"
        if value is None:
            continue
        if isinstance(value, str):
            if value != UNLIMITED:
                errors.add(
                    path,
                    f"'{value[:100]}' is an invalid resource limit. "
                    "It must be 'unlimited' or a number",
                )
            out[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.add(
                path,
                f"{value!r:.100} is an invalid resource limit. It must be 'unlimited' or a number",
            )
            continue
        # Compared before any float(): a JSON integer of 400 digits is no float at all.
        if (isinstance(value, float) and math.isnan(value)) or value > MAX_SCALAR:
            errors.add(path, f"got {value!r:.30}, expected 'unlimited' or at most {MAX_SCALAR:g}")
            continue
        if value < request:
            errors.add(
                path,
                "resource limit must be greater than or equal to requested resource "
                f"({float(request)!r})",
            )
        out[name] = float(value)
    return out or None


def _port_definitions(errors: _Errors, app: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "ports" in app and "portDefinitions" in app and app["ports"] and app["portDefinitions"]:
        errors.add("/ports", "give either ports or portDefinitions, not both")
    if "portDefinitions" in app:
        raw = app["portDefinitions"]
        if not isinstance(raw, list):
            errors.add("/portDefinitions", "must be a list")
            return []
        out = []
        for i, pd in enumerate(raw):
            path = f"/portDefinitions({i})"
            if not isinstance(pd, Mapping):
                errors.add(path, "must be an object")
                continue
            for key in pd:
                if key not in ("port", "protocol", "name", "labels"):
                    errors.add(f"{path}/{key}", "unknown field")
            port = _integer(errors, f"{path}/port", pd.get("port", 0), 0, 65535)
            protocol = pd.get("protocol", "tcp")
            if protocol not in ("tcp", "udp", "udp,tcp", "tcp,udp"):
                errors.add(f"{path}/protocol", "must be tcp, udp or udp,tcp")
            entry: dict[str, Any] = {"port": port, "protocol": protocol}
            if pd.get("name") is not None:
                if not isinstance(pd["name"], str) or not re.fullmatch(r"[a-z0-9-]+", pd["name"]):
                    errors.add(f"{path}/name", "must match [a-z0-9-]+")
                entry["name"] = pd["name"]
            if pd.get("labels"):
                entry["labels"] = _str_map(errors, f"{path}/labels", pd["labels"])
            out.append(entry)
        return out
    if "ports" in app:
        raw = app["ports"]
        if not isinstance(raw, list):
            errors.add("/ports", "must be a list of integers")
            return []
        return [
            {"port": _integer(errors, f"/ports({i})", p, 0, 65535), "protocol": "tcp"}
            for i, p in enumerate(raw)
        ]
    # Marathon's default: one port, any free one.
    return [{"port": 0, "protocol": "tcp", "name": "default"}]


def artifact(
    errors: _Errors, path: str, raw: Any, dest_keys: tuple[str, ...]
) -> dict[str, Any] | None:
    """One fetched URI (an app's ``fetch`` item, a pod container's ``artifacts`` item):
    ``uri`` with ``executable``, ``extract`` and ``cache`` filled in, and the sandbox path
    it is saved as under the first of ``dest_keys`` (any of them is taken); None when it
    is no such object (the error is added)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("uri"), str) or not raw["uri"]:
        errors.add(path, "must be an object with a non-empty uri")
        return None
    entry: dict[str, Any] = {"uri": raw["uri"]}
    for key in raw:
        if key not in ("uri", "executable", "extract", "cache", *dest_keys):
            errors.add(f"{path}/{key}", "unknown field")
    for key, default in (("executable", False), ("extract", True), ("cache", False)):
        entry[key] = _bool(errors, f"{path}/{key}", raw.get(key, default))
    dest = next((raw[k] for k in dest_keys if raw.get(k) not in (None, "")), None)
    if dest is not None:
        if not isinstance(dest, str) or dest.startswith("/") or ".." in dest.split("/"):
            errors.add(f"{path}/{dest_keys[0]}", "must be a relative path inside the sandbox")
        else:
            entry[dest_keys[0]] = dest
    return entry


def user_name(errors: _Errors, path: str, raw: Any) -> str | None:
    """An optional user to run tasks as (their CommandInfo.user: an agent with
    ``--switch_user`` runs them as that user); None when not given."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?", raw):
        errors.add(path, "must be a user name")
        return None
    return raw


def _fetch(errors: _Errors, app: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, uri in enumerate(_str_list(errors, "/uris", app.get("uris") or [])):
        extract = uri.endswith((".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip"))
        out.append({"uri": uri, "executable": False, "extract": extract, "cache": False})
        if not uri:
            errors.add(f"/uris({i})", "must not be empty")
    raw = app.get("fetch") or []
    if not isinstance(raw, list):
        errors.add("/fetch", "must be a list")
        return out
    for i, f in enumerate(raw):
        entry = artifact(errors, f"/fetch({i})", f, ("outputFile", "destPath"))
        if entry is not None:
            out.append(entry)
    return out


def _readiness_checks(
    errors: _Errors, raw: Any, ports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Marathon's readiness checks: an HTTP GET the scheduler itself sends to a task's named
    port until one of ``httpStatusCodesForReady`` answers (`Planner.readiness`)."""
    if not isinstance(raw, list):
        errors.add("/readinessChecks", "must be a list")
        return []
    if len(raw) > 1:
        errors.add("/readinessChecks", "at most one readiness check per app")
    names = [p.get("name") for p in ports]
    out = []
    for i, rc in enumerate(raw):
        path = f"/readinessChecks({i})"
        if not isinstance(rc, Mapping):
            errors.add(path, "must be an object")
            continue
        for key in rc:
            if key not in READINESS_FIELDS:
                errors.add(f"{path}/{key}", "unknown field")
        name = rc.get("name", "readinessCheck")
        if not isinstance(name, str) or not name:
            errors.add(f"{path}/name", "must be a non-empty string")
        protocol = rc.get("protocol", "HTTP")
        if protocol not in ("HTTP", "HTTPS"):
            errors.add(f"{path}/protocol", "must be HTTP or HTTPS")
        url_path = rc.get("path", "/")
        if not isinstance(url_path, str) or not url_path.startswith("/"):
            errors.add(f"{path}/path", "must be an absolute URL path")
        port_name = rc.get("portName", "http")
        if port_name not in names:
            errors.add(
                f"{path}/portName", f"no port named {port_name!r} in portDefinitions {names}"
            )
        codes = rc.get("httpStatusCodesForReady", [200])
        if (
            not isinstance(codes, list)
            or not codes
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes)
            or not all(100 <= c <= 599 for c in codes)
        ):
            errors.add(f"{path}/httpStatusCodesForReady", "must be a list of HTTP status codes")
            codes = [200]
        entry = {
            "name": name,
            "protocol": protocol,
            "path": url_path,
            "portName": port_name,
            "intervalSeconds": _integer(
                errors, f"{path}/intervalSeconds", rc.get("intervalSeconds", 30), 1, 86400
            ),
            "timeoutSeconds": _integer(
                errors, f"{path}/timeoutSeconds", rc.get("timeoutSeconds", 10), 1, 86400
            ),
            "httpStatusCodesForReady": sorted(set(codes)),
            "preserveLastResponse": _bool(
                errors, f"{path}/preserveLastResponse", rc.get("preserveLastResponse", False)
            ),
        }
        if entry["timeoutSeconds"] > entry["intervalSeconds"]:
            errors.add(f"{path}/timeoutSeconds", "must not be longer than intervalSeconds")
        out.append(entry)
    return out


def _health_checks(errors: _Errors, raw: Any, n_ports: int) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        errors.add("/healthChecks", "must be a list")
        return []
    if len(raw) > 1:
        errors.add("/healthChecks", "at most one health check per app (Mesos runs one per task)")
    out = []
    for i, hc in enumerate(raw):
        path = f"/healthChecks({i})"
        if not isinstance(hc, Mapping):
            errors.add(path, "must be an object")
            continue
        known = {
            "protocol",
            "path",
            "portIndex",
            "port",
            "command",
            "gracePeriodSeconds",
            "intervalSeconds",
            "timeoutSeconds",
            "maxConsecutiveFailures",
            "delaySeconds",
            "ignoreHttp1xx",
        }
        for key in hc:
            if key not in known:
                errors.add(f"{path}/{key}", "unknown field")
        protocol = hc.get("protocol", "HTTP")
        if protocol not in HEALTH_PROTOCOLS:
            errors.add(f"{path}/protocol", f"must be one of {sorted(HEALTH_PROTOCOLS)}")
        entry: dict[str, Any] = {"protocol": protocol}
        entry["gracePeriodSeconds"] = _integer(
            errors, f"{path}/gracePeriodSeconds", hc.get("gracePeriodSeconds", 300), 0, 86400
        )
        entry["intervalSeconds"] = _integer(
            errors, f"{path}/intervalSeconds", hc.get("intervalSeconds", 60), 1, 86400
        )
        entry["timeoutSeconds"] = _integer(
            errors, f"{path}/timeoutSeconds", hc.get("timeoutSeconds", 20), 1, 86400
        )
        entry["maxConsecutiveFailures"] = _integer(
            errors, f"{path}/maxConsecutiveFailures", hc.get("maxConsecutiveFailures", 3), 0, 10000
        )
        entry["delaySeconds"] = _integer(
            errors, f"{path}/delaySeconds", hc.get("delaySeconds", 15), 0, 86400
        )
        if protocol == "COMMAND":
            cmd = hc.get("command")
            value = cmd.get("value") if isinstance(cmd, Mapping) else cmd
            if not isinstance(value, str) or not value:
                errors.add(f"{path}/command", "a COMMAND health check needs a command")
            entry["command"] = {"value": value}
        else:
            if hc.get("port") is not None and hc.get("portIndex") is not None:
                # Marathon's HealthCheckWithPort validator (port XOR portIndex), which
                # reports it on the health check itself.
                errors.add(path, "HealthCheck must specify either a port or a portIndex")
            elif hc.get("port") is not None:
                entry["port"] = _integer(errors, f"{path}/port", hc["port"], 1, 65535)
            else:
                raw_index = hc.get("portIndex")
                index = _integer(
                    errors, f"{path}/portIndex", 0 if raw_index is None else raw_index, 0, 1000
                )
                if index >= n_ports:
                    errors.add(
                        f"{path}/portIndex", f"index {index} but the app has {n_ports} ports"
                    )
                entry["portIndex"] = index
            if "HTTP" in protocol:
                p = hc.get("path", "/")
                if not isinstance(p, str) or not p.startswith("/"):
                    errors.add(f"{path}/path", "must be an absolute URL path")
                entry["path"] = p
                entry["ignoreHttp1xx"] = _bool(
                    errors, f"{path}/ignoreHttp1xx", hc.get("ignoreHttp1xx", False)
                )
        out.append(entry)
    return out


def _upgrade(errors: _Errors, raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        errors.add("/upgradeStrategy", "must be an object")
        return dict(DEFAULT_UPGRADE)
    for key in raw:
        if key not in DEFAULT_UPGRADE:
            errors.add(f"/upgradeStrategy/{key}", "unknown field")
    out = {
        key: _number(errors, f"/upgradeStrategy/{key}", raw.get(key, default), 0.0, 1.0)
        for key, default in DEFAULT_UPGRADE.items()
    }
    # Both in [0, 1] is all Marathon asks (SchedulingValidation); where they leave no room
    # to replace anything the planner allows one instance over capacity.
    return out


def unreachable_strategy(
    errors: _Errors, raw: Any, path: str = "/unreachableStrategy"
) -> dict[str, Any] | str:
    """An app's ``unreachableStrategy`` (a pod's ``scheduling.unreachableStrategy``, at
    ``path``): ``"disabled"`` or ``inactiveAfterSeconds`` <= ``expungeAfterSeconds``."""
    if raw == "disabled":
        return "disabled"
    if not isinstance(raw, Mapping):
        errors.add(path, 'must be "disabled" or an object')
        return dict(DEFAULT_UNREACHABLE)
    for key in raw:
        if key not in DEFAULT_UNREACHABLE:
            errors.add(f"{path}/{key}", "unknown field")
    out = {
        key: _integer(errors, f"{path}/{key}", raw.get(key, d), 0, 10**8)
        for key, d in DEFAULT_UNREACHABLE.items()
    }
    if out["expungeAfterSeconds"] < out["inactiveAfterSeconds"]:
        errors.add(path, "expungeAfterSeconds must be >= inactiveAfterSeconds")
    return out


def unreachable_after(strategy: dict[str, Any] | str) -> tuple[int, int]:
    """(inactiveAfterSeconds, expungeAfterSeconds) of a strategy; ``"disabled"`` is 0, 0."""
    if strategy == "disabled" or not isinstance(strategy, dict):
        return 0, 0
    return strategy["inactiveAfterSeconds"], strategy["expungeAfterSeconds"]


_NETWORKS = ("HOST", "BRIDGE", "NONE")
_VOLUME_MODES = ("RW", "RO")


def _container(errors: _Errors, raw: Any) -> dict[str, Any] | None:
    """The app's ``container`` in Marathon's canonical form: ``type`` DOCKER (run by the agent's
    Docker containerizer) or MESOS (an image run by the agent's own containerizer, or no image
    and only volumes), the image, Docker's network, parameters, ``forcePullImage`` and
    ``privileged``, and the volumes (`_volumes`); port mappings are `_networking`'s."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.add("/container", "must be an object")
        return None
    kind = raw.get("type", "DOCKER")
    if kind not in ("DOCKER", "MESOS"):
        errors.add("/container/type", "must be DOCKER or MESOS")
        return None
    for key in raw:
        if key not in ("type", "docker", "volumes", "portMappings") and raw[key]:
            errors.add(f"/container/{key}", "not supported by butte")
    docker = raw.get("docker") or {}
    if not isinstance(docker, Mapping):
        errors.add("/container/docker", "must be an object")
        return None
    image = docker.get("image")
    if image is None and kind == "MESOS":
        for key in docker:
            if docker[key]:
                errors.add(f"/container/docker/{key}", "only with an image")
        if not raw.get("volumes"):
            return None  # an empty MESOS container: the same as none
        return {"type": kind, "volumes": _volumes(errors, raw.get("volumes"), kind, False)}
    if not isinstance(image, str) or not image.strip():
        errors.add("/container/docker/image", "a container needs an image")
    out: dict[str, Any] = {"type": kind, "docker": {"image": image}}
    for key in docker:
        if key not in (
            "image",
            "network",
            "parameters",
            "forcePullImage",
            "privileged",
            "portMappings",
        ):
            if docker[key]:
                errors.add(f"/container/docker/{key}", "not supported by butte")
    network = docker.get("network") or "HOST"
    if kind == "DOCKER":
        if network == "USER":
            errors.add(
                "/container/docker/network",
                "USER networks (named container networks) are not supported by butte; "
                "use BRIDGE or HOST",
            )
        elif network not in _NETWORKS:
            errors.add("/container/docker/network", f"must be one of {list(_NETWORKS)}")
        params = docker.get("parameters") or []
        if not isinstance(params, list) or not all(
            isinstance(p, Mapping)
            and isinstance(p.get("key"), str)
            and isinstance(p.get("value"), str)
            for p in params
        ):
            errors.add("/container/docker/parameters", "must be a list of {key, value} strings")
            params = []
        out["docker"].update(
            network=network,
            parameters=[{"key": p["key"], "value": p["value"]} for p in params],
            forcePullImage=_bool(
                errors, "/container/docker/forcePullImage", docker.get("forcePullImage", False)
            ),
            privileged=_bool(
                errors, "/container/docker/privileged", docker.get("privileged", False)
            ),
        )
    else:
        for key in ("network", "parameters", "privileged"):
            if docker.get(key):
                errors.add(f"/container/docker/{key}", "only for DOCKER containers")
    out["volumes"] = _volumes(errors, raw.get("volumes"), kind, True)
    return out


def _volumes(errors: _Errors, raw: Any, kind: str, image: bool) -> list[dict[str, Any]]:
    """A container's ``volumes``: host paths (``containerPath``, ``hostPath``, ``mode``; a
    relative ``containerPath`` in the sandbox where there is no image) and local persistent
    volumes of a MESOS container (``containerPath``, ``mode`` RW, ``persistent``: a ``root``
    disk of ``size`` MiB). External and secret volumes are refused."""
    volumes = raw or []
    if not isinstance(volumes, list):
        errors.add("/container/volumes", "must be a list")
        return []
    out = []
    for i, v in enumerate(volumes):
        path = f"/container/volumes({i})"
        if not isinstance(v, Mapping) or not isinstance(v.get("containerPath"), str):
            errors.add(path, "a volume needs containerPath")
            continue
        mode = v.get("mode", "RW")
        if mode not in _VOLUME_MODES:
            errors.add(f"{path}/mode", "must be RW or RO")
        if v.get("persistent") is not None:
            out.append(_persistent_volume(errors, path, v, kind))
            continue
        if not isinstance(v.get("hostPath"), str) or set(v) - {"containerPath", "hostPath", "mode"}:
            errors.add(
                path,
                "only host-path (containerPath, hostPath, mode) and local persistent "
                "(containerPath, mode, persistent) volumes are supported",
            )
            continue
        if not image and v["containerPath"].startswith("/"):
            errors.add(
                f"{path}/containerPath",
                "without an image a volume's containerPath is a relative path in the sandbox",
            )
        out.append({"containerPath": v["containerPath"], "hostPath": v["hostPath"], "mode": mode})
    return out


def _persistent_volume(
    errors: _Errors, path: str, raw: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """A local persistent volume (Marathon's ``AppPersistentVolume``) in canonical form, with
    Marathon's AppValidation rules: a name without ``/`` in the sandbox, RW, and its
    `persistent_info`."""
    for key in raw:
        if key not in ("containerPath", "mode", "persistent") and raw[key] is not None:
            errors.add(f"{path}/{key}", "not with a persistent volume")
    if kind != "MESOS":
        errors.add(
            f"{path}/persistent",
            "local persistent volumes need a MESOS container: butte's Docker containerizer "
            "does not mount them",
        )
    name = raw["containerPath"]
    if name in ("", ".", "..") or "/" in name:
        errors.add(f"{path}/containerPath", 'value must not contain "/"')
    if raw.get("mode", "RW") != "RW":
        errors.add(f"{path}/mode", "a persistent volume is RW")
    return {
        "containerPath": name,
        "mode": "RW",
        "persistent": persistent_info(errors, f"{path}/persistent", raw["persistent"]),
    }


def persistent_info(errors: _Errors, here: str, info: Any) -> dict[str, Any]:
    """A persistent volume's ``persistent`` (Marathon's ``PersistentVolumeInfo``, an app's or
    a pod's) in canonical form: a positive ``size`` (MiB) on the agent's work disk
    (``root``), a part of a PATH disk (``path``) or a whole MOUNT disk (``mount``, of at most
    ``maxSize`` if given); ``path`` and ``mount`` volumes may be kept to disks whose root
    matches (``["path", "LIKE", regex]``)."""
    if not isinstance(info, Mapping):
        errors.add(here, "must be an object")
        info = {}
    for key in info:
        if key not in ("type", "size", "maxSize", "constraints", "profileName"):
            errors.add(f"{here}/{key}", "unknown field")
    disk_type = info.get("type") or "root"
    if disk_type not in PERSISTENT_TYPES:
        errors.add(f"{here}/type", f"must be one of {list(PERSISTENT_TYPES)}")
    if info.get("profileName") is not None:
        errors.add(f"{here}/profileName", "disk profiles (CSI) are not supported by butte")
    size = _integer(errors, f"{here}/size", info.get("size"), 1, 2**40)
    out: dict[str, Any] = {"type": disk_type, "size": size, "constraints": []}
    max_size = info.get("maxSize")
    if max_size is not None:
        if disk_type != "mount":
            errors.add(f"{here}/maxSize", "Only mount volumes can have maxSize")
        out["maxSize"] = _integer(errors, f"{here}/maxSize", max_size, 1, 2**40)
        if out["maxSize"] <= size:
            errors.add(f"{here}/maxSize", "Max size must be larger than size")
    constraints = info.get("constraints") or []
    if constraints and disk_type == "root":
        errors.add(f"{here}/constraints", "Constraints on root volumes are not supported")
    elif not isinstance(constraints, list):
        errors.add(f"{here}/constraints", "must be a list")
    else:
        for i, c in enumerate(constraints):
            out["constraints"].append(_volume_constraint(errors, f"{here}/constraints({i})", c))
    return out


PERSISTENT_TYPES = ("root", "path", "mount")


def _volume_constraint(errors: _Errors, path: str, raw: Any) -> list[str]:
    """Marathon's persistent volume constraint: ``["path", "LIKE" | "UNLIKE", regex]`` on
    the root of the disk the volume is made on."""
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or not all(isinstance(x, str) for x in raw)
        or raw[0] != "path"
    ):
        errors.add(path, 'Unsupported constraint: only ["path", "LIKE" or "UNLIKE", regex]')
        return ["path", "LIKE", ".*"]
    if raw[1] not in ("LIKE", "UNLIKE"):
        errors.add(path, "Operator must be one of LIKE, UNLIKE")
    try:
        re.compile(raw[2])
    except re.error:
        errors.add(path, "Invalid regular expression")
    return list(raw)


BRIDGE_NETWORKS = [{"mode": "container/bridge"}]
_NETWORK_MODES = ("container/bridge", "host", "container")
_PORT_MAPPING_FIELDS = frozenset(
    {"containerPort", "hostPort", "servicePort", "protocol", "name", "labels", "networkNames"}
)
_PROTOCOLS = ("tcp", "udp", "udp,tcp")
# Marathon's default when a bridged app gives no port mappings (``Apps.DefaultPortMappings``).
DEFAULT_PORT_MAPPING = {
    "containerPort": 0,
    "hostPort": 0,
    "servicePort": 0,
    "protocol": "tcp",
    "labels": {},
    "name": "default",
}


def is_bridged(spec: Mapping[str, Any]) -> bool:
    """Whether an app (canonical, or an update's fields) asks for Docker's bridge network
    in Marathon 1.5's form."""
    networks = spec.get("networks")
    return isinstance(networks, list) and any(
        isinstance(n, Mapping) and n.get("mode") == "container/bridge" for n in networks
    )


def _network_mode(errors: _Errors, raw: Mapping[str, Any]) -> str:
    """``host`` or ``container/bridge``: the app's network from ``networks`` (Marathon 1.5)
    or the deprecated ``container.docker.network`` (1.4; its HOST and NONE stay the
    container's own, `_container` checks them). Named container networks (``container``,
    Docker's USER) are refused."""
    container = raw.get("container")
    docker = container.get("docker") if isinstance(container, Mapping) else None
    legacy = docker.get("network") if isinstance(docker, Mapping) else None
    given = raw.get("networks")
    if given is None or given == []:
        return "container/bridge" if legacy == "BRIDGE" else "host"
    if not isinstance(given, list):
        errors.add("/networks", "must be a list of networks")
        return "host"
    if legacy is not None:
        # Marathon's AppValidation: one API or the other
        errors.add("/networks", "must not specify both container.docker.network and networks")
    modes = []
    for i, network in enumerate(given):
        path = f"/networks({i})"
        if not isinstance(network, Mapping):
            errors.add(path, "must be an object")
            continue
        for key in network:
            if key not in ("mode", "name", "labels"):
                errors.add(f"{path}/{key}", "unknown field")
        mode = network.get("mode", "container")  # Marathon's default mode
        if mode not in _NETWORK_MODES:
            errors.add(f"{path}/mode", f"must be one of {list(_NETWORK_MODES)}")
            continue
        if mode == "container":
            errors.add(
                f"{path}/mode",
                "container networks (IP-per-task on a named network) are not supported by "
                "butte; use container/bridge or host",
            )
            continue
        if network.get("name") is not None:
            errors.add(f"{path}/name", f"{mode} networks may not have names")
        if network.get("labels"):
            errors.add(f"{path}/labels", "network labels are not supported by butte")
        modes.append(mode)
    if len(given) > 1:
        errors.add(
            "/networks",
            "May specify a single host network, single bridge network, "
            "or else 1-to-n container networks",
        )
    return modes[0] if len(modes) == 1 else "host"


def _port_mappings(errors: _Errors, path: str, raw: Any) -> list[dict[str, Any]]:
    """Marathon's ``ContainerPortMapping`` list in canonical form (every default filled in:
    a missing ``hostPort`` is 0 on the bridge, any port of the offer)."""
    if not isinstance(raw, list):
        errors.add(path, "must be a list of port mappings")
        return []
    out = []
    for i, pm in enumerate(raw):
        here = f"{path}({i})"
        if not isinstance(pm, Mapping):
            errors.add(here, "must be an object")
            continue
        for key in pm:
            if key not in _PORT_MAPPING_FIELDS:
                errors.add(f"{here}/{key}", "unknown field")
        if pm.get("networkNames"):
            errors.add(f"{here}/networkNames", "only for named container networks")

        entry: dict[str, Any] = {}
        for key in ("containerPort", "hostPort", "servicePort"):
            value = pm.get(key)  # null (a client's unset field) is the default, 0
            entry[key] = 0 if value is None else _integer(errors, f"{here}/{key}", value, 0, 65535)
        protocol = pm.get("protocol") or "tcp"
        if protocol not in _PROTOCOLS:
            errors.add(f"{here}/protocol", "must be tcp, udp or udp,tcp")
        entry["protocol"] = protocol
        entry["labels"] = _str_map(errors, f"{here}/labels", pm.get("labels") or {})
        name = pm.get("name")
        if name is not None:
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9-]+", name):
                errors.add(f"{here}/name", "must match [a-z0-9-]+")
            entry["name"] = name
        out.append(entry)
    names = [pm["name"] for pm in out if "name" in pm]
    if len(set(names)) != len(names):
        errors.add(path, "Port names must be unique.")
    fixed = [pm["hostPort"] for pm in out if pm["hostPort"]]
    if len(set(fixed)) != len(fixed):
        # the task would take one port resource twice, which the master refuses
        errors.add(path, "host ports must be unique")
    return out


def _networking(
    errors: _Errors, raw: Mapping[str, Any], app: dict[str, Any], container: dict[str, Any] | None
) -> None:
    """Sets the app's networking as Marathon's AppNormalization does (``networks``,
    ``container.portMappings``, ``portDefinitions``, ``requirePorts``): a bridged DOCKER app
    gets its port mappings (from ``container.portMappings`` or the deprecated
    ``container.docker.portMappings``; none given: Marathon's one default mapping, and one
    more empty mapping per port definition beyond them) and no port definitions. Port
    mappings anywhere else are refused."""
    given = raw.get("container")
    raw_container: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    given = raw_container.get("docker")
    raw_docker: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    canonical, deprecated = raw_container.get("portMappings"), raw_docker.get("portMappings")
    mode = _network_mode(errors, raw)
    if mode != "container/bridge":
        for value, path in (
            (canonical, "/container/portMappings"),
            (deprecated, "/container/docker/portMappings"),
        ):
            if value:
                errors.add(
                    path,
                    "portMappings are not allowed with host-networking; they need "
                    'networks [{"mode": "container/bridge"}] (or docker.network BRIDGE)',
                )
        if container is not None and container["type"] == "DOCKER" and raw.get("networks"):
            container["docker"]["network"] = "HOST"
        return
    if container is None or container["type"] != "DOCKER":
        errors.add(
            "/container/type" if container is not None else "/networks",
            "container/bridge networking needs a DOCKER container: butte runs port mappings "
            "through the agent's Docker containerizer only",
        )
        return
    if canonical and deprecated:
        errors.add(
            "/container/portMappings", "cannot specify both portMappings and docker.portMappings"
        )
    if canonical is not None:
        mappings = _port_mappings(errors, "/container/portMappings", canonical)
    elif deprecated is not None:
        mappings = _port_mappings(errors, "/container/docker/portMappings", deprecated)
    else:
        mappings = [copy.deepcopy(DEFAULT_PORT_MAPPING)]
    declared = raw.get("portDefinitions") or raw.get("ports") or []
    wanted = len(declared) if isinstance(declared, list) else 0  # else refused already
    for _ in range(wanted - len(mappings)):
        padding = copy.deepcopy(DEFAULT_PORT_MAPPING)
        del padding["name"]  # Marathon pads with unnamed mappings
        mappings.append(padding)
    container["docker"].pop("network", None)
    container["portMappings"] = mappings
    app["networks"] = [dict(n) for n in BRIDGE_NETWORKS]
    app["portDefinitions"] = []
    app["requirePorts"] = False  # "Applies only for host networking"


def app_ports(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ports of a canonical app, one per port definition or (bridged) port mapping, in
    order: ``servicePort``, ``hostPort`` (the host port a task must take; 0: any of the
    offer), ``containerPort`` (None without a mapping), ``request`` (the port Marathon's
    ``PORT_<n>`` variable is named by: the container port of a mapping, else the port
    definition's number), ``protocol``, ``name`` (when given), ``labels``."""
    out = []
    if is_bridged(spec):
        for pm in (spec.get("container") or {}).get("portMappings") or ():
            out.append(
                {
                    "servicePort": pm["servicePort"],
                    "hostPort": pm["hostPort"],
                    "containerPort": pm["containerPort"],
                    "request": pm["containerPort"],
                    "protocol": pm["protocol"],
                    "labels": pm.get("labels") or {},
                    **({"name": pm["name"]} if pm.get("name") else {}),
                }
            )
        return out
    for pd in spec.get("portDefinitions") or ():
        out.append(
            {
                "servicePort": pd["port"],
                "hostPort": pd["port"] if spec.get("requirePorts") else 0,
                "containerPort": None,
                "request": pd["port"],
                "protocol": pd.get("protocol", "tcp"),
                "labels": pd.get("labels") or {},
                **({"name": pd["name"]} if pd.get("name") else {}),
            }
        )
    return out


def render_app(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical app as Marathon 1.5 and later render it: a bridged app without
    ``portDefinitions`` (its ports are ``container.portMappings``)."""
    out = dict(spec)
    if is_bridged(spec):
        out.pop("portDefinitions", None)
    return out


def container_info(
    container: Mapping[str, Any], host_ports: list[int] | None = None
) -> dict[str, Any]:
    """The Mesos ContainerInfo of a canonical ``container`` (see `_container`); a bridged
    one's (with ``portMappings``) network is BRIDGE and its DockerInfo port mappings are
    bound to ``host_ports``, the task's host port of each mapping, as Marathon's TaskBuilder
    binds them (a container port 0 is the host port; ``udp,tcp`` maps both)."""
    info: dict[str, Any] = {"type": container["type"]}
    docker = container.get("docker")
    if docker is None:
        pass  # a MESOS container without an image: its volumes only
    elif container["type"] == "DOCKER":
        mappings = container.get("portMappings")
        info["docker"] = {
            "image": docker["image"],
            "network": "BRIDGE" if mappings is not None else docker["network"],
            "force_pull_image": docker["forcePullImage"],
            "privileged": docker["privileged"],
            "parameters": docker["parameters"],
        }
        if mappings:
            bound = []
            for pm, host in zip(mappings, host_ports or [], strict=True):
                for protocol in pm["protocol"].split(","):
                    bound.append(
                        {
                            "host_port": host,
                            "container_port": pm["containerPort"] or host,
                            "protocol": protocol,
                        }
                    )
            info["docker"]["port_mappings"] = bound
    else:
        info["mesos"] = {"image": {"type": "DOCKER", "docker": {"name": docker["image"]}}}
    # Persistent volumes are no ContainerInfo volumes: the task's disk resources carry them
    # (`butte.frameworks.marathon.resident`).
    host_volumes = [v for v in container["volumes"] if "hostPath" in v]
    if host_volumes:
        info["volumes"] = [
            {"container_path": v["containerPath"], "host_path": v["hostPath"], "mode": v["mode"]}
            for v in host_volumes
        ]
    return info


def is_resident(spec: Mapping[str, Any]) -> bool:
    """Whether a canonical app has a local persistent volume (Marathon's ``isResident``): its
    instances live on reservations of their agent and are relaunched there."""
    container = spec.get("container") or {}  # asked per app per offer: no list made
    return any("persistent" in v for v in container.get("volumes", ()))


def persistent_volumes(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The local persistent volumes of a canonical app."""
    container = spec.get("container") or {}
    return [v for v in container.get("volumes", ()) if "persistent" in v]


def _residency(errors: _Errors, raw: Any) -> None:
    """Checks a given ``residency``. Marathon's API calls it deprecated and without effect:
    a resident app always waits for its agent (``WAIT_FOREVER``) and is rendered with
    `RESIDENCY`."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        errors.add("/residency", "must be an object")
        return
    for key in raw:
        if key not in RESIDENCY:
            errors.add(f"/residency/{key}", "unknown field")
    timeout = raw.get("relaunchEscalationTimeoutSeconds")
    if timeout is not None:
        _integer(errors, "/residency/relaunchEscalationTimeoutSeconds", timeout, 0, 2**62)
    behavior = raw.get("taskLostBehavior")
    if behavior is not None and behavior not in _TASK_LOST_BEHAVIORS:
        errors.add("/residency/taskLostBehavior", f"must be one of {list(_TASK_LOST_BEHAVIORS)}")


def _resident_rules(errors: _Errors, app: Mapping[str, Any]) -> None:
    """Marathon's rules for a resident app (AppValidation, SchedulingValidation), and
    butte's own: a role to reserve in."""
    if app["upgradeStrategy"]["maximumOverCapacity"] != 0:
        errors.add(
            "/upgradeStrategy/maximumOverCapacity",
            "must be 0 for an app with persistent volumes (its instances keep their reservations)",
        )
    if app["unreachableStrategy"] != "disabled":
        errors.add(
            "/unreachableStrategy", "unreachableStrategy must be disabled for resident tasks"
        )
    if app["acceptedResourceRoles"] != ["*"]:
        errors.add(
            "/acceptedResourceRoles", 'A resident app must have `acceptedResourceRoles = ["*"]`.'
        )
    if app["role"] == "*":
        errors.add(
            "/container/volumes",
            "persistent volumes live on reservations, which need a role other than '*': "
            "start butte marathon with --mesos_role ROLE",
        )


def resident_update_problems(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Why ``new`` may not replace ``old`` when either is resident (Marathon's
    ``residentUpdateIsValid``): its instances' reservations were made for the old
    resources, volumes and host ports. Empty: it may."""
    if not (is_resident(old) or is_resident(new)):
        return []
    again = " If you need to make this change, please create a new service."
    problems = []
    if persistent_volumes(old) != persistent_volumes(new):
        problems.append(("/container/volumes", "Persistent volumes can not be changed."))
    for name in ("cpus", "mem", "disk", "gpus", "requirePorts"):
        if old.get(name) != new.get(name):
            problems.append(
                (
                    f"/{name}",
                    "Services with persistent volumes configured may not change resource "
                    "requirements.",
                )
            )
    ports_before, ports_after = app_ports(old), app_ports(new)
    if len(ports_before) != len(ports_after) or _fixed(ports_before) != _fixed(ports_after):
        problems.append(
            (
                "/portDefinitions",
                "Services with persistent volumes configured may not change host ports.",
            )
        )
    return [{"path": path, "errors": [text + again]} for path, text in problems]


def _fixed(ports: list[dict[str, Any]]) -> set[int]:
    return {p["hostPort"] for p in ports if p["hostPort"]}


def normalize_app(
    raw: Any, *, base: str = "/", role: str = "*", app_id: str | None = None
) -> dict[str, Any]:
    """The canonical app definition of ``raw`` (see the module docstring); ``base`` is the
    group a relative id is resolved in, ``app_id`` the id from the URL when there is one."""
    errors = _Errors()
    if not isinstance(raw, Mapping):
        raise Invalid([{"path": "/", "errors": ["an app definition must be a JSON object"]}])
    for key in raw:
        if key in READ_ONLY or key in KNOWN:
            continue
        if key in UNSUPPORTED:
            if raw[key] not in (None, [], {}, ""):
                errors.add(f"/{key}", UNSUPPORTED[key])
            continue
        errors.add(f"/{key}", "unknown field")
    app: dict[str, Any] = {}
    raw_id = raw.get("id", app_id)
    if raw_id is None or not isinstance(raw_id, str) or not raw_id.strip():
        errors.add("/id", "an app needs an id")
        app["id"] = "/"
    else:
        app["id"] = canonical_id(raw_id, base)
        for e in id_errors(app["id"]):
            errors.add("/id", e)
        if app_id is not None and app["id"] != app_id:
            errors.add("/id", f"the id {app['id']} differs from the URL's {app_id}")
    cmd, args = raw.get("cmd"), raw.get("args")
    if cmd is not None and (not isinstance(cmd, str) or not cmd.strip()):
        errors.add("/cmd", "must be a non-empty string")
    if args is not None and (
        not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args)
    ):
        errors.add("/args", "must be a non-empty list of strings")
    if cmd and args:
        errors.add("/", "give either cmd or args, not both")
    container = _container(errors, raw.get("container"))
    if not cmd and not args and container is None:
        errors.add("/", "an app needs cmd or args, or a container with an image")
    app["cmd"] = cmd if cmd else None
    app["args"] = list(args) if isinstance(args, list) and args else None  # else refused above
    user = user_name(errors, "/user", raw.get("user"))
    if user is not None:
        app["user"] = user  # absent when not given, as stored definitions were before
    app["cpus"] = _number(errors, "/cpus", raw.get("cpus", 1.0), 0.0, MAX_SCALAR)
    app["mem"] = _number(errors, "/mem", raw.get("mem", 128.0), 0.0, MAX_SCALAR)
    app["disk"] = _number(errors, "/disk", raw.get("disk", 0.0), 0.0, MAX_SCALAR)
    app["gpus"] = _integer(errors, "/gpus", raw.get("gpus", 0), 0, 1024)
    if app["cpus"] == 0 and app["mem"] == 0:
        errors.add("/cpus", "an app needs some cpus or mem")
    limits = _resource_limits(errors, raw.get("resourceLimits"), app["cpus"], app["mem"])
    if limits:  # absent when there are none, so definitions stored before compare equal
        app["resourceLimits"] = limits
    app["instances"] = _integer(errors, "/instances", raw.get("instances", 1), 0, MAX_INSTANCES)
    app["env"] = _str_map(errors, "/env", raw.get("env") or {})
    for name in app["env"]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            errors.add(f"/env/{name}", "not a valid environment variable name")
    app["labels"] = _str_map(errors, "/labels", raw.get("labels") or {})
    app["fetch"] = _fetch(errors, raw)
    app["portDefinitions"] = _port_definitions(errors, raw)
    # Marathon's AppValidation: 0 asks for any port, so only the fixed ones must differ.
    fixed = [p["port"] for p in app["portDefinitions"] if p["port"] != 0]
    if len(set(fixed)) != len(fixed):
        errors.add("/portDefinitions", "Ports must be unique.")
    names = [p["name"] for p in app["portDefinitions"] if "name" in p]
    if len(set(names)) != len(names):
        errors.add("/portDefinitions", "Port names must be unique.")
    app["requirePorts"] = _bool(errors, "/requirePorts", raw.get("requirePorts", False))
    _networking(errors, raw, app, container)
    if app["requirePorts"] and any(p["port"] == 0 for p in app["portDefinitions"]):
        errors.add("/requirePorts", "requirePorts needs every port to be non-zero")
    app["constraints"] = validate_constraints(raw.get("constraints") or [], errors.add)
    roles = _str_list(errors, "/acceptedResourceRoles", raw.get("acceptedResourceRoles") or ["*"])
    for r in roles:
        if r not in ("*", role):
            errors.add(
                "/acceptedResourceRoles", f"role {r!r}: this Marathon subscribes as {role!r}"
            )
    app["acceptedResourceRoles"] = roles
    app_role = raw.get("role", role)
    if app_role != role:
        errors.add("/role", f"must be {role!r}, the role this Marathon subscribes with")
    app["role"] = role
    bridged = is_bridged(app)
    ports = container["portMappings"] if bridged and container else app["portDefinitions"]
    # COMMAND health checks of Docker apps (bridged or not) run in the container with
    # ``docker exec``, HTTP and TCP ones in its network (docs/docker.md "Checks").
    app["healthChecks"] = _health_checks(errors, raw.get("healthChecks") or [], len(ports))
    readiness = _readiness_checks(errors, raw.get("readinessChecks") or [], ports)
    if readiness:  # absent when empty, so definitions stored before they existed compare equal
        app["readinessChecks"] = readiness
    resident = container is not None and any("persistent" in v for v in container["volumes"])
    upgrade_default = RESIDENT_UPGRADE if resident else DEFAULT_UPGRADE
    app["upgradeStrategy"] = _upgrade(errors, raw.get("upgradeStrategy", upgrade_default))
    app["backoffSeconds"] = _number(
        errors, "/backoffSeconds", raw.get("backoffSeconds", 1), 0, 86400
    )
    app["backoffFactor"] = _number(
        errors, "/backoffFactor", raw.get("backoffFactor", 1.15), 1.0, 100
    )
    app["maxLaunchDelaySeconds"] = _number(
        errors, "/maxLaunchDelaySeconds", raw.get("maxLaunchDelaySeconds", 300), 0, 86400
    )
    selection = raw.get("killSelection", "YOUNGEST_FIRST")
    if selection not in KILL_SELECTIONS:
        errors.add("/killSelection", f"must be one of {list(KILL_SELECTIONS)}")
    app["killSelection"] = selection
    grace = raw.get("taskKillGracePeriodSeconds")
    app["taskKillGracePeriodSeconds"] = (
        None if grace is None else _number(errors, "/taskKillGracePeriodSeconds", grace, 0, 86400)
    )
    app["unreachableStrategy"] = unreachable_strategy(
        errors, raw.get("unreachableStrategy", "disabled" if resident else DEFAULT_UNREACHABLE)
    )
    _residency(errors, raw.get("residency"))
    if resident:
        app["residency"] = dict(RESIDENCY)
    parent = app["id"].rsplit("/", 1)[0] or "/"
    deps = _str_list(errors, "/dependencies", raw.get("dependencies") or [])
    app["dependencies"] = [canonical_id(d, parent) for d in deps]
    if app["id"] in app["dependencies"]:
        errors.add("/dependencies", "an app cannot depend on itself")
    app["container"] = container
    if resident:
        _resident_rules(errors, app)
    executor = raw.get("executor", "")
    if executor not in ("", "//cmd", None):
        errors.add("/executor", "custom executors are not supported; use the command executor")
    errors.raise_if_any()
    return app


def merge_update(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A partial update (``PUT /v2/apps/ID`` with some fields) applied to the current
    definition: the fields given replace the current ones, everything else stays."""
    if not isinstance(patch, Mapping):
        raise Invalid([{"path": "/", "errors": ["an app definition must be a JSON object"]}])
    out = copy.deepcopy(dict(current))
    for key in READ_ONLY:
        out.pop(key, None)
    for key, value in patch.items():
        if key in READ_ONLY:
            continue
        if key == "ports":
            out.pop("portDefinitions", None)
        if key == "portDefinitions":
            out.pop("ports", None)
        if key in ("cmd", "args") and value:
            out.pop("args" if key == "cmd" else "cmd", None)
        if key == "uris":
            out.pop("fetch", None)
        out[key] = value
    # One network API at a time, as Marathon applies an update: a container that names its
    # Docker network replaces the app's networks, and new networks replace what the current
    # container says of its network and its port mappings (they only exist on the bridge).
    container = patch.get("container")
    docker = container.get("docker") if isinstance(container, Mapping) else None
    if isinstance(docker, Mapping) and docker.get("network") and "networks" not in patch:
        out.pop("networks", None)
    if patch.get("networks") and "container" not in patch:
        current_container = out.get("container")
        if isinstance(current_container, dict):
            if isinstance(current_container.get("docker"), dict):
                current_container["docker"].pop("network", None)
            if not is_bridged(patch):
                current_container.pop("portMappings", None)
    return out


def config_of(app: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a definition that changes running tasks (everything but the instance
    count and the version fields): a change here means a restart, otherwise a scale."""
    return {k: v for k, v in app.items() if k not in ("instances", "version", "versionInfo")}
