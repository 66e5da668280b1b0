"""What the agent's HTTP endpoint modules (`http`, `operator_api`) need from the agent shell:
a narrow interface, so that they take the shell without importing `butte.agent.server`,
which creates them (no import cycle). `AgentServer` has all of it."""

from __future__ import annotations

from typing import Any, Protocol

from butte.agent.containerizer.docker import DockerContainerizer
from butte.agent.containerizer.posix import PosixContainerizer
from butte.agent.effects import Effect
from butte.agent.executor_api import Reply
from butte.agent.executor_stream import ExecutorStream
from butte.agent.http_auth import AgentAuth
from butte.agent.machine import AgentMachine
from butte.core.messages import ExecutorCall


class HasWorkDir(Protocol):
    """The shell's options, as far as the endpoints use them."""

    @property
    def work_dir(self) -> str: ...

    @property
    def auth(self) -> AgentAuth:
        """--authenticate_http_*, --executor_secret_key, --acls (`butte.agent.http_auth`)."""


class AgentShell(Protocol):
    """The agent shell as its endpoints see it."""

    @property
    def options(self) -> HasWorkDir: ...

    @property
    def flags(self) -> dict[str, str]: ...

    @property
    def machine(self) -> AgentMachine | None: ...

    @property
    def containerizer(self) -> PosixContainerizer | None: ...

    @property
    def docker(self) -> DockerContainerizer | None: ...

    def apply(self, effects: list[Effect]) -> None:
        """Carries out effects the core returned."""

    def executor_call(self, call: ExecutorCall) -> Reply:
        """One executor API call through the core (effects carried out)."""

    def open_executor_stream(self, container_id: str) -> ExecutorStream:
        """A new SUBSCRIBE stream of the executor in ``container_id``."""

    def executor_stream_closed(self, stream: ExecutorStream) -> None:
        """The executor's stream ended."""

    def container_signalled(self, container_id: str, number: int) -> None:
        """KILL_CONTAINER is about to send ``number`` to the container's processes."""

    def state(self) -> dict[str, Any]:
        """The ``/state`` JSON."""

    def framework_user(self, framework_id: str) -> str | None:
        """The user a framework runs as here (None: unknown), for ``--acls``."""

    def metrics(self) -> dict[str, float]:
        """The ``/metrics/snapshot`` figures."""
