"""Dask on butte: seconds for ``ButteCluster.scale(8)`` until 8 workers are connected to the
Dask scheduler, and for ``adapt`` to release idle workers (all 8 tasks ended).

    .venv/bin/python bench/bench_dask.py [--workers 8] [--repeat 3]

Needs the dask extra. The butte cluster is one master and 2 agents on 127.0.0.1 (cpus:4,
mem:4096 each); workers take 1 cpu and 512 MiB. ``adapt(minimum=0, maximum=N)`` runs with
Dask's default interval (1 s) and wait count (3), so the release figure includes Dask's own
deliberate 3 s of patience.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distributed import Client  # noqa: E402

from butte.core import task_states  # noqa: E402
from butte.dask import ButteCluster  # noqa: E402
from butte.testing.cluster import start_cluster  # noqa: E402

AGENTS = [
    "cpus:4;mem:4096;disk:1024;ports:[31000-31099]",
    "cpus:4;mem:4096;disk:1024;ports:[31100-31199]",
]


def live_tasks(cluster) -> int:
    state = cluster.state()
    tasks = [t for f in state["frameworks"] for t in f["tasks"]]
    return sum(1 for t in tasks if not task_states.is_terminal(t["state"]))


def one_run(cluster, workers: int) -> tuple[float, float]:
    with ButteCluster(cluster.master_address, worker_memory="512 MiB", quiet=True) as dc:
        with Client(dc) as client:
            t0 = time.monotonic()
            dc.scale(workers)
            client.wait_for_workers(workers, timeout=600)
            up = time.monotonic() - t0
            t1 = time.monotonic()
            dc.adapt(minimum=0, maximum=workers)
            while dc.plan or live_tasks(cluster):
                if time.monotonic() - t1 > 600:
                    raise TimeoutError("adapt did not release the workers")
                time.sleep(0.05)
            return up, time.monotonic() - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ups, downs = [], []
    with tempfile.TemporaryDirectory() as tmp, start_cluster(tmp, agents=2, resources=AGENTS) as c:
        for _ in range(args.repeat):
            up, down = one_run(c, args.workers)
            ups.append(up)
            downs.append(down)
            c.wait_until(lambda s: not s["frameworks"], 60, "framework gone")
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    print(
        f"scale({args.workers}) until {args.workers} workers connected: "
        f"{statistics.median(ups):.2f} s (min {min(ups):.2f}, max {max(ups):.2f}, n={len(ups)})"
    )
    print(
        f"adapt releases {args.workers} idle workers (tasks ended): "
        f"{statistics.median(downs):.2f} s (min {min(downs):.2f}, max {max(downs):.2f})"
    )


if __name__ == "__main__":
    main()
