"""The remote-shell program ``mpirun`` runs instead of ssh (``--mca plm_rsh_agent``).

``mpirun`` calls it as ``launcher NODE COMMAND...`` to start its daemon on NODE (MPICH's
``mpiexec.hydra`` as ``launcher -x NODE COMMAND...``: ssh options are skipped). It posts the
command to the job's rendezvous service (`butte.frameworks.mpi.rendezvous`, address and token
in ``BUTTE_MPI_RENDEZVOUS`` / ``BUTTE_MPI_LAUNCH_TOKEN``), waits until the node task that
ran it reports the exit status, and exits with that status, as ssh would. Killing it (mpirun
does so when it aborts) does not reach the remote daemon: mpirun tells the daemons to exit
itself, and ``butte mpi`` kills the node tasks.
"""

from __future__ import annotations

import os
import sys
import time

from butte.frameworks.mpi.wire import call

# ssh options that take a value (MPICH's hydra passes "-x"; others are skipped likewise).
_SSH_VALUE_OPTIONS = frozenset({"-b", "-c", "-E", "-F", "-i", "-l", "-m", "-o", "-p", "-J"})


def skip_ssh_options(argv: list[str]) -> list[str]:
    """``argv`` without the leading ssh options (``-x``, ``-o Key=value`` ...)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _SSH_VALUE_OPTIONS else 1
    return argv[i:]


def main(argv: list[str]) -> int:
    """Runs the launcher; returns the remote command's exit status."""
    if len(argv) < 2:
        print("usage: launcher NODE COMMAND...", file=sys.stderr)
        return 255
    base = os.environ.get("BUTTE_MPI_RENDEZVOUS", "")
    token = os.environ.get("BUTTE_MPI_LAUNCH_TOKEN", "")
    if not base or not token:
        print(
            "launcher: BUTTE_MPI_RENDEZVOUS and BUTTE_MPI_LAUNCH_TOKEN must be set", file=sys.stderr
        )
        return 255
    argv = skip_ssh_options(argv)
    if len(argv) < 2:
        print("usage: launcher [SSH OPTIONS] NODE COMMAND...", file=sys.stderr)
        return 255
    node, command = argv[0], " ".join(argv[1:])
    url = f"{base}/mpi/v1/nodes/{node}"
    try:
        status, answer = call(f"{url}/launch", token, {"command": command})
        if status != 202:
            print(f"launcher: {node}: {answer.get('error', status)}", file=sys.stderr)
            return 255
        while True:
            status, answer = call(f"{url}/exit", token)
            if status == 200:
                return int(answer["status"]) & 0xFF
            if status != 204:
                print(f"launcher: {node}: {answer.get('error', status)}", file=sys.stderr)
                return 255
    except (OSError, ValueError) as e:
        print(f"launcher: {node}: {e}", file=sys.stderr)
        time.sleep(0.1)
        return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
