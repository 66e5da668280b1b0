"""``butte mpi`` against a real master and two agents: a real MPI job (Open MPI, and MPICH)
through mpi4py whose allreduce is checked, a failing rank that fails the job and stops the
others, Ctrl-C, and two gang jobs that together exceed the cluster and both finish."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from butte.testing.require import require, require_module

pytestmark = pytest.mark.integration

# Two agents of 2 CPUs each: a 4-rank job (1 CPU per rank) takes the whole cluster. Their
# ports differ: the node tasks' MPI daemons and ranks bind their offered ports, and two
# agents of one host offering the same ones would hand both nodes the same.
RESOURCES = [f"cpus:2;mem:1024;disk:1000;ports:[{p}-{p + 49}]" for p in (28200, 28250)]

ALLREDUCE = """
import sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
print(f"rank {comm.Get_rank()} of {comm.Get_size()}: sum={total}", flush=True)
"""

# Rank 1 dies without MPI_Finalize (sys.exit would finalize, which waits for the others).
FAIL_ONE = """
import os, time
from mpi4py import MPI
comm = MPI.COMM_WORLD
comm.Barrier()
if comm.Get_rank() == 1:
    print("rank 1 fails", flush=True)
    # Open MPI forwards a rank's output on its own time and drops what it still holds once
    # the job aborts: give it a moment, as the test is about the job's end, not MPI's I/O.
    time.sleep(1)
    os._exit(7)
