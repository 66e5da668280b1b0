"""``butte sim``: run many simulated agents against a master, in one process.

Flags (Mesos spellings where an agent has the same one) and the process entry point; the
agents themselves are `butte.sim.agents.SimulatedCluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from butte.core.durations import parse_duration
from butte.core.resources import ResourceError
from butte.sim.agents import DEFAULT_RESOURCES, SimOptions, SimulatedCluster
from butte.sim.durations import TaskDuration

SUMMARY = "run N simulated agents (no processes) against a master, for scale tests"
DESCRIPTION = """\
Runs N simulated agents in this one process. Each keeps its own WebSocket to the master and
speaks the real agent protocol: it registers, answers pings, accepts task launches and kills,
and reports TASK_STARTING, TASK_RUNNING and, after --task_duration, TASK_FINISHED (each
update resent until the framework acknowledges it). No process is started, so a laptop can
host a 10,000-agent cluster to try a framework or the web UI against.

  butte master --work_dir=/tmp/m &
  butte sim --master=127.0.0.1:5050 --agents=10000 --task_duration=uniform:5-30secs

--task_duration: 10secs | 0 | uniform:1-5secs | forever. A task whose command is
`sleep N` runs N seconds whatever the spec. A status line is printed every
--status_interval. With --master=zk://HOST:PORT/PATH the agents follow the leading master
and re-register with it after a failover.
"""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines the ``butte sim`` flags (and keeps the description's line breaks)."""
    # argparse types formatter_class as a callable; butte's parsers always give a class.
    base: Any = parser.formatter_class
    if not issubclass(base, argparse.RawDescriptionHelpFormatter):
        formatter: Any = type("SimHelpFormatter", (argparse.RawDescriptionHelpFormatter, base), {})
        parser.formatter_class = formatter
    parser.add_argument(
        "--master",
        required=True,
        help="HOST:PORT of the master (several comma-separated), or zk://HOST:PORT/PATH",
    )
    parser.add_argument("--agents", type=int, default=1, help="number of simulated agents")
    parser.add_argument(
        "--resources", default=DEFAULT_RESOURCES, help="resources of every simulated agent"
    )
    parser.add_argument(
        "--attributes", default=None, help="attributes of every agent, e.g. 'rack:r1;zone:a'"
    )
    parser.add_argument(
        "--task_duration",
        default="10secs",
        help="how long tasks run: 10secs, 0, uniform:1-5secs or forever",
    )
    parser.add_argument(
        "--hostname_prefix", default="sim", help="agents are named PREFIX-0, PREFIX-1, ..."
    )
    parser.add_argument(
        "--registration_backoff_factor",
        default="1secs",
        help="initial upper bound of the random reconnect delay, doubling to 1mins",
    )
    parser.add_argument(
        "--status_update_retry_interval_min",
        default="10secs",
        help="first resend delay of an unacknowledged status update, doubling",
    )
    parser.add_argument(
        "--status_update_retry_interval_max",
        default="10mins",
        help="longest resend delay of an unacknowledged status update",
    )
    parser.add_argument(
        "--connect_concurrency",
        type=int,
        default=256,
        help="connection attempts in flight at once",
    )
    parser.add_argument(
        "--preload_tasks",
        type=int,
        default=0,
        help="start every agent with N running tasks of one framework, as after a master "
        "failover (they register with an id and report them)",
    )
    parser.add_argument(
        "--status_interval", default="5secs", help="period of the status line (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for random durations")
    parser.add_argument(
        "--logging_level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity",
    )


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Turns the flags into SimOptions; raises ValueError with a flag-named message."""
    if args.agents < 0:
        raise ValueError("--agents must not be negative")
    if args.preload_tasks < 0:
        raise ValueError("--preload_tasks must not be negative")
    durations = {}
    for name in (
        "registration_backoff_factor",
        "status_update_retry_interval_min",
        "status_update_retry_interval_max",
    ):
        try:
            durations[name] = parse_duration(getattr(args, name))
        except ValueError as e:
            raise ValueError(f"--{name}: {e}") from None
    try:
        options = SimOptions.from_text(
            args.resources,
            args.attributes or "",
            task_duration=TaskDuration.parse(args.task_duration),
            hostname_prefix=args.hostname_prefix,
            connect_concurrency=args.connect_concurrency,
            preload_tasks=args.preload_tasks,
            seed=args.seed,
            **durations,
        )
    except ResourceError as e:
        raise ValueError(f"--resources/--attributes: {e}") from None
    if not options.resources:
        raise ValueError("--resources: agents need some resources")
    return options


def zk_supported() -> bool:
    """Whether ZooKeeper master detection exists in this build (butte/coord/detector.py)."""
    return (Path(__file__).resolve().parents[1] / "coord" / "detector.py").exists()


def _is_zk(master: str) -> bool:
    return master.strip().lower().startswith(("zk://", "file://"))


def run(args: argparse.Namespace) -> int:
    """Runs the simulated agents until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=getattr(logging, args.logging_level, logging.WARNING),
        format="%(asctime)s %(levelname)s sim %(name)s: %(message)s",
    )
    if _is_zk(args.master) and not zk_supported():
        print(
            f"butte sim: --master={args.master}: ZooKeeper master detection is not in this "
            "build; give HOST:PORT of the leading master (or several, comma-separated)",
            file=sys.stderr,
        )
        return 2
    try:
        options = options_from_args(args)
        interval = parse_duration(args.status_interval)
        if _is_zk(args.master):
            from butte.coord.url import parse_zk_url

            parse_zk_url(args.master)
        else:
            SimulatedCluster(args.master, 0, options)  # checks the address
    except ValueError as e:
        print(f"butte sim: {e}", file=sys.stderr)
        return 2
    # As in the master: young-generation collections every 700 allocations cost a third
    # of the time with 100k tasks alive.
    gc.set_threshold(10_000, 10, 10)
    try:
        asyncio.run(_serve(args.master, args.agents, options, interval))
    except Exception as e:  # noqa: BLE001 - ZooKeeper unreachable, no leader: one line
        if not isinstance(e, TimeoutError) and type(e).__name__ != "CoordinationError":
            raise
        print(f"butte sim: {e}", file=sys.stderr)
        return 1
    return 0


