"""Marathon pod definitions (RAML ``PodDef``): validation into a canonical form, and the
Mesos ExecutorInfo and TaskGroupInfo of one pod instance (pure functions; docs/marathon.md
"Pods").

What butte does not run (APPC images, networks other than ``host``, secrets ...) is refused
with 422 naming the field, never dropped. A pod with a persistent volume is resident, as an
app with one is (docs/marathon.md "Stateful apps"): Marathon's rules for those apply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from butte.core.container_info import split_image_name
from butte.frameworks.marathon.appdef import (
    DEFAULT_UNREACHABLE,
    DEFAULT_UPGRADE,
    MAX_INSTANCES,
    MAX_SCALAR,
    RESIDENT_UPGRADE,
    Invalid,
    _bool,
    _Errors,
    _integer,
    _number,
    _str_map,
    artifact,
    canonical_id,
    id_errors,
    persistent_info,
    unreachable_strategy,
    user_name,
)
from butte.frameworks.marathon.constraints import validate_constraints
from butte.frameworks.marathon.launch import mesos_uri

# Marathon's container and endpoint names (RAML ``PodContainer.name``, ``Endpoint.name``):
# lowercase letters, digits and inner hyphens.
NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9]+)*")
DEFAULT_CONTAINER_RESOURCES = {"cpus": 1.0, "mem": 128.0, "disk": 0.0}
DEFAULT_EXECUTOR_RESOURCES = {"cpus": 0.1, "mem": 32.0, "disk": 10.0}
DEFAULT_BACKOFF = {"backoff": 1.0, "backoffFactor": 1.15, "maxLaunchDelay": 300.0}
KILL_SELECTIONS = ("YOUNGEST_FIRST", "OLDEST_FIRST")
HEALTH_DEFAULTS = {
    "gracePeriodSeconds": 300,
    "intervalSeconds": 60,
    "maxConsecutiveFailures": 3,
    "timeoutSeconds": 20,
    "delaySeconds": 15,
}
MAX_CONTAINERS = 100
_EPHEMERAL = "volumes/"  # where an instance's ephemeral volumes are, in its executor's sandbox
_NOT_BUILT = "is not supported by butte"

# Fields of the schema butte does not run: refused (422) when given with a value that
# would change anything.
_POD_FIELDS = frozenset(
    {
        "id",
        "labels",
        "version",
        "environment",
        "containers",
        "volumes",
        "networks",
        "secrets",
        "scaling",
        "scheduling",
        "executorResources",
        "role",
        "user",
        "fetch",
        "linuxInfo",
        "legacySharedCgroups",
    }
)
_ENDPOINT_FIELDS = frozenset(
    {"name", "containerPort", "hostPort", "protocol", "labels", "networkNames"}
)
_CONTAINER_FIELDS = frozenset(
    {
        "name",
        "exec",
        "resources",
        "endpoints",
        "environment",
        "labels",
        "healthCheck",
        "lifecycle",
        "image",
        "volumeMounts",
        "artifacts",
        "user",
        "check",
        "tty",
        "linuxInfo",
    }
)


def _unknown(errors: _Errors, path: str, raw: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in raw:
        if key not in known:
            errors.add(f"{path}/{key}", "unknown field")


def _refuse_if(errors: _Errors, path: str, value: Any) -> None:
    """A field butte does not build: refused unless absent or empty."""
    if value not in (None, [], {}, ""):
        errors.add(path, f"{path.rsplit('/', 1)[-1]} {_NOT_BUILT}")


def _object(errors: _Errors, path: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object")
        return {}
    return raw


def _resources(
    errors: _Errors, path: str, raw: Any, defaults: Mapping[str, float]
) -> dict[str, float]:
    raw = _object(errors, path, raw)
    _unknown(errors, path, raw, frozenset({"cpus", "mem", "disk", "gpus"}))
    out = {}
    for name, default in defaults.items():
        out[name] = _number(errors, f"{path}/{name}", raw.get(name, default), 0, MAX_SCALAR)
    if raw.get("gpus") not in (None, 0):
        errors.add(f"{path}/gpus", f"gpus {_NOT_BUILT} in pods")
    return out


def _unique_name(errors: _Errors, path: str, name: Any, kind: str, seen: set[str]) -> str:
    """A container's or endpoint's ``name``, checked (`NAME`, unique among ``seen``, which
    it joins); "" when it is no name at all."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        errors.add(path, "must be lowercase letters, digits and hyphens")
        name = ""
    elif name in seen:
        errors.add(path, f"{kind} name {name!r} is not unique in the pod")
    seen.add(name)
    return name


