"""``butte master``: flags (Mesos spellings) and the process entry point."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import os
import signal

from butte import daemon_log
from butte.coord.interface import CoordinationError
from butte.coord.url import parse_zk_url
from butte.core.auth import CredentialsError, parse_credentials
from butte.core.conn_limit import DEFAULT_MAX_CONNECTIONS
from butte.core.domains import domain_flag
from butte.core.durations import parse_duration
from butte.core.flags import add_negations, boolean, flag_texts, port_number
from butte.core.resources import ResourceError, validate_role
from butte.core.tls import TlsConfig, TlsError
from butte.core.tls_listener import TlsListen
from butte.master import lifetime_flags
from butte.master.acls import AclError, Acls, parse_acls
from butte.master.allocator.interface import (
    DEFAULT_MIN_ALLOCATABLE,
    AllocatorOptions,
    parse_min_allocatable,
)
from butte.master.auth import AuthConfig
from butte.master.events import MAX_SUBSCRIBERS
from butte.master.machine import MasterOptions
from butte.master.server import MasterConfig, MasterServer
from butte.operator_common import quiet_bad_requests

# The name of the master's --log_dir files (butte.daemon_log).
MASTER_LOG_PROGRAM = "butte-master"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines every master flag (``BUTTE_<FLAG>`` environment variables also set them)."""
    parser.add_argument("--ip", default="127.0.0.1", help="IP address to listen on and advertise")
    parser.add_argument(
        "--port", type=port_number, default=5050, help="port to listen on (default 5050)"
    )
    parser.add_argument(
        "--hostname",
        default=None,
        help="hostname advertised to agents and frameworks (default: --ip)",
    )
    parser.add_argument(
        "--work_dir", required=True, help="directory for the master's persistent state"
    )
    parser.add_argument(
        "--allocation_interval",
        default="1secs",
        help="period of batch allocation runs (Mesos duration, default 1secs)",
    )
    parser.add_argument(
        "--min_allocatable_resources",
        default=DEFAULT_MIN_ALLOCATABLE,
        help="offer only when one of these '|'-separated quantity sets is met "
        f"(default {DEFAULT_MIN_ALLOCATABLE})",
    )
    parser.add_argument(
        "--filter_gpu_resources",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="offer GPU agents only to frameworks with the GPU_RESOURCES capability",
    )
    parser.add_argument(
        "--domain",
        type=domain_flag,
        default=None,
        help="the master's fault domain, Mesos' DomainInfo JSON inline or a path / file:// "
        'URL of it: \'{"fault_domain": {"region": {"name": "r1"}, "zone": {"name": "z1"}}}\'; '
        "agents in other regions are offered only to REGION_AWARE frameworks, and agents "
        "with a domain register only with a master that has one",
    )
    parser.add_argument(
        "--require_agent_domain",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="ignore the registration of agents without --domain (they retry)",
    )
    parser.add_argument(
        "--agent_ping_timeout",
        default="15secs",
        help="how often the master pings each agent and waits for its pong (default 15secs)",
    )
    parser.add_argument(
        "--max_agent_ping_timeouts",
        type=int,
        default=5,
        help="missed pongs in a row before an agent is marked unreachable (default 5)",
    )
    parser.add_argument(
        "--agent_reregister_timeout",
        default="10mins",
        help="how long a disconnected agent may take to re-register (default 10mins)",
    )
    parser.add_argument(
        "--agent_removal_rate_limit",
        default=None,
        help="at most this many agents failing health checks are marked unreachable per "
        "duration, e.g. 1/10mins (default: no limit)",
    )
    parser.add_argument(
        "--max_completed_frameworks",
        type=int,
        default=50,
        help="completed frameworks kept for the state endpoints (default 50)",
    )
    parser.add_argument(
        "--max_completed_tasks_per_framework",
        type=int,
        default=1000,
        help="completed tasks kept per framework (default 1000)",
    )
    parser.add_argument(
        "--heartbeat_interval",
        default="15secs",
        help="period of HEARTBEAT events on scheduler streams (default 15secs)",
    )
    parser.add_argument(
        "--zk",
        default=None,
        help="ZooKeeper URL for leader election and the registry, "
        "zk://[user:pass@]host1:port1,host2:port2/path or file:///path holding one "
        "(default: none, a standalone master)",
    )
    parser.add_argument(
        "--quorum",
        type=int,
        default=None,
        help="size of the registry quorum (> masters/2); accepted for Mesos compatibility, "
        "ZooKeeper itself keeps the registry replicated",
    )
    parser.add_argument(
        "--zk_session_timeout",
        default="10secs",
        help="ZooKeeper session timeout: how fast a dead leader is replaced (default 10secs)",
    )
    parser.add_argument(
        "--registry",
        default="replicated_log",
        choices=["replicated_log", "in_memory"],
        help="replicated_log (default): durable registry, in ZooKeeper with --zk, else in "
        "<work_dir>/registry.sqlite3; in_memory: forgotten when the master exits",
    )
    for name, what in (
        ("authenticate_frameworks", "frameworks on the scheduler API"),
        ("authenticate_http_frameworks", "frameworks on the scheduler API (same as above)"),
        ("authenticate_agents", "agents connecting to the master"),
        ("authenticate_http_readwrite", "the operator API and every non-GET endpoint"),
        ("authenticate_http_readonly", "read-only endpoints (/state, metrics, files, web UI)"),
    ):
        parser.add_argument(
            f"--{name}",
            type=boolean,
            nargs="?",
            const=True,
            default=False,
            help=f"require HTTP Basic credentials of {what} (default false)",
        )
    parser.add_argument(
        "--credentials",
        default=None,
        help="path (or file:// URL) of the credentials: Mesos' JSON "
        '{"credentials":[{"principal":..,"secret":..}]} or "<principal> <secret>" lines',
    )
    parser.add_argument(
        "--http_credentials",
        default=None,
        help="credentials for HTTP authentication, same format (default: --credentials)",
    )
    parser.add_argument(
        "--acls",
        default=None,
        help="authorization: Mesos' ACL JSON, given inline or as a path / file:// URL "
        "(run_tasks, register_frameworks, register_agents, teardown_frameworks, "
        "update_weights, mark_agents_gone, drain_agents, deactivate_agents, set_log_level, "
        "view_* (frameworks, tasks, executors, flags, roles), get_endpoints, "
        "access_sandboxes, maintenance, quota, reservation and volume actions are enforced; "
        "docs/security.md)",
    )
    parser.add_argument(
        "--roles",
        default=None,
        help="comma-separated whitelist of roles frameworks may subscribe with ('*' is always "
        "allowed; default: any role)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="role weights, role1=weight1,role2=weight2 (used until weights are set with "
        "UPDATE_WEIGHTS or PUT /weights, which the registry keeps)",
    )
    parser.add_argument(
        "--http_header_timeout",
        default="30secs",
        help="how long a request's head may take to arrive before the connection is closed "
        "with 408 (slow or hostile clients; default 30secs)",
    )
    parser.add_argument(
        "--max_operator_event_stream_subscribers",
        type=int,
        default=MAX_SUBSCRIBERS,
        help="operator event streams (SUBSCRIBE on /api/v1) open at once; a new one over "
        f"the limit closes the oldest, as in Mesos (default {MAX_SUBSCRIBERS})",
    )
    parser.add_argument(
        "--max_stream_backlog",
        type=int,
        default=64 * 1024 * 1024,
        help="bytes of events a scheduler's stream may fall behind its reader before the "
        "master drops it (counted in master/scheduler_streams_closed_slow; default 64 MiB)",
    )
    lifetime_flags.add_flags(parser)
    parser.add_argument(
        "--max_connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open HTTP connections the master accepts at once; more are answered 503 and "
        "closed, open ones are kept (0: no limit of its own; never more than 3/4 of the "
        f"open-file limit; butte's own flag; default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--logging_level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    daemon_log.add_flags(parser, MASTER_LOG_PROGRAM, daemon_log.MASTER_LOG)
    add_negations(parser)  # --no-<flag> of every boolean flag above, as Mesos takes it


def config_from_args(args: argparse.Namespace) -> MasterConfig:
    """Turns parsed flags into a MasterConfig; raises ValueError with a clear message."""
    try:
        min_alloc = parse_min_allocatable(args.min_allocatable_resources)
    except ResourceError as e:
        raise ValueError(f"--min_allocatable_resources: {e}") from None
    durations = {}
    for name in (
        "allocation_interval",
        "agent_ping_timeout",
        "agent_reregister_timeout",
        "heartbeat_interval",
        "http_header_timeout",
    ):
        try:
            durations[name] = parse_duration(getattr(args, name))
        except ValueError as e:
            raise ValueError(f"--{name}: {e}") from None
        if durations[name] <= 0:
            raise ValueError(f"--{name} must be positive")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is out of range")
    if args.max_connections < 0:
        raise ValueError("--max_connections must not be negative")
    if args.max_operator_event_stream_subscribers < 1:
        raise ValueError("--max_operator_event_stream_subscribers must be at least 1")
    if args.max_stream_backlog < 64 * 1024:
        raise ValueError("--max_stream_backlog must be at least 65536 bytes")
    removal_limit = parse_rate_limit(args.agent_removal_rate_limit, "agent_removal_rate_limit")
    zk, session_timeout = coordination_flags(args)
    return MasterConfig(
        zk=zk,
        zk_session_timeout=session_timeout,
        registry=args.registry,
        http_header_timeout=durations["http_header_timeout"],
        auth=auth_config(args),
        tls=tls_flag(),
        max_stream_backlog=args.max_stream_backlog,
        max_operator_event_stream_subscribers=args.max_operator_event_stream_subscribers,
        max_connections=args.max_connections,
        ip=args.ip,
        port=args.port,
        hostname=args.hostname,
        work_dir=args.work_dir,
        allocation_interval=durations["allocation_interval"],
        allocator=AllocatorOptions(
            allocation_interval=durations["allocation_interval"],
            min_allocatable=min_alloc,
            filter_gpu_resources=args.filter_gpu_resources,
        ),
        master=MasterOptions(
            agent_ping_timeout=durations["agent_ping_timeout"],
            max_agent_ping_timeouts=args.max_agent_ping_timeouts,
            agent_reregister_timeout=durations["agent_reregister_timeout"],
            max_completed_frameworks=args.max_completed_frameworks,
            max_completed_tasks_per_framework=args.max_completed_tasks_per_framework,
            heartbeat_interval=durations["heartbeat_interval"],
            agent_removal_rate_limit=removal_limit,
            acls=acls_flag(args.acls),
            **lifetime_flags.options(args),
            roles=roles_flag(args.roles),
            weights=weights_flag(args.weights),
            domain=args.domain,
            require_agent_domain=args.require_agent_domain,
        ),
        flags=flag_texts(args),  # as given (durations stay text), booleans true/false
    )


def roles_flag(text: str | None) -> frozenset[str] | None:
    """``--roles``: a comma-separated whitelist (None: any role)."""
    if text is None:
        return None
    roles = [r.strip() for r in text.split(",") if r.strip()]
    for role in roles:
        error = validate_role(role)
        if error:
            raise ValueError(f"--roles: invalid role '{role}': {error}")
    return frozenset(roles)


def weights_flag(text: str | None) -> dict[str, float]:
    """``--weights``: ``role=weight,...`` with weights finite and > 0."""
    out: dict[str, float] = {}
    for item in filter(None, (i.strip() for i in (text or "").split(","))):
        role, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"--weights: expected role=weight with weight > 0, got {item!r}")
        error = validate_role(role.strip())
        if error:
            raise ValueError(f"--weights: invalid role '{role.strip()}': {error}")
        out[role.strip()] = weight
    return out


def tls_flag() -> TlsListen | None:
    """The listener's TLS from LIBPROCESS_SSL_* (docs/operating.md "TLS")."""
    try:
        listen = TlsListen.from_env(os.environ)
        if listen is not None:
            TlsConfig.from_env(os.environ).client_context()  # for agents' files (checked now)
        return listen
    except TlsError as e:
        raise ValueError(str(e)) from None


def acls_flag(value: str | None) -> Acls:
    """``--acls``: JSON text, or a path or file:// URL of it."""
    if value is None:
        return Acls()
    text = value
    if not value.lstrip().startswith("{"):
        path = value[len("file://") :] if value.startswith("file://") else value
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"--acls: cannot read {path}: {e.strerror}") from None
    try:
        return parse_acls(text)
    except AclError as e:
        raise ValueError(f"--acls: {e}") from None


