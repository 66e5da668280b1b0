"""Tasks in Docker containers: what a ``ContainerInfo`` of type DOCKER asks for, checked, and
the ``docker run`` command line that gives it (docs/docker.md). Pure functions over the JSON
of a TaskInfo; the agent core checks a launch with `launch_problem`, the Docker executor
(`butte.agent.executor.docker`) builds its command with `run_argv`. Imports only the standard
library's C-backed modules: the executor starts once per task.
"""

from __future__ import annotations

import math

from butte.core.task_limits import CFS_PERIOD_US, MIN_CFS_QUOTA_US, oom_score_adj
from butte.core.task_limits import parse as parse_limits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# Mesos' naming: the agent finds its containers again by it after a restart.
NAME_PREFIX = "mesos-"
# Where the task's sandbox appears inside the container (Mesos' mapped directory).
SANDBOX_MOUNT = "/mnt/mesos/sandbox"
# Label that ties a container to the agent (its work dir) that started it: orphan removal
# only ever touches containers of its own agent, even when several agents share a daemon.
AGENT_LABEL = "butte.agent.work_dir"
NETWORKS = {"HOST": "host", "BRIDGE": "bridge", "NONE": "none"}
# Below these, Docker refuses the container or it cannot start (Mesos clamps the same way).
MIN_MEMORY_MB = 32.0
MIN_CPU_SHARES = 2
MB = 1024 * 1024
# ``parameters`` passed on as ``--key=value``: those that cannot defeat the container's
# isolation or the agent's control of it. Namespaces, capabilities, devices, mounts, the
# container's name and its resource limits are refused (they have fields of their own or
# must stay the agent's to set).
ALLOWED_PARAMETERS = frozenset(
    {
        "add-host",
        "entrypoint",
        "env",
        "hostname",
        "init",
        "label",
        "memory-reservation",
        "oom-score-adj",
        "pids-limit",
        "read-only",
        "shm-size",
        "stop-signal",
        "tmpfs",
        "ulimit",
        "user",
        "workdir",
    }
)
MAX_TEXT = 4096  # longest image name, parameter or path accepted
_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def valid_hostname(name: object) -> bool:
    """Whether ``name`` is a hostname Docker takes: RFC 1123 labels of 1-63 letters, digits
    and inner hyphens, dot-separated, at most 253 characters in all."""
    if not isinstance(name, str) or not 0 < len(name) <= 253:
        return False
    for label in name.split("."):
        if not 0 < len(label) <= 63 or not _LABEL_CHARACTERS.issuperset(label):
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
    return True


# What a Docker image reference is made of (name, tag, digest).
IMAGE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@-")


def container_type(container: Mapping[str, Any] | None) -> str | None:
    """The ContainerInfo's type (None: no ContainerInfo). Mesos requires ``type``; one
    without it is taken as MESOS, the default containerizer's."""
    if not container:
        return None
    kind = container.get("type", "MESOS")
    return kind if isinstance(kind, str) else repr(kind)


def is_docker(container: Mapping[str, Any] | None) -> bool:
    """Whether a ContainerInfo asks for the Docker containerizer."""
    return container_type(container) == "DOCKER"


def _text_problem(value: Any, what: str) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string"
    if len(value) > MAX_TEXT:
        return f"{what} is longer than {MAX_TEXT} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{what} contains control characters"
    return None


def _path_problem(path: Any, what: str, absolute: bool) -> str | None:
    problem = _text_problem(path, what)
    if problem is not None:
        return problem
    if absolute and not path.startswith("/"):
        return f"{what} '{path}' must be an absolute path"
    if ".." in path.split("/"):
        return f"{what} '{path}' must not contain '..'"
    if ":" in path or "," in path:
        return f"{what} '{path}' must not contain ':' or ','"
    return None


def image_problem(image: Any) -> str | None:
    """Why an image name is not one Docker could take (None: fine)."""
    problem = _text_problem(image, "docker.image")
    if problem is not None:
        return problem
    if image.startswith(("-", "/", ".")) or not set(image) <= IMAGE_CHARACTERS or ".." in image:
        return f"docker.image '{image}' is not an image name"
    return None


def _port_problem(mapping: Any, ports: Sequence[tuple[int, int]]) -> str | None:
    if not isinstance(mapping, dict):
        return "each port mapping must be an object"
    for key in ("host_port", "container_port"):
        value = mapping.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            return f"port mapping {key} must be a port number (1-65535), got {value!r}"
    protocol = mapping.get("protocol", "tcp")
    if protocol not in ("tcp", "udp"):
        return f"port mapping protocol must be tcp or udp, got {protocol!r}"
    host = mapping["host_port"]
    if not any(low <= host <= high for low, high in ports):
        return f"host port {host} of a port mapping is not among the task's port resources"
    return None


