"""``namespaces/pid``: every task runs in a pid namespace of its own, as its pid 1, with a
fresh /proc (so it sees itself and its children only). Implies a private mount namespace
(the /proc mount must not leak). A command task whose ContainerInfo says
``linux_info.share_pid_namespace: true`` stays in the agent's pid namespace instead, unless
the agent runs with ``--disallow_sharing_agent_pid_namespace`` (its launch then fails), as
in Mesos. The executor creates them when it starts the task
(`butte.agent.containerizer.linux.spawn_isolated`), the command launcher when it forks one
(`butte.agent.containerizer.linux.fork_into_new_pid_namespace`)."""

from __future__ import annotations

from butte.agent.containerizer import linux
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
    LaunchRefused,
)
from butte.agent.effects import LaunchContainer
from butte.core.container_info import shares_pid_namespace


class NamespacesPid(Isolator):
    """See the module docstring."""

    name = "namespaces/pid"

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        if not linux.is_root():
            raise IsolatorUnavailable("namespaces/pid needs the agent to run as root")

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        if shares_pid_namespace(spec.container):
            if self.context.options.disallow_sharing_agent_pid_namespace:
                raise LaunchRefused(
                    "Sharing the agent's pid namespace is not allowed on this agent "
                    "(--disallow_sharing_agent_pid_namespace)"
                )
            return
        for ns in ("pid", "mnt"):
            if ns not in setup.task_namespaces:
                setup.task_namespaces.append(ns)