def auth_config(args: argparse.Namespace) -> AuthConfig:
    """The --authenticate_* flags and the credentials they check against."""
    config = AuthConfig(
        frameworks=args.authenticate_frameworks or args.authenticate_http_frameworks,
        agents=args.authenticate_agents,
        readwrite=args.authenticate_http_readwrite,
        readonly=args.authenticate_http_readonly,
    )
    path = args.http_credentials or args.credentials
    if not config.any:
        return config
    if path is None:
        raise ValueError("--authenticate_* needs --credentials or --http_credentials")
    path = path[len("file://") :] if path.startswith("file://") else path
    try:
        with open(path) as f:
            credentials = parse_credentials(f.read())
    except OSError as e:
        raise ValueError(f"cannot read credentials {path}: {e.strerror}") from None
    except CredentialsError as e:
        raise ValueError(f"credentials {path}: {e}") from None
    return dataclasses.replace(config, credentials=credentials)


def parse_rate_limit(text: str | None, flag: str) -> tuple[int, float] | None:
    """``N/<duration>`` (Mesos rate syntax, e.g. ``1/10mins``) as (permits, seconds)."""
    if text is None or not text.strip():
        return None
    permits, sep, period = text.strip().partition("/")
    try:
        count, seconds = int(permits), parse_duration(period)
    except ValueError:
        count, seconds = 0, 0.0
    if not sep or count <= 0 or seconds <= 0:
        raise ValueError(f"--{flag}: expected N/DURATION such as 1/10mins, got {text!r}")
    return count, seconds


