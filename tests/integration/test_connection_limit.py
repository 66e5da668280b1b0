"""``--max_connections`` on the master and the agent: once the limit of open connections is
reached a new one is answered 503 and closed, the connections already open keep being
served, and a slot freed by a client that leaves is given to the next one."""

from __future__ import annotations

import select
import socket
import time

import pytest
import requests

pytestmark = pytest.mark.integration

LIMIT = 12


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _refused(sock: socket.socket) -> bool:
    """True when the server answered 503 and closed without being asked anything."""
    sock.settimeout(0.5)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return False  # admitted: it waits for a request
    finally:
        sock.settimeout(10)
    return data.startswith(b"HTTP/1.1 503")


def _health(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock.recv(4096)


def _check_limit(port: int) -> None:
    held = [_connect(port) for _ in range(LIMIT + 4)]
    try:
        # The refused ones are answered at once; give them a second, all together.
        deadline = time.monotonic() + 1.0
        answered: set[socket.socket] = set()
        while time.monotonic() < deadline:
            ready, _, _ = select.select(held, [], [], max(0.0, deadline - time.monotonic()))
            answered.update(ready)
        refused = [s for s in held if s in answered and s.recv(4096).startswith(b"HTTP/1.1 503")]
        admitted = [s for s in held if s not in answered]
        assert refused, "no connection was refused"
        # The daemon's own connections (an agent's socket, pollers) share the limit.
        assert LIMIT - 4 <= len(admitted) <= LIMIT, len(admitted)
        assert refused == held[len(admitted) :], "a connection was refused before the limit"
        # Connections already open are served as before.
        for sock in admitted[:3]:
            assert _health(sock).startswith(b"HTTP/1.1 200"), "an open connection was hurt"
        # A client leaving frees its slot for the next one.
        for sock in admitted[:3]:
            sock.close()
        deadline = time.monotonic() + 20
        while True:
            sock = _connect(port)
            held.append(sock)
            if not _refused(sock):
                assert _health(sock).startswith(b"HTTP/1.1 200")
                break
            assert time.monotonic() < deadline, "freed slots were not given out again"
            time.sleep(0.2)
    finally:
        for sock in held:
            sock.close()


def test_master_and_agent_refuse_connections_over_the_limit(cluster_factory) -> None:
    cluster = cluster_factory(
        master_flags=[f"--max_connections={LIMIT}"], agent_flags=[f"--max_connections={LIMIT}"]
    )
    _check_limit(cluster.master.port)
    metrics = requests.get(cluster.master_url + "/metrics/snapshot", timeout=10).json()
    assert metrics["master/connections_refused"] >= 1
    agent = cluster.agents[0]
    _check_limit(agent.port)
    metrics = requests.get(agent.url + "/metrics/snapshot", timeout=10).json()
    assert metrics["slave/connections_refused"] >= 1
    cluster.wait_agents_active(1)  # the agent stayed registered throughout


def test_the_agent_closes_connections_whose_first_head_does_not_come(cluster_factory) -> None:
    """An idle connection and one trickling its head are answered 408 and closed once
    --http_header_timeout passes; a connection that sent its request is served and kept."""
    cluster = cluster_factory(agent_flags=["--http_header_timeout=1secs"])
    port = cluster.agents[0].port
    idle, trickle, served = _connect(port), _connect(port), _connect(port)
    try:
        assert _health(served).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        for piece in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n"):
            trickle.sendall(piece)
            time.sleep(0.4)
        for sock in (idle, trickle):
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert sock.recv(4096) == b""  # closed
        assert time.monotonic() - started < 10
        assert _health(served).startswith(b"HTTP/1.1 200")  # kept alive past the deadline
    finally:
        for sock in (idle, trickle, served):
            sock.close()
    metrics = requests.get(cluster.agents[0].url + "/metrics/snapshot", timeout=10).json()
    assert metrics["slave/connections_refused"] == 0
    cluster.wait_agents_active(1)


def test_the_limit_never_exceeds_the_open_file_limit() -> None:
    import resource

    from butte.core.conn_limit import ConnectionLimit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
    try:
        assert ConnectionLimit(65536).limit == 750
        assert ConnectionLimit(0).limit == 750
        assert ConnectionLimit(12).limit == 12
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
