"""Fairness check: a mixed workload replayed through a real master with simulated agents.

Frameworks with different task sizes and durations, each in its own role (weights set with
the operator API's UPDATE_WEIGHTS): two greedy ones that launch everything that fits and
decline the rest with Mesos' default 5 s filter, a small one that launches one short task
per offer, and a late one that arrives once the cluster is full. It prints each framework's
dominant share and the cluster's utilisation over time, and checks the property that offer
starvation violates: a framework that wants resources and is below its weighted fair share
never waits more than two allocation intervals for an offer while resources sit unallocated
(declined by the others). ``slack`` covers the time an offer takes to travel.

    .venv/bin/python bench/fairness.py [--seconds 20] [--interval 0.5] [--quota]

``--quota`` replays the same mix with quota (set with UPDATE_QUOTA before the frameworks
come): ``greedy-big`` has a limit of a quarter of the cluster's cpus, and a fifth framework,
``guaranteed`` (role ``prod``), arrives once the cluster is full with a guarantee of a quarter
of its cpus. It checks that ``guaranteed`` holds its guarantee (offered or used, as the
master's consumed quota counts it) within two allocation intervals of subscribing, that no
role is ever over its limit, and the starvation property for the rest (resources held back as
headroom for an unmet guarantee, and a role at its limit, do not count as starving anyone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from common import Master, exit_on_sigterm, processes, work_dir
from frameworks import offer_scalars

from butte.client.scheduler import SchedulerClient
from butte.core.resources import parse_resources
from butte.sim.agents import SimOptions, SimulatedCluster

AGENT = "cpus:4;mem:4096"


@dataclass
class Workload:
    """One framework of the replay."""

    name: str
    role: str
    weight: float
    cpus: float
    mem: float
    seconds: float
    tasks: int
    per_offer: int  # tasks launched per offer at most (0: as many as fit)
    refuse: float  # filter on what is left of an offer
    start: float = 0.0  # seconds after the replay starts
    offers_at: list[float] = field(default_factory=list)
    pending: int = 0
    launched: int = 0
    subscribed_at: float | None = None
    # agent id -> when this framework's own refusal filter on it expires
    filtered: dict[str, float] = field(default_factory=dict)
    # quota of the role, in cpus (None: none)
    guarantee_cpus: float | None = None
    limit_cpus: float | None = None


def default_workloads(seconds: float) -> list[Workload]:
    return [
        Workload("greedy-big", "batch", 1.0, 1.0, 1024, 4.0, 10_000, 0, 5.0),
        Workload("greedy-wide", "analytics", 1.0, 0.5, 256, 3.0, 10_000, 0, 5.0),
        Workload("small-short", "service", 2.0, 0.1, 64, 0.5, 10_000, 1, 0.0),
        Workload("late", "adhoc", 1.0, 0.25, 128, 1.0, 10_000, 2, 0.0, start=seconds / 3),
    ]


def quota_workloads(seconds: float, cluster_cpus: float) -> list[Workload]:
    """`default_workloads` with a limit on greedy-big and a late guaranteed framework."""
    out = default_workloads(seconds)
    out[0].limit_cpus = cluster_cpus / 4
    out.append(
        Workload(
            "guaranteed", "prod", 1.0, 0.5, 256, 3.0, 10_000, 0, 0.0, start=seconds / 3,
            guarantee_cpus=cluster_cpus / 4,
        )
    )  # fmt: skip
    return out


@dataclass
class Sample:
    at: float
    shares: dict[str, float]
    utilisation: float
    # agent id -> (cpus, mem) neither used nor offered
    free: dict[str, tuple[float, float]]
    # role -> consumed quota cpus (offered or used, reservations included), from /roles
    consumed: dict[str, float] = field(default_factory=dict)


async def run_framework(w: Workload, master: str, t0: float, stop: asyncio.Event) -> None:
    """Launches ``w``'s tasks on its offers until ``stop``."""
    await asyncio.sleep(max(0.0, t0 + w.start - time.monotonic()))
    w.pending = w.tasks
    info = {"name": w.name, "role": w.role, "failover_timeout": 0.0}
    w.subscribed_at = time.monotonic()
    async with SchedulerClient(master, info) as client:
        events = asyncio.create_task(_events(client, w, stop))
        await stop.wait()
        events.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await events
        with contextlib.suppress(Exception):
            await client.teardown()


async def _events(client: SchedulerClient, w: Workload, stop: asyncio.Event) -> None:
    async for event in client:
        if event["type"] == "OFFERS":
            w.offers_at.append(time.monotonic())
            for offer in event["offers"]["offers"]:
                await _use_offer(client, w, offer)
        elif event["type"] == "UPDATE":
            await client.acknowledge_status(event["update"]["status"])


