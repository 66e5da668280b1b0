"""The ZooKeeper contender, registry and detector against a real standalone server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from unittest.mock import ANY

import pytest
from kazoo.client import KazooClient

from butte.coord.detector import LeaderDetector, leader_address
from butte.coord.interface import (
    AdmitAgent,
    CoordinationError,
    MarkGone,
    MarkUnreachable,
    RegistryError,
    UpdateAgentDrain,
    UpdateQuotas,
    UpdateWeights,
)
from butte.coord.url import parse_zk_url
from butte.coord.zk_registry import ZooKeeperRegistry
from butte.coord.zookeeper import MEMBER, ZooKeeperContender
from butte.master.views import master_info

pytestmark = pytest.mark.ha


class Listener:
    """Records what a contender reports, and wakes waiters."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

    def leader_changed(self, leader):
        self.events.append(("leader", leader and leader["id"]))
        self.changed.set()

    def elected(self):
        self.events.append(("elected", None))
        self.changed.set()

    def leadership_lost(self, reason):
        self.events.append(("lost", reason))
        self.changed.set()

    async def wait_for(self, kind: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for event, value in self.events:
                if event == kind:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind} event: {self.events}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.1)
            except TimeoutError:
                pass


def info(name: str, port: int) -> dict:
    return master_info(name, "127.0.0.1", port, "127.0.0.1", "1.11.0")


def kazoo(zookeeper) -> KazooClient:
    client = KazooClient(zookeeper.hosts)
    client.start(10)
    return client


def test_election_in_mesos_layout_and_handover(zookeeper):
    url = parse_zk_url(zookeeper.url("/mesos"))

    async def run() -> None:
        first, second = ZooKeeperContender(url, 2, 5), ZooKeeperContender(url, 2, 5)
        one, two = Listener(), Listener()
        await first.start(info("m1", 5050), one)
        await second.start(info("m2", 5051), two)
        await one.wait_for("elected")
        assert await two.wait_for("leader") == "m1"
        assert first.confirm_leadership() and not second.confirm_leadership()
        # Exactly the Mesos layout: only json.info_<10 digits> children, MasterInfo JSON.
        client = kazoo(zookeeper)
        children = sorted(client.get_children("/mesos"))
        assert len(children) == 2 and all(MEMBER.match(c) for c in children)
        data = json.loads(client.get(f"/mesos/{children[0]}")[0])
        assert data["address"] == {"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": 5050}
        assert data["ip"] == 16777343 and data["pid"] == "master@127.0.0.1:5050"
        client.stop()
        started = time.monotonic()
        await first.stop()  # resigns: the next one leads at once
        await two.wait_for("elected")
        assert time.monotonic() - started < 1.0
        assert second.confirm_leadership()
        await second.stop()

    asyncio.run(run())


def test_registry_lives_outside_the_election_path_and_scales(zookeeper):
    url = parse_zk_url(zookeeper.url("/mesos"))
    agents = 10_000

    async def run() -> dict[str, float]:
        contender = ZooKeeperContender(url, 2, 5)
        listener = Listener()
        await contender.start(info("m1", 5050), listener)
        await listener.wait_for("elected")
        registry = contender.registry
        assert isinstance(registry, ZooKeeperRegistry)
        registry.load()
        agent_info = {"hostname": "h", "port": 5051, "resources": [{"name": "cpus"}] * 8}
        registry.apply([AdmitAgent(f"a{i}", agent_info) for i in range(200, agents)])
        started = time.perf_counter()
        for i in range(200):  # one write per registration (as the master does), 10k known
            registry.apply([AdmitAgent(f"a{i}", {**agent_info, "id": {"value": f"a{i}"}})])
        single = (time.perf_counter() - started) / 200
        registry.apply([MarkUnreachable("a1", 5.0), MarkGone("a2", 6.0)])
        drain = {"drain": {"state": "DRAINING", "config": {"mark_gone": True}}}
        registry.apply([UpdateAgentDrain("a1", drain), UpdateAgentDrain("a3", {"drain": None})])
        registry.apply([UpdateAgentDrain("a4", {"drain": None}), UpdateAgentDrain("a3", None)])
        registry.apply([MarkGone("a4", 7.0)])
        quotas = {"eng": {"guarantees": {"cpus": 1000}, "limits": {}}}
        registry.apply(
            [UpdateWeights({"web": 2.0}), UpdateQuotas(quotas), AdmitAgent("odd/id", {})]
        )
        loaded_at = time.perf_counter()
        state = ZooKeeperRegistry(contender.client, "/mesos", lambda: None).load()
        load = time.perf_counter() - loaded_at
        assert len(state.agents) == agents - 3 + 1 and "odd/id" in state.agents
        assert state.agents["a0"]["id"] == {"value": "a0"}
        assert state.unreachable == {"a1": 5.0} and state.gone == {"a2": 6.0, "a4": 7.0}
        assert state.deactivated == {"a1": drain}
        assert state.weights == {"web": 2.0}
        assert state.quotas == quotas
        client = kazoo(zookeeper)
        assert all(MEMBER.match(c) for c in client.get_children("/mesos"))
        client.stop()
        await contender.stop()
        return {"single_write": single, "load": load}

    timings = asyncio.run(run())
    print(
        f"ZK registry: one write {timings['single_write'] * 1000:.2f} ms, load of 10k agents "
        f"{timings['load']:.2f} s"
    )
    assert timings["single_write"] < 0.05


