"""The agent's side of the executor fork server (`butte.agent.executor.zygote`).

`ZygoteClient` starts the zygote process, sends it one request line per built-in executor
to launch and turns its answers (pid, error, exit status) into callbacks on the event loop.
If the zygote dies, `on_lost` is called once; the containerizer then starts executors the
ordinary way and learns of the orphaned executors' ends through their pidfds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Sequence

import msgspec

from butte.agent.containerizer.isolators import ContainerSetup
from butte.agent.effects import LaunchContainer

log = logging.getLogger("butte.agent")

_decoder = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()


class ReportReader:
    """What the zygote's and the command launcher's clients share: the callbacks and the
    parsing of the report lines both processes write (``{"id", "pid"|"exit"|"error"}``)."""

    _who = "the executor zygote"

    def __init__(
        self,
        on_started: Callable[[str, int], None],
        on_failed: Callable[[str, str], None],
        on_exited: Callable[[str, int | None], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._on_started = on_started
        self._on_failed = on_failed
        self._on_exited = on_exited
        self._on_lost = on_lost
        self._buffer = bytearray()
        self.alive = False

    def _receive(self) -> bytes:
        """What the process wrote since the last call (b"": it is gone; BlockingIOError:
        nothing yet)."""
        raise NotImplementedError

    def _lost(self) -> None:
        """The process is gone (or its connection is)."""
        raise NotImplementedError

    def _readable(self) -> None:
        try:
            data = self._receive()
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._buffer += data
        self._drain()

    def _drain(self) -> None:
        """Dispatches every whole line in the buffer (while the connection is alive)."""
        while self.alive:
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = _decoder.decode(line)
            container_id = str(message["id"])
        except (msgspec.DecodeError, KeyError, TypeError):
            log.warning("bad line from %s: %r", self._who, line[:200])
            return
        if "pid" in message:
            self._on_started(container_id, int(message["pid"]))
        elif "exit" in message:
            status = message["exit"]
            self._on_exited(container_id, status if isinstance(status, int) else None)
        else:
            error = message.get("error", f"unknown error of {self._who}")
            self._on_failed(container_id, str(error))


class ZygoteClient(ReportReader):
    """Drives one zygote process; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        argv: Sequence[str],
        *,
        on_started: Callable[[str, int], None],
        on_failed: Callable[[str, str], None],
        on_exited: Callable[[str, int | None], None],
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(on_started, on_failed, on_exited, on_lost)
        self._loop = loop
        self._argv = list(argv)
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.WriteTransport | None = None

    async def start(self) -> None:
        """Starts the zygote (its own session, so terminal signals to the agent's group do
        not reach it; it exits when the agent closes its stdin)."""
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._writer, _ = await self._loop.connect_write_pipe(asyncio.Protocol, self._proc.stdin)
        self._loop.add_reader(self._proc.stdout.fileno(), self._readable)
        self.alive = True

    def launch(self, spec: LaunchContainer, setup: ContainerSetup | None = None) -> None:
        """Asks for one executor (in the cgroups, with the sandbox owner and environment of
        ``setup``); the answer comes through the callbacks."""
        assert self._writer is not None
        request: dict = {"id": spec.container_id, "sandbox": spec.sandbox, "env": spec.env}
        if setup is not None:
            if setup.env:
                request["env"] = {**spec.env, **setup.env}
            if setup.cgroup_procs:
                request["cgroups"] = setup.cgroup_procs
            if setup.oom_score_adj is not None:
                request["oom_score_adj"] = setup.oom_score_adj
            if setup.user is not None:
                request["owner"] = [setup.user[1], setup.user[2]]
        self._writer.write(_encoder.encode(request) + b"\n")

    def _receive(self) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        return os.read(self._proc.stdout.fileno(), 1 << 20)

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        assert self._proc is not None and self._proc.stdout is not None
        self._loop.remove_reader(self._proc.stdout.fileno())
        log.error("the executor zygote exited; starting executors as new processes from now on")
        self._on_lost()

    async def close(self) -> None:
        """Closes the zygote's stdin (it exits) and reaps it."""
        proc = self._proc
        if proc is None:
            return
        if self.alive:
            self.alive = False
            assert proc.stdout is not None
            self._loop.remove_reader(proc.stdout.fileno())
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 5.0)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()
