"""Real processes around coordination: bad input, standby masters, the standalone registry
across a restart, and `butte run` following the leader through ZooKeeper."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from kazoo.client import KazooClient

from butte.testing.cluster import free_port
from butte.testing.zookeeper import MasterGroup

BUTTE = [sys.executable, "-m", "butte"]


def run_butte(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BUTTE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip()


# -- bad input --------------------------------------------------------------------------------


def test_malformed_zk_urls_are_refused_by_every_command(tmp_path):
    master = run_butte("master", "--zk", "zk://h1:2181", "--work_dir", str(tmp_path / "m"))
    assert master.returncode == 2
    assert output_of(master) == (
        "butte master: --zk: 'zk://h1:2181' needs a znode path, e.g. zk://host:2181/mesos"
    )
    agent = run_butte("agent", "--master", "zk://h1:x/mesos", "--work_dir", str(tmp_path / "a"))
    assert agent.returncode == 2 and "bad ZooKeeper host 'h1:x'" in output_of(agent)
    job = run_butte("run", "--master", "zk://", "--name", "j", "--command", "true")
    assert job.returncode == 2 and "bad --master" in output_of(job)
    assert "Traceback" not in output_of(master) + output_of(agent) + output_of(job)


def test_unreachable_ensemble_is_a_one_line_error(tmp_path):
    url = f"zk://127.0.0.1:{free_port()}/mesos"
    started = time.monotonic()
    # Ports of their own: the defaults (5050, 5051) may be taken by a cluster on this machine.
    master = run_butte(
        "master",
        *("--zk", url, "--zk_session_timeout=1secs", "--port", str(free_port())),
        *("--work_dir", str(tmp_path / "m")),
    )
    agent = run_butte(
        "agent",
        *("--master", url, "--zk_session_timeout=1secs", "--port", str(free_port())),
        *("--work_dir", str(tmp_path / "a")),
    )
    job = run_butte(
        "run", "--master", url, "--connect_timeout=1", "--name", "j", "--command", "true"
    )
    assert time.monotonic() - started < 25
    for result in (master, agent, job):
        text = output_of(result)
        assert result.returncode != 0, text
        assert "cannot connect to ZooKeeper at 127.0.0.1:" in text, text
        assert "Traceback" not in text
    assert len(output_of(master).splitlines()) == 1


# -- standby masters ----------------------------------------------------------------------------


def http(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.ha
def test_standby_redirects_to_the_leader_and_says_who_leads(zookeeper, tmp_path):
    flags = ["--zk_session_timeout=2secs"]
    with MasterGroup(tmp_path, zookeeper.url("/mesos"), 2, flags=flags) as group:
        leader = group.wait_leader(30)
        standby = 1 - leader
        base = f"http://{group.addresses[standby]}"
        leader_address = group.addresses[leader]
        state = group.wait_state(standby, lambda s: s.get("leader"))
        assert state["leader"] == f"master@{leader_address}"
        assert state["leader_info"]["port"] == group.ports[leader]
        assert state["frameworks"] == [] and state["pid"] != state["leader"]
        for path in ("/api/v1/scheduler", "/master/api/v1/scheduler", "/api/v1"):
            status, headers, _ = http(base + path, b'{"type":"SUBSCRIBE"}')
            assert status == 307, path
            assert headers["Location"] == f"//{leader_address}{path}"
        status, headers, _ = http(base + "/api/v1/internal/agent")
        assert (status, headers["Location"]) == (307, f"//{leader_address}/api/v1/internal/agent")
        status, headers, _ = http(base + "/master/redirect")
        assert (status, headers["Location"]) == (307, f"//{leader_address}")
        status, headers, _ = http(f"http://{leader_address}/redirect")
        assert (status, headers["Location"]) == (307, f"//{leader_address}")


@pytest.mark.ha
def test_no_known_leader_means_503(zookeeper, tmp_path):
    client = KazooClient(zookeeper.hosts)
    client.start(10)
    # A member without an address holds the lowest sequence: nobody usable leads.
    client.create("/mesos/json.info_", b"{}", ephemeral=True, sequence=True, makepath=True)
    try:
        with MasterGroup(tmp_path, zookeeper.url("/mesos"), 1) as group:
            base = f"http://{group.addresses[0]}"
            group.wait_state(0)
            status, _, body = http(base + "/api/v1/scheduler", b'{"type":"SUBSCRIBE"}')
            assert (status, body) == (503, b"No leader elected")
            assert http(base + "/redirect")[0] == 503
            state = group.state(0)
            assert state is not None and state.get("leader") in (None, "")
    finally:
        client.stop()


# -- the standalone registry --------------------------------------------------------------------


def test_standalone_master_recovers_its_registry(cluster_factory):
    cluster = cluster_factory(agents=2, master_flags=["--agent_reregister_timeout=3secs"])
    ids = sorted(a["id"] for a in cluster.state()["slaves"])
    cluster.master.kill()
    cluster.agents[1].kill()
    cluster.master.restart()
    # /state is served while the registry is still being read; the master names itself
    # leader only once it has recovered.
    state = cluster.wait_until(
        lambda s: s if (s.get("leader_info") or {}).get("id") == s["id"] else None,
        what="master back and its registry recovered",
    )
    expected = {r["id"] for r in state["recovered_slaves"]} | {a["id"] for a in state["slaves"]}
    assert expected == set(ids)
    cluster.wait_until(
        lambda s: (
            [a["id"] for a in s["slaves"] if a["active"]] == [ids[0]]
            or [a["id"] for a in s["slaves"] if a["active"]] == [cluster_agent_id(cluster, 0)]
        ),
        what="agent-0 re-registered",
    )
    cluster.wait_until(
        lambda s: s["unreachable_slaves"] == 1 and s["recovered_slaves"] == [],
        timeout=10,
        what="agent-1 marked unreachable after --agent_reregister_timeout",
    )
    assert (cluster.master.work_dir / "registry.sqlite3").exists()


def cluster_agent_id(cluster, index: int) -> str:
    with urllib.request.urlopen(f"{cluster.agents[index].url}/state", timeout=5) as response:
        return json.loads(response.read())["id"]


# -- butte run over ZooKeeper -------------------------------------------------------------------


@pytest.mark.ha
@pytest.mark.timeout(90)
def test_butte_run_follows_the_leader_across_a_failover(ha_cluster_factory):
    cluster = ha_cluster_factory(agents=1)
    job = subprocess.Popen(
        [*BUTTE, "run", "--master", cluster.zk_url, "--name", "ha-job", "--checkpoint"]
        + ["--command", "sleep 8", "--resources", "cpus:0.1;mem:32", "--connect_timeout=20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cluster.wait_state(
            lambda s: any(
                t["state"] == "TASK_RUNNING" for f in s["frameworks"] for t in f["tasks"]
            ),
            30,
            "the job's task running",
        )
        leader = cluster.masters.wait_leader(10)
        cluster.masters.kill(leader)
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output
    assert "TASK_FINISHED" in output
