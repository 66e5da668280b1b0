"""``filesystem/linux``: every task runs in a private mount namespace where ``/tmp`` is the
directory ``tmp`` of its sandbox (created, world-writable with the sticky bit), so tasks
neither see nor fill the host's /tmp."""

from __future__ import annotations

from butte.agent.containerizer import linux
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
)
from butte.agent.effects import LaunchContainer


class FilesystemLinux(Isolator):
    """See the module docstring."""

    name = "filesystem/linux"

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        if not linux.is_root():
            raise IsolatorUnavailable("filesystem/linux needs the agent to run as root")

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        for ns in ("mnt", "tmp"):
            if ns not in setup.task_namespaces:
                setup.task_namespaces.append(ns)
