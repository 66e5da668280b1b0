"""Coordination pieces that need no ZooKeeper: URL parsing, the SQLite and in-memory
registries, the standalone contender and the shell's leadership gate."""

from __future__ import annotations

import asyncio
import time

import pytest

from butte.coord import make_contender
from butte.coord.interface import (
    AdmitAgent,
    CoordinationError,
    MarkGone,
    MarkUnreachable,
    PruneAgents,
    RegistryError,
    RemoveAgent,
    UpdateAgentDrain,
    UpdateQuotas,
    UpdateWeights,
)
from butte.coord.leadership import Leadership, Role
from butte.coord.standalone import MemoryRegistry, SqliteRegistry, StandaloneContender
from butte.coord.url import is_zk_url, parse_zk_url
from butte.master.views import master_info

# -- URLs ---------------------------------------------------------------------------------------


def test_zk_urls_parse_like_mesos():
    url = parse_zk_url("zk://h1:2181,h2,10.0.0.3:2182/mesos")
    assert url.hosts == (("h1", 2181), ("h2", 2181), ("10.0.0.3", 2182))
    assert url.path == "/mesos" and url.credentials is None
    assert url.hosts_string == "h1:2181,h2:2181,10.0.0.3:2182"
    secret = parse_zk_url("zk://user:pa:ss@h1:1/a/b/")
    assert secret.credentials == ("user", "pa:ss") and secret.path == "/a/b"
    assert "pa:ss" not in str(secret)
    assert parse_zk_url("zk://[::1]:2181/m").hosts == (("[::1]", 2181),)
    assert is_zk_url(" ZK://x/y") and is_zk_url("file:///etc/zk") and not is_zk_url("h:5050")


def test_zk_url_from_a_file(tmp_path):
    path = tmp_path / "zk"
    path.write_text("zk://127.0.0.1:2181/mesos\n")
    assert parse_zk_url(f"file://{path}").path == "/mesos"
    with pytest.raises(ValueError, match="cannot read"):
        parse_zk_url(f"file://{tmp_path}/missing")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        parse_zk_url(f"file://{tmp_path}/empty")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zk://h1:2181", "needs a znode path"),
        ("zk://h1:2181/", "needs a znode path"),
        ("zk:///mesos", "bad ZooKeeper host"),
        ("zk://h1:99999/mesos", "out of range"),
        ("zk://h1:x/mesos", "bad ZooKeeper host"),
        ("zk://h1,,h2/mesos", "bad ZooKeeper host"),
        ("zk://h1/a//b", "bad znode path"),
        ("zk://h1/a/../b", "bad znode path"),
        ("zk://h1/zookeeper", "bad znode path"),
        ("zk://@h1/mesos", "user:password"),
        ("http://h1:5050", "expected zk://"),
        ("file://relative", "absolute path"),
    ],
)
def test_malformed_zk_urls_are_refused_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_zk_url(text)


# -- registries ---------------------------------------------------------------------------------


def test_sqlite_registry_survives_reopening(tmp_path):
    registry = SqliteRegistry(str(tmp_path))
    registry.open()
    registry.apply([AdmitAgent("a1", {"hostname": "h1"}), AdmitAgent("a2", {"hostname": "h2"})])
    registry.apply([MarkUnreachable("a2", 10.5), MarkGone("a3", 11.0)])
    registry.apply([UpdateWeights({"web": 2.0})])
    quotas = {"eng": {"guarantees": {"cpus": 1000}, "limits": {"cpus": 2000}}}
    registry.apply([UpdateQuotas(quotas)])
    drain = {"drain": {"state": "DRAINED", "config": {"mark_gone": False}}}
    registry.apply([UpdateAgentDrain("a1", drain), UpdateAgentDrain("a2", {"drain": None})])
    registry.apply([AdmitAgent("a4", {}), UpdateAgentDrain("a4", {"drain": None})])
    registry.apply([RemoveAgent("a4")])
    assert registry.statistics()["registry_writes"] == 7
    registry.close()
    again = SqliteRegistry(str(tmp_path))
    again.open()
    state = again.load()
    assert state.agents == {"a1": {"hostname": "h1"}}
    assert state.unreachable == {"a2": 10.5} and state.gone == {"a3": 11.0}
    assert state.weights == {"web": 2.0}
    assert state.quotas == quotas
    assert state.deactivated == {"a1": drain, "a2": {"drain": None}}
    again.apply([UpdateAgentDrain("a1", None), PruneAgents(unreachable=("a2",))])
    assert again.load().deactivated == {}
    again.close()


