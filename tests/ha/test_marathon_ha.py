"""``butte marathon --zk``: two instances elect a leader in a real ZooKeeper, the standby
proxies the API to the leader, state lives in ZooKeeper, and when the leader is SIGKILLed
the standby takes over, reconciles and launches nothing twice."""

from __future__ import annotations

import time

import pytest

from butte.testing.marathon import start_marathon

pytestmark = [pytest.mark.ha, pytest.mark.integration]

SESSION_MS = 2000
ACTIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


def marathon_tasks(cluster) -> tuple[set[str], list[str]]:
    active, done = set(), []
    for fw in cluster.state()["frameworks"]:
        if fw["name"] == "marathon":
            active |= {t["id"] for t in fw["tasks"] if t["state"] in ACTIVE}
            done += [t["id"] for t in fw["tasks"] if t["state"] not in ACTIVE]
            done += [t["id"] for t in fw.get("completed_tasks", [])]
    return active, done


def test_standby_proxies_and_takes_over(cluster, zookeeper, tmp_path):
    flags = ["--zk", zookeeper.url("/marathon"), "--zk_session_timeout", str(SESSION_MS)]
    with start_marathon(cluster.master_address, tmp_path / "a", flags) as first:
        with start_marathon(cluster.master_address, tmp_path / "b", flags) as second:
            leader = f"127.0.0.1:{first.port}"
            assert first.get("/v2/leader") == {"leader": leader}
            assert second.get("/v2/leader") == {"leader": leader}
            assert second.get("/v2/info")["elected"] is True  # proxied: the leader answers
            app = {"id": "/ha/web", "cmd": "sleep 600", "cpus": 0.05, "mem": 16, "instances": 3}
            status, _ = second.request("POST", "/v2/apps", app)  # through the standby
            assert status == 201

            def running() -> bool:
                a = second.get("/v2/apps/ha/web")["app"]
                return a["tasksRunning"] == 3 and not a["deployments"]

            second.wait_until(running, what="3 running")
            ids = {t["id"] for t in second.get("/v2/apps/ha/web/tasks")["tasks"]}

            first.kill()
            killed = time.monotonic()
            second.wait_until(
                lambda: second.get("/v2/leader") == {"leader": f"127.0.0.1:{second.port}"},
                timeout=30,
                what="standby elected",
            )
            second.wait_until(running, timeout=30, what="served by the new leader")
            took = time.monotonic() - killed
            # Session timeout + reload + resubscribe; generous for a loaded 2-core box.
            assert took < SESSION_MS / 1000 + 10, f"failover took {took:.1f}s"
            assert {t["id"] for t in second.get("/v2/apps/ha/web/tasks")["tasks"]} == ids
            active, done = marathon_tasks(cluster)
            assert active == ids and done == []
            # The new leader acts: a scale goes through.
            status, _ = second.request("PUT", "/v2/apps/ha/web", {"instances": 4})
            assert status == 200
            second.wait_until(
                lambda: second.get("/v2/apps/ha/web")["app"]["tasksRunning"] == 4, what="scaled"
            )


def test_master_given_as_zk_url(cluster_factory, zookeeper, tmp_path):
    """``--master zk://.../mesos``: marathon finds the leading master through ZooKeeper."""
    url = zookeeper.url("/mesos")
    cluster = cluster_factory(master_flags=[f"--zk={url}", "--quorum=1"])
    with start_marathon(url, tmp_path) as m:
        app = {"id": "/zk/app", "cmd": "sleep 600", "cpus": 0.05, "mem": 16}
        assert m.request("POST", "/v2/apps", app)[0] == 201
        m.wait_until(lambda: m.get("/v2/apps/zk/app")["app"]["tasksRunning"] == 1, what="running")
        active, _ = marathon_tasks(cluster)
        assert len(active) == 1


def test_zookeeper_store_roundtrip_and_fence(zookeeper):
    from kazoo.client import KazooClient

    from butte.frameworks.marathon.store import ZooKeeperStore

    client = KazooClient(hosts=zookeeper.hosts)
    client.start()
    try:
        client.ensure_path("/m/leader")
        fence = client.create("/m/leader/json.info_", b"{}", ephemeral=True, sequence=True)
        store = ZooKeeperStore(client, "/m", lambda: fence)
        assert list(store.load()) == []
        records = [("instance", f"/a.instance-{i}", {"n": i}) for i in range(1500)]
        records += [("app", "/team/a", {"id": "/team/a"}), ("meta", "framework_id", "fw-1")]
        store.write(records)
        store.write([("instance", "/a.instance-7", None), ("app", "/team/a", None)])
        loaded = {(k, key): v for k, key, v in ZooKeeperStore(client, "/m", lambda: fence).load()}
        assert len([k for k in loaded if k[0] == "instance"]) == 1499
        assert ("instance", "/a.instance-7") not in loaded and ("app", "/team/a") not in loaded
        assert loaded[("instance", "/a.instance-8")] == {"n": 8}
        assert loaded[("meta", "framework_id")] == "fw-1"
        client.delete(fence)  # deposed: no write may succeed any more
        with pytest.raises(RuntimeError):
            store.write([("app", "/b", {"id": "/b"})])
    finally:
        client.stop()
        client.close()


