"""A Marathon app on Docker's bridge network with port mappings, end to end: `butte marathon`
against a real master and an agent with the Docker containerizer, and a private Docker daemon
(`butte.testing.docker`) run inside a network namespace of this test's own, with a bridge
there, whose published ports listen on that namespace's 127.0.0.1 only. The app is reached
through the host ports its port mappings got (docs/marathon.md), from inside the namespace:
the containers' bridge addresses exist only there, and nothing in the host namespace ever
uses them (the agent and the client talk to the daemon through its unix socket)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from butte.testing.cluster import ClusterHandle, start_cluster
from butte.testing.docker import DOCKER, Dockerd, dockerd, in_netns
from butte.testing.marathon import MarathonHandle, start_marathon
from butte.testing.require import require

pytestmark = pytest.mark.integration

# The daemon's bridge (the test daemon has none: --bridge=none), on a private subnet, both
# inside the namespace only.
BRIDGE = "bh1mbr"
SUBNET = "10.235.77.1/24"
# The agent's ports: this test's range (23500-23999), one of them asked for by number.
PORTS = (23600, 23609)
FIXED = 23605
IP = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""

# Runs in the namespace: GET / on 127.0.0.1:argv[1], the body on stdout.
_GET = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/', timeout=5) as r:\n"
    "    sys.stdout.write(r.read().decode())\n"
)


@contextlib.contextmanager
def bridged_daemon() -> Iterator[Dockerd]:
    """A private dockerd in a fresh network namespace (``Dockerd.netns``) whose bridge network
    is `BRIDGE` there, publishing on the namespace's 127.0.0.1. The namespace, and the bridge
    with it, is deleted afterwards, also when the block fails; its name is random, so one an
    earlier run left behind is in nobody's way."""
    require(None if IP else "the ip command (iproute2) is missing", "iproute2")
    netns = f"bh1m-{secrets.token_hex(6)}"
    subprocess.run([IP, "netns", "add", netns], check=True)
    try:
        inside = [IP, "-n", netns]
        subprocess.run([*inside, "link", "set", "lo", "up"], check=True)
        subprocess.run([*inside, "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run([*inside, "addr", "add", SUBNET, "dev", BRIDGE], check=True)
        subprocess.run([*inside, "link", "set", BRIDGE, "up"], check=True)
        # Later flags win: the bridge replaces the fixture's --bridge=none. The daemon is
        # stopped when this block ends, before the namespace goes.
        with dockerd(extra=[f"--bridge={BRIDGE}", "--ip=127.0.0.1"], netns=netns) as d:
            yield d
    finally:
        subprocess.run([IP, "netns", "del", netns], capture_output=True)


@contextlib.contextmanager
def bridged_cluster(
    tmp_path: Path, ports: tuple[int, int] = PORTS
) -> Iterator[tuple[Dockerd, str, ClusterHandle, MarathonHandle]]:
    """A master, an agent running DOCKER tasks on `bridged_daemon` with the offered ``ports``
    (a range), and `butte marathon` on them: (daemon, the busybox image, cluster, marathon)."""
    with bridged_daemon() as d:
        image = d.load_busybox()
        flags = (
            "--containerizers",
            "docker,mesos",
            "--docker",
            DOCKER,
            "--docker_socket",
            d.socket,
        )
        resources = f"cpus:4;mem:4096;disk:16384;ports:[{ports[0]}-{ports[1]}]"
        with (
            start_cluster(tmp_path, agent_flags=flags, resources=resources) as cluster,
            start_marathon(cluster.master_address, tmp_path) as marathon,
        ):
            yield d, image, cluster, marathon


def fetch(d: Dockerd, port: int) -> str:
    """GET / on 127.0.0.1:`port` inside the daemon's namespace; the body. OSError when it
    does not answer (what `wait_until` retries on)."""
    assert d.netns is not None
    try:
        done = subprocess.run(
            [*in_netns(d.netns), sys.executable, "-c", _GET, str(port)],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired as e:
        raise OSError(f"GET :{port} in {d.netns}: no answer in 15 s") from e
    if done.returncode != 0:
        raise OSError(f"GET :{port} in {d.netns}: {done.stderr.strip()[-500:]}")
    return done.stdout


def refused_on_host(port: int) -> bool:
    """Whether 127.0.0.1:`port` in the host namespace refuses a connection (nothing published
    there)."""
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_bridged_app_is_reached_through_its_mapped_host_ports(tmp_path: Path) -> None:
    with bridged_cluster(tmp_path) as (d, image, cluster, marathon):
        # Each httpd serves the task's port variables; the second listens on the port
        # Marathon maps a container port 0 to: the host port itself.
        script = (
            "mkdir -p /www && "
            'echo "$PORT0 $PORT1 $PORT_8080 $PORT_HTTP $PORT_FIXED $PORTS" > /www/index.html'
            " && httpd -p 8080 -h /www && exec httpd -f -p $PORT1 -h /www"
        )
        status, body = marathon.request(
            "POST",
            "/v2/apps",
            {
                "id": "/web",
                "cmd": script,
                "cpus": 0.1,
                "mem": 32,
                "container": {  # Marathon 1.4's form
                    "type": "DOCKER",
                    "docker": {
                        "image": image,
                        "network": "BRIDGE",
                        "portMappings": [
                            {"containerPort": 8080, "hostPort": 0, "name": "http"},
                            {"containerPort": 0, "hostPort": FIXED, "name": "fixed"},
                        ],
                    },
                },
            },
        )
        assert status == 201, body
        # rendered as Marathon 1.5+ renders it
        assert body["networks"] == [{"mode": "container/bridge"}]
        assert "portDefinitions" not in body and "network" not in body["container"]["docker"]
        mappings = body["container"]["portMappings"]
        assert [(m["containerPort"], m["hostPort"]) for m in mappings] == [
            (8080, 0),
            (0, FIXED),
        ]
        assert all(10000 <= m["servicePort"] <= 20000 for m in mappings)

        tasks = marathon.wait_until(
            lambda: [
                t
                for t in marathon.get("/v2/apps/web/tasks")["tasks"]
                if t["state"] == "TASK_RUNNING"
            ],
            60,
            "the bridged task to run",
        )
        [task] = tasks
        host_port, fixed = task["ports"]
        assert fixed == FIXED and PORTS[0] <= host_port <= PORTS[1] and host_port != FIXED
        assert task["servicePorts"] == [m["servicePort"] for m in mappings]
        expected = f"{host_port} {FIXED} {host_port} {host_port} {FIXED} {host_port},{FIXED}"
        # through docker-proxy on the host ports, into the container's ports 8080 and
        # FIXED, all inside the namespace
        answer = marathon.wait_until(lambda: fetch(d, host_port), 20, "the mapped port")
        assert answer.strip() == expected
        assert fetch(d, FIXED).strip() == expected
        # and only there: the host namespace has neither the ports nor the bridge
        assert refused_on_host(host_port) and refused_on_host(FIXED)
        assert subprocess.run([IP, "link", "show", BRIDGE], capture_output=True).returncode
        # the daemon itself (nsenter execs it: the pid it writes is the one we stop) runs
        # in the test's namespace
        assert int((d.root / "dockerd.pid").read_text()) == d.proc.pid
        netns = os.stat(f"/run/netns/{d.netns}")
        assert os.stat(f"/proc/{d.proc.pid}/ns/net").st_ino == netns.st_ino

        # the TaskInfo the master got
        state = cluster.state()
        [info] = [t for f in state["frameworks"] for t in f["tasks"]]
        docker = info["container"]["docker"]
        assert docker["network"] == "BRIDGE"
        assert sorted(
            (m["host_port"], m["container_port"], m["protocol"]) for m in docker["port_mappings"]
        ) == sorted([(host_port, 8080, "tcp"), (FIXED, FIXED, "tcp")])
        ports = [(p["number"], p.get("name")) for p in info["discovery"]["ports"]["ports"]]
        assert ports == [(host_port, "http"), (FIXED, "fixed")]
        assert d.docker("ps", "--format={{.Ports}}").strip().count("127.0.0.1:") == 2
