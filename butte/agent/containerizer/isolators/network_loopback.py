"""``network/loopback`` (butte's own name; Mesos has no such isolator): every task runs in a
network namespace of its own that has only the loopback interface, up. The task can reach
nothing outside, and nothing outside reaches it; the executor itself stays on the host
network so it still talks to the agent."""

from __future__ import annotations

from butte.agent.containerizer import linux
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
)
from butte.agent.effects import LaunchContainer


class NetworkLoopback(Isolator):
    """See the module docstring."""

    name = "network/loopback"

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        if not linux.is_root():
            raise IsolatorUnavailable("network/loopback needs the agent to run as root")

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        if "net" not in setup.task_namespaces:
            setup.task_namespaces.append("net")
