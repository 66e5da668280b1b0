"""``butte mpi --impl mpich`` against a real master and two agents whose ports are ranges of
their own: every port a node's ranks listen on is one of the ports its node task was offered,
its hydra proxy listens on none (both read from /proc by the ranks themselves), and the job
still computes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from butte.testing.require import require, require_module
from tests.integration.test_mpi_ports_offered import run_reporting_job, task_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RANGES = [(30100, 30149), (30150, 30199)]
AGENTS = [f"cpus:2;mem:1024;disk:1000;ports:[{b}-{e}]" for b, e in RANGES]


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
    done, reports, tasks = run_reporting_job(cluster, tmp_path, "hydra_pmi_proxy", "mpich", env)
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
            assert report["daemon_ports"] == [], report  # hydra's proxy listens on nothing
            assert report["rank_ports"] and set(report["rank_ports"]) <= offered, report
    assert len(every) == len(set(every)) == 8
