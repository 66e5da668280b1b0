"""The program of an MPI node task: runs the MPI daemon that ``mpirun`` asks for on this node.

Started by the agent as the task's command with ``BUTTE_MPI_RENDEZVOUS``, ``BUTTE_MPI_NODE``
and ``BUTTE_MPI_TOKEN`` set. It fetches the daemon's command line from the job's rendezvous
service (`butte.frameworks.mpi.rendezvous`), runs it with ``/bin/sh -c`` in the sandbox (with
``TMPDIR`` there, so that two nodes on one host keep their session files apart), posts the
exit status back and exits with it, so the task ends FINISHED exactly when the daemon exited
0. SIGTERM (the task being killed) is passed on to the daemon's process group.

With ``BUTTE_MPI_PORTS`` (the task's run of offered ports) and ``BUTTE_MPI_IMPL``
(``openmpi`` or ``mpich``) it tells the daemon and its ranks which of those ports to listen
on (`butte.frameworks.mpi.ports.openmpi_port_env`, `~butte.frameworks.mpi.ports.mpich_port_env`),
choosing them when the daemon starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from butte.frameworks.mpi.ports import mpich_port_env, openmpi_port_env
from butte.frameworks.mpi.wire import call

# A node whose command never comes (the job died without telling) gives up after this long.
GIVE_UP_SECONDS = 600.0


def _fetch_command(url: str, token: str) -> str | None:
    """The daemon's command line; None when the job ended before it came."""
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while time.monotonic() < deadline:
        try:
            status, answer = call(f"{url}/command", token)
        except OSError as e:
            print(f"proxy: rendezvous unreachable: {e}", file=sys.stderr, flush=True)
            time.sleep(1.0)
            continue
        if status == 200:
            return str(answer["command"])
        if status == 410:
            return None
        if status != 204:
            raise RuntimeError(f"rendezvous answered {status}: {answer.get('error')}")
    raise RuntimeError(f"no command within {GIVE_UP_SECONDS:.0f}s")


def port_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that keep the MPI daemon and its ranks on the task's offered ports
    (none without ports; ValueError for an implementation butte cannot tell ports to, so
    that a node task never runs a daemon whose ranks would listen anywhere)."""
    ports = environ.get("BUTTE_MPI_PORTS", "")
    if not ports:
        return {}
    impl = environ.get("BUTTE_MPI_IMPL", "")
    tell = _PORT_ENVS.get(impl)
    if tell is None:
        raise ValueError(f"BUTTE_MPI_IMPL={impl!r}: no way to keep its processes on ports")
    chosen = tell([int(p) for p in ports.split(",")])
    print(f"proxy: ports {' '.join(f'{k}={v}' for k, v in chosen.items())}", flush=True)
    return chosen


_PORT_ENVS: dict[str, Callable[[Sequence[int]], dict[str, str]]] = {
    "openmpi": openmpi_port_env,
    "mpich": mpich_port_env,
}


def main() -> int:
    base = os.environ["BUTTE_MPI_RENDEZVOUS"]
    node = os.environ["BUTTE_MPI_NODE"]
    token = os.environ["BUTTE_MPI_TOKEN"]
    url = f"{base}/mpi/v1/nodes/{node}"
    print(f"proxy: node {node} waiting for its MPI daemon command", flush=True)
    command = _fetch_command(url, token)
    if command is None:
        print("proxy: the job ended before this node was used", flush=True)
        return 0
    sandbox = os.environ.get("MESOS_SANDBOX") or os.getcwd()
    env = dict(os.environ, TMPDIR=sandbox)
    try:
        env.update(port_env(os.environ))
    except ValueError as e:
        # Refused, not run on ports the agent did not offer: the launcher exits 1 as well.
        print(f"proxy: {e}", file=sys.stderr, flush=True)
        _report_exit(url, token, 1)
        return 1
    print(f"proxy: running {command}", flush=True)
    child = subprocess.Popen(["/bin/sh", "-c", command], env=env, start_new_session=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    returncode = child.wait()
    status = returncode if returncode >= 0 else 128 - returncode
    print(f"proxy: MPI daemon exited with status {status}", flush=True)
    _report_exit(url, token, status)
    return status


def _report_exit(url: str, token: str, status: int) -> None:
    """Tells the rendezvous (and so the launcher waiting there) the daemon's exit status."""
    try:
        call(f"{url}/exit", token, {"status": status})
    except OSError as e:
        print(f"proxy: could not report the exit status: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
