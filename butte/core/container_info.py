"""Checks of a task's ContainerInfo that need no agent: image names, volume paths and modes.

Pure functions, used by the master (a bad ContainerInfo is TASK_ERROR there) and again by
the agent (a master that did not check, or a task group, still cannot get past it). What
depends on the agent's flags (``--image_providers``, ``--allowed_host_path_volumes``) is
decided by the agent (`butte.agent.containerizer.image_runtime`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Docker's reference grammar, simplified: [registry[:port]/]path[:tag]; no digests (the local
# puller finds archives by name and tag).
_NAME = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
VOLUME_MODES = ("RW", "RO")
MAX_NAME = 255


def split_image_name(name: Any) -> tuple[str, str]:
    """(repository, tag) of a Docker image name (tag ``latest`` when none is given);
    ValueError with a clear message for a name that is not one, path tricks included."""
    if not isinstance(name, str) or not name:
        raise ValueError("the image name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"the image name is longer than {MAX_NAME} characters")
    if "\x00" in name:
        raise ValueError("the image name contains a NUL character")
    if "@" in name:
        raise ValueError(f"image '{name}': digests are not supported, name a tag")
    repo, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    parts = repo.split("/")
    if any(p in ("", ".", "..") for p in parts) or not _NAME.match(repo):
        raise ValueError(f"'{name}' is not a valid Docker image name")
    if not _TAG.match(tag):
        raise ValueError(f"'{name}' has an invalid tag")
    return repo, tag


def image_of(container: Mapping[str, Any] | None) -> str | None:
    """The Docker image name of a MESOS ContainerInfo (None: no image)."""
    if not container or container.get("type", "MESOS") != "MESOS":
        return None
    image = (container.get("mesos") or {}).get("image")
    if not image:
        return None
    docker = image.get("docker") or {}
    name = docker.get("name")
    return name if isinstance(name, str) else ""


def _path_problem(path: Any, what: str) -> str | None:
    if not isinstance(path, str) or not path:
        return f"{what} is empty"
    if "\x00" in path:
        return f"{what} '{path!r}' contains a NUL character"
    if ".." in path.split("/"):
        return f"{what} '{path}' contains '..'"
    return None


def volume_problem(volume: Any, member: bool = False) -> str | None:
    """Why one Volume cannot be mounted (None: it can be, as far as its own fields say).
    ``member``: a task group member's, which may take a SANDBOX_PATH of its PARENT (the
    executor's sandbox)."""
    if not isinstance(volume, Mapping):
        return "a volume is not an object"
    mode = volume.get("mode", "RW")
    if mode not in VOLUME_MODES:
        return f"unknown volume mode '{mode}' (RW or RO)"
    problem = _path_problem(volume.get("container_path"), "volume container_path")
    if problem:
        return problem
    source = volume.get("source")
    host_path = volume.get("host_path")
    if source is not None:
        if host_path is not None:
            return "a volume has both host_path and source"
        if not isinstance(source, Mapping):
            return "a volume's source is not an object"
        kind = source.get("type")
        if kind == "SANDBOX_PATH":
            sandbox = source.get("sandbox_path") or {}
            kind = sandbox.get("type", "SELF")
            if kind not in ("SELF", "PARENT"):
                return f"unknown SANDBOX_PATH type '{kind}' (SELF or PARENT)"
            if kind == "PARENT" and not member:
                return "SANDBOX_PATH volumes of type PARENT are for task group members only"
            return _path_problem(sandbox.get("path"), "volume sandbox_path")
        if kind == "HOST_PATH":
            return _path_problem((source.get("host_path") or {}).get("path"), "volume host path")
        return f"volume source type '{kind}' is not supported (SANDBOX_PATH, HOST_PATH)"
    if host_path is None:
        return "a volume needs a host_path or a source"
    return _path_problem(host_path, "volume host_path")


# LinuxInfo fields that need an isolator butte does not have: refused, never ignored.
_LINUX_ISOLATORS = {
    "capability_info": "linux/capabilities",
    "effective_capabilities": "linux/capabilities",
    "bounding_capabilities": "linux/capabilities",
    "seccomp": "linux/seccomp",
    "shm_size": "namespaces/ipc",
}


def _linux_problem(linux: Any, in_group: bool) -> str | None:
    if not isinstance(linux, Mapping):
        return "ContainerInfo.linux_info is not an object"
    for name, isolator in _LINUX_ISOLATORS.items():
        if linux.get(name) is not None:
            return f"LinuxInfo.{name} needs the '{isolator}' isolator, which butte does not have"
    if linux.get("ipc_mode", "SHARE_PARENT") != "SHARE_PARENT":
        return (
            f"LinuxInfo.ipc_mode {linux.get('ipc_mode')} needs the 'namespaces/ipc' isolator, "
            "which butte does not have (tasks share the agent's IPC namespace)"
        )
    if linux.get("share_cgroups", True) is not True:
        if not in_group:
            return "Only tasks in a task group may have 'share_cgroups' set to 'false'"
        return (
            "'share_cgroups' set to 'false' is not supported: the members of a task group "
            "share their executor's cgroups"
        )
    return None