def _volume_problem(volume: Any) -> str | None:
    if not isinstance(volume, dict):
        return "each volume must be an object"
    if volume.get("source") is not None or volume.get("image") is not None:
        return "only host_path volumes are supported in Docker containers"
    mode = volume.get("mode", "RW")
    if mode not in ("RW", "RO"):
        return f"volume mode must be RW or RO, got {mode!r}"
    problem = _path_problem(volume.get("container_path"), "volume container_path", False)
    if problem is not None:
        return problem
    if volume.get("host_path") is None:
        return "a volume of a Docker container needs a host_path"
    return _path_problem(volume.get("host_path"), "volume host_path", False)


def _parameter_problem(parameter: Any) -> str | None:
    if not isinstance(parameter, dict):
        return "each docker parameter must be an object with key and value"
    key, value = parameter.get("key"), parameter.get("value", "")
    problem = _text_problem(key, "docker parameter key")
    if problem is not None:
        return problem
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return f"docker parameter '{key}' needs a string value"
    if key not in ALLOWED_PARAMETERS:
        return (
            f"docker parameter '{key}' is not allowed (allowed: "
            f"{', '.join(sorted(ALLOWED_PARAMETERS))}; docs/docker.md)"
        )
    return None


def docker_problem(
    container: Mapping[str, Any], ports: Sequence[tuple[int, int]] = ()
) -> str | None:
    """Why a ContainerInfo of type DOCKER is invalid (None: valid). ``ports``: the ranges of
    the task's port resources (a port mapping's host port must be one of them)."""
    docker = container.get("docker")
    if not isinstance(docker, dict):
        return "ContainerInfo of type DOCKER needs 'docker' (a DockerInfo)"
    problem = image_problem(docker.get("image"))
    if problem is not None:
        return problem
    network = docker.get("network", "HOST")
    if network not in NETWORKS:
        return f"docker.network must be one of HOST, BRIDGE, NONE; got {network!r}"
    mappings = docker.get("port_mappings") or []
    if not isinstance(mappings, list):
        return "docker.port_mappings must be a list"
    if mappings and network != "BRIDGE":
        return f"docker.port_mappings need network BRIDGE (network is {network})"
    checks = [_port_problem(m, ports) for m in mappings]
    parameters = docker.get("parameters") or []
    if not isinstance(parameters, list):
        return "docker.parameters must be a list"
    checks += [_parameter_problem(p) for p in parameters]
    for flag in ("privileged", "force_pull_image"):
        if not isinstance(docker.get(flag, False), bool):
            return f"docker.{flag} must be true or false"
    if docker.get("volume_driver") is not None:
        return "docker.volume_driver is not supported"
    hostname = container.get("hostname")
    if hostname is not None:
        if not valid_hostname(hostname):
            return f"ContainerInfo.hostname {str(hostname)[:80]!r} is not a valid hostname"
        if network == "HOST":
            return "Unable to set hostname with host network mode"  # Mesos' words
    volumes = container.get("volumes") or []
    if not isinstance(volumes, list):
        return "ContainerInfo.volumes must be a list"
    checks += [_volume_problem(v) for v in volumes]
    if container.get("mesos") is not None:
        return "ContainerInfo of type DOCKER must not have 'mesos'"
    return next((p for p in checks if p is not None), None)


def task_ports(resources: Sequence[Any]) -> list[tuple[int, int]]:
    """The port ranges among a task's resources."""
    out: list[tuple[int, int]] = []
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("name") != "ports":
            continue
        for item in (resource.get("ranges") or {}).get("range") or []:
            if isinstance(item, dict):
                begin, end = item.get("begin"), item.get("end")
                if isinstance(begin, int) and isinstance(end, int):
                    out.append((begin, end))
    return out


def launch_problem(task: Mapping[str, Any], grouped: bool) -> str | None:
    """Why a task of type DOCKER cannot be launched whatever the agent (None: it can): a
    task group member, a custom executor, or an invalid ContainerInfo. Its checks and health
    checks of every type run (butte.agent.executor.docker: COMMAND ones with ``docker exec``
    in the container, HTTP and TCP ones in the container's network)."""
    if grouped:
        return "Tasks of a task group cannot run in DOCKER containers (use MESOS)"
    if task.get("executor") is not None:
        return "Custom executors cannot run in DOCKER containers on this agent"
    command = task.get("command") or {}
    if command.get("shell", True) and not command.get("value"):
        return "A shell command (CommandInfo.shell true) needs a value"
    container = task.get("container") or {}
    return docker_problem(container, task_ports(task.get("resources") or []))


def container_name(container_id: str) -> str:
    """The Docker container name of an agent container."""
    return NAME_PREFIX + container_id