async def _follow_leader(master: str, agents: int, options: SimOptions) -> SimulatedCluster:
    """A cluster pointed at the leader a zk:// URL names, following its changes."""
    from butte.coord.detector import LeaderDetector
    from butte.coord.url import parse_zk_url

    loop = asyncio.get_running_loop()
    holder: list[SimulatedCluster] = []

    def changed(leader: str | None) -> None:
        if holder and leader and leader not in holder[0].masters:
            print(f"butte sim: leading master is now {leader}", flush=True)
            loop.create_task(holder[0].retarget(leader))

    detector = LeaderDetector(parse_zk_url(master), on_change=changed)
    await detector.start()
    leader = await detector.wait_leader(60.0)
    holder.append(SimulatedCluster(leader, agents, options))
    return holder[0]


async def _serve(master: str, agents: int, options: SimOptions, interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if _is_zk(master):
        cluster = await _follow_leader(master, agents, options)
    else:
        cluster = SimulatedCluster(master, agents, options)
    await cluster.start()
    print(
        f"butte sim: {len(cluster.agents)} agents ({cluster.options.resources.to_text()}; "
        f"tasks run {cluster.options.task_duration}) -> {', '.join(cluster.masters)}",
        flush=True,
    )
    previous = (time.monotonic(), dict(cluster.counters))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval if interval > 0 else None)
        except TimeoutError:
            previous = _print_status(cluster, previous)
    await cluster.stop()


def _print_status(
    cluster: SimulatedCluster, previous: tuple[float, dict[str, int]]
) -> tuple[float, dict[str, int]]:
    """One status line; returns the sample the next line's rates are computed from."""
    now = time.monotonic()
    then, counters = previous
    elapsed = max(now - then, 1e-9)
    stats = cluster.statistics()

    def rate(name: str) -> float:
        return (cluster.counters[name] - counters[name]) / elapsed

    print(
        f"sim: {stats['agents_registered']:.0f}/{stats['agents']:.0f} agents registered, "
        f"{stats['tasks_running']:.0f} tasks running, "
        f"{rate('tasks_launched'):.0f} launched/s, {rate('tasks_finished'):.0f} finished/s, "
        f"{stats['tasks_awaiting_ack']:.0f} updates awaiting ack, "
        f"{stats['updates_retried']:.0f} retried, {stats['disconnections']:.0f} disconnections",
        flush=True,
    )
    return now, dict(cluster.counters)
