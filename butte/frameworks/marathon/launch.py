"""Turning an offer into tasks (pure): which of an offer's resources an instance takes
(`Pool`, by role, host ports picked at random from the offered ranges unless asked for by
number) and the Mesos TaskInfo of an instance (`task_info`: command, environment, fetched URIs,
resource limits, container with its bound port mappings, health check, kill policy,
discovery)."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from butte.core.task_limits import INFINITY
from butte.frameworks.marathon.appdef import UNLIMITED, app_ports, container_info, is_bridged
from butte.frameworks.marathon.model import Instance
from butte.frameworks.marathon.resident import is_plain, is_source_disk

SCALARS = ("cpus", "mem", "disk", "gpus")
# Marathon's ``NoOfferMatchReason`` for a scalar that is short.
_REASONS = {
    "cpus": "InsufficientCpus",
    "mem": "InsufficientMemory",
    "disk": "InsufficientDisk",
    "gpus": "InsufficientGpus",
}


class Pool:
    """An offer's resources as they are handed out, by role (``*`` or the framework's): the
    plain ones (`resident.is_plain`), never a resident instance's reservation or volume;
    and its unreserved PATH and MOUNT disks, for stateful apps' volumes (`take_sources`)."""

    def __init__(
        self, offer: Mapping[str, Any], rng: random.Random, reserved: bool = False
    ) -> None:
        self.rng = rng
        # (template, [amount left], role) per scalar resource of the offer, by name
        self.scalars: dict[str, list[tuple[dict[str, Any], list[float], str]]] = {}
        self.ranges: list[tuple[dict[str, Any], list[list[int]]]] = []
        self.sources: list[tuple[dict[str, Any], list[float]]] = []
        for r in offer.get("resources", ()):
            # ``reserved``: the offered reservation of one resident instance, to be split
            # among its tasks (its volumes, handed out whole, are not given to the pool)
            if not reserved and not is_plain(r):
                if is_source_disk(r):
                    template = {k: v for k, v in r.items() if k != "scalar"}
                    self.sources.append((template, [float(r["scalar"]["value"])]))
                continue
            template = {k: v for k, v in r.items() if k not in ("scalar", "ranges")}
            if r.get("type") == "SCALAR" and r.get("name") in SCALARS:
                entry = (template, [float(r["scalar"]["value"])], self._role(template))
                self.scalars.setdefault(r["name"], []).append(entry)
            elif r.get("type") == "RANGES" and r.get("name") == "ports":
                spans = [[int(x["begin"]), int(x["end"])] for x in r["ranges"].get("range", [])]
                self.ranges.append((template, spans))
        self.reasons: list[str] = []  # why the last ``take`` failed

    def total(self, name: str) -> float:
        """What is left of a scalar, all roles together."""
        return sum(v[0] for _, v, _ in self.scalars.get(name, ()))

    @staticmethod
    def _role(template: Mapping[str, Any]) -> str:
        reservations = template.get("reservations") or []
        if reservations:
            return reservations[-1].get("role", "*")
        return template.get("role") or "*"

    def missing(self, spec: Mapping[str, Any]) -> list[str]:
        """Why the rest of the offer cannot hold one instance, in the words and order of
        Marathon's ``ResourceMatcher``: each scalar that is short (``InsufficientCpus``...)
        and ``UnfulfilledRole`` when the offer has nothing of a role the app accepts (ports
        are looked at only once these fit, see ``take``). Empty: it fits."""
        roles = set(spec["acceptedResourceRoles"])
        out = []
        for name in ("cpus", "mem", "gpus", "disk"):  # Marathon's order
            need = float(spec[name])
            if need <= 0:
                continue
            have = sum(v[0] for _, v, role in self.scalars.get(name, ()) if role in roles)
            if have + 1e-9 < need:
                out.append(_REASONS[name])
        if not any(role in roles for entries in self.scalars.values() for _, _, role in entries):
            if not any(self._role(t) in roles for t, _ in self.ranges):
                out.append("UnfulfilledRole")
        return out

    def take(self, spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[int]] | None:
        """Resources (and host ports) for one instance, or None (``reasons`` says what
        was missing)."""
        roles = set(spec["acceptedResourceRoles"])
        self.reasons = self.missing(spec)
        if self.reasons:
            return None
        plan: list[tuple[list[float], float, dict[str, Any]]] = []
        for name in SCALARS:
            need = float(spec[name])
            if need <= 0:
                continue
            pieces = [(t, v) for t, v, role in self.scalars.get(name, ()) if role in roles]
            for t, v in pieces:
                amount = min(need, v[0])
                if amount > 0:
                    plan.append((v, amount, t))
                    need -= amount
                if need <= 1e-9:
                    break
        port_plan = self._ports(spec, roles)
        if port_plan is None:
            self.reasons = ["InsufficientPorts"]
            return None
        resources = []
        for holder, amount, template in plan:
            holder[0] -= amount
            resources.append({**template, "scalar": {"value": round(amount, 6)}})
        ports = []
        for template, spans, port in port_plan:
            _remove_port(spans, port)
            resources.append({**template, "ranges": {"range": [{"begin": port, "end": port}]}})
            ports.append(port)
        return resources, ports

    def take_sources(
        self, volumes: list[Mapping[str, Any]]
    ) -> list[tuple[int, float, dict[str, Any]]] | None:
        """For each ``path`` or ``mount`` persistent volume (canonical ``persistent`` infos),
        a disk of its kind whose root meets its constraints: part of a PATH disk, or a whole
        MOUNT disk of at least ``size`` (at most ``maxSize``). All or none: (source index,
        amount, the resource taken) each, or None."""
        left = [amounts[0] for _, amounts in self.sources]
        picks: list[tuple[int, float, dict[str, Any]]] = []
        for v in volumes:
            for i, (template, _) in enumerate(self.sources):
                source = template["disk"]["source"]
                if source.get("type") != v["type"].upper() or left[i] <= 0:
                    continue
                root = str((source.get("path") or source.get("mount") or {}).get("root", ""))
                if not _roots_allowed(v["constraints"], root):
                    continue
                amount = left[i] if v["type"] == "mount" else float(v["size"])
                if amount + 1e-9 < v["size"] or amount > v.get("maxSize", amount):
                    continue
                if v["type"] == "mount" and left[i] < self.sources[i][1][0]:
                    continue  # a MOUNT disk is taken whole or not at all
                if left[i] + 1e-9 < amount:
                    continue
                left[i] -= amount
                picks.append((i, amount, {**template, "scalar": {"value": round(amount, 6)}}))
                break
            else:
                return None
        for i, amount, _ in picks:
            self.sources[i][1][0] -= amount
        return picks

    def put_back(self, picks: list[tuple[int, float, dict[str, Any]]]) -> None:
        """Undoes `take_sources` (the rest of the instance did not fit)."""
        for i, amount, _ in picks:
            self.sources[i][1][0] += amount

    def _random_port(self, begin: int, end: int, chosen: set[int]) -> int | None:
        """A free port of ``[begin, end]``, picked at random like Marathon does (the low
        end of a range is where other software on the host tends to sit)."""
        for _ in range(8):
            port = self.rng.randint(begin, end)
            if port not in chosen:
                return port
        return next((p for p in range(begin, end + 1) if p not in chosen), None)

    def _ports(
        self, spec: Mapping[str, Any], roles: set[str]
    ) -> list[tuple[dict[str, Any], list[list[int]], int]] | None:
        out: list[tuple[dict[str, Any], list[list[int]], int]] = []
        ports = app_ports(spec)
        # Marathon's PortsMatcher: a random pick never takes a port asked for by number
        # (a port mapping's fixed hostPort, or a port definition's under requirePorts)
        chosen: set[int] = {p["hostPort"] for p in ports if p["hostPort"]}
        pools = [(t, s) for t, s in self.ranges if self._role(t) in roles]
        for p in ports:
            wanted = p["hostPort"]
            found = None
            for t, spans in pools:
                for begin, end in spans:
                    if wanted:
                        if begin <= wanted <= end:
                            found = (t, spans, wanted)
                            break
                        continue
                    port = self._random_port(begin, end, chosen)
                    if port is not None:
                        found = (t, spans, port)
                        break
                if found:
                    break
            if found is None:
                return None
            chosen.add(found[2])
            out.append(found)
        return out


