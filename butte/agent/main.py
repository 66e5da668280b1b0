"""Entry point of the agent: ``butte agent ...`` (via the CLI) or ``python -m butte.agent``.

`add_flags` and `run` are the contract with the CLI; `main` is a small stand-alone wrapper.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence

from butte import daemon_log
from butte.agent import flags as agent_flags
from butte.agent.auth_flags import auth_from_args
from butte.agent.containerizer.docker import options_from_args as docker_options
from butte.agent.containerizer.image_runtime import image_options
from butte.agent.containerizer.isolators import (
    IsolationOptions,
    IsolatorUnavailable,
    parse_isolation,
)
from butte.agent.containerizer.logrotate import RotationPolicy
from butte.agent.server import AgentOptions, RecoveryRefused, serve
from butte.coord.interface import CoordinationError
from butte.core.tls import TlsError
from butte.core.tls_listener import TlsListen
from butte.operator_common import quiet_bad_requests

# Mesos caps it (slave/constants.hpp): recovery must finish well before the master gives up.
MAX_EXECUTOR_REREGISTRATION_TIMEOUT = 15.0


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the agent's flags (Mesos spellings) to ``parser``."""
    agent_flags.add_flags(parser)


def options_from_args(args: argparse.Namespace) -> AgentOptions:
    """Turns parsed flags into `AgentOptions` (detecting resources not given)."""
    master, master_tls = agent_flags.master_tls(args.master, os.environ)
    try:
        tls = TlsListen.from_env(os.environ)
    except TlsError as e:
        raise ValueError(str(e)) from None
    return AgentOptions(
        master=master,
        master_tls=master_tls,
        tls=tls,
        work_dir=args.work_dir,
        resources=agent_flags.total_resources(args.resources, args.work_dir),
        ip=args.ip,
        port=args.port,
        hostname=args.hostname or agent_flags.default_hostname(args.ip),
        attributes=tuple(args.attributes or ()),
        domain=args.domain,
        executor_registration_timeout=args.executor_registration_timeout,
        executor_shutdown_grace_period=args.executor_shutdown_grace_period,
        status_update_retry_interval_min=args.status_update_retry_interval_min,
        status_update_retry_interval_max=args.status_update_retry_interval_max,
        registration_backoff_factor=args.registration_backoff_factor,
        zk_session_timeout=args.zk_session_timeout,
        executor_environment=args.executor_environment_variables,
        executor_zygote=args.executor_zygote,
        command_launcher=args.command_launcher,
        recover=args.recover,
        strict=args.strict,
        reconfiguration_policy=args.reconfiguration_policy,
        executor_reregistration_timeout=args.executor_reregistration_timeout,
        recovery_timeout=args.recovery_timeout,
        fetcher_cache_dir=args.fetcher_cache_dir,
        credential=agent_flags.read_credential(args.credential),
        work_dir_min_free=args.work_dir_min_free,
        isolation=args.isolation,
        isolation_options=IsolationOptions(
            cgroups_hierarchy=args.cgroups_hierarchy,
            cgroups_root=args.cgroups_root,
            cgroups_enable_cfs=args.cgroups_enable_cfs,
            cgroups_limit_swap=args.cgroups_limit_swap,
            container_max_pids=args.container_max_pids,
            enforce_container_disk_quota=args.enforce_container_disk_quota,
            container_disk_watermark_interval=args.container_disk_watermark_interval,
            nvidia_gpu_devices=args.nvidia_gpu_devices,
            disallow_sharing_agent_pid_namespace=args.disallow_sharing_agent_pid_namespace,
        ),
        switch_user=args.switch_user,
        allowed_host_paths=tuple(args.allowed_host_path_volumes),
        images=image_options(
            args.image_providers,
            args.docker_registry,
            args.image_provisioner_backend,
            args.allowed_host_path_volumes,
            args.work_dir,
            args.image_gc_config,
        ),
        log_rotation=(
            RotationPolicy(
                args.logrotate_max_stdout_size,
                args.logrotate_max_stderr_size,
                args.logrotate_stdout_options,
                args.logrotate_stderr_options,
            )
            if args.container_logger == "logrotate"
            else None
        ),
        gc_delay=args.gc_delay,
        gc_disk_headroom=args.gc_disk_headroom,
        disk_watermark_interval=args.disk_watermark_interval,
        flags=agent_flags.flags_for_state(args),
        auth=auth_from_args(args),
        max_connections=args.max_connections,
        http_header_timeout=args.http_header_timeout,
        docker=docker_options(args),
    )