def coordination_flags(args: argparse.Namespace) -> tuple[str | None, float]:
    """Validates --zk, --zk_session_timeout and --quorum; (zk URL or None, timeout)."""
    try:
        session_timeout = parse_duration(args.zk_session_timeout)
    except ValueError as e:
        raise ValueError(f"--zk_session_timeout: {e}") from None
    if session_timeout <= 0:
        raise ValueError("--zk_session_timeout must be positive")
    if args.quorum is not None and args.quorum < 1:
        raise ValueError(f"--quorum must be at least 1, got {args.quorum}")
    zk = args.zk.strip() if args.zk else None
    if zk:
        try:
            parse_zk_url(zk)
        except ValueError as e:
            raise ValueError(f"--zk: {e}") from None
    return zk or None, session_timeout


def run(args: argparse.Namespace) -> int:
    """Runs a master until SIGINT/SIGTERM (or until it loses leadership: exit status 1)."""
    try:
        log_file = daemon_log.start_logging(
            MASTER_LOG_PROGRAM,
            args.logging_level,
            "%(asctime)s %(levelname)s master %(name)s: %(message)s",
            getattr(args, "log_dir", None),
            quiet=getattr(args, "quiet", False),
            logbufsecs=getattr(args, "logbufsecs", 0),
        )
    except ValueError as e:
        print(f"butte master: {e}")
        return 2
    quiet_bad_requests()
    try:
        config = config_from_args(args)
        os.makedirs(config.work_dir, exist_ok=True)
    except (ValueError, OSError) as e:
        print(f"butte master: {e}")
        return 2
    # The log as /master/log of the files API, as Mesos' master attaches it at start.
    daemon_log.attach_log(
        daemon_log.MASTER_LOG,
        log_file,
        getattr(args, "external_log_file", None),
        config.master.acls,
    )
    # Young-generation collections every 700 allocations took about a third of a busy
    # master's time at 100k tasks (docs/performance.md); every 10,000 still collects
    # cycles promptly.
    gc.set_threshold(10_000, 10, 10)
    try:
        return asyncio.run(_serve(config))
    except CoordinationError as e:
        print(f"butte master: {e}")
        return 1
    except OSError as e:
        print(f"butte master: cannot listen on {config.ip}:{config.port}: {e.strerror or e}")
        return 1


async def _serve(config: MasterConfig) -> int:
    server = MasterServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    await server.wait_closed()
    return server.exit_code