def _items(errors: _Errors, path: str, raw: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The objects of an optional list field, each with its path (``<path>/<index>``);
    what is no list, or no object in it, is an error."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.add(path, "must be a list")
        return []
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, Mapping):
            out.append((f"{path}/{i}", item))
        else:
            errors.add(f"{path}/{i}", "must be an object")
    return out


def _endpoints(errors: _Errors, path: str, raw: Any, seen: set[str]) -> list[dict[str, Any]]:
    out = []
    for p, ep in _items(errors, path, raw):
        _unknown(errors, p, ep, _ENDPOINT_FIELDS)
        name = _unique_name(errors, f"{p}/name", ep.get("name"), "endpoint", seen)
        if ep.get("containerPort") is not None:
            errors.add(f"{p}/containerPort", "containerPort is only for container networks")
        _refuse_if(errors, f"{p}/networkNames", ep.get("networkNames"))
        host_port = _integer(errors, f"{p}/hostPort", ep.get("hostPort", 0), 0, 65535)
        protocol = ep.get("protocol", ["tcp"])
        if (
            not isinstance(protocol, list)
            or not protocol
            or any(x not in ("tcp", "udp") for x in protocol)
        ):
            errors.add(f"{p}/protocol", "must be a list of 'tcp' and 'udp'")
            protocol = ["tcp"]
        labels = _str_map(errors, f"{p}/labels", ep.get("labels", {}))
        out.append({"name": name, "hostPort": host_port, "protocol": protocol, "labels": labels})
    return out


def _health_check(
    errors: _Errors, path: str, raw: Any, endpoints: set[str]
) -> dict[str, Any] | None:
    if raw is None:
        return None
    raw = _object(errors, path, raw)
    kinds = [k for k in ("http", "tcp", "exec") if k in raw]
    _unknown(errors, path, raw, frozenset({"http", "tcp", "exec", *HEALTH_DEFAULTS}))
    if len(kinds) != 1:
        errors.add(path, "needs exactly one of http, tcp, exec")
        return None
    kind = kinds[0]
    body = _object(errors, f"{path}/{kind}", raw[kind])
    out: dict[str, Any] = {}
    if kind in ("http", "tcp"):
        fields = {"endpoint", "path", "scheme"} if kind == "http" else {"endpoint"}
        _unknown(errors, f"{path}/{kind}", body, frozenset(fields))
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str) or endpoint not in endpoints:
            errors.add(f"{path}/{kind}/endpoint", f"names no endpoint of the pod: {endpoint!r}")
        spec: dict[str, Any] = {"endpoint": endpoint}
        if kind == "http":
            spec["path"] = body.get("path", "/")
            if not isinstance(spec["path"], str):
                errors.add(f"{path}/http/path", "must be a string")
            spec["scheme"] = body.get("scheme", "HTTP")
            if spec["scheme"] not in ("HTTP", "HTTPS"):
                errors.add(f"{path}/http/scheme", "must be HTTP or HTTPS")
        out[kind] = spec
    else:
        _unknown(errors, f"{path}/exec", body, frozenset({"command"}))
        shell = _object(errors, f"{path}/exec/command", body.get("command")).get("shell")
        if not isinstance(shell, str) or not shell:
            errors.add(f"{path}/exec/command/shell", "must be a non-empty string")
        out["exec"] = {"command": {"shell": shell}}
    for name, default in HEALTH_DEFAULTS.items():
        out[name] = _integer(errors, f"{path}/{name}", raw.get(name, default), 0, 10**9)
    return out


