"""``butte chronos``: flags (Chronos' spellings) and the entry point."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging

from butte.cli.common import CliError
from butte.frameworks.chronos.server import FAILOVER_TIMEOUT, ChronosServer, Settings
from butte.operator_common import quiet_bad_requests


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", required=True, help="master HOST:PORT[,HOST:PORT...] or zk://HOSTS/PATH"
    )
    parser.add_argument("--http_port", type=int, default=4400, help="API and web page port")
    parser.add_argument(
        "--http_address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--hostname", default="", help="name other instances and the master use for this one"
    )
    parser.add_argument(
        "--work_dir",
        default=None,
        help="directory of the embedded store (chronos.sqlite3); required without --zk",
    )
    parser.add_argument(
        "--zk",
        default=None,
        help="zk://HOSTS/PATH: keep state in ZooKeeper and elect a leader among instances",
    )
    parser.add_argument(
        "--zk_timeout", type=float, default=10.0, help="ZooKeeper session timeout (seconds)"
    )
    parser.add_argument("--mesos_framework_name", default="chronos", help="framework name")
    parser.add_argument("--mesos_role", default="*", help="role to take offers for")
    parser.add_argument(
        "--mesos_user", default="", help="user tasks run as unless a job sets runAsUser"
    )
    parser.add_argument(
        "--failover_timeout",
        type=float,
        default=FAILOVER_TIMEOUT,
        help="seconds the master keeps our tasks while this scheduler is down",
    )
    parser.add_argument(
        "--failure_retry",
        type=int,
        default=60000,
        help="milliseconds a failed run waits before its retry (Chronos' flag; default 60000)",
    )
    parser.add_argument(
        "--logging_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.logging_level, logging.INFO),
        format="%(asctime)s %(levelname)s chronos %(name)s: %(message)s",
    )
    quiet_bad_requests()  # a malformed request (a URL over 8 KB) is one line, not a traceback
    if not args.work_dir and not args.zk:
        raise CliError("give --work_dir (embedded store) or --zk (state in ZooKeeper)", 2)
    if not 0 < args.http_port < 65536:
        raise CliError("--http_port must be 1-65535", 2)
    if not 0 <= args.failure_retry <= 86_400_000:
        raise CliError("--failure_retry must be 0-86400000 milliseconds", 2)
    settings = Settings(
        master=args.master,
        http_address=args.http_address,
        http_port=args.http_port,
        work_dir=args.work_dir,
        zk=args.zk,
        zk_session_timeout=args.zk_timeout,
        framework_name=args.mesos_framework_name,
        role=args.mesos_role,
        user=args.mesos_user,
        hostname=args.hostname,
        failover_timeout=args.failover_timeout,
        failure_retry_delay=args.failure_retry / 1000,
    )
    # As in `butte master`: young collections every 700 allocations cost a busy scheduler
    # much of a burst of a thousand runs; every 10,000 still collects cycles promptly.
    gc.set_threshold(10_000, 10, 10)
    try:
        return asyncio.run(ChronosServer(settings).run())
    except OSError as e:
        raise CliError(f"cannot start: {e}") from None
