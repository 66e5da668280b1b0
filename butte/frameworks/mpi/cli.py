"""``butte mpi``: run an MPI program as a gang-scheduled job (docs/mpi.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from butte.core.resources import Resources
from butte.frameworks.mpi import gang
from butte.frameworks.mpi.job import MpiJobError, MpiSpec, run_job
from butte.frameworks.mpi.ports import PORTS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines the ``butte mpi`` flags."""
    parser.usage = "butte mpi --master HOST:PORT -np N [options] -- PROGRAM [ARGS...]"
    parser.add_argument("--master", required=True, help="master to subscribe to, HOST:PORT")
    parser.add_argument(
        "-np", "--np", dest="np", type=_positive_int, required=True, help="number of ranks"
    )
    parser.add_argument(
        "--per-agent", dest="per_agent", type=_positive_int, default=None,
        help="at most this many ranks on one agent (default: as many as fit)",
    )  # fmt: skip
    parser.add_argument(
        "--impl", choices=["openmpi", "mpich"], default="openmpi",
        help="MPI implementation whose launcher runs the job: Open MPI's mpirun or MPICH's "
        "mpiexec.hydra",
    )  # fmt: skip
    parser.add_argument("--cpus", type=_positive_float, default=1.0, help="CPUs per rank")
    parser.add_argument("--mem", type=_positive_float, default=128.0, help="memory (MB) per rank")
    parser.add_argument("--name", default="mpi", help="job name (task ids are NAME.<run>.*)")
    parser.add_argument("--role", default="*", help="role to subscribe with")
    parser.add_argument(
        "--hold_seconds", type=_positive_float, default=10.0,
        help="how long to hold offers that do not yet fit every rank before releasing them "
        "all and backing off",
    )  # fmt: skip
    parser.add_argument(
        "--backoff_max", type=_positive_float, default=30.0,
        help="longest wait (seconds) between gang attempts; it doubles from 1s, randomised",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_positive_float, default=None,
        help="give up (killing every rank, exit status 124) after this many seconds",
    )  # fmt: skip
    parser.add_argument(
        "--advertise_ip", default=None,
        help="address the node tasks reach this process at (default: the local address of "
        "the route to the master)",
    )  # fmt: skip
    parser.add_argument(
        "--mpirun", default=None,
        help="the launcher program (default: mpirun for openmpi, mpiexec.hydra for mpich)",
    )  # fmt: skip
    parser.add_argument(
        "--mpirun_arg", dest="mpirun_args", action="append", default=[], metavar="ARG",
        help="extra argument for mpirun (repeatable), e.g. --mpirun_arg=--tag-output",
    )  # fmt: skip
    parser.add_argument(
        "--python", default=sys.executable,
        help="Python interpreter with butte that node tasks and rank wrappers run under on "
        "the agents (default: this one, %(default)s)",
    )  # fmt: skip
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")


def spec_from_args(args: argparse.Namespace) -> MpiSpec:
    """Validates the flags; raises ValueError with a message for the user."""
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        raise ValueError("no program given: butte mpi ... -- PROGRAM [ARGS...]")
    rank = Resources.scalars(args.role, cpus=args.cpus, mem=args.mem)
    node_ports, rank_ports = PORTS[args.impl]
    spec = gang.GangSpec(
        ranks=args.np,
        rank_resources=rank,
        per_agent=args.per_agent,
        hold_seconds=args.hold_seconds,
        backoff_max=args.backoff_max,
        node_ports=node_ports,
        rank_ports=rank_ports,
    )
    return MpiSpec(
        master=args.master,
        program=tuple(program),
        gang=spec,
        name=args.name,
        role=args.role,
        impl=args.impl,
        mpirun=args.mpirun,
        mpirun_args=tuple(args.mpirun_args),
        advertise_ip=args.advertise_ip,
        python=args.python,
        timeout=args.timeout,
    )


def _info(line: str) -> None:
    print(f"butte mpi: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """``butte mpi`` entry point: the job's exit status (2: it could not be run)."""
    try:
        spec = spec_from_args(args)
    except ValueError as e:
        _info(f"error: {e}")
        return 2
    try:
        return asyncio.run(run_job(spec, _info))
    except MpiJobError as e:
        _info(f"error: {e}")
        return 2