def run(args: argparse.Namespace) -> int:
    """Runs the agent until SIGINT/SIGTERM; returns the exit status."""
    try:
        log_file = daemon_log.start_logging(
            agent_flags.AGENT_LOG_PROGRAM,
            getattr(args, "logging_level", "INFO"),
            "%(asctime)s %(levelname)s %(name)s: %(message)s",
            getattr(args, "log_dir", None),
            quiet=getattr(args, "quiet", False),
            logbufsecs=getattr(args, "logbufsecs", 0),
        )
    except ValueError as e:
        print(f"agent: {e}", file=sys.stderr)
        return 2
    quiet_bad_requests()
    if args.status_update_retry_interval_min <= 0:
        print("agent: --status_update_retry_interval_min must be > 0", file=sys.stderr)
        return 2
    if not 0 < args.executor_reregistration_timeout <= MAX_EXECUTOR_REREGISTRATION_TIMEOUT:
        print("agent: --executor_reregistration_timeout must be in (0, 15secs]", file=sys.stderr)
        return 2
    if not 0.0 <= args.gc_disk_headroom <= 1.0:
        print("agent: --gc_disk_headroom must be in [0, 1]", file=sys.stderr)
        return 2
    if args.disk_watermark_interval <= 0 or args.gc_delay < 0:
        print("agent: --disk_watch_interval must be > 0, --gc_delay >= 0", file=sys.stderr)
        return 2
    if args.max_connections < 0:
        print("agent: --max_connections must not be negative", file=sys.stderr)
        return 2
    if args.http_header_timeout <= 0:
        print("agent: --http_header_timeout must be > 0", file=sys.stderr)
        return 2
    if not args.http_command_executor:
        # Mesos' false runs the driver-based (libprocess) command executor, which butte
        # does not have: refused rather than silently running the HTTP one.
        print(
            "agent: --http_command_executor=false is not supported: the command executor "
            "speaks only the v1 HTTP executor API (docs/protocol.md §2)",
            file=sys.stderr,
        )
        return 2
    if args.container_disk_watermark_interval <= 0:
        print("agent: --container_disk_watch_interval must be > 0", file=sys.stderr)
        return 2
    try:
        options = options_from_args(args)
    except ValueError as e:
        print(f"agent: {e}", file=sys.stderr)
        return 2
    # The log as /slave/log of the files API (Mesos' agent attaches it at start too).
    daemon_log.attach_log(
        daemon_log.AGENT_LOG,
        log_file,
        getattr(args, "external_log_file", None),
        options.auth.acls,
    )
    try:
        names = parse_isolation(options.isolation)
    except IsolatorUnavailable as e:
        print(f"agent: --isolation: {e}", file=sys.stderr)
        return 2
    if args.nvidia_gpu_devices is not None and "gpu/nvidia" not in names:
        # Mesos' rule: the devices would be named and then used by nothing.
        print(
            "agent: --nvidia_gpu_devices can only be given with gpu/nvidia in --isolation",
            file=sys.stderr,
        )
        return 2
    if args.container_max_pids is not None and not {"cgroups/pids", "cgroups/all"} & set(names):
        logging.getLogger("butte.agent").warning(
            "--container_max_pids limits nothing without cgroups/pids in --isolation"
        )
    # Young-generation collections every 700 allocations took 8% of a busy agent's event
    # loop, walking the records of the tasks in flight again and again (docs/performance.md
    # "Benchmark 6, fifth round"); the master collects as seldom.
    gc.set_threshold(10_000, 10, 10)
    # The default loop: uvloop spawns processes several times slower
    # (docs/design.md "Spawning processes").
    try:
        return asyncio.run(serve(options))
    except CoordinationError as e:  # --master zk://... and the ensemble cannot be reached
        print(f"agent: {e}", file=sys.stderr)
        return 1
    except IsolatorUnavailable as e:  # an isolator this machine cannot provide
        print(f"agent: --isolation: {e}", file=sys.stderr)
        return 1
    except RecoveryRefused as e:
        print(f"agent: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m butte.agent --master HOST:PORT --work_dir DIR ...``."""
    parser = argparse.ArgumentParser(prog="python -m butte.agent", description=__doc__)
    add_flags(parser)
    return run(parser.parse_args(argv))
