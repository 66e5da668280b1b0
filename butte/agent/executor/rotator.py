"""The log rotator: one long-lived process per agent with ``--container_logger=logrotate``
that rotates the live containers' stdout/stderr by size on its own clock, so rotation goes
on while the agent is down (docs/isolation.md "stdout/stderr rotation").

The agent starts it in a session of its own (as it starts the command launcher) and tells it
which sandboxes to rotate with which `RotationPolicy`; every `CHECK_INTERVAL` seconds it runs
`RotationPolicy.check` on each (`butte.agent.containerizer.logrotate`). When the agent goes
away it keeps rotating the sandboxes it last heard of; the next agent connects to it, adopts
it and replaces that list. It exits when told to (the agent's graceful shutdown, or an agent
that no longer rotates), when no agent came back within the recovery timeout, when it is
alone with nothing to rotate, or when its socket was removed (its work dir is gone).

Only one rotates a work dir's sandboxes: it holds an exclusive ``flock`` on
``<work_dir>/rotator.lock`` (which holds its pid) for its whole life, taken before it binds
its socket; a second one started meanwhile exits at once (status 3), and none rotates
before it holds the lock.

It listens on ``<work_dir>/rotator.sock``; one agent at a time is connected (a new connection
replaces the old one). One compact JSON object per line:

    rotator -> agent, first   {"rotator": <pid>}
    agent -> rotator  {"op": "rotate", "sandboxes": [[sandbox, policy, {task id: policy}],
                       ...]}                 the whole list, replacing the last one; a policy
                                             is [max stdout, max stderr, keep stdout, keep
                                             stderr]; the map is a task group's members'
                      {"op": "stop"}         exit now
    rotator -> agent  {"warning": text}      a sandbox could not be rotated (at most once a
                                             minute per sandbox; on stderr with no agent)
                      {"error": text}        a request it did not understand (ignored)
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import fcntl
import os
import select
import socket
import sys
import time

from butte.agent.containerizer.logrotate import (
    CHECK_INTERVAL,
    ROTATOR_LOCK,
    ROTATOR_SOCKET,
    RotationPolicy,
    Work,
)
from butte.agent.executor import lite
from butte.agent.executor.launcher import READ_SIZE, short_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ALREADY_RUNNING = 3  # exit status: another rotator holds the lock
FIRST_CONNECT_TIMEOUT = 30.0  # the agent that started us connects within this
SEND_TIMEOUT = 10.0  # an agent that reads nothing for this long is dropped
WARNING_INTERVAL = 60.0  # a sandbox that cannot be rotated is reported at most this often


class AlreadyRunning(Exception):
    """Another rotator holds this work dir's lock."""


def work_of(sandboxes: Any) -> list[Work]:
    """The ``sandboxes`` of a ``rotate`` request; ValueError naming what is wrong."""
    if not isinstance(sandboxes, list):
        raise ValueError("sandboxes must be a list")
    work: list[Work] = []
    for entry in sandboxes:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ValueError(f"expected [sandbox, policy, members], got {entry!r}"[:200])
        sandbox, policy, members = entry
        if not isinstance(sandbox, str) or not os.path.isabs(sandbox):
            raise ValueError(f"a sandbox is an absolute path, got {sandbox!r}"[:200])
        if not isinstance(members, dict):
            raise ValueError("members must be an object")
        own = RotationPolicy.of_wire(policy)
        work.append((sandbox, own, {str(k): RotationPolicy.of_wire(v) for k, v in members.items()}))
    return work


