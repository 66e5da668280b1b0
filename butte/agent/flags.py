"""The agent's command-line flags (Mesos spellings) and what they turn into.

Durations take Mesos syntax (``10secs``, ``1mins``, ``200ms``, plain numbers are seconds).
``--resources`` takes Mesos text (``cpus:4;mem:2048;ports:[31000-32000]``) or a JSON array;
any of cpus, mem, disk and ports it does not name are detected like Mesos does: all CPUs,
memory minus 1 GB (half if under 2 GB), the work dir's file system size minus 5 GB (half if
under 10 GB), ports 31000-32000.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import ssl
from collections.abc import Mapping

from butte import daemon_log
from butte.agent.auth_flags import add_auth_flags
from butte.agent.containerizer.docker import add_docker_flags
from butte.coord.url import is_zk_url, parse_zk_url
from butte.core.auth import CredentialsError, parse_credential
from butte.core.conn_limit import DEFAULT_MAX_CONNECTIONS
from butte.core.domains import domain_flag
from butte.core.durations import parse_duration
from butte.core.flags import (
    add_negations,
    boolean,
    duration_text,
    flag_text,
    flag_values,
    port_number,
    size_text,
)
from butte.core.resources import Attribute, ResourceError, Resources, parse_attributes
from butte.core.resources import parse_resources as parse_resources_text
from butte.core.tls import TlsError, client_context_for

DEFAULT_MASTER_PORT = 5050
# The name of the agent's --log_dir files (butte.daemon_log).
AGENT_LOG_PROGRAM = "butte-agent"
DEFAULT_PORTS = "[31000-32000]"
MB = 1024 * 1024


def duration(text: str) -> float:
    """argparse type: a Mesos duration in seconds."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def backoff_factor(text: str) -> float:
    """argparse type of --registration_backoff_factor: a duration below the backoff's cap of
    one minute (Mesos refuses the others)."""
    seconds = duration(text)
    if seconds >= 60.0:
        raise argparse.ArgumentTypeError(f"'{text}' must be less than 1mins")
    return seconds