async def _use_offer(client: SchedulerClient, w: Workload, offer: dict[str, Any]) -> None:
    have = offer_scalars(offer)
    fits = int(min(have.get("cpus", 0) / w.cpus, have.get("mem", 0) / w.mem) + 1e-9)
    count = min(fits, w.pending, w.per_offer or fits)
    tasks = []
    for _ in range(count):
        w.launched += 1
        tid = f"{w.name}-{w.launched}"
        tasks.append(
            {
                "name": tid,
                "task_id": {"value": tid},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": w.cpus}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": w.mem}},
                ],
                "command": {"value": f"sleep {w.seconds}"},
            }
        )
    w.pending -= count
    if w.refuse > 0:
        w.filtered[offer["agent_id"]["value"]] = time.monotonic() + w.refuse
    await client.launch(offer, tasks, refuse_seconds=w.refuse)


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/master/state", timeout=10) as response:
        return json.loads(response.read())


def sample_state(url: str, at: float) -> Sample:
    state = _state(url)
    total_cpus = sum(a["resources"]["cpus"] for a in state["slaves"]) or 1.0
    total_mem = sum(a["resources"]["mem"] for a in state["slaves"]) or 1.0
    shares, used_cpus, used_mem = {}, 0.0, 0.0
    for fw in state["frameworks"]:
        held = fw["resources"]
        shares[fw["name"]] = max(held["cpus"] / total_cpus, held["mem"] / total_mem)
        used_cpus += fw["used_resources"]["cpus"]
        used_mem += fw["used_resources"]["mem"]
    free = {}
    for a in state["slaves"]:
        total, used, offered = a["resources"], a["used_resources"], a["offered_resources"]
        free[a["id"]] = (
            total["cpus"] - used["cpus"] - offered["cpus"],
            total["mem"] - used["mem"] - offered["mem"],
        )
    with urllib.request.urlopen(f"{url}/master/roles", timeout=10) as response:
        roles = json.loads(response.read())["roles"]
    consumed = {r["name"]: r.get("quota", {}).get("consumed", {}).get("cpus", 0.0) for r in roles}
    return Sample(at, shares, max(used_cpus / total_cpus, used_mem / total_mem), free, consumed)


def headroom_cpus(workloads: list[Workload], s: Sample) -> float:
    """Cpus the allocator holds back for guarantees not met yet at sample ``s``."""
    return sum(
        max(0.0, w.guarantee_cpus - s.consumed.get(w.role, 0.0))
        for w in workloads
        if w.guarantee_cpus
    )


def deprived(w: Workload, s: Sample, fair: float, held_back: float = 0.0) -> bool:
    """``w`` wants resources, is below its fair share, and some agent that ``w`` has not
    filtered itself has room for one of its tasks, unallocated (declined by the others).
    With quota: a role at its limit is not deprived, and ``held_back`` cpus of the free ones
    are headroom for unmet guarantees (not ``w``'s unless it is the guaranteed one)."""
    if w.subscribed_at is None or w.subscribed_at > s.at or w.pending <= 0:
        return False
    if s.shares.get(w.name, 0.0) >= fair:
        return False
    if w.limit_cpus is not None and s.consumed.get(w.role, 0.0) + w.cpus > w.limit_cpus:
        return False
    if not w.guarantee_cpus and sum(c for c, _ in s.free.values()) - held_back < w.cpus:
        return False
    return any(
        cpus >= w.cpus and mem >= w.mem and w.filtered.get(agent, 0.0) <= s.at
        for agent, (cpus, mem) in s.free.items()
    )


def starvation(workloads: list[Workload], samples: list[Sample]) -> dict[str, float]:
    """For each framework, the longest time it stayed `deprived` without an offer (from the
    later of the deprivation's start and its last offer); 0.0 if never."""
    worst: dict[str, float] = {w.name: 0.0 for w in workloads}
    since: dict[str, float | None] = {w.name: None for w in workloads}
    for s in samples:
        wanting = [w for w in workloads if w.subscribed_at is not None and w.subscribed_at <= s.at]
        weights = sum(w.weight for w in wanting) or 1.0
        held_back = headroom_cpus(workloads, s)
        for w in workloads:
            if not deprived(w, s, w.weight / weights, held_back):
                since[w.name] = None
                continue
            start = since[w.name]
            if start is None:
                start = since[w.name] = s.at
            offers = [t for t in w.offers_at if t <= s.at]
            if offers:
                start = max(start, offers[-1])
            worst[w.name] = max(worst[w.name], s.at - start)
    return worst