def test_writes_are_fenced_by_the_election_node(zookeeper):
    url = parse_zk_url(zookeeper.url("/fenced"))

    async def run() -> None:
        contender = ZooKeeperContender(url, 2, 5)
        listener = Listener()
        await contender.start(info("m1", 5050), listener)
        await listener.wait_for("elected")
        contender.registry.load()
        contender.registry.apply([AdmitAgent("a", {})])
        contender.client.delete(contender.own_path)  # as if our session had expired
        with pytest.raises(RegistryError):
            contender.registry.apply([AdmitAgent("b", {})])
        assert "disappeared" in await listener.wait_for("lost")
        await contender.stop()

    asyncio.run(run())


def test_leader_losing_its_connection_is_told_at_once(zookeeper):
    url = parse_zk_url(zookeeper.url("/mesos"))

    async def run() -> None:
        contender = ZooKeeperContender(url, 2, 5)
        listener = Listener()
        await contender.start(info("m1", 5050), listener)
        await listener.wait_for("elected")
        zookeeper.kill(0)
        reason = await listener.wait_for("lost", timeout=5)
        assert "SUSPENDED" in reason
        assert not contender.confirm_leadership()
        await contender.stop()

    asyncio.run(run())


def test_a_standby_that_loses_its_candidacy_contends_again(zookeeper):
    # Mesos' master: "Lost candidacy as a follower... Contend again"; only a leader exits.
    url = parse_zk_url(zookeeper.url("/rejoin"))
    client = kazoo(zookeeper)

    async def run() -> None:
        leader, standby = ZooKeeperContender(url, 2, 5), ZooKeeperContender(url, 2, 5)
        leading, standing = Listener(), Listener()
        await leader.start(info("m1", 5050), leading)
        await leading.wait_for("elected")
        await standby.start(info("m2", 5051), standing)
        await standing.wait_for("leader")
        # Its node deleted (by an operator, say): a new one.
        first = standby.own_path
        client.delete(first)
        await wait_until(lambda: standby.own_path != first and client.exists(standby.own_path))
        # Its session expired (another client closes the same session): a new one again.
        second = standby.own_path
        session_id, password = standby.client.client_id
        twin = KazooClient(zookeeper.hosts, client_id=(session_id, password))
        twin.start(10)
        twin.stop()
        twin.close()
        await wait_until(lambda: standby.own_path != second and client.exists(standby.own_path))
        assert ("lost", ANY) not in standing.events
        # It still follows the election: it leads once the leader goes.
        await leader.stop()
        await standing.wait_for("elected")
        await standby.stop()

    asyncio.run(run())
    client.stop()


async def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def test_detector_follows_the_lowest_member(zookeeper):
    url = parse_zk_url(zookeeper.url("/detect"))
    client = kazoo(zookeeper)

    async def run() -> None:
        seen: list[str | None] = []
        detector = LeaderDetector(url, session_timeout=2, on_change=seen.append)
        await detector.start()
        with pytest.raises(TimeoutError):
            await detector.wait_leader(0.2)
        first = client.create(
            "/detect/json.info_", json.dumps(info("m1", 6001)).encode(), sequence=True
        )
        assert await detector.wait_leader(5) == "127.0.0.1:6001"
        client.create("/detect/json.info_", json.dumps(info("m2", 6002)).encode(), sequence=True)
        client.delete(first)
        await detector.wait_change(5)
        assert detector.leader == "127.0.0.1:6002"
        assert seen == ["127.0.0.1:6001", "127.0.0.1:6002"]
        await detector.stop()

    asyncio.run(run())
    client.stop()


def test_leader_address_falls_back_to_pid():
    assert leader_address({"pid": "master@10.0.0.1:5050"}) == "10.0.0.1:5050"
    assert leader_address({"address": {"ip": "10.0.0.2", "port": 5051}}) == "10.0.0.2:5051"
    assert leader_address({}) is None


def test_unreachable_ensemble_is_a_clear_error():
    url = parse_zk_url("zk://127.0.0.1:1/mesos")

    async def run() -> None:
        with pytest.raises(CoordinationError, match="cannot connect to ZooKeeper at 127.0.0.1:1"):
            await LeaderDetector(url, connect_timeout=1).start()
        with pytest.raises(CoordinationError, match="within 1s"):
            await ZooKeeperContender(url, 2, 1).start(info("m", 1), Listener())

    asyncio.run(run())