def _roots_allowed(constraints: list[list[str]], root: str) -> bool:
    """Marathon's persistent volume constraints on a disk's root: LIKE and UNLIKE a regex
    (matching the whole root)."""
    for _, op, regex in constraints:
        if (re.fullmatch(regex, root) is not None) != (op == "LIKE"):
            return False
    return True


def _remove_port(spans: list[list[int]], port: int) -> None:
    for i, (begin, end) in enumerate(spans):
        if begin <= port <= end:
            pieces = [[begin, port - 1]] if begin < port else []
            if port < end:
                pieces.append([port + 1, end])
            spans[i : i + 1] = pieces
            return


def mesos_uri(fetch: Mapping[str, Any]) -> dict[str, Any]:
    """The Mesos CommandInfo.URI of one validated ``fetch`` or ``artifacts`` item
    (`appdef.artifact`)."""
    dest = fetch.get("outputFile") or fetch.get("destPath")
    return {
        "value": fetch["uri"],
        "executable": fetch["executable"],
        "extract": fetch["extract"],
        "cache": fetch["cache"],
        **({"output_file": dest} if dest else {}),
    }


def task_info(spec: Mapping[str, Any], inst: Instance, resources: list[dict]) -> dict[str, Any]:
    """The Mesos TaskInfo for one instance (command executor)."""
    env = dict(spec["env"])
    env.update(
        {
            "HOST": inst.host,
            "MARATHON_APP_ID": inst.app_id,
            "MARATHON_APP_VERSION": inst.version,
            "MARATHON_APP_RESOURCE_CPUS": str(spec["cpus"]),
            "MARATHON_APP_RESOURCE_MEM": str(spec["mem"]),
            "MARATHON_APP_RESOURCE_DISK": str(spec["disk"]),
            "MARATHON_APP_RESOURCE_GPUS": str(spec["gpus"]),
            "MARATHON_APP_LABELS": " ".join(spec["labels"]),
            "MESOS_TASK_ID": inst.task_id,
        }
    )
    container = spec.get("container")
    if container and container["type"] == "DOCKER":
        env["MARATHON_APP_DOCKER_IMAGE"] = container["docker"]["image"]
    for k, v in spec["labels"].items():
        env[f"MARATHON_APP_LABEL_{_env_name(k)}"] = v
    if inst.ports:
        env["PORTS"] = ",".join(str(p) for p in inst.ports)
        env["PORT"] = str(inst.ports[0])
    # Marathon's EnvironmentHelper.portsEnv: PORT<i> is the task's host port; PORT_<n> is
    # named by the port asked for (a mapping's container port, a definition's number) and
    # by the host port itself where that was 0 (a container port 0 is the host port).
    for i, (port, p) in enumerate(zip(inst.ports, app_ports(spec), strict=False)):
        env[f"PORT{i}"] = str(port)
        env[f"PORT_{p['request'] or port}"] = str(port)
        if p.get("name"):
            env[f"PORT_{_env_name(p['name'])}"] = str(port)
    command: dict[str, Any] = {
        "environment": {"variables": [{"name": k, "value": v} for k, v in env.items()]},
        "uris": [mesos_uri(f) for f in spec["fetch"]],
    }
    if spec.get("user"):
        command["user"] = spec["user"]
    if spec["cmd"]:
        command.update({"shell": True, "value": spec["cmd"]})
    elif spec["args"] and spec.get("container"):
        # Docker's rule: args follow the image's entrypoint
        command.update({"shell": False, "arguments": spec["args"]})
    elif spec["args"]:
        command.update({"shell": False, "value": spec["args"][0], "arguments": spec["args"]})
    else:
        command["shell"] = False  # the image's entrypoint and cmd
    task: dict[str, Any] = {
        "name": _hostname(inst.app_id),
        "task_id": {"value": inst.task_id},
        "agent_id": {"value": inst.agent_id},
        "resources": resources,
        "command": command,
        "labels": {"labels": [{"key": k, "value": v} for k, v in spec["labels"].items()]},
        "discovery": _discovery_info(spec, inst),
    }
    limits = spec.get("resourceLimits")
    if limits:
        # Marathon's TaskBuilder.limitsAsJavaMap: each limit a Value.Scalar, "unlimited" the
        # infinite double, which protobuf's JSON (and butte.core.task_limits) write "Infinity".
        task["limits"] = {
            name: {"value": INFINITY if value == UNLIMITED else value}
            for name, value in limits.items()
        }
    if container:
        task["container"] = container_info(container, inst.ports)
    if spec["healthChecks"]:
        task["health_check"] = _mesos_health_check(
            spec["healthChecks"][0], _probed_ports(spec, inst)
        )
    grace = spec.get("taskKillGracePeriodSeconds")
    if grace is not None:
        task["kill_policy"] = {"grace_period": {"nanoseconds": int(grace * 1e9)}}
    return task