def quota_checks(workloads: list[Workload], samples: list[Sample]) -> dict[str, float]:
    """With quota: for each guaranteed framework, seconds from subscribing until its role's
    consumption first reached the guarantee (inf: never); for each limited one, the most its
    role ever consumed over the limit (0.0: never over)."""
    out: dict[str, float] = {}
    for w in workloads:
        if w.guarantee_cpus and w.subscribed_at is not None:
            reached = [
                s.at
                for s in samples
                if s.at >= w.subscribed_at and s.consumed.get(w.role, 0.0) >= w.guarantee_cpus
            ]
            out[f"{w.name} reached its guarantee after (s)"] = (
                reached[0] - w.subscribed_at if reached else float("inf")
            )
        if w.limit_cpus is not None:
            over = max((s.consumed.get(w.role, 0.0) - w.limit_cpus for s in samples), default=0)
            out[f"{w.name} most cpus over its limit"] = max(0.0, over)
    return out


def _v1(url: str, body: dict[str, Any], patience: float = 15.0) -> None:
    """One operator call; a 503 (the master is healthy but not yet leading) is retried."""
    deadline = time.monotonic() + patience
    while True:
        request = urllib.request.Request(
            f"{url}/api/v1", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
            return
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


async def replay(
    url: str, address: str, agents: int, seconds: float, interval: float, quota: bool = False
) -> dict:
    if quota:
        workloads = quota_workloads(seconds, agents * parse_resources(AGENT).scalar("cpus"))
    else:
        workloads = default_workloads(seconds)
    weights = [{"role": w.role, "weight": w.weight} for w in workloads]
    body = {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": weights}}
    await asyncio.to_thread(_v1, url, body)
    configs = []
    for w in workloads:
        config: dict[str, Any] = {"role": w.role}
        if w.guarantee_cpus:
            config["guarantees"] = {"cpus": {"value": w.guarantee_cpus}}
        if w.limit_cpus is not None:
            config["limits"] = {"cpus": {"value": w.limit_cpus}}
        if len(config) > 1:
            configs.append(config)
    if configs:
        # force: the agents are not there yet, so the capacity check would refuse.
        body = {"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": configs, "force": True}}
        await asyncio.to_thread(_v1, url, body)
    cluster = SimulatedCluster(address, agents, SimOptions.from_text(AGENT, seed=1))
    await cluster.start()
    stop = asyncio.Event()
    samples: list[Sample] = []
    try:
        await cluster.wait_registered(timeout=30)
        t0 = time.monotonic()
        runners = [asyncio.create_task(run_framework(w, address, t0, stop)) for w in workloads]
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(interval / 2)
            samples.append(await asyncio.to_thread(sample_state, url, time.monotonic()))
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
    finally:
        await cluster.stop()
    return {"workloads": workloads, "samples": samples, "t0": t0}


def run_fairness(
    agents: int = 20, seconds: float = 20.0, interval: float = 0.5, quota: bool = False
) -> dict:
    """Starts a master (``interval`` allocation runs) and replays the workload."""
    with work_dir("fairness") as tmp:
        master = Master(tmp, [f"--allocation_interval={interval * 1000:.0f}ms"])
        with processes(master):
            master.start()
            master.wait_healthy()
            return asyncio.run(replay(master.url, master.address, agents, seconds, interval, quota))


def print_report(result: dict, interval: float, slack: float) -> dict[str, float]:
    workloads, samples, t0 = result["workloads"], result["samples"], result["t0"]
    names = [w.name for w in workloads]
    print("dominant share per framework over time, and cluster utilisation")
    print(f"{'t (s)':>6}  " + "  ".join(f"{n:>12}" for n in names) + "  utilisation")
    step = max(1, len(samples) // 20)
    for s in samples[::step]:
        cells = "  ".join(f"{s.shares.get(n, 0.0):>12.2f}" for n in names)
        print(f"{s.at - t0:>6.1f}  {cells}  {s.utilisation:>11.0%}")
    worst = starvation(workloads, samples)
    limit = 2 * interval + slack
    print(f"longest wait for an offer below fair share with resources free (limit {limit:.2f} s):")
    for name, wait in worst.items():
        print(f"  {name:<12} {wait:.2f} s {'ok' if wait <= limit else 'STARVED'}")
    for what, value in quota_checks(workloads, samples).items():
        print(f"  {what}: {value:.2f}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.5, help="allocation interval (s)")
    parser.add_argument("--slack", type=float, default=0.25)
    parser.add_argument("--quota", action="store_true", help="the mix with quota (see above)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_fairness(args.agents, args.seconds, args.interval, args.quota)
    worst = print_report(result, args.interval, args.slack)
    limit = 2 * args.interval + args.slack
    ok = all(w <= limit for w in worst.values())
    for what, value in quota_checks(result["workloads"], result["samples"]).items():
        ok = ok and (value <= limit if "guarantee" in what else value <= 1e-9)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
