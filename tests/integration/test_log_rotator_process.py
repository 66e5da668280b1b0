"""The log rotator process (butte/agent/executor/rotator.py) driven through the agent's own
client (`RotatorClient`): one per work dir, bad requests answered and survived, the list of
sandboxes replaced and rotated on its own clock while no agent is connected."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from butte.agent.containerizer.logrotate import RotationPolicy, RotatorClient
from butte.agent.executor.rotator import ALREADY_RUNNING
from butte.agent.server import rotator_argv

pytestmark = pytest.mark.integration

PAGE = os.sysconf("SC_PAGE_SIZE")
POLICY = RotationPolicy(PAGE, PAGE, 2, 2)


def wait(predicate, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_one_rotator_per_work_dir_that_survives_bad_requests_and_its_agent(tmp_path: Path):
    work = tmp_path / "work"
    box = work / "box"
    (box / "tasks" / "member").mkdir(parents=True)
    client = RotatorClient(rotator_argv(), str(work), 60.0)
    assert client.connect() is False  # started, not adopted
    pid = client.pid
    assert pid is not None and int((work / "rotator.lock").read_text()) == pid
    try:
        # A second one for the same work dir refuses to run.
        second = subprocess.run(
            [*rotator_argv(), str(work), "60"], capture_output=True, text=True, timeout=30
        )
        assert second.returncode == ALREADY_RUNNING
        assert "another rotator runs" in second.stderr

        # Bad requests: each answered with an error, the rotator goes on.
        assert client._sock is not None
        client._sock.setblocking(True)
        for bad in (
            b"not json",
            b'{"op": "explode"}',
            b'{"op": "rotate", "sandboxes": "all"}',
            b'{"op": "rotate", "sandboxes": [["relative/box", [4096, 4096, 1, 1], {}]]}',
            b'{"op": "rotate", "sandboxes": [["/box", [4096, -1, 1, 1], {}]]}',
            b'{"op": "rotate", "sandboxes": [["/box", [4096, 4096, "1", 1], {}]]}',
            b'{"op": "rotate", "sandboxes": [["/box", [4096, 4096, 1, 1], []]]}',
            b"[1, 2]",
        ):
            client._sock.sendall(bad + b"\n")
        client._sock.setblocking(False)
        said: list[str] = []
        wait(lambda: said.extend(client.poll()) or len(said) >= 8, "eight answers")
        assert all("bad request" in s for s in said), said
        assert client.connected and not gone(pid)

        # The members' own policy: rotate 1 for "member", the sandbox's rotate 2 elsewhere.
        member = RotationPolicy(PAGE, PAGE, 1, 1)
        client.send([(str(box), POLICY, {"member": member})])
        for path in (box / "stdout", box / "tasks" / "member" / "stdout"):
            path.write_bytes(b"a" * (PAGE + 1))
        wait(lambda: (box / "stdout.1").exists(), "the sandbox's rotation")
        wait(lambda: (box / "tasks" / "member" / "stdout.1").exists(), "the member's")
        assert (box / "stdout").stat().st_size == 0

        # Its agent gone, it rotates what it was told last.
        client.close()
        (box / "stdout").write_bytes(b"b" * (PAGE + 1))
        wait(lambda: (box / "stdout.2").exists(), "a rotation with no agent connected")
        assert (box / "stdout.1").read_bytes() == b"b" * (PAGE + 1)

        # The next agent adopts it and replaces the list (an empty one: nothing rotates).
        adopter = RotatorClient(rotator_argv(), str(work), 60.0)
        assert adopter.connect() is True and adopter.pid == pid
        adopter.send([])
        time.sleep(0.1)
        (box / "stdout").write_bytes(b"c" * (PAGE + 1))
        time.sleep(2.5)
        assert (box / "stdout").stat().st_size == PAGE + 1
        # Alone with nothing to rotate, it exits.
        adopter.close()
        wait(lambda: gone(pid), "its exit", 5)
    finally:
        if not gone(pid):
            os.kill(pid, 9)
        client.stop()


def test_a_rotator_whose_work_dir_is_removed_exits(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    client = RotatorClient(rotator_argv(), str(work), 60.0)
    client.connect()
    pid = client.pid
    assert pid is not None
    client.send([(str(work / "box"), POLICY, {})])
    client.poll()
    client.close()
    time.sleep(1.5)
    assert not gone(pid)  # alone but with work: it waits for the next agent
    (work / "rotator.sock").unlink()
    wait(lambda: gone(pid), "its exit once its socket is gone", 5)
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
        s.connect(str(work / "rotator.sock"))
    client.stop()  # reaps it
