"""The agent's side of the command launcher (`butte.agent.executor.launcher`).

`LauncherClient.connect` finds the launcher a previous run of this agent left behind (its
unix socket ``<work_dir>/launcher.sock`` answers) or starts a new one, and returns what it
runs and what ended while no agent was connected (the recovery uses both). After `attach`,
requests go out as lines, those of one event-loop callback in one write on the loop's next
turn, and the answers come back as callbacks on the event loop. If the
launcher dies, ``on_lost`` is called once; the containerizer then fails its tasks the way
an executor's death fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from butte.agent.containerizer.zygote import ReportReader
from butte.agent.executor.launcher import READ_SIZE, short_address

log = logging.getLogger("butte.agent")

_decoder = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()
SOCKET_NAME = "launcher.sock"
START_TIMEOUT = 10.0  # for a new launcher to listen / an old one to answer


class LauncherUnavailable(Exception):
    """The launcher could not be reached or started."""


class LauncherRun(NamedTuple):
    """What the launcher's snapshot says of one task it runs or ran."""

    pid: int
    exit: int | None  # raw wait status once it ended
    killed: bool = False  # the agent had asked the launcher to kill it
    kill_in: float | None = None  # seconds left of that kill's grace, while it runs


class LauncherClient(ReportReader):
    """One agent's connection to its launcher; see the module docstring."""

    _who = "the command launcher"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        argv: Sequence[str],
        work_dir: str,
        recovery_timeout: float,
        *,
        on_started: Callable[[str, int], None],
        on_failed: Callable[[str, str], None],
        on_exited: Callable[[str, int | None], None],
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(on_started, on_failed, on_exited, on_lost)
        self._loop = loop
        self._argv = list(argv)
        self.path = os.path.join(work_dir, SOCKET_NAME)
        self._recovery_timeout = recovery_timeout
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._out = bytearray()  # requests not yet written, in order
        self._flush_soon: asyncio.Handle | None = None  # the pending `flush`
        self._writing = False  # the socket was full: `_writable` writes the rest
        # The launcher carries out kills itself; one a previous version of butte left
        # running does not (`kill` then times the SIGKILL here).
        self._kills = False

    # -- start-up ----------------------------------------------------------------------------

    def connect(self) -> dict[str, LauncherRun]:
        """Connects (starting a launcher if none answers); returns its snapshot by container
        id. Blocking: start-up only."""
        sock = self._try_connect()
        if sock is None:
            self._proc = subprocess.Popen(
                [*self._argv, self.path, repr(float(self._recovery_timeout))],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while sock is None:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise LauncherUnavailable(f"the command launcher did not start ({self.path})")
                time.sleep(0.01)
                sock = self._try_connect()
        sock.settimeout(START_TIMEOUT)
        try:
            first = self._read_line(sock)
            snapshot = first["snapshot"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sock.close()
            raise LauncherUnavailable(f"no answer from the command launcher: {e}") from None
        self._sock = sock
        self._kills = first.get("kills") is True
        return {str(t["id"]): _run_of(t) for t in snapshot}

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(short_address(self.path))
        except OSError:
            sock.close()
            return None
        return sock

    def _read_line(self, sock: socket.socket) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ValueError("connection closed")
            self._buffer += data
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return _decoder.decode(line)

    def attach(self) -> None:
        """From now on answers arrive as callbacks on the loop."""
        assert self._sock is not None
        self._sock.setblocking(False)
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self.alive = True
        if self._buffer:
            self._loop.call_soon(self._drain)

    # -- requests ----------------------------------------------------------------------------

    def launch(self, request: dict[str, Any]) -> None:
        """Asks for one task's process (see `butte.agent.executor.launcher`)."""
        self._send({"op": "launch", **request})

    def signal(self, container_id: str, number: int) -> None:
        self._send({"op": "signal", "id": container_id, "signal": number})

    def kill(self, container_id: str, grace: float) -> None:
        """SIGTERM to the task, SIGKILL when ``grace`` seconds have passed. The launcher
        does both, so the kill goes on if the agent restarts meanwhile; a launcher of an
        older butte only forwards signals, and the SIGKILL is timed here."""
        if self._kills:
            self._send({"op": "kill", "id": container_id, "grace": grace})
            return
        self.signal(container_id, signal.SIGTERM)
        self._loop.call_later(grace, self.signal, container_id, signal.SIGKILL)

    def forget(self, container_id: str) -> None:
        self._send({"op": "forget", "id": container_id})

    def claim(self, container_ids: Sequence[str]) -> None:
        self._send({"op": "claim", "ids": list(container_ids)})

    def _send(self, message: dict[str, Any]) -> None:
        """Queues one request; the queue goes out on the loop's next turn (`flush`), so the
        requests one callback makes (a burst of launches) cost one write, in order."""
        if not self.alive or self._sock is None:
            return
        self._out += _encoder.encode(message)
        self._out += b"\n"
        if self._flush_soon is None and not self._writing:
            self._flush_soon = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Writes what is queued now, as far as the socket takes it (the rest when it is
        writable again)."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._writing or not self._out or not self.alive or self._sock is None:
            return
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        del self._out[:sent]
        if self._out:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self._out[:sent]
        if not self._out:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _stop_writing(self) -> None:
        """No more flushes or writer callbacks for this connection."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._writing:
            assert self._sock is not None
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    # -- answers -----------------------------------------------------------------------------

    def _receive(self) -> bytes:
        assert self._sock is not None
        return self._sock.recv(READ_SIZE)

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        assert self._sock is not None
        self._loop.remove_reader(self._sock.fileno())
        self._stop_writing()
        self._out.clear()
        self._sock.close()
        log.error("the command launcher exited; its tasks fail, later ones get executors")
        self._on_lost()

    async def close(self, stop: bool) -> None:
        """Disconnects; ``stop``: the launcher kills what is left and exits (the agent shut
        down gracefully), else it keeps its tasks for the next agent."""
        if self.alive and stop:
            self._send({"op": "stop"})
        if self.alive:
            self.alive = False
            assert self._sock is not None
            self._loop.remove_reader(self._sock.fileno())
            self._stop_writing()
            if self._out:
                with contextlib.suppress(OSError):
                    self._sock.setblocking(True)
                    self._sock.sendall(bytes(self._out))
            self._sock.close()
        proc = self._proc
        if proc is not None and stop:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5.0)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)


def _run_of(entry: dict[str, Any]) -> LauncherRun:
    exit_status = entry.get("exit")
    kill_in = entry.get("kill_in")
    return LauncherRun(
        int(entry["pid"]),
        exit_status if isinstance(exit_status, int) else None,
        entry.get("killed") is True,
        float(kill_in) if isinstance(kill_in, int | float) else None,
    )
