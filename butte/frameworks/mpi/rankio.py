"""Runs one MPI rank and keeps its output in the node task's sandbox.

``mpirun`` starts ``python -m butte.frameworks.mpi.rankio PROGRAM ARGS...`` for every rank:
it runs the program and copies its stdout and stderr both to its own (which the MPI daemon
forwards to ``mpirun``, so ``butte mpi`` shows every rank's output merged) and to
``rank<N>.stdout`` / ``rank<N>.stderr`` in the sandbox (``MESOS_SANDBOX``), where ``butte task
cat`` and the agent's files API find them after the job. It exits with the program's status;
a non-zero one is also reported to ``butte mpi`` (`report_failure`), which fails the job.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import BinaryIO

from butte.core.parent_death import die_with_parent
from butte.frameworks.mpi.wire import call

_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def rank_of(environ: dict[str, str] | os._Environ[str]) -> str:
    """This rank's number from the MPI launcher's environment ("unknown" if none is set)."""
    for name in _RANK_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return value
    return "unknown"


def _copy(source: io.BufferedIOBase, sinks: tuple[BinaryIO, ...]) -> None:
    """Copies whole lines (a partial line only at the end or past 64 KiB), so that one
    write never ends mid-line and ranks' lines interleave less in the merged output."""
    pending = b""
    for chunk in iter(lambda: source.read1(65536), b""):
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut == 0 and len(pending) < 65536:
            continue
        if cut == 0:
            cut = len(pending)
        _write(sinks, pending[:cut])
        pending = pending[cut:]
    if pending:
        _write(sinks, pending)


def _write(sinks: tuple[BinaryIO, ...], data: bytes) -> None:
    for sink in sinks:
        sink.write(data)
        sink.flush()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: rankio PROGRAM ARGS...", file=sys.stderr)
        return 2
    rank = rank_of(os.environ)
    sandbox = os.environ.get("MESOS_SANDBOX") or os.getcwd()
    try:
        # close_fds=False: the MPI launcher may hand the rank descriptors (MPICH: PMI_FD).
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,  # the MPI daemon may SIGKILL this wrapper
            close_fds=False,
        )
    except OSError as e:
        print(f"rank {rank}: cannot run {argv[0]}: {e}", file=sys.stderr)
        return 127

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    with (
        open(os.path.join(sandbox, f"rank{rank}.stdout"), "ab") as out,
        open(os.path.join(sandbox, f"rank{rank}.stderr"), "ab") as err,
    ):
        assert child.stdout is not None and child.stderr is not None
        copiers = [
            threading.Thread(target=_copy, args=(child.stdout, (sys.stdout.buffer, out))),
            threading.Thread(target=_copy, args=(child.stderr, (sys.stderr.buffer, err))),
        ]
        for thread in copiers:
            thread.start()
        returncode = child.wait()
        for thread in copiers:
            thread.join()
    status = returncode if returncode >= 0 else 128 - returncode
    if status != 0:
        report_failure(rank, status)
    return status


def report_failure(rank: str, status: int) -> None:
    """Tells ``butte mpi`` (through the node's rendezvous, when this rank runs in a node task)
    that this rank failed, so it fails the whole job at once: MPI launchers differ in whether
    and when they abort the other ranks themselves."""
    base = os.environ.get("BUTTE_MPI_RENDEZVOUS")
    node = os.environ.get("BUTTE_MPI_NODE")
    token = os.environ.get("BUTTE_MPI_TOKEN")
    if not (base and node and token):
        return
    body = {"rank": int(rank) if rank.isdigit() else -1, "status": status}
    try:
        call(f"{base}/mpi/v1/nodes/{node}/rank_failed", token, body)
    except OSError as e:
        print(f"rank {rank}: could not report the failure: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
