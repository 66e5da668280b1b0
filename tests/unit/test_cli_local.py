"""LocalCluster process management, with stand-in processes instead of real daemons."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from butte.cli.local import ClusterError, LocalCluster, ManagedProcess, descendant_pids, free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_free_port_is_bindable():
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat():
    """No outgoing connection can take a handed-out port before its server binds it: such a
    connection kept a ZooKeeper server from binding its quorum port, election after
    election, when it was elected leader."""
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(200)]
    # ... nor are they among the ports agents offer tasks by default.
    assert all(port < min(low, 31000) for port in ports)
    assert len(set(ports)) == len(ports)


def test_command_lines_follow_the_documented_shape(tmp_path):
    cluster = LocalCluster(tmp_path, port=6000, agents=2, resources="cpus:1", agent_flags=["--x"])
    master = cluster.master.argv
    assert master[1:] == [
        "-m",
        "butte",
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        "6000",
        "--work_dir",
        str(tmp_path / "master"),
    ]
    agent = cluster.agents[1].argv
    assert agent[1:6] == ["-m", "butte", "agent", "--master", "127.0.0.1:6000"]
    assert agent[agent.index("--port") + 1] == str(cluster.agent_ports[1])
    assert agent[agent.index("--work_dir") + 1] == str(tmp_path / "agent-1")
    assert agent[agent.index("--resources") + 1] == "cpus:1"
    assert agent[-1] == "--x"
    assert cluster.master_url == "http://127.0.0.1:6000"
    assert set(cluster.log_paths) == {"master", "agent-0", "agent-1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_stop_terminates_the_process_and_what_it_left_behind(tmp_path):
    # A "daemon" that ignores SIGTERM and has a child of its own (like an executor).
    script = "trap '' TERM; sleep 100 & echo started; wait"
    proc = ManagedProcess("daemon", ["sh", "-c", script], tmp_path / "d.log")
    proc.start()
    try:
        deadline = time.monotonic() + 10
        # The log starts with the command line, which itself contains "started".
        while "started" not in proc.log_tail().splitlines()[1:] and time.monotonic() < deadline:
            time.sleep(0.02)
        children = descendant_pids(proc.pid)
        assert children
    finally:
        proc.stop(grace=0.3)
    assert not proc.running()
    assert all(wait_gone(pid) for pid in children)
    assert proc.log_path.read_text().startswith("==== ")


def test_dead_process_is_reported_with_its_log(tmp_path):
    cluster = LocalCluster(tmp_path, port=free_port(), agents=0)
    cluster.master.argv = ["sh", "-c", "echo cannot bind the port; exit 3"]
    cluster.start()
    try:
        with pytest.raises(ClusterError, match="master exited with status 3(.|\n)*cannot bind"):
            cluster.wait_ready(timeout=5)
    finally:
        cluster.stop()


def test_wait_ready_times_out_when_the_master_never_answers(tmp_path):
    cluster = LocalCluster(tmp_path, port=free_port(), agents=0)
    cluster.master.argv = ["sleep", "100"]
    cluster.start()
    try:
        with pytest.raises(ClusterError, match="not active"):
            cluster.wait_ready(timeout=0.3)
    finally:
        cluster.stop()
    assert not cluster.master.running()


def test_a_killed_process_is_not_a_cluster_failure_and_can_restart(tmp_path):
    proc = ManagedProcess("agent-0", ["sleep", "100"], tmp_path / "a.log")
    proc.start()
    first = proc.pid
    proc.kill()
    assert not proc.running() and proc.expected_down
    proc.start()
    assert proc.running() and proc.pid != first and not proc.expected_down
    proc.stop()
    assert proc.log_path.read_text().count("==== ") == 2


def test_stop_ends_what_a_killed_process_left_running(tmp_path):
    # A SIGKILLed agent leaves its command launcher behind; stop ends it (and only it).
    proc = ManagedProcess("agent-0", ["sh", "-c", "sleep 100 & exec sleep 100"], tmp_path / "a.log")
    proc.start()
    deadline = time.monotonic() + 5
    while not descendant_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    [orphan] = descendant_pids(proc.pid)
    proc.kill()
    assert Path(f"/proc/{orphan}").exists()
    proc.stop()
    deadline = time.monotonic() + 5
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(orphan)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which only its reaper can clear, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_chronos_runs_beside_the_cluster_with_its_store_in_the_work_dir(tmp_path):
    from butte.cli.local import _chronos_process

    cluster = LocalCluster(tmp_path, port=6000, agents=0)
    argv = _chronos_process(cluster, 4401).argv
    assert argv[1:6] == ["-m", "butte", "chronos", "--master", "127.0.0.1:6000"]
    assert argv[argv.index("--http_port") + 1] == "4401"
    assert argv[argv.index("--work_dir") + 1] == str(tmp_path / "chronos")


def test_isolating_agents_get_a_cgroups_root_each(tmp_path):
    flags = ["--isolation", "cgroups/mem"]
    cluster = LocalCluster(tmp_path, port=6000, agents=2, agent_flags=flags)
    roots = [a.argv[a.argv.index("--cgroups_root") + 1] for a in cluster.agents]
    assert roots == [f"butte/local-{port}" for port in cluster.agent_ports]
    assert len(set(roots)) == 2
