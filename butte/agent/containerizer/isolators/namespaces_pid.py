"""``namespaces/pid``: every task runs in a pid namespace of its own, as its pid 1, with a
fresh /proc (so it sees itself and its children only). Implies a private mount namespace
(the /proc mount must not leak). The executor creates them when it starts the task
(`butte.agent.containerizer.linux.spawn_isolated`), the command launcher when it forks one
(`butte.agent.containerizer.linux.fork_into_new_pid_namespace`)."""

from __future__ import annotations

from butte.agent.containerizer import linux
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
)
from butte.agent.effects import LaunchContainer


class NamespacesPid(Isolator):
    """See the module docstring."""

    name = "namespaces/pid"

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        if not linux.is_root():
            raise IsolatorUnavailable("namespaces/pid needs the agent to run as root")

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        for ns in ("pid", "mnt"):
            if ns not in setup.task_namespaces:
                setup.task_namespaces.append(ns)
