"""TLS on the framework REST listeners: ``butte marathon`` and ``butte chronos`` started with
Mesos' LIBPROCESS_SSL_* variables (a CA and certificates made here) against a TLS master
subscribe over TLS and serve their REST API only over TLS: a client trusting the CA gets
answers, plain HTTP is refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import requests

from butte.testing.cluster import free_port
from butte.testing.tls import Pki, make_pki, tls_env

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return make_pki(str(directory))


def _plain_refused(port: int) -> bool:
    """A plain-HTTP request gets no HTTP 200 (TLS-only listeners answer 400 or close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return not data.startswith(b"HTTP/1.1 2")


def _serve(
    argv: list[str], env: dict[str, str], log_path, ready: Callable[[], bool]
) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115 - the process writes it; closed with the test
    process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, open(log_path).read()
        try:
            if ready():
                return process
        except (requests.RequestException, KeyError, ValueError):
            pass
        assert time.monotonic() < deadline, open(log_path).read()
        time.sleep(0.2)


def test_marathon_and_chronos_speak_tls(cluster_factory, pki, tmp_path) -> None:
    env = tls_env(pki)
    cluster = cluster_factory(env=env)
    master = cluster.master_address
    processes = []
    try:
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "butte", "marathon", "--master", master]
        argv += ["--http_port", str(port), "--http_address", "127.0.0.1"]
        argv += ["--hostname", "127.0.0.1", "--work_dir", str(tmp_path / "marathon")]

        def marathon_ready() -> bool:
            info = requests.get(url + "/v2/info", verify=pki.ca, timeout=5).json()
            return bool(info.get("frameworkId"))

        processes.append(_serve(argv, env, tmp_path / "marathon.log", marathon_ready))
        assert requests.get(url + "/v2/apps", verify=pki.ca, timeout=10).json() == {"apps": []}
        assert _plain_refused(port)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/v2/info", timeout=10)  # the CA is not trusted by default

        port = free_port()
        url = f"https://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "butte", "chronos", "--master", master]
        argv += ["--http_port", str(port), "--http_address", "127.0.0.1"]
        argv += ["--work_dir", str(tmp_path / "chronos")]

        def chronos_ready() -> bool:
            info = requests.get(url + "/ui/info", verify=pki.ca, timeout=5).json()
            return bool(info.get("framework_id"))

        processes.append(_serve(argv, env, tmp_path / "chronos.log", chronos_ready))
        jobs = requests.get(url + "/v1/scheduler/jobs", verify=pki.ca, timeout=10)
        assert jobs.status_code == 200 and jobs.json() == []
        assert _plain_refused(port)
        # Both subscribed to the TLS master.
        names = {f["name"] for f in cluster.state()["frameworks"]}
        assert {"marathon", "chronos"} <= names, names
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
