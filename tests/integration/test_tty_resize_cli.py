"""``butte task exec -t`` without ``-i``, driven through a real pty against a real cluster
(no isolation, so it needs no root): the terminal's size changes while the command runs,
and the command sees the new size. The CLI sends its window sizes on the input stream
whether or not it forwards stdin (`butte.cli.task_exec`, docs/exec.md)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
import time

import pytest
from test_nested_containers import _Screen, running_task

from butte.testing.cluster import ClusterHandle

pytestmark = pytest.mark.integration

# Prints the size, waits until it is another one, prints that.
WATCH_SIZE = (
    'first=$(stty size); echo "size:$first"; '
    'while [ "$(stty size)" = "$first" ]; do sleep 0.1; done; echo "size:$(stty size)"'
)


def test_exec_tty_without_input_follows_the_terminals_size(cluster: ClusterHandle) -> None:
    with running_task(cluster, "sized", "sleep 300") as running:
        pid, fd = pty.fork()
        if pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            argv = [sys.executable, "-m", "butte", "task", "exec", "--master"]
            argv += [cluster.master_address, "-t", running["task_id"]["value"], "--"]
            os.execv(sys.executable, [*argv, "sh", "-c", WATCH_SIZE])
        try:
            screen = _Screen(fd)
            screen.expect(b"size:30 100")
            # The kernel sends the CLI SIGWINCH; it sends the size on, and the command,
            # which reads no input, sees it.
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
            screen.expect(b"size:50 132", timeout=20)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0, screen.text
                    break
                screen.read_for(0.2)
            else:
                raise AssertionError(f"the CLI did not end: {screen.text!r}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            os.close(fd)
