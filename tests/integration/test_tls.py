"""TLS end to end with Mesos' LIBPROCESS_SSL_* variables: a CA and certificates made here, a
real master and agent that speak only TLS, and the clients people use (`butte run`, the
operator CLI, the Python clients, plain HTTP). The agent registers over TLS, a task runs
(its built-in executor talks plain HTTP to its agent on this machine), the master reads the
task's sandbox from the agent over TLS, plain HTTP is refused without
LIBPROCESS_SSL_SUPPORT_DOWNGRADE and served with it, a client that does not trust the CA
fails verification, and LIBPROCESS_SSL_REQUIRE_CERT refuses clients without a certificate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from butte.client.operator import MasterUnreachable, OperatorClient
from butte.core.tls import TlsConfig
from butte.testing.cluster import free_port
from butte.testing.pymesos_task import pymesos_runs_a_task
from butte.testing.require import require_module
from butte.testing.tls import Pki, make_pki, tls_env

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return make_pki(str(directory))


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "butte", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def plain_get(address: str, path: str) -> bytes:
    """A plain-HTTP GET on a raw socket: the whole answer (the server closes)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_cluster_run_and_operator_cli_over_tls(cluster_factory, pki) -> None:
    cluster = cluster_factory(env=tls_env(pki))
    # The agent registered over TLS (the cluster's own reads are https too).
    assert cluster.master_url.startswith("https://")
    state = cluster.state()
    assert [s["active"] for s in state["slaves"]] == [True]
    assert "(TLS)" in cluster.master.log_text()
    # The web UI comes over the same listener.
    page = OperatorClient(
        f"https://{cluster.master_address}", ssl_context=TlsConfig(ca_file=pki.ca).client_context()
    ).request("GET", "/")
    assert b"<html" in page.lower()
    # `butte run` with an https:// master and only the CA (no LIBPROCESS_SSL_ENABLED).
    client_env = {"LIBPROCESS_SSL_CA_FILE": pki.ca}
    command = ["run", "--master", f"https://{cluster.master_address}", "--name", "tlsrun"]
    command += ["--command", "echo hello-over-tls", "--resources", "cpus:0.1;mem:16"]
    done = cli(command, client_env)
    assert done.returncode == 0, done.stdout + done.stderr
    # The operator CLI with a bare host:port and LIBPROCESS_SSL_ENABLED.
    enabled_env = {"LIBPROCESS_SSL_ENABLED": "true", "LIBPROCESS_SSL_CA_FILE": pki.ca}
    listing = cli(["tasks", "--all", "--json", "--master", cluster.master_address], enabled_env)
    assert listing.returncode == 0, listing.stderr
    tasks = json.loads(listing.stdout)
    finished = [t for t in tasks if t["name"].startswith("tlsrun")]
    assert finished and finished[0]["state"] == "TASK_FINISHED", listing.stdout
    task_id = finished[0]["task_id"]["value"]
    # The sandbox is read by the master from the agent, over TLS.
    cat = cli(["task", "cat", task_id, "--master", f"https://{cluster.master_address}"], client_env)
    assert cat.returncode == 0, cat.stderr
    assert "hello-over-tls" in cat.stdout
    # The web UI's task usage and kill button reach the agent over TLS too.
    long_run = subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", f"https://{cluster.master_address}"]
        + ["--name", "tlslong", "--command", "sleep 120", "--resources", "cpus:0.1;mem:16"],
        env={**os.environ, **client_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ui = OperatorClient(
            f"https://{cluster.master_address}",
            ssl_context=TlsConfig(ca_file=pki.ca).client_context(),
        )

        def running() -> str | None:
            for fw in ui.get_json("/master/state")["frameworks"]:
                for task in fw["tasks"]:
                    if task["name"].startswith("tlslong") and task["state"] == "TASK_RUNNING":
                        return str(task["id"])
            return None

        long_id = cluster.wait_until(lambda _: running(), 30, "tlslong running")
        usage = json.loads(ui.request("GET", f"/master/ui/task-usage?task_id={long_id}"))
        assert "error" not in json.dumps(usage), usage
        ui.request("POST", "/master/kill-task", json.dumps({"task_id": long_id}).encode())
        cluster.wait_until(lambda _: not running(), 30, "tlslong killed")
    finally:
        long_run.kill()
    # Plain HTTP is refused, by the master and by the agent (whose executor API alone takes
    # plain HTTP from this machine).
    for address in (cluster.master_address, cluster.agents[0].address):
        answer = plain_get(address, "/state")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"requires TLS" in answer
    # A client that trusts another CA fails verification: the Python client and the CLI.
    wrong = TlsConfig(ca_file=pki.other_ca).client_context()
    with pytest.raises(MasterUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        OperatorClient(f"https://{cluster.master_address}", ssl_context=wrong).get_json(
            "/master/state"
        )
    refused = cli(
        ["agents", "--master", f"https://{cluster.master_address}"],
        {"LIBPROCESS_SSL_CA_FILE": pki.other_ca},
        timeout=60,
    )
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stdout + refused.stderr


def test_downgrade_serves_plain_and_tls(cluster_factory, pki) -> None:
    cluster = cluster_factory(env=tls_env(pki, LIBPROCESS_SSL_SUPPORT_DOWNGRADE="true"))
    for address in (cluster.master_address, cluster.agents[0].address):
        plain = plain_get(address, "/health")
        assert plain.startswith(b"HTTP/1.1 200"), plain[:200]
    over_tls = OperatorClient(
        f"https://{cluster.master_address}",
        ssl_context=TlsConfig(ca_file=pki.ca).client_context(),
    ).get_json("/master/state")
    assert len(over_tls["slaves"]) == 1
    assert OperatorClient(f"http://{cluster.master_address}").get_json("/master/state")
    # pymesos speaks no TLS: with downgrade it runs a task over plain HTTP.
    pymesos = require_module("pymesos")
    assert pymesos_runs_a_task(pymesos, cluster.master_address, "pm-plain"), (
        "pymesos did not run its task through a downgrading master"
    )


def test_require_cert_refuses_clients_without_one(cluster_factory, pki) -> None:
    # The agent presents its certificate (LIBPROCESS_SSL_CERT_FILE) and registers.
    cluster = cluster_factory(env=tls_env(pki, LIBPROCESS_SSL_REQUIRE_CERT="true"))
    assert [s["active"] for s in cluster.state()["slaves"]] == [True]
    anonymous = TlsConfig(ca_file=pki.ca).client_context()
    with pytest.raises(MasterUnreachable):
        OperatorClient(f"https://{cluster.master_address}", ssl_context=anonymous).get_json(
            "/master/state"
        )
    with_cert = TlsConfig(ca_file=pki.ca, cert_file=pki.cert, key_file=pki.key)
    answer = OperatorClient(
        f"https://{cluster.master_address}", ssl_context=with_cert.client_context()
    ).get_json("/master/state")
    assert len(answer["slaves"]) == 1


def test_master_refuses_to_start_without_its_certificate(tmp_path, pki) -> None:
    env = tls_env(pki)
    del env["LIBPROCESS_SSL_KEY_FILE"]
    command = ["master", "--work_dir", str(tmp_path / "m"), "--port", str(free_port())]
    done = cli(command, env, timeout=60)
    assert done.returncode == 2
    assert "LIBPROCESS_SSL_KEY_FILE" in done.stdout + done.stderr