def _container(errors: _Errors, path: str, raw: Any, seen: set[str]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object")
        return None
    _unknown(errors, path, raw, _CONTAINER_FIELDS)
    for field in ("check", "tty", "linuxInfo"):
        _refuse_if(errors, f"{path}/{field}", raw.get(field))
    name = _unique_name(errors, f"{path}/name", raw.get("name"), "container", seen)
    image = _image(errors, f"{path}/image", raw.get("image"))
    exec_out = _exec(errors, f"{path}/exec", raw.get("exec"), image is not None)
    lifecycle = _object(errors, f"{path}/lifecycle", raw.get("lifecycle"))
    _unknown(errors, f"{path}/lifecycle", lifecycle, frozenset({"killGracePeriodSeconds"}))
    out: dict[str, Any] = {
        "name": name,
        "resources": _resources(
            errors, f"{path}/resources", raw.get("resources"), DEFAULT_CONTAINER_RESOURCES
        ),
        "endpoints": _endpoints(errors, f"{path}/endpoints", raw.get("endpoints"), set()),
        "environment": _str_map(errors, f"{path}/environment", raw.get("environment", {})),
        "labels": _str_map(errors, f"{path}/labels", raw.get("labels", {})),
    }
    if exec_out is not None:  # absent: the image's entrypoint and command
        out["exec"] = exec_out
    if image is not None:
        out["image"] = image
    artifacts = raw.get("artifacts") or []
    if not isinstance(artifacts, list):
        errors.add(f"{path}/artifacts", "must be a list")
        artifacts = []
    fetched = [
        artifact(errors, f"{path}/artifacts/{i}", a, ("destPath",)) for i, a in enumerate(artifacts)
    ]
    if fetched:  # absent when none, as definitions stored before artifacts were taken
        out["artifacts"] = [a for a in fetched if a is not None]
    user = user_name(errors, f"{path}/user", raw.get("user"))
    if user is not None:
        out["user"] = user
    mounts = _volume_mounts(
        errors, f"{path}/volumeMounts", raw.get("volumeMounts"), image is not None
    )
    if mounts:  # absent when none, as definitions stored before volumes were taken
        out["volumeMounts"] = mounts
    if lifecycle.get("killGracePeriodSeconds") is not None:
        grace_path = f"{path}/lifecycle/killGracePeriodSeconds"
        grace = _number(errors, grace_path, lifecycle["killGracePeriodSeconds"], 0, 10**6)
        out["lifecycle"] = {"killGracePeriodSeconds": grace}
    return out


def _image(errors: _Errors, path: str, raw: Any) -> dict[str, Any] | None:
    """A container's ``image`` (RAML ``Image``): a Docker image the agent's image store has
    (``--image_providers docker``), run by its mesos containerizer. ``forcePull`` is taken:
    the store reads an image again whenever its archive changed, so a container always gets
    the newest one (APPC images are refused: the store holds none)."""
    if raw is None:
        return None
    raw = _object(errors, path, raw)
    _unknown(errors, path, raw, frozenset({"kind", "id", "forcePull", "labels"}))
    if raw.get("kind") != "DOCKER":
        errors.add(f"{path}/kind", "must be DOCKER (butte's image store has no APPC images)")
    _refuse_if(errors, f"{path}/labels", raw.get("labels"))  # APPC discovery labels
    try:
        split_image_name(raw.get("id"))
    except ValueError as e:
        errors.add(f"{path}/id", str(e))
    out: dict[str, Any] = {"kind": "DOCKER", "id": raw.get("id")}
    if "forcePull" in raw:
        out["forcePull"] = _bool(errors, f"{path}/forcePull", raw["forcePull"])
    return out


def _exec(errors: _Errors, path: str, raw: Any, image: bool) -> dict[str, Any] | None:
    """A container's ``exec``: a ``shell`` string or an ``argv`` list; optional with an
    ``image`` (its entrypoint and command then run, an ``argv`` follows its entrypoint
    unless ``overrideEntrypoint``). None when not given."""
    if raw is None and image:
        return None
    exec_ = _object(errors, path, raw)
    _unknown(errors, path, exec_, frozenset({"command", "overrideEntrypoint"}))
    command = _object(errors, f"{path}/command", exec_.get("command"))
    _unknown(errors, f"{path}/command", command, frozenset({"shell", "argv"}))
    cmd: dict[str, Any] = {}
    if isinstance(command.get("shell"), str) and command["shell"] and "argv" not in command:
        cmd = {"shell": command["shell"]}
    elif (
        "shell" not in command
        and isinstance(command.get("argv"), list)
        and command["argv"]
        and all(isinstance(a, str) for a in command["argv"])
    ):
        cmd = {"argv": list(command["argv"])}
    else:
        errors.add(
            f"{path}/command",
            "needs a non-empty shell string or argv list (a container without an image "
            "must have a command)",
        )
    out: dict[str, Any] = {"command": cmd}
    if "overrideEntrypoint" in exec_:
        override = _bool(errors, f"{path}/overrideEntrypoint", exec_["overrideEntrypoint"])
        if not image:
            errors.add(f"{path}/overrideEntrypoint", "applies only to a container with an image")
        elif "shell" in cmd and not override:
            errors.add(f"{path}/overrideEntrypoint", "cannot be false with command.shell")
        out["overrideEntrypoint"] = override
    return out


def _relative_path(path: Any) -> bool:
    return (
        isinstance(path, str)
        and bool(path)
        and not path.startswith("/")
        and (".." not in path.split("/"))
    )


def _volume_mounts(errors: _Errors, path: str, raw: Any, image: bool) -> list[dict[str, Any]]:
    """A container's ``volumeMounts`` (RAML ``VolumeMount``): which of the pod's volumes it
    sees at which ``mountPath``: a path in its image's root filesystem, or, relative, in its
    sandbox (the only place a container without an image has of its own)."""
    out = []
    for p, mount in _items(errors, path, raw):
        _unknown(errors, p, mount, frozenset({"name", "mountPath", "readOnly"}))
        name = mount.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            errors.add(f"{p}/name", "must be lowercase letters, digits and hyphens")
        target = mount.get("mountPath")
        if image and isinstance(target, str) and target.startswith("/"):
            if ".." in target.split("/"):
                errors.add(f"{p}/mountPath", "must not contain '..'")
        elif not _relative_path(target):
            errors.add(
                f"{p}/mountPath",
                "must be a relative path in the container's sandbox (a container without an "
                "image has no root filesystem of its own to mount into)",
            )
        entry: dict[str, Any] = {"name": name, "mountPath": target}
        if "readOnly" in mount:
            entry["readOnly"] = _bool(errors, f"{p}/readOnly", mount["readOnly"])
        out.append(entry)
    return out


def _volumes(errors: _Errors, raw: Any) -> list[dict[str, Any]]:
    """The pod's ``volumes``: ephemeral ones (a ``name`` only: a directory of the
    instance's executor sandbox that its containers share), ``host`` ones (an absolute
    path on the agent, or a path in the executor's sandbox) and ``persistent`` ones (a local
    persistent volume of the instance's reservation, held by its executor: `persistent_info`)."""
    out = []
    seen: set[str] = set()
    for p, volume in _items(errors, "/volumes", raw):
        _unknown(errors, p, volume, frozenset({"name", "host", "persistent"}))
        name = _unique_name(errors, f"{p}/name", volume.get("name"), "volume", seen)
        entry: dict[str, Any] = {"name": name}
        if volume.get("persistent") is not None:
            if volume.get("host") is not None:
                errors.add(p, "a volume is either host or persistent")
            entry["persistent"] = persistent_info(errors, f"{p}/persistent", volume["persistent"])
            out.append(entry)
            continue
        host = volume.get("host")
        if host is not None:
            if not isinstance(host, str) or not host or ".." in host.split("/"):
                errors.add(f"{p}/host", "must be an absolute path or a path in the sandbox")
            else:
                entry["host"] = host
        out.append(entry)
    return out


def normalize_pod(raw: Any, role: str = "*", path_id: str | None = None) -> dict[str, Any]:
    """A pod definition in canonical form (defaults filled in, no ``version``); raises
    `Invalid` (422) listing every offending field. ``path_id``: the id of the URL (PUT),
    which a body id must match."""
    errors = _Errors()
    if not isinstance(raw, Mapping):
        raise Invalid([{"path": "/", "errors": ["a pod definition must be a JSON object"]}])
    _unknown(errors, "", raw, _POD_FIELDS)
    given = raw.get("id", path_id)
    if not isinstance(given, str) or not given.strip("/ "):
        errors.add("/id", "is required: a path such as /team/web")
        pod_id = "/"
    else:
        pod_id = canonical_id(given)
        for e in id_errors(pod_id):
            errors.add("/id", e)
        if path_id is not None and pod_id != canonical_id(path_id):
            errors.add("/id", f"the id in the body ({pod_id}) is not the URL's ({path_id})")
    for name in ("fetch", "linuxInfo", "legacySharedCgroups", "secrets"):
        _refuse_if(errors, f"/{name}", raw.get(name))
    networks = raw.get("networks", [{"mode": "host"}])
    if networks not in ([], [{"mode": "host"}]):
        errors.add("/networks", "only host networking ([{'mode': 'host'}]) is supported by butte")
    if raw.get("role") not in (None, role):
        errors.add("/role", f"must be the framework's role {role!r}")
    containers_raw = raw.get("containers")
    containers: list[dict[str, Any]] = []
    if not isinstance(containers_raw, list) or not containers_raw:
        errors.add("/containers", "must be a non-empty list")
    elif len(containers_raw) > MAX_CONTAINERS:
        errors.add("/containers", f"at most {MAX_CONTAINERS} containers")
    else:
        names: set[str] = set()
        for i, c in enumerate(containers_raw):
            built = _container(errors, f"/containers/{i}", c, names)
            if built is not None:
                containers.append(built)
        endpoint_names: set[str] = set()
        for i, c in enumerate(containers):
            for j, ep in enumerate(c["endpoints"]):
                if ep["name"] in endpoint_names:
                    errors.add(f"/containers/{i}/endpoints/{j}/name", "not unique in the pod")
                endpoint_names.add(ep["name"])
        fixed = [ep["hostPort"] for c in containers for ep in c["endpoints"] if ep["hostPort"]]
        if len(fixed) != len(set(fixed)):
            errors.add("/containers", "a fixed hostPort is given twice")
        for i, (c, c_raw) in enumerate(zip(containers, containers_raw, strict=False)):
            if isinstance(c_raw, Mapping):
                hc = _health_check(
                    errors, f"/containers/{i}/healthCheck", c_raw.get("healthCheck"), endpoint_names
                )
                if hc is not None:
                    c["healthCheck"] = hc
    scaling = _object(errors, "/scaling", raw.get("scaling"))
    _unknown(errors, "/scaling", scaling, frozenset({"kind", "instances", "maxInstances"}))
    if scaling.get("kind", "fixed") != "fixed":
        errors.add("/scaling/kind", "only 'fixed' scaling is supported")
    count = scaling.get("instances", 1)
    instances = _integer(errors, "/scaling/instances", count, 0, MAX_INSTANCES)
    scaling_out: dict[str, Any] = {"kind": "fixed", "instances": instances}
    if scaling.get("maxInstances") is not None:
        most = _integer(errors, "/scaling/maxInstances", scaling["maxInstances"], 0, MAX_INSTANCES)
        if instances > most:
            errors.add("/scaling/instances", f"is more than maxInstances ({most})")
        scaling_out["maxInstances"] = most
    scheduling = _object(errors, "/scheduling", raw.get("scheduling"))
    _unknown(
        errors,
        "/scheduling",
        scheduling,
        frozenset({"backoff", "upgrade", "placement", "killSelection", "unreachableStrategy"}),
    )
    volumes = _volumes(errors, raw.get("volumes"))
    resident = any("persistent" in v for v in volumes)
    unreachable = unreachable_strategy(
        errors,
        scheduling.get("unreachableStrategy", "disabled" if resident else DEFAULT_UNREACHABLE),
        "/scheduling/unreachableStrategy",
    )
    upgrade_raw = _object(errors, "/scheduling/upgrade", scheduling.get("upgrade"))
    _unknown(errors, "/scheduling/upgrade", upgrade_raw, frozenset(DEFAULT_UPGRADE))
    if resident and not upgrade_raw:
        upgrade_raw = RESIDENT_UPGRADE  # Marathon's PodNormalization for resident pods
    upgrade = {
        k: _number(errors, f"/scheduling/upgrade/{k}", upgrade_raw.get(k, d), 0, 1)
        for k, d in DEFAULT_UPGRADE.items()
    }
    backoff_raw = _object(errors, "/scheduling/backoff", scheduling.get("backoff"))
    _unknown(errors, "/scheduling/backoff", backoff_raw, frozenset(DEFAULT_BACKOFF))
    backoff = {
        k: _number(errors, f"/scheduling/backoff/{k}", backoff_raw.get(k, d), 0, 10**6)
        for k, d in DEFAULT_BACKOFF.items()
    }
    if backoff["backoffFactor"] < 1:
        errors.add("/scheduling/backoff/backoffFactor", "must be at least 1")
    placement = _object(errors, "/scheduling/placement", scheduling.get("placement"))
    placement_fields = frozenset({"constraints", "acceptedResourceRoles"})
    _unknown(errors, "/scheduling/placement", placement, placement_fields)
    constraints = _constraints(errors, placement.get("constraints"))
    default_roles = ["*", role] if role != "*" and not resident else ["*"]
    roles_raw = placement.get("acceptedResourceRoles", default_roles)
    if (
        not isinstance(roles_raw, list)
        or not roles_raw
        or any(r not in ("*", role) for r in roles_raw)
    ):
        errors.add(
            "/scheduling/placement/acceptedResourceRoles",
            f"must be a non-empty list of '*' and the framework's role {role!r}",
        )
        roles_raw = ["*"]
    kill_selection = scheduling.get("killSelection", "YOUNGEST_FIRST")
    if kill_selection not in KILL_SELECTIONS:
        errors.add("/scheduling/killSelection", f"must be one of {', '.join(KILL_SELECTIONS)}")
    if "legacySharedCgroups" in raw:
        _bool(errors, "/legacySharedCgroups", raw["legacySharedCgroups"])
    names = {v["name"] for v in volumes}
    pod = {
        "id": pod_id,
        "labels": _str_map(errors, "/labels", raw.get("labels", {})),
        "environment": _str_map(errors, "/environment", raw.get("environment", {})),
        "containers": containers,
        "networks": [{"mode": "host"}],
        "scaling": scaling_out,
        "scheduling": {
            "backoff": backoff,
            "placement": {"acceptedResourceRoles": list(roles_raw), "constraints": constraints},
            "killSelection": kill_selection,
            "upgrade": upgrade,
            "unreachableStrategy": unreachable,
        },
        "executorResources": _resources(
            errors, "/executorResources", raw.get("executorResources"), DEFAULT_EXECUTOR_RESOURCES
        ),
        "volumes": volumes,
    }
    for i, c in enumerate(containers):
        for j, mount in enumerate(c.get("volumeMounts", ())):
            if isinstance(mount["name"], str) and mount["name"] not in names:
                path = f"/containers/{i}/volumeMounts/{j}/name"
                errors.add(path, f"names no volume of the pod: {mount['name']!r}")
    user = user_name(errors, "/user", raw.get("user"))
    if user is not None:  # absent when not given, as definitions stored before users were
        pod["user"] = user
    if resident:
        _resident_rules(errors, pod, role)
    errors.raise_if_any()
    return pod


def _resident_rules(errors: _Errors, pod: Mapping[str, Any], role: str) -> None:
    """Marathon's PodsValidation rules for a pod with persistent volumes, and butte's own:
    a role to reserve in."""
    scheduling = pod["scheduling"]
    if scheduling["upgrade"]["maximumOverCapacity"] != 0:
        errors.add(
            "/scheduling/upgrade/maximumOverCapacity",
            "must be 0 for a pod with persistent volumes (its instances keep their reservations)",
        )
    if scheduling["unreachableStrategy"] != "disabled":
        errors.add(
            "/scheduling/unreachableStrategy",
            "unreachableStrategy must be disabled for pods with persistent volumes",
        )
    if scheduling["placement"]["acceptedResourceRoles"] != ["*"]:
        errors.add(
            "/scheduling/placement/acceptedResourceRoles",
            'A resident pod must have `acceptedResourceRoles = ["*"]`.',
        )
    if role == "*":
        errors.add(
            "/volumes",
            "persistent volumes live on reservations, which need a role other than '*': "
            "start butte marathon with --mesos_role ROLE",
        )


def persistent_volumes(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A canonical pod's persistent volumes (a resident pod has some)."""
    return [v for v in pod.get("volumes", ()) if "persistent" in v]


def resident_update_problems(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Why ``new`` may not replace ``old`` when either is resident (Marathon's PodsValidation
    ``residentUpdateIsValid``): its instances' reservations were made for the old
    resources, volumes and host ports. Empty: it may."""
    if not (persistent_volumes(old) or persistent_volumes(new)):
        return []
    again = " If you need to make this change, please create a new pod."
    out = []
    if persistent_volumes(old) != persistent_volumes(new):
        out.append(("/volumes", "persistent volumes cannot be updated."))

    def resources(pod: Mapping[str, Any]) -> Any:
        own = [(c["name"], c["resources"]) for c in pod["containers"]]
        return pod["executorResources"], own

    if resources(old) != resources(new):
        out.append(("/containers", "Pods with persistent volumes may not change resources."))
    if _fixed_ports(old) != _fixed_ports(new):
        out.append(("/containers", "Pods with persistent volumes may not change host ports."))
    return [{"path": path, "errors": [text + again]} for path, text in out]


def _fixed_ports(pod: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(ep["name"], ep["hostPort"]) for ep in endpoints_of(pod)]


def _constraints(errors: _Errors, raw: Any) -> list[dict[str, str]]:
    """``scheduling.placement.constraints`` in the form of Marathon's pod RAML (objects of
    ``fieldName``, ``operator`` and ``value``), validated as an app's (either form taken)."""
    if raw is None:
        return []

    def add(path: str, message: str) -> None:
        errors.add(f"/scheduling/placement{path}", message)

    out = []
    for c in validate_constraints(raw, add):
        out.append({"fieldName": c[0], "operator": c[1], **({"value": c[2]} if len(c) > 2 else {})})
    return out


def constraint_list(pod: Mapping[str, Any]) -> list[list[str]]:
    """The pod's placement constraints as `butte.frameworks.marathon.constraints` takes
    them (``[field, operator, value?]``)."""
    out = []
    for c in pod["scheduling"]["placement"].get("constraints", ()):
        out.append([c["fieldName"], c["operator"], *([c["value"]] if "value" in c else [])])
    return out


def config_of(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What instances are launched with: everything but the instance count, the upgrade and
    unreachable strategies and the version (a change of it restarts the instances; a change
    of the count only scales)."""
    config = {k: v for k, v in pod.items() if k not in ("version", "scaling", "versionInfo")}
    policies = ("upgrade", "unreachableStrategy")
    scheduling = {k: v for k, v in pod["scheduling"].items() if k not in policies}
    return {**config, "scheduling": scheduling}


def endpoints_of(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every endpoint of the pod, in container order (the order host ports are taken in)."""
    return [ep for c in pod["containers"] for ep in c["endpoints"]]


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def build_task_group(
    pod: Mapping[str, Any],
    instance_id: str,
    framework_id: str,
    agent_id: str,
    hostname: str,
    executor_resources: list[dict[str, Any]],
    container_resources: Mapping[str, list[dict[str, Any]]],
    host_ports: Mapping[str, int],
    attempt: int = 1,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ExecutorInfo (DEFAULT, id ``instance-<pod>.<uuid>``, the pod's executor
    resources and its host ports, its labels) and the member TaskInfos (id
    ``<instance id>.<container>``, the container's resources, its command with the pod's
    and its own environment, its artifacts as URIs to fetch, its user or the pod's,
    ``HOST``, Marathon's context variables and ``ENDPOINT_<NAME>``,
    its health check and kill policy) of one instance, as Marathon's TaskGroupBuilder makes
    them. ``executor_resources``: taken from the offer for the executor, the host ports
    included (and a resident instance's persistent volumes); ``host_ports``: endpoint name
    -> host port taken. A resident instance's later launches (``attempt`` 2 and on) have
    ids ending ``.<attempt>``: a new executor, whatever became of the last one."""
    prefix, _, uid = instance_id.rpartition(".instance-")
    again = f".{attempt}" if attempt > 1 else ""
    executor_id = f"instance-{prefix}.{uid}{again}"
    executor: dict[str, Any] = {
        "type": "DEFAULT",
        "executor_id": {"value": executor_id},
        "framework_id": {"value": framework_id},
        "resources": list(executor_resources),
    }
    if pod["labels"]:
        executor["labels"] = {"labels": [{"key": k, "value": v} for k, v in pod["labels"].items()]}
    volumes = {v["name"]: v for v in pod.get("volumes", ())}
    ephemeral = [n for n, v in volumes.items() if "host" not in v and "persistent" not in v]
    if ephemeral:  # each a directory of the executor's sandbox, made for the members
        executor["container"] = {
            "type": "MESOS",
            "volumes": [_sandbox_volume(_EPHEMERAL + n, "SELF", _EPHEMERAL + n) for n in ephemeral],
        }
    endpoint_env = {f"ENDPOINT_{_env_name(n)}": str(p) for n, p in host_ports.items()}
    endpoint_env.update({f"EP_HOST_{_env_name(n)}": str(p) for n, p in host_ports.items()})
    tasks = []
    for c in pod["containers"]:
        task_id = f"{instance_id}.{c['name']}{again}"
        resources = c["resources"]
        labels = {**pod["labels"], **c["labels"]}
        env = {
            **pod["environment"],
            **c["environment"],
            "HOST": hostname,
            "MESOS_TASK_ID": task_id,
            "MESOS_EXECUTOR_ID": executor_id,
            "MARATHON_APP_ID": pod["id"],
            "MARATHON_APP_VERSION": pod["version"],
            "MARATHON_CONTAINER_ID": c["name"],
            **{f"MARATHON_CONTAINER_RESOURCE_{k.upper()}": str(v) for k, v in resources.items()},
            "MARATHON_APP_LABELS": " ".join(_env_name(k) for k in labels),
            **{f"MARATHON_APP_LABEL_{_env_name(k)}": v for k, v in labels.items()},
            **endpoint_env,
        }
        exec_ = c.get("exec") or {}
        cmd = exec_.get("command") or {}
        command: dict[str, Any] = {
            "environment": {"variables": [{"name": k, "value": v} for k, v in env.items()]}
        }
        if c.get("artifacts"):
            command["uris"] = [mesos_uri(a) for a in c["artifacts"]]
        user = c.get("user", pod.get("user"))
        if user is not None:
            command["user"] = user
        if "shell" in cmd:
            command.update({"shell": True, "value": cmd["shell"]})
        elif "argv" in cmd and ("image" not in c or exec_.get("overrideEntrypoint")):
            command.update({"shell": False, "value": cmd["argv"][0], "arguments": cmd["argv"]})
        elif "argv" in cmd:  # after the image's entrypoint
            command.update({"shell": False, "arguments": cmd["argv"]})
        else:  # the image's entrypoint and command
            command["shell"] = False
        task: dict[str, Any] = {
            "name": c["name"],
            "task_id": {"value": task_id},
            "agent_id": {"value": agent_id},
            "resources": container_resources.get(c["name"], []),
            "command": command,
        }
        if c["labels"]:
            task["labels"] = {"labels": [{"key": k, "value": v} for k, v in c["labels"].items()]}
        container: dict[str, Any] = {"type": "MESOS"}
        if c.get("volumeMounts"):
            mounts = [_member_volume(m, volumes[m["name"]]) for m in c["volumeMounts"]]
            container["volumes"] = mounts
        if "image" in c:
            image: dict[str, Any] = {"type": "DOCKER", "docker": {"name": c["image"]["id"]}}
            if "forcePull" in c["image"]:
                image["cached"] = not c["image"]["forcePull"]
            container["mesos"] = {"image": image}
        if len(container) > 1:
            task["container"] = container
        if "healthCheck" in c:
            task["health_check"] = _health(c["healthCheck"], host_ports)
        if "lifecycle" in c:
            grace = c["lifecycle"]["killGracePeriodSeconds"]
            task["kill_policy"] = {"grace_period": {"nanoseconds": int(grace * 1e9)}}
        tasks.append(task)
    return executor, tasks


def _sandbox_volume(container_path: str, kind: str, path: str, mode: str = "RW") -> dict:
    return {
        "container_path": container_path,
        "mode": mode,
        "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": kind, "path": path}},
    }


def _member_volume(mount: Mapping[str, Any], volume: Mapping[str, Any]) -> dict[str, Any]:
    """A member's Mesos Volume for one of its ``volumeMounts``, as Marathon's
    TaskGroupBuilder makes it: an ephemeral volume is ``volumes/<name>`` of the executor's
    sandbox (PARENT); a persistent one ``<name>`` there (where the executor holds it); a
    host volume its absolute host path, or a path in the executor's sandbox."""
    mode = "RO" if mount.get("readOnly") else "RW"
    if "persistent" in volume:
        return _sandbox_volume(mount["mountPath"], "PARENT", volume["name"], mode)
    host = volume.get("host")
    if host is None:
        return _sandbox_volume(mount["mountPath"], "PARENT", _EPHEMERAL + volume["name"], mode)
    if not host.startswith("/"):
        return _sandbox_volume(mount["mountPath"], "PARENT", host, mode)
    return {
        "container_path": mount["mountPath"],
        "mode": mode,
        "source": {"type": "HOST_PATH", "host_path": {"path": host}},
    }


def _health(hc: Mapping[str, Any], host_ports: Mapping[str, int]) -> dict[str, Any]:
    """A pod container's health check as the Mesos HealthCheck the default executor runs
    (an endpoint is probed at its host port: pods here use host networking)."""
    out: dict[str, Any] = {
        "delay_seconds": hc["delaySeconds"],
        "interval_seconds": hc["intervalSeconds"],
        "timeout_seconds": hc["timeoutSeconds"],
        "consecutive_failures": hc["maxConsecutiveFailures"],
        "grace_period_seconds": hc["gracePeriodSeconds"],
    }
    if "exec" in hc:
        shell = hc["exec"]["command"]["shell"]
        out.update({"type": "COMMAND", "command": {"shell": True, "value": shell}})
    elif "http" in hc:
        http = hc["http"]
        out.update(
            {
                "type": "HTTP",
                "http": {
                    "port": host_ports[http["endpoint"]],
                    "path": http["path"],
                    "scheme": http["scheme"].lower(),
                },
            }
        )
    else:
        out.update({"type": "TCP", "tcp": {"port": host_ports[hc["tcp"]["endpoint"]]}})
    return out