time.sleep(120)
"""


def _needs_mpi() -> None:
    missing = [p for p in ("mpirun", "orted") if shutil.which(p) is None]
    require(", ".join(missing) + " not on PATH" if missing else None, "Open MPI (openmpi-bin)")
    require_module("mpi4py", "scripts/test-deps/40-mpi.sh installs it")


def _butte_mpi(
    master: str,
    np: int,
    program: list[str],
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "butte.cli.main", "mpi", "--master", master, "-np", str(np)]
    argv += [*extra, "--", *program]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def _spawn_mpi(master: str, np: int, program: list[str], *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "butte.cli.main", "mpi", "--master", master, "-np", str(np)]
    argv += [*extra, "--", *program]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_sandbox_file(agent_url: str, path: str) -> str:
    query = urllib.parse.urlencode({"path": path, "offset": 0, "length": 65536})
    with urllib.request.urlopen(f"{agent_url}/files/read?{query}", timeout=5) as response:
        return json.loads(response.read())["data"]


IMPLS = ["openmpi", "mpich"]


def _impl_env(impl: str, tmp_path: Path) -> dict[str, str]:
    """The environment ``butte mpi`` runs in: mpi4py's wheel loads Open MPI's libmpi by
    default; for MPICH it is told so and finds libmpich under the ABI's soname."""
    if impl == "openmpi":
        _needs_mpi()
        return dict(os.environ)
    require(None if shutil.which("mpiexec.hydra") else "mpiexec.hydra not on PATH", "MPICH (mpich)")
    require_module("mpi4py", "scripts/test-deps/40-mpi.sh installs it")
    libdir = tmp_path / "mpich-abi"
    libdir.mkdir()
    (libdir / "libmpi.so.12").symlink_to("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
    return dict(os.environ, MPI4PY_MPIABI="mpich", LD_LIBRARY_PATH=str(libdir))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.cluster(agents=2, resources=RESOURCES)
def test_allreduce_across_two_agents(cluster, tmp_path: Path, impl: str) -> None:
    env = _impl_env(impl, tmp_path)
    program = tmp_path / "allreduce.py"
    program.write_text(ALLREDUCE)
    done = _butte_mpi(
        cluster.master_address, 4, [sys.executable, str(program)], "--per-agent", "2",
        "--impl", impl, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = sorted(re.findall(r"rank \d+ of \d+: sum=\d+", done.stdout))
    # 1 + 2 + 3 + 4: every rank took part in one reduction across both agents.
    assert lines == [f"rank {r} of 4: sum=10" for r in range(4)], done.stdout
    assert "job succeeded" in done.stderr

    # One node task per agent, each FINISHED, each with its ranks' output in its sandbox.
    state = cluster.state()
    (framework,) = state["completed_frameworks"]
    tasks = framework["completed_tasks"]
    assert sorted(t["state"] for t in tasks) == ["TASK_FINISHED", "TASK_FINISHED"]
    assert len({t["slave_id"] for t in tasks}) == 2
    ports = {a["id"]: a["pid"].rsplit(":", 1)[1] for a in state["slaves"]}
    seen = set()
    for task in tasks:
        agent_url = f"http://127.0.0.1:{ports[task['slave_id']]}"
        sandbox = f"/frameworks/{framework['id']}/executors/{task['id']}/runs/latest"
        for rank in range(4):
            try:
                text = _read_sandbox_file(agent_url, f"{sandbox}/rank{rank}.stdout")
            except urllib.error.HTTPError:
                continue
            assert text == f"rank {rank} of 4: sum=10\n"
            seen.add(rank)
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.cluster(agents=2, resources=RESOURCES)
def test_failing_rank_fails_the_job_and_kills_the_rest(cluster, tmp_path: Path, impl: str) -> None:
    env = _impl_env(impl, tmp_path)
    program = tmp_path / "fail_one.py"
    program.write_text(FAIL_ONE)
    started = time.monotonic()
    done = _butte_mpi(
        cluster.master_address, 4, [sys.executable, str(program)], "--per-agent", "2",
        "--impl", impl, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    # The job ends with the failed rank's status.
    assert done.returncode == 7, done.stderr
    assert "rank 1 fails" in done.stdout
    assert "job failed" in done.stderr
    # The other ranks sleep 120 s: they were stopped, not waited for.
    assert elapsed < 60, done.stderr
    state = cluster.state()
    (framework,) = state["completed_frameworks"]
    # No rank's node task outlived the job.
    assert framework["tasks"] == []
    assert len(framework["completed_tasks"]) == 2


@pytest.mark.cluster(agents=2, resources=RESOURCES)
def test_two_gang_jobs_exceeding_the_cluster_both_finish(cluster, tmp_path: Path) -> None:
    """Each job wants 3 of the cluster's 4 CPUs: they cannot run together, and neither may
    hold a part of the cluster forever while waiting for the rest."""
    _needs_mpi()
    program = tmp_path / "allreduce.py"
    program.write_text(ALLREDUCE)
    # A short hold so that the jobs release and retry several times within the test.
    flags = ("--hold_seconds", "1.5", "--backoff_max", "4", "--timeout", "150")
    jobs = [
        _spawn_mpi(cluster.master_address, 3, [sys.executable, str(program)], *flags)
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=170) for job in jobs]
    for job, (out, err) in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, err
        lines = sorted(re.findall(r"rank \d+ of \d+: sum=\d+", out))
        assert lines == [f"rank {r} of 3: sum=6" for r in range(3)], out
    # Whichever ran second waited holding part of the cluster (and released it) meanwhile.
    assert any("holding" in err for _, err in outputs), outputs
    state = cluster.state()
    assert len(state["completed_frameworks"]) == 2


@pytest.mark.cluster(agents=2, resources=RESOURCES)
def test_interrupt_kills_every_rank(cluster, tmp_path: Path) -> None:
    _needs_mpi()
    program = tmp_path / "sleep.py"
    program.write_text("import time\nfrom mpi4py import MPI\nprint('up', flush=True)\n"
                       "time.sleep(120)\n")  # fmt: skip
    job = _spawn_mpi(cluster.master_address, 2, [sys.executable, str(program)], "--per-agent", "1")
    assert job.stdout is not None
    # Both ranks print "up" once they run.
    lines = [job.stdout.readline(), job.stdout.readline()]
    assert lines == ["up\n", "up\n"], lines
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert "interrupted by SIGINT" in err
    cluster.wait_until(
        lambda s: s["completed_frameworks"] and not s["frameworks"], 30, "framework torn down"
    )
    (framework,) = cluster.state()["completed_frameworks"]
    assert framework["tasks"] == []
    assert sorted(t["state"] for t in framework["completed_tasks"]) == ["TASK_KILLED"] * 2