def reconfiguration_policy(text: str) -> str:
    """argparse type of --reconfiguration_policy: Mesos' ``equal`` (its default) or
    ``additive`` (see butte.agent.compatibility)."""
    if text in ("equal", "additive"):
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not a policy (Mesos' are equal, additive)")


def master_address(text: str) -> str:
    """argparse type: ``host:port`` of the master (``master@`` and ``http://`` prefixes are
    accepted, ``https://`` is kept, the port defaults to 5050), or a ``zk://`` /
    ``file://`` URL kept as given."""
    text = text.strip()
    if is_zk_url(text):
        try:
            parse_zk_url(text)  # the agent follows the leader the ensemble names
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    scheme = "https://" if text.startswith("https://") else ""
    for prefix in ("http://", "https://", "master@"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    if not text or "/" in text:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_MASTER_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return f"{scheme}{host}:{int(port)}"


def master_tls(master: str, env: Mapping[str, str]) -> tuple[str, ssl.SSLContext | None]:
    """``--master`` without an ``https://`` prefix, and the TLS context for talking to it:
    TLS with ``https://`` or LIBPROCESS_SSL_ENABLED (docs/operating.md "TLS"); ValueError
    for bad TLS settings."""
    scheme = "https" if master.startswith("https://") else ""
    if scheme:
        master = master[len("https://") :]
    try:
        return master, client_context_for(scheme, env)
    except TlsError as e:
        raise ValueError(str(e)) from None


def read_credential(path: str | None) -> tuple[str, str] | None:
    """The (principal, secret) of ``--credential``; raises ValueError with a message that
    never quotes the secret."""
    if path is None:
        return None
    path = path[len("file://") :] if path.startswith("file://") else path
    try:
        with open(path) as f:
            return parse_credential(f.read())
    except OSError as e:
        raise ValueError(f"--credential {path}: {e.strerror}") from None
    except CredentialsError as e:
        raise ValueError(f"--credential {path}: {e}") from None


def file_value(text: str) -> str:
    """A flag's value, or with a ``file://`` prefix the contents of that file, as Mesos
    reads its flags; argparse.ArgumentTypeError if the file cannot be read."""
    if not text.startswith("file://"):
        return text
    path = text[len("file://") :]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise argparse.ArgumentTypeError(f"cannot read {path}: {reason}") from None


def resources_flag(text: str) -> Resources:
    """argparse type: Mesos resources text or JSON array, or ``file://`` a file holding one
    (GPUs only whole, as Mesos')."""
    try:
        resources = parse_resources_text(file_value(text))
    except ResourceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    gpus = resources.scalar("gpus")
    if gpus != int(gpus):
        raise argparse.ArgumentTypeError(f"gpus must be a whole number, not {gpus:g}")
    return resources


def attributes_flag(text: str) -> tuple[Attribute, ...]:
    """argparse type: ``name:value;...`` attributes, or ``file://`` a file holding them."""
    try:
        return parse_attributes(file_value(text))
    except ResourceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def environment_flag(text: str) -> dict[str, str]:
    """argparse type: a JSON object of environment variables, or ``file://`` a file
    holding one."""
    try:
        value = json.loads(file_value(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError("expected a JSON object of strings")
    return value


# The module name Mesos' --container_logger takes for its logrotate logger.
MESOS_LOGROTATE_MODULE = "org_apache_mesos_LogrotateContainerLogger"


def container_logger_flag(text: str) -> str:
    """argparse type: ``sandbox`` or ``logrotate`` (also by Mesos' module name)."""
    value = "logrotate" if text == MESOS_LOGROTATE_MODULE else text
    if value not in ("sandbox", "logrotate"):
        raise argparse.ArgumentTypeError(
            f"expected sandbox, logrotate or {MESOS_LOGROTATE_MODULE}, got {text!r}"
        )
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the agent's flags to ``parser``."""
    parser.epilog = (
        "Signals, as for Mesos' agent: SIGTERM or SIGINT ends the agent and leaves its tasks "
        "running for the next start to recover (checkpointing frameworks' tasks; the others "
        "end with it); SIGUSR1 shuts it down (every task killed, the agent unregistered)."
    )
    add = parser.add_argument
    add(
        "--master",
        required=True,
        type=master_address,
        help="the master, HOST:PORT (https://HOST:PORT: TLS, as with LIBPROCESS_SSL_ENABLED), "
        "or zk://host1:port1,host2:port2/path to follow the "
        "leading master of a ZooKeeper ensemble (or file:///path holding such a URL)",
    )
    add("--ip", default="127.0.0.1", help="address to listen on and advertise")
    add("--port", type=port_number, default=5051, help="port to listen on (0: any free port)")
    add("--hostname", default=None, help="hostname to advertise (default: --ip)")
    add("--work_dir", required=True, help="where sandboxes and agent state live")
    add(
        "--resources",
        type=resources_flag,
        default=None,
        help="total resources, e.g. 'cpus:4;mem:2048;ports:[31000-32000]' or a JSON array, "
        "or file:///path holding either; cpus/mem/disk/ports not given are detected",
    )
    add("--attributes", type=attributes_flag, default=(), help="e.g. 'rack:r1;zone:a'")
    add(
        "--domain",
        type=domain_flag,
        default=None,
        help="the agent's fault domain, Mesos' DomainInfo JSON inline or a path / file:// URL "
        'of it: \'{"fault_domain": {"region": {"name": "r1"}, "zone": {"name": "z1"}}}\'; '
        "agents in a region other than the master's are offered only to REGION_AWARE "
        "frameworks",
    )
    add(
        "--executor_registration_timeout",
        type=duration,
        default="1mins",
        help="how long an executor may take to subscribe",
    )
    add(
        "--executor_shutdown_grace_period",
        type=duration,
        default="5secs",
        help="how long an executor may take to shut down before it is killed",
    )
    add(
        "--status_update_retry_interval_min",
        type=duration,
        default="10secs",
        help="first retry interval of an unacknowledged status update (doubles)",
    )
    add(
        "--status_update_retry_interval_max",
        type=duration,
        default="10mins",
        help="longest retry interval of an unacknowledged status update",
    )
    add(
        "--recover",
        default="reconnect",
        choices=["reconnect", "cleanup"],
        help="after a restart: reconnect to the executors of checkpointing frameworks, or "
        "kill every executor found and exit (the next start is a new agent)",
    )
    add(
        "--strict",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="a checkpoint that cannot be read in full stops the agent's start (Mesos' "
        "default is true; butte's false recovers what can be read, logs the rest, and kills "
        "the executors it cannot recover)",
    )
    add(
        "--reconfiguration_policy",
        type=reconfiguration_policy,
        default="equal",
        help="what may change in hostname, port, --domain, --resources and --attributes "
        "across a restart that recovers the agent: 'equal' (Mesos' default: nothing) or "
        "'additive' (new resources and attributes, more of a resource, wider ranges and "
        "sets, a --domain where there was none; hostname, port, a domain given before and "
        "the values of existing TEXT and SCALAR attributes stay). The agent refuses to "
        "start on any other change",
    )
    add(
        "--executor_reregistration_timeout",
        type=duration,
        default="2secs",
        help="how long recovered executors have to re-subscribe after a restart (max 15secs)",
    )
    add(
        "--recovery_timeout",
        type=duration,
        default="15mins",
        help="how long executors of checkpointing frameworks wait for a restarted agent",
    )
    add(
        "--fetcher_cache_dir",
        default=None,
        help="where URIs with cache: true are kept (default: <work_dir>/fetcher-cache)",
    )
    add(
        "--work_dir_min_free",
        type=size_flag,
        default="64MB",
        help="launches are refused (TASK_FAILED, REASON_CONTAINER_LAUNCH_FAILED) while the "
        "work_dir has less free space, so that checkpoints still fit (butte's own flag)",
    )
    add(
        "--credential",
        default=None,
        help="path (or file:// URL) of this agent's credential for a master run with "
        '--authenticate_agents: JSON {"principal":..,"secret":..} or one '
        "'<principal> <secret>' line",
    )
    add(
        "--registration_backoff_factor",
        type=backoff_factor,
        default="1secs",
        help="(re-)registration retries wait a random time up to this, doubling to 1 minute "
        "(less than 1mins, as in Mesos)",
    )
    add(
        "--zk_session_timeout",
        type=duration,
        default="10secs",
        help="ZooKeeper session timeout with --master zk://... (connecting may take twice it)",
    )
    add(
        "--executor_environment_variables",
        type=environment_flag,
        default=None,
        help="JSON object: the environment of executors (default: the agent's own)",
    )
    add(
        "--executor_zygote",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="fork the built-in executor from a pre-started process (false: start a new "
        "Python interpreter per executor)",
    )
    add(
        "--command_launcher",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="run plain command tasks through one long-lived launcher process, without a "
        "command executor process per task (false: an executor process each)",
    )
    add(
        "--http_command_executor",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="true only, as accepted for Mesos compatibility: the command executor always "
        "speaks the v1 HTTP executor API (false, Mesos' driver-based executor, is refused)",
    )
    add_isolation_flags(parser)
    add_auth_flags(parser)
    add(
        "--max_connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open HTTP connections the agent accepts at once; more are answered 503 and "
        "closed, open ones are kept (0: no limit of its own; never more than 3/4 of the "
        f"open-file limit; butte's own flag; default {DEFAULT_MAX_CONNECTIONS})",
    )
    add(
        "--http_header_timeout",
        type=duration,
        default="30secs",
        help="how long a connection's first request head may take to arrive before it is "
        "closed with 408 (idle or slow clients; plain HTTP; butte's own flag; default 30secs)",
    )
    add_image_flags(parser)
    add_docker_flags(parser)
    add(
        "--logging_level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity",
    )
    daemon_log.add_flags(parser, AGENT_LOG_PROGRAM, daemon_log.AGENT_LOG)
    add_negations(parser)  # --no-<flag> of every boolean flag above, as Mesos takes it


def _meminfo_total_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _filesystem_mb(path: str) -> float | None:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize / MB


def detected_resources(work_dir: str) -> str:
    """Mesos' detection of cpus, mem, disk and ports, as resources text."""
    cpus = os.cpu_count() or 1
    mem = _meminfo_total_mb()
    mem = 1024.0 if mem is None else (mem - 1024 if mem >= 2048 else mem / 2)
    disk = _filesystem_mb(work_dir)
    disk = 10240.0 if disk is None else (disk - 5120 if disk >= 10240 else disk / 2)
    return f"cpus:{cpus};mem:{int(mem)};disk:{int(disk)};ports:{DEFAULT_PORTS}"


def total_resources(given: Resources | None, work_dir: str) -> Resources:
    """The agent's resources: what ``--resources`` names, plus the detected cpus, mem, disk
    and ports it does not name."""
    given = given if given is not None else Resources()
    detected = parse_resources_text(detected_resources(work_dir))
    missing = {name for name in detected.names() if not given.has(name)}
    extra = Resources._trusted({k: v for k, v in detected.items() if k[0] in missing})
    return given + extra


def default_hostname(ip: str) -> str:
    """The advertised hostname: the ip (resolvable everywhere the ip is reachable)."""
    return ip or socket.gethostname()


def flags_for_state(args: argparse.Namespace) -> dict[str, str]:
    """Flag values as ``/flags`` and ``/state`` show them: by the flag's (Mesos') name, each
    in its flag's own syntax, so that ``--<name>=<value>`` sets the same again (durations
    ``2mins``, sizes ``10MB``, booleans ``true``); unset flags are left out, as in Mesos."""
    table = _flag_table()
    out: dict[str, str] = {}
    for dest, value in flag_values(args):
        name, action = table.get(dest, (dest, None))
        text = _flag_value_text(action, value)
        if text is not None:
            out[name] = text
    return dict(sorted(out.items()))


@functools.cache
def _flag_table() -> dict[str, tuple[str, argparse.Action]]:
    """Each agent flag's dest -> (its name in ``/flags``, its action), from a parser that has
    them all."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser)
    table: dict[str, tuple[str, argparse.Action]] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        # A flag comes before its --no- form, which shares its dest: the first one names it.
        if longs and action.dest not in table:
            table[action.dest] = (longs[0][2:], action)
    return table


def _flag_value_text(action: argparse.Action | None, value: object) -> str | None:
    """``value`` in the syntax of the flag ``action`` declares (None: left out)."""
    kind = action.type if action is not None else None
    if value is None or isinstance(value, bool):
        return flag_text(value)
    if kind is duration and isinstance(value, float):
        return duration_text(value)
    if kind is size_flag and isinstance(value, int):
        return size_text(value)
    if kind is logrotate_options_flag:
        return f"rotate {value}"  # the only option it takes (butte.agent.containerizer.logrotate)
    if isinstance(value, Resources):
        return value.to_text()
    if kind is attributes_flag and isinstance(value, tuple):
        return ";".join(f"{a.name}:{a.legacy_value()}" for a in value)
    if kind is environment_flag:
        return json.dumps(value)
    if isinstance(value, tuple):
        return ",".join(str(a) for a in value)  # lists of paths, names, indices
    if isinstance(value, float) and callable(kind):
        # A duration of another module's type (--docker_stop_timeout), if it reads it back.
        text = duration_text(value)
        with contextlib.suppress(ValueError, TypeError, argparse.ArgumentTypeError):
            if kind(text) == value:
                return text
    return flag_text(value)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {value}")
    return value


def add_isolation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the isolators (docs/isolation.md)."""
    add = parser.add_argument
    add(
        "--isolation",
        default="posix/cpu,posix/mem",
        help="comma-separated isolators: posix/cpu, posix/mem (accounting only), cgroups/cpu, "
        "cgroups/mem, cgroups/pids, disk/du, namespaces/pid, filesystem/linux, network/loopback, "
        "gpu/nvidia; cgroups/all (every cgroups/* this machine has); Mesos' posix/disk "
        "(= disk/du), filesystem/posix, environment_secret, volume/sandbox_path, "
        "volume/host_path and docker/runtime are accepted (docs/isolation.md)",
    )
    add(
        "--cgroups_hierarchy",
        default="/sys/fs/cgroup",
        help="where the cgroup hierarchies are mounted (v1: one directory per controller; "
        "v2: the unified hierarchy)",
    )
    add(
        "--cgroups_root",
        default="butte",
        help="name of the group, in each hierarchy, under which container groups are made",
    )
    add(
        "--cgroups_enable_cfs",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="cgroups/cpu: also cap CPU use at the container's cpus (CFS bandwidth quota)",
    )
    add(
        "--cgroups_limit_swap",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="cgroups/mem: limit memory plus swap to the container's mem (no swapping)",
    )
    add(
        "--container_max_pids",
        type=positive_int,
        default=None,
        help="cgroups/pids: most processes and threads per container (butte's own flag; "
        "default: no limit)",
    )
    add(
        "--disallow_sharing_agent_pid_namespace",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="namespaces/pid: refuse tasks that ask to share the agent's pid namespace "
        "(ContainerInfo.linux_info.share_pid_namespace) (default: false)",
    )
    add(
        "--enforce_container_disk_quota",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="disk/du: a container whose sandbox grows past its disk resource fails "
        "(REASON_CONTAINER_LIMITATION_DISK)",
    )
    # Mesos' names first (they name the flag in --help, /flags and BUTTE_<FLAG>); butte's
    # older ones keep working. The dests stay butte's names, which the code reads.
    add(
        "--container_disk_watch_interval",
        "--container_disk_watermark_interval",
        dest="container_disk_watermark_interval",
        metavar="DURATION",
        type=duration,
        default="15secs",
        help="disk/du: how often each sandbox is measured (Mesos' name; "
        "--container_disk_watermark_interval is butte's older one)",
    )
    add(
        "--gc_delay",
        type=duration,
        default="1weeks",
        help="how long after it finished a sandbox is removed (less as the disk fills)",
    )
    add(
        "--gc_disk_headroom",
        type=float,
        default=0.1,
        help="sandboxes are removed sooner as the work dir's disk use nears 1 - this (0-1)",
    )
    add(
        "--disk_watch_interval",
        "--disk_watermark_interval",
        dest="disk_watermark_interval",
        metavar="DURATION",
        type=duration,
        default="1mins",
        help="how often finished sandboxes are looked for and removed (Mesos' name; "
        "--disk_watermark_interval is butte's older one)",
    )
    add(
        "--container_logger",
        type=container_logger_flag,
        default="sandbox",
        help="sandbox: stdout/stderr files grow freely; logrotate (or Mesos' module name "
        f"{MESOS_LOGROTATE_MODULE}): rotated by size, as set by the --logrotate_* flags "
        "(butte's own flags for the module's parameters)",
    )
    for stream in ("stdout", "stderr"):
        add(
            f"--logrotate_max_{stream}_size",
            type=size_flag,
            default="10MB",
            help=f"logrotate: rotate {stream} once it is larger than this",
        )
        add(
            f"--logrotate_{stream}_options",
            type=logrotate_options_flag,
            default="rotate 9",
            help=f"logrotate: 'rotate N' keeps N rotated copies of {stream}",
        )
    add(
        "--nvidia_gpu_devices",
        type=index_list,
        default=None,
        help="gpu/nvidia: comma-separated indices of the GPUs to use (default: all NVML sees)",
    )
    add(
        "--switch_user",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="run tasks as their CommandInfo.user (else FrameworkInfo.user), as Mesos does; "
        "needs the agent to run as root, else tasks of other users fail (docs/isolation.md)",
    )


def add_image_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of images in the mesos containerizer (docs/containers.md)."""
    add = parser.add_argument
    add(
        "--image_providers",
        type=image_providers_flag,
        default=None,
        help="image types tasks may run in: 'docker' (ContainerInfo.mesos.image of type "
        "DOCKER; default: none, such tasks fail)",
    )
    add(
        "--docker_registry",
        default=None,
        help="a local directory of 'docker save' archives named <repo>:<tag>.tar (Mesos' "
        "local puller; an HTTP registry is not supported)",
    )
    add(
        "--image_provisioner_backend",
        choices=["copy", "overlay"],
        default=None,
        help="how a container's root filesystem is made from the image's layers: copy, or "
        "overlay (overlayfs; default: overlay where it can be mounted under --work_dir, else copy)",
    )
    add(
        "--allowed_host_path_volumes",
        type=path_prefixes_flag,
        default=(),
        help="butte's own: comma-separated host path prefixes that ContainerInfo.volumes may "
        "bind-mount into a task's container, with an image or without one (default: none; "
        "sandbox paths are always allowed)",
    )
    add(
        "--image_gc_config",
        default=None,
        help="automatic image GC, Mesos' JSON (or a file holding it): "
        '{"image_disk_headroom": 0.1, "image_disk_watch_interval": {"nanoseconds": N}, '
        '"excluded_images": [...]}: every interval, prune unused image layers when the store\'s '
        "file system has less free space than the headroom (default: off; docs/containers.md)",
    )


def image_providers_flag(text: str) -> tuple[str, ...]:
    """argparse type: --image_providers (only ``docker``; APPC is not supported)."""
    names = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = [n for n in names if n != "docker"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unsupported image provider(s) {unknown}: only docker")
    return names


def path_prefixes_flag(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated absolute paths without '..'."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.startswith("/") or ".." in part.split("/") or part == "/":
            raise argparse.ArgumentTypeError(f"'{part}' must be an absolute path, not /, no '..'")
        out.append(part.rstrip("/"))
    return tuple(out)


def size_flag(text: str) -> int:
    """argparse type: a size in Mesos' Bytes syntax (10MB, 512KB, 4096B)."""
    from butte.agent.containerizer.logrotate import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def logrotate_options_flag(text: str) -> int:
    """argparse type: logrotate options; only ``rotate N`` is supported."""
    from butte.agent.containerizer.logrotate import parse_options

    try:
        return parse_options(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def index_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated device indices (``0,1,3``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected indices like 0,1,3, got {text!r}")
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"an index is named twice in {text!r}")
    return tuple(int(p) for p in parts)
