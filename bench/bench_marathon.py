"""Benchmark 13: ``butte marathon`` at scale against ``butte sim``.

A real ``butte master``, ``--agents`` simulated agents (tasks run forever) and a real
``butte marathon`` process. From the first POST it creates ``--apps`` apps of
``--instances`` instances each (no health checks; POSTs from ``--clients`` threads) and
measures the time until every instance runs; then a rolling restart of every app (``POST
/v2/apps/ID/restart``) until every instance runs the new configuration and no deployment is
left; the latency of ``GET /v2/apps?embed=apps.tasks`` with all instances; and marathon's
RSS at that size.

    .venv/bin/python bench/bench_marathon.py                     # 2,000 agents, 1,000 x 10
    .venv/bin/python bench/bench_marathon.py --agents 200 --apps 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from common import (
    BUTTE,
    Figure,
    Master,
    Process,
    exit_on_sigterm,
    free_port,
    print_table,
    processes,
    sim_process,
    work_dir,
)


def call(url: str, method: str = "GET", body: object = None, timeout: float = 120.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def gauge(api: str, name: str) -> float:
    return call(f"{api}/metrics")["gauges"][name]["value"]


def wait(predicate, timeout: float, what: str, poll: float = 0.25) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(what)
        time.sleep(poll)
    return time.monotonic() - start


def all_running(api: str, total: int) -> bool:
    return gauge(api, "marathon.instances.running.gauge") >= total and not call(
        f"{api}/v2/deployments"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8, help="threads POSTing apps")
    parser.add_argument("--allocation_interval", default="1secs")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    total = args.apps * args.instances
    with work_dir("marathon") as tmp:
        master = Master(tmp, [f"--allocation_interval={args.allocation_interval}"])
        sim = sim_process(
            tmp,
            master.address,
            args.agents,
            [
                "--resources=cpus:8;mem:16384;disk:65536;ports:[31000-32000]",
                "--task_duration=forever",
            ],
        )
        port = free_port()
        service = Process(
            "marathon",
            [
                *BUTTE,
                "marathon",
                f"--master={master.address}",
                f"--http_port={port}",
                "--http_address=127.0.0.1",
                "--hostname=127.0.0.1",
                f"--work_dir={tmp}/marathon",
            ],
            tmp / "marathon.log",
        )
        api = f"http://127.0.0.1:{port}"
        with processes(master, sim, service):
            master.start()
            master.wait_healthy()
            sim.start()
            master.wait_agents(args.agents, timeout=60 + args.agents / 100)
            service.start()
            wait(lambda: _up(api), 60, "marathon up")

            def post(i: int) -> None:
                app = {
                    "id": f"/bench/app-{i:05d}",
                    "cmd": "sleep 100000",
                    "cpus": 0.1,
                    "mem": 32,
                    "instances": args.instances,
                }
                call(f"{api}/v2/apps", "POST", app)

            start = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(post, range(args.apps)))
            posted = time.monotonic() - start
            wait(lambda: all_running(api, total), args.timeout, "all running")
            deploy = time.monotonic() - start

            latencies = []
            for _ in range(5):
                t0 = time.monotonic()
                apps = call(f"{api}/v2/apps?embed=apps.tasks")["apps"]
                latencies.append(time.monotonic() - t0)
            assert sum(len(a["tasks"]) for a in apps) == total
            rss = service.rss_bytes()

            before = {t["id"] for a in apps for t in a["tasks"]}
            start = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                list(
                    pool.map(
                        lambda i: call(f"{api}/v2/apps/bench/app-{i:05d}/restart", "POST", {}),
                        range(args.apps),
                    )
                )

            def restarted() -> bool:
                if not all_running(api, total):
                    return False
                apps = call(f"{api}/v2/apps?embed=apps.tasks")["apps"]
                now = {t["id"] for a in apps for t in a["tasks"]}
                return len(now) == total and not now & before

            wait(restarted, args.timeout, "rolling restart", poll=1.0)
            restart = time.monotonic() - start
            rss_after = service.rss_bytes()
    label = f" ({args.apps} apps x {args.instances}, {args.agents} agents)"
    figures = [
        Figure(
            "13a",
            f"marathon: all instances running{label}",
            [deploy],
            "s",
            20.0,
            note=f"{total / deploy:.0f} instances/s; POSTs took {posted:.1f} s",
        ),
        Figure("13b", f"marathon: rolling restart of every app{label}", [restart], "s", 60.0),
        Figure(
            "13c", f"marathon: GET /v2/apps?embed=apps.tasks, {total} tasks", latencies, "s", 0.3
        ),
        Figure(
            "13d",
            f"marathon: RSS with {total} instances",
            [rss / 2**20],
            "MiB",
            None,
            note=f"{rss_after / 2**20:.0f} MiB after the restart",
        ),
    ]
    print_table(figures, "benchmark 13: butte marathon")
    print(f"median GET latency {statistics.median(latencies):.3f} s")
    return 0


def _up(api: str) -> bool:
    try:
        return bool(call(f"{api}/v2/info", timeout=2)["frameworkId"])
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
