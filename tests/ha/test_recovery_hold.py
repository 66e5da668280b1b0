"""A newly elected master and the agents that reach it before its registry is recovered: an
in-process master whose registry load is held back, and simulated agents over real sockets.
No ZooKeeper: the standalone contender elects the master at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from butte.cli.local import free_port
from butte.coord.interface import Operation, RegistryState
from butte.coord.leadership import Role
from butte.coord.standalone import MemoryRegistry, StandaloneContender
from butte.master.server import MasterConfig, MasterServer
from butte.sim.agents import SimOptions, SimulatedCluster


class GatedRegistry(MemoryRegistry):
    """A registry whose `load` waits until the test opens the gate; counts writes."""

    def __init__(self, state: RegistryState) -> None:
        super().__init__()
        self.state = state
        self.gate = threading.Event()
        self.written: list[Operation] = []

    def load(self) -> RegistryState:
        assert self.gate.wait(30), "the test never opened the gate"
        return super().load()

    def apply(self, operations: Sequence[Operation]) -> None:
        self.written.extend(operations)
        super().apply(operations)


async def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _recovering_master(
    tmp_path, agents: int, options: SimOptions
) -> tuple[MasterServer, GatedRegistry, SimulatedCluster, set[str]]:
    """A master elected with every agent of a new simulated cluster in its registry, held
    in registry recovery until ``registry.gate`` opens; the agents are not started yet.
    Returns (master, registry, cluster, admitted agent ids)."""
    cluster = SimulatedCluster(f"127.0.0.1:{free_port()}", agents, options)
    admitted = {a.agent_id: {"id": {"value": a.agent_id}} for a in cluster.agents}
    registry = GatedRegistry(RegistryState(agents=dict(admitted)))
    port = int(cluster.masters[0].rsplit(":", 1)[1])
    config = MasterConfig(port=port, work_dir=str(tmp_path), registry="in_memory")
    server = MasterServer(config, contender=StandaloneContender(registry))
    await server.start()
    await _wait(lambda: server.leadership.role is Role.RECOVERING)
    return server, registry, cluster, set(admitted)


def test_agents_arriving_during_recovery_are_held_then_reregistered_without_writes(tmp_path):
    async def scenario() -> None:
        options = SimOptions.from_text(
            "cpus:1;mem:256", preload_tasks=3, registration_backoff_factor=0.05
        )
        server, registry, cluster, admitted = await _recovering_master(tmp_path, 4, options)
        try:
            await cluster.start()
            # Every agent is let in and has sent its re-registration; none is answered yet.
            await _wait(lambda: len(server._held_agent_messages) == 4)
            assert all(a.ws is not None for a in cluster.agents)
            assert cluster.registered_count() == 0
            assert server.machine.agents == {}

            registry.gate.set()
            await cluster.wait_registered(timeout=10)
            assert cluster.counters["connection_failures"] == 0  # never refused
            assert cluster.counters["reregistrations"] == 4
            assert set(server.machine.agents) == admitted
            assert server.machine.recovering_agents == set()
            tasks = sum(len(a.tasks) for a in server.machine.agents.values())
            assert tasks == 12
            assert registry.written == []  # all were admitted already
            server.machine.check_invariants()
        finally:
            await cluster.stop()
            await server.stop()

    asyncio.run(scenario())


def test_agent_that_leaves_during_recovery_is_never_seen(tmp_path):
    async def scenario() -> None:
        options = SimOptions.from_text("cpus:1;mem:256", preload_tasks=1)
        server, registry, cluster, admitted = await _recovering_master(tmp_path, 2, options)
        try:
            await cluster.start()
            await _wait(lambda: len(server._held_agent_messages) == 2)
            await cluster.stop()  # both go away before the master could answer
            await _wait(lambda: not server._held_agent_messages)
            registry.gate.set()
            await _wait(lambda: server.leadership.role is Role.LEADING)
            await asyncio.sleep(0.1)
            assert server.machine.agents == {}
            # Still expected back (reconciliation waits for them) until the timeout.
            assert server.machine.recovering_agents == admitted
            assert registry.written == []
        finally:
            await server.stop()

    asyncio.run(scenario())
