"""Benchmark 13: ``butte marathon`` at scale against ``butte sim``.

A real ``butte master``, ``--agents`` simulated agents (tasks run forever) and a real
``butte marathon`` process. From the first POST it creates ``--apps`` apps of
``--instances`` instances each (no health checks; POSTs from ``--clients`` threads) and
measures the time until every instance runs; then a rolling restart of every app (``POST
/v2/apps/ID/restart``) until every instance runs the new configuration and no deployment is
left; the latency of ``GET /v2/apps?embed=apps.tasks`` with all instances; and marathon's
RSS at that size. With ``--zk`` two instances share a ZooKeeper (Debian's ``zookeeper``
package) and, at full size, the leader is SIGKILLed: the time until the standby leads and
serves (printed with the session timeout and their ratio), until it has re-subscribed,
heard from the master about every task and reports every instance running, and how many
tasks it launched. The GET is timed from the request to the last byte; the client's parse
of the answer is reported apart.

    .venv/bin/python bench/bench_marathon.py                     # 2,000 agents, 1,000 x 10
    .venv/bin/python bench/bench_marathon.py --agents 200 --apps 100 --zk
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def wait(predicate, timeout: float, what: str, poll: float = 0.25) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(what)
        time.sleep(poll)
    return time.monotonic() - start


def all_running(api: str, total: int) -> bool:
    gauges = call(f"{api}/metrics")["gauges"]
    running = gauges["marathon.instances.running.gauge"]["value"]
    return running >= total and not call(f"{api}/v2/deployments")


def up(api: str) -> bool:
    try:
        return bool(call(f"{api}/v2/info", timeout=2)["frameworkId"])
    except (OSError, ValueError, KeyError):
        return False


def marathon_process(tmp: Path, name: str, master: str, port: int, flags: list[str]) -> Process:
    argv = [*BUTTE, "marathon", f"--master={master}", f"--http_port={port}"]
    argv += ["--http_address=127.0.0.1", "--hostname=127.0.0.1", f"--work_dir={tmp}/{name}"]
    return Process(name, [*argv, *flags], tmp / f"{name}.log")


def deploy_and_restart(args, api: str, total: int) -> dict[str, float | list[float]]:
    """The three measured phases on a running marathon."""

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

    latencies, parsing = [], []
    for _ in range(5):
        t0 = time.monotonic()
        with urllib.request.urlopen(f"{api}/v2/apps?embed=apps.tasks", timeout=120) as r:
            raw = r.read()
        latencies.append(time.monotonic() - t0)  # request sent .. last byte received
        t0 = time.monotonic()
        apps = json.loads(raw)["apps"]
        parsing.append(time.monotonic() - t0)
    assert sum(len(a["tasks"]) for a in apps) == total
    before = {t["id"] for a in apps for t in a["tasks"]}

    def restart(i: int) -> None:
        call(f"{api}/v2/apps/bench/app-{i:05d}/restart", "POST", {})

    start = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(restart, range(args.apps)))

    def restarted() -> bool:
        if not all_running(api, total):
            return False
        apps = call(f"{api}/v2/apps?embed=apps.tasks")["apps"]
        now = {t["id"] for a in apps for t in a["tasks"]}
        return len(now) == total and not now & before

    wait(restarted, args.timeout, "rolling restart", poll=1.0)
    return {
        "parsing": parsing,
        "bytes": len(raw),
        "posted": posted,
        "deploy": deploy,
        "latencies": latencies,
        "restart": time.monotonic() - start,
    }


def take_over(
    args, leader: Process, standby: Process, other: str, total: int
) -> tuple[float, float, int]:
    """SIGKILLs the leader under full load: (seconds until the standby leads and serves
    /v2/apps, seconds until it has re-subscribed, heard from the master about every task
    (reconciled) and reports every instance running, tasks it launched)."""
    leader.kill()
    start = time.monotonic()

    def serving() -> bool:
        try:
            leads = call(f"{other}/v2/leader", timeout=2)["leader"] == other.removeprefix("http://")
            return leads and bool(call(f"{other}/v2/apps", timeout=10)["apps"])
        except (OSError, ValueError, KeyError):
            return False

    wait(serving, 120, "standby serving", poll=0.1)
    took = time.monotonic() - start

    def reconciled() -> bool:
        gauges = call(f"{other}/metrics")["gauges"]
        unreconciled = gauges.get("marathon.instances.unreconciled.gauge", {"value": 0})
        return unreconciled["value"] == 0 and all_running(other, total)

    wait(reconciled, args.timeout, "reconciled and all running on the new leader", poll=0.1)
    reloaded = time.monotonic() - start
    counters = call(f"{other}/metrics")["counters"]
    for line in standby.log_tail(200).splitlines():  # where the new leader's time went
        if any(w in line for w in ("elected", "loaded", "subscribed as")):
            print(f"standby: {line}")
    return took, reloaded, int(counters["marathon.tasks-launched.counter"]["count"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8, help="threads POSTing apps")
    parser.add_argument("--allocation_interval", default="1secs")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--zk", action="store_true", help="also the failover (see above)")
    parser.add_argument("--zk_session_timeout", type=int, default=2000, help="milliseconds")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    total = args.apps * args.instances
    zk_tick = 0
    with work_dir("marathon") as tmp:
        zk = None
        flags: list[str] = []
        if args.zk:
            from butte.testing.zookeeper import ZooKeeperEnsemble

            zk = ZooKeeperEnsemble(tmp / "zk", size=1)
            zk.start()
            zk_tick = zk.tick_ms
            flags = [
                f"--zk={zk.url('/marathon')}",
                f"--zk_session_timeout={args.zk_session_timeout}",
            ]
        master = Master(tmp, [f"--allocation_interval={args.allocation_interval}"])
        sim_flags = ["--resources=cpus:8;mem:16384;disk:65536;ports:[31000-32000]"]
        sim = sim_process(tmp, master.address, args.agents, [*sim_flags, "--task_duration=forever"])
        port, standby_port = free_port(), free_port()
        service = marathon_process(tmp, "marathon", master.address, port, flags)
        standby = marathon_process(tmp, "standby", master.address, standby_port, flags)
        api = f"http://127.0.0.1:{port}"
        try:
            with processes(master, sim, service, standby):
                master.start()
                master.wait_healthy()
                sim.start()
                master.wait_agents(args.agents, timeout=60 + args.agents / 100)
                service.start()
                wait(lambda: up(api), 60, "marathon up")
                if args.zk:
                    standby.start()
                    wait(lambda: up(f"http://127.0.0.1:{standby_port}"), 60, "standby up")
                result = deploy_and_restart(args, api, total)
                rss = service.rss_bytes()
                failover = None
                if args.zk:
                    other = f"http://127.0.0.1:{standby_port}"
                    failover = take_over(args, service, standby, other, total)
        finally:
            if zk is not None:
                zk.stop()
    label = f" ({args.apps} apps x {args.instances}, {args.agents} agents)"
    deploy = result["deploy"]
    figures = [
        Figure(
            "13a",
            f"marathon: all instances running{label}",
            [deploy],
            "s",
            20.0,
            note=f"{total / deploy:.0f} instances/s; the POSTs took {result['posted']:.1f} s",
        ),
        Figure(
            "13b", f"marathon: rolling restart of every app{label}", [result["restart"]], "s", 60.0
        ),
        Figure(
            "13c",
            f"marathon: GET /v2/apps?embed=apps.tasks, {total} tasks",
            result["latencies"],
            "s",
            0.3,
            note="request .. last byte; samples in order: "
            + ", ".join(f"{x:.3f}" for x in result["latencies"])
            + f" s (the first right after all instances run); {result['bytes'] / 1e6:.1f} MB, "
            f"which the client's json.loads then took {statistics.median(result['parsing']):.3f} s"
            " (median) to parse",
        ),
        Figure("13d", f"marathon: RSS with {total} instances", [rss / 2**20], "MiB", None),
    ]
    if failover is not None:
        took, reloaded, launched = failover
        session = args.zk_session_timeout / 1000
        # ZooKeeper clamps a session timeout to 2..20 ticks (the ensemble's tickTime)
        tick = zk_tick / 1000
        negotiated = min(max(session, 2 * tick), 20 * tick)
        figures.append(
            Figure(
                "13e",
                f"marathon --zk: standby serving after the leader's SIGKILL{label}",
                [took],
                "s",
                negotiated + 2,
                note=f"session timeout {negotiated:g} s (asked {session:g} s, tickTime "
                f"{tick:g} s), failover {took:.2f} s = {took / negotiated:.2f} x the session "
                f"timeout; re-subscribed, every task reconciled and running after "
                f"{reloaded:.1f} s; tasks the new leader launched: {launched}",
            )
        )
    print_table(figures, "benchmark 13: butte marathon")
    print(f"median GET latency {statistics.median(result['latencies']):.3f} s")
    if failover is not None:
        print(
            f"failover {failover[0]:.2f} s with a {negotiated:g} s session timeout "
            f"(ratio {failover[0] / negotiated:.2f}; target: timeout + 2 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