def test_sqlite_registry_is_one_masters_at_a_time(tmp_path):
    first = SqliteRegistry(str(tmp_path))
    first.open()
    with pytest.raises(CoordinationError, match="another master"):
        SqliteRegistry(str(tmp_path)).open()
    first.close()
    second = SqliteRegistry(str(tmp_path))
    second.open()
    second.close()
    with pytest.raises(RegistryError):
        second.apply([AdmitAgent("a", {})])


def test_sqlite_write_is_fast_enough(tmp_path):
    registry = SqliteRegistry(str(tmp_path))
    registry.open()
    started = time.perf_counter()
    for i in range(50):
        registry.apply([AdmitAgent(f"a{i}", {"hostname": f"h{i}"})])
    per_write = (time.perf_counter() - started) / 50
    registry.close()
    assert per_write < 0.05, per_write  # fsync'd commits: a few ms each on a normal disk


def test_make_contender_picks_the_backend(tmp_path):
    standalone = make_contender(None, str(tmp_path))
    assert isinstance(standalone, StandaloneContender)
    assert isinstance(standalone.registry, SqliteRegistry)
    memory = make_contender(None, str(tmp_path), registry="in_memory")
    assert isinstance(memory.registry, MemoryRegistry)
    with pytest.raises(ValueError, match="znode path"):
        make_contender("zk://h1:2181", str(tmp_path))


def test_standalone_contender_elects_itself(tmp_path):
    events: list[str] = []

    class Listener:
        def leader_changed(self, leader):
            events.append(f"leader {leader['id']}")

        def elected(self):
            events.append("elected")

        def leadership_lost(self, reason):
            events.append("lost")

    async def run() -> None:
        contender = StandaloneContender(SqliteRegistry(str(tmp_path)))
        await contender.start({"id": "m1"}, Listener())
        await asyncio.sleep(0)
        assert contender.confirm_leadership()
        await contender.stop()

    asyncio.run(run())
    assert events == ["leader m1", "elected"]


# -- the leadership gate --------------------------------------------------------------------------


class FakeContender:
    registry = MemoryRegistry()

    def __init__(self) -> None:
        self.confirm = True

    def confirm_leadership(self) -> bool:
        return self.confirm


def gate(stall_limit: float | None = None) -> tuple[Leadership, list[str], FakeContender]:
    lost: list[str] = []
    contender = FakeContender()
    leadership = Leadership(
        contender,  # type: ignore[arg-type]
        master_info("me", "127.0.0.1", 5050, "m1", "1.11.0"),
        on_elected=lambda: None,
        on_lost=lost.append,
        stall_limit=stall_limit,
    )
    return leadership, lost, contender


def test_standby_redirects_to_the_leader_or_says_none_is_elected():
    leadership, _, _ = gate()
    assert leadership.refusal("/api/v1/scheduler") == (503, "No leader elected", {})
    other = master_info("other", "10.0.0.2", 5051, "m2", "1.11.0")
    leadership.leader_changed(other)
    assert leadership.refusal("/api/v1/scheduler?x=1") == (
        307,
        "",
        {"Location": "//m2:5051/api/v1/scheduler?x=1"},
    )
    # A "leader" at our own address is a dead earlier run of us: no redirect loop.
    leadership.leader_changed(master_info("old-me", "127.0.0.1", 5050, "m1", "1.11.0"))
    assert leadership.refusal("/api/v1") == (503, "No leader elected", {})


def test_elected_master_serves_only_after_recovery():
    leadership, lost, _ = gate()
    leadership.elected()
    assert leadership.role is Role.RECOVERING
    assert leadership.refusal("/api/v1") == (503, "Master has not finished recovery", {})
    leadership.recovered()
    assert leadership.refusal("/api/v1") is None and leadership.acting()
    leadership.leadership_lost("ZooKeeper connection SUSPENDED while leading")
    assert lost == ["ZooKeeper connection SUSPENDED while leading"]
    assert not leadership.acting() and leadership.role is Role.ABDICATED
    leadership.elected()  # never again
    assert leadership.role is Role.ABDICATED
    assert leadership.refusal("/api/v1")[0] == 503


def test_another_leader_while_leading_means_abdication():
    leadership, lost, _ = gate()
    leadership.elected()
    leadership.recovered()
    leadership.leader_changed(master_info("other", "10.0.0.2", 5051, "m2", "1.11.0"))
    assert leadership.role is Role.ABDICATED and lost


def test_a_stalled_loop_must_reconfirm_leadership():
    leadership, lost, contender = gate(stall_limit=0.05)
    leadership.elected()
    leadership.recovered()
    time.sleep(0.1)  # the "freeze"
    assert leadership.acting()  # confirmed by the contender
    assert leadership.stalls_confirmed == 1
    contender.confirm = False
    time.sleep(0.1)
    assert not leadership.acting()
    assert leadership.role is Role.ABDICATED and "stalled" in lost[0]
