"""The Docker containerizer: tasks whose ContainerInfo is of type DOCKER run through a Docker
daemon (docs/docker.md).

Each such task gets a Docker executor (`butte.agent.executor.docker`), a process like the
command executor that the POSIX containerizer starts, watches, adopts after an agent restart
and destroys like any other executor. The executor runs the task as the container
``mesos-<container id>`` (Mesos' naming) and reports its status; this module does what is
the agent's to do around it:

* at start, whether the daemon answers (``docker version``): if it does not, the agent does
  not offer the docker containerizer and says why (the reason ends DOCKER launches);
* the environment that tells executors the client, the socket and the stop timeout;
* once a Docker executor has exited (or failed to start), ``docker rm -f`` of its container:
  a container never outlives its executor (the executor reads the container's end first);
* after a restart, with ``--docker_kill_orphans``, the removal of every ``mesos-*`` container
  of this agent (labelled with its work dir) that no recovered executor runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from butte.agent.executor import docker as executor
from butte.core import docker_info
from butte.core.durations import format_duration, parse_duration

log = logging.getLogger("butte.agent")

CONTAINERIZERS = ("mesos", "docker")
COMMAND_TIMEOUT = 30.0  # any one docker command the agent runs


@dataclass(frozen=True)
class DockerOptions:
    """The containerizer flags (Mesos' names and defaults)."""

    containerizers: tuple[str, ...] = ("mesos",)
    docker: str = "docker"
    docker_socket: str = "/var/run/docker.sock"
    docker_stop_timeout: float = 0.0
    docker_kill_orphans: bool = True

    @property
    def wanted(self) -> bool:
        return "docker" in self.containerizers


def containerizer_list(text: str) -> str:
    """argparse type of --containerizers: a comma list of mesos and docker (returned
    without blanks or repeats)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CONTAINERIZERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown containerizer(s) {', '.join(unknown) or '(none given)'}: "
            f"expected a comma list of {', '.join(CONTAINERIZERS)}"
        )
    return ",".join(dict.fromkeys(names))


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_docker_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the containerizers (docs/docker.md)."""
    add = parser.add_argument
    add(
        "--containerizers",
        type=containerizer_list,
        default="mesos",
        help="comma list of containerizers: mesos (processes in sandboxes), docker (tasks "
        "with ContainerInfo type DOCKER, through the Docker daemon; docs/docker.md)",
    )
    add("--docker", default="docker", help="the docker client program")
    add(
        "--docker_socket",
        default="/var/run/docker.sock",
        help="the Docker daemon's unix socket",
    )
    add(
        "--docker_stop_timeout",
        type=_duration,
        default=0.0,
        help="grace period of `docker stop` when a task has no kill policy (default 0secs)",
    )
    add(
        "--docker_kill_orphans",
        type=_boolean,
        nargs="?",
        const=True,
        default=True,
        help="at start, remove this agent's mesos-* containers that no recovered task runs",
    )


def options_from_args(args: argparse.Namespace) -> DockerOptions:
    """The parsed containerizer flags."""
    return DockerOptions(
        containerizers=tuple(args.containerizers.split(",")),
        docker=args.docker,
        docker_socket=args.docker_socket,
        docker_stop_timeout=args.docker_stop_timeout,
        docker_kill_orphans=args.docker_kill_orphans,
    )


def executor_environment(options: DockerOptions, work_dir: str) -> dict[str, str]:
    """What every Docker executor is told (its environment)."""
    return {
        executor.DOCKER_ENV: options.docker,
        executor.SOCKET_ENV: options.docker_socket,
        executor.STOP_TIMEOUT_ENV: format_duration(options.docker_stop_timeout),
        executor.WORK_DIR_ENV: work_dir,
    }


class DockerContainerizer:
    """The agent's side of DOCKER containers (see the module doc)."""

    def __init__(self, options: DockerOptions, work_dir: str) -> None:
        self.options = options
        self.work_dir = work_dir
        self.client = [options.docker, "-H", f"unix://{options.docker_socket}"]
        self.containers: set[str] = set()  # container ids of live Docker executors
        self.removed = 0

    async def docker(self, *args: str) -> tuple[int, str]:
        """Runs one docker command: (exit status, its output or error words)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.client,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            return 127, f"cannot run {self.options.docker}: {e}"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return 124, f"docker {args[0]} did not answer within {COMMAND_TIMEOUT:g} s"
        text = (out if proc.returncode == 0 else err or out).decode(errors="replace").strip()
        return proc.returncode or 0, text

    async def probe(self) -> str | None:
        """Why the daemon cannot be used (None: it answers)."""
        code, text = await self.docker("version", "--format={{.Server.Version}}")
        if code != 0:
            last = text.splitlines()[-1] if text else f"exit status {code}"
            return f"the Docker daemon at {self.options.docker_socket} is not reachable ({last})"
        log.info("docker containerizer: Docker %s at %s", text, self.options.docker_socket)
        return None

    def track(self, container_id: str) -> None:
        """A Docker executor was launched (or recovered) for ``container_id``."""
        self.containers.add(container_id)

    def ended(self, container_id: str) -> Coroutine[Any, Any, None] | None:
        """The executor of ``container_id`` is gone: what removes its container (to be run
        by the caller); None if it was not a Docker one."""
        if container_id not in self.containers:
            return None
        self.containers.discard(container_id)
        return self.remove([docker_info.container_name(container_id)])

    async def remove(self, names: Iterable[str]) -> None:
        """``docker rm -f`` of containers (gone already is fine)."""
        names = list(names)
        if not names:
            return
        code, text = await self.docker("rm", "--force", "--volumes", *names)
        if code != 0 and "No such container" not in text:
            log.warning("docker containerizer: cannot remove %s: %s", ", ".join(names), text)
        else:
            self.removed += len(names)

    async def usage(self, container_ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """ResourceStatistics fields of running Docker containers, from the daemon's own
        counters (one-shot stats over its socket); containers it does not answer for are
        left out."""
        import aiohttp

        wanted = [cid for cid in container_ids if cid in self.containers]
        out: dict[str, dict[str, float]] = {}
        if not wanted:
            return out
        connector = aiohttp.UnixConnector(path=self.options.docker_socket)
        timeout = aiohttp.ClientTimeout(total=COMMAND_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for cid in wanted:
                url = f"http://docker/containers/{docker_info.container_name(cid)}/stats"
                try:
                    async with session.get(url, params={"stream": "0", "one-shot": "1"}) as r:
                        if r.status != 200:
                            continue
                        stats = await r.json()
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    continue
                out[cid] = statistics(stats)
        return out

    async def remove_orphans(self) -> list[str]:
        """Removes this agent's ``mesos-*`` containers no tracked executor runs (after
        recovery, with --docker_kill_orphans); returns their names."""
        code, text = await self.docker(
            "ps",
            "--all",
            "--no-trunc",
            f"--filter=label={docker_info.AGENT_LABEL}={self.work_dir}",
            "--format={{.Names}}",
        )
        if code != 0:
            log.warning("docker containerizer: cannot list containers: %s", text)
            return []
        known = {docker_info.container_name(cid) for cid in self.containers}
        orphans = [
            name
            for name in text.split()
            if name.startswith(docker_info.NAME_PREFIX) and name not in known
        ]
        if orphans:
            log.info("docker containerizer: removing %d orphan container(s)", len(orphans))
            await self.remove(orphans)
        return orphans


def statistics(stats: dict[str, Any]) -> dict[str, float]:
    """Mesos' ResourceStatistics fields of one Docker stats answer."""
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    out: dict[str, float] = {}
    for field, key in (
        ("cpus_user_time_secs", "usage_in_usermode"),
        ("cpus_system_time_secs", "usage_in_kernelmode"),
    ):
        if isinstance(cpu.get(key), int | float):
            out[field] = cpu[key] / 1e9
    if isinstance(memory.get("usage"), int | float):
        out["mem_total_bytes"] = float(memory["usage"])
    rss = (memory.get("stats") or {}).get("rss")
    if isinstance(rss, int | float):
        out["mem_rss_bytes"] = float(rss)
    if isinstance(memory.get("limit"), int | float):
        out["mem_limit_bytes"] = float(memory["limit"])
    pids = (stats.get("pids_stats") or {}).get("current")
    if isinstance(pids, int | float):
        out["processes"] = float(pids)
    return out
