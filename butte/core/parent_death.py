"""A child process that ends with its parent: Linux's ``PR_SET_PDEATHSIG``, asked for
between fork and exec (``preexec_fn``). Used where a process butte starts must not outlive
the butte process that started it: the daemons of ``butte local``, a Spark driver, an MPI
rank's command, a test's ZooKeeper server."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """In the child before exec: have the kernel send ``signum`` when the parent dies
    (a no-op where ``prctl`` does not exist)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        pass
