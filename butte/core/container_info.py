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


def volume_problem(volume: Any) -> str | None:
    """Why one Volume cannot be mounted (None: it can be, as far as its own fields say)."""
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
            if sandbox.get("type", "SELF") != "SELF":
                return "SANDBOX_PATH volumes of type PARENT need a nested container"
            return _path_problem(sandbox.get("path"), "volume sandbox_path")
        if kind == "HOST_PATH":
            return _path_problem((source.get("host_path") or {}).get("path"), "volume host path")
        return f"volume source type '{kind}' is not supported (SANDBOX_PATH, HOST_PATH)"
    if host_path is None:
        return "a volume needs a host_path or a source"
    return _path_problem(host_path, "volume host_path")


def container_problem(container: Mapping[str, Any] | None) -> str | None:
    """Why a task's MESOS ContainerInfo with an image or volumes cannot run anywhere (None:
    nothing wrong that an agent's flags would not decide). Other container types are left to
    their containerizers."""
    if not container or container.get("type", "MESOS") != "MESOS":
        return None
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
    if volumes and not image:
        return "volumes need an image (mesos.image) in butte"
    for volume in volumes:
        problem = volume_problem(volume)
        if problem:
            return f"Invalid volume: {problem}"
    return None
