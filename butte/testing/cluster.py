"""Real master and agent processes on 127.0.0.1 for integration tests.

`start_cluster` starts a `LocalCluster` (the machinery of ``butte local``) in a test's
temporary directory with test-friendly timings (fast allocation and status update retries),
waits until every agent is active, and always stops every process afterwards. The returned
`ClusterHandle` knows the master's address, reads its state, polls for conditions, and lets a
test SIGKILL, stop and restart single processes (same port and work dir, so an agent restart
exercises recovery)::

    with start_cluster(tmp_path, agents=2) as cluster:
        cluster.agents[0].kill()
        cluster.agents[0].restart()
        cluster.wait_until(lambda s: ..., what="agent re-registered")

``tests/conftest.py`` wraps this in the ``cluster`` and ``cluster_factory`` fixtures.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from butte.cli.local import HOST, ClusterError, LocalCluster, ManagedProcess, free_port
from butte.core.auth import basic_header

__all__ = [
    "ClusterError",
    "ClusterHandle",
    "ProcessHandle",
    "daemons_missing",
    "free_port",
    "start_cluster",
]

# Fast timings so tests see allocations and retried updates within a fraction of a second.
DEFAULT_MASTER_FLAGS = ("--allocation_interval=100ms",)
DEFAULT_AGENT_FLAGS = ("--status_update_retry_interval_min=200ms",)
# Fixed agent resources make allocation tests independent of the machine running them.
DEFAULT_AGENT_RESOURCES = "cpus:4;mem:4096;disk:16384;ports:[31000-32000]"


def daemons_missing() -> str | None:
    """Why a real cluster cannot run here (a daemon module does not exist), or None."""
    for module in ("butte.master.main", "butte.agent.main"):
        if importlib.util.find_spec(module) is None:
            return f"{module} does not exist yet"
    return None


class ProcessHandle:
    """One process of a test cluster: where it listens and lives, and control over it."""

    def __init__(self, process: ManagedProcess, port: int, work_dir: Path) -> None:
        self._process = process
        self.name = process.name
        self.port = port
        self.work_dir = work_dir
        self.log_path = process.log_path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def running(self) -> bool:
        return self._process.running()

    def kill(self) -> None:
        """SIGKILL, like a crash: children (executors, tasks) are left running."""
        self._process.kill()

    def signal(self, sig: int) -> None:
        self._process.signal(sig)

    def terminate(self, grace: float = 5.0) -> int | None:
        """The process's stop signal (SIGTERM; an agent's SIGUSR1, which stops its tasks too)
        and wait up to ``grace`` seconds; the exit status or None."""
        self._process.expected_down = True
        self._process.signal(self._process.stop_signal)
        return self._process.wait(grace)

    def restart(self) -> None:
        """Starts the process again with the same flags (port, work dir); stops it first if
        it is still running."""
        if self._process.running():
            self.terminate()
            if self._process.running():
                self.kill()
        self._process.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ClusterHandle:
    """A running test cluster; see the module docstring."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.work_dir = cluster.work_dir
        self.master = ProcessHandle(cluster.master, cluster.port, cluster.work_dir / "master")
        self.agents = [
            ProcessHandle(proc, port, cluster.work_dir / proc.name)
            for proc, port in zip(cluster.agents, cluster.agent_ports, strict=True)
        ]

    @property
    def master_address(self) -> str:
        """``127.0.0.1:<port>``, for ``--master`` flags and client libraries."""
        return self.cluster.master_address

    @property
    def master_url(self) -> str:
        return self.cluster.master_url

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GETs a JSON document from the master (``/master/state``, ``/metrics/snapshot``)."""
        request = urllib.request.Request(
            f"{self.master_url}{path}", headers=self.cluster.http_headers
        )
        with urllib.request.urlopen(
            request, timeout=timeout, context=self.cluster.ssl_context
        ) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        return self.get("/master/state")

    def wait_until(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10.0,
        what: str = "condition",
    ) -> Any:
        """Polls ``/master/state`` until ``predicate(state)`` is truthy; returns its value.
        Raises TimeoutError naming ``what`` and showing the last state."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            with contextlib.suppress(OSError, ValueError):
                last = self.state()
                result = predicate(last)
                if result:
                    return result
            if time.monotonic() > deadline:
                shown = json.dumps(last)[:2000] if last is not None else "(no answer)"
                raise TimeoutError(f"{what} not reached within {timeout}s; state: {shown}")
            time.sleep(0.05)

    def wait_agents_active(self, count: int | None = None, timeout: float = 20.0) -> None:
        """Waits until ``count`` (default: all) agents are registered and active."""
        self.cluster.wait_ready(timeout, agents=count)

    def logs(self, max_lines: int = 200) -> str:
        """The tail of every process's log, for failure reports."""
        parts = []
        for proc in (self.master, *self.agents):
            lines = proc.log_text().splitlines()[-max_lines:]
            parts.append(f"----- {proc.name} ({proc.log_path}) -----\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        self.cluster.stop()


@contextlib.contextmanager
def start_cluster(
    tmp_path: str | os.PathLike[str],
    agents: int = 1,
    master_flags: Sequence[str] = (),
    agent_flags: Sequence[str] = (),
    resources: str | Sequence[str] | None = DEFAULT_AGENT_RESOURCES,
    ready_timeout: float = 20.0,
    http_auth: tuple[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ClusterHandle]:
    """Starts a master and ``agents`` agents under ``tmp_path`` and waits until they are all
    active; stops everything on exit, also when the body raised. The given flags come after
    the test defaults, so they override them. ``resources`` may list one string per agent.
    ``http_auth`` (principal, secret) goes with the handle's own reads of the master, for a
    master that authenticates them. ``env`` goes to every daemon's environment (the
    ``LIBPROCESS_SSL_*`` variables of a TLS cluster: the handle then reads over TLS too)."""
    cluster = LocalCluster(
        tmp_path,
        port=free_port(),
        agents=agents,
        resources=resources,
        master_flags=[*DEFAULT_MASTER_FLAGS, *master_flags],
        agent_flags=[*DEFAULT_AGENT_FLAGS, *agent_flags],
        env=env,
    )
    if http_auth is not None:
        cluster.http_headers["Authorization"] = basic_header(*http_auth)
    try:
        cluster.start()
        try:
            cluster.wait_ready(ready_timeout)
        except ClusterError as e:
            raise ClusterError(f"{e}\n{ClusterHandle(cluster).logs()}") from None
        yield ClusterHandle(cluster)
    finally:
        cluster.stop()