def _hostname(app_id: str) -> str:
    """The app id as a host name, as Marathon's ``PathId.toHostname`` makes it: the path's
    segments in reverse order joined by dots (``/shop/web`` is ``web.shop``)."""
    return ".".join(reversed(app_id.strip("/").split("/")))


def _discovery_info(spec: Mapping[str, Any], inst: Instance) -> dict[str, Any]:
    """The task's Mesos DiscoveryInfo, as Marathon's TaskBuilder sets it on every task
    (``computeDiscoveryInfo``, ``PortDiscovery.generateForApp``): the app id as a host name,
    FRAMEWORK visibility, and one port per port definition and protocol (``udp,tcp`` gives
    two), numbered with the host port the instance got. Mesos-DNS makes its SRV records
    (``_<name>._<app>._tcp.<framework>.mesos``) of these."""
    bridged = is_bridged(spec)
    ports = []
    for number, pd in zip(inst.ports, app_ports(spec), strict=False):
        labels = dict(pd["labels"])
        if bridged:
            # a bridged app's port mappings all have a host port, and Marathon labels the
            # ports of those so (one without would be "container", on a named network)
            labels["network-scope"] = "host"
        for protocol in pd["protocol"].split(","):
            port: dict[str, Any] = {"number": number, "protocol": protocol}
            if pd.get("name"):
                port["name"] = pd["name"]
            if labels:
                port["labels"] = {"labels": [{"key": k, "value": v} for k, v in labels.items()]}
            ports.append(port)
    return {
        "visibility": "FRAMEWORK",
        "name": _hostname(inst.app_id),
        # an empty Ports message, as Mesos renders one without ports
        "ports": {"ports": ports} if ports else {},
    }