def test_standby_copy_follows_every_change(zookeeper):
    """A standby's copy (`follow` .. `catch_up`) equals a full `load` after creations,
    updates, deletions and re-creations made while it followed, on its own session."""
    from kazoo.client import KazooClient

    from butte.frameworks.marathon.store import ZooKeeperStore

    writer, reader = KazooClient(hosts=zookeeper.hosts), KazooClient(hosts=zookeeper.hosts)
    writer.start()
    reader.start()
    try:
        writer.ensure_path("/f/leader")
        fence = writer.create("/f/leader/json.info_", b"{}", ephemeral=True, sequence=True)
        store = ZooKeeperStore(writer, "/f", lambda: fence)
        assert list(store.load()) == []  # as a leader does first (it creates the kinds)
        store.write([("instance", f"/a.i-{i}", {"n": i}) for i in range(300)])
        standby = ZooKeeperStore(reader, "/f", lambda: None)
        standby.follow()
        store.write([("instance", f"/a.i-{i}", {"n": -i}) for i in range(0, 300, 3)])
        store.write([("instance", f"/a.i-{i}", None) for i in range(1, 300, 3)])
        store.write([("app", "/team/a", {"id": "/team/a"}), ("meta", "framework_id", "fw")])
        store.write([("instance", "/a.i-4", {"n": "again"}), ("app", "/team/a", None)])
        store.write([("app", "/team/a", {"id": "/team/a", "v": 2})])
        for i in range(50):  # many quick updates of one record: the last one counts
            store.write([("deployment", "d1", {"step": i})])
        for i in range(20):  # deleted and created again, quickly, with other changes
            store.write([("group", "/g", None), ("instance", "/a.i-9", {"n": i})])
            store.write([("group", "/g", {"round": i}), ("groupver", f"/g {i}", {"i": i})])
        copy = standby.catch_up()
        full = list(ZooKeeperStore(writer, "/f", lambda: fence).load())
        assert sorted(copy, key=repr) == sorted(full, key=repr)
        loaded = {(k, key): v for k, key, v in copy}
        assert loaded[("instance", "/a.i-4")] == {"n": "again"}
        assert loaded[("instance", "/a.i-3")] == {"n": -3}
        assert ("instance", "/a.i-7") not in loaded
        assert loaded[("app", "/team/a")] == {"id": "/team/a", "v": 2}
        assert loaded[("deployment", "d1")] == {"step": 49}
        assert loaded[("group", "/g")] == {"round": 19} and loaded[("instance", "/a.i-9")] == {
            "n": 19
        }
        assert len(copy) == 300 - 100 + 1 + 3 + 1 + 20
        # the copy's records are known to exist: the new leader updates them in place
        writer.delete(fence)
        fence = reader.create("/f/leader/json.info_", b"{}", ephemeral=True, sequence=True)
        standby._fence = lambda: fence
        standby.write([("instance", "/a.i-0", {"n": "mine"}), ("instance", "/a.i-3", None)])
        after = {(k, key): v for k, key, v in ZooKeeperStore(reader, "/f", lambda: fence).load()}
        assert after[("instance", "/a.i-0")] == {"n": "mine"}
        assert ("instance", "/a.i-3") not in after
    finally:
        for client in (writer, reader):
            client.stop()
            client.close()


def test_standby_copy_after_a_connection_loss(zookeeper):
    """A connection loss (kazoo forgets every watch, firing each without a path) makes the
    standby read every record on election instead of hanging on reads never answered."""
    from kazoo.client import KazooClient
    from kazoo.protocol.connection import _CONNECTION_DROP

    from butte.frameworks.marathon.store import ZooKeeperStore

    writer, reader = KazooClient(hosts=zookeeper.hosts), KazooClient(hosts=zookeeper.hosts)
    writer.start()
    reader.start()
    try:
        writer.ensure_path("/c/leader")
        fence = writer.create("/c/leader/json.info_", b"{}", ephemeral=True, sequence=True)
        store = ZooKeeperStore(writer, "/c", lambda: fence)
        assert list(store.load()) == []
        store.write([("instance", f"/a.i-{i}", {"n": i}) for i in range(20)])
        standby = ZooKeeperStore(reader, "/c", lambda: None)
        standby.follow()
        reader._call(_CONNECTION_DROP, reader.handler.async_result())  # as kazoo's own tests
        deadline = time.monotonic() + 10
        while not reader.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # reconnected
        store.write([("instance", "/a.i-1", {"n": "new"}), ("instance", "/a.i-2", None)])
        copy = standby.catch_up(timeout=5)  # TimeoutError before
        full = list(ZooKeeperStore(writer, "/c", lambda: fence).load())
        assert sorted(copy, key=repr) == sorted(full, key=repr)
        assert ("instance", "/a.i-1", {"n": "new"}) in copy and len(copy) == 19
    finally:
        for client in (writer, reader):
            client.stop()
            client.close()