class Rotator:
    """The rotator's state and event loop; see the module docstring."""

    def __init__(self, work_dir: str, recovery_timeout: float) -> None:
        self.recovery_timeout = recovery_timeout
        self.lock = os.open(
            os.path.join(work_dir, ROTATOR_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock)
            raise AlreadyRunning(work_dir) from None
        os.ftruncate(self.lock, 0)
        os.pwrite(self.lock, b"%d\n" % os.getpid(), 0)
        self.work: list[Work] = []
        self.warned: dict[str, float] = {}  # sandbox -> when its failure was last reported
        self.client: socket.socket | None = None
        self.buffer = bytearray()
        self.alone_since = time.monotonic()
        self.connected_once = False
        self.stopping = False
        self.poller = select.epoll()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Holding the lock, whatever answers at this path is no live rotator of this work dir.
        self.path = short_address(os.path.join(work_dir, ROTATOR_SOCKET))
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        mask = os.umask(0o177)  # only the agent's user may connect, from the start
        try:
            self.listener.bind(self.path)
        finally:
            os.umask(mask)
        self.inode = os.stat(self.path).st_ino
        self.listener.listen(8)
        self.poller.register(self.listener.fileno(), select.EPOLLIN)

    # -- agent connection ------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """One line to the agent (dropped with the agent if it cannot take it)."""
        if self.client is None:
            return
        try:
            self.client.sendall(lite.dumps(message) + b"\n")
        except OSError:
            self._drop_client()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        self._drop_client()
        sock.settimeout(SEND_TIMEOUT)
        self.client = sock
        self.buffer = bytearray()
        self.connected_once = True
        self.poller.register(sock.fileno(), select.EPOLLIN)
        self.send({"rotator": os.getpid()})

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.poller.unregister(client.fileno())
        client.close()
        self.alone_since = time.monotonic()

    def _read(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(READ_SIZE)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.buffer += data
        while self.client is not None and not self.stopping:
            end = self.buffer.find(b"\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if not line.strip():
                continue
            try:
                self._handle(lite.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                # A bad request must not stop the rotation of the others.
                self.send({"error": f"bad request {line[:200]!r}: {e}"})

    def _handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "rotate":
            self.work = work_of(request["sandboxes"])
            kept = {sandbox for sandbox, _, _ in self.work}
            self.warned = {s: t for s, t in self.warned.items() if s in kept}
        elif op == "stop":
            self.stopping = True
        else:
            raise ValueError(f"unknown op {op!r}")

    # -- rotation ----------------------------------------------------------------------------

    def rotate_all(self, now: float) -> None:
        """One check of every sandbox (`RotationPolicy.check`)."""
        for sandbox, policy, members in self.work:
            try:
                policy.check(sandbox, members)
            except OSError as e:
                # A full disk fails every check, once a second per sandbox, and the agent's
                # log may be on that disk too.
                if now - self.warned.get(sandbox, -WARNING_INTERVAL) >= WARNING_INTERVAL:
                    self.warned[sandbox] = now
                    self._warn(
                        f"cannot rotate the logs of {sandbox}: {e} (said at most once a minute)"
                    )
            else:
                self.warned.pop(sandbox, None)

    def _warn(self, text: str) -> None:
        if self.client is not None:
            self.send({"warning": text})
            return
        try:
            sys.stderr.write(f"rotator: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # the agent's stderr may be gone with it
            pass

    # -- main loop ---------------------------------------------------------------------------

    def _done(self, now: float) -> bool:
        if self.stopping:
            return True
        if self.client is not None:
            return False
        if not self.connected_once:
            return now - self.alone_since > FIRST_CONNECT_TIMEOUT
        if not self.work or now - self.alone_since > self.recovery_timeout:
            return True
        try:  # the work dir removed (or another rotator's socket there): nothing is ours
            return os.stat(self.path).st_ino != self.inode
        except OSError:
            return True

    def serve(self) -> int:
        """Rotates every `CHECK_INTERVAL` seconds and serves agents until done."""
        listener = self.listener.fileno()
        next_check = time.monotonic() + CHECK_INTERVAL
        while True:
            now = time.monotonic()
            if now >= next_check:
                self.rotate_all(now)
                next_check += CHECK_INTERVAL
                if next_check <= now:  # a rotation took longer than the interval
                    next_check = now + CHECK_INTERVAL
                if self._done(now):
                    break
            for fd, _ in self.poller.poll(max(0.0, next_check - time.monotonic())):
                if fd == listener:
                    self._accept()
                elif self.client is not None and fd == self.client.fileno():
                    self._read()
            if self.stopping:
                break
        # Still holding the lock: the socket at the path is ours unless the inode differs.
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        return 0


def main() -> int:
    """Entry point: ``rotator <work dir> <recovery timeout seconds>``."""
    if len(sys.argv) < 3:
        sys.stderr.write("usage: rotator WORK_DIR RECOVERY_TIMEOUT\n")
        return 2
    for number in (_signal.SIGINT, _signal.SIGHUP):
        _signal.signal(number, _signal.SIG_IGN)  # the agent decides when we stop
    work_dir = os.path.abspath(sys.argv[1])
    os.chdir("/")  # holds no directory of the work dir
    try:
        rotator = Rotator(work_dir, float(sys.argv[2]))
    except AlreadyRunning:
        sys.stderr.write(f"rotator: another rotator runs for {work_dir}\n")
        return ALREADY_RUNNING
    return rotator.serve()


if __name__ == "__main__":
    sys.exit(main())
