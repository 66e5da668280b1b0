"""Health checks and checks of Docker containers on the bridge (or no) network: the Docker
executor starts their HTTP and TCP probes in the container's network namespace (real
processes: a "container" process in a network namespace of its own with a server on its
loopback), the agent takes them and COMMAND ones too (they run with ``docker exec``:
tests/integration/test_docker_command_check.py), and Marathon accepts health checks of
bridged apps, COMMAND ones included, and asks in the Mesos HealthCheck for the container
port, as Marathon's ``MesosHealthCheck.effectivePort`` does (docs/docker.md "Checks",
docs/marathon.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from butte.agent.executor import checks as check_runs
from butte.agent.executor import command, health
from butte.agent.executor import docker as docker_executor
from butte.core import docker_info
from butte.frameworks.marathon.appdef import Invalid, normalize_app
from butte.frameworks.marathon.launch import task_info
from butte.frameworks.marathon.model import Instance
from butte.testing.require import require

# This helper's port range is 28500-28999: the server listens on this port in the
# "container's" namespace only; nothing in the host's namespace listens on it.
PORT = 28510
UNSHARE = shutil.which("unshare") or ""
IP = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""

# Serves GET / with 200 on 127.0.0.1:argv[1]; says "ready" once listening.
_SERVER = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "s = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)\n"
    "print('ready', flush=True)\n"
    "s.serve_forever()\n"
)


@pytest.fixture
def container() -> Iterator[int]:
    """A process in a network namespace of its own (as a bridged container's first process
    is) serving HTTP on that namespace's 127.0.0.1:`PORT`; its pid."""
    missing = None
    if os.geteuid() != 0:
        missing = "needs root (a network namespace, setns)"
    elif not UNSHARE or not IP:
        missing = "unshare or ip (util-linux, iproute2) is missing"
    require(missing, "network namespaces")
    script = f'{IP} link set lo up && exec {sys.executable} -c "$0" {PORT}'
    proc = subprocess.Popen(
        [UNSHARE, "--net", "--", "/bin/sh", "-c", script, _SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def executor(network: str, pid: int) -> tuple[docker_executor.DockerExecutor, command.TaskProcess]:
    """A Docker executor that started the container ``pid`` (what `docker inspect` told it),
    and its task on ``network``."""
    environ = {
        "MESOS_AGENT_ENDPOINT": "127.0.0.1:1",
        "MESOS_FRAMEWORK_ID": "f",
        "MESOS_EXECUTOR_ID": "e",
        docker_executor.NAME_ENV: "mesos-c1",
    }
    ex = docker_executor.DockerExecutor(environ)
    ex.inspected = {"State": {"Pid": pid, "StartedAt": "2026-12-05T00:00:00Z"}}
    container = {"type": "DOCKER", "docker": {"image": "busybox", "network": network}}
    info = {"task_id": {"value": "t1"}, "command": {"value": "true"}, "container": container}
    return ex, command.TaskProcess(info, False)


def run_probe(
    ex: docker_executor.DockerExecutor,
    task: command.TaskProcess,
    spec: Any,
    probe: tuple[str, list[str], bool],
) -> tuple[int, str]:
    """Runs one probe as the executor starts it: (exit status, its stdout)."""
    read_end, write_end = os.pipe()
    try:
        pid = ex._spawn_probe(task, spec.kind, *probe, write_end)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end) as out:
            text = out.read()
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass
    return os.waitstatus_to_exitcode(status), text


def health_spec(kind: str) -> health.HealthSpec:
    if kind == "TCP":
        return health.parse_health_check({"type": "TCP", "tcp": {"port": PORT}})
    return health.parse_health_check({"type": "HTTP", "http": {"port": PORT, "path": "/"}})


@pytest.mark.parametrize("network", ["BRIDGE", "NONE"])
@pytest.mark.parametrize("kind", ["HTTP", "TCP"])
def test_http_and_tcp_health_probes_run_in_the_containers_network(
    container: int, network: str, kind: str
) -> None:
    own = os.readlink("/proc/self/ns/net")
    ex, task = executor(network, container)
    spec = health_spec(kind)
    code, _ = run_probe(ex, task, spec, health.probe_command(spec))
    assert code == 0  # the server on the container's loopback answered
    # the executor itself never moved
    assert os.readlink("/proc/self/ns/net") == own


@pytest.mark.parametrize("kind", ["HTTP", "TCP"])
def test_a_host_network_containers_probes_stay_on_the_hosts_network(
    container: int, kind: str
) -> None:
    ex, task = executor("HOST", container)
    spec = health_spec(kind)
    code, _ = run_probe(ex, task, spec, health.probe_command(spec))
    assert code != 0  # nothing listens on the host's PORT


def test_an_http_check_of_a_bridged_container_reads_the_containers_status(
    container: int,
) -> None:
    ex, task = executor("BRIDGE", container)
    spec = check_runs.parse_check({"type": "HTTP", "http": {"port": PORT, "path": "/"}})
    code, out = run_probe(ex, task, spec, check_runs.probe_command(spec))
    assert (code, out.strip()) == (0, "200")


def test_a_probe_of_a_container_without_a_process_fails_saying_why() -> None:
    ex, task = executor("BRIDGE", 0)
    ex.socket = "/nonexistent/docker.sock"  # the daemon cannot be asked again either
    spec = health_spec("TCP")
    with pytest.raises(OSError, match="cannot find the container's process"):
        ex._spawn_probe(task, "TCP", *health.probe_command(spec), None)


def docker_task(network: str, **probes: Any) -> dict[str, Any]:
    docker = {"image": "busybox:1", "network": network}
    return {
        "task_id": {"value": "t"},
        "command": {"value": "true"},
        "container": {"type": "DOCKER", "docker": docker},
        **probes,
    }


@pytest.mark.parametrize("network", ["BRIDGE", "NONE", "HOST"])
def test_the_agent_takes_every_probe_of_docker_containers(network: str) -> None:
    http = {"type": "HTTP", "http": {"port": 80}}
    tcp = {"type": "TCP", "tcp": {"port": 80}}
    assert docker_info.launch_problem(docker_task(network, health_check=http), False) is None
    assert docker_info.launch_problem(docker_task(network, check=tcp), False) is None
    # COMMAND ones run in the container with `docker exec`, whatever its network
    cmd = {"type": "COMMAND", "command": {"value": "true"}}
    assert docker_info.launch_problem(docker_task(network, health_check=cmd), False) is None
    check = {"type": "COMMAND", "command": {"command": {"value": "true"}}}
    assert docker_info.launch_problem(docker_task(network, check=check), False) is None


MAPPINGS = [
    {"containerPort": 8080, "hostPort": 0, "name": "http"},
    {"containerPort": 0, "hostPort": 28555, "name": "fixed"},
]


def bridged_app(*checks: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "/web",
        "cpus": 0.1,
        "mem": 32,
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": "busybox"},
            "portMappings": MAPPINGS,
        },
        "healthChecks": list(checks),
    }


