"""Batching on the command launcher's socket (docs/design.md "The command launcher"): the
launcher writes the answers of one loop iteration with one send, in order, and the agent's
`LauncherClient` writes the requests of one event-loop callback with one send, in order.

The launcher runs in this process here, with a fake poller and a fake agent connection that
records each send; no task process is started (every launch asks for an id it already has,
which is answered with an error without spawning)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.agent.containerizer.launcher import LauncherClient
from butte.agent.executor.launcher import FLUSH_AT, Launcher, Task

CLIENT_FD = 1000  # what the fake agent connection calls its descriptor


class FakeAgent:
    """The launcher's end of an agent connection: hands out ``incoming`` once, records every
    send."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming = incoming
        self.sends: list[bytes] = []
        self.asked: list[int] = []  # each recv's size

    def fileno(self) -> int:
        return CLIENT_FD

    def recv(self, size: int) -> bytes:
        self.asked.append(size)
        if not self.incoming:
            raise BlockingIOError
        data, self.incoming = self.incoming[:size], self.incoming[size:]
        return data

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def close(self) -> None:
        pass


class FakePoller:
    """Reports the agent connection readable once; the next poll asks the launcher to stop
    (with no child left, the loop then ends)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.polls = 0

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self.polls += 1
        if self.polls == 1:
            return [(CLIENT_FD, 1)]
        self.launcher.stopping = True
        return []

    def register(self, fd: int, events: int) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A Launcher in this process; its signal set-up is undone afterwards."""
    saved = {
        n: signal.getsignal(n)
        for n in (signal.SIGCHLD, signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
    }
    old_wakeup = signal.set_wakeup_fd(-1)
    try:
        instance = Launcher(str(tmp_path / "launcher.sock"), 60.0)
        yield instance
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for number, handler in saved.items():
            signal.signal(number, handler)
        instance.listener.close()


def _serve(launcher: Launcher, requests: list[dict[str, Any]]) -> FakeAgent:
    """Runs the launcher's loop over one wake-up that brings ``requests``; returns the
    connection with what was sent on it."""
    agent = FakeAgent(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    launcher.poller = FakePoller(launcher)  # type: ignore[assignment]
    launcher.client = agent  # type: ignore[assignment]
    assert launcher.serve() == 0
    return agent


def _known(launcher: Launcher, ids: list[str]) -> None:
    """Tasks the launcher already ran (ended): a launch of one of these is refused."""
    for pid, task_id in enumerate(ids, start=1 << 30):
        task = Task(task_id, pid, checkpoint=True)
        task.exit = 0
        launcher.tasks[task_id] = task


def _lines(sends: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in b"".join(sends).splitlines()]


def test_the_answers_of_one_iteration_go_out_in_one_send_in_order(launcher: Launcher) -> None:
    ids = [f"task-{n}" for n in range(5)]
    _known(launcher, ids)
    requests: list[dict[str, Any]] = [{"op": "launch", "id": i} for i in ids]
    requests.insert(2, {"op": "signal", "id": "task-0", "signal": 15})  # no answer
    agent = _serve(launcher, requests)
    assert len(agent.sends) == 1, agent.sends
    assert _lines(agent.sends) == [{"id": i, "error": "already launched"} for i in ids]


def test_a_long_batch_is_written_in_pieces_of_about_flush_at_bytes(launcher: Launcher) -> None:
    ids = [f"task-{n:04d}" for n in range(400)]
    _known(launcher, ids)
    agent = _serve(launcher, [{"op": "launch", "id": i} for i in ids])
    assert _lines(agent.sends) == [{"id": i, "error": "already launched"} for i in ids]
    line = len(json.dumps({"id": ids[0], "error": "already launched"}, separators=(",", ":")))
    assert len(agent.sends) > 1
    assert all(len(data) <= FLUSH_AT + line + 1 for data in agent.sends)


def test_reads_stay_below_mallocs_mmap_threshold(launcher: Launcher) -> None:
    # A larger recv costs an mmap and munmap each (READ_SIZE says why).
    _known(launcher, ["a"])
    agent = _serve(launcher, [{"op": "launch", "id": "a"}])
    assert agent.asked and max(agent.asked) <= 1 << 16


def test_nothing_is_queued_for_a_dropped_agent(launcher: Launcher) -> None:
    launcher.client = None
    launcher.send({"id": "x", "exit": 0})
    assert not launcher.out


# -- the agent's side --------------------------------------------------------------------------


class CountingSocket(socket.socket):
    """A socket that counts its sends."""

    sends = 0

    def send(self, data: Any, flags: int = 0) -> int:
        type(self).sends += 1
        return super().send(data, flags)


def _client(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> tuple[LauncherClient, socket.socket]:
    """A client attached to one end of a socket pair; returns it and the launcher's end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    CountingSocket.sends = 0
    counted = CountingSocket(socket.AF_UNIX, socket.SOCK_STREAM, 0, ours.detach())
    client = LauncherClient(
        loop,
        ["unused"],
        str(tmp_path),
        60.0,
        on_started=lambda *_: None,
        on_failed=lambda *_: None,
        on_exited=lambda *_: None,
        on_lost=lambda: None,
    )
    client._sock = counted
    client.attach()
    return client, theirs


def _read_lines(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the client closed the connection"
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_the_requests_of_one_callback_go_out_in_one_send_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        client, theirs = _client(asyncio.get_running_loop(), tmp_path)
        theirs.settimeout(30)
        client.launch({"id": "a", "program": "/bin/true"})
        client.launch({"id": "b", "program": "/bin/true"})
        client.signal("a", 15)
        client.forget("c")
        client.claim(["a", "b"])
        assert CountingSocket.sends == 0  # queued until the loop's next turn
        for _ in range(3):
            await asyncio.sleep(0)
        assert CountingSocket.sends == 1
        assert _read_lines(theirs, 5) == [
            {"op": "launch", "id": "a", "program": "/bin/true"},
            {"op": "launch", "id": "b", "program": "/bin/true"},
            {"op": "signal", "id": "a", "signal": 15},
            {"op": "forget", "id": "c"},
            {"op": "claim", "ids": ["a", "b"]},
        ]
        await client.close(stop=False)
        theirs.close()

    asyncio.run(scenario())


def test_requests_past_a_full_socket_keep_their_order(tmp_path: Path) -> None:
    count = 3000
    padding = "x" * 1000  # about 3 MB in all: more than the socket holds

    async def scenario() -> None:
        client, theirs = _client(asyncio.get_running_loop(), tmp_path)
        theirs.settimeout(30)
        received: list[list[dict[str, Any]]] = []
        reader = threading.Thread(target=lambda: received.append(_read_lines(theirs, count)))
        for n in range(count // 2):
            client.launch({"id": str(n), "pad": padding})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        for n in range(count // 2, count):  # queued behind what the full socket holds back
            client.launch({"id": str(n), "pad": padding})
        reader.start()
        while reader.is_alive():
            await asyncio.sleep(0.01)
        assert [m["id"] for m in received[0]] == [str(n) for n in range(count)]
        await client.close(stop=False)
        theirs.close()

    asyncio.run(scenario())