def scalar(resources: Sequence[Any], name: str) -> float | None:
    """The sum of a named SCALAR resource (None: none given)."""
    total: float | None = None
    for resource in resources:
        if isinstance(resource, dict) and resource.get("name") == name:
            value = (resource.get("scalar") or {}).get("value")
            if isinstance(value, int | float):
                total = (total or 0.0) + float(value)
    return total


def limit_flags(resources: Sequence[Any], limits: Mapping[str, Any] | None = None) -> list[str]:
    """``--cpu-shares`` (cpus x 1024) and ``--memory`` (mem in MB) of a task's resources; with
    TaskInfo.limits (butte.core.task_limits) as Mesos' Docker containerizer sets them: a
    ``--cpu-quota`` from a finite cpu limit, ``--memory`` from a finite memory limit with the
    request as ``--memory-reservation``, and a burstable task's ``--oom-score-adj``."""
    flags: list[str] = []
    ceilings = parse_limits(limits)
    cpus = scalar(resources, "cpus")
    if cpus is not None:
        flags.append(f"--cpu-shares={max(MIN_CPU_SHARES, int(cpus * 1024))}")
    cpu_limit = ceilings.get("cpus")
    if cpu_limit is not None and not math.isinf(cpu_limit):
        flags.append(f"--cpu-quota={max(MIN_CFS_QUOTA_US, int(cpu_limit * CFS_PERIOD_US))}")
    mem = scalar(resources, "mem")
    mem_limit = ceilings.get("mem")
    if mem_limit is None:
        if mem is not None:
            flags.append(f"--memory={int(max(MIN_MEMORY_MB, mem) * MB)}")
        return flags
    if not math.isinf(mem_limit):
        flags.append(f"--memory={int(max(MIN_MEMORY_MB, mem_limit) * MB)}")
    if mem is not None:
        request = int(max(MIN_MEMORY_MB, mem) * MB)
        flags.append(f"--memory-reservation={request}")
        if mem < mem_limit:
            flags.append(f"--oom-score-adj={oom_score_adj(request)}")
    return flags


def _volume_flag(volume: Mapping[str, Any], sandbox: str) -> str:
    host = volume["host_path"]
    if not host.startswith("/"):
        host = f"{sandbox.rstrip('/')}/{host}"  # relative: inside the sandbox, as in Mesos
    target = volume["container_path"]
    if not target.startswith("/"):
        target = f"{SANDBOX_MOUNT}/{target}"
    mode = "ro" if volume.get("mode") == "RO" else "rw"
    return f"--volume={host}:{target}:{mode}"


def command_args(command: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(options before the image, arguments after it) for a CommandInfo: a shell command
    replaces the image's entrypoint by ``/bin/sh`` and runs ``-c value``; otherwise the
    image's entrypoint stays and ``value`` (if any) then ``arguments`` are its command."""
    if command.get("shell", True):
        return ["--entrypoint=/bin/sh"], ["-c", str(command.get("value") or "")]
    args = [str(command["value"])] if command.get("value") else []
    args += [str(a) for a in command.get("arguments") or []]
    return [], args


def run_argv(
    docker: Sequence[str],
    name: str,
    task: Mapping[str, Any],
    sandbox: str,
    env: Mapping[str, str],
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """The ``docker run`` command of a DOCKER task (validated by `launch_problem`):
    ``docker`` is the client with its global options. Attached (the client's output is the
    container's), never pulling (the executor pulls first), named ``name``."""
    container = task.get("container") or {}
    info = container.get("docker") or {}
    argv = [*docker, "run", f"--name={name}", "--pull=never", "--sig-proxy=false"]
    for key, value in sorted((labels or {}).items()):
        argv.append(f"--label={key}={value}")
    argv += limit_flags(task.get("resources") or [], task.get("limits"))
    network = info.get("network", "HOST")
    argv.append(f"--network={NETWORKS[network]}")
    for mapping in info.get("port_mappings") or []:
        protocol = mapping.get("protocol", "tcp")
        argv.append(f"--publish={mapping['host_port']}:{mapping['container_port']}/{protocol}")
    if info.get("privileged"):
        argv.append("--privileged")
    if container.get("hostname"):
        argv.append(f"--hostname={container['hostname']}")
    argv.append(f"--volume={sandbox}:{SANDBOX_MOUNT}:rw")
    argv += [_volume_flag(v, sandbox) for v in container.get("volumes") or []]
    for key, value in env.items():
        argv.append(f"--env={key}={value}")
    for parameter in info.get("parameters") or []:
        argv.append(f"--{parameter['key']}={parameter.get('value', '')}")
    before, after = command_args(task.get("command") or {})
    return [*argv, *before, str(info["image"]), *after]