def _env_name(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).upper()


def _probed_ports(spec: Mapping[str, Any], inst: Instance) -> list[int]:
    """The port a health check's ``portIndex`` names, per index: the task's host port, or for
    a bridged app the container port of the mapping (its host port where the container port
    is 0), as Marathon's ``MesosHealthCheck.effectivePort`` prefers it: the executor probes a
    bridged container from inside the container's network (docs/docker.md "Checks")."""
    if not is_bridged(spec):
        return list(inst.ports)
    return [
        pd["containerPort"] or host for pd, host in zip(app_ports(spec), inst.ports, strict=False)
    ]


def _mesos_health_check(hc: Mapping[str, Any], ports: list[int]) -> dict[str, Any]:
    """Marathon's health check as the Mesos HealthCheck the agent's executor runs; ``ports``:
    the port probed for each port index (`_probed_ports`)."""
    out: dict[str, Any] = {
        "delay_seconds": hc["delaySeconds"],
        "interval_seconds": hc["intervalSeconds"],
        "timeout_seconds": hc["timeoutSeconds"],
        "consecutive_failures": hc["maxConsecutiveFailures"],
        "grace_period_seconds": hc["gracePeriodSeconds"],
    }
    protocol = hc["protocol"].removeprefix("MESOS_")
    if protocol == "COMMAND":
        out.update({"type": "COMMAND", "command": {"shell": True, "value": hc["command"]["value"]}})
        return out
    port = hc.get("port") or ports[hc.get("portIndex", 0)]
    if protocol == "TCP":
        out.update({"type": "TCP", "tcp": {"port": port}})
    else:
        scheme = "https" if protocol == "HTTPS" else "http"
        out.update({"type": "HTTP", "http": {"port": port, "path": hc["path"], "scheme": scheme}})
        if hc.get("ignoreHttp1xx"):
            out["http"]["statuses"] = list(range(100, 400))
    return out
