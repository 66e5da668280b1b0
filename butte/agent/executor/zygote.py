"""A fork server for the built-in executor ("zygote").

Starting a Python interpreter costs far more than the built-in executor's work for a short
task. The agent therefore keeps one zygote process that has already imported the executor and
forks a fresh executor process per container: same process-per-task model as Mesos, without
the interpreter start-up.

Protocol on the zygote's stdin/stdout, one compact JSON object per line:

    agent -> zygote  {"id": <container id>, "sandbox": <dir>, "env": {...}}
    zygote -> agent  {"id": ..., "pid": <pid>}        the executor is running
                     {"id": ..., "error": <text>}     it could not be started
                     {"id": ..., "exit": <status>}    it ended (raw wait status)

The zygote creates the sandbox (and ``runs/latest``), forks, and the child becomes a session
leader in the sandbox with stdout/stderr on the sandbox files, the given environment, and
runs `butte.agent.executor.command`. The zygote reaps its children and reports their exits.
It exits when its stdin closes (the agent went away), and starts nothing for requests still
in the pipe once its agent is gone: the restarted agent launches those runs itself.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import gc
import os
import select
import sys

from butte.agent.containerizer import linux
from butte.agent.executor import command, lite
from butte.agent.placement import make_sandbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_spread: set[str] = set()  # executors directories given the placement hint


def prepare_sandbox(
    sandbox: str, container_id: str, owner: list[int] | None = None
) -> tuple[int, int]:
    """Creates the sandbox and its ``runs/latest`` link (the sandbox and its files owned by
    ``owner``, [uid, gid], if given); returns stdout and stderr fds."""
    make_sandbox(sandbox, _spread)
    if owner:
        os.chown(sandbox, owner[0], owner[1])
    link = os.path.join(os.path.dirname(sandbox), "latest")
    try:
        os.symlink(container_id, link)
    except FileExistsError:
        temporary = f"{link}.{container_id}"
        os.symlink(container_id, temporary)
        os.replace(temporary, link)
    out = os.open(os.path.join(sandbox, "stdout"), _OPEN_FLAGS, 0o644)
    err = os.open(os.path.join(sandbox, "stderr"), _OPEN_FLAGS, 0o644)
    if owner:
        os.fchown(out, owner[0], owner[1])
        os.fchown(err, owner[0], owner[1])
    return out, err


class Zygote:
    """The fork server's state: its pipes, signal wake-up and children."""

    def __init__(self) -> None:
        self.poller = select.epoll()
        self.buffer = bytearray()
        self.children: dict[int, str] = {}  # pid -> container id
        self.agent = os.getppid()
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, lambda *_: None)
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the agent decides when we stop
        self.poller.register(0, select.EPOLLIN)
        self.poller.register(self.wake_read, select.EPOLLIN)

    def reply(self, message: dict[str, Any]) -> None:
        data = lite.dumps(message) + b"\n"
        while data:
            data = data[os.write(1, data) :]

    def serve(self) -> int:
        """Answers requests until stdin closes."""
        while True:
            for fd, _ in self.poller.poll():
                if fd == self.wake_read:
                    self._drain_wake()
                    self._reap()
                elif not self._read_requests():
                    self._reap()
                    return 0

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _read_requests(self) -> bool:
        data = os.read(0, 1 << 20)
        if not data:
            return False
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                return True
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if line.strip():
                self._spawn(lite.loads(line))

    def _spawn(self, request: dict[str, Any]) -> None:
        container_id = request["id"]
        if os.getppid() != self.agent:
            # The agent died with requests still in the pipe: a restarted agent relaunches
            # what it finds checkpointed but never started (no sandbox), so start nothing.
            self.reply({"id": container_id, "error": "the agent is gone"})
            return
        try:
            out, err = prepare_sandbox(request["sandbox"], container_id, request.get("owner"))
        except OSError as e:
            self.reply({"id": container_id, "error": f"{type(e).__name__}: {e}"})
            return
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(out)
            os.close(err)
            self.reply({"id": container_id, "error": f"fork failed: {e}"})
            return
        if pid == 0:
            self._become_executor(request, out, err)  # never returns
        os.close(out)
        os.close(err)
        self.children[pid] = container_id
        self.reply({"id": container_id, "pid": pid})

    def _become_executor(self, request: dict[str, Any], out: int, err: int) -> None:
        code = 1
        try:
            _signal.set_wakeup_fd(-1)
            for number in (_signal.SIGCHLD, _signal.SIGINT):
                _signal.signal(number, _signal.SIG_DFL)
            # Close the zygote's own descriptors through their owners (no double close later).
            self.poller.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            # Into the container's cgroups before anything else runs (children follow).
            linux.join_cgroups(request.get("cgroups") or (), request.get("oom_score_adj"))
            os.setsid()
            try:  # what ps and top show for it (Linux)
                with open("/proc/self/comm", "w") as f:
                    f.write("butte-executor")
            except OSError:
                pass
            os.chdir(request["sandbox"])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in {null, out, err} - {0, 1, 2}:
                os.close(fd)
            environ = {str(k): str(v) for k, v in request["env"].items()}
            os.environ.clear()
            os.environ.update(environ)
            code = command.run_executor(environ)
        except BaseException as e:  # noqa: BLE001 - the child must always exit here
            try:
                os.write(2, f"executor: failed in the zygote child: {e!r}\n".encode())
            except OSError:
                pass
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            container_id = self.children.pop(pid, None)
            if container_id is not None:
                self.reply({"id": container_id, "exit": status})


def main() -> int:
    """Entry point of the zygote process."""
    sys.stdout.flush()
    zygote = Zygote()
    linux.preload()  # isolated tasks use ctypes: load it once here, not per executor
    # Everything imported so far is shared with every executor: keep the cyclic collector
    # of the executors from walking it (and so copying its pages).
    gc.collect()
    gc.freeze()
    return zygote.serve()


if __name__ == "__main__":
    sys.exit(main())