def _unsupported_problem(container: Mapping[str, Any], in_group: bool) -> str | None:
    """Why a MESOS ContainerInfo asks for something no butte agent does (capabilities,
    rlimits, seccomp, an IPC namespace, a terminal for a task, a hostname, CNI networks)."""
    linux = container.get("linux_info")
    if linux is not None:
        problem = _linux_problem(linux, in_group)
        if problem is not None:
            return problem
    if container.get("rlimit_info") is not None:
        return (
            "ContainerInfo.rlimit_info needs the 'posix/rlimits' isolator, "
            "which butte does not have"
        )
    if container.get("tty_info") is not None:
        return (
            "ContainerInfo.tty_info is not supported for tasks; a terminal is given to nested "
            "container sessions only (`butte task exec --tty`)"
        )
    if container.get("hostname") is not None:
        return "ContainerInfo.hostname needs a UTS namespace, which butte does not create"
    for network in container.get("network_infos") or []:
        if not isinstance(network, Mapping):
            return "ContainerInfo.network_infos holds a value that is not an object"
        if any(network.get(k) for k in ("name", "ip_addresses", "port_mappings", "groups")):
            return (
                "ContainerInfo.network_infos asks for a container network, which needs the "
                "'network/cni' isolator; butte does not have it (tasks use the host's network)"
            )
    return None


CONTAINER_TYPES = ("MESOS", "DOCKER")


def required_fields_problem(container: Any) -> str | None:
    """Why a ContainerInfo could not even be parsed as Mesos parses it: its required
    ``type`` and each volume's required ``container_path`` and ``mode`` missing, or an enum
    name there that does not exist. A scheduler call holding one is refused whole (400),
    as Mesos fails to parse it (docs/protocol.md §0.1)."""
    if container is None:
        return None
    if not isinstance(container, Mapping):
        return "ContainerInfo must be an object"
    kind = container.get("type")
    if kind is None:
        return "ContainerInfo is missing its required field 'type'"
    if kind not in CONTAINER_TYPES:
        return f"ContainerInfo.type '{kind}' is not one of {', '.join(CONTAINER_TYPES)}"
    volumes = container.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        if not isinstance(volume, Mapping):
            return "a volume of ContainerInfo.volumes is not an object"
        for field in ("container_path", "mode"):
            if volume.get(field) is None:
                return f"a volume is missing its required field '{field}'"
        if volume["mode"] not in VOLUME_MODES:
            return f"Volume.mode '{volume['mode']}' is not one of {', '.join(VOLUME_MODES)}"
    return None


def shares_pid_namespace(container: Mapping[str, Any] | None) -> bool:
    """Whether a ContainerInfo asks to share the agent's pid namespace
    (``linux_info.share_pid_namespace``)."""
    linux = (container or {}).get("linux_info")
    return isinstance(linux, Mapping) and linux.get("share_pid_namespace") is True


def pid_sharing_problem(container: Mapping[str, Any] | None, *, with_executor: bool) -> str | None:
    """Why a ContainerInfo cannot share the agent's pid namespace: only a command task's
    can (the command launcher keeps it in the agent's), not one run by an executor or in
    a task group (``with_executor``), whose tasks are the executor's children."""
    if with_executor and shares_pid_namespace(container):
        return (
            "'share_pid_namespace' is supported for command tasks only, "
            "not with an executor or in a task group"
        )
    return None


def container_problem(container: Mapping[str, Any] | None, *, in_group: bool = False) -> str | None:
    """Why a task's MESOS ContainerInfo cannot run anywhere: a bad image or volume, or a
    field no butte agent implements (None: nothing wrong that an agent's flags would not
    decide). ``in_group``: a task group's member or executor. Other container types are
    left to their containerizers."""
    if not container or container.get("type", "MESOS") != "MESOS":
        return None
    problem = _unsupported_problem(container, in_group)
    if problem is not None:
        return problem
    image = (container.get("mesos") or {}).get("image")
    if image:
        kind = image.get("type", "DOCKER")
        if kind != "DOCKER":
            return f"image type '{kind}' is not supported (DOCKER images only)"
        try:
            split_image_name((image.get("docker") or {}).get("name"))
        except ValueError as e:
            return f"Invalid image: {e}"
    volumes = container.get("volumes") or []
    if not isinstance(volumes, list):
        return "ContainerInfo.volumes is not a list"
    for volume in volumes:
        problem = volume_problem(volume, member=in_group)
        if problem:
            return f"Invalid volume: {problem}"
        if not image and str(volume.get("container_path", "")).startswith("/"):
            # Without a root filesystem of its own a task sees the host's: a volume there
            # would be mounted over the host's directories.
            return (
                f"Invalid volume: container_path '{volume['container_path']}' is absolute; "
                "without an image (mesos.image) a volume must be a path in the sandbox"
            )
    return None
