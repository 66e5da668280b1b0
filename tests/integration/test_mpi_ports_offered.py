"""``butte mpi`` with Open MPI against a real master and two agents whose ports are ranges of
their own: every port a node's MPI daemon (orted) and its ranks listen on is one of the
ports its node task was offered (read from /proc by the ranks themselves), and the job still
computes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from butte.testing.require import require, require_module

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RANGES = [(28100, 28149), (28150, 28199)]
AGENTS = [f"cpus:2;mem:1024;disk:1000;ports:[{b}-{e}]" for b, e in RANGES]

# Each rank reports the TCP ports it and its node's daemon (an ancestor: orted, hydra's
# proxy) listen on, by socket inode.
REPORT = """
import json, os, sys
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

def daemon(name):
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == name:
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise SystemExit(f"no {name} above this rank")

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
comm.Barrier()
report = {
    "rank": comm.Get_rank(),
    "node": os.environ["BUTTE_MPI_NODE"],
    "offered": os.environ["BUTTE_MPI_PORTS"],
    "sum": total,
    "rank_ports": listening(os.getpid()),
    "daemon_ports": listening(daemon(sys.argv[1])),
}
print("PORTS " + json.dumps(report), flush=True)
comm.Barrier()
"""


def run_reporting_job(
    cluster, tmp_path: Path, daemon: str, impl: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[dict], dict[str, dict]]:
    """``butte mpi --impl IMPL -np 4 --per-agent 2`` of `REPORT` (``daemon``: the name of the
    node's daemon process): the finished run, the ranks' reports (checked to have computed
    across both agents), and the two node tasks by node name (checked finished)."""
    program = tmp_path / "report.py"
    program.write_text(REPORT)
    argv = [sys.executable, "-m", "butte.cli.main", "mpi", "--master", cluster.master_address]
    argv += ["--impl", impl, "-np", "4", "--per-agent", "2", "--"]
    argv += [sys.executable, str(program), daemon]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr + node_stderr(cluster)
    reports = [json.loads(line[6:]) for line in done.stdout.splitlines() if line[:6] == "PORTS "]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3], done.stdout + done.stderr
    assert {r["sum"] for r in reports} == {10}  # the job computed across both agents
    (framework,) = cluster.state()["completed_frameworks"]
    tasks = {t["name"].rsplit(" ", 1)[1]: t for t in framework["completed_tasks"]}
    assert sorted(tasks) == ["node0", "node1"]
    assert {t["state"] for t in tasks.values()} == {"TASK_FINISHED"}
    return done, reports, tasks


def task_ports(task: dict) -> set[int]:
    out: set[int] = set()
    for part in task["resources"].get("ports", "[]").strip("[]").split(","):
        if part.strip():
            begin, _, end = part.strip().partition("-")
            out.update(range(int(begin), int(end or begin) + 1))
    return out


def node_stderr(cluster) -> str:
    """The node tasks' stderr (orted's complaints), to say why a job failed."""
    state = cluster.state()
    agents = {a["id"]: a["pid"].rsplit(":", 1)[1] for a in state["slaves"]}
    out = []
    for framework in state["completed_frameworks"] + state["frameworks"]:
        for task in framework["completed_tasks"] + framework["tasks"]:
            path = f"/frameworks/{framework['id']}/executors/{task['id']}/runs/latest/stderr"
            query = urllib.parse.urlencode({"path": path, "offset": 0, "length": 65536})
            url = f"http://127.0.0.1:{agents[task['slave_id']]}/files/read?{query}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    out.append(f"{task['name']}: {json.loads(response.read())['data']}")
            except OSError as e:
                out.append(f"{task['name']}: {e}")
    return "\n".join(out)


@pytest.mark.cluster(agents=2, resources=AGENTS)
def test_orted_and_ranks_listen_only_on_their_node_tasks_offered_ports(cluster, tmp_path: Path):
    missing = [p for p in ("mpirun", "orted") if shutil.which(p) is None]
    require(", ".join(missing) + " not on PATH" if missing else None, "Open MPI (openmpi-bin)")
    require_module("mpi4py", "scripts/test-deps/40-mpi.sh installs it")
    done, reports, tasks = run_reporting_job(cluster, tmp_path, "orted", "openmpi")
    every: list[int] = []
    for node, task in tasks.items():
        offered = task_ports(task)
        # 3 for orted, 4 for each of its 2 ranks (room for twice its listeners), one run of
        # one agent's range.
        assert len(offered) == 11 and any(offered <= set(range(b, e + 1)) for b, e in RANGES)
        every += offered
        # butte mpi says which ports each node has.
        note = f"{node} on 127.0.0.1: ports {min(offered)}-{max(offered)} for its MPI daemon"
        assert note in done.stderr
        mine = [r for r in reports if r["node"] == node]
        assert len(mine) == 2 and {r["offered"] for r in mine} == {
            ",".join(map(str, sorted(offered)))
        }
        orted = set(mine[0]["daemon_ports"])
        assert len(orted) >= 2 and orted <= offered, (node, orted, offered)
        for report in mine:
            assert report["rank_ports"] and set(report["rank_ports"]) <= offered, report
    assert len(every) == len(set(every)) == 22
