"""``butte mpi --impl mpich`` against a real master and two agents whose ports are ranges of
their own: every port a node's ranks listen on is one of the ports its node task was offered,
its hydra proxy listens on none (both read from /proc by the ranks themselves), and the job
still computes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from butte.testing.require import require, require_module
from tests.integration.test_mpi_ports_offered import node_stderr, task_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RANGES = [(30100, 30149), (30150, 30199)]
AGENTS = [f"cpus:2;mem:1024;disk:1000;ports:[{b}-{e}]" for b, e in RANGES]

# Each rank reports the TCP ports it and its hydra proxy (an ancestor) listen on, by socket
# inode.
REPORT = """
import json, os
from mpi4py import MPI

def listening(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)

def proxy():
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "hydra_pmi_proxy":
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise SystemExit("no hydra_pmi_proxy above this rank")

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
comm.Barrier()
report = {
    "rank": comm.Get_rank(),
    "node": os.environ["BUTTE_MPI_NODE"],
    "offered": os.environ["BUTTE_MPI_PORTS"],
    "sum": total,
    "rank_ports": listening(os.getpid()),
    "proxy_ports": listening(proxy()),
}
print("PORTS " + json.dumps(report), flush=True)
comm.Barrier()
"""


def mpich_env(tmp_path: Path) -> dict[str, str]:
    """mpi4py's wheel loads Open MPI's libmpi by default: it is told to use MPICH and finds
    libmpich under the ABI's soname."""
    missing = [p for p in ("mpiexec.hydra", "hydra_pmi_proxy") if shutil.which(p) is None]
    require(", ".join(missing) + " not on PATH" if missing else None, "MPICH (mpich)")
    require_module("mpi4py", "scripts/test-deps/40-mpi.sh installs it")
    libdir = tmp_path / "mpich-abi"
    libdir.mkdir()
    (libdir / "libmpi.so.12").symlink_to("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
    return dict(os.environ, MPI4PY_MPIABI="mpich", LD_LIBRARY_PATH=str(libdir))


@pytest.mark.cluster(agents=2, resources=AGENTS)
def test_mpich_ranks_listen_only_on_their_node_tasks_offered_ports(cluster, tmp_path: Path):
    env = mpich_env(tmp_path)
    program = tmp_path / "report.py"
    program.write_text(REPORT)
    argv = [sys.executable, "-m", "butte.cli.main", "mpi", "--master", cluster.master_address]
    argv += ["--impl", "mpich", "-np", "4", "--per-agent", "2", "--", sys.executable, str(program)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr + node_stderr(cluster)
    reports = [json.loads(line[6:]) for line in done.stdout.splitlines() if line[:6] == "PORTS "]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3], done.stdout + done.stderr
    assert {r["sum"] for r in reports} == {10}  # the job computed across both agents

    (framework,) = cluster.state()["completed_frameworks"]
    tasks = {t["name"].rsplit(" ", 1)[1]: t for t in framework["completed_tasks"]}
    assert sorted(tasks) == ["node0", "node1"]
    assert {t["state"] for t in tasks.values()} == {"TASK_FINISHED"}
    every: list[int] = []
    for node, task in tasks.items():
        offered = task_ports(task)
        # 2 for each of its 2 ranks (none for hydra's proxy), one run of one agent's range.
        assert len(offered) == 4 and any(offered <= set(range(b, e + 1)) for b, e in RANGES)
        assert sorted(offered) == list(range(min(offered), max(offered) + 1))
        every += offered
        note = f"{node} on 127.0.0.1: ports {min(offered)}-{max(offered)} for its ranks"
        assert note in done.stderr
        mine = [r for r in reports if r["node"] == node]
        assert len(mine) == 2 and {r["offered"] for r in mine} == {
            ",".join(map(str, sorted(offered)))
        }
        for report in mine:
            assert report["proxy_ports"] == [], report  # hydra's proxy listens on nothing
            assert report["rank_ports"] and set(report["rank_ports"]) <= offered, report
    assert len(every) == len(set(every)) == 8