def instance(ports: list[int]) -> Instance:
    return Instance("web.1", "/web", "v1", "v1", "a1", "h1", "127.0.0.1", {}, ports, 0.0)


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        # the container port of the mapping at portIndex, as Marathon's MesosHealthCheck
        ({"protocol": "MESOS_HTTP", "portIndex": 0, "path": "/ok"}, ("HTTP", 8080)),
        ({"protocol": "MESOS_TCP", "portIndex": 0}, ("TCP", 8080)),
        ({"protocol": "HTTP", "portIndex": 0}, ("HTTP", 8080)),
        # a container port 0 is the host port the mapping got
        ({"protocol": "MESOS_TCP", "portIndex": 1}, ("TCP", 28555)),
        # a fixed port is asked for as given
        ({"protocol": "MESOS_HTTP", "port": 9000}, ("HTTP", 9000)),
    ],
)
def test_a_bridged_apps_health_check_asks_for_the_container_port(
    check: dict[str, Any], expected: tuple[str, int]
) -> None:
    spec = normalize_app(bridged_app(check))
    task = task_info(spec, instance([28601, 28555]), [])
    hc = task["health_check"]
    kind, port = expected
    assert hc["type"] == kind
    assert hc[kind.lower()]["port"] == port
    assert task["container"]["docker"]["network"] == "BRIDGE"


def test_a_host_apps_health_check_still_asks_for_the_host_port() -> None:
    raw = {
        "id": "/web",
        "cpus": 0.1,
        "mem": 32,
        "cmd": "true",
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "portIndex": 0}],
    }
    task = task_info(normalize_app(raw), instance([28602]), [])
    assert task["health_check"]["http"]["port"] == 28602


def test_a_command_health_check_of_a_bridged_app_is_a_mesos_command_health_check() -> None:
    """Marathon's MesosCommandHealthCheck: the command as a shell CommandInfo, which the
    Docker executor runs in the container."""
    check = {"protocol": "COMMAND", "command": {"value": "test -f /ready"}}
    spec = normalize_app(bridged_app({**check, "maxConsecutiveFailures": 2}))
    hc = task_info(spec, instance([28601, 28555]), [])["health_check"]
    assert hc["type"] == "COMMAND"
    assert hc["command"] == {"shell": True, "value": "test -f /ready"}
    assert hc["consecutive_failures"] == 2


def test_a_health_check_of_a_bridged_app_naming_a_missing_port_is_refused() -> None:
    with pytest.raises(Invalid) as e:
        normalize_app(bridged_app({"protocol": "MESOS_TCP", "portIndex": 2}))
    assert "/healthChecks(0)/portIndex" in {d["path"] for d in e.value.details}
