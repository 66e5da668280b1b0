"""Docker tasks per second on one real agent, against ``docker run`` itself.

A private Docker daemon (`butte.testing.docker`: its own socket and directories, no
networking of its own) with the busybox test image; a real master and one real ``butte
agent --containerizers docker,mesos``; a `LaunchingFramework` keeps ``--inflight`` DOCKER
tasks (``true`` in the image, network NONE) between ACCEPT and their terminal update until
``--tasks`` have finished. tasks/s = tasks / (first ACCEPT .. last TASK_FINISHED). In the
same run, the bound: ``docker run --rm --network=none IMAGE true`` with the same number in
flight (the client, the daemon, containerd and runc, which every Docker task goes through).

    .venv/bin/python bench/bench_docker.py [--tasks 100] [--inflight 8]

Needs root and docker.io.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import (
    Figure,
    exit_on_sigterm,
    master_with_agent,
    print_table,
    work_dir,
)
from frameworks import LaunchingFramework, TaskShape, finish_rate

from butte.testing.docker import DOCKER, Dockerd, dockerd


class DockerFramework(LaunchingFramework):
    """Launches DOCKER tasks of ``image``."""

    def __init__(self, *args: Any, image: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image = image

    def _task(self, offer: dict[str, Any]) -> dict[str, Any]:
        task = super()._task(offer)
        task["container"] = {"type": "DOCKER", "docker": {"image": self.image, "network": "NONE"}}
        return task


def docker_run_rate(daemon: Dockerd, image: str, count: int, inflight: int) -> float:
    """``docker run --rm`` of ``true`` per second with ``inflight`` at a time."""
    argv = [DOCKER, "-H", daemon.host, "run", "--rm", "--network=none", image, "true"]

    def one(_: int) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(inflight) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started)


async def _drive(master: str, image: str, tasks: int, inflight: int) -> tuple[float, int]:
    fw = DockerFramework(
        master,
        "bench-docker",
        TaskShape(cpus=0.01, mem=32.0, command="true"),
        tasks_per_offer=inflight,
        max_inflight=inflight,
        max_tasks=tasks,
        until_terminal=True,
        image=image,
    )
    return await finish_rate(fw, 600.0), fw.stats.errors


def run_docker_bench(tasks: int, inflight: int) -> dict:
    with dockerd() as daemon, work_dir("docker") as tmp:
        image = daemon.load_busybox()
        daemon.docker("run", "--rm", "--network=none", image, "true")  # warm the daemon
        flags = [
            "--containerizers=docker,mesos",
            f"--docker={DOCKER}",
            f"--docker_socket={daemon.socket}",
        ]
        with master_with_agent(tmp, flags) as (master, _):
            raw_before = docker_run_rate(daemon, image, tasks, inflight)
            rate, errors = asyncio.run(_drive(master.address, image, tasks, inflight))
            raw_after = docker_run_rate(daemon, image, tasks, inflight)
    return {"tasks_per_second": rate, "raw": [raw_before, raw_after], "errors": errors}


def figures(result: dict, tasks: int, inflight: int) -> list[Figure]:
    raw = sum(result["raw"]) / len(result["raw"])
    rate = result["tasks_per_second"]
    note = (
        f"{rate:.1f} DOCKER tasks/s vs `docker run` {raw:.1f}/s "
        f"({result['raw'][0]:.1f}/{result['raw'][1]:.1f}), {inflight} in flight, "
        f"{result['errors']} errors"
    )
    return [
        Figure(
            "D1",
            f"real agent, {tasks} DOCKER `true` tasks: tasks/s / `docker run` rate",
            [rate / raw],
            "x",
            0.5,
            higher_is_better=True,
            note=note,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=8)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_docker_bench(args.tasks, args.inflight)
    print_table(figures(result, args.tasks, args.inflight), "Docker containerizer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
